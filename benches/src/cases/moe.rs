//! The whole routed-expert layer through `api::moe_layer`: route (gate fused) → permute →
//! grouped GEMM gate/up with SwiGLU → grouped GEMM down → weighted combine.

use super::chunked::{reference_grouped, WEIGHT_BUDGET};
use super::{router_inputs, scope};
use crate::data::{expert_of_row, sample_indices, select_rows, uniform};
use crate::shapes::MoeShape;
use crate::verify::{OutCheck, Verdict};
use crate::workload::{arity, Op, Workload};
use moekit_ops::tolerance::Tolerance;
use moekit_ops::{
    api, Backend, CombineIo, DType, HostTensor, MoeLayerIo, MoeLayerProblem, PermuteIo, Result, RouteIo, RouteProblem,
};
use moekit_reference::ReferenceBackend;

/// `x [T, H]`, `gate [H, E]`, `w_up [E, H, 2I]`, `w_down [E, I, H]` → `out [T, H]`.
#[derive(Debug)]
pub struct MoeCase {
    problem: MoeLayerProblem,
    inputs: Vec<HostTensor>,
    /// Experts the routing sends at least one token to (whose weights a run must read).
    active_experts: usize,
    /// What the expert weights were drawn from.
    key: WeightKey,
}

/// Expert weights `w_up`, `w_down` handed from one layer case to the next with the same experts
/// ([`MoeCase::with_stash`], [`MoeCase::into_stash`]): a decode series (the layer at T = 1, 8,
/// ... on deepseek-v3's experts) draws and frees 22.5 GB of host weights once instead of once
/// per T, which took a minute a case on the H200 machine (run 17).
#[derive(Debug, Default)]
pub struct WeightStash(Option<(WeightKey, HostTensor, HostTensor)>);

/// What the expert weights are drawn from: equal keys, equal weights.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct WeightKey {
    dtype: DType,
    experts: usize,
    hidden: usize,
    inter: usize,
    seed: u64,
}

impl WeightStash {
    /// The stashed weights when they are the ones `key` draws; anything else is freed first.
    fn take(&mut self, key: WeightKey) -> Option<(HostTensor, HostTensor)> {
        match self.0.take() {
            Some((k, up, down)) if k == key => Some((up, down)),
            _ => None,
        }
    }
}

impl MoeCase {
    /// Seeded inputs for `shape` (softmax routing, renormalised top-k, no bias, no `add`).
    ///
    /// # Errors
    /// Validation errors of the problem.
    pub fn new(shape: &MoeShape, dtype: DType, seed: u64) -> Result<Self> {
        Self::with_stash(shape, dtype, seed, &mut WeightStash::default())
    }

    /// As [`MoeCase::new`], taking the expert weights from `stash` when it holds the ones this
    /// case would draw (same dtype, experts, hidden and intermediate sizes, seed; the tokens
    /// may differ), else drawing them.
    ///
    /// # Errors
    /// Validation errors of the problem.
    pub fn with_stash(shape: &MoeShape, dtype: DType, seed: u64, stash: &mut WeightStash) -> Result<Self> {
        let (h, e, i) = (shape.hidden, shape.experts, shape.inter);
        let mut route = RouteProblem::new(shape.tokens, e, shape.k, dtype);
        route.hidden = Some(h);
        route.renormalize = true;
        let problem = MoeLayerProblem { route, inter: i, add: false };
        problem.validate()?;
        let (x, gate) = router_inputs(shape, dtype, seed);
        let key = WeightKey { dtype, experts: e, hidden: h, inter: i, seed };
        let (w_up, w_down) = match stash.take(key) {
            Some(weights) => weights,
            None => (
                uniform(dtype, &[e, h, 2 * i], (3.0 / h as f32).sqrt(), seed ^ 0xA1)?,
                uniform(dtype, &[e, i, h], (3.0 / i as f32).sqrt(), seed ^ 0xA2)?,
            ),
        };
        let active_experts = active_experts(&problem, &x, &gate)?;
        Ok(MoeCase { problem, inputs: vec![x, gate, w_up, w_down], active_experts, key })
    }

    /// Hands the expert weights to `stash` for the next case (the rest is freed).
    pub fn into_stash(self, stash: &mut WeightStash) {
        let MoeCase { mut inputs, key, .. } = self;
        if let (Some(down), Some(up)) = (inputs.pop(), inputs.pop()) {
            stash.0 = Some((key, up, down));
        }
    }

    fn dims_tuple(&self) -> (usize, usize, usize, usize, usize) {
        let r = &self.problem.route;
        (r.tokens, self.problem.hidden(), r.experts, r.k, self.problem.inter)
    }

