//! [`GlueOps`] on cubecl: RMSNorm, rotary, SwiGLU, embedding (kernels in
//! [`crate::kernels::glue`]); the dense GEMM runs the tiled GEMM of [`super::gemm`].

use super::gemm::{float_elem, scalar};
use super::{array, cubes_1d, grid, placeholder, BLOCK};
use crate::flag::BadIndex;
use crate::kernels::glue;
use crate::{CubeBackend, CubeBuffer};
use cubecl::prelude::*;
use moekit_ops::{
    EmbeddingProblem, GemmProblem, GlueOps, Result, RmsNormIo, RmsNormProblem, RotaryIo, RotaryPositions,
    RotaryProblem, SwigluProblem, Validated,
};

impl<R: Runtime> GlueOps for CubeBackend<R> {
    fn rms_norm(&self, p: &Validated<RmsNormProblem>, io: RmsNormIo<'_, CubeBuffer>) -> Result<()> {
        const OP: &str = "rms_norm";
        let elem = float_elem(OP, p.dtype)?;
        let Some(count) = cubes_1d(OP, p.rows)? else { return Ok(()) };
        let (residual, residual_out) = match (io.residual, io.residual_out) {
            (Some(r), Some(ro)) => (array(r), array(ro)),
            _ => (placeholder(self), placeholder(self)),
        };
        glue::rms_norm::launch::<R>(
            &self.client,
            count,
            CubeDim::new_1d(BLOCK as u32),
            array(io.x),
            array(io.weight),
            residual,
            array(io.y),
            residual_out,
            scalar(OP, p.rows)?,
            scalar(OP, p.hidden)?,
            p.eps,
            p.residual,
            BLOCK,
            elem,
        );
        Ok(())
    }

    fn rotary(&self, p: &Validated<RotaryProblem>, io: RotaryIo<'_, CubeBuffer>) -> Result<()> {
        const OP: &str = "rotary";
        let elem = float_elem(OP, p.dtype)?;
        let half = p.head_dim / 2;
        let Some(count) = grid(OP, p.tokens * p.heads * half)? else { return Ok(()) };
        let (s0, s01) = match p.positions {
            RotaryPositions::OneD => (half, half),
            RotaryPositions::ThreeD { sections } => (sections[0], sections[0] + sections[1]),
        };
        glue::rotary::launch::<R>(
            &self.client,
            count,
            CubeDim::new_1d(BLOCK as u32),
            array(io.x),
            array(io.positions),
            array(io.out),
            scalar(OP, p.tokens)?,
            scalar(OP, p.heads)?,
            scalar(OP, half)?,
            p.theta,
            scalar(OP, s0)?,
            scalar(OP, s01)?,
            elem,
        );
        Ok(())
    }

    fn swiglu(&self, p: &Validated<SwigluProblem>, x: &CubeBuffer, y: &mut CubeBuffer) -> Result<()> {
        const OP: &str = "swiglu";
        let elem = float_elem(OP, p.dtype)?;
        let Some(count) = grid(OP, p.rows * p.inter)? else { return Ok(()) };
        glue::swiglu::launch::<R>(
            &self.client,
            count,
            CubeDim::new_1d(BLOCK as u32),
            array(x),
            array(y),
            scalar(OP, p.rows)?,
            scalar(OP, p.inter)?,
            elem,
        );
        Ok(())
    }

    fn embedding(
        &self,
        p: &Validated<EmbeddingProblem>,
        table: &CubeBuffer,
        ids: &CubeBuffer,
        out: &mut CubeBuffer,
    ) -> Result<()> {
        const OP: &str = "embedding";
        let elem = float_elem(OP, p.dtype)?;
        let Some(count) = grid(OP, p.tokens * p.hidden)? else { return Ok(()) };
        glue::embedding::launch::<R>(
            &self.client,
            count,
            CubeDim::new_1d(BLOCK as u32),
            array(table),
            array(ids),
            array(out),
            self.flag_arg(),
            scalar(OP, p.tokens)?,
            scalar(OP, p.vocab)?,
            scalar(OP, p.hidden)?,
            BadIndex::EmbeddingIds.code(),
            elem,
        );
        Ok(())
    }

    fn gemm(&self, p: &Validated<GemmProblem>, a: &CubeBuffer, b: &CubeBuffer, c: &mut CubeBuffer) -> Result<()> {
        super::gemm::gemm(self, p, a, b, c)
    }
}
