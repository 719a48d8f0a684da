//! Which grouped-GEMM kernel a launch uses: [`select_path`], a pure function of what the
//! runtime offers ([`GemmCaps`]), the problem's shape ([`GemmShape`]) and the environment
//! override `MOEKIT_CUBECL_GEMM` (`tiled` forces the portable kernel, `cmma2` the tensor-core
//! kernel that stages `[E, K, N]` weights transposed, `cmma3` the manual-MMA kernel
//! (`ldmatrix` + `mma.sync`), both not yet run on a GPU; by default the first tensor-core
//! kernel, checked on the H200, which stages them row-major).

use crate::kernels::grouped_gemm_cmma::{shared_bytes, PLANES};
use moekit_ops::DType;

/// The kernel of one grouped-GEMM launch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum GemmPath {
    /// The portable shared-memory kernel (`kernels::grouped_gemm`): every runtime and dtype.
    Tiled,
    /// The tensor-core kernel (`kernels::grouped_gemm_cmma`), staging vectors of `vector`
    /// elements, with cubes of `plane × PLANES` units.
    Cmma {
        /// Elements per staged vector (8, 4, 2 or 1).
        vector: usize,
        /// The runtime's plane size.
        plane: u32,
        /// Stage `[E, K, N]` weights transposed (column-major B fragments: no transposing
        /// fragment loads; opt-in `cmma2`); `false` is the first kernel, the default.
        transpose_b: bool,
        /// The manual-MMA kernel (`kernels::grouped_gemm_mma`: `ldmatrix` fragment loads,
        /// m16n8k16 `mma.sync`; opt-in `cmma3`, never with `transpose_b`).
        mma: bool,
    },
}

/// What a runtime offers the tensor-core kernel.
#[derive(Clone, Copy, Debug)]
pub(crate) struct GemmCaps {
    /// Matrix instructions for (dtype, dtype, f32) at 16×16×16.
    pub(crate) cmma: bool,
    /// Manual matrix instructions (`MmaDefinition`) for (dtype, dtype, f32) at m16n8k16.
    pub(crate) mma: bool,
    /// `(min, max)` plane size.
    pub(crate) plane_size: (u32, u32),
    /// Most units in one cube.
    pub(crate) max_units: u32,
    /// Shared memory per cube, in bytes.
    pub(crate) max_shared: usize,
    /// Most cubes along `(x, y, z)`.
    pub(crate) max_cube_count: (u32, u32, u32),
    /// Widest load, in bits.
    pub(crate) load_bits: u32,
}

/// The shape of one grouped GEMM, as far as the choice depends on it.
#[derive(Clone, Copy, Debug)]
pub(crate) struct GemmShape {
    pub(crate) dtype: DType,
    pub(crate) k_dim: usize,
    pub(crate) n_dim: usize,
    pub(crate) n_out: usize,
    /// Weights `[E, N, K]`.
    pub(crate) nk: bool,
    /// Cubes along z (experts of the masked layout, else 1).
    pub(crate) experts: usize,
}

/// The environment variable that overrides the choice: `tiled` forces the tiled kernel,
/// `cmma2` the tensor-core kernel with transposed staged `[E, K, N]` weights, `cmma3` the
/// manual-MMA kernel.
pub(crate) const GEMM_ENV: &str = "MOEKIT_CUBECL_GEMM";

