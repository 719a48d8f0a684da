//! The checked entry points: each validates the problem, checks every buffer against it and
//! that the backend takes the dtype, then calls the backend. This is the API to call.

use crate::attention::{AttentionIo, AttentionProblem};
use crate::glue::{EmbeddingProblem, GemmProblem, RmsNormIo, RmsNormProblem, RotaryIo, RotaryProblem, SwigluProblem};
use crate::grouped_gemm::{GroupedGemmIo, GroupedGemmProblem};
use crate::moe::{MoeLayerIo, MoeLayerProblem, MoeOps};
use crate::permute::{CombineIo, CombineProblem, PermuteIo, PermuteProblem};
use crate::route::{BiasUpdateProblem, RouteIo, RouteProblem};
use crate::{AttentionOps, DType, Device, Error, GlueOps, GroupedGemmOps, PermuteOps, Result, RouteOps};

fn supports<D: Device + ?Sized>(d: &D, op: &'static str, dtype: DType) -> Result<()> {
    if d.float_dtypes().contains(&dtype) {
        Ok(())
    } else {
        Err(Error::unsupported(
            op,
            format!("dtype {dtype} on backend `{}` (it takes {:?})", d.name(), d.float_dtypes()),
        ))
    }
}

/// Top-k routing. See [`RouteProblem`] for shapes.
///
/// # Errors
/// Validation errors of the problem and buffers, then the backend's.
pub fn route<B: RouteOps + ?Sized>(b: &B, p: &RouteProblem, io: RouteIo<'_, B::Buffer>) -> Result<()> {
    let v = p.validate()?;
    v.check_io(&io)?;
    supports(b, "route", p.dtype)?;
    b.route(&v, io)
}

/// Aux-loss-free bias update, in place. See [`BiasUpdateProblem`].
///
/// # Errors
/// Validation errors, then the backend's.
pub fn update_bias<B: RouteOps + ?Sized>(
    b: &B,
    p: &BiasUpdateProblem,
    bias: &mut B::Buffer,
    counts: &B::Buffer,
) -> Result<()> {
    let v = p.validate()?;
    v.check_io(bias, counts)?;
    b.update_bias(&v, bias, counts)
}

/// Dispatch. See [`PermuteProblem`].
///
/// # Errors
/// Validation errors, then the backend's.
pub fn permute<B: PermuteOps + ?Sized>(b: &B, p: &PermuteProblem, io: PermuteIo<'_, B::Buffer>) -> Result<()> {
    let v = p.validate()?;
    v.check_io(&io)?;
    supports(b, "permute", p.dtype)?;
    b.permute(&v, io)
}

/// Weighted combine. See [`CombineProblem`].
///
/// # Errors
/// Validation errors, then the backend's.
pub fn unpermute_combine<B: PermuteOps + ?Sized>(
    b: &B,
    p: &CombineProblem,
    io: CombineIo<'_, B::Buffer>,
) -> Result<()> {
    let v = p.validate()?;
    v.check_io(&io)?;
    supports(b, "unpermute_combine", p.dtype)?;
    b.unpermute_combine(&v, io)
}

/// Grouped GEMM. See [`GroupedGemmProblem`].
///
/// # Errors
/// Validation errors, then the backend's.
pub fn grouped_gemm<B: GroupedGemmOps + ?Sized>(
    b: &B,
    p: &GroupedGemmProblem,
    io: GroupedGemmIo<'_, B::Buffer>,
) -> Result<()> {
    let v = p.validate()?;
    v.check_io(&io)?;
    supports(b, "grouped_gemm", p.dtype)?;
    b.grouped_gemm(&v, io)
}

/// Attention. See [`AttentionProblem`].
///
/// # Errors
/// Validation errors, then the backend's.
pub fn attention<B: AttentionOps + ?Sized>(b: &B, p: &AttentionProblem, io: AttentionIo<'_, B::Buffer>) -> Result<()> {
    let v = p.validate()?;
    v.check_io(&io)?;
    supports(b, "attention", p.dtype)?;
    b.attention(&v, io)
}

/// RMSNorm. See [`RmsNormProblem`].
///
/// # Errors
/// Validation errors, then the backend's.
pub fn rms_norm<B: GlueOps + ?Sized>(b: &B, p: &RmsNormProblem, io: RmsNormIo<'_, B::Buffer>) -> Result<()> {
    let v = p.validate()?;
    v.check_io(&io)?;
    supports(b, "rms_norm", p.dtype)?;
    b.rms_norm(&v, io)
}

/// Rotary embedding. See [`RotaryProblem`].
///
/// # Errors
/// Validation errors, then the backend's.
pub fn rotary<B: GlueOps + ?Sized>(b: &B, p: &RotaryProblem, io: RotaryIo<'_, B::Buffer>) -> Result<()> {
    let v = p.validate()?;
    v.check_io(&io)?;
    supports(b, "rotary", p.dtype)?;
    b.rotary(&v, io)
}

/// SwiGLU. See [`SwigluProblem`].
///
/// # Errors
/// Validation errors, then the backend's.
pub fn swiglu<B: GlueOps + ?Sized>(b: &B, p: &SwigluProblem, x: &B::Buffer, y: &mut B::Buffer) -> Result<()> {
    let v = p.validate()?;
    v.check_io(x, y)?;
    supports(b, "swiglu", p.dtype)?;
    b.swiglu(&v, x, y)
}

/// Embedding gather. See [`EmbeddingProblem`].
///
/// # Errors
/// Validation errors, then the backend's.
pub fn embedding<B: GlueOps + ?Sized>(
    b: &B,
    p: &EmbeddingProblem,
    table: &B::Buffer,
    ids: &B::Buffer,
    out: &mut B::Buffer,
) -> Result<()> {
    let v = p.validate()?;
    v.check_io(table, ids, out)?;
    supports(b, "embedding", p.dtype)?;
    b.embedding(&v, table, ids, out)
}

/// Dense GEMM. See [`GemmProblem`].
///
/// # Errors
/// Validation errors, then the backend's.
pub fn gemm<B: GlueOps + ?Sized>(
    b: &B,
    p: &GemmProblem,
    a: &B::Buffer,
    bm: &B::Buffer,
    c: &mut B::Buffer,
) -> Result<()> {
    let v = p.validate()?;
    v.check_io(a, bm, c)?;
    supports(b, "gemm", p.dtype)?;
    b.gemm(&v, a, bm, c)
}

/// MoE layer forward. See [`MoeLayerProblem`].
///
/// # Errors
/// Validation errors, then the backend's.
pub fn moe_layer<B: MoeOps + ?Sized>(b: &B, p: &MoeLayerProblem, io: MoeLayerIo<'_, B::Buffer>) -> Result<()> {
    let v = p.validate()?;
    v.check_io(&io)?;
    supports(b, "moe_layer", p.route.dtype)?;
    b.moe_layer(&v, io)
}
