//! Routing with one plane per token ([`route_plane`]) and the reduction of its per-cube
//! statistics ([`route_stats_reduce`]).
//!
//! A cube is `(plane, planes)` units: row `UNIT_POS_Y` is one plane of `plane` lanes. Lane `l`
//! owns experts `l, l + plane, l + 2·plane, …` (`per` of them, in registers); the softmax max
//! and sum, the group scores and each of the k top-k rounds are plane reductions. With
//! `emulate` the same reductions go through shared memory instead of plane operations (for
//! runtimes without them, lavapipe among them): every unit of the cube then runs the same
//! loops, so the cube barriers of the emulation are reached uniformly.

use super::super::flag::record;
use super::super::glue::cube_sum;
use super::BAD_BIAS;
use cubecl::ir::ElemType;
use cubecl::prelude::*;

/// Maximum of `v` over this unit's plane.
#[cube]
fn lane_max(v: f32, buf: &mut SharedMemory<f32>, #[comptime] plane: usize, #[comptime] emulate: bool) -> f32 {
    if comptime!(emulate) {
        let base = UNIT_POS_Y as usize * plane;
        buf[base + UNIT_POS_X as usize] = v;
        sync_cube();
        let mut out = buf[base];
        for i in 1..plane {
            let o = buf[base + i];
            if o > out {
                out = o;
            }
        }
        sync_cube();
        out
    } else {
        plane_max(v)
    }
}

/// Sum of `v` over this unit's plane (the same value in every lane).
#[cube]
fn lane_sum(v: f32, buf: &mut SharedMemory<f32>, #[comptime] plane: usize, #[comptime] emulate: bool) -> f32 {
    if comptime!(emulate) {
        let base = UNIT_POS_Y as usize * plane;
        buf[base + UNIT_POS_X as usize] = v;
        sync_cube();
        let mut out = 0.0f32;
        for i in 0..plane {
            out += buf[base + i];
        }
        sync_cube();
        out
    } else {
        plane_sum(v)
    }
}

/// Minimum of `v` over this unit's plane.
#[cube]
fn lane_min_u(v: u32, buf: &mut SharedMemory<u32>, #[comptime] plane: usize, #[comptime] emulate: bool) -> u32 {
    if comptime!(emulate) {
        let base = UNIT_POS_Y as usize * plane;
        buf[base + UNIT_POS_X as usize] = v;
        sync_cube();
        let mut out = buf[base];
        for i in 1..plane {
            let o = buf[base + i];
            if o < out {
                out = o;
            }
        }
        sync_cube();
        out
    } else {
        plane_min(v)
    }
}

/// Sum of `v` over this unit's plane.
#[cube]
fn lane_sum_u(v: u32, buf: &mut SharedMemory<u32>, #[comptime] plane: usize, #[comptime] emulate: bool) -> u32 {
    if comptime!(emulate) {
        let base = UNIT_POS_Y as usize * plane;
        buf[base + UNIT_POS_X as usize] = v;
        sync_cube();
        let mut out = 0u32;
        for i in 0..plane {
            out += buf[base + i];
        }
        sync_cube();
        out
    } else {
        plane_sum(v)
    }
}

