//! Which attention kernel a launch uses: the manual-MMA kernel
//! ([`crate::kernels::attention::mma`], FlashAttention-2 style, 64 query rows per cube) where
//! the runtime has manual MMA, else the cmma kernel ([`crate::kernels::attention::cmma`])
//! where it has what that needs, else the portable kernel. Kept apart from the kernels so the
//! choice can be read (and tested) on its own.

use moekit_ops::DType;

/// Environment variable choosing the attention kernel: `portable` forces the portable kernel,
/// `cmma` (or `cmma2`, its name while it was opt-in) the cmma kernel where it fits, `mma8` the
/// manual-MMA kernel with 8 planes (128 query rows per cube; 3.2 ms on the H200 where the
/// default 4 planes take 2.9 ms) where it fits; anything else (or unset, or `mma`) lets
/// [`select`] decide.
pub(crate) const ATTN_ENV: &str = "MOEKIT_CUBECL_ATTN";

/// The attention kernels of the backend.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum AttnPath {
    /// [`crate::kernels::attention::attention_kernel`]: shared memory only, every runtime.
    Portable,
    /// [`crate::kernels::attention::cmma::attention_cmma_kernel`]: cmma 16×16×16, vectorised
    /// and prefetched K/V tiles; the default where it fits without manual MMA (NVIDIA's Vulkan
    /// driver; checked there and on the H200).
    Cmma,
    /// [`crate::kernels::attention::mma::attention_mma_kernel`]: FlashAttention-2 style on
    /// `ldmatrix` + `mma.sync` m16n8k16, P kept in registers, K/V by `cp.async`, 4 planes; the
    /// default where the runtime has manual MMA (the suite on the H200, run 9).
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
/// [`ATTN_ENV`]. Every tensor-core kernel needs f16 or bf16, head dim 64 or 128, plane
/// operations and planes of exactly [`crate::kernels::attention::cmma::PLANE`] lanes (the cmma
/// kernel's softmax maps two lanes to a row of 16; the manual-MMA kernel's fragments assume
/// 32). By default the manual-MMA kernel with 4 planes where the runtime has manual MMA for
/// the dtype and its shared memory fits
/// ([`crate::kernels::attention::mma::shared_bytes_of`]), else the cmma kernel where the
/// runtime has cmma for the dtype and its shared memory fits, else the portable kernel. A
/// forced kernel that does not fit leaves the default choice.
pub(crate) fn select(dtype: DType, d: usize, caps: AttnCaps, forced: Option<&str>) -> AttnPath {
    use crate::kernels::attention::cmma::PLANE;
    use crate::kernels::attention::mma::{shared_bytes_of, PLANES, PLANES_WIDE};
    let force = forced.map(|v| v.trim().to_ascii_lowercase());
    let force = force.as_deref();
    if force == Some("portable") {
        return AttnPath::Portable;
    }
    let plane = PLANE as u32;
    let common = matches!(dtype, DType::F16 | DType::BF16)
        && matches!(d, 64 | 128)
        && caps.plane_ops
        && caps.plane_size == (plane, plane);
    let mma = common && caps.mma && caps.shared_bytes >= shared_bytes_of(d, PLANES);
    let wide = common && caps.mma && caps.shared_bytes >= shared_bytes_of(d, PLANES_WIDE);
    let cmma = common && caps.cmma && caps.shared_bytes >= cmma_shared_bytes(d);
    match force {
        Some("mma8") if wide => AttnPath::MmaWide,
        Some("cmma" | "cmma2") if cmma => AttnPath::Cmma,
        _ if mma => AttnPath::Mma,
        _ if cmma => AttnPath::Cmma,
        _ => AttnPath::Portable,
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
    fn half_types_with_manual_mma_take_the_mma_kernel() {
        for dtype in [DType::F16, DType::BF16] {
            for d in [64, 128] {
                assert_eq!(select(dtype, d, H200, None), AttnPath::Mma, "{dtype:?} d {d}");
                assert_eq!(select(dtype, d, H200, Some("auto")), AttnPath::Mma);
                assert_eq!(select(dtype, d, H200, Some(" mma ")), AttnPath::Mma);
                assert_eq!(select(dtype, d, H200, Some("MMA8")), AttnPath::MmaWide);
                assert_eq!(select(dtype, d, H200, Some("cmma2")), AttnPath::Cmma);
                assert_eq!(select(dtype, d, H200, Some("CMMA")), AttnPath::Cmma);
            }
        }
        // Room for 4 planes' stages, not for 8 planes' (80 KiB at D = 128): `mma8` is ignored.
        let mid = AttnCaps { shared_bytes: 80 * 1024, ..H200 };
        assert_eq!(select(DType::F16, 128, mid, Some("mma8")), AttnPath::Mma);
        assert_eq!(select(DType::F16, 64, mid, Some("mma8")), AttnPath::MmaWide);
        // Manual MMA without cmma: still the manual-MMA kernel; forcing cmma there is ignored.
        let no_cmma = AttnCaps { cmma: false, ..H200 };
        assert_eq!(select(DType::BF16, 128, no_cmma, None), AttnPath::Mma);
        assert_eq!(select(DType::BF16, 128, no_cmma, Some("cmma")), AttnPath::Mma);
    }

    #[test]
    fn cmma_without_manual_mma_and_portable_elsewhere() {
        assert_eq!(select(DType::F32, 128, H200, None), AttnPath::Portable);
        assert_eq!(select(DType::BF16, 256, H200, None), AttnPath::Portable);
        assert_eq!(select(DType::BF16, 128, H200, Some("portable")), AttnPath::Portable);
        assert_eq!(select(DType::BF16, 128, H200, Some("PORTABLE")), AttnPath::Portable);
        assert_eq!(select(DType::F16, 64, LAVAPIPE, None), AttnPath::Portable);
        assert_eq!(select(DType::F16, 64, LAVAPIPE, Some("mma")), AttnPath::Portable);
        assert_eq!(select(DType::F16, 64, LAVAPIPE, Some("cmma2")), AttnPath::Portable);
        let wave64 = AttnCaps { plane_size: (64, 64), ..H200 };
        assert_eq!(select(DType::F16, 64, wave64, None), AttnPath::Portable);
        // NVIDIA's Vulkan driver: the cmma kernel at D = 64; at D = 128 its 60 KiB do not fit.
        for forced in [None, Some("mma"), Some("mma8")] {
            assert_eq!(select(DType::F16, 64, NV_VULKAN, forced), AttnPath::Cmma);
            assert_eq!(select(DType::F16, 128, NV_VULKAN, forced), AttnPath::Portable);
        }
        // 48 KiB: the 4-plane manual-MMA kernel's 36 KiB fit at D = 64.
        let small = AttnCaps { shared_bytes: 48 * 1024, ..H200 };
        assert_eq!(select(DType::F16, 64, small, None), AttnPath::Mma);
        assert_eq!(select(DType::F16, 128, small, None), AttnPath::Portable);
    }

    #[test]
    fn the_vector_width_divides_every_cmma_head_dim() {
        use crate::kernels::attention::cmma::VEC;
        for d in [64, 128] {
            assert_eq!(d % VEC, 0);
            assert_eq!(select(DType::BF16, d, NV_VULKAN, None) == AttnPath::Cmma, d == 64);
        }
    }

    #[test]
    fn shared_memory_fits_the_documented_budget() {
        assert_eq!(cmma_shared_bytes(128), 61_440);
        assert_eq!(cmma_shared_bytes(64), 45_056);
        use crate::kernels::attention::mma::{shared_bytes_of, PLANES, PLANES_WIDE};
        assert_eq!(shared_bytes_of(128, PLANES_WIDE), 104_480);
        assert_eq!(shared_bytes_of(64, PLANES_WIDE), 55_328);
        assert_eq!(shared_bytes_of(128, PLANES), 69_664);
        assert_eq!(shared_bytes_of(64, PLANES), 36_896);
    }
}
