//! The tensor-core kernel expanded and compiled to CUDA C++ by cubecl's CUDA code generator,
//! without a GPU (the kernel value borrows a wgpu client only to be built): every
//! configuration must generate, use the matrix instructions, and fit the shared memory the
//! selection assumes. With `MOEKIT_CUBECL_SRC_OUT=<dir>` the sources are written there (to
//! compile with NVRTC and read `ptxas -v`).

use super::*;
use crate::kernels::grouped_gemm::{MODE_CONTIGUOUS, MODE_DENSE, MODE_MASKED};
use crate::{CubeBackend, WgpuRuntime};
use cubecl::frontend::ArrayCompilationArg;
use cubecl::ir::{FloatKind, StorageType, UIntKind};
use cubecl::prelude::{CubeKernel, KernelSettings};
use cubecl::server::ExecutionMode;
use cubecl::Compiler;
use std::io::Write;

/// `(mode, nk, swiglu, scale, gather, vector, dtype)` of one generated kernel.
type Config = (u32, bool, bool, bool, bool, usize, FloatKind);

/// The generated configurations.
const CONFIGS: [Config; 9] = [
    // The benchmark's up GEMM and dense GEMM (bf16, `[E, K, N]` / `[K, N]`).
    (MODE_CONTIGUOUS, false, true, false, false, 8, FloatKind::BF16),
    (MODE_DENSE, false, false, false, false, 8, FloatKind::BF16),
    (MODE_CONTIGUOUS, false, true, true, true, 8, FloatKind::BF16),
    (MODE_CONTIGUOUS, true, false, false, false, 8, FloatKind::BF16),
    (MODE_MASKED, false, true, true, false, 4, FloatKind::F16),
    (MODE_MASKED, true, false, true, false, 2, FloatKind::BF16),
    (MODE_DENSE, false, false, false, false, 8, FloatKind::F16),
    (MODE_DENSE, true, false, false, false, 1, FloatKind::BF16),
    (MODE_CONTIGUOUS, true, true, false, true, 4, FloatKind::BF16),
];

/// The CUDA C++ of kernel `$kernel` (a generated kernel type) for config `$c`.
macro_rules! source {
    ($kernel:ty, $client:expr, $c:expr) => {{
        let (mode, nk, swiglu, scale, gather, vector, kind) = $c;
        let settings = KernelSettings::default().cube_dim(CubeDim::new_2d(32, PLANES as u32));
        let arr = || ArrayCompilationArg { inplace: None };
        let kernel = <$kernel>::new(
            settings,
            $client.clone(),
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
            vector,
            32,
            mode,
            nk,
            swiglu,
            scale,
            gather,
            ElemType::Float(kind),
        );
        let mut compiler = cubecl::cuda::CudaCompiler::default();
        let address = StorageType::Scalar(ElemType::UInt(UIntKind::U32));
        compiler
            .compile(kernel.define(), &Default::default(), ExecutionMode::Unchecked, address)
            .expect("the kernel compiles to CUDA C++")
            .to_string()
    }};
}

/// A wgpu client to build kernel values with, or `None` (the test says it skipped).
fn client(test: &str) -> Option<ComputeClient<WgpuRuntime>> {
    match CubeBackend::<WgpuRuntime>::wgpu() {
        Ok(b) => Some(b.client),
        Err(e) => {
            let _ = writeln!(std::io::stderr(), "SKIPPED {test}: {e}");
            None
        }
    }
}

/// Writes `src` to `$MOEKIT_CUBECL_SRC_OUT/<prefix>_<config>.cu` when that is set.
fn dump(prefix: &str, c: Config, src: &str) {
    if let Ok(dir) = std::env::var("MOEKIT_CUBECL_SRC_OUT") {
        let (m, nk, sw, sc, ga, v, k) = c;
        std::fs::write(format!("{dir}/{prefix}_{m}_{nk}_{sw}_{sc}_{ga}_{v}_{k:?}.cu"), src).unwrap();
    }
}

#[test]
fn every_configuration_generates_cuda_with_matrix_instructions() {
    let Some(client) = client("every_configuration_generates_cuda") else { return };
    for c in CONFIGS {
        let src = source!(grouped_gemm_cmma_kernel::GroupedGemmCmmaKernel<WgpuRuntime>, client, c);
        dump("ggc", c, &src);
        assert_eq!(src.matches("wmma::mma_sync").count(), 8 * BK / FRAG, "{c:?}");
        assert_eq!(src.matches("wmma::store_matrix_sync").count(), 8, "{c:?}");
        // The shared arrays end where `shared_bytes` says, every one 32-byte aligned.
        assert_eq!(shared_end(&src), shared_bytes(2, c.1), "{c:?}");
        assert!(src.contains(&format!("_v_{} (", c.5)) || c.5 == 1, "{c:?}");
    }
}

