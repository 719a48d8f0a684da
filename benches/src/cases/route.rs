//! Routing with the gate GEMM fused: softmax, top-k, renormalised (as the PyTorch peer does).

use super::{router_inputs, scope};
use crate::data::{counts, sample_indices, select_rows};
use crate::verify::{OutCheck, Verdict};
use crate::workload::{arity, Op, Workload};
use moekit_ops::tolerance::Tolerance;
use moekit_ops::{api, check, Backend, DType, HostTensor, Result, RouteIo, RouteProblem, TensorMeta};
use moekit_reference::ReferenceBackend;

/// `hidden [T, H]`, `gate [H, E]` → `ids [T, k]`, `weights [T, k]`, `counts [E]`, `load [E]`.
#[derive(Debug)]
pub struct RouteCase {
    problem: RouteProblem,
    inputs: Vec<HostTensor>,
}

impl RouteCase {
    /// Seeded inputs for `shape`.
    ///
    /// # Errors
    /// Validation errors of the problem.
    pub fn new(shape: &crate::shapes::MoeShape, dtype: DType, seed: u64) -> Result<Self> {
        let mut problem = RouteProblem::new(shape.tokens, shape.experts, shape.k, dtype);
        problem.hidden = Some(shape.hidden);
        problem.renormalize = true;
        problem.validate()?;
        let (x, gate) = router_inputs(shape, dtype, seed);
        Ok(RouteCase { problem, inputs: vec![x, gate] })
    }

    fn hidden(&self) -> usize {
        self.problem.hidden.unwrap_or(0)
    }

    fn weight_tol(&self) -> Tolerance {
        Tolerance::for_dtype(DType::F32, self.hidden())
    }

    /// Compare ids and weights of `toks` tokens. An id that differs from the reference is
    /// accepted when the weight in that slot matches: two experts whose scores tie within
    /// rounding may come out in either order.
    fn compare_routes(&self, v: &mut Verdict, exp: &[HostTensor], got_ids: &[i32], got_w: &HostTensor) -> Result<()> {
        let (e_ids, e_w) = (exp[0].as_i32()?, exp[1].to_f64_vec());
        let g_w = got_w.to_f64_vec();
        let floor = moekit_ops::tolerance::rms(&e_w);
        let tol = self.weight_tol().rel;
        let bad: Vec<usize> = (0..e_ids.len())
            .filter(|&i| e_ids[i] != got_ids[i] && !within(g_w[i] - e_w[i], tol * (e_w[i].abs() + floor)))
            .collect();
        if let Some(&i) = bad.first() {
            v.add_failure(format!(
                "ids: {} of {} differ beyond a tie, first [{i}] expected {}, got {}",
                bad.len(),
                e_ids.len(),
                e_ids[i],
                got_ids[i]
            ));
        }
        v.add("weights", &exp[1], got_w, OutCheck::Float(self.weight_tol()))
    }

    /// Counts must be the histogram of the returned ids, and softmax loads must sum to `T`.
    fn check_totals(&self, v: &mut Verdict, got: &[HostTensor]) -> Result<()> {
        let e = self.problem.experts;
        let ids = got[0].as_i32()?;
        if let Err(err) = check::in_range("route", "ids", ids, 0, e as i64) {
            v.add_failure(err.to_string());
            return Ok(());
        }
        let hist: Vec<i32> = counts(ids, e).into_iter().map(|c| c as i32).collect();
        v.add_exact("counts (vs histogram of ids)", &hist, got[2].as_i32()?);
        let total: f64 = got[3].to_f64_vec().iter().sum();
        let t = self.problem.tokens as f64;
        let rel = Tolerance::for_dtype(DType::F32, self.problem.tokens + self.hidden()).rel;
        if !within(total - t, rel * t.max(1.0)) {
            v.add_failure(format!("load sums to {total}, expected {t} (softmax rows sum to 1)"));
        }
        Ok(())
    }
}

/// `|diff| <= bound`, false for NaN (so a NaN output never passes).
fn within(diff: f64, bound: f64) -> bool {
    diff.abs() <= bound
}

