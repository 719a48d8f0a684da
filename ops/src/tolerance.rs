//! The one place float results are compared: per-dtype tolerances scaled by the reduction
//! length, a mismatch report in the llm.c style, and a global similarity for low precision.

use crate::DType;
use std::fmt;

/// How far an actual value may be from the expected one.
///
/// An element passes when `|actual - expected| <= rel * (|expected| + floor)`, where `floor`
/// is the RMS of the whole expected tensor: so values near zero (cancellation in a long
/// reduction) are judged against the tensor's scale, not their own.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Tolerance {
    /// Relative bound.
    pub rel: f64,
}

impl Tolerance {
    /// For an output of `dtype` computed through a reduction of `len` terms with f32
    /// accumulation: two roundings of the output dtype plus the f32 accumulation error
    /// (`~sqrt(len)` ulps of f32), with a safety factor of 4.
    pub fn for_dtype(dtype: DType, len: usize) -> Self {
        let out = 2.0 * dtype.epsilon();
        let acc = (len.max(1) as f64).sqrt() * DType::F32.epsilon();
        Tolerance { rel: 4.0 * (out + acc) }
    }

    /// For results that passed through several rounded intermediates of `dtype` (a whole layer):
    /// `hops` chained ops, each allowed [`Tolerance::for_dtype`].
    pub fn chained(dtype: DType, len: usize, hops: usize) -> Self {
        let one = Self::for_dtype(dtype, len);
        Tolerance { rel: one.rel * hops.max(1) as f64 * 2.0 }
    }

    /// Loosen by a factor.
    pub fn times(self, f: f64) -> Self {
        Tolerance { rel: self.rel * f }
    }
}

/// One element that failed.
#[derive(Clone, Debug, PartialEq)]
pub struct Bad {
    /// Flat index.
    pub index: usize,
    /// Expected.
    pub expected: f64,
    /// Actual.
    pub actual: f64,
}

/// The outcome of a comparison.
#[derive(Clone, Debug, PartialEq)]
pub struct Report {
    /// What was compared.
    pub what: String,
    /// Elements compared.
    pub len: usize,
    /// Elements out of tolerance.
    pub failures: usize,
    /// The first few failures.
    pub first: Vec<Bad>,
    /// Largest `|a - e| / (|e| + floor)`.
    pub max_rel_err: f64,
    /// The bound used.
    pub tol: Tolerance,
}

impl Report {
    /// `true` when every element passed.
    pub fn ok(&self) -> bool {
        self.failures == 0
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: {} of {} elements out of tolerance (rel {:.3e}); max rel err {:.3e}",
            self.what, self.failures, self.len, self.tol.rel, self.max_rel_err
        )?;
        for b in &self.first {
            write!(f, "\n  [{}] expected {:.6e}, got {:.6e}", b.index, b.expected, b.actual)?;
        }
        Ok(())
    }
}

/// Compare two equally long float slices (a length mismatch counts every element as failed).
pub fn compare(what: &str, expected: &[f64], actual: &[f64], tol: Tolerance) -> Report {
    let mut r =
        Report { what: what.to_string(), len: expected.len(), failures: 0, first: Vec::new(), max_rel_err: 0.0, tol };
    if expected.len() != actual.len() {
        r.failures = expected.len().max(actual.len()).max(1);
        r.max_rel_err = f64::INFINITY;
        return r;
    }
    let floor = rms(expected).max(f64::MIN_POSITIVE);
    for (index, (&e, &a)) in expected.iter().zip(actual).enumerate() {
        let err = if e.is_nan() && a.is_nan() || e == a {
            0.0
        } else if !a.is_finite() || !e.is_finite() {
            f64::INFINITY
        } else {
            (a - e).abs() / (e.abs() + floor)
        };
        r.max_rel_err = r.max_rel_err.max(err);
        if err > tol.rel {
            r.failures += 1;
            if r.first.len() < 5 {
                r.first.push(Bad { index, expected: e, actual: a });
            }
        }
    }
    r
}

/// Root mean square (0 for an empty slice).
pub fn rms(v: &[f64]) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    (v.iter().map(|x| x * x).sum::<f64>() / v.len() as f64).sqrt()
}

/// Cosine similarity of two tensors (1 for two empty or two all-zero tensors), the global
/// check DeepGEMM applies to low-precision outputs.
pub fn cosine_similarity(a: &[f64], b: &[f64]) -> f64 {
    let dot: f64 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let na: f64 = a.iter().map(|x| x * x).sum::<f64>().sqrt();
    let nb: f64 = b.iter().map(|x| x * x).sum::<f64>().sqrt();
    if na == 0.0 && nb == 0.0 {
        1.0
    } else if na == 0.0 || nb == 0.0 {
        0.0
    } else {
        dot / (na * nb)
    }
}
