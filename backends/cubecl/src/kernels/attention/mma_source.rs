//! The manual-MMA attention kernel expanded and compiled to CUDA C++ by cubecl's CUDA code
//! generator, without a GPU (as [`super::super::cmma::source`]): the fragment loads and
//! `mma.sync` calls of every configuration, no shared memory but the K/V stages, and no
//! rolled loop. With `MOEKIT_CUBECL_SRC_OUT=<dir>` the sources are written there (to compile
//! with NVRTC and read `ptxas -v`).

use super::*;
use crate::kernels::attention::cmma::source::{compile, Config, CONFIGS};
use crate::kernels::attention::cmma::VEC;
use crate::kernels::grouped_gemm_cmma::source::shared_end;
use crate::{CubeBackend, WgpuRuntime};
use cubecl::frontend::ArrayCompilationArg;
use cubecl::prelude::{CubeKernel, KernelSettings};
use std::io::Write;

fn cuda_source(client: &ComputeClient<WgpuRuntime>, c: Config, planes: usize) -> String {
    let (d, causal, window, colr, capped, kind) = c;
    let settings = KernelSettings::default().cube_dim(CubeDim::new_2d(PLANE as u32, planes as u32));
    let arr = || ArrayCompilationArg { inplace: None };
    let kernel = attention_mma_kernel::AttentionMmaKernel::<WgpuRuntime>::new(
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
        planes,
        causal,
        window,
        colr,
        capped,
        ElemType::Float(kind),
    );
    compile(kernel.define())
}

#[test]
fn every_configuration_generates_cuda_with_manual_mma() {
    let b = match CubeBackend::<WgpuRuntime>::wgpu() {
        Ok(b) => b,
        Err(e) => {
            let _ = writeln!(std::io::stderr(), "SKIPPED every_configuration_generates_cuda_with_manual_mma: {e}");
            return;
        }
    };
    let out = std::env::var("MOEKIT_CUBECL_SRC_OUT").ok();
    for (c, planes) in CONFIGS.into_iter().flat_map(|c| [(c, PLANES), (c, PLANES_WIDE)]) {
        let d = c.0;
        let src = cuda_source(&b.client, c, planes);
        if let Some(dir) = &out {
            let name = format!("{dir}/attn_mma{planes}_{}_{}_{}_{}_{}_{:?}.cu", d, c.1, c.2, c.3, c.4, c.5);
            std::fs::write(name, &src).unwrap();
        }
        // Per key block: S = Q·Kᵀ and O += P·V, (BK/16)·(D/16) ldmatrix.x4 and twice as many
        // m16n8k16 each; the Q fragments once.
        let steps = (BK / FRAG) * (d / FRAG);
        assert_eq!(src.matches("__mma_m16n8k16_").count() - 1, 4 * steps, "{c:?}");
        assert_eq!(src.matches("__ldmatrix_m8n8_").count() - 2, 2 * steps + d / FRAG, "{c:?}");
        assert!(src.contains("ldmatrix.sync.aligned.m8n8.x4.trans.shared::cta.b16"), "{c:?}");
        assert_eq!(src.matches("__expf(").count(), 2 + BK / 2, "{c:?}");
        assert_eq!(shared_end(&src), shared_bytes_of(d, planes), "{c:?}");
        assert!(shared_bytes_of(d, planes) <= 227 * 1024 - 1024, "{c:?}");
        // No cube sync but the barriers' initialisations; a wait for Q and one per stage (in
        // the loop, a branch per barrier).
        assert_eq!(src.matches("__syncthreads()").count(), 3, "{c:?}");
        assert_eq!(src.matches(".arrive_and_wait()").count(), 4, "{c:?}");
        // 16-byte copies: the unit's Q rows, then its K and V rows of the first `S - 1` blocks
        // and of the loop's block.
        let rstep = PLANE * planes / (d / VEC);
        let copies = rows(planes) / rstep + stages(planes) * 2 * (BK / rstep);
        assert_eq!(src.matches("__cp_async_shared_global<16>(buffer_").count(), copies, "{c:?} planes {planes}");
        assert_eq!(src.matches("for (").count(), 0, "{c:?}: a loop is rolled");
        assert!(src.contains(&format!("__launch_bounds__({})", PLANE * planes)), "{c:?} planes {planes}");
    }
}
