//! The verdict of one checked run against the reference: integers exactly, floats through
//! [`moekit_ops::tolerance`].

use moekit_ops::tolerance::{compare, Tolerance};
use moekit_ops::{DType, HostTensor, Result, TensorMeta};

/// How one output is compared.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum OutCheck {
    /// Integer output: every element equal.
    Exact,
    /// Float output through the tolerance (`rel = 0` asks for equal values, e.g. a copy).
    Float(Tolerance),
}

/// Outcome of the check of one run.
#[derive(Clone, Debug, PartialEq)]
pub struct Verdict {
    /// Every compared element passed.
    pub pass: bool,
    /// Largest relative error over the float outputs (infinity for an integer mismatch).
    pub max_rel_err: f64,
    /// What was compared (`full`, `sample 256/131072 rows`, ...).
    pub scope: String,
    /// The first failures, for the log.
    pub detail: Option<String>,
}

impl Verdict {
    /// A passing verdict with no error, for `scope`.
    pub fn new(scope: impl Into<String>) -> Self {
        Verdict { pass: true, max_rel_err: 0.0, scope: scope.into(), detail: None }
    }

    fn fail(&mut self, msg: String) {
        self.pass = false;
        self.detail = Some(match self.detail.take() {
            None => msg,
            Some(d) => format!("{d}\n{msg}"),
        });
    }

    /// Compare one output.
    ///
    /// # Errors
    /// [`moekit_ops::Error::DType`] when an integer check meets a float tensor.
    pub fn add(&mut self, what: &str, expected: &HostTensor, got: &HostTensor, how: OutCheck) -> Result<()> {
        if expected.shape() != got.shape() {
            self.max_rel_err = f64::INFINITY;
            self.fail(format!("{what}: shape {:?}, expected {:?}", got.shape(), expected.shape()));
            return Ok(());
        }
        match how {
            OutCheck::Exact => self.add_exact(what, expected.as_i32()?, got.as_i32()?),
            OutCheck::Float(tol) => {
                let r = compare(what, &expected.to_f64_vec(), &got.to_f64_vec(), tol);
                self.max_rel_err = self.max_rel_err.max(r.max_rel_err);
                if !r.ok() {
                    self.fail(r.to_string());
                }
            }
        }
        Ok(())
    }

    /// Compare integer slices exactly, reporting the first few mismatches.
    pub fn add_exact(&mut self, what: &str, expected: &[i32], got: &[i32]) {
        if expected.len() != got.len() {
            self.max_rel_err = f64::INFINITY;
            self.fail(format!("{what}: {} elements, expected {}", got.len(), expected.len()));
            return;
        }
        let bad: Vec<usize> = (0..expected.len()).filter(|&i| expected[i] != got[i]).collect();
        if !bad.is_empty() {
            self.max_rel_err = f64::INFINITY;
            let first: Vec<String> =
                bad.iter().take(5).map(|&i| format!("[{i}] expected {}, got {}", expected[i], got[i])).collect();
            self.fail(format!("{what}: {} of {} differ: {}", bad.len(), expected.len(), first.join(", ")));
        }
    }

    /// Record a failure found by a workload's own check.
    pub fn add_failure(&mut self, msg: String) {
        self.max_rel_err = f64::INFINITY;
        self.fail(msg);
    }
}

/// Compare every output of a run with the reference's outputs of the same problem.
///
/// # Errors
/// As [`Verdict::add`].
pub fn full(names: &[&str], how: &[OutCheck], expected: &[HostTensor], got: &[HostTensor]) -> Result<Verdict> {
    let mut v = Verdict::new("full");
    for (((name, how), e), g) in names.iter().zip(how).zip(expected).zip(got) {
        v.add(name, e, g, *how)?;
    }
    Ok(v)
}

/// The tolerance for one output of `dtype` reduced over `len` terms.
pub fn tol(dtype: DType, len: usize) -> OutCheck {
    OutCheck::Float(Tolerance::for_dtype(dtype, len))
}

/// Values must be equal (a copy or a gather).
pub const EQUAL: OutCheck = OutCheck::Float(Tolerance { rel: 0.0 });

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integer_mismatch_fails_with_infinite_error() {
        let mut v = Verdict::new("full");
        v.add("ids", &HostTensor::from_i32(&[2], &[1, 2]), &HostTensor::from_i32(&[2], &[1, 3]), OutCheck::Exact)
            .unwrap();
        assert!(!v.pass);
        assert!(v.max_rel_err.is_infinite());
        assert!(v.detail.unwrap().contains("[1] expected 2, got 3"));
    }

    #[test]
    fn nan_output_fails_a_float_check() {
        let e = HostTensor::from_f32(DType::F32, &[2], &[1.0, 2.0]);
        let g = HostTensor::from_f32(DType::F32, &[2], &[1.0, f32::NAN]);
        let mut v = Verdict::new("full");
        v.add("y", &e, &g, tol(DType::F32, 8)).unwrap();
        assert!(!v.pass);
        let mut ok = Verdict::new("full");
        ok.add("y", &e, &e, EQUAL).unwrap();
        assert!(ok.pass && ok.max_rel_err == 0.0);
    }
}
