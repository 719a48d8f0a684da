//! RMSNorm with the fused residual add, over `[T, H]`.

use super::scope;
use crate::data::{sample_indices, select_rows, uniform};
use crate::verify::{tol, OutCheck, Verdict};
use crate::workload::{arity, Op, Workload};
use moekit_ops::{api, Backend, DType, HostTensor, Result, RmsNormIo, RmsNormProblem};
use moekit_reference::ReferenceBackend;

/// `x [T, H]`, `weight [H]`, `residual [T, H]` → `y [T, H]`, `residual_out [T, H]`.
#[derive(Debug)]
pub struct RmsNormCase {
    problem: RmsNormProblem,
    inputs: Vec<HostTensor>,
}

impl RmsNormCase {
    /// Seeded inputs for `rows × hidden`.
    ///
    /// # Errors
    /// Validation errors of the problem.
    pub fn new(rows: usize, hidden: usize, dtype: DType, seed: u64) -> Result<Self> {
        let problem = RmsNormProblem { rows, hidden, eps: 1e-6, residual: true, dtype };
        problem.validate()?;
        let x = uniform(dtype, &[rows, hidden], 1.0, seed ^ 0x91)?;
        let weight = uniform(dtype, &[hidden], 1.0, seed ^ 0x92)?;
        let residual = uniform(dtype, &[rows, hidden], 1.0, seed ^ 0x93)?;
        Ok(RmsNormCase { problem, inputs: vec![x, weight, residual] })
    }
}

impl Workload for RmsNormCase {
    fn op(&self) -> Op {
        Op::RmsNorm
    }
    fn dims(&self) -> Vec<usize> {
        vec![self.problem.rows, self.problem.hidden]
    }
    fn flops(&self) -> Option<f64> {
        None
    }
    fn bytes(&self) -> f64 {
        ((4 * self.problem.rows * self.problem.hidden + self.problem.hidden) * self.problem.dtype.size()) as f64
    }
    fn inputs(&self) -> &[HostTensor] {
        &self.inputs
    }
    fn input_names(&self) -> &'static [&'static str] {
        &["x", "weight", "residual"]
    }
    fn outputs(&self) -> Vec<(DType, Vec<usize>)> {
        let s = vec![self.problem.rows, self.problem.hidden];
        vec![(self.problem.dtype, s.clone()), (self.problem.dtype, s)]
    }
    fn output_checks(&self) -> Vec<(&'static str, OutCheck)> {
        vec![("y", tol(self.problem.dtype, self.problem.hidden)), ("residual_out", tol(self.problem.dtype, 1))]
    }
    fn call<B: Backend>(&self, b: &B, ins: &[B::Buffer], outs: &mut [B::Buffer]) -> Result<()> {
        let ([x, weight, residual], [y, residual_out]) = (ins, outs) else { return Err(arity("rms_norm")) };
        api::rms_norm(
            b,
            &self.problem,
            RmsNormIo { x, weight, residual: Some(residual), y, residual_out: Some(residual_out) },
        )
    }
    fn reference_work(&self) -> f64 {
        (self.problem.rows * self.problem.hidden) as f64
    }
    fn sample_units(&self) -> usize {
        self.problem.rows
    }
    fn verify_sample(&self, got: &[HostTensor], samples: usize, seed: u64) -> Result<Verdict> {
        let rows = sample_indices(self.problem.rows, samples, seed);
        let sub = RmsNormProblem { rows: rows.len(), ..self.problem.clone() };
        let (x, res) = (select_rows(&self.inputs[0], &rows)?, select_rows(&self.inputs[2], &rows)?);
        let mut y = HostTensor::zeros(sub.dtype, &[sub.rows, sub.hidden]);
        let mut ro = y.clone();
        api::rms_norm(
            &ReferenceBackend,
            &sub,
            RmsNormIo { x: &x, weight: &self.inputs[1], residual: Some(&res), y: &mut y, residual_out: Some(&mut ro) },
        )?;
        let mut v = Verdict::new(scope(self.problem.rows, rows.len(), "rows"));
        let checks = self.output_checks();
        v.add("y", &y, &select_rows(&got[0], &rows)?, checks[0].1)?;
        v.add("residual_out", &ro, &select_rows(&got[1], &rows)?, checks[1].1)?;
        Ok(v)
    }
    fn ceiling_gemm(&self) -> Option<(usize, usize, usize)> {
        None
    }
}