/// The kernel for `shape` on a runtime with `caps`: the tensor-core kernel for f16 and bf16
/// where the runtime has 16×16×16 matrix instructions for the dtype with f32 accumulators, a
/// fixed plane size, room for the kernel's cube and shared memory, else the tiled kernel;
/// `force = Some("tiled")` (the value of [`GEMM_ENV`]) always picks the tiled kernel,
/// `Some("cmma2")` the tensor-core kernel with transposed weight staging and `Some("cmma3")`
/// the manual-MMA kernel where the runtime has m16n8k16 manual MMA and planes of 32 (else the
/// default choice).
///
/// Staged vectors are as wide as 16 bytes allow while dividing the rows they are read from:
/// K (x, and `[E, N, K]` weights), N and N_out (`[E, K, N]` weights).
pub(crate) fn select_path(caps: &GemmCaps, shape: &GemmShape, force: Option<&str>) -> GemmPath {
    if force.is_some_and(|f| f.trim().eq_ignore_ascii_case("tiled")) {
        return GemmPath::Tiled;
    }
    // NOTE: transposed staging stays opt-in until the H200 has checked it (the row-major
    // staging passed the gemm properties there: benches/results/h200/2026-11-28-run5-*).
    let transpose_b = force.is_some_and(|f| f.trim().eq_ignore_ascii_case("cmma2"));
    // NOTE: the manual-MMA kernel addresses `ldmatrix` rows by lane for planes of 32.
    let mma = force.is_some_and(|f| f.trim().eq_ignore_ascii_case("cmma3")) && caps.mma && caps.plane_size == (32, 32);
    let elem_bytes = match shape.dtype {
        DType::F16 | DType::BF16 => 2,
        _ => return GemmPath::Tiled,
    };
    let (plane_min, plane) = caps.plane_size;
    let fits = caps.cmma
        && plane > 0
        && plane_min == plane
        && u64::from(plane) * PLANES as u64 <= u64::from(caps.max_units)
        && shared_bytes(elem_bytes, shape.nk || transpose_b) <= caps.max_shared
        && shape.experts <= caps.max_cube_count.2 as usize;
    if !fits {
        return GemmPath::Tiled;
    }
    let widest = (caps.load_bits as usize / 8 / elem_bytes).clamp(1, 8);
    let vector = [8, 4, 2, 1]
        .into_iter()
        .find(|&v| v <= widest && shape.k_dim % v == 0 && (shape.nk || (shape.n_dim % v == 0 && shape.n_out % v == 0)))
        .unwrap_or(1);
    GemmPath::Cmma { vector, plane, transpose_b, mma }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What cubecl's CUDA runtime reports on an H200.
    const H200: GemmCaps = GemmCaps {
        cmma: true,
        mma: true,
        plane_size: (32, 32),
        max_units: 1024,
        max_shared: 227 * 1024,
        max_cube_count: (u32::MAX, 65_535, 65_535),
        load_bits: 128,
    };

    fn shape(dtype: DType, k_dim: usize, n_dim: usize, n_out: usize, nk: bool) -> GemmShape {
        GemmShape { dtype, k_dim, n_dim, n_out, nk, experts: 1 }
    }

    #[test]
    fn benchmark_shapes_take_the_tensor_cores_with_16_byte_vectors() {
        let up = shape(DType::BF16, 2048, 1536, 768, false);
        let down = shape(DType::BF16, 768, 2048, 2048, true);
        for s in [up, down] {
            assert_eq!(
                select_path(&H200, &s, None),
                GemmPath::Cmma { vector: 8, plane: 32, transpose_b: false, mma: false }
            );
        }
    }

    #[test]
    fn ragged_rows_narrow_the_vectors() {
        // N_out = 300 (SwiGLU over N = 600) is a multiple of 4, not of 8.
        assert_eq!(
            select_path(&H200, &shape(DType::F16, 1000, 600, 300, false), None),
            GemmPath::Cmma { vector: 4, plane: 32, transpose_b: false, mma: false }
        );
        // [E, N, K] weights only need K to divide.
        assert_eq!(
            select_path(&H200, &shape(DType::F16, 1000, 601, 601, true), None),
            GemmPath::Cmma { vector: 8, plane: 32, transpose_b: false, mma: false }
        );
        assert_eq!(
            select_path(&H200, &shape(DType::BF16, 999, 64, 64, true), None),
            GemmPath::Cmma { vector: 1, plane: 32, transpose_b: false, mma: false }
        );
    }

    #[test]
    fn tiled_without_matrix_units_for_f32_or_when_forced() {
        let s = shape(DType::BF16, 2048, 1536, 768, false);
        assert_eq!(select_path(&H200, &s, Some("tiled")), GemmPath::Tiled);
        assert_eq!(select_path(&H200, &s, Some(" Tiled ")), GemmPath::Tiled);
        assert_eq!(
            select_path(&H200, &s, Some("cmma")),
            GemmPath::Cmma { vector: 8, plane: 32, transpose_b: false, mma: false }
        );
        assert_eq!(
            select_path(&H200, &s, Some("cmma2")),
            GemmPath::Cmma { vector: 8, plane: 32, transpose_b: true, mma: false }
        );
        assert_eq!(select_path(&H200, &shape(DType::F32, 64, 64, 64, false), None), GemmPath::Tiled);
        // lavapipe: no matrix units, planes of 8, 32 KiB of shared memory.
        let lavapipe = GemmCaps { cmma: false, mma: false, plane_size: (8, 8), max_shared: 32 * 1024, ..H200 };
        assert_eq!(select_path(&lavapipe, &s, None), GemmPath::Tiled);
        assert_eq!(select_path(&lavapipe, &s, Some("cmma3")), GemmPath::Tiled);
        let varying = GemmCaps { plane_size: (32, 64), ..H200 };
        assert_eq!(select_path(&varying, &s, None), GemmPath::Tiled);
        let small = GemmCaps { max_shared: 48 * 1024, ..H200 };
        assert_eq!(select_path(&small, &s, None), GemmPath::Tiled);
    }

    #[test]
    fn the_manual_mma_kernel_is_opt_in() {
        let up = shape(DType::BF16, 2048, 1536, 768, false);
        let down = shape(DType::BF16, 768, 2048, 2048, true);
        for s in [up, down] {
            assert_eq!(
                select_path(&H200, &s, None),
                GemmPath::Cmma { vector: 8, plane: 32, transpose_b: false, mma: false }
            );
            assert_eq!(
                select_path(&H200, &s, Some("cmma3")),
                GemmPath::Cmma { vector: 8, plane: 32, transpose_b: false, mma: true }
            );
        }
        // Without manual MMA, or with planes other than 32: the default tensor-core kernel.
        let no_mma = GemmCaps { mma: false, ..H200 };
        assert_eq!(
            select_path(&no_mma, &up, Some("CMMA3")),
            GemmPath::Cmma { vector: 8, plane: 32, transpose_b: false, mma: false }
        );
        let wide = GemmCaps { plane_size: (64, 64), max_units: 1024, ..H200 };
        assert_eq!(
            select_path(&wide, &up, Some("cmma3")),
            GemmPath::Cmma { vector: 8, plane: 64, transpose_b: false, mma: false }
        );
    }
}
