//! Which grouped-GEMM kernel a launch uses: [`select_path`], a pure function of what the
//! runtime offers ([`GemmCaps`]), the problem's shape ([`GemmShape`]) and the environment
//! override `MOEKIT_CUBECL_GEMM`. By default: the manual-MMA kernel (`ldmatrix` + `mma.sync`,
//! [`TensorKernel::Mma`], 121 TFLOP/s and the whole suite on the H200) where the runtime has
//! manual m16n8k16 MMA and planes of 32, else the first tensor-core kernel (`wmma`,
//! [`TensorKernel::Wmma`]), else the portable tiled kernel. Override values: `tiled` (the
//! portable kernel), `cmma` (the `wmma` kernel), `cmma3` (the default manual-MMA kernel),
//! `cmma4` (opt-in until a GPU has checked it: the manual-MMA kernel with 32-bit staging, a
//! column-first cube order and a register epilogue, [`TensorKernel::Mma4`], for 16-byte
//! staged vectors; other shapes take `cmma3`), `cmma5` (opt-in until a GPU has checked it: the
//! fourth kernel with asynchronous copies into three shared stages and stores of output
//! pairs, [`TensorKernel::Mma5`], for the same shapes with an even N_out; elsewhere, or where
//! its 204 KiB of shared memory do not fit, as `cmma4`), `cmma6` (opt-in until a GPU has
//! checked it: the fifth kernel on 128 × 256 blocks with four 64-deep stages,
//! [`TensorKernel::Mma6`]; elsewhere as `cmma5`).

