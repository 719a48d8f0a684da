//! Routing kernels: per-token scores and top-k ([`route_tokens`]), per-expert counts and load
//! ([`route_stats`]), and the aux-loss-free bias step ([`update_bias`]): the portable one-unit-
//! per-token path. The scalable path is in [`plane`] (one plane per token) and [`gate`] /
//! [`gate_cmma`] / [`gate_mma`] (the fused gate's GEMM, SIMT, on `wmma` or on `ldmatrix` + `mma.sync`); `crate::ops` chooses
//! between them.

pub mod gate;
pub mod gate_cmma;
pub mod gate_mma;
pub mod plane;

use super::flag::record;
use super::glue::unit_index;
use cubecl::ir::ElemType;
use cubecl::prelude::*;
use moekit_ops::check::BadIndex;

/// The record code of a non-finite correction bias (index `e`): every routing kernel that reads
/// the bias checks it, for every expert, masked ones included, once it has a token to route.
pub(crate) const BAD_BIAS: i32 = BadIndex::RouteBiasNonFinite as i32;

/// Routing of one token per unit, everything in f32.
///
/// `x` is `logits [T, E]`, or `hidden [T, H]` with `gate [H, E]` when `fused` (`hidden` is
/// then `H`). `bias [E] f32` (with `use_bias`) is added for selection only; `mask [E] i32`
/// (with `masked`, 1 = allowed) removes experts. `scores` and `sel` are `[T, E]` f32
/// scratch: the scores (0 when masked) and the selection values (`-inf` once excluded or
/// taken); `groups` is `[T, n_group]` f32 scratch. Writes `ids [T, k]` and `weights [T, k]`.
/// A non-finite logit is recorded with code `bad` (index `t·E + e`; with `fused` the logit as
/// computed in f32), a non-finite bias with [`BAD_BIAS`] (index `e`); either is then read as 0.
#[cube(launch)]
pub fn route_tokens<F: Float>(
    x: &Array<F>,
    gate: &Array<F>,
    bias: &Array<f32>,
    mask: &Array<i32>,
    scores: &mut Array<f32>,
    sel: &mut Array<f32>,
    groups: &mut Array<f32>,
    ids: &mut Array<i32>,
    weights: &mut Array<f32>,
    flag: &mut Array<i32>,
    tokens: u32,
    experts: u32,
    k: u32,
    hidden: u32,
    n_group: u32,
    topk_group: u32,
    scaling: f32,
    bad: i32,
    #[comptime] fused: bool,
    #[comptime] sigmoid: bool,
    #[comptime] use_bias: bool,
    #[comptime] masked: bool,
    #[comptime] grouped: bool,
    #[comptime] renormalize: bool,
    #[define(F)] _dtype: ElemType,
) {
    let t = unit_index();
    if t < tokens as usize {
        let e_count = experts as usize;
        let base = t * e_count;
        // NOTE: finite sentinels, not ±inf: cubecl 0.10's CUDA C++ code generator writes an
        // infinite literal as `inf`, which NVRTC rejects (seen on the H200). Every real value
        // here is finite and far inside ±f32::MAX, so the sentinels never collide with one.
        let neg_inf = f32::new(-f32::MAX);

        // Logits, checked finite, and their maximum over the allowed experts.
        let mut max = neg_inf;
        for e in 0..e_count {
            let mut logit = 0.0f32;
            if comptime!(fused) {
                let h_count = hidden as usize;
                for h in 0..h_count {
                    logit += f32::cast_from(x[t * h_count + h]) * f32::cast_from(gate[h * e_count + e]);
                }
            } else {
                logit = f32::cast_from(x[base + e]);
            }
            if f32::is_nan(logit) || f32::is_inf(logit) {
                record(flag, bad, (base + e) as i32, 0i32, 0i32);
                logit = 0.0f32;
            }
            scores[base + e] = logit;
            let mut allowed = true;
            if comptime!(masked) {
                allowed = mask[e] != 0;
            }
            if allowed && logit > max {
                max = logit;
            }
        }

        // Scores (0 when masked) and selection values (-inf when masked).
        let mut sum = 0.0f32;
        for e in 0..e_count {
            let mut allowed = true;
            if comptime!(masked) {
                allowed = mask[e] != 0;
            }
            let logit = scores[base + e];
            let mut s = 0.0f32;
            if allowed {
                if comptime!(sigmoid) {
                    s = 1.0f32 / (1.0f32 + f32::exp(-logit));
                } else {
                    s = f32::exp(logit - max);
                    sum += s;
                }
            }
            scores[base + e] = s;
        }
        for e in 0..e_count {
            let mut allowed = true;
            if comptime!(masked) {
                allowed = mask[e] != 0;
            }
            if comptime!(!sigmoid) {
                scores[base + e] = scores[base + e] / sum;
            }
            let mut v = scores[base + e];
            if comptime!(use_bias) {
                let mut b = bias[e];
                if f32::is_nan(b) || f32::is_inf(b) {
                    record(flag, BAD_BIAS, e as i32, 0i32, 0i32);
                    b = 0.0f32;
                }
                v += b;
            }
            if !allowed {
                v = neg_inf;
            }
            sel[base + e] = v;
        }

        if comptime!(grouped) {
            keep_best_groups(sel, groups, base, t, e_count, n_group as usize, topk_group as usize);
        }

        // Top-k: highest selection value first, ties to the lower index.
        let k_count = k as usize;
        let mut total = 0.0f32;
        for j in 0..k_count {
            let mut best = 0usize;
            let mut best_v = neg_inf;
            let mut found = false;
            for e in 0..e_count {
                let v = sel[base + e];
                if v != neg_inf && (!found || v > best_v) {
                    best = e;
                    best_v = v;
                    found = true;
                }
            }
            sel[base + best] = neg_inf;
            ids[t * k_count + j] = best as i32;
            let w = scores[base + best];
            weights[t * k_count + j] = w;
            total += w;
        }
        for j in 0..k_count {
            let mut w = weights[t * k_count + j];
            if comptime!(renormalize) {
                // NOTE: a sum of 0 only happens when every chosen score underflowed; keep the
                // zeros rather than produce NaN (as the reference does).
                if total > 0.0f32 {
                    w /= total;
                }
            }
            weights[t * k_count + j] = w * scaling;
        }
    }
}

