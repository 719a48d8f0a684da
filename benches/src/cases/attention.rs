//! Packed varlen attention: `B` sequences of `S` tokens, GQA, causal by default, or none, or
//! one of the FlashMask patterns of [`crate::masks`].

use super::scope;
use crate::data::{select_cols, select_rows, uniform};
use crate::masks;
use crate::shapes::{AttnMask, AttnShape};
use crate::verify::{OutCheck, Verdict};
use crate::workload::{arity, Op, Workload};
use moekit_ops::tolerance::Tolerance;
use moekit_ops::{api, AttentionIo, AttentionMask, AttentionProblem, Backend, ColumnRanges, DType, HostTensor, Result};
use moekit_reference::ReferenceBackend;

/// `q [B·S, Hq, D]`, `k, v [B·S, Hkv, D]` → `o [B·S, Hq, D]`, `lse [Hq, B·S] f32`.
#[derive(Debug)]
pub struct AttentionCase {
    shape: AttnShape,
    problem: AttentionProblem,
    pairs: f64,
    inputs: Vec<HostTensor>,
}

impl AttentionCase {
    /// Seeded inputs for `shape`, scale `1/sqrt(D)`. The FLOPs count the allowed (query, key)
    /// pairs only, so a mask's rate compares with causal's at the same work.
    ///
    /// # Errors
    /// Validation errors of the problem (an unsupported head dim, heads that do not divide).
    pub fn new(shape: &AttnShape, dtype: DType, seed: u64) -> Result<Self> {
        let problem = AttentionProblem {
            cu_seqlens_q: masks::cu_seqlens_q(shape, seed),
            cu_seqlens_k: masks::cu_seqlens(shape, seed),
            heads_q: shape.heads_q,
            heads_kv: shape.heads_kv,
            head_dim: shape.head_dim,
            scale: 1.0 / (shape.head_dim as f32).sqrt(),
            softcap: None,
            mask: AttentionMask {
                causal: matches!(shape.mask, AttnMask::Causal | AttnMask::DocumentsVarlen | AttnMask::Decode(_)),
                window: None,
                column_ranges: masks::column_ranges(shape, seed),
            },
            dtype,
        };
        problem.validate()?;
        let (n, nq) = (problem.total_k(), problem.total_q());
        let q = uniform(dtype, &[nq, shape.heads_q, shape.head_dim], 1.0, seed ^ 0xB1)?;
        let k = uniform(dtype, &[n, shape.heads_kv, shape.head_dim], 1.0, seed ^ 0xB2)?;
        let v = uniform(dtype, &[n, shape.heads_kv, shape.head_dim], 1.0, seed ^ 0xB3)?;
        let pairs = problem.allowed_pairs() as f64;
        Ok(AttentionCase { shape: *shape, problem, pairs, inputs: vec![q, k, v] })
    }

    fn checks(&self) -> (OutCheck, OutCheck) {
        let dt = self.problem.dtype;
        let o = Tolerance::for_dtype(dt, self.shape.seq);
        // NOTE: lse is f32 whatever the dtype, but it sums exp of scores computed from
        // inputs of `dt`; its error grows with the dot length and the key count.
        let lse = Tolerance::for_dtype(DType::F32, self.shape.seq + self.shape.head_dim);
        (OutCheck::Float(o), OutCheck::Float(lse))
    }
}