/// Routing of `tpp` consecutive tokens per plane (`(CUBE_POS · planes + plane row) · tpp…`),
/// everything in f32; semantics as [`super::route_tokens`] without the fused gate.
///
/// `x`: `logits [T, E]`; `bias [E] f32` (with `use_bias`); `mask [E] i32` (with `masked`,
/// 1 = allowed). Writes `ids [T, k]`, `weights [T, k]` and this cube's row of
/// `part_counts [cubes, E] i32` and `part_load [cubes, E] f32` (slots and score sums of its
/// tokens). Needs `k <= plane`, `E <= plane · per`, `per <= 32`, `n_group <= min(plane, 32)`.
/// A non-finite logit is recorded with code `bad` (index `t·E + e`) and taken as 0; a
/// non-finite bias with [`BAD_BIAS`] (index `e`, any expert of a live token) and taken as 0.
#[cube(launch)]
#[allow(clippy::too_many_arguments)]
pub fn route_plane<F: Float>(
    x: &Array<F>,
    bias: &Array<f32>,
    mask: &Array<i32>,
    ids: &mut Array<i32>,
    weights: &mut Array<f32>,
    part_counts: &mut Array<i32>,
    part_load: &mut Array<f32>,
    flag: &mut Array<i32>,
    tokens: u32,
    experts: u32,
    k: u32,
    n_group: u32,
    topk_group: u32,
    tpp: u32,
    scaling: f32,
    bad: i32,
    #[comptime] plane: usize,
    #[comptime] planes: usize,
    #[comptime] per: usize,
    #[comptime] emulate: bool,
    #[comptime] sigmoid: bool,
    #[comptime] use_bias: bool,
    #[comptime] masked: bool,
    #[comptime] grouped: bool,
    #[comptime] renormalize: bool,
    #[define(F)] _dtype: ElemType,
) {
    let lane = UNIT_POS_X as usize;
    let row = UNIT_POS_Y as usize;
    let cube = CUBE_POS;
    let e_count = experts as usize;
    let k_count = k as usize;
    // NOTE: finite sentinels, not ±inf (cubecl 0.10's CUDA generator writes `inf`, which
    // NVRTC rejects); every real value is finite and far inside ±f32::MAX.
    let neg = f32::new(-f32::MAX);
    // NOTE: an index no expert (nor lane) has: `plane · per >= E` and lanes are `< plane`.
    let none = comptime!((plane * per) as u32);
    let mut red_f = SharedMemory::<f32>::new(comptime!(if emulate { plane * planes } else { 1 }));
    let mut red_u = SharedMemory::<u32>::new(comptime!(if emulate { plane * planes } else { 1 }));

    // Per-lane statistics over this plane's tokens, expert `lane + plane·i` in slot `i`.
    let mut ld = Array::<f32>::new(per);
    let mut cnt = Array::<u32>::new(per);
    // The token's scores and selection values (`neg`: masked, out of range or taken).
    let mut sc = Array::<f32>::new(per);
    let mut sl = Array::<f32>::new(per);
    #[unroll]
    for i in 0..per {
        ld[i] = 0.0f32;
        cnt[i] = 0u32;
    }

    let first = (cube * planes + row) * tpp as usize;
    for it in 0..tpp as usize {
        let t = first + it;
        let live = t < tokens as usize;

        // Logits (checked finite); `sl` marks the allowed experts with 0.
        let mut mx = neg;
        #[unroll]
        for i in 0..per {
            let e = lane + plane * i;
            let mut logit = 0.0f32;
            let mut mark = neg;
            if live && e < e_count {
                logit = f32::cast_from(x[t * e_count + e]);
                if f32::is_nan(logit) || f32::is_inf(logit) {
                    record(flag, bad, (t * e_count + e) as i32, 0i32, 0i32);
                    logit = 0.0f32;
                }
                if comptime!(use_bias) {
                    // NOTE: every expert's bias is checked, masked ones included, as on the
                    // other backends; the selection below reads it as 0 then.
                    let b = bias[e];
                    if f32::is_nan(b) || f32::is_inf(b) {
                        record(flag, BAD_BIAS, e as i32, 0i32, 0i32);
                    }
                }
                let mut allowed = true;
                if comptime!(masked) {
                    allowed = mask[e] != 0;
                }
                if allowed {
                    mark = 0.0f32;
                    if logit > mx {
                        mx = logit;
                    }
                }
            }
            sc[i] = logit;
            sl[i] = mark;
        }

        // Scores: softmax over the allowed experts, or sigmoid; 0 when not allowed.
        if comptime!(!sigmoid) {
            mx = lane_max(mx, &mut red_f, plane, emulate);
        }
        let mut sum = 0.0f32;
        #[unroll]
        for i in 0..per {
            let mut s = 0.0f32;
            if sl[i] != neg {
                if comptime!(sigmoid) {
                    s = 1.0f32 / (1.0f32 + f32::exp(-sc[i]));
                } else {
                    s = f32::exp(sc[i] - mx);
                    sum += s;
                }
            }
            sc[i] = s;
        }
        if comptime!(!sigmoid) {
            sum = lane_sum(sum, &mut red_f, plane, emulate);
            #[unroll]
            for i in 0..per {
                if sl[i] != neg {
                    sc[i] = sc[i] / sum;
                }
            }
        }
        // Load, and the selection values (score + bias) of the allowed experts.
        #[unroll]
        for i in 0..per {
            ld[i] += sc[i];
            if sl[i] != neg {
                let mut v = sc[i];
                if comptime!(use_bias) {
                    let b = bias[lane + plane * i];
                    if !(f32::is_nan(b) || f32::is_inf(b)) {
                        v += b;
                    }
                }
                sl[i] = v;
            }
        }

        if comptime!(grouped) {
            keep_best_groups_plane(
                &mut sl,
                &mut red_f,
                &mut red_u,
                e_count,
                n_group as usize,
                topk_group as usize,
                plane,
                per,
                emulate,
            );
        }

        // Top-k: k rounds of a plane arg-max, ties to the lower expert index.
        let mut my_id = 0u32;
        let mut my_w = 0.0f32;
        let mut total = 0.0f32;
        for j in 0..k_count {
            let mut bv = neg;
            let mut bi = none.runtime();
            let mut bs = 0.0f32;
            #[unroll]
            for i in 0..per {
                let v = sl[i];
                // NOTE: slots ascend in expert index, so a strict `>` keeps the lowest on ties.
                if v != neg && (bi == none || v > bv) {
                    bv = v;
                    bi = (lane + plane * i) as u32;
                    bs = sc[i];
                }
            }
            let m = lane_max(bv, &mut red_f, plane, emulate);
            let w = lane_min_u(select(bi != none && bv == m, bi, none), &mut red_u, plane, emulate);
            // NOTE: exactly one lane adds a non-zero term, so the sum is that score exactly.
            let ws = lane_sum(select(bi == w, bs, 0.0f32), &mut red_f, plane, emulate);
            #[unroll]
            for i in 0..per {
                if (lane + plane * i) as u32 == w {
                    sl[i] = neg;
                    if live {
                        cnt[i] += 1u32;
                    }
                }
            }
            if lane == j {
                my_id = w;
                my_w = ws;
            }
            total += ws;
        }
        if live && lane < k_count {
            let mut wt = my_w;
            if comptime!(renormalize) {
                // NOTE: a sum of 0 only happens when every chosen score underflowed; keep the
                // zeros rather than produce NaN (as the reference does).
                if total > 0.0f32 {
                    wt /= total;
                }
            }
            ids[t * k_count + lane] = my_id as i32;
            weights[t * k_count + lane] = wt * scaling;
        }
    }

    // This cube's statistics: the planes' registers summed through shared memory.
    let width = comptime!(plane * per);
    let mut sh_l = SharedMemory::<f32>::new(comptime!(planes * plane * per));
    let mut sh_c = SharedMemory::<u32>::new(comptime!(planes * plane * per));
    #[unroll]
    for i in 0..per {
        let idx = row * width + plane * i + lane;
        sh_l[idx] = ld[i];
        sh_c[idx] = cnt[i];
    }
    sync_cube();
    let units = comptime!(plane * planes);
    let mut e = row * plane + lane;
    while e < e_count {
        let mut s = 0.0f32;
        let mut c = 0u32;
        for q in 0..planes {
            s += sh_l[q * width + e];
            c += sh_c[q * width + e];
        }
        part_load[cube * e_count + e] = s;
        part_counts[cube * e_count + e] = c as i32;
        e += units;
    }
}

