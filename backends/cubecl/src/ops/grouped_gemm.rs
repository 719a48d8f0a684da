//! [`GroupedGemmOps`] on cubecl: one launch of a tensor-core kernel (the manual-MMA one,
//! [`crate::kernels::grouped_gemm_mma`], or [`crate::kernels::grouped_gemm_cmma`]) where the
//! runtime has matrix instructions for the dtype, else of the tiled kernel
//! ([`crate::kernels::grouped_gemm`]), picked by
//! [`super::gemm_path::select_path`]; offsets and counts stay on the device (no host sync), bad
//! ones are recorded in the backend's content-error flag.

use super::gemm::{launch, path, TiledLaunch};
use super::gemm_path::{GemmPath, GemmShape};
use crate::kernels::grouped_gemm::{MODE_CONTIGUOUS, MODE_MASKED};
use crate::CubeBackend;
use cubecl::Runtime;
use moekit_ops::{GemmLayout, GroupedGemmIo, GroupedGemmOps, GroupedGemmProblem, Result, Validated, WeightLayout};

impl<R: Runtime> CubeBackend<R> {
    /// The kernel [`GroupedGemmOps::grouped_gemm`] launches for `p` on this runtime, for
    /// diagnostics and tests: `"cmma"` (matrix instructions) or `"tiled"` (the portable
    /// kernel; every tensor-core kernel answers `"cmma"`), after the override
    /// `MOEKIT_CUBECL_GEMM`.
    pub fn grouped_gemm_kernel(&self, p: &GroupedGemmProblem) -> &'static str {
        let shape = GemmShape {
            dtype: p.dtype,
            k_dim: p.k_dim,
            n_dim: p.n_dim,
            n_out: p.n_out(),
            nk: p.weight_layout == WeightLayout::NK,
            experts: if matches!(p.layout, GemmLayout::Masked { .. }) { p.experts } else { 1 },
        };
        match path(self, &shape) {
            GemmPath::Tiled => "tiled",
            GemmPath::Cmma { .. } => "cmma",
        }
    }
}

impl<R: Runtime> GroupedGemmOps for CubeBackend<R> {
    fn grouped_gemm(&self, p: &Validated<GroupedGemmProblem>, io: GroupedGemmIo<'_, Self::Buffer>) -> Result<()> {
        let (mode, rows) = match p.layout {
            GemmLayout::Contiguous { rows } => (MODE_CONTIGUOUS, rows),
            GemmLayout::Masked { capacity } => (MODE_MASKED, capacity),
        };
        launch(
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
