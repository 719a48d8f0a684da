//! Routing: router logits (the gate GEMM fused in), scores, group-limited top-k, weights,
//! counts, load; and the aux-loss-free bias update.

use crate::convert::{ints, ints_mut, widen_tensor};
use crate::matmul::{matmul, parallelism_for, Mat};
use crate::CpuBackend;
use moekit_ops::{check, BiasUpdateProblem, HostTensor, Result, RouteIo, RouteOps, RouteProblem, ScoreFn, Validated};
use rayon::prelude::*;
use std::borrow::Cow;
use std::cmp::Ordering;

const OP: &str = "route";

/// Tokens per rayon task.
const TOKENS_PER_TASK: usize = 64;

impl RouteOps for CpuBackend {
    fn route(&self, p: &Validated<RouteProblem>, io: RouteIo<'_, HostTensor>) -> Result<()> {
        let (t_count, e_count, k) = (p.tokens, p.experts, p.k);
        let logits = router_logits(p, io.logits, io.gate)?;
        let bias = io.bias.map(|b| b.as_f32()).transpose()?;
        // NOTE: checked on the logits as computed (a NaN or infinity in the fused gate's hidden
        // row t or gate column e, or an f32 accumulation that overflows, shows as logit t·E+e),
        // before anything is written; with T = 0 nothing is read, as on the device backends.
        if t_count > 0 {
            check::finite(OP, "logits", &logits)?;
            if let Some(b) = bias {
                check::finite(OP, "bias", b)?;
            }
        }
        let allowed: Vec<bool> = (0..e_count).map(|e| p.allowed(e)).collect();
        let ids = ints_mut(OP, "ids", io.ids)?;
        let weights = io.weights.as_f32_mut()?;
        let ctx = TokenCtx { p, allowed: &allowed, bias };
        let load = if t_count == 0 {
            vec![0f64; e_count]
        } else {
            logits
                .par_chunks(TOKENS_PER_TASK * e_count)
                .zip(ids.par_chunks_mut(TOKENS_PER_TASK * k))
                .zip(weights.par_chunks_mut(TOKENS_PER_TASK * k))
                .map(|((l, i), w)| ctx.route_tokens(l, i, w))
                .reduce(|| vec![0f64; e_count], add_into)
        };
        let counts = ints_mut(OP, "counts", io.counts)?;
        counts.fill(0);
        for &e in ids.iter() {
            // NOTE: ids were written just above from allowed expert indices, all in 0..E.
            counts[e as usize] += 1;
        }
        let load_out = io.load.as_f32_mut()?;
        load_out.iter_mut().zip(&load).for_each(|(o, &l)| *o = l as f32);
        Ok(())
    }

    fn update_bias(&self, p: &Validated<BiasUpdateProblem>, bias: &mut HostTensor, counts: &HostTensor) -> Result<()> {
        let counts = ints("update_bias", "counts", counts)?;
        let bias = bias.as_f32_mut()?;
        let allowed = |e: usize| p.expert_mask.as_ref().is_none_or(|m| m[e]);
        let n_allowed = (0..p.experts).filter(|&e| allowed(e)).count();
        let mean = (0..p.experts).filter(|&e| allowed(e)).map(|e| counts[e] as f64).sum::<f64>() / n_allowed as f64;
        for e in (0..p.experts).filter(|&e| allowed(e)) {
            let sign = match mean.partial_cmp(&(counts[e] as f64)) {
                Some(Ordering::Greater) => 1.0,
                Some(Ordering::Less) => -1.0,
                _ => 0.0,
            };
            bias[e] = (bias[e] as f64 + p.speed as f64 * sign) as f32;
        }
        Ok(())
    }
}

/// The logits `[T, E]` in f32: the input widened, or `hidden · gate` computed in f32 and
/// never rounded to the dtype.
fn router_logits<'a>(p: &RouteProblem, logits: &'a HostTensor, gate: Option<&HostTensor>) -> Result<Cow<'a, [f32]>> {
    let Some(gate) = gate else {
        return widen_tensor(OP, "logits", logits);
    };
    let h = p.hidden.unwrap_or(0);
    let x = widen_tensor(OP, "hidden", logits)?;
    let g = widen_tensor(OP, "gate", gate)?;
    let mut out = vec![0f32; p.tokens * p.experts];
    let dims = (p.tokens, h, p.experts);
    matmul(
        dims,
        Mat::row_major(&x, h),
        Mat::row_major(&g, p.experts),
        &mut out,
        p.experts,
        false,
        parallelism_for(dims.0, dims.1, dims.2),
    )?;
    Ok(Cow::Owned(out))
}

fn add_into(mut a: Vec<f64>, b: Vec<f64>) -> Vec<f64> {
    a.iter_mut().zip(&b).for_each(|(x, y)| *x += y);
    a
}

/// What every token of one call shares.
struct TokenCtx<'a> {
    p: &'a RouteProblem,
    allowed: &'a [bool],
    bias: Option<&'a [f32]>,
}

