//! Routing and the aux-loss-free bias update.

use crate::expect;
use moekit_ops::{check, BiasUpdateProblem, DType, HostTensor, Result, RouteProblem, ScoreFn, Validated};

const OP: &str = "route";

/// Outputs of [`route`].
#[derive(Clone, Debug, PartialEq)]
pub struct RouteOut {
    /// `[T, k] i32`: chosen experts, by selection score descending, ties to the lower index.
    pub ids: HostTensor,
    /// `[T, k] f32`: the chosen experts' scores without bias (renormalised, scaled).
    pub weights: HostTensor,
    /// `[E] i32`: slots that chose each expert.
    pub counts: HostTensor,
    /// `[E] f32`: per-expert sum over tokens of the score (0 for masked experts).
    pub load: HostTensor,
}

/// Top-k routing; see [`RouteProblem`] for the exact semantics.
///
/// `logits [T, E]` (or `hidden [T, H]` with `gate [H, E]` when the problem has `hidden`; the
/// logits are then formed in f64 and never rounded), optional `bias [E] f32`.
///
/// Non-finite values follow [`moekit_ops::numerics`]: the logits are checked after they are
/// formed, so a NaN or infinity in `hidden` row `t` or `gate` column `e` is reported as the
/// logit `t·E + e` it reaches; with `T = 0` nothing is read and nothing is reported.
///
/// # Errors
/// [`moekit_ops::Error::Shape`] / [`moekit_ops::Error::DType`] / [`moekit_ops::Error::Invalid`]
/// for inputs that do not match the problem; [`moekit_ops::Error::NonFinite`] `{route, "logits",
/// t·E + e}` at the lowest non-finite logit, else `{route, "bias", e}` at the lowest non-finite
/// bias.
pub fn route(
    p: &Validated<RouteProblem>,
    logits: &HostTensor,
    gate: Option<&HostTensor>,
    bias: Option<&HostTensor>,
) -> Result<RouteOut> {
    let (t_count, e_count, k) = (p.tokens, p.experts, p.k);
    let logits = router_logits(p, logits, gate)?;
    let bias = correction_bias(p, bias)?;
    // NOTE: the content checks come after the shape checks above, and only when there is a
    // token to route: with T = 0 no backend reads the logits or the bias.
    if t_count > 0 {
        check::finite_f64(OP, "logits", &logits)?;
        check::finite_f64(OP, "bias", &bias)?;
    }

    let mut ids = vec![0i32; t_count * k];
    let mut weights = vec![0f64; t_count * k];
    let mut counts = vec![0i32; e_count];
    let mut load = vec![0f64; e_count];
    for t in 0..t_count {
        let scores = score_row(p, &logits[t * e_count..(t + 1) * e_count]);
        let selection: Vec<f64> = (0..e_count).map(|e| scores[e] + bias[e]).collect();
        let candidates = candidate_experts(p, &selection);
        let chosen = top_k(&selection, &candidates, k);

        let mut w: Vec<f64> = chosen.iter().map(|&e| scores[e]).collect();
        if p.renormalize {
            let sum: f64 = w.iter().sum();
            // NOTE: a sum of 0 only happens when every chosen score underflowed; keep the zeros
            // rather than produce NaN.
            if sum > 0.0 {
                w.iter_mut().for_each(|x| *x /= sum);
            }
        }
        for (j, &e) in chosen.iter().enumerate() {
            ids[t * k + j] = e as i32;
            weights[t * k + j] = w[j] * p.scaling as f64;
            counts[e] += 1;
        }
        for e in 0..e_count {
            load[e] += scores[e];
        }
    }
    Ok(RouteOut {
        ids: HostTensor::from_i32(&[t_count, k], &ids),
        weights: HostTensor::from_f64(DType::F32, &[t_count, k], &weights),
        counts: HostTensor::from_i32(&[e_count], &counts),
        load: HostTensor::from_f64(DType::F32, &[e_count], &load),
    })
}

/// The logits `[T, E]` in f64: the input itself, or `hidden · gate` without rounding (an
/// infinity or NaN in `hidden` or `gate` makes the logits it reaches non-finite).
fn router_logits(p: &RouteProblem, logits: &HostTensor, gate: Option<&HostTensor>) -> Result<Vec<f64>> {
    let (t_count, e_count) = (p.tokens, p.experts);
    match (p.hidden, gate) {
        (None, None) => {
            expect(OP, "logits", logits, p.dtype, &[t_count, e_count])?;
            Ok(logits.to_f64_vec())
        }
        (Some(h_count), Some(gate)) => {
            expect(OP, "hidden", logits, p.dtype, &[t_count, h_count])?;
            expect(OP, "gate", gate, p.dtype, &[h_count, e_count])?;
            let (x, g) = (logits.to_f64_vec(), gate.to_f64_vec());
            let mut out = vec![0f64; t_count * e_count];
            for t in 0..t_count {
                for e in 0..e_count {
                    let mut acc = 0f64;
                    for h in 0..h_count {
                        acc += x[t * h_count + h] * g[h * e_count + e];
                    }
                    out[t * e_count + e] = acc;
                }
            }
            Ok(out)
        }
        (None, Some(_)) => Err(moekit_ops::Error::invalid(OP, "gate passed but problem has no hidden")),
        (Some(_), None) => Err(moekit_ops::Error::invalid(OP, "problem has hidden but no gate passed")),
    }
}

