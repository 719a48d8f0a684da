//! Dispatch: hidden `[T, H]` + Zipf-skewed `ids [T, k]` → expert-contiguous rows.

use super::scope;
use crate::data::{sample_indices, select_cols, select_rows, uniform, zipf_ids};
use crate::shapes::MoeShape;
use crate::verify::{OutCheck, Verdict, EQUAL};
use crate::workload::{arity, Op, Workload};
use moekit_ops::{api, Backend, DType, HostTensor, PermuteIo, PermuteProblem, Result, TensorMeta};
use moekit_reference::ReferenceBackend;

/// `hidden [T, H]`, `ids [T, k]` → `permuted [R, H]`, `offsets [E+1]`, `row_to_token [R]`,
/// `token_slot_to_row [T, k]` (no alignment, `R = T·k`).
#[derive(Debug)]
pub struct PermuteCase {
    problem: PermuteProblem,
    inputs: Vec<HostTensor>,
}

impl PermuteCase {
    /// Seeded inputs for `shape`.
    ///
    /// # Errors
    /// Validation errors of the problem.
    pub fn new(shape: &MoeShape, dtype: DType, seed: u64) -> Result<Self> {
        let (t, h, e, k) = (shape.tokens, shape.hidden, shape.experts, shape.k);
        let problem = PermuteProblem { tokens: t, hidden: h, experts: e, k, align: 1, dtype };
        problem.validate()?;
        let hidden = uniform(dtype, &[t, h], 1.0, seed ^ 0x51)?;
        let ids = HostTensor::from_i32(&[t, k], &zipf_ids(t, e, k, shape.skew, seed ^ 0x52));
        Ok(PermuteCase { problem, inputs: vec![hidden, ids] })
    }

    fn outputs_of(p: &PermuteProblem) -> Vec<HostTensor> {
        let (t, h, e, k, r) = (p.tokens, p.hidden, p.experts, p.k, p.max_rows());
        vec![
            HostTensor::zeros(p.dtype, &[r, h]),
            HostTensor::zeros(DType::I32, &[e + 1]),
            HostTensor::zeros(DType::I32, &[r]),
            HostTensor::zeros(DType::I32, &[t, k]),
        ]
    }
}

impl Workload for PermuteCase {
    fn op(&self) -> Op {
        Op::Permute
    }
    fn dims(&self) -> Vec<usize> {
        vec![self.problem.tokens, self.problem.hidden, self.problem.experts, self.problem.k]
    }
    fn flops(&self) -> Option<f64> {
        None
    }
    fn bytes(&self) -> f64 {
        let (t, h, e, k, r) =
            (self.problem.tokens, self.problem.hidden, self.problem.experts, self.problem.k, self.problem.max_rows());
        ((t * h + r * h) * self.problem.dtype.size() + (2 * t * k + e + 1 + r) * 4) as f64
    }
    fn inputs(&self) -> &[HostTensor] {
        &self.inputs
    }
    fn input_names(&self) -> &'static [&'static str] {
        &["hidden", "ids"]
    }
    fn outputs(&self) -> Vec<(DType, Vec<usize>)> {
        Self::outputs_of(&self.problem).iter().map(|t| (t.dtype(), t.shape().to_vec())).collect()
    }
    fn output_checks(&self) -> Vec<(&'static str, OutCheck)> {
        vec![
            ("permuted", EQUAL),
            ("offsets", OutCheck::Exact),
            ("row_to_token", OutCheck::Exact),
            ("token_slot_to_row", OutCheck::Exact),
        ]
    }
    fn call<B: Backend>(&self, b: &B, ins: &[B::Buffer], outs: &mut [B::Buffer]) -> Result<()> {
        let ([hidden, ids], [permuted, offsets, row_to_token, token_slot_to_row]) = (ins, outs) else {
            return Err(arity("permute"));
        };
        api::permute(b, &self.problem, PermuteIo { hidden, ids, permuted, offsets, row_to_token, token_slot_to_row })
    }
    fn reference_work(&self) -> f64 {
        (self.problem.max_rows() * self.problem.hidden) as f64
    }
    fn sample_units(&self) -> usize {
        self.problem.max_rows()
    }
    /// The index outputs are compared in full, from the reference run on the first hidden
    /// column alone (they do not depend on `H`); the permuted rows on a sample.
    fn verify_sample(&self, got: &[HostTensor], samples: usize, seed: u64) -> Result<Verdict> {
        let mut narrow = self.problem.clone();
        narrow.hidden = 1;
        let col = select_cols(&self.inputs[0], &[0])?;
        let mut exp = Self::outputs_of(&narrow);
        let [permuted, offsets, row_to_token, token_slot_to_row] = &mut exp[..] else {
            return Err(arity("permute"));
        };
        api::permute(
            &ReferenceBackend,
            &narrow,
            PermuteIo { hidden: &col, ids: &self.inputs[1], permuted, offsets, row_to_token, token_slot_to_row },
        )?;
        let r = self.problem.max_rows();
        let rows = sample_indices(r, samples, seed);
        let mut v = Verdict::new(format!("indices full, {}", scope(r, rows.len(), "rows")));
        for (i, name) in [(1, "offsets"), (2, "row_to_token"), (3, "token_slot_to_row")] {
            v.add(name, &exp[i], &got[i], OutCheck::Exact)?;
        }
        let r2t = exp[2].as_i32()?;
        // NOTE: without alignment there is no padding row, so every row has a source token.
        let src: Vec<usize> = rows.iter().map(|&row| r2t[row].max(0) as usize).collect();
        v.add("permuted", &select_rows(&self.inputs[0], &src)?, &select_rows(&got[0], &rows)?, EQUAL)?;
        Ok(v)
    }
    fn ceiling_gemm(&self) -> Option<(usize, usize, usize)> {
        None
    }
}
