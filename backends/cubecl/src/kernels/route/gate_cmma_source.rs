//! The matrix-instruction gate expanded and compiled to CUDA C++ by cubecl's CUDA code
//! generator without a GPU (the kernel value borrows a wgpu client only to be built): it must
//! generate, use the matrix instructions, and fit the shared memory the selection assumes.
//! With `MOEKIT_CUBECL_SRC_OUT=<dir>` the sources are written there (to compile with NVRTC and
//! read `ptxas -v`).

use super::*;
use crate::kernels::grouped_gemm_cmma::source::shared_end;
use crate::{CubeBackend, WgpuRuntime};
use cubecl::frontend::ArrayCompilationArg;
use cubecl::ir::{FloatKind, StorageType, UIntKind};
use cubecl::prelude::{CubeKernel, KernelSettings};
use cubecl::server::ExecutionMode;
use cubecl::Compiler;
use std::io::Write;

fn cuda_source(client: &ComputeClient<WgpuRuntime>, kind: FloatKind) -> String {
    let settings = KernelSettings::default().cube_dim(CubeDim::new_2d(32, GC_PLANES as u32));
    let arr = || ArrayCompilationArg { inplace: None };
    let kernel = gate_logits_cmma::GateLogitsCmma::<WgpuRuntime>::new(
        settings,
        client.clone(),
        arr(),
        arr(),
        arr(),
        (),
        (),
        (),
        32,
        ElemType::Float(kind),
    );
    let mut compiler = cubecl::cuda::CudaCompiler::default();
    let address = StorageType::Scalar(ElemType::UInt(UIntKind::U32));
    compiler
        .compile(kernel.define(), &Default::default(), ExecutionMode::Unchecked, address)
        .expect("the kernel compiles to CUDA C++")
        .to_string()
}

#[test]
fn the_gate_generates_cuda_with_matrix_instructions() {
    let b = match CubeBackend::<WgpuRuntime>::wgpu() {
        Ok(b) => b,
        Err(e) => {
            let _ = writeln!(std::io::stderr(), "SKIPPED the_gate_generates_cuda: {e}");
            return;
        }
    };
    let out = std::env::var("MOEKIT_CUBECL_SRC_OUT").ok();
    for kind in [FloatKind::BF16, FloatKind::F16] {
        let src = cuda_source(&b.client, kind);
        if let Some(dir) = &out {
            std::fs::write(format!("{dir}/gate_cmma_{kind:?}.cu"), &src).unwrap();
        }
        // Four MMAs per 16-deep sub-step, four stores of the accumulators.
        assert_eq!(src.matches("wmma::mma_sync").count(), 4 * GC_BK / FRAG, "{kind:?}");
        assert_eq!(src.matches("wmma::store_matrix_sync").count(), 4, "{kind:?}");
        assert_eq!(shared_end(&src), gate_cmma_shared_bytes(), "{kind:?}");
    }
}

/// The selection kernel of the qwen3 benchmark (planes of 32, 8 a cube, 4 experts a lane,
/// softmax, renormalised) compiled to CUDA C++: written out with `MOEKIT_CUBECL_SRC_OUT`.
#[test]
fn the_selection_generates_cuda_with_plane_operations() {
    use crate::kernels::route::plane::route_plane;
    let b = match CubeBackend::<WgpuRuntime>::wgpu() {
        Ok(b) => b,
        Err(e) => {
            let _ = writeln!(std::io::stderr(), "SKIPPED the_selection_generates_cuda: {e}");
            return;
        }
    };
    let settings = KernelSettings::default().cube_dim(CubeDim::new_2d(32, 8));
    let arr = || ArrayCompilationArg { inplace: None };
    let kernel = route_plane::RoutePlane::<WgpuRuntime>::new(
        settings,
        b.client.clone(),
        arr(),
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
        32,
        8,
        4,
        false,
        false,
        false,
        false,
        false,
        true,
        ElemType::Float(FloatKind::F32),
    );
    let mut compiler = cubecl::cuda::CudaCompiler::default();
    let address = StorageType::Scalar(ElemType::UInt(UIntKind::U32));
    let src = compiler
        .compile(kernel.define(), &Default::default(), ExecutionMode::Checked, address)
        .expect("the kernel compiles to CUDA C++")
        .to_string();
    if let Ok(dir) = std::env::var("MOEKIT_CUBECL_SRC_OUT") {
        std::fs::write(format!("{dir}/route_plane_F32.cu"), &src).unwrap();
    }
    assert!(src.contains("__shfl_xor_sync"), "plane reductions as shuffles");
}

/// The manual-MMA gate (16-byte vectors, planes of 32) compiled to CUDA C++: per 16-deep
/// sub-step 2 A loads by `ldmatrix.x4` and 4 B loads by `ldmatrix.x4.trans`, 16 m16n8k16
/// MMAs, no `wmma`, two stages of shared memory, 32-bit staging. Written out with
/// `MOEKIT_CUBECL_SRC_OUT` as `gate_mma_<dtype>.cu`.
#[test]
fn the_manual_mma_gate_generates_cuda() {
    use crate::kernels::route::gate_mma::{gate_logits_mma::GateLogitsMma, gate_mma_shared_bytes, KB, PLANES, VEC};
    let b = match CubeBackend::<WgpuRuntime>::wgpu() {
        Ok(b) => b,
        Err(e) => {
            let _ = writeln!(std::io::stderr(), "SKIPPED the_manual_mma_gate_generates_cuda: {e}");
            return;
        }
    };
    for kind in [FloatKind::BF16, FloatKind::F16] {
        let settings = KernelSettings::default().cube_dim(CubeDim::new_2d(32, PLANES as u32));
        let arr = || ArrayCompilationArg { inplace: None };
        let kernel = GateLogitsMma::<WgpuRuntime>::new(
            settings,
            b.client.clone(),
            arr(),
            arr(),
            arr(),
            (),
            (),
            (),
            VEC,
            ElemType::Float(kind),
        );
        let mut compiler = cubecl::cuda::CudaCompiler::default();
        let address = StorageType::Scalar(ElemType::UInt(UIntKind::U32));
        let src = compiler
            .compile(kernel.define(), &Default::default(), ExecutionMode::Unchecked, address)
            .expect("the kernel compiles to CUDA C++")
            .to_string();
        if let Ok(dir) = std::env::var("MOEKIT_CUBECL_SRC_OUT") {
            std::fs::write(format!("{dir}/gate_mma_{kind:?}.cu"), &src).unwrap();
        }
        assert!(!src.contains("wmma::"), "{kind:?}");
        let trans = src.matches("_4x_trans(").count() - usize::from(src.contains("_4x_trans(uint32"));
        let plain = src.matches("_4x(").count() - usize::from(src.contains("_4x(uint32"));
        assert_eq!((trans, plain), (4 * KB / FRAG, 2 * KB / FRAG), "{kind:?}");
        assert_eq!(src.matches("__mma_m16n8k16_").count() - 1, 16 * KB / FRAG, "{kind:?}");
        assert_eq!(shared_end(&src), gate_mma_shared_bytes(), "{kind:?}");
        assert!(src.contains("reinterpret_cast<uint32_4 const&>"), "{kind:?}");
    }
}
