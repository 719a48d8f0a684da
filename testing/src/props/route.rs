//! Routing: agreement with the reference, the routing invariants, and the bias update.

use super::route_scores::Scores;
use crate::compare::{close, close_f64, ctx, exact, Check};
use crate::exec::{self, RouteBufs};
use crate::gen;
use crate::strategies::{experts, seed, skew, tokens, top_k};
use moekit_ops::tolerance::Tolerance;
use moekit_ops::{Backend, BiasUpdateProblem, DType, GroupLimit, HostTensor, RouteProblem, ScoreFn};
use moekit_reference::ReferenceBackend;
use proptest::prelude::*;
use rand::Rng;

/// One routing case: the problem (its dtype is replaced by the test's) and the data seed.
#[derive(Clone, Debug)]
pub struct RouteCase {
    /// The problem.
    pub problem: RouteProblem,
    /// Zipf exponent of the expert popularity in the logits.
    pub skew: f64,
    /// Data seed.
    pub seed: u64,
}

/// Routing cases: T in 0..=48, E up to 256, k 1..=8 (clamped to what the mask and groups
/// allow), softmax or sigmoid, bias, masks, groups, renormalisation, scaling, fused gate.
pub fn route_cases() -> impl Strategy<Value = RouteCase> {
    let options = (any::<bool>(), any::<bool>(), 0..3u8, 0..3u8, any::<bool>(), 0..3u8, 0..4u8);
    (tokens(48), experts(), top_k(), options, 1..=40usize, skew(), seed()).prop_map(
        |(t, e, k, (sigmoid, use_bias, mask, groups, renormalize, scaling, fused), h, skew, seed)| {
            let mut rng = gen::rng(seed ^ 0x5eed);
            let mut p = RouteProblem::new(t, e, k, DType::F32);
            p.score = if sigmoid { ScoreFn::Sigmoid } else { ScoreFn::Softmax };
            p.use_bias = use_bias;
            p.renormalize = renormalize;
            p.scaling = [1.0, 2.5, rng.gen_range(0.1..4.0)][scaling as usize];
            p.hidden = (fused == 0).then_some(h);
            if mask > 0 {
                p.expert_mask = Some(gen::expert_mask(&mut rng, e, k.min(e)));
            }
            let divisors: Vec<usize> = [2usize, 4, 8].into_iter().filter(|g| e % g == 0 && e / g >= 2).collect();
            if groups > 0 && !divisors.is_empty() {
                let n_group = divisors[rng.gen_range(0..divisors.len())];
                p.groups = Some(GroupLimit { n_group, topk_group: rng.gen_range(1..=n_group) });
            }
            clamp_k(&mut p);
            RouteCase { problem: p, skew, seed }
        },
    )
}

/// Lowers `k` to what the mask and groups can reach (dropping them when they reach nothing).
fn clamp_k(p: &mut RouteProblem) {
    p.k = p.k.min(p.experts);
    lower_k_to_reachable(p);
}

/// Lowers `p.k` until the routing problem validates, dropping the group limit and then the
/// expert mask when even `k = 1` is out of their reach. For problems whose other fields are
/// valid (else it would not end). The fuzz targets use it too.
pub fn lower_k_to_reachable(p: &mut RouteProblem) {
    while p.validate().is_err() {
        if p.k > 1 {
            p.k -= 1;
        } else if p.groups.is_some() {
            p.groups = None;
        } else {
            p.expert_mask = None;
        }
    }
}

