//! How a property compares outputs: integers exactly, floats through
//! [`moekit_ops::tolerance`], bf16 results also by cosine similarity.

use moekit_ops::tolerance::{compare, cosine_similarity, rms, Bad, Report, Tolerance};
use moekit_ops::{DType, HostTensor, TensorMeta};

/// The global similarity every bf16 output must reach.
pub const BF16_MIN_COSINE: f64 = 0.999;

/// Outcome of one property on one case: `Err` carries a readable mismatch report.
pub type Check = Result<(), String>;

/// Same shape, or an error naming `what`.
///
/// # Errors
/// A message with both shapes.
pub fn same_shape(what: &str, expected: &HostTensor, actual: &HostTensor) -> Check {
    if expected.shape() != actual.shape() {
        return Err(format!("{what}: shape {:?}, expected {:?}", actual.shape(), expected.shape()));
    }
    Ok(())
}

/// Integer (or bit-exact float) equality, reporting the first few mismatches.
///
/// # Errors
/// A message with the number of mismatches and the first five `[index] expected, got`.
pub fn exact(what: &str, expected: &HostTensor, actual: &HostTensor) -> Check {
    same_shape(what, expected, actual)?;
    if expected.dtype() != actual.dtype() {
        return Err(format!("{what}: dtype {}, expected {}", actual.dtype(), expected.dtype()));
    }
    exact_f64(what, &expected.to_f64_vec(), &actual.to_f64_vec())
}

/// Exact equality of two value lists (NaN equals NaN).
///
/// # Errors
/// A mismatch report.
pub fn exact_f64(what: &str, expected: &[f64], actual: &[f64]) -> Check {
    if expected.len() != actual.len() {
        return Err(format!("{what}: {} elements, expected {}", actual.len(), expected.len()));
    }
    let bad: Vec<usize> = (0..expected.len())
        .filter(|&i| !(expected[i] == actual[i] || expected[i].is_nan() && actual[i].is_nan()))
        .collect();
    if bad.is_empty() {
        return Ok(());
    }
    let mut msg = format!("{what}: {} of {} elements differ", bad.len(), expected.len());
    for &i in bad.iter().take(5) {
        msg.push_str(&format!("\n  [{i}] expected {}, got {}", expected[i], actual[i]));
    }
    Err(msg)
}

/// Float closeness through `tol`; for bf16 (`dtype`) also a cosine similarity above
/// [`BF16_MIN_COSINE`].
///
/// # Errors
/// The tolerance module's report.
pub fn close(what: &str, expected: &HostTensor, actual: &HostTensor, tol: Tolerance, dtype: DType) -> Check {
    same_shape(what, expected, actual)?;
    close_f64(what, &expected.to_f64_vec(), &actual.to_f64_vec(), tol, dtype)
}

/// [`close`] on value lists.
///
/// # Errors
/// The tolerance module's report.
pub fn close_f64(what: &str, expected: &[f64], actual: &[f64], tol: Tolerance, dtype: DType) -> Check {
    let report = compare(what, expected, actual, tol);
    if !report.ok() {
        return Err(report.to_string());
    }
    if dtype == DType::BF16 && !expected.is_empty() {
        let cos = cosine_similarity(expected, actual);
        if cos.is_nan() || cos <= BF16_MIN_COSINE {
            return Err(format!("{what}: cosine similarity {cos:.6} <= {BF16_MIN_COSINE}"));
        }
    }
    Ok(())
}

/// [`close`] with the tolerance floor raised to at least `min_floor`: for reductions whose
/// whole output can cancel (one token, one GEMM element, a log-sum-exp near 0) the RMS of the
/// expected tensor understates the magnitude of the summed terms, which is what the rounding
/// error scales with. `min_floor` is that magnitude (e.g. `rms(a)·rms(b)·sqrt(K)`).
///
/// # Errors
/// A report in the format of [`moekit_ops::tolerance::compare`].
pub fn close_floor(
    what: &str,
    expected: &HostTensor,
    actual: &HostTensor,
    tol: Tolerance,
    dtype: DType,
    min_floor: f64,
) -> Check {
    same_shape(what, expected, actual)?;
    let (e, a) = (expected.to_f64_vec(), actual.to_f64_vec());
    let floor = rms(&e).max(min_floor).max(f64::MIN_POSITIVE);
    let mut r = Report { what: what.to_string(), len: e.len(), failures: 0, first: Vec::new(), max_rel_err: 0.0, tol };
    for (index, (&x, &y)) in e.iter().zip(&a).enumerate() {
        let err = if x == y {
            0.0
        } else if !x.is_finite() || !y.is_finite() {
            f64::INFINITY
        } else {
            (y - x).abs() / (x.abs() + floor)
        };
        r.max_rel_err = r.max_rel_err.max(err);
        if err > tol.rel {
            r.failures += 1;
            if r.first.len() < 5 {
                r.first.push(Bad { index, expected: x, actual: y });
            }
        }
    }
    if !r.ok() {
        return Err(r.to_string());
    }
    close_f64(what, &e, &a, Tolerance { rel: f64::INFINITY }, dtype)
}

/// The typical magnitude of a dot product of `len` terms drawn like `a` and `b`:
/// `rms(a)·rms(b)·sqrt(len)`, the floor [`close_floor`] takes for GEMM-like outputs.
pub fn dot_scale(a: &HostTensor, b: &HostTensor, len: usize) -> f64 {
    rms(&a.to_f64_vec()) * rms(&b.to_f64_vec()) * (len as f64).sqrt()
}

/// `|a - b| <= rel * max(1, |a|, |b|)`: the near-equality used for selection scores.
pub fn near(a: f64, b: f64, rel: f64) -> bool {
    (a - b).abs() <= rel * 1f64.max(a.abs()).max(b.abs())
}

/// Relative slack for comparing f32-computed routing scores with f64 ones.
pub const SCORE_REL: f64 = 1e-5;

/// Turns any displayable error into the harness's message, with context.
pub fn ctx<E: std::fmt::Display>(what: &'static str) -> impl Fn(E) -> String {
    move |e| format!("{what}: {e}")
}
