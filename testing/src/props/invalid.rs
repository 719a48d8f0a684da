//! Invalid problems at every op: for a random op, a small valid call must succeed, and the
//! same call with one corruption (a bad problem field, a mis-shaped or mis-typed buffer, or bad
//! index data) must return the same error as the reference backend gives for it (same variant,
//! op and fields; see [`expect_rejected`]) — never panic, never succeed.

use super::{invalid_glue, invalid_ops};
use crate::compare::Check;
use crate::strategies::seed;
use moekit_ops::{Backend, DType, Device, Error, HostTensor};
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
    /// [`moekit_ops::Device::copy_rows`].
    CopyRows,
    /// [`moekit_ops::Device::reshape`].
    Reshape,
}

impl Op {
    /// Every op.
    pub const ALL: [Op; 15] = [
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
        Op::CopyRows,
        Op::Reshape,
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

/// Invalid cases of one op (every corruption of `op` on random valid bases): for a check
/// that must reach a given op on every case, where [`invalid_cases`] reaches each op with
/// probability 1/15 a case.
pub fn invalid_cases_of(op: Op) -> impl Strategy<Value = InvalidCase> {
    seed().prop_map(move |seed| InvalidCase { op, seed })
}

/// A named corruption of a problem `P` and its buffers `X`.
pub type Corruption<P, X> = (&'static str, fn(&mut P, &mut X));

/// The corruptions of one op's valid base call.
#[derive(Debug)]
pub struct Corruptions<'a, P, X> {
    /// Corruptions of a problem field or a buffer's shape or dtype, and index data with
    /// exactly one bad element: the error is compared field by field, the index included.
    pub one: &'a [Corruption<P, X>],
    /// Index data with several bad elements (all of one value): the index is not compared,
    /// because on a device backend it is whichever bad element a thread reported first.
    pub many: &'a [Corruption<P, X>],
}

/// Whether `got` (from the backend under test) is the error `want` (from the reference for
/// the same corrupted call): same variant, op and fields, except
/// - the `index` of [`Error::IndexOutOfRange`] and [`Error::NonFinite`] when
///   `index_known` is false (several bad elements were planted);
/// - the message of [`Error::BadOffsets`], which is free text (device backends word what
///   their kernel recorded differently).
///
/// [`Error::Invalid`] and [`Error::Unsupported`] messages are compared: validation is the
/// same code on every backend.
///
/// # Errors
/// Both errors, when they differ.
pub fn same_error(want: &Error, got: &Error, index_known: bool) -> Check {
    let mut normal = got.clone();
    match (&mut normal, want) {
        (Error::IndexOutOfRange { index, .. }, Error::IndexOutOfRange { index: w, .. })
        | (Error::NonFinite { index, .. }, Error::NonFinite { index: w, .. })
            if !index_known =>
        {
            *index = *w
        }
        (Error::BadOffsets { msg, .. }, Error::BadOffsets { msg: w, .. }) => msg.clone_from(w),
        _ => {}
    }
    if normal == *want {
        Ok(())
    } else {
        Err(format!("{got:?}, but the reference gives {want:?}"))
    }
}

/// The valid base call succeeds on `b`; each corrupted call (from a fresh copy of the base)
/// fails on `b` with the error the reference (`oracle`) gives for it (see [`same_error`]),
/// and leaves no error pending (`sync` after it is `Ok`: a validation error launched
/// nothing, and a content error that a device backend deferred was reported once, by the
/// download in `run` that surfaced it, and cleared). None panics.
///
/// `run` and `oracle` are the same call on `b` and on the reference; both download their
/// outputs, so a content error a device backend defers to the next download surfaces in
/// `run`.
///
/// # Errors
/// Which op and corruption misbehaved, and how.
pub fn expect_rejected<B: Device, P: Clone, X: Clone, T, U>(
    op: &str,
    b: &B,
    base: (P, X),
    run: impl Fn(&P, &X) -> moekit_ops::Result<T>,
    oracle: impl Fn(&P, &X) -> moekit_ops::Result<U>,
    corruptions: Corruptions<'_, P, X>,
) -> Check {
    let (p, x) = base;
    match guarded(|| run(&p, &x)) {
        Ok(Ok(_)) => {}
        Ok(Err(e)) => return Err(format!("{op}: the valid base call was rejected: {e}")),
        Err(panic) => return Err(format!("{op}: the valid base call panicked: {panic}")),
    }
    let all = corruptions.one.iter().map(|c| (c, true)).chain(corruptions.many.iter().map(|c| (c, false)));
    for ((what, corrupt), index_known) in all {
        let (mut p, mut x) = (p.clone(), x.clone());
        corrupt(&mut p, &mut x);
        let want = match guarded(|| oracle(&p, &x)) {
            Ok(Err(e)) if e.is_validation() => e,
            Ok(Err(e)) => return Err(format!("{op}: {what}: the reference gives a non-validation error: {e:?}")),
            Ok(Ok(_)) => return Err(format!("{op}: {what}: the reference accepts it (a corruption that is valid)")),
            Err(panic) => return Err(format!("{op}: {what}: the reference panicked: {panic}")),
        };
        match guarded(|| run(&p, &x)) {
            Ok(Err(got)) => same_error(&want, &got, index_known).map_err(|e| format!("{op}: {what}: {e}"))?,
            Ok(Ok(_)) => return Err(format!("{op}: {what}: accepted, expected {want:?}")),
            Err(panic) => return Err(format!("{op}: {what}: panicked: {panic}")),
        }
        match guarded(|| b.sync()) {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(format!("{op}: {what}: an error was still pending after the rejection: {e:?}")),
            Err(panic) => return Err(format!("{op}: {what}: sync after the rejection panicked: {panic}")),
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

/// Every op rejects invalid problems, buffers and index data with the reference's error (see
/// [`expect_rejected`]), without panicking.
///
/// # Errors
/// The op and corruption that was accepted, got another error, or panicked.
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
        Op::CopyRows => invalid_glue::copy_rows(b, dtype, s),
        Op::Reshape => invalid_glue::reshape(b, dtype, s),
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

/// The same tensor with every element set to `v` (rounded to its dtype).
pub fn all_set(t: &HostTensor, v: f64) -> HostTensor {
    use moekit_ops::TensorMeta;
    HostTensor::full(t.dtype(), t.shape(), v)
}

#[cfg(test)]
mod tests {
    use super::same_error;
    use moekit_ops::Error;

    fn ids(index: usize, value: i64) -> Error {
        Error::IndexOutOfRange { op: "permute", what: "ids", index, value, lo: 0, hi: 4 }
    }

    #[test]
    fn errors_compare_field_by_field() {
        assert!(same_error(&ids(2, 4), &ids(2, 4), true).is_ok());
        assert!(same_error(&ids(2, 4), &ids(3, 4), true).is_err(), "another index, one bad element planted");
        assert!(same_error(&ids(2, 4), &ids(3, 4), false).is_ok(), "another index, several planted");
        assert!(same_error(&ids(2, 4), &ids(2, 5), false).is_err(), "another value");
        let other_what = Error::IndexOutOfRange { op: "permute", what: "offsets", index: 2, value: 4, lo: 0, hi: 4 };
        assert!(same_error(&ids(2, 4), &other_what, false).is_err());
        let other_op = Error::IndexOutOfRange { op: "embedding", what: "ids", index: 2, value: 4, lo: 0, hi: 4 };
        assert!(same_error(&ids(2, 4), &other_op, false).is_err());
        assert!(same_error(&ids(2, 4), &Error::invalid("permute", "x"), false).is_err(), "another variant");
        let off = |msg: &str| Error::BadOffsets { op: "grouped_gemm", what: "offsets", msg: msg.into() };
        assert!(same_error(&off("host words"), &off("device words"), true).is_ok(), "free-text message");
        let inv = |msg: &str| Error::invalid("route", msg);
        assert!(same_error(&inv("k = 0"), &inv("k = 1"), true).is_err(), "validation messages are compared");
        let nf = |index| Error::NonFinite { op: "route", what: "logits", index };
        assert!(same_error(&nf(1), &nf(5), true).is_err());
        assert!(same_error(&nf(1), &nf(5), false).is_ok());
    }
}