/// Group-limited routing of the plane's token: each of the `n_group` contiguous groups scores
/// the sum of its two best selection values (the one best when it has one, `neg` with none);
/// the `topk_group` best groups are kept (ties to the lower group) and every other expert's
/// selection value becomes `neg`. Group `g`'s score is held by lane `g` (`n_group <= plane`,
/// `<= 32`).
#[cube]
#[allow(clippy::too_many_arguments)]
fn keep_best_groups_plane(
    sl: &mut Array<f32>,
    red_f: &mut SharedMemory<f32>,
    red_u: &mut SharedMemory<u32>,
    e_count: usize,
    n_group: usize,
    topk_group: usize,
    #[comptime] plane: usize,
    #[comptime] per: usize,
    #[comptime] emulate: bool,
) {
    let neg = f32::new(-f32::MAX);
    let lane = UNIT_POS_X as usize;
    let size = e_count / n_group;
    let mut my_gs = neg;
    for g in 0..n_group {
        // This lane's two best of the group (equal values count twice).
        let mut f1 = neg;
        let mut f2 = neg;
        #[unroll]
        for i in 0..per {
            let v = sl[i];
            if v != neg && (lane + plane * i) / size == g {
                if v > f1 {
                    f2 = f1;
                    f1 = v;
                } else if v > f2 {
                    f2 = v;
                }
            }
        }
        let m1 = lane_max(f1, red_f, plane, emulate);
        let n1 = lane_sum_u(select(f1 == m1, 1u32, 0u32), red_u, plane, emulate);
        let m2 = lane_max(select(f1 == m1, f2, f1), red_f, plane, emulate);
        // NOTE: two lanes holding the best both count: the second best is then the best.
        let second = select(n1 > 1u32, m1, m2);
        let mut score = neg;
        if m1 != neg {
            score = m1;
            if second != neg {
                score = m1 + second;
            }
        }
        if lane == g {
            my_gs = score;
        }
    }
    let none = comptime!(plane as u32);
    let mut kept = 0u32;
    for _ in 0..topk_group {
        // NOTE: `% 32` keeps the shift defined for lanes past 32, which `lane < n_group` excludes.
        let free = lane < n_group && ((kept >> (lane as u32 % 32u32)) & 1u32) == 0u32;
        let v = select(free, my_gs, neg);
        let m = lane_max(v, red_f, plane, emulate);
        let w = lane_min_u(select(free && v == m, lane as u32, none), red_u, plane, emulate);
        kept |= 1u32 << (w % 32u32);
    }
    #[unroll]
    for i in 0..per {
        let g = ((lane + plane * i) / size) as u32;
        if sl[i] != neg && ((kept >> (g % 32u32)) & 1u32) == 0u32 {
            sl[i] = neg;
        }
    }
}