use crate::kernels::grouped_gemm_cmma::{shared_bytes, PLANES};
use crate::kernels::grouped_gemm_mma4 as mma4;
use crate::kernels::grouped_gemm_mma5 as mma5;
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
    /// `kernels::grouped_gemm_mma4` (`cmma4`, opt-in): as [`TensorKernel::Mma`], staged
    /// vectors of 8 elements (16 bytes) only.
    Mma4,
    /// `kernels::grouped_gemm_mma5` (`cmma5`, opt-in): as [`TensorKernel::Mma4`] with
    /// asynchronous copies into three shared stages and stores of output pairs; even N_out.
    Mma5,
    /// `kernels::grouped_gemm_mma6` (`cmma6`, opt-in): as [`TensorKernel::Mma5`] on blocks of
    /// 128 × 256 with four stages of 64-deep K steps; even N_out.
    Mma6,
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
/// cube and its shared memory take it too. Otherwise the manual-MMA kernel where the runtime
/// has m16n8k16 manual MMA and planes of 32 (`cmma4` picks its opt-in variant where the
/// staged vectors are 16 bytes and its larger shared memory fits, else the default one;
/// `cmma5` likewise, else as `cmma4`), the
/// `wmma` kernel where not or with `cmma`.
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
    let kernel = match (mma, force) {
        (false, _) => TensorKernel::Wmma,
        // NOTE: the opt-in variant stages each 16-byte vector as four 32-bit words.
        // NOTE: the fifth kernel writes pairs of output columns, so N_out must be even.
        (true, Some("cmma6"))
            if vector == 8 && shape.n_out % 2 == 0 && mma6::shared_bytes(elem_bytes, shape.nk) <= caps.max_shared =>
        {
            TensorKernel::Mma6
        }
        (true, Some("cmma5" | "cmma6"))
            if vector == 8 && shape.n_out % 2 == 0 && mma5::shared_bytes(elem_bytes, shape.nk) <= caps.max_shared =>
        {
            TensorKernel::Mma5
        }
        (true, Some("cmma4" | "cmma5" | "cmma6"))
            if vector == 8 && mma4::shared_bytes(elem_bytes, shape.nk) <= caps.max_shared =>
        {
            TensorKernel::Mma4
        }
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
    fn benchmark_shapes_take_the_manual_mma_kernel_with_16_byte_vectors() {
        let up = shape(DType::BF16, 2048, 1536, 768, false);
        let down = shape(DType::BF16, 768, 2048, 2048, true);
        for s in [up, down] {
            assert_eq!(select_path(&H200, &s, None), cmma(8, 32, TensorKernel::Mma));
            assert_eq!(select_path(&H200, &s, Some("cmma3")), cmma(8, 32, TensorKernel::Mma));
            assert_eq!(select_path(&H200, &s, Some(" CMMA4 ")), cmma(8, 32, TensorKernel::Mma4));
        }
    }

    #[test]
    fn ragged_rows_narrow_the_vectors() {
        // N_out = 300 (SwiGLU over N = 600) is a multiple of 4, not of 8.
        assert_eq!(select_path(&H200, &shape(DType::F16, 1000, 600, 300, false), None), cmma(4, 32, TensorKernel::Mma));
        // [E, N, K] weights only need K to divide.
        assert_eq!(select_path(&H200, &shape(DType::F16, 1000, 601, 601, true), None), cmma(8, 32, TensorKernel::Mma));
        assert_eq!(select_path(&H200, &shape(DType::BF16, 999, 64, 64, true), None), cmma(1, 32, TensorKernel::Mma));
    }

    #[test]
    fn the_opt_in_variant_falls_back_to_the_default_where_it_cannot_stage_words() {
        // Vectors narrower than 16 bytes (K or N_out not a multiple of 8): `cmma3`.
        let odd = shape(DType::BF16, 999, 64, 64, true);
        assert_eq!(select_path(&H200, &odd, Some("cmma4")), cmma(1, 32, TensorKernel::Mma));
        let ragged = shape(DType::F16, 1000, 600, 300, false);
        assert_eq!(select_path(&H200, &ragged, Some("cmma4")), cmma(4, 32, TensorKernel::Mma));
        let nk = shape(DType::F16, 1000, 601, 601, true);
        assert_eq!(select_path(&H200, &nk, Some("cmma4")), cmma(8, 32, TensorKernel::Mma4));
        // Room for the first kernels' 88 KiB of shared memory, not for its 136 KiB.
        let up = shape(DType::BF16, 2048, 1536, 768, false);
        let mid = GemmCaps { max_shared: 100 * 1024, ..H200 };
        assert_eq!(select_path(&mid, &up, Some("cmma4")), cmma(8, 32, TensorKernel::Mma));
        // Without manual MMA, or with planes other than 32: the `wmma` kernel.
        let no_mma = GemmCaps { mma: false, ..H200 };
        assert_eq!(select_path(&no_mma, &up, Some("cmma4")), cmma(8, 32, TensorKernel::Wmma));
        let wide = GemmCaps { plane_size: (64, 64), ..H200 };
        assert_eq!(select_path(&wide, &up, Some("cmma4")), cmma(8, 64, TensorKernel::Wmma));
    }

    #[test]
    fn cmma6_takes_the_wide_block_kernel_where_its_shared_memory_fits() {
        let up = shape(DType::BF16, 2048, 1536, 768, false);
        let down = shape(DType::BF16, 768, 2048, 2048, true);
        for s in [up, down] {
            assert_eq!(select_path(&H200, &s, Some("cmma6")), cmma(8, 32, TensorKernel::Mma6));
        }
        // 204 KiB (`[E, K, N]`) fit, 216 KiB (`[E, N, K]`) do not: the fifth kernel's 204 KiB do.
        let mid = GemmCaps { max_shared: 210 * 1024, ..H200 };
        assert_eq!(select_path(&mid, &up, Some("cmma6")), cmma(8, 32, TensorKernel::Mma6));
        assert_eq!(select_path(&mid, &down, Some("cmma6")), cmma(8, 32, TensorKernel::Mma5));
        // Odd N_out (no output pairs): the fourth kernel; narrow vectors: the default one.
        let odd_n = shape(DType::BF16, 1024, 601, 601, true);
        assert_eq!(select_path(&H200, &odd_n, Some("cmma6")), cmma(8, 32, TensorKernel::Mma4));
        let odd = shape(DType::BF16, 999, 64, 64, true);
        assert_eq!(select_path(&H200, &odd, Some("cmma6")), cmma(1, 32, TensorKernel::Mma));
    }

    #[test]
    fn cmma5_takes_the_async_copy_kernel_where_its_shared_memory_fits() {
        let up = shape(DType::BF16, 2048, 1536, 768, false);
        let down = shape(DType::BF16, 768, 2048, 2048, true);
        for s in [up, down] {
            assert_eq!(select_path(&H200, &s, Some("cmma5")), cmma(8, 32, TensorKernel::Mma5));
            // Room for 136 KiB (`cmma4`), not for 204 KiB.
            let mid = GemmCaps { max_shared: 160 * 1024, ..H200 };
            assert_eq!(select_path(&mid, &s, Some("cmma5")), cmma(8, 32, TensorKernel::Mma4));
            let small = GemmCaps { max_shared: 100 * 1024, ..H200 };
            assert_eq!(select_path(&small, &s, Some("cmma5")), cmma(8, 32, TensorKernel::Mma));
        }
        let odd = shape(DType::BF16, 999, 64, 64, true);
        assert_eq!(select_path(&H200, &odd, Some("cmma5")), cmma(1, 32, TensorKernel::Mma));
        // An odd N_out (`[E, N, K]` weights): no output pairs, `cmma4`.
        let odd_n = shape(DType::F16, 1000, 601, 601, true);
        assert_eq!(select_path(&H200, &odd_n, Some("cmma5")), cmma(8, 32, TensorKernel::Mma4));
        let no_mma = GemmCaps { mma: false, ..H200 };
        assert_eq!(select_path(&no_mma, &up, Some("cmma5")), cmma(8, 32, TensorKernel::Wmma));
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
        assert_eq!(select_path(&lavapipe, &s, Some("cmma4")), GemmPath::Tiled);
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
        assert_eq!(select_path(&manual_only, &up, None), cmma(8, 32, TensorKernel::Mma));
        assert_eq!(select_path(&manual_only, &up, Some("cmma")), GemmPath::Tiled);
        // An unknown value (such as the removed `cmma2`) is the default choice.
        assert_eq!(select_path(&H200, &up, Some("cmma2")), cmma(8, 32, TensorKernel::Mma));
    }
}