/// The correction bias `[E]` in f64 (zeros without `use_bias`).
fn correction_bias(p: &RouteProblem, bias: Option<&HostTensor>) -> Result<Vec<f64>> {
    match (p.use_bias, bias) {
        (true, Some(b)) => {
            expect(OP, "bias", b, DType::F32, &[p.experts])?;
            Ok(b.to_f64_vec())
        }
        (false, None) => Ok(vec![0.0; p.experts]),
        (true, None) => Err(moekit_ops::Error::invalid(OP, "use_bias but no bias passed")),
        (false, Some(_)) => Err(moekit_ops::Error::invalid(OP, "bias passed but use_bias is false")),
    }
}

/// Scores `[E]` of one token: softmax over the allowed experts only, or sigmoid; 0 for a
/// masked expert.
fn score_row(p: &RouteProblem, logits: &[f64]) -> Vec<f64> {
    let e_count = p.experts;
    let mut scores = vec![0f64; e_count];
    match p.score {
        ScoreFn::Softmax => {
            let max = (0..e_count).filter(|&e| p.allowed(e)).map(|e| logits[e]).fold(f64::NEG_INFINITY, f64::max);
            let mut sum = 0f64;
            for e in (0..e_count).filter(|&e| p.allowed(e)) {
                scores[e] = (logits[e] - max).exp();
                sum += scores[e];
            }
            scores.iter_mut().for_each(|s| *s /= sum);
        }
        ScoreFn::Sigmoid => {
            for e in (0..e_count).filter(|&e| p.allowed(e)) {
                scores[e] = 1.0 / (1.0 + (-logits[e]).exp());
            }
        }
    }
    scores
}

/// The experts a token may choose from: the allowed ones, restricted to the `topk_group` best
/// groups under group-limited routing. Ascending expert order.
fn candidate_experts(p: &RouteProblem, selection: &[f64]) -> Vec<usize> {
    let allowed: Vec<usize> = (0..p.experts).filter(|&e| p.allowed(e)).collect();
    let Some(g) = p.groups else {
        return allowed;
    };
    let size = p.experts / g.n_group;
    let group_scores: Vec<f64> = (0..g.n_group)
        .map(|gi| {
            let mut best: Vec<f64> =
                (gi * size..(gi + 1) * size).filter(|&e| p.allowed(e)).map(|e| selection[e]).collect();
            best.sort_by(|a, b| b.total_cmp(a));
            match best.len() {
                0 => f64::NEG_INFINITY,
                1 => best[0],
                _ => best[0] + best[1],
            }
        })
        .collect();
    let all_groups: Vec<usize> = (0..g.n_group).collect();
    let kept = top_k(&group_scores, &all_groups, g.topk_group);
    allowed.into_iter().filter(|&e| kept.contains(&(e / size))).collect()
}

/// The `k` candidates with the highest `value`, highest first, ties to the lower index.
fn top_k(value: &[f64], candidates: &[usize], k: usize) -> Vec<usize> {
    let mut order = candidates.to_vec();
    order.sort_by(|&a, &b| value[b].total_cmp(&value[a]).then(a.cmp(&b)));
    order.truncate(k);
    order
}

/// One aux-loss-free bias step: `bias[e] += speed * sign(mean - counts[e])` for every allowed
/// expert (`mean` over the allowed experts, `sign(0) = 0`); masked experts keep their bias.
///
/// `bias [E] f32`, `counts [E] i32` → the new `bias [E] f32`.
///
/// # Errors
/// [`moekit_ops::Error::Shape`] / [`moekit_ops::Error::DType`] for inputs that do not match.
pub fn update_bias(p: &Validated<BiasUpdateProblem>, bias: &HostTensor, counts: &HostTensor) -> Result<HostTensor> {
    const OP: &str = "update_bias";
    expect(OP, "bias", bias, DType::F32, &[p.experts])?;
    expect(OP, "counts", counts, DType::I32, &[p.experts])?;
    let allowed = |e: usize| p.expert_mask.as_ref().is_none_or(|m| m[e]);
    let counts = counts.as_i32()?;
    let mut bias = bias.to_f64_vec();
    // NOTE: sign(mean - c) = sign(sum - n·c) with `n` allowed experts; the integer form is exact,
    // so an expert sitting exactly on the mean is never nudged by a rounding of the mean.
    let n_allowed = (0..p.experts).filter(|&e| allowed(e)).count() as i64;
    let sum: i64 = (0..p.experts).filter(|&e| allowed(e)).map(|e| counts[e] as i64).sum();
    for e in (0..p.experts).filter(|&e| allowed(e)) {
        let sign = (sum - n_allowed * counts[e] as i64).signum() as f64;
        bias[e] += p.speed as f64 * sign;
    }
    Ok(HostTensor::from_f64(DType::F32, &[p.experts], &bias))
}
