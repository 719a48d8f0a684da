//! One [`Workload`] per benchmarked op, and [`AnyWorkload`] to pick one at run time.

mod attention;
mod chunked;
mod combine;
mod gemm;
mod grouped;
mod moe;
mod permute;
mod rms_norm;
mod route;

pub use attention::AttentionCase;
pub use combine::CombineCase;
pub use gemm::GemmCase;
pub use grouped::GroupedCase;
pub use moe::{MoeCase, WeightStash};
pub use permute::PermuteCase;
pub use rms_norm::RmsNormCase;
pub use route::RouteCase;

use crate::data::{rng, uniform_values, zipf_log_popularity};
use crate::shapes::MoeShape;
use crate::workload::{Op, Workload};
use moekit_ops::{DType, HostTensor, Result};
use rand::Rng;

/// Code run on a workload of whatever concrete type the op has.
pub trait Visit {
    /// What the visit returns.
    type Out;
    /// Run on `w`.
    fn visit<W: Workload>(self, w: &W) -> Self::Out;
}

/// The workload of any op.
#[derive(Debug)]
pub enum AnyWorkload {
    /// [`Op::Route`].
    Route(RouteCase),
    /// [`Op::Permute`].
    Permute(PermuteCase),
    /// [`Op::UnpermuteCombine`].
    Combine(CombineCase),
    /// [`Op::GroupedGemmUp`] and [`Op::GroupedGemmDown`].
    Grouped(GroupedCase),
    /// [`Op::Gemm`].
    Gemm(GemmCase),
    /// [`Op::Attention`].
    Attention(AttentionCase),
    /// [`Op::RmsNorm`].
    RmsNorm(RmsNormCase),
    /// [`Op::MoeLayer`].
    Moe(MoeCase),
}

impl AnyWorkload {
    /// Build the inputs of `op` on `shape` (seeded, never zeros).
    ///
    /// # Errors
    /// Validation errors of the resulting problem.
    pub fn build(op: Op, shape: &MoeShape, dtype: DType, seed: u64) -> Result<Self> {
        Self::build_reusing(op, shape, dtype, seed, &mut WeightStash::default())
    }

    /// As [`AnyWorkload::build`], the layer taking its expert weights from `stash` where they
    /// match ([`MoeCase::with_stash`]).
    ///
    /// # Errors
    /// Validation errors of the resulting problem.
    pub fn build_reusing(op: Op, shape: &MoeShape, dtype: DType, seed: u64, stash: &mut WeightStash) -> Result<Self> {
        Ok(match op {
            Op::Route => AnyWorkload::Route(RouteCase::new(shape, dtype, seed)?),
            Op::Permute => AnyWorkload::Permute(PermuteCase::new(shape, dtype, seed)?),
            Op::UnpermuteCombine => AnyWorkload::Combine(CombineCase::new(shape, dtype, seed)?),
            Op::GroupedGemmUp => AnyWorkload::Grouped(GroupedCase::new(shape, dtype, true, seed)?),
            Op::GroupedGemmDown => AnyWorkload::Grouped(GroupedCase::new(shape, dtype, false, seed)?),
            Op::Gemm => {
                AnyWorkload::Gemm(GemmCase::new(shape.tokens * shape.k, shape.hidden, 2 * shape.inter, dtype, seed)?)
            }
            Op::Attention => AnyWorkload::Attention(AttentionCase::new(&shape.attn, dtype, seed)?),
            Op::RmsNorm => AnyWorkload::RmsNorm(RmsNormCase::new(shape.tokens, shape.hidden, dtype, seed)?),
            Op::MoeLayer => AnyWorkload::Moe(MoeCase::with_stash(shape, dtype, seed, stash)?),
        })
    }

    /// Frees the workload, handing the layer's expert weights to `stash` for the next case.
    pub fn into_stash(self, stash: &mut WeightStash) {
        if let AnyWorkload::Moe(w) = self {
            w.into_stash(stash);
        }
    }

    /// Run `v` on the concrete workload.
    pub fn visit<V: Visit>(&self, v: V) -> V::Out {
        match self {
            AnyWorkload::Route(w) => v.visit(w),
            AnyWorkload::Permute(w) => v.visit(w),
            AnyWorkload::Combine(w) => v.visit(w),
            AnyWorkload::Grouped(w) => v.visit(w),
            AnyWorkload::Gemm(w) => v.visit(w),
            AnyWorkload::Attention(w) => v.visit(w),
            AnyWorkload::RmsNorm(w) => v.visit(w),
            AnyWorkload::Moe(w) => v.visit(w),
        }
    }
}

/// The problem dims of `op` on `shape` in the peer lines' spelling, without building any
/// input (the same as the built workload's [`Workload::dims`]): `[T, H, E, k]` for route,
/// permute and unpermute-combine, `[T·k, K, N, E]` for the grouped GEMMs (`K = H, N = 2I`
/// up, `K = I, N = H` down), `[T·k, H, 2I]` for gemm, `[B, Hq, Hkv, S, D, causal]` for
/// attention, `[T, H]` for RMSNorm, `[T, H, E, k, I]` for the layer.
pub fn peer_dims(op: Op, shape: &MoeShape) -> Vec<usize> {
    let (t, h, e, k, i) = (shape.tokens, shape.hidden, shape.experts, shape.k, shape.inter);
    match op {
        Op::Route | Op::Permute | Op::UnpermuteCombine => vec![t, h, e, k],
        Op::GroupedGemmUp => vec![t * k, h, 2 * i, e],
        Op::GroupedGemmDown => vec![t * k, i, h, e],
        Op::Gemm => vec![t * k, h, 2 * i],
        Op::Attention => shape.attn.dims(),
        Op::RmsNorm => vec![t, h],
        Op::MoeLayer => vec![t, h, e, k, i],
    }
}

/// Router inputs `hidden [T, H]` and `gate [H, E]` whose logits have unit spread and whose
/// expert popularity follows a Zipf law with exponent `skew`.
///
/// NOTE: the gate is fused into routing, so the skew has to live in the data: feature 0 of
/// every token is 1 and gate row 0 holds each expert's log-popularity, which adds
/// `-skew · ln(rank + 1)` to its logit. Under softmax that scales the expert's probability by
/// `(rank + 1)^-skew`, a Zipf law; skew 0 leaves the routing uniform.
pub(crate) fn router_inputs(shape: &MoeShape, dtype: DType, seed: u64) -> (HostTensor, HostTensor) {
    let (t, h, e) = (shape.tokens, shape.hidden, shape.experts);
    let mut x = uniform_values(t * h, 1.0, seed ^ 0x41);
    for row in x.chunks_mut(h) {
        row[0] = 1.0;
    }
    // Uniform(±[0.01, 1]) has variance ~1/3, so a gate of scale 3/sqrt(H) gives logits of
    // standard deviation ~1.
    let mut g = uniform_values(h * e, 3.0 / (h as f32).sqrt(), seed ^ 0x42);
    if shape.skew > 0.0 {
        let mut r = rng(seed, 0x43);
        for (ge, lp) in g[..e].iter_mut().zip(zipf_log_popularity(e, shape.skew, seed)) {
            *ge = lp as f32 + r.gen_range(-0.05f32..0.05);
        }
    }
    (HostTensor::from_f32(dtype, &[t, h], &x), HostTensor::from_f32(dtype, &[h, e], &g))
}

/// A sample of at most `samples` items of `0..n`: everything when it fits.
pub(crate) fn scope(n: usize, picked: usize, what: &str) -> String {
    if picked >= n {
        "full".to_string()
    } else {
        format!("sample {picked}/{n} {what}")
    }
}
