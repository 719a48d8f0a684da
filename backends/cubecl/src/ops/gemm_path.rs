//! Which grouped-GEMM kernel a launch uses: [`select_path`], a pure function of what the
//! runtime offers ([`GemmCaps`]), the problem's shape ([`GemmShape`]) and the environment
//! override `MOEKIT_CUBECL_GEMM`. By default, where the runtime has manual m16n8k16 MMA and
//! planes of 32: the wide manual-MMA kernel ([`TensorKernel::Wide`], 128 × 256 blocks,
//! asynchronous copies; 247 TFLOP/s on the H200's up GEMM) where the staged vectors are 16
//! bytes, `N_out` is even and its shared memory fits, else the first manual-MMA kernel
//! (`ldmatrix` + `mma.sync`, [`TensorKernel::Mma`], 121 TFLOP/s); without manual MMA the
//! `wmma` kernel ([`TensorKernel::Wmma`]); else the portable tiled kernel. Override values:
//! `tiled` (the portable kernel), `cmma` (the `wmma` kernel), `cmma3` (the first manual-MMA
//! kernel everywhere it runs). The kernels measured slower on the H200 were removed: 128 × 128
//! blocks with 32-bit register staging (`cmma4`, up GEMM 4.53 ms) and with three `cp.async`
//! stages (`cmma5`, 3.86 ms), against the wide kernel's 3.34 ms (benches/NOTES.md); their
//! names now select the default.

use crate::kernels::grouped_gemm_cmma::{shared_bytes, PLANES};
use crate::kernels::grouped_gemm_mma6 as mma6;
use moekit_ops::DType;

/// The tensor-core kernel of a launch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum TensorKernel {
    /// `kernels::grouped_gemm_cmma` (nvcuda `wmma` 16×16×16; `cmma`): every runtime with
    /// matrix instructions.
    Wmma,
    /// `kernels::grouped_gemm_mma` (`ldmatrix` + m16n8k16 `mma.sync`; `cmma3`): planes of 32.
    Mma,
    /// `kernels::grouped_gemm_mma6` (the default): 128 × 256 blocks, asynchronous copies into
    /// four shared stages, output pairs; staged vectors of 8 elements (16 bytes), even N_out.
    Wide,
}

/// The kernel of one grouped-GEMM launch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum GemmPath {
    /// The portable shared-memory kernel (`kernels::grouped_gemm`): every runtime and dtype.
    Tiled,
    /// A tensor-core kernel, staging vectors of `vector` elements, with cubes of
    /// `plane × PLANES` units.
    Cmma {
        /// Elements per staged vector (8, 4, 2 or 1).
        vector: usize,
        /// The runtime's plane size.
        plane: u32,
        /// Which tensor-core kernel.
        kernel: TensorKernel,
    },
}

/// What a runtime offers the tensor-core kernels.
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

/// The environment variable that overrides the choice (values in the module doc).
pub(crate) const GEMM_ENV: &str = "MOEKIT_CUBECL_GEMM";

