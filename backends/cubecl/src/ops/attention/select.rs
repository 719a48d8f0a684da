//! Which attention kernel a launch uses: the cmma kernel ([`crate::kernels::attention::cmma`])
//! where the runtime has what it needs, the opt-in `mma` kernel
//! ([`crate::kernels::attention::mma`]) where it is asked for and fits, else the portable
//! kernel. Kept apart from the kernels so the choice can be read (and tested) on its own.

use moekit_ops::DType;

/// Environment variable choosing the attention kernel: `portable` forces the portable kernel,
/// `mma` the manual-MMA kernel (`ldmatrix` + `mma.sync`; checked on the H200) where it fits,
/// `mma8` the same kernel with 8 planes (128 query rows per cube; not yet run on a GPU);
/// anything else (or unset, or `cmma2`, the name the cmma kernel had while it was opt-in) lets
/// [`select`] decide, which picks the cmma kernel where it fits.
pub(crate) const ATTN_ENV: &str = "MOEKIT_CUBECL_ATTN";

/// The attention kernels of the backend.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum AttnPath {
    /// [`crate::kernels::attention::attention_kernel`]: shared memory only, every runtime.
    Portable,
    /// [`crate::kernels::attention::cmma::attention_cmma_kernel`]: cmma 16×16×16, vectorised
    /// and prefetched K/V tiles; the default where it fits (checked on the H200 and on NVIDIA's
    /// Vulkan driver).
    Cmma,
    /// [`crate::kernels::attention::mma::attention_mma_kernel`]: FlashAttention-2 style on
    /// `ldmatrix` + `mma.sync` m16n8k16, P kept in registers (only when forced with `mma`
    /// until it has run on a GPU).
    Mma,
    /// The same kernel with [`crate::kernels::attention::mma::PLANES_WIDE`] planes: 128 query
    /// rows per cube (only when forced with `mma8`).
    MmaWide,
}