/// Per-task scratch, reused across the task's tokens.
#[derive(Default)]
struct Scratch {
    scores: Vec<f64>,
    selection: Vec<f64>,
    candidates: Vec<usize>,
    group_scores: Vec<f64>,
    groups: Vec<usize>,
}

impl TokenCtx<'_> {
    /// Routes a run of tokens (`logits [n, E]`, `ids, weights [n, k]`); returns their load.
    fn route_tokens(&self, logits: &[f32], ids: &mut [i32], weights: &mut [f32]) -> Vec<f64> {
        let (e_count, k) = (self.p.experts, self.p.k);
        let mut load = vec![0f64; e_count];
        let mut s = Scratch::default();
        for ((l, i), w) in logits.chunks(e_count).zip(ids.chunks_mut(k)).zip(weights.chunks_mut(k)) {
            self.route_token(l, &mut s, i, w);
            load.iter_mut().zip(&s.scores).for_each(|(a, b)| *a += b);
        }
        load
    }

    /// One token. Scores and selection in f64, so near-ties break as in the reference.
    fn route_token(&self, logits: &[f32], s: &mut Scratch, ids: &mut [i32], weights: &mut [f32]) {
        let p = self.p;
        self.score_row(logits, &mut s.scores);
        s.selection.clear();
        s.selection.extend((0..p.experts).map(|e| s.scores[e] + self.bias.map_or(0.0, |b| b[e] as f64)));
        self.candidates(s);
        let sel = &s.selection;
        let by_selection = |a: &usize, b: &usize| sel[*b].total_cmp(&sel[*a]).then(a.cmp(b));
        if s.candidates.len() > p.k {
            s.candidates.select_nth_unstable_by(p.k - 1, by_selection);
            s.candidates.truncate(p.k);
        }
        s.candidates.sort_unstable_by(by_selection);
        let sum: f64 = s.candidates.iter().map(|&e| s.scores[e]).sum();
        // NOTE: a sum of 0 only happens when every chosen score underflowed; keep the zeros
        // rather than produce NaN (as the reference does).
        let norm = if p.renormalize && sum > 0.0 { sum } else { 1.0 };
        for (j, &e) in s.candidates.iter().enumerate() {
            ids[j] = e as i32;
            weights[j] = (s.scores[e] / norm * p.scaling as f64) as f32;
        }
    }

    /// Scores `[E]`: softmax over the allowed experts only, or sigmoid; 0 when masked.
    fn score_row(&self, logits: &[f32], scores: &mut Vec<f64>) {
        scores.clear();
        scores.resize(logits.len(), 0.0);
        let allowed = self.allowed;
        match self.p.score {
            ScoreFn::Softmax => {
                let max = logits
                    .iter()
                    .zip(allowed)
                    .filter(|(_, &a)| a)
                    .map(|(&l, _)| l as f64)
                    .fold(f64::NEG_INFINITY, f64::max);
                let mut sum = 0f64;
                for e in (0..logits.len()).filter(|&e| allowed[e]) {
                    scores[e] = (logits[e] as f64 - max).exp();
                    sum += scores[e];
                }
                scores.iter_mut().for_each(|v| *v /= sum);
            }
            ScoreFn::Sigmoid => {
                for e in (0..logits.len()).filter(|&e| allowed[e]) {
                    scores[e] = 1.0 / (1.0 + (-(logits[e] as f64)).exp());
                }
            }
        }
    }

    /// Fills `s.candidates`: the allowed experts, restricted to the `topk_group` best groups
    /// under group-limited routing.
    fn candidates(&self, s: &mut Scratch) {
        let p = self.p;
        s.candidates.clear();
        let Some(g) = p.groups else {
            s.candidates.extend((0..p.experts).filter(|&e| self.allowed[e]));
            return;
        };
        let size = p.experts / g.n_group;
        s.group_scores.clear();
        for gi in 0..g.n_group {
            let (mut best, mut second) = (f64::NEG_INFINITY, f64::NEG_INFINITY);
            let mut n = 0;
            for e in (gi * size..(gi + 1) * size).filter(|&e| self.allowed[e]) {
                let v = s.selection[e];
                n += 1;
                if v.total_cmp(&best) == Ordering::Greater {
                    second = best;
                    best = v;
                } else if v.total_cmp(&second) == Ordering::Greater {
                    second = v;
                }
            }
            s.group_scores.push(match n {
                0 => f64::NEG_INFINITY,
                1 => best,
                _ => best + second,
            });
        }
        let gs = &s.group_scores;
        s.groups.clear();
        s.groups.extend(0..g.n_group);
        s.groups.sort_unstable_by(|a, b| gs[*b].total_cmp(&gs[*a]).then(a.cmp(b)));
        s.groups.truncate(g.topk_group);
        let kept = &s.groups;
        s.candidates.extend((0..p.experts).filter(|&e| self.allowed[e] && kept.contains(&(e / size))));
    }
}