/// The end of the last shared array of a generated kernel, in bytes, from the generator's
/// `// Shared array size: N, B bytes` comment and the offset on the next line (also used by the
/// attention kernels' source test).
pub(crate) fn shared_end(src: &str) -> usize {
    let lines: Vec<&str> = src.lines().collect();
    let mut end = 0;
    for (i, line) in lines.iter().enumerate() {
        let Some(rest) = line.strip_prefix("// Shared array size: ") else { continue };
        let bytes: usize = rest.split(", ").nth(1).and_then(|b| b.strip_suffix(" bytes")).unwrap().parse().unwrap();
        let next = lines[i + 1];
        let at = next.find("dynamic_shared_mem[").unwrap() + "dynamic_shared_mem[".len();
        let offset: usize = next[at..].split(']').next().unwrap().parse().unwrap();
        assert_eq!(offset % 32, 0, "{next}");
        end = end.max(offset + bytes);
    }
    end
}

/// Checks the K loop (steps of `bk`) of a manual-MMA kernel: per K sub-step 4 A fragments and
/// 2 B tile pairs by `ldmatrix.x4`, 16 m16n8k16 MMAs, no `wmma`; B is transposed by
/// `ldmatrix` exactly for row-major `[E, K, N]` weights.
fn check_mma(src: &str, c: Config, bk: usize) {
    let nk = c.1;
    assert!(!src.contains("wmma::"), "{c:?}");
    let trans = src.matches("_4x_trans(").count() - usize::from(src.contains("_4x_trans(uint32"));
    let plain = src.matches("_4x(").count() - usize::from(src.contains("_4x(uint32"));
    let (b_trans, b_plain) = if nk { (0, 2) } else { (2, 0) };
    assert_eq!((trans, plain), (b_trans * bk / FRAG, (4 + b_plain) * bk / FRAG), "{c:?}");
    let mma = src.matches("__mma_m16n8k16_").count() - 1;
    assert_eq!(mma, 16 * bk / FRAG, "{c:?}");
}

#[test]
fn the_manual_mma_kernel_generates_ldmatrix_and_mma_sync() {
    use crate::kernels::grouped_gemm_mma::grouped_gemm_mma_kernel::GroupedGemmMmaKernel;
    let Some(client) = client("the_manual_mma_kernel_generates") else { return };
    for c in CONFIGS {
        let src = source!(GroupedGemmMmaKernel<WgpuRuntime>, client, c);
        dump("ggm", c, &src);
        check_mma(&src, c, BK);
        assert_eq!(shared_end(&src), shared_bytes(2, c.1), "{c:?}");
    }
}

#[test]
fn the_wide_kernel_runs_128_by_256_blocks_through_four_stages() {
    use crate::kernels::grouped_gemm_mma6::{self as mma6, grouped_gemm_mma6_kernel::GroupedGemmMma6Kernel, BK as BK6};
    let Some(client) = client("the_sixth_kernel_generates") else { return };
    for c in CONFIGS.into_iter().filter(|c| c.5 == 8) {
        let src = source!(GroupedGemmMma6Kernel<WgpuRuntime>, client, c);
        dump("ggm6", c, &src);
        // Per K sub-step 4 A and 4 B `ldmatrix.x4`, 32 MMAs.
        assert!(!src.contains("wmma::"), "{c:?}");
        let trans = src.matches("_4x_trans(").count() - usize::from(src.contains("_4x_trans(uint32"));
        let plain = src.matches("_4x(").count() - usize::from(src.contains("_4x(uint32"));
        let (b_trans, b_plain) = if c.1 { (0, 4) } else { (4, 0) };
        assert_eq!((trans, plain), (b_trans * BK6 / FRAG, (4 + b_plain) * BK6 / FRAG), "{c:?}");
        assert_eq!(src.matches("__mma_m16n8k16_").count() - 1, 32 * BK6 / FRAG, "{c:?}");
        assert_eq!(shared_end(&src), mma6::shared_bytes(2, c.1), "{c:?}");
        assert!(mma6::shared_bytes(2, c.1) <= 227 * 1024 - 1024, "{c:?}");
        // 12 copies of 16 bytes per unit and K step (4 of x, 8 of weights), issued at four
        // places (the three prologue steps and the loop), each set committed to a barrier.
        assert_eq!(src.matches("__cp_async_shared_global<16>(").count() - 2, 4 * 12, "{c:?}");
        assert_eq!(src.matches("__cp_async_arrive(").count() - 1, 3 + 4, "{c:?}");
        assert_eq!(src.matches(".arrive_and_wait()").count(), 4, "{c:?}");
        assert!(src.contains("_2* buffer_5"), "{c:?}");
    }
}
