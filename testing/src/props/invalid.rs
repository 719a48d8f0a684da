//! Invalid problems at every op: for a random op, a small valid call must succeed, and the
//! same call with one corruption (a bad problem field, a mis-shaped or mis-typed buffer, or bad
//! index data) must return `Err` — never panic, never succeed.

use super::{invalid_glue, invalid_ops};
use crate::compare::Check;
use crate::strategies::seed;
use moekit_ops::{Backend, DType, HostTensor};
use proptest::prelude::*;
use std::panic::{catch_unwind, AssertUnwindSafe};

/// The ops the invalid-input property covers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    /// `route`.
    Route,
    /// `update_bias`.
    UpdateBias,
    /// `permute`.
    Permute,
    /// `unpermute_combine`.
    Combine,
    /// `grouped_gemm`, contiguous layout.
    GroupedGemm,
    /// `grouped_gemm`, masked layout.
    GroupedGemmMasked,
    /// `attention`.
    Attention,
    /// `rms_norm`.
    RmsNorm,
    /// `rotary`.
    Rotary,
    /// `swiglu`.
    Swiglu,
    /// `embedding`.
    Embedding,
    /// `gemm`.
    Gemm,
    /// `moe_layer`.
    MoeLayer,
}

impl Op {
    /// Every op.
    pub const ALL: [Op; 13] = [
        Op::Route,
        Op::UpdateBias,
        Op::Permute,
        Op::Combine,
        Op::GroupedGemm,
        Op::GroupedGemmMasked,
        Op::Attention,
        Op::RmsNorm,
        Op::Rotary,
        Op::Swiglu,
        Op::Embedding,
        Op::Gemm,
        Op::MoeLayer,
    ];
}

/// One invalid case: which op, and the seed of its valid base call (every corruption of the
/// op is then tried on that base).
#[derive(Clone, Debug)]
pub struct InvalidCase {
    /// The op.
    pub op: Op,
    /// Seed of the valid base call.
    pub seed: u64,
}

/// Invalid cases over every op.
pub fn invalid_cases() -> impl Strategy<Value = InvalidCase> {
    (proptest::sample::select(Op::ALL.to_vec()), seed()).prop_map(|(op, seed)| InvalidCase { op, seed })
}

/// A named corruption of a problem `P` and its buffers `X`.
pub type Corruption<P, X> = (&'static str, fn(&mut P, &mut X));

/// The valid base call succeeds, each corrupted one (from a fresh copy of the base) returns
/// `Err`, none panics.
///
/// # Errors
/// Which op and corruption misbehaved, and how.
pub fn expect_rejected<P: Clone, X: Clone, T>(
    op: &str,
    base: (P, X),
    run: impl Fn(&P, &X) -> moekit_ops::Result<T>,
    corruptions: &[Corruption<P, X>],
) -> Check {
    let (p, x) = base;
    match guarded(|| run(&p, &x)) {
        Ok(Ok(_)) => {}
        Ok(Err(e)) => return Err(format!("{op}: the valid base call was rejected: {e}")),
        Err(panic) => return Err(format!("{op}: the valid base call panicked: {panic}")),
    }
    for (what, corrupt) in corruptions {
        let (mut p, mut x) = (p.clone(), x.clone());
        corrupt(&mut p, &mut x);
        match guarded(|| run(&p, &x)) {
            Ok(Err(_)) => {}
            Ok(Ok(_)) => return Err(format!("{op}: {what}: accepted, expected an error")),
            Err(panic) => return Err(format!("{op}: {what}: panicked: {panic}")),
        }
    }
    Ok(())
}

/// Runs `f`, turning a panic into its message.
///
/// # Errors
/// The panic message.
pub fn guarded<T>(f: impl FnOnce() -> T) -> Result<T, String> {
    catch_unwind(AssertUnwindSafe(f)).map_err(|e| {
        e.downcast_ref::<String>()
            .cloned()
            .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_else(|| "non-string panic".into())
    })
}

/// Every op rejects invalid problems, buffers and index data with an `Err`, without panicking.
///
/// # Errors
/// The op and corruption that was accepted or panicked.
pub fn invalid_inputs_rejected<B: Backend>(b: &B, dtype: DType, c: &InvalidCase) -> Check {
    let s = c.seed;
    match c.op {
        Op::Route => invalid_ops::route(b, dtype, s),
        Op::UpdateBias => invalid_ops::update_bias(b, s),
        Op::Permute => invalid_ops::permute(b, dtype, s),
        Op::Combine => invalid_ops::combine(b, dtype, s),
        Op::GroupedGemm => invalid_ops::grouped_gemm(b, dtype, s, false),
        Op::GroupedGemmMasked => invalid_ops::grouped_gemm(b, dtype, s, true),
        Op::Attention => invalid_glue::attention(b, dtype, s),
        Op::RmsNorm => invalid_glue::rms_norm(b, dtype, s),
        Op::Rotary => invalid_glue::rotary(b, dtype, s),
        Op::Swiglu => invalid_glue::swiglu(b, dtype, s),
        Op::Embedding => invalid_glue::embedding(b, dtype, s),
        Op::Gemm => invalid_glue::gemm(b, dtype, s),
        Op::MoeLayer => invalid_glue::moe_layer(b, dtype, s),
    }
}

/// A float dtype other than `dtype`.
pub fn other_float(dtype: DType) -> DType {
    if dtype == DType::F32 {
        DType::BF16
    } else {
        DType::F32
    }
}

/// A tensor of `dtype` and `shape` filled with a harmless value (1 for floats, 0 for ints).
pub fn filled(dtype: DType, shape: &[usize]) -> HostTensor {
    HostTensor::full(dtype, shape, if dtype == DType::I32 { 0.0 } else { 1.0 })
}

/// The same tensor with element `i` set to `v` (rounded to its dtype).
pub fn with_value(t: &HostTensor, i: usize, v: f64) -> HostTensor {
    let mut vals = t.to_f64_vec();
    vals[i] = v;
    use moekit_ops::TensorMeta;
    match t.dtype() {
        DType::I32 => HostTensor::from_i32(t.shape(), &vals.iter().map(|&x| x as i32).collect::<Vec<_>>()),
        d => HostTensor::from_f64(d, t.shape(), &vals),
    }
}