impl Workload for RouteCase {
    fn op(&self) -> Op {
        Op::Route
    }
    fn dims(&self) -> Vec<usize> {
        vec![self.problem.tokens, self.hidden(), self.problem.experts, self.problem.k]
    }
    fn flops(&self) -> Option<f64> {
        Some(2.0 * (self.problem.tokens * self.hidden() * self.problem.experts) as f64)
    }
    fn bytes(&self) -> f64 {
        let (t, h, e, k) = (self.problem.tokens, self.hidden(), self.problem.experts, self.problem.k);
        ((t * h + h * e) * self.problem.dtype.size() + t * k * 8 + e * 8) as f64
    }
    fn inputs(&self) -> &[HostTensor] {
        &self.inputs
    }
    fn input_names(&self) -> &'static [&'static str] {
        &["logits", "gate"]
    }
    fn outputs(&self) -> Vec<(DType, Vec<usize>)> {
        let (t, e, k) = (self.problem.tokens, self.problem.experts, self.problem.k);
        vec![(DType::I32, vec![t, k]), (DType::F32, vec![t, k]), (DType::I32, vec![e]), (DType::F32, vec![e])]
    }
    fn output_checks(&self) -> Vec<(&'static str, OutCheck)> {
        let load = Tolerance::for_dtype(DType::F32, self.problem.tokens + self.hidden());
        vec![
            ("ids", OutCheck::Exact),
            ("weights", OutCheck::Float(self.weight_tol())),
            ("counts", OutCheck::Exact),
            ("load", OutCheck::Float(load)),
        ]
    }
    fn call<B: Backend>(&self, b: &B, ins: &[B::Buffer], outs: &mut [B::Buffer]) -> Result<()> {
        let ([x, gate], [ids, weights, counts, load]) = (ins, outs) else { return Err(arity("route")) };
        api::route(b, &self.problem, RouteIo { logits: x, gate: Some(gate), bias: None, ids, weights, counts, load })
    }
    fn reference_work(&self) -> f64 {
        self.flops().unwrap_or(0.0) / 2.0
    }
    fn sample_units(&self) -> usize {
        self.problem.tokens
    }
    fn verify_sample(&self, got: &[HostTensor], samples: usize, seed: u64) -> Result<Verdict> {
        let toks = sample_indices(self.problem.tokens, samples, seed);
        let mut v = Verdict::new(scope(self.problem.tokens, toks.len(), "tokens"));
        let mut sub = self.problem.clone();
        sub.tokens = toks.len();
        let x = select_rows(&self.inputs[0], &toks)?;
        let (n, e, k) = (toks.len(), self.problem.experts, self.problem.k);
        let mut exp = vec![
            HostTensor::zeros(DType::I32, &[n, k]),
            HostTensor::zeros(DType::F32, &[n, k]),
            HostTensor::zeros(DType::I32, &[e]),
            HostTensor::zeros(DType::F32, &[e]),
        ];
        let [ids, weights, counts, load] = &mut exp[..] else { return Err(arity("route")) };
        api::route(
            &ReferenceBackend,
            &sub,
            RouteIo { logits: &x, gate: Some(&self.inputs[1]), bias: None, ids, weights, counts, load },
        )?;
        let got_ids = select_rows(&got[0], &toks)?;
        self.compare_routes(&mut v, &exp, got_ids.as_i32()?, &select_rows(&got[1], &toks)?)?;
        self.check_totals(&mut v, got)?;
        Ok(v)
    }
    fn verify_full(&self, expected: &[HostTensor], got: &[HostTensor]) -> Result<Verdict> {
        let mut v = Verdict::new("full");
        if got[0].shape() != expected[0].shape() {
            v.add_failure(format!("ids: shape {:?}, expected {:?}", got[0].shape(), expected[0].shape()));
            return Ok(v);
        }
        self.compare_routes(&mut v, expected, got[0].as_i32()?, &got[1])?;
        self.check_totals(&mut v, got)?;
        v.add("load", &expected[3], &got[3], self.output_checks()[3].1)?;
        Ok(v)
    }
    fn ceiling_gemm(&self) -> Option<(usize, usize, usize)> {
        Some((self.problem.tokens, self.hidden(), self.problem.experts))
    }
}