/// The routing inputs of a case in `dtype`.
pub fn route_inputs(p: &RouteProblem, c: &RouteCase) -> RouteBufs {
    let mut rng = gen::rng(c.seed);
    let (t, e) = (p.tokens, p.experts);
    let (logits, gate) = match p.hidden {
        // NOTE: multiples of 1/8 with small magnitude make the fused gate GEMM exact in f32,
        // so f32 and f64 logits agree exactly and only genuine ties remain.
        Some(h) => (
            gen::tensor(p.dtype, &[t, h], &gen::grid(&mut rng, t * h, 0.125, 1.0)),
            Some(gen::tensor(p.dtype, &[h, e], &gen::grid(&mut rng, h * e, 0.125, 0.5))),
        ),
        None => (gen::tensor(p.dtype, &[t, e], &gen::routing_logits(&mut rng, t, e, c.skew)), None),
    };
    let bias = p.use_bias.then(|| gen::tensor(DType::F32, &[e], &gen::grid(&mut rng, e, 0.25, 1.0)));
    RouteBufs::new(p, logits, gate, bias)
}

fn problem(c: &RouteCase, dtype: DType) -> RouteProblem {
    RouteProblem { dtype, ..c.problem.clone() }
}

/// Routing on `b` equals the reference: ids exactly (a differing id is accepted only where
/// the reference's selection scores are a near-tie), weights and load within f32 tolerance,
/// counts equal to the histogram of the backend's own ids.
///
/// # Errors
/// A mismatch report.
pub fn route_matches_reference<B: Backend>(b: &B, dtype: DType, c: &RouteCase) -> Check {
    let p = problem(c, dtype);
    let x = route_inputs(&p, c);
    let want = exec::route(&ReferenceBackend, &p, &x).map_err(ctx("reference route"))?;
    let got = exec::route(b, &p, &x).map_err(ctx("route"))?;
    let s = Scores::new(&p, &x.logits, x.gate.as_ref(), x.bias.as_ref());
    let (wi, gi) = (want.ids.to_f64_vec(), got.ids.to_f64_vec());
    let (ww, gw) = (want.weights.to_f64_vec(), got.weights.to_f64_vec());
    let (mut ew, mut aw) = (Vec::new(), Vec::new());
    let k = p.k;
    for t in 0..p.tokens {
        let (w_ids, g_ids) = (&wi[t * k..(t + 1) * k], &gi[t * k..(t + 1) * k]);
        if w_ids == g_ids {
            ew.extend_from_slice(&ww[t * k..(t + 1) * k]);
            aw.extend_from_slice(&gw[t * k..(t + 1) * k]);
            continue;
        }
        let g: Vec<i32> = g_ids.iter().map(|&v| v as i32).collect();
        s.check_valid(t, &g)?;
        let tie = s.ambiguous[t]
            || w_ids.iter().zip(&g).all(|(&w, &a)| {
                crate::compare::near(s.sel(t, w as usize), s.sel(t, a as usize), crate::compare::SCORE_REL)
            });
        if !tie {
            return Err(format!("token {t}: ids {g:?}, reference {w_ids:?} (not a near-tie)"));
        }
        if gw[t * k..(t + 1) * k].iter().any(|w| !w.is_finite()) {
            return Err(format!("token {t}: non-finite weights"));
        }
    }
    close_f64("weights", &ew, &aw, Tolerance::for_dtype(DType::F32, p.experts), DType::F32)?;
    exact("counts", &histogram(&got.ids, p.experts), &got.counts)?;
    close("load", &want.load, &got.load, Tolerance::for_dtype(DType::F32, p.tokens + p.experts), DType::F32)
}

