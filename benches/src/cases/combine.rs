//! Weighted combine: `y [R, H]` gathered back to tokens through `token_slot_to_row`.

use super::scope;
use crate::data::{sample_indices, select_rows, token_slot_to_row, uniform, uniform_values, zipf_ids};
use crate::shapes::MoeShape;
use crate::verify::{tol, OutCheck, Verdict};
use crate::workload::{arity, Op, Workload};
use moekit_ops::{api, Backend, CombineIo, CombineProblem, DType, HostTensor, Result};
use moekit_reference::ReferenceBackend;

/// `y [R, H]`, `weights [T, k] f32`, `token_slot_to_row [T, k]` → `out [T, H]`; the rows
/// come from the dispatch of Zipf-skewed ids, so the reads scatter as in a real layer.
#[derive(Debug)]
pub struct CombineCase {
    problem: CombineProblem,
    experts: usize,
    inputs: Vec<HostTensor>,
}

impl CombineCase {
    /// Seeded inputs for `shape`.
    ///
    /// # Errors
    /// Validation errors of the problem.
    pub fn new(shape: &MoeShape, dtype: DType, seed: u64) -> Result<Self> {
        let (t, h, e, k) = (shape.tokens, shape.hidden, shape.experts, shape.k);
        let problem = CombineProblem { tokens: t, hidden: h, k, rows: t * k, add: false, dtype };
        problem.validate()?;
        let y = uniform(dtype, &[t * k, h], 1.0, seed ^ 0x61)?;
        let w: Vec<f32> = uniform_values(t * k, 1.0, seed ^ 0x62).iter().map(|x| x.abs()).collect();
        let tsr = token_slot_to_row(&zipf_ids(t, e, k, shape.skew, seed ^ 0x52), e);
        let inputs = vec![y, HostTensor::from_f32(DType::F32, &[t, k], &w), HostTensor::from_i32(&[t, k], &tsr)];
        Ok(CombineCase { problem, experts: e, inputs })
    }
}

impl Workload for CombineCase {
    fn op(&self) -> Op {
        Op::UnpermuteCombine
    }
    fn dims(&self) -> Vec<usize> {
        vec![self.problem.tokens, self.problem.hidden, self.experts, self.problem.k]
    }
    fn flops(&self) -> Option<f64> {
        Some(2.0 * (self.problem.tokens * self.problem.k * self.problem.hidden) as f64)
    }
    fn bytes(&self) -> f64 {
        let (t, h, k, r) = (self.problem.tokens, self.problem.hidden, self.problem.k, self.problem.rows);
        ((r * h + t * h) * self.problem.dtype.size() + t * k * 8) as f64
    }
    fn inputs(&self) -> &[HostTensor] {
        &self.inputs
    }
    fn input_names(&self) -> &'static [&'static str] {
        &["y", "weights", "token_slot_to_row"]
    }
    fn outputs(&self) -> Vec<(DType, Vec<usize>)> {
        vec![(self.problem.dtype, vec![self.problem.tokens, self.problem.hidden])]
    }
    fn output_checks(&self) -> Vec<(&'static str, OutCheck)> {
        vec![("out", tol(self.problem.dtype, self.problem.k))]
    }
    fn call<B: Backend>(&self, b: &B, ins: &[B::Buffer], outs: &mut [B::Buffer]) -> Result<()> {
        let ([y, weights, token_slot_to_row], [out]) = (ins, outs) else { return Err(arity("unpermute_combine")) };
        api::unpermute_combine(b, &self.problem, CombineIo { y, weights, token_slot_to_row, add: None, out })
    }
    fn reference_work(&self) -> f64 {
        (self.problem.tokens * self.problem.k * self.problem.hidden) as f64
    }
    fn sample_units(&self) -> usize {
        self.problem.tokens
    }
    fn verify_sample(&self, got: &[HostTensor], samples: usize, seed: u64) -> Result<Verdict> {
        let toks = sample_indices(self.problem.tokens, samples, seed);
        let (w, tsr) = (select_rows(&self.inputs[1], &toks)?, select_rows(&self.inputs[2], &toks)?);
        // Only the rows the sampled tokens read: `y` can be GBs, and the reference widens it.
        let read: Vec<usize> = tsr.as_i32()?.iter().map(|&r| r.max(0) as usize).collect();
        let y = select_rows(&self.inputs[0], &read)?;
        let local: Vec<i32> = (0..read.len() as i32).collect();
        let sub = CombineProblem { tokens: toks.len(), rows: read.len(), ..self.problem.clone() };
        let tsr = HostTensor::from_i32(&[sub.tokens, sub.k], &local);
        let mut out = HostTensor::zeros(sub.dtype, &[sub.tokens, sub.hidden]);
        api::unpermute_combine(
            &ReferenceBackend,
            &sub,
            CombineIo { y: &y, weights: &w, token_slot_to_row: &tsr, add: None, out: &mut out },
        )?;
        let mut v = Verdict::new(scope(self.problem.tokens, toks.len(), "tokens"));
        v.add("out", &out, &select_rows(&got[0], &toks)?, self.output_checks()[0].1)?;
        Ok(v)
    }
    fn ceiling_gemm(&self) -> Option<(usize, usize, usize)> {
        None
    }
}
