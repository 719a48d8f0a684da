//! Which attention kernel a launch uses: the matrix-instruction kernel
//! ([`crate::kernels::attention::cmma`]) where the runtime has what it needs, else the portable
//! kernel. Kept apart from the kernels so the choice can be read (and tested) on its own.

use moekit_ops::DType;

/// Environment variable choosing the attention kernel: `portable` forces the portable kernel,
/// `cmma2` the second matrix-instruction kernel (vectorised, prefetched; not yet run on a GPU)
/// where a cmma kernel would run; anything else (or unset) lets [`select`] decide, which picks
/// the first cmma kernel (checked on the H200) where it fits.
pub(crate) const ATTN_ENV: &str = "MOEKIT_CUBECL_ATTN";

/// The attention kernels of the backend.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum AttnPath {
    /// [`crate::kernels::attention::attention_kernel`]: shared memory only, every runtime.
    Portable,
    /// [`crate::kernels::attention::cmma::attention_cmma_kernel`]: cmma 16×16×16, vectorised
    /// and prefetched K/V tiles (only when forced with `cmma2` until it has run on a GPU).
    Cmma,
    /// [`crate::kernels::attention::cmma1::attention_cmma1_kernel`]: the first cmma kernel,
    /// the default where cmma fits.
    Cmma1,
}

/// What the runtime offers, as far as the choice goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct AttnCaps {
    /// cmma 16×16×16 with A and B of the problem's dtype and an f32 accumulator.
    pub(crate) cmma: bool,
    /// Plane operations (shuffles, `any`) and plane sync.
    pub(crate) plane_ops: bool,
    /// Smallest and largest plane size.
    pub(crate) plane_size: (u32, u32),
    /// Shared memory per cube, bytes.
    pub(crate) shared_bytes: usize,
}

/// Shared memory of the cmma kernel at head dim `d`, bytes (see its module doc).
pub(crate) fn cmma_shared_bytes(d: usize) -> usize {
    use crate::kernels::attention::cmma::{BK, BQ};
    2 * BK * (d + 8) * 2 + BQ * (BK + 4) * 4 + BQ * (BK + 8) * 2
}

/// The kernel for `dtype` at head dim `d` on a runtime with `caps`; `forced` is the value of
/// [`ATTN_ENV`]. The cmma kernel needs f16 or bf16, head dim 64 or 128, cmma for the dtype,
/// plane operations, planes of exactly [`crate::kernels::attention::cmma::PLANE`] lanes (its
/// softmax maps two lanes to a row of 16) and enough shared memory; its head dims are
/// multiples of [`crate::kernels::attention::cmma::VEC`].
pub(crate) fn select(dtype: DType, d: usize, caps: AttnCaps, forced: Option<&str>) -> AttnPath {
    use crate::kernels::attention::cmma::PLANE;
    if forced.is_some_and(|v| v.eq_ignore_ascii_case("portable")) {
        return AttnPath::Portable;
    }
    let plane = PLANE as u32;
    let fits = matches!(dtype, DType::F16 | DType::BF16)
        && matches!(d, 64 | 128)
        && caps.cmma
        && caps.plane_ops
        && caps.plane_size == (plane, plane)
        && caps.shared_bytes >= cmma_shared_bytes(d);
    // NOTE: the second kernel stays opt-in until the H200 has checked it (the first passed
    // its device tests there: benches/results/h200/2026-11-28-run5-test-attention_cmma.log).
    if fits && forced.is_some_and(|v| v.eq_ignore_ascii_case("cmma2")) {
        AttnPath::Cmma
    } else if fits {
        AttnPath::Cmma1
    } else {
        AttnPath::Portable
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const H200: AttnCaps = AttnCaps { cmma: true, plane_ops: true, plane_size: (32, 32), shared_bytes: 232_448 };

    #[test]
    fn half_types_with_cmma_take_the_first_cmma_kernel() {
        for dtype in [DType::F16, DType::BF16] {
            for d in [64, 128] {
                assert_eq!(select(dtype, d, H200, None), AttnPath::Cmma1, "{dtype:?} d {d}");
                assert_eq!(select(dtype, d, H200, Some("auto")), AttnPath::Cmma1);
            }
        }
    }

    #[test]
    fn everything_else_stays_portable() {
        assert_eq!(select(DType::F32, 128, H200, None), AttnPath::Portable);
        assert_eq!(select(DType::BF16, 256, H200, None), AttnPath::Portable);
        assert_eq!(select(DType::BF16, 128, H200, Some("portable")), AttnPath::Portable);
        assert_eq!(select(DType::BF16, 128, H200, Some("PORTABLE")), AttnPath::Portable);
        let lavapipe = AttnCaps { cmma: false, plane_ops: false, plane_size: (8, 8), shared_bytes: 32_768 };
        assert_eq!(select(DType::F16, 64, lavapipe, None), AttnPath::Portable);
        let wave64 = AttnCaps { plane_size: (64, 64), ..H200 };
        assert_eq!(select(DType::F16, 64, wave64, None), AttnPath::Portable);
        let small = AttnCaps { shared_bytes: 48 * 1024, ..H200 };
        assert_eq!(select(DType::F16, 64, small, None), AttnPath::Cmma1);
        assert_eq!(select(DType::F16, 128, small, None), AttnPath::Portable);
    }

    #[test]
    fn the_second_cmma_kernel_is_forced_by_name_where_cmma_fits() {
        assert_eq!(select(DType::BF16, 128, H200, Some("cmma2")), AttnPath::Cmma);
        assert_eq!(select(DType::F16, 64, H200, Some("CMMA2")), AttnPath::Cmma);
        assert_eq!(select(DType::F32, 128, H200, Some("cmma2")), AttnPath::Portable);
        let lavapipe = AttnCaps { cmma: false, plane_ops: false, plane_size: (8, 8), shared_bytes: 32_768 };
        assert_eq!(select(DType::F16, 64, lavapipe, Some("cmma2")), AttnPath::Portable);
    }

    #[test]
    fn the_vector_width_divides_every_cmma_head_dim() {
        use crate::kernels::attention::cmma::VEC;
        for d in [64, 128] {
            assert_eq!(d % VEC, 0);
            assert_eq!(select(DType::BF16, d, H200, Some("cmma2")), AttnPath::Cmma);
        }
    }

    #[test]
    fn shared_memory_fits_the_documented_budget() {
        assert_eq!(cmma_shared_bytes(128), 61_440);
        assert_eq!(cmma_shared_bytes(64), 45_056);
    }
}