    /// The reference layer for weights too large to widen at once: the same composition as
    /// `moekit_ops::moe::moe_layer_from_primitives` (which the reference's `moe_layer` is),
    /// with the grouped GEMMs run a few experts at a time.
    fn reference_by_parts(&self, sub: &MoeLayerProblem, x: &HostTensor) -> Result<HostTensor> {
        let (rp, pp, up, down, cp) = sub.parts();
        let (n, h, e, k) = (rp.tokens, sub.hidden(), rp.experts, rp.k);
        let z = |dt: DType, s: &[usize]| HostTensor::zeros(dt, s);
        let Routed { ids, weights, .. } = reference_route(&rp, x, &self.inputs[1])?;
        let rows = pp.max_rows();
        let (mut permuted, mut offs) = (z(rp.dtype, &[rows, h]), z(DType::I32, &[e + 1]));
        let (mut r2t, mut tsr) = (z(DType::I32, &[rows]), z(DType::I32, &[n, k]));
        let io = PermuteIo {
            hidden: x,
            ids: &ids,
            permuted: &mut permuted,
            offsets: &mut offs,
            row_to_token: &mut r2t,
            token_slot_to_row: &mut tsr,
        };
        api::permute(&ReferenceBackend, &pp, io)?;
        let offs = offs.as_i32()?;
        let owners: Vec<usize> = (0..rows).map(|r| expert_of_row(offs, r)).collect();
        let act = reference_grouped(&up, &permuted, &owners, &self.inputs[2], WEIGHT_BUDGET)?;
        let y = reference_grouped(&down, &act, &owners, &self.inputs[3], WEIGHT_BUDGET)?;
        let mut out = z(rp.dtype, &[n, h]);
        let io = CombineIo { y: &y, weights: &weights, token_slot_to_row: &tsr, add: None, out: &mut out };
        api::unpermute_combine(&ReferenceBackend, &cp, io)?;
        Ok(out)
    }

    fn out_tol(&self) -> Tolerance {
        let (_, h, _, _, i) = self.dims_tuple();
        // NOTE: two GEMMs, SwiGLU and the combine, each rounding to the dtype in between.
        Tolerance::chained(self.problem.route.dtype, h.max(i), 3)
    }
}

impl Workload for MoeCase {
    fn op(&self) -> Op {
        Op::MoeLayer
    }
    fn dims(&self) -> Vec<usize> {
        let (t, h, e, k, i) = self.dims_tuple();
        vec![t, h, e, k, i]
    }
    fn flops(&self) -> Option<f64> {
        Some(self.problem.flops())
    }
    /// Tokens in and out, the gate, and the weights of every expert the routing reaches: at
    /// decode sizes (T·k ≤ 4E) only those are read, which is the HBM bound of a decode step.
    fn bytes(&self) -> f64 {
        let (t, h, e, _, i) = self.dims_tuple();
        ((2 * t * h + h * e + 3 * self.active_experts * h * i) * self.problem.route.dtype.size()) as f64
    }
    fn inputs(&self) -> &[HostTensor] {
        &self.inputs
    }
    fn input_names(&self) -> &'static [&'static str] {
        &["x", "gate", "w_up", "w_down"]
    }
    fn outputs(&self) -> Vec<(DType, Vec<usize>)> {
        let (t, h, ..) = self.dims_tuple();
        vec![(self.problem.route.dtype, vec![t, h])]
    }
    fn output_checks(&self) -> Vec<(&'static str, OutCheck)> {
        vec![("out", OutCheck::Float(self.out_tol()))]
    }
    fn call<B: Backend>(&self, b: &B, ins: &[B::Buffer], outs: &mut [B::Buffer]) -> Result<()> {
        let ([x, gate, w_up, w_down], [out]) = (ins, outs) else { return Err(arity("moe_layer")) };
        api::moe_layer(b, &self.problem, MoeLayerIo { x, gate, bias: None, w_up, w_down, add: None, out, routed: None })
    }
    fn reference_work(&self) -> f64 {
        self.problem.flops() / 2.0
    }
    fn sample_units(&self) -> usize {
        self.problem.route.tokens
    }
    /// Tokens are independent: the layer on the sampled tokens alone gives their rows.
    fn verify_sample(&self, got: &[HostTensor], samples: usize, seed: u64) -> Result<Verdict> {
        let (t, h, e, _, i) = self.dims_tuple();
        let toks = sample_indices(t, samples, seed);
        let mut sub = self.problem.clone();
        sub.route.tokens = toks.len();
        let x = select_rows(&self.inputs[0], &toks)?;
        let out = if e * h * 2 * i <= WEIGHT_BUDGET {
            let mut out = HostTensor::zeros(sub.route.dtype, &[toks.len(), h]);
            let [_, gate, w_up, w_down] = &self.inputs[..] else { return Err(arity("moe_layer")) };
            let io = MoeLayerIo { x: &x, gate, bias: None, w_up, w_down, add: None, out: &mut out, routed: None };
            api::moe_layer(&ReferenceBackend, &sub, io)?;
            out
        } else {
            self.reference_by_parts(&sub, &x)?
        };
        let mut v = Verdict::new(scope(t, toks.len(), "tokens"));
        v.add("out", &out, &select_rows(&got[0], &toks)?, OutCheck::Float(self.out_tol()))?;
        Ok(v)
    }
    /// `[T·k, H] · [H, N]` with `N` chosen so the FLOPs match the layer's.
    fn ceiling_gemm(&self) -> Option<(usize, usize, usize)> {
        let (t, h, _, k, _) = self.dims_tuple();
        let m = t * k;
        let n = (self.problem.flops() / (2.0 * m as f64 * h as f64)).round().max(1.0) as usize;
        // NOTE: N rounded up to a multiple of 64: an odd N sends cuBLASLt to a slow path, so the
        // ceiling would undershoot (its rate is computed from its own FLOPs, so rounding is free).
        let n = n.next_multiple_of(64);
        Some((m, h, n))
    }
}

