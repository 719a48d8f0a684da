//! # moekit-reference: the oracle
//!
//! Every op of the seam, forward, with every option, written as plain loops that read top to
//! bottom, one function per op (in the manner of llm.c's `train_gpt2.c`). Every other backend
//! is checked against these functions.
//!
//! How each op computes:
//!
//! - inputs are widened to f64 ([`HostTensor::to_f64_vec`]);
//! - every sum, product, exponential and square root is taken in f64;
//! - each output is rounded **once**, to its output dtype, when it is written
//!   ([`HostTensor::from_f64`]). The only intermediate rounding is the one the op's contract
//!   names (RMSNorm rounds `x + residual` to the dtype before normalising it).
//!
//! Index data (expert ids, offsets, counts, gather rows, embedding ids) and routing logits are
//! checked with [`moekit_ops::check`] before any arithmetic, so bad content is a typed
//! [`moekit_ops::Error`], never a panic or a wrong answer. Input shapes and dtypes are checked too, so the
//! free functions are safe to call directly, not only through [`ReferenceBackend`].
//!
//! The free functions ([`route()`], [`permute()`], [`grouped_gemm()`], [`attention()`], ...)
//! return freshly allocated outputs; [`ReferenceBackend`] wraps them behind the op-family
//! traits so the reference can run wherever a backend is expected.
//!
//! ```
//! use moekit_ops::{DType, HostTensor, RouteProblem};
//! let p = RouteProblem::new(1, 3, 1, DType::F32).validate().unwrap();
//! let logits = HostTensor::from_f32(DType::F32, &[1, 3], &[0.0, 2.0, 1.0]);
//! let out = moekit_reference::route(&p, &logits, None, None).unwrap();
//! assert_eq!(out.ids.as_i32().unwrap(), &[1]);
//! ```

mod attention;
mod glue;
mod grouped_gemm;
mod permute;
mod route;

pub use attention::attention;
pub use glue::{embedding, gemm, rms_norm, rotary, swiglu, RmsNormOut};
pub use grouped_gemm::grouped_gemm;
pub use permute::{permute, unpermute_combine, PermuteOut};
pub use route::{route, update_bias, RouteOut};

use moekit_ops::{
    AttentionIo, AttentionOps, AttentionProblem, BiasUpdateProblem, CombineIo, CombineProblem, DType, EmbeddingProblem,
    GemmProblem, GlueOps, GroupedGemmIo, GroupedGemmOps, GroupedGemmProblem, HostTensor, MoeOps, PermuteIo, PermuteOps,
    PermuteProblem, Result, RmsNormIo, RmsNormProblem, RotaryIo, RotaryProblem, RouteIo, RouteOps, RouteProblem,
    SwigluProblem, Validated,
};

/// Checks that an input has the dtype and shape the problem implies.
///
/// # Errors
/// [`moekit_ops::Error::DType`] or [`moekit_ops::Error::Shape`].
pub(crate) fn expect(
    op: &'static str,
    what: &'static str,
    t: &HostTensor,
    dtype: DType,
    shape: &[usize],
) -> Result<()> {
    moekit_ops::check::meta(op, what, t, dtype, shape)
}

/// The reference backend: host memory, buffers are [`HostTensor`]s, every op is the f64 oracle
/// of this crate. Slow by design; use it to check other backends.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReferenceBackend;

moekit_ops::host_device!(ReferenceBackend, "reference");

impl RouteOps for ReferenceBackend {
    fn route(&self, p: &Validated<RouteProblem>, io: RouteIo<'_, HostTensor>) -> Result<()> {
        let out = route(p, io.logits, io.gate, io.bias)?;
        *io.ids = out.ids;
        *io.weights = out.weights;
        *io.counts = out.counts;
        *io.load = out.load;
        Ok(())
    }

    fn update_bias(&self, p: &Validated<BiasUpdateProblem>, bias: &mut HostTensor, counts: &HostTensor) -> Result<()> {
        *bias = update_bias(p, bias, counts)?;
        Ok(())
    }
}

impl PermuteOps for ReferenceBackend {
    fn permute(&self, p: &Validated<PermuteProblem>, io: PermuteIo<'_, HostTensor>) -> Result<()> {
        let out = permute(p, io.hidden, io.ids)?;
        *io.permuted = out.permuted;
        *io.offsets = out.offsets;
        *io.row_to_token = out.row_to_token;
        *io.token_slot_to_row = out.token_slot_to_row;
        Ok(())
    }

    fn unpermute_combine(&self, p: &Validated<CombineProblem>, io: CombineIo<'_, HostTensor>) -> Result<()> {
        *io.out = unpermute_combine(p, io.y, io.weights, io.token_slot_to_row, io.add)?;
        Ok(())
    }
}

impl GroupedGemmOps for ReferenceBackend {
    fn grouped_gemm(&self, p: &Validated<GroupedGemmProblem>, io: GroupedGemmIo<'_, HostTensor>) -> Result<()> {
        *io.y = grouped_gemm(p, io.x, io.w, io.group, io.row_to_token, io.row_scale)?;
        Ok(())
    }
}

impl AttentionOps for ReferenceBackend {
    fn attention(&self, p: &Validated<AttentionProblem>, io: AttentionIo<'_, HostTensor>) -> Result<()> {
        let (o, lse) = attention(p, io.q, io.k, io.v)?;
        *io.o = o;
        *io.lse = lse;
        Ok(())
    }
}

impl GlueOps for ReferenceBackend {
    fn rms_norm(&self, p: &Validated<RmsNormProblem>, io: RmsNormIo<'_, HostTensor>) -> Result<()> {
        let out = rms_norm(p, io.x, io.weight, io.residual)?;
        *io.y = out.y;
        if let (Some(dst), Some(src)) = (io.residual_out, out.residual_out) {
            *dst = src;
        }
        Ok(())
    }

    fn rotary(&self, p: &Validated<RotaryProblem>, io: RotaryIo<'_, HostTensor>) -> Result<()> {
        *io.out = rotary(p, io.x, io.positions)?;
        Ok(())
    }

    fn swiglu(&self, p: &Validated<SwigluProblem>, x: &HostTensor, y: &mut HostTensor) -> Result<()> {
        *y = swiglu(p, x)?;
        Ok(())
    }

    fn embedding(
        &self,
        p: &Validated<EmbeddingProblem>,
        table: &HostTensor,
        ids: &HostTensor,
        out: &mut HostTensor,
    ) -> Result<()> {
        *out = embedding(p, table, ids)?;
        Ok(())
    }

    fn gemm(&self, p: &Validated<GemmProblem>, a: &HostTensor, b: &HostTensor, c: &mut HostTensor) -> Result<()> {
        *c = gemm(p, a, b)?;
        Ok(())
    }
}

/// The MoE layer is the default composition of route, permute, grouped GEMM and combine.
impl MoeOps for ReferenceBackend {}