/// One cube of `block` units per expert `e` (linear `CUBE_POS`): `counts[e]` and `load[e]`
/// are the sums over the `rows` rows of `part_counts [rows, E] i32` and
/// `part_load [rows, E] f32`.
#[cube(launch)]
pub fn route_stats_reduce(
    part_counts: &Array<i32>,
    part_load: &Array<f32>,
    counts: &mut Array<i32>,
    load: &mut Array<f32>,
    rows: u32,
    experts: u32,
    #[comptime] block: usize,
) {
    let e = CUBE_POS;
    let e_count = experts as usize;
    let live = e < e_count;
    let mut s = 0.0f32;
    let mut c = 0i32;
    let mut r = UNIT_POS as usize;
    while live && r < rows as usize {
        s += part_load[r * e_count + e];
        c += part_counts[r * e_count + e];
        r += block;
    }
    let s = cube_sum(s, block);
    let c = cube_sum_i32(c, block);
    if live && UNIT_POS == 0 {
        counts[e] = c;
        load[e] = s;
    }
}

/// Sum of `value` over the cube's `block` units (a power of two) through shared memory.
#[cube]
fn cube_sum_i32(value: i32, #[comptime] block: usize) -> i32 {
    let mut shared = SharedMemory::<i32>::new(block);
    let unit = UNIT_POS as usize;
    shared[unit] = value;
    sync_cube();
    let steps = comptime!(block.trailing_zeros() as usize);
    for step in 0..steps {
        let stride = block >> (step + 1);
        if unit < stride {
            shared[unit] = shared[unit] + shared[unit + stride];
        }
        sync_cube();
    }
    let total = shared[0];
    sync_cube();
    total
}
