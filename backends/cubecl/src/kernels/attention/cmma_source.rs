//! The attention kernels expanded and compiled to CUDA C++ by cubecl's CUDA code generator,
//! without a GPU (the kernel value borrows a wgpu client only to be built): the matrix
//! instructions of every configuration, the vectorised copies and unrolled softmax, and the
//! shared memory the selection assumes. With `MOEKIT_CUBECL_SRC_OUT=<dir>` the sources are
//! written there (to compile with NVRTC and read `ptxas -v`).

use super::*;
use crate::kernels::grouped_gemm_cmma::source::shared_end;
use crate::{CubeBackend, WgpuRuntime};
use cubecl::frontend::ArrayCompilationArg;
use cubecl::ir::{FloatKind, StorageType, UIntKind};
use cubecl::prelude::{CubeKernel, KernelSettings};
use cubecl::server::ExecutionMode;
use cubecl::Compiler;
use std::io::Write;

/// The CUDA compiler's options (cubecl-cpp's `CompilationOptions`, not re-exported by name).
type Options = <cubecl::cuda::CudaCompiler as Compiler>::CompilationOptions;

/// `(d, causal, window, colr, capped, dtype)` of one generated kernel.
pub(in crate::kernels::attention) type Config = (usize, bool, bool, bool, bool, FloatKind);

/// Compiles `def` with the options cubecl's CUDA runtime sets on an sm_90 device (the fast
/// intrinsics among them: without `fast_math` `fast_exp` would read as `exp`).
pub(in crate::kernels::attention) fn compile(def: cubecl::prelude::KernelDefinition) -> String {
    let mut compiler = cubecl::cuda::CudaCompiler::default();
    let mut options = Options { warp_size: 32, ..Default::default() };
    let features = &mut options.supports_features;
    (features.fast_math, features.grid_constants, features.fast_tanh) = (true, true, true);
    (features.clusters, features.elect_sync) = (true, true);
    let address = StorageType::Scalar(ElemType::UInt(UIntKind::U32));
    compiler
        .compile(def, &options, ExecutionMode::Unchecked, address)
        .expect("the kernel compiles to CUDA C++")
        .to_string()
}

fn cuda_source(client: &ComputeClient<WgpuRuntime>, c: Config) -> String {
    let (d, causal, window, colr, capped, kind) = c;
    let settings = KernelSettings::default().cube_dim(CubeDim::new_2d(PLANE as u32, PLANES as u32));
    let arr = || ArrayCompilationArg { inplace: None };
    let elem = ElemType::Float(kind);
    let kernel = attention_cmma_kernel::AttentionCmmaKernel::<WgpuRuntime>::new(
        settings,
        client.clone(),
        arr(),
        arr(),
        arr(),
        arr(),
        arr(),
        arr(),
        arr(),
        (),
        (),
        (),
        (),
        (),
        (),
        (),
        (),
        VEC,
        d,
        causal,
        window,
        colr,
        capped,
        elem,
    );
    compile(kernel.define())
}

/// The configurations the source tests generate: the benchmark's first, then every option.
pub(in crate::kernels::attention) const CONFIGS: [Config; 5] = [
    (128, true, false, false, false, FloatKind::BF16),
    (64, false, true, true, true, FloatKind::F16),
    (128, false, false, false, false, FloatKind::F16),
    (64, true, false, false, false, FloatKind::BF16),
    (128, true, true, true, true, FloatKind::BF16),
];

#[test]
fn every_configuration_generates_cuda_with_matrix_instructions() {
    let b = match CubeBackend::<WgpuRuntime>::wgpu() {
        Ok(b) => b,
        Err(e) => {
            let _ = writeln!(std::io::stderr(), "SKIPPED every_configuration_generates_cuda: {e}");
            return;
        }
    };
    let out = std::env::var("MOEKIT_CUBECL_SRC_OUT").ok();
    for c in CONFIGS {
        let d = c.0;
        let src = cuda_source(&b.client, c);
        if let Some(dir) = &out {
            let name = format!("{dir}/attn_cmma_{}_{}_{}_{}_{}_{:?}.cu", d, c.1, c.2, c.3, c.4, c.5);
            std::fs::write(name, &src).unwrap();
        }
        // Per key block: S = Q·Kᵀ and O += P·V, (BK/16)·(D/16) fragments each.
        let per_block = 2 * (BK / 16) * (d / 16);
        assert_eq!(src.matches("wmma::mma_sync").count(), per_block, "{c:?}");
        // Loads: Q (D/16), K and V (per block), P (BK/16), the rescale's reload (D/16).
        let loads = 2 * (d / 16) + per_block + BK / 16;
        assert_eq!(src.matches("wmma::load_matrix_sync").count(), loads, "{c:?}");
        // Stores: S (BK/16), the rescale and the epilogue (D/16 each).
        assert_eq!(src.matches("wmma::store_matrix_sync").count(), BK / 16 + 2 * (d / 16), "{c:?}");
        // The module doc's (and the selection's) budget: K, V, score and probability strips.
        // The exponentials take the fast intrinsic (`fast_exp`): the blocks' and the rescale's.
        assert_eq!(src.matches("__expf(").count(), BK / 2 + 1, "{c:?}");
        let shared = 2 * BK * (d + 8) * 2 + BQ * (BK + 4) * 4 + BQ * (BK + 8) * 2;
        assert_eq!(shared_end(&src), shared, "{c:?}");
        // Q, K and V move as 16-byte vectors and no 2-element loop copies a tile.
        let vector = match c.5 {
            FloatKind::BF16 => "__nv_bfloat16_8",
            _ => "__half_8",
        };
        assert!(src.contains(vector), "{c:?}: no {vector}");
        // The only loops left are the row scalings of the rescale and the epilogue.
        assert_eq!(src.matches("for (").count(), 2 * (d / 64), "{c:?}: a copy or softmax loop is rolled");
    }
}
