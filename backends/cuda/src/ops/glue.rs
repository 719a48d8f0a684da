//! GlueOps on CUDA: RMSNorm, rotary, SwiGLU and embedding kernels (`kernels/glue.cu`); the dense
//! GEMM goes through cuBLASLt (`gemm.rs`).

use crate::launch::{blocks, cover, i32_of, kernel_name, launch_err};
use crate::runtime::sources::GLUE;
use crate::{CudaBackend, CudaBuffer};
use cudarc::driver::PushKernelArg;
use moekit_ops::{
    EmbeddingProblem, GemmProblem, GlueOps, Result, RmsNormIo, RmsNormProblem, RotaryIo, RotaryPositions,
    RotaryProblem, SwigluProblem, Validated,
};

/// A null device pointer for an absent optional argument.
const NULL: u64 = 0;

impl GlueOps for CudaBackend {
    fn rms_norm(&self, p: &Validated<RmsNormProblem>, io: RmsNormIo<'_, CudaBuffer>) -> Result<()> {
        const OP: &str = "rms_norm";
        if p.rows == 0 {
            return Ok(());
        }
        let f = self.kernels.function(OP, &GLUE, &kernel_name(OP, p.dtype))?;
        let (rows, h) = (i32_of(p.rows), i32_of(p.hidden));
        let mut b = self.stream.launch_builder(&f);
        b.arg(&io.x.data).arg(&io.weight.data);
        match io.residual {
            Some(r) => b.arg(&r.data),
            None => b.arg(&NULL),
        };
        b.arg(&mut io.y.data);
        match io.residual_out {
            Some(ro) => b.arg(&mut ro.data),
            None => b.arg(&NULL),
        };
        b.arg(&rows).arg(&h).arg(&p.eps);
        // SAFETY: the argument list matches `rms_norm_impl`'s parameters; check_io proved every
        // buffer holds rows × H elements of the dtype (weight H), so the kernel stays in bounds.
        unsafe { b.launch(blocks(p.rows, 256)) }.map(drop).map_err(launch_err(OP))
    }

    fn rotary(&self, p: &Validated<RotaryProblem>, io: RotaryIo<'_, CudaBuffer>) -> Result<()> {
        const OP: &str = "rotary";
        let pairs = p.tokens * p.heads * (p.head_dim / 2);
        if pairs == 0 {
            return Ok(());
        }
        let f = self.kernels.function(OP, &GLUE, &kernel_name(OP, p.dtype))?;
        let (s0, s1, three_d) = match p.positions {
            RotaryPositions::OneD => (0, 0, 0),
            RotaryPositions::ThreeD { sections } => (i32_of(sections[0]), i32_of(sections[1]), 1),
        };
        let (t, h, d) = (i32_of(p.tokens), i32_of(p.heads), i32_of(p.head_dim));
        let mut b = self.stream.launch_builder(&f);
        b.arg(&io.x.data).arg(&io.positions.data).arg(&mut io.out.data);
        b.arg(&t).arg(&h).arg(&d).arg(&p.theta).arg(&s0).arg(&s1).arg(&three_d);
        // SAFETY: arguments match `rotary_impl`; x and out hold T × heads × D elements and
        // positions T (or 3 × T) i32, as check_io proved; one thread per pair, bounds-checked.
        unsafe { b.launch(cover(pairs, 256)) }.map(drop).map_err(launch_err(OP))
    }

    fn swiglu(&self, p: &Validated<SwigluProblem>, x: &CudaBuffer, y: &mut CudaBuffer) -> Result<()> {
        const OP: &str = "swiglu";
        let n = p.rows * p.inter;
        if n == 0 {
            return Ok(());
        }
        let f = self.kernels.function(OP, &GLUE, &kernel_name(OP, p.dtype))?;
        let (rows, inter) = (i32_of(p.rows), i32_of(p.inter));
        let mut b = self.stream.launch_builder(&f);
        b.arg(&x.data).arg(&mut y.data).arg(&rows).arg(&inter);
        // SAFETY: arguments match `swiglu_impl`; x holds rows × 2I and y rows × I elements.
        unsafe { b.launch(cover(n, 256)) }.map(drop).map_err(launch_err(OP))
    }

    fn embedding(
        &self,
        p: &Validated<EmbeddingProblem>,
        table: &CudaBuffer,
        ids: &CudaBuffer,
        out: &mut CudaBuffer,
    ) -> Result<()> {
        const OP: &str = "embedding";
        if p.tokens == 0 {
            return Ok(());
        }
        let f = self.kernels.function(OP, &GLUE, &kernel_name(OP, p.dtype))?;
        let (t, v, h) = (i32_of(p.tokens), i32_of(p.vocab), i32_of(p.hidden));
        let flag = self.flag()?;
        let mut b = self.stream.launch_builder(&f);
        b.arg(&table.data).arg(&ids.data).arg(&mut out.data).arg(&t).arg(&v).arg(&h).arg(&flag.record);
        // SAFETY: arguments match `embedding_impl`; ids out of 0..V are recorded and read
        // nothing; out holds T × H elements.
        unsafe { b.launch(blocks(p.tokens, 128)) }.map(drop).map_err(launch_err(OP))
    }

    fn gemm(&self, p: &Validated<GemmProblem>, a: &CudaBuffer, b: &CudaBuffer, c: &mut CudaBuffer) -> Result<()> {
        super::gemm::gemm(self, p, a, b, c)
    }
}