/// Group-limited routing of one token: scores each of the `n_group` contiguous groups by the
/// sum of its two best selection values (`-inf` entries are masked out), keeps the
/// `topk_group` best groups (ties to the lower group) and sets the selection values of every
/// other group to `-inf`.
#[cube]
fn keep_best_groups(
    sel: &mut Array<f32>,
    groups: &mut Array<f32>,
    base: usize,
    t: usize,
    e_count: usize,
    n_group: usize,
    topk_group: usize,
) {
    let neg_inf = f32::new(-f32::MAX);
    let size = e_count / n_group;
    let gbase = t * n_group;
    for g in 0..n_group {
        let mut first = neg_inf;
        let mut second = neg_inf;
        let mut n: u32 = 0;
        for e in g * size..(g + 1) * size {
            let v = sel[base + e];
            if v != neg_inf {
                n += 1u32;
                if v > first {
                    second = first;
                    first = v;
                } else if v > second {
                    second = v;
                }
            }
        }
        let mut score = neg_inf;
        if n == 1u32 {
            score = first;
        } else if n > 1u32 {
            score = first + second;
        }
        groups[gbase + g] = score;
    }
    // NOTE: kept groups are marked by +inf; a group score is finite or -inf.
    let pos_inf = f32::new(f32::MAX);
    for _ in 0..topk_group {
        let mut best = n_group;
        let mut best_v = neg_inf;
        for g in 0..n_group {
            let v = groups[gbase + g];
            if v != pos_inf && (best == n_group || v > best_v) {
                best = g;
                best_v = v;
            }
        }
        if best < n_group {
            groups[gbase + best] = pos_inf;
        }
    }
    for g in 0..n_group {
        if groups[gbase + g] != pos_inf {
            for e in g * size..(g + 1) * size {
                sel[base + e] = neg_inf;
            }
        }
    }
}

/// One unit per expert: `counts[e]` = slots of `ids [T, k]` that chose `e`, `load[e]` = sum
/// over tokens of `scores [T, E]`.
#[cube(launch)]
pub fn route_stats(
    ids: &Array<i32>,
    scores: &Array<f32>,
    counts: &mut Array<i32>,
    load: &mut Array<f32>,
    tokens: u32,
    experts: u32,
    k: u32,
) {
    let e = unit_index();
    if e < experts as usize {
        let mut n = 0i32;
        for s in 0..(tokens * k) as usize {
            if ids[s] == e as i32 {
                n += 1i32;
            }
        }
        let mut sum = 0.0f32;
        for t in 0..tokens as usize {
            sum += scores[t * experts as usize + e];
        }
        counts[e] = n;
        load[e] = sum;
    }
}

/// One unit per expert: `bias[e] += speed · sign(mean − counts[e])` for allowed experts
/// (`mask [E] i32` with `masked`), the mean over the allowed ones, compared exactly in integers.
#[cube(launch)]
pub fn update_bias(
    bias: &mut Array<f32>,
    counts: &Array<i32>,
    mask: &Array<i32>,
    experts: u32,
    speed: f32,
    #[comptime] masked: bool,
) {
    let e = unit_index();
    let e_count = experts as usize;
    if e < e_count {
        let mut n = 0u32;
        let mut sum = 0u32;
        for i in 0..e_count {
            let mut allowed = true;
            if comptime!(masked) {
                allowed = mask[i] != 0;
            }
            if allowed {
                n += 1u32;
                sum += counts[i] as u32;
            }
        }
        let mut allowed = true;
        if comptime!(masked) {
            allowed = mask[e] != 0;
        }
        if allowed {
            // NOTE: sign(sum − n·c) through sum = q·n + r, with no product that could overflow.
            let c = counts[e] as u32;
            let q = sum / n;
            let r = sum % n;
            let mut sign = 0.0f32;
            if q > c || (q == c && r > 0) {
                sign = 1.0f32;
            } else if q < c {
                sign = -1.0f32;
            }
            bias[e] += speed * sign;
        }
    }
}