/// Experts that `problem`'s routing of `x` reaches, routed on the reference when the tokens
/// are few (T·k ≤ 4E, decode steps); above that every expert (a token-choice routing of
/// T·k picks leaves an expert out with probability about e^(-T·k/E) < 2%, and routing a
/// prefill on the reference would take longer than the run).
fn active_experts(problem: &MoeLayerProblem, x: &HostTensor, gate: &HostTensor) -> Result<usize> {
    let r = &problem.route;
    if r.tokens * r.k > 4 * r.experts {
        return Ok(r.experts);
    }
    let counts = reference_route(r, x, gate)?.counts;
    Ok(counts.as_i32()?.iter().filter(|&&c| c > 0).count())
}

/// The reference routing's outputs.
struct Routed {
    ids: HostTensor,
    weights: HostTensor,
    counts: HostTensor,
}

/// `x` routed on the reference through `gate` (no bias), as the layer routes.
fn reference_route(r: &RouteProblem, x: &HostTensor, gate: &HostTensor) -> Result<Routed> {
    let (t, e, k) = (r.tokens, r.experts, r.k);
    let z = |dt: DType, s: &[usize]| HostTensor::zeros(dt, s);
    let (mut ids, mut weights) = (z(DType::I32, &[t, k]), z(DType::F32, &[t, k]));
    let (mut counts, mut load) = (z(DType::I32, &[e]), z(DType::F32, &[e]));
    let io = RouteIo {
        logits: x,
        gate: Some(gate),
        bias: None,
        ids: &mut ids,
        weights: &mut weights,
        counts: &mut counts,
        load: &mut load,
    };
    api::route(&ReferenceBackend, r, io)?;
    Ok(Routed { ids, weights, counts })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layer_by_parts_is_the_reference_layer() {
        let shape = crate::shapes::resolve("custom:T=50,H=64,E=8,k=3,I=32,skew=1").unwrap().remove(0);
        for dtype in [DType::F32, DType::BF16] {
            let case = MoeCase::new(&shape, dtype, 4).unwrap();
            let whole = crate::workload::reference_outputs(&case).unwrap();
            let parts = case.reference_by_parts(&case.problem, &case.inputs[0]).unwrap();
            assert_eq!(whole[0], parts, "{dtype}");
        }
    }

    #[test]
    fn a_case_of_other_tokens_reuses_the_stashed_weights() {
        let shape = |t: usize| crate::shapes::resolve(&format!("custom:T={t},H=64,E=8,k=2,I=32")).unwrap().remove(0);
        let mut stash = WeightStash::default();
        let a = MoeCase::with_stash(&shape(2), DType::BF16, 11, &mut stash).unwrap();
        let up_at = a.inputs[2].as_bytes().as_ptr();
        a.into_stash(&mut stash);
        let b = MoeCase::with_stash(&shape(5), DType::BF16, 11, &mut stash).unwrap();
        assert!(stash.0.is_none());
        assert_eq!(b.inputs[2].as_bytes().as_ptr(), up_at, "the weights were drawn again");
        let fresh = MoeCase::new(&shape(5), DType::BF16, 11).unwrap();
        assert_eq!(b.inputs, fresh.inputs);
        // Another seed (or size, or dtype) draws its own.
        b.into_stash(&mut stash);
        let c = MoeCase::with_stash(&shape(5), DType::BF16, 12, &mut stash).unwrap();
        assert_eq!(c.inputs, MoeCase::new(&shape(5), DType::BF16, 12).unwrap().inputs);
        assert_ne!(c.inputs[2], fresh.inputs[2]);
    }

    #[test]
    fn decode_bytes_count_the_experts_the_routing_reaches() {
        // 2 tokens × top-2 over 64 experts reach 2 to 4 experts; a prefill counts them all.
        let shape = crate::shapes::resolve("custom:T=2,H=64,E=64,k=2,I=32").unwrap().remove(0);
        let case = MoeCase::new(&shape, DType::F32, 5).unwrap();
        assert!((2..=4).contains(&case.active_experts), "{}", case.active_experts);
        let weights = |n: usize| (3 * n * 64 * 32 * 4) as f64;
        let rest = ((2 * 2 * 64 + 64 * 64) * 4) as f64;
        assert_eq!(case.bytes(), rest + weights(case.active_experts));
        let shape = crate::shapes::resolve("custom:T=200,H=64,E=8,k=2,I=32").unwrap().remove(0);
        assert_eq!(MoeCase::new(&shape, DType::F32, 5).unwrap().active_experts, 8);
    }
}