impl Workload for AttentionCase {
    fn op(&self) -> Op {
        Op::Attention
    }
    fn dims(&self) -> Vec<usize> {
        self.shape.dims()
    }
    fn flops(&self) -> Option<f64> {
        Some(4.0 * self.pairs * (self.shape.heads_q * self.shape.head_dim) as f64)
    }
    fn bytes(&self) -> f64 {
        let s = &self.shape;
        let (n, nq) = (self.problem.total_k(), self.problem.total_q());
        ((2 * nq * s.heads_q * s.head_dim + 2 * n * s.heads_kv * s.head_dim) * self.problem.dtype.size()
            + s.heads_q * nq * 4) as f64
    }
    fn inputs(&self) -> &[HostTensor] {
        &self.inputs
    }
    fn input_names(&self) -> &'static [&'static str] {
        &["q", "k", "v"]
    }
    fn outputs(&self) -> Vec<(DType, Vec<usize>)> {
        let s = &self.shape;
        let n = self.problem.total_q();
        vec![(self.problem.dtype, vec![n, s.heads_q, s.head_dim]), (DType::F32, vec![s.heads_q, n])]
    }
    fn output_checks(&self) -> Vec<(&'static str, OutCheck)> {
        let (o, lse) = self.checks();
        vec![("o", o), ("lse", lse)]
    }
    fn call<B: Backend>(&self, b: &B, ins: &[B::Buffer], outs: &mut [B::Buffer]) -> Result<()> {
        let ([q, k, v], [o, lse]) = (ins, outs) else { return Err(arity("attention")) };
        api::attention(b, &self.problem, AttentionIo { q, k, v, o, lse })
    }
    fn reference_work(&self) -> f64 {
        self.flops().unwrap_or(0.0) / 2.0
    }
    fn sample_units(&self) -> usize {
        self.problem.total_q()
    }
    /// The last `m` query rows of every sequence against all its keys: with the causal mask
    /// aligned bottom-right, that sub-problem gives exactly those rows (and the longest ones);
    /// column ranges move up by the rows left out.
    fn verify_sample(&self, got: &[HostTensor], samples: usize, _seed: u64) -> Result<Verdict> {
        let (s, p) = (&self.shape, &self.problem);
        let m = (samples / p.batch()).max(1);
        let (mut rows, mut cu_q, mut sub_ranges) = (Vec::new(), vec![0], p.mask.column_ranges.clone());
        for b in 0..p.batch() {
            let (lq, _) = p.seq_lens(b);
            let (mb, q0) = (m.min(lq), p.cu_seqlens_q[b]);
            rows.extend(q0 + lq - mb..q0 + lq);
            cu_q.push(rows.len());
            if let Some(c) = &mut sub_ranges {
                shift_rows(c, p.cu_seqlens_k[b]..p.cu_seqlens_k[b + 1], lq - mb, mb);
            }
        }
        let mut sub = p.clone();
        sub.cu_seqlens_q = cu_q;
        sub.mask.column_ranges = sub_ranges;
        let q = select_rows(&self.inputs[0], &rows)?;
        let mut o = HostTensor::zeros(sub.dtype, &[rows.len(), s.heads_q, s.head_dim]);
        let mut lse = HostTensor::zeros(DType::F32, &[s.heads_q, rows.len()]);
        api::attention(
            &ReferenceBackend,
            &sub,
            AttentionIo { q: &q, k: &self.inputs[1], v: &self.inputs[2], o: &mut o, lse: &mut lse },
        )?;
        let (oc, lc) = self.checks();
        let mut v = Verdict::new(scope(p.total_q(), rows.len(), "query rows (last of each sequence)"));
        v.add("o", &o, &select_rows(&got[0], &rows)?, oc)?;
        v.add("lse", &lse, &select_cols(&got[1], &rows)?, lc)?;
        Ok(v)
    }
    /// `[B·S, Hq·D] · [Hq·D, N]` with `N` chosen so the FLOPs match;
    /// None for decode: memory-bound, it is measured against the copy ceiling.
    fn ceiling_gemm(&self) -> Option<(usize, usize, usize)> {
        if matches!(self.shape.mask, AttnMask::Decode(_)) {
            return None;
        }
        let m = self.shape.batch * self.shape.seq;
        let k = self.shape.heads_q * self.shape.head_dim;
        let n = (self.flops().unwrap_or(0.0) / (2.0 * m as f64 * k as f64)).round().max(1.0) as usize;
        // NOTE: N rounded up to a multiple of 64: an odd N sends cuBLASLt to a slow path, so the
        // ceiling would undershoot (its rate is computed from its own FLOPs, so rounding is free).
        let n = n.next_multiple_of(64);
        Some((m, k, n))
    }
}

/// The column ranges of key columns `cols` over query rows `off..off + m`, as rows `0..m`: each
/// bound moves up by `off` and is kept to `0..=m`.
fn shift_rows(c: &mut ColumnRanges, cols: std::ops::Range<usize>, off: usize, m: usize) {
    for v in [&mut c.lts, &mut c.lte, &mut c.uts, &mut c.ute] {
        for x in &mut v[cols.clone()] {
            *x = (*x as i64 - off as i64).clamp(0, m as i64) as i32;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use moekit_reference::ReferenceBackend;

    /// The sampled check of every mask passes on the reference's own full output, and fails
    /// when one sampled output row is wrong.
    #[test]
    fn sampled_check_holds_for_every_mask() {
        use AttnMask::*;
        for mask in [None, Causal, CausalRanges, Documents, Image, DocumentsVarlen, Decode(3)] {
            let shape = AttnShape { batch: 2, heads_q: 2, heads_kv: 1, seq: 200, head_dim: 64, mask };
            let case = AttentionCase::new(&shape, DType::F32, 5).unwrap();
            let mut outs: Vec<HostTensor> = case.outputs().iter().map(|(dt, sh)| HostTensor::zeros(*dt, sh)).collect();
            let (o, rest) = outs.split_at_mut(1);
            let io = AttentionIo {
                q: &case.inputs[0],
                k: &case.inputs[1],
                v: &case.inputs[2],
                o: &mut o[0],
                lse: &mut rest[0],
            };
            api::attention(&ReferenceBackend, &case.problem, io).unwrap();
            let v = case.verify_sample(&outs, 40, 0).unwrap();
            assert!(v.pass, "{mask:?}: {v:?}");
            // The last row of the first sequence, head 0: one value off.
            let mut bad = outs[0].to_f32_vec();
            let (last, tq) = (case.problem.cu_seqlens_q[1] - 1, case.problem.total_q());
            bad[last * 2 * 64] += 1.0;
            outs[0] = HostTensor::from_f32(DType::F32, &[tq, 2, 64], &bad);
            assert!(!case.verify_sample(&outs, 40, 0).unwrap().pass, "{mask:?}");
        }
    }
}
