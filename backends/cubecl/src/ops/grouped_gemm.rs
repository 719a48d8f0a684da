//! [`GroupedGemmOps`] on cubecl: one launch of the tiled kernel of
//! [`crate::kernels::grouped_gemm`]; offsets and counts stay on the device (no host sync), bad
//! ones are recorded in the backend's content-error flag.

use super::gemm::{launch_tiled, TiledLaunch};
use crate::kernels::grouped_gemm::{MODE_CONTIGUOUS, MODE_MASKED};
use crate::CubeBackend;
use cubecl::Runtime;
use moekit_ops::{GemmLayout, GroupedGemmIo, GroupedGemmOps, GroupedGemmProblem, Result, Validated, WeightLayout};

impl<R: Runtime> GroupedGemmOps for CubeBackend<R> {
    fn grouped_gemm(&self, p: &Validated<GroupedGemmProblem>, io: GroupedGemmIo<'_, Self::Buffer>) -> Result<()> {
        let (mode, rows) = match p.layout {
            GemmLayout::Contiguous { rows } => (MODE_CONTIGUOUS, rows),
            GemmLayout::Masked { capacity } => (MODE_MASKED, capacity),
        };
        launch_tiled(
            self,
            TiledLaunch {
                op: "grouped_gemm",
                dtype: p.dtype,
                x: io.x,
                w: io.w,
                group: Some(io.group),
                row_to_token: io.row_to_token,
                row_scale: io.row_scale,
                y: io.y,
                experts: p.experts,
                rows,
                tokens: p.gather_tokens.unwrap_or(0),
                k_dim: p.k_dim,
                n_dim: p.n_dim,
                n_out: p.n_out(),
                mode,
                nk: p.weight_layout == WeightLayout::NK,
                swiglu: p.swiglu,
            },
        )
    }
}