/// What the runtime offers, as far as the choice goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct AttnCaps {
    /// cmma 16×16×16 with A and B of the problem's dtype and an f32 accumulator.
    pub(crate) cmma: bool,
    /// Manual MMA m16n8k16 (`ldmatrix`, `mma.sync`) with A and B of the problem's dtype and an
    /// f32 accumulator.
    pub(crate) mma: bool,
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
/// [`ATTN_ENV`]. The manual-MMA kernel (only when forced) needs what the cmma kernel needs
/// with manual MMA in place of cmma and its own shared memory
/// ([`crate::kernels::attention::mma::shared_bytes`]); where it does not fit the choice is
/// the default one. The cmma kernel needs f16 or bf16, head dim 64 or 128, cmma for the dtype,
/// plane operations, planes of exactly [`crate::kernels::attention::cmma::PLANE`] lanes (its
/// softmax maps two lanes to a row of 16) and enough shared memory; its head dims are
/// multiples of [`crate::kernels::attention::cmma::VEC`].
pub(crate) fn select(dtype: DType, d: usize, caps: AttnCaps, forced: Option<&str>) -> AttnPath {
    use crate::kernels::attention::cmma::PLANE;
    if forced.is_some_and(|v| v.eq_ignore_ascii_case("portable")) {
        return AttnPath::Portable;
    }
    let plane = PLANE as u32;
    let common = matches!(dtype, DType::F16 | DType::BF16)
        && matches!(d, 64 | 128)
        && caps.plane_ops
        && caps.plane_size == (plane, plane);
    let mma = common && caps.mma && caps.shared_bytes >= crate::kernels::attention::mma::shared_bytes(d);
    if mma && forced.is_some_and(|v| v.eq_ignore_ascii_case("mma")) {
        return AttnPath::Mma;
    }
    if mma && forced.is_some_and(|v| v.eq_ignore_ascii_case("mma8")) {
        return AttnPath::MmaWide;
    }
    let fits = common && caps.cmma && caps.shared_bytes >= cmma_shared_bytes(d);
    if fits {
        AttnPath::Cmma
    } else {
        AttnPath::Portable
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const H200: AttnCaps =
        AttnCaps { cmma: true, mma: true, plane_ops: true, plane_size: (32, 32), shared_bytes: 232_448 };
    const LAVAPIPE: AttnCaps =
        AttnCaps { cmma: false, mma: false, plane_ops: false, plane_size: (8, 8), shared_bytes: 32_768 };
    /// NVIDIA's Vulkan driver: cmma, no manual MMA, 48 KiB of shared memory.
    const NV_VULKAN: AttnCaps = AttnCaps { mma: false, shared_bytes: 48 * 1024, ..H200 };

    #[test]
    fn half_types_with_cmma_take_the_cmma_kernel() {
        for dtype in [DType::F16, DType::BF16] {
            for d in [64, 128] {
                assert_eq!(select(dtype, d, H200, None), AttnPath::Cmma, "{dtype:?} d {d}");
                assert_eq!(select(dtype, d, H200, Some("auto")), AttnPath::Cmma);
            }
        }
    }

    #[test]
    fn everything_else_stays_portable() {
        assert_eq!(select(DType::F32, 128, H200, None), AttnPath::Portable);
        assert_eq!(select(DType::BF16, 256, H200, None), AttnPath::Portable);
        assert_eq!(select(DType::BF16, 128, H200, Some("portable")), AttnPath::Portable);
        assert_eq!(select(DType::BF16, 128, H200, Some("PORTABLE")), AttnPath::Portable);
        assert_eq!(select(DType::F16, 64, LAVAPIPE, None), AttnPath::Portable);
        let wave64 = AttnCaps { plane_size: (64, 64), ..H200 };
        assert_eq!(select(DType::F16, 64, wave64, None), AttnPath::Portable);
        let small = AttnCaps { shared_bytes: 48 * 1024, ..H200 };
        assert_eq!(select(DType::F16, 64, small, None), AttnPath::Cmma);
        assert_eq!(select(DType::F16, 128, small, None), AttnPath::Portable);
    }

    #[test]
    fn the_old_opt_in_name_still_means_the_cmma_kernel() {
        assert_eq!(select(DType::BF16, 128, H200, Some("cmma2")), AttnPath::Cmma);
        assert_eq!(select(DType::F16, 64, H200, Some("CMMA2")), AttnPath::Cmma);
        assert_eq!(select(DType::F32, 128, H200, Some("cmma2")), AttnPath::Portable);
        assert_eq!(select(DType::F16, 64, LAVAPIPE, Some("cmma2")), AttnPath::Portable);
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
    fn the_mma_kernel_is_forced_by_name_where_it_fits() {
        for dtype in [DType::F16, DType::BF16] {
            for d in [64, 128] {
                assert_eq!(select(dtype, d, H200, Some("mma")), AttnPath::Mma, "{dtype:?} d {d}");
                assert_eq!(select(dtype, d, H200, Some("MMA")), AttnPath::Mma);
            }
        }
        // Elsewhere the default choice.
        assert_eq!(select(DType::F32, 128, H200, Some("mma")), AttnPath::Portable);
        assert_eq!(select(DType::BF16, 256, H200, Some("mma")), AttnPath::Portable);
        assert_eq!(select(DType::F16, 64, LAVAPIPE, Some("mma")), AttnPath::Portable);
        assert_eq!(select(DType::F16, 64, NV_VULKAN, Some("mma")), AttnPath::Cmma);
        assert_eq!(select(DType::F16, 128, NV_VULKAN, Some("mma")), AttnPath::Portable);
        let small = AttnCaps { shared_bytes: 48 * 1024, ..H200 };
        assert_eq!(select(DType::F16, 64, small, Some("mma")), AttnPath::Mma);
        assert_eq!(select(DType::F16, 128, small, Some("mma")), AttnPath::Portable);
        let no_cmma = AttnCaps { cmma: false, ..H200 };
        assert_eq!(select(DType::BF16, 128, no_cmma, Some("mma")), AttnPath::Mma);
        assert_eq!(select(DType::BF16, 128, no_cmma, None), AttnPath::Portable);
        let wave64 = AttnCaps { plane_size: (64, 64), ..H200 };
        assert_eq!(select(DType::F16, 64, wave64, Some("mma")), AttnPath::Portable);
    }

    #[test]
    fn the_wide_mma_kernel_is_forced_by_its_own_name() {
        for dtype in [DType::F16, DType::BF16] {
            for d in [64, 128] {
                assert_eq!(select(dtype, d, H200, Some("mma8")), AttnPath::MmaWide, "{dtype:?} d {d}");
                assert_eq!(select(dtype, d, H200, Some("MMA8")), AttnPath::MmaWide);
            }
        }
        assert_eq!(select(DType::F32, 128, H200, Some("mma8")), AttnPath::Portable);
        assert_eq!(select(DType::F16, 64, LAVAPIPE, Some("mma8")), AttnPath::Portable);
        assert_eq!(select(DType::F16, 128, NV_VULKAN, Some("mma8")), AttnPath::Portable);
        let small = AttnCaps { shared_bytes: 48 * 1024, ..H200 };
        assert_eq!(select(DType::F16, 128, small, Some("mma8")), AttnPath::Portable);
    }

    #[test]
    fn shared_memory_fits_the_documented_budget() {
        assert_eq!(cmma_shared_bytes(128), 61_440);
        assert_eq!(cmma_shared_bytes(64), 45_056);
        assert_eq!(crate::kernels::attention::mma::shared_bytes(128), 69_632);
        assert_eq!(crate::kernels::attention::mma::shared_bytes(64), 36_864);
    }
}