/// The kernel for `shape` on a runtime with `caps`, after the override `force` (the value of
/// [`GEMM_ENV`]): `tiled` always picks the tiled kernel; f32 and runtimes without matrix
/// instructions for the dtype with f32 accumulators, a fixed plane size and room for the
/// cube and its shared memory take it too. Otherwise, where the runtime has m16n8k16 manual
/// MMA and planes of 32 (and the override is not `cmma`), the wide kernel where its staged
/// vectors are 16 bytes, N_out is even and its shared memory fits (unless `cmma3`), else the
/// first manual-MMA kernel; the `wmma` kernel where not.
///
/// Staged vectors are as wide as 16 bytes allow while dividing the rows they are read from:
/// K (x, and `[E, N, K]` weights), N and N_out (`[E, K, N]` weights).
pub(crate) fn select_path(caps: &GemmCaps, shape: &GemmShape, force: Option<&str>) -> GemmPath {
    let force = force.map(|f| f.trim().to_ascii_lowercase());
    let force = force.as_deref();
    if force == Some("tiled") {
        return GemmPath::Tiled;
    }
    let elem_bytes = match shape.dtype {
        DType::F16 | DType::BF16 => 2,
        _ => return GemmPath::Tiled,
    };
    let (plane_min, plane) = caps.plane_size;
    // NOTE: the manual-MMA kernels address `ldmatrix` rows by lane for planes of 32.
    let mma = caps.mma && caps.plane_size == (32, 32) && force != Some("cmma");
    let fits = (caps.cmma || mma)
        && plane > 0
        && plane_min == plane
        && u64::from(plane) * PLANES as u64 <= u64::from(caps.max_units)
        && shared_bytes(elem_bytes, shape.nk) <= caps.max_shared
        && shape.experts <= caps.max_cube_count.2 as usize;
    if !fits {
        return GemmPath::Tiled;
    }
    let widest = (caps.load_bits as usize / 8 / elem_bytes).clamp(1, 8);
    let vector = [8, 4, 2, 1]
        .into_iter()
        .find(|&v| v <= widest && shape.k_dim % v == 0 && (shape.nk || (shape.n_dim % v == 0 && shape.n_out % v == 0)))
        .unwrap_or(1);
    let wide = vector == 8 && shape.n_out % 2 == 0 && mma6::shared_bytes(elem_bytes, shape.nk) <= caps.max_shared;
    let kernel = match (mma, force) {
        (false, _) => TensorKernel::Wmma,
        (true, Some("cmma3")) => TensorKernel::Mma,
        (true, _) if wide => TensorKernel::Wide,
        (true, _) => TensorKernel::Mma,
    };
    GemmPath::Cmma { vector, plane, kernel }
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

    fn cmma(vector: usize, plane: u32, kernel: TensorKernel) -> GemmPath {
        GemmPath::Cmma { vector, plane, kernel }
    }

    #[test]
    fn benchmark_shapes_take_the_wide_kernel_with_16_byte_vectors() {
        let up = shape(DType::BF16, 2048, 1536, 768, false);
        let down = shape(DType::BF16, 768, 2048, 2048, true);
        for s in [up, down] {
            assert_eq!(select_path(&H200, &s, None), cmma(8, 32, TensorKernel::Wide));
            assert_eq!(select_path(&H200, &s, Some(" CMMA3 ")), cmma(8, 32, TensorKernel::Mma));
            // The removed kernels' names select the default.
            assert_eq!(select_path(&H200, &s, Some("cmma5")), cmma(8, 32, TensorKernel::Wide));
        }
        // 204 KiB (`[E, K, N]`) fit, 216 KiB (`[E, N, K]`) do not: the first manual-MMA kernel.
        let mid = GemmCaps { max_shared: 210 * 1024, ..H200 };
        assert_eq!(select_path(&mid, &up, None), cmma(8, 32, TensorKernel::Wide));
        assert_eq!(select_path(&mid, &down, None), cmma(8, 32, TensorKernel::Mma));
    }

    #[test]
    fn ragged_rows_narrow_the_vectors_and_take_the_first_manual_mma_kernel() {
        // N_out = 300 (SwiGLU over N = 600) is a multiple of 4, not of 8.
        assert_eq!(select_path(&H200, &shape(DType::F16, 1000, 600, 300, false), None), cmma(4, 32, TensorKernel::Mma));
        // [E, N, K] weights only need K to divide; odd N_out has no output pairs.
        assert_eq!(select_path(&H200, &shape(DType::F16, 1000, 601, 601, true), None), cmma(8, 32, TensorKernel::Mma));
        assert_eq!(select_path(&H200, &shape(DType::F16, 1000, 602, 602, true), None), cmma(8, 32, TensorKernel::Wide));
        assert_eq!(select_path(&H200, &shape(DType::BF16, 999, 64, 64, true), None), cmma(1, 32, TensorKernel::Mma));
    }

    #[test]
    fn tiled_without_matrix_units_for_f32_or_when_forced() {
        let s = shape(DType::BF16, 2048, 1536, 768, false);
        assert_eq!(select_path(&H200, &s, Some("tiled")), GemmPath::Tiled);
        assert_eq!(select_path(&H200, &s, Some(" Tiled ")), GemmPath::Tiled);
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
    fn cmma_forces_the_wmma_kernel() {
        let up = shape(DType::BF16, 2048, 1536, 768, false);
        assert_eq!(select_path(&H200, &up, Some("cmma")), cmma(8, 32, TensorKernel::Wmma));
        // The Vulkan case: matrix instructions, no manual MMA.
        let vulkan = GemmCaps { mma: false, ..H200 };
        assert_eq!(select_path(&vulkan, &up, None), cmma(8, 32, TensorKernel::Wmma));
        // Manual MMA without `wmma` still takes the manual-MMA kernel; forcing `cmma` there
        // leaves the tiled one.
        let manual_only = GemmCaps { cmma: false, ..H200 };
        assert_eq!(select_path(&manual_only, &up, None), cmma(8, 32, TensorKernel::Wide));
        assert_eq!(select_path(&manual_only, &up, Some("cmma")), GemmPath::Tiled);
        // An unknown value (such as the removed `cmma2`) is the default choice.
        assert_eq!(select_path(&H200, &up, Some("cmma2")), cmma(8, 32, TensorKernel::Wide));
    }
}
