//! Dense GEMM `c [M, N] = a [M, K] · b [K, N]`: the op itself, and the ceiling every FLOP-bound
//! op is measured against.

use super::scope;
use crate::data::{sample_indices, select_rows, uniform};
use crate::verify::{tol, OutCheck, Verdict};
use crate::workload::{arity, Op, Workload};
use moekit_ops::{api, Backend, DType, GemmProblem, HostTensor, Result};
use moekit_reference::ReferenceBackend;

/// `a [M, K]`, `b [K, N]` → `c [M, N]`.
#[derive(Debug)]
pub struct GemmCase {
    problem: GemmProblem,
    inputs: Vec<HostTensor>,
}

impl GemmCase {
    /// Seeded inputs for an `M × K × N` GEMM.
    ///
    /// # Errors
    /// Validation errors of the problem.
    pub fn new(m: usize, k: usize, n: usize, dtype: DType, seed: u64) -> Result<Self> {
        let problem = GemmProblem { m, k, n, b_transposed: false, dtype };
        problem.validate()?;
        let a = uniform(dtype, &[m, k], 1.0, seed ^ 0x81)?;
        let b = uniform(dtype, &[k, n], (3.0 / k.max(1) as f32).sqrt(), seed ^ 0x82)?;
        Ok(GemmCase { problem, inputs: vec![a, b] })
    }
}

impl Workload for GemmCase {
    fn op(&self) -> Op {
        Op::Gemm
    }
    fn dims(&self) -> Vec<usize> {
        vec![self.problem.m, self.problem.k, self.problem.n]
    }
    fn flops(&self) -> Option<f64> {
        Some(self.problem.flops())
    }
    fn bytes(&self) -> f64 {
        let (m, k, n) = (self.problem.m, self.problem.k, self.problem.n);
        ((m * k + k * n + m * n) * self.problem.dtype.size()) as f64
    }
    fn inputs(&self) -> &[HostTensor] {
        &self.inputs
    }
    fn input_names(&self) -> &'static [&'static str] {
        &["a", "b"]
    }
    fn outputs(&self) -> Vec<(DType, Vec<usize>)> {
        vec![(self.problem.dtype, vec![self.problem.m, self.problem.n])]
    }
    fn output_checks(&self) -> Vec<(&'static str, OutCheck)> {
        vec![("c", tol(self.problem.dtype, self.problem.k))]
    }
    fn call<B: Backend>(&self, b: &B, ins: &[B::Buffer], outs: &mut [B::Buffer]) -> Result<()> {
        let ([a, bm], [c]) = (ins, outs) else { return Err(arity("gemm")) };
        api::gemm(b, &self.problem, a, bm, c)
    }
    fn reference_work(&self) -> f64 {
        self.problem.flops() / 2.0
    }
    fn sample_units(&self) -> usize {
        self.problem.m
    }
    fn verify_sample(&self, got: &[HostTensor], samples: usize, seed: u64) -> Result<Verdict> {
        let rows = sample_indices(self.problem.m, samples, seed);
        let sub = GemmProblem { m: rows.len(), ..self.problem.clone() };
        let a = select_rows(&self.inputs[0], &rows)?;
        let mut c = HostTensor::zeros(sub.dtype, &[sub.m, sub.n]);
        api::gemm(&ReferenceBackend, &sub, &a, &self.inputs[1], &mut c)?;
        let mut v = Verdict::new(scope(self.problem.m, rows.len(), "rows"));
        v.add("c", &c, &select_rows(&got[0], &rows)?, self.output_checks()[0].1)?;
        Ok(v)
    }
    fn ceiling_gemm(&self) -> Option<(usize, usize, usize)> {
        Some((self.problem.m, self.problem.k, self.problem.n))
    }
}