/// The routing invariants on `b` alone: ids in range, allowed, distinct, in the kept groups,
/// ordered, a true top-k with ties to the lower index; counts are the ids' histogram and sum
/// to `T·k`; weights are the unbiased scores (renormalised to sum to `scaling`); load is the
/// per-expert score sum (0 for masked experts).
///
/// # Errors
/// The first violated invariant.
pub fn route_invariants<B: Backend>(b: &B, dtype: DType, c: &RouteCase) -> Check {
    let p = problem(c, dtype);
    let x = route_inputs(&p, c);
    let got = exec::route(b, &p, &x).map_err(ctx("route"))?;
    let s = Scores::new(&p, &x.logits, x.gate.as_ref(), x.bias.as_ref());
    let ids = got.ids.as_i32().map_err(ctx("ids"))?;
    let k = p.k;
    let mut want_w = Vec::with_capacity(p.tokens * k);
    for t in 0..p.tokens {
        let row = &ids[t * k..(t + 1) * k];
        s.check_top_k(t, row)?;
        want_w.extend(s.weights(&p, t, row));
    }
    let counts = got.counts.as_i32().map_err(ctx("counts"))?;
    let total: i64 = counts.iter().map(|&c| c as i64).sum();
    if total != (p.tokens * k) as i64 {
        return Err(format!("counts sum to {total}, expected T*k = {}", p.tokens * k));
    }
    exact("counts", &histogram(&got.ids, p.experts), &got.counts)?;
    let tol = Tolerance::for_dtype(DType::F32, p.experts);
    close_f64("weights", &want_w, &got.weights.to_f64_vec(), tol, DType::F32)?;
    if p.renormalize {
        let w = got.weights.to_f64_vec();
        let sums: Vec<f64> = (0..p.tokens).map(|t| w[t * k..(t + 1) * k].iter().sum()).collect();
        close_f64("weight sums", &vec![p.scaling as f64; p.tokens], &sums, tol, DType::F32)?;
    }
    let tol = Tolerance::for_dtype(DType::F32, p.tokens + p.experts);
    close_f64("load", &s.load(), &got.load.to_f64_vec(), tol, DType::F32)
}

/// Histogram `[E] i32` of an ids tensor (ids outside `0..E` are ignored; validity is
/// checked separately).
pub fn histogram(ids: &HostTensor, experts: usize) -> HostTensor {
    let mut h = vec![0i32; experts];
    for v in ids.to_f64_vec() {
        if v >= 0.0 && (v as usize) < experts {
            h[v as usize] += 1;
        }
    }
    HostTensor::from_i32(&[experts], &h)
}

/// One bias-update case.
#[derive(Clone, Debug)]
pub struct BiasCase {
    /// The problem.
    pub problem: BiasUpdateProblem,
    /// Data seed.
    pub seed: u64,
}

/// Bias-update cases: E up to 256, speeds 0 to 0.1, optional masks.
pub fn bias_cases() -> impl Strategy<Value = BiasCase> {
    (experts(), prop_oneof![Just(0.0f32), Just(1e-3f32), 0.0f32..0.1], any::<bool>(), seed()).prop_map(
        |(e, speed, masked, seed)| {
            let mut rng = gen::rng(seed ^ 0xb1a5);
            let expert_mask = masked.then(|| gen::expert_mask(&mut rng, e, 1));
            BiasCase { problem: BiasUpdateProblem { experts: e, speed, expert_mask }, seed }
        },
    )
}

/// The bias update on `b` equals the reference (`dtype` is unused: bias is f32, counts i32).
///
/// # Errors
/// A mismatch report.
pub fn update_bias_matches_reference<B: Backend>(b: &B, _dtype: DType, c: &BiasCase) -> Check {
    let mut rng = gen::rng(c.seed);
    let e = c.problem.experts;
    let bias = HostTensor::from_f32(DType::F32, &[e], &gen::normal(&mut rng, e, 0.1));
    let total = rng.gen_range(0..=e * 8);
    let counts: Vec<i32> = gen::skewed_counts(&mut rng, e, total, 1.0).iter().map(|&c| c as i32).collect();
    let counts = HostTensor::from_i32(&[e], &counts);
    let want =
        exec::update_bias(&ReferenceBackend, &c.problem, &bias, &counts).map_err(ctx("reference update_bias"))?;
    let got = exec::update_bias(b, &c.problem, &bias, &counts).map_err(ctx("update_bias"))?;
    close("bias", &want, &got, Tolerance::for_dtype(DType::F32, 1), DType::F32)
}
