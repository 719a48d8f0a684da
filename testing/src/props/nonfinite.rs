//! Non-finite inputs (the contract of `moekit_ops::numerics`): NaN and ±inf planted at random
//! positions of fresh random inputs (never zeros).
//!
//! - `route` rejects a non-finite logit (given, or computed by the fused gate) or bias with
//!   `NonFinite { op: "route", what, index }`: the lowest offending index on host backends, some
//!   offending index on device backends; with `T = 0` nothing is reported.
//! - The float ops do not check: a NaN makes exactly the outputs that depend on it NaN, and
//!   every other output stays within tolerance of the NaN-free reference. Outputs that depend
//!   on an infinity are unspecified; everything else is still compared. An attention row whose
//!   visible scores are all `-inf` gives `o = NaN`, `lse = NaN`.

use super::route::{route_cases, route_inputs, RouteCase};
use crate::compare::{close_floor, ctx, dot_scale, Check};
use crate::exec::{self, AttentionBufs, CombineBufs, GroupedGemmBufs, RmsNormBufs};
use crate::gen;
use crate::strategies::seed;
use moekit_ops::tolerance::Tolerance;
use moekit_ops::{
    AttentionProblem, Backend, CombineProblem, DType, EmbeddingProblem, Error, GemmProblem, GroupedGemmProblem,
    HostTensor, RmsNormProblem, RotaryPositions, RotaryProblem, RouteProblem, SwigluProblem, TensorMeta, WeightLayout,
};
use moekit_reference::ReferenceBackend;
use proptest::prelude::*;
use rand::rngs::StdRng;
use rand::Rng;
use std::collections::BTreeSet;

/// Host backends report the lowest offending index; device backends some offending index.
fn is_host<B: Backend>(b: &B) -> bool {
    matches!(b.name(), "reference" | "cpu")
}

/// A non-finite value: NaN, or (when `inf`) also ±inf.
fn bad_value(rng: &mut StdRng, inf: bool) -> f32 {
    match rng.gen_range(0..if inf { 3 } else { 1 }) {
        0 => f32::NAN,
        1 => f32::INFINITY,
        _ => f32::NEG_INFINITY,
    }
}

fn with(t: &HostTensor, at: &[(usize, f32)]) -> HostTensor {
    let mut v = t.to_f32_vec();
    for &(i, x) in at {
        v[i] = x;
    }
    HostTensor::from_f32(t.dtype(), t.shape(), &v)
}

// ---- route ----------------------------------------------------------------------------------

/// A routing case and where to plant: `0` the logits (hidden or gate when fused), `1` the
/// bias, `2` both; the planting seed.
pub fn route_nonfinite_cases() -> impl Strategy<Value = (RouteCase, u8, u64)> {
    (route_cases(), 0..3u8, seed())
}

/// `route` with non-finite logits, fused-gate inputs or bias: the typed error of the contract,
/// or (with `T = 0`) success with zero counts and load; afterwards the backend routes a clean
/// batch again (a device record was cleared).
///
/// # Errors
/// A report of the mismatch.
pub fn route_rejects_non_finite<B: Backend>(b: &B, dtype: DType, c: &(RouteCase, u8, u64)) -> Check {
    let (case, place, plant_seed) = c;
    let p = RouteProblem { dtype, ..case.problem.clone() };
    let clean = route_inputs(&p, case);
    let mut x = clean.clone();
    let mut rng = gen::rng(*plant_seed);
    let (t, e) = (p.tokens, p.experts);
    let want_logits = *place != 1 || !p.use_bias;
    let mut logits_bad = BTreeSet::new();
    let mut bias_bad = BTreeSet::new();
    if want_logits {
        let n = rng.gen_range(1..=3);
        match (p.hidden, &x.gate) {
            (Some(h), Some(gate)) => {
                let mut at_x = Vec::new();
                let mut at_g = Vec::new();
                for _ in 0..n {
                    if t > 0 && rng.gen_bool(0.5) {
                        let (row, col) = (rng.gen_range(0..t), rng.gen_range(0..h));
                        at_x.push((row * h + col, bad_value(&mut rng, true)));
                        logits_bad.extend((0..e).map(|ee| row * e + ee));
                    } else {
                        let (row, col) = (rng.gen_range(0..h), rng.gen_range(0..e));
                        at_g.push((row * e + col, bad_value(&mut rng, true)));
                        logits_bad.extend((0..t).map(|tt| tt * e + col));
                    }
                }
                x.logits = with(&x.logits, &at_x);
                x.gate = Some(with(gate, &at_g));
            }
            _ if t > 0 => {
                let at: Vec<(usize, f32)> =
                    (0..n).map(|_| (rng.gen_range(0..t * e), bad_value(&mut rng, true))).collect();
                logits_bad.extend(at.iter().map(|a| a.0));
                x.logits = with(&x.logits, &at);
            }
            _ => {}
        }
    }
    if *place != 0 {
        if let Some(bias) = &x.bias {
            let at: Vec<(usize, f32)> =
                (0..rng.gen_range(1..=2)).map(|_| (rng.gen_range(0..e), bad_value(&mut rng, true))).collect();
            bias_bad.extend(at.iter().map(|a| a.0));
            x.bias = Some(with(bias, &at));
        }
    }
    let planted = !logits_bad.is_empty() || !bias_bad.is_empty() || x.logits != clean.logits || x.gate != clean.gate;
    let got = exec::route(b, &p, &x);
    if t == 0 {
        let got = got.map_err(ctx("route with T = 0 and non-finite inputs"))?;
        let zeros = |v: &HostTensor| v.to_f64_vec().iter().all(|&x| x == 0.0);
        if !zeros(&got.counts) || !zeros(&got.load) {
            return Err(format!("T = 0: counts {:?}, load {:?}, expected zeros", got.counts, got.load));
        }
        return Ok(());
    }
    if !planted {
        return Err("nothing was planted".into());
    }
    let host = is_host(b);
    match got {
        Ok(_) => return Err(format!("route accepted non-finite inputs (logits {logits_bad:?}, bias {bias_bad:?})")),
        Err(Error::NonFinite { op: "route", what, index }) => {
            let set = match what {
                "logits" => &logits_bad,
                "bias" if host && !logits_bad.is_empty() => {
                    return Err(format!("host backend named the bias {index} before the logits {logits_bad:?}"))
                }
                "bias" => &bias_bad,
                other => return Err(format!("NonFinite names `{other}`, expected logits or bias")),
            };
            if host && set.first() != Some(&index) {
                return Err(format!("{what} index {index}, expected the lowest of {set:?}"));
            }
            if !set.contains(&index) {
                return Err(format!("{what} index {index} is not an offending one ({set:?})"));
            }
        }
        Err(other) => return Err(format!("expected NonFinite {{ route }}, got {other}")),
    }
    // A clean call afterwards succeeds (the device record was reported and cleared).
    exec::route(b, &p, &clean).map(|_| ()).map_err(ctx("clean route after the rejected one"))
}

// ---- float ops --------------------------------------------------------------------------------

/// Which op a propagation case exercises.
#[derive(Clone, Copy, Debug)]
pub enum FloatOp {
    /// `gemm`.
    Gemm,
    /// `grouped_gemm`, contiguous layout.
    GroupedGemm,
    /// `rms_norm` (with or without the fused residual).
    RmsNorm,
    /// `swiglu`.
    Swiglu,
    /// `rotary` (1-D positions).
    Rotary,
    /// `embedding`.
    Embedding,
    /// `unpermute_combine`.
    Combine,
}

/// A propagation case: the op, whether ±inf is planted too, and the data seed.
pub fn propagation_cases() -> impl Strategy<Value = (FloatOp, bool, u64)> {
    let op = prop_oneof![
        Just(FloatOp::Gemm),
        Just(FloatOp::GroupedGemm),
        Just(FloatOp::RmsNorm),
        Just(FloatOp::Swiglu),
        Just(FloatOp::Rotary),
        Just(FloatOp::Embedding),
        Just(FloatOp::Combine),
    ];
    (op, any::<bool>(), seed())
}

/// Per output element: what the contract says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Want {
    /// Within tolerance of the NaN-free reference.
    Clean,
    /// NaN.
    Nan,
    /// Depends on an infinity (or is explicitly unspecified): not checked.
    Any,
}

/// Marks an output element: NaN wins over clean, unspecified over both.
fn mark(want: &mut [Want], i: usize, w: Want) {
    want[i] = match (want[i], w) {
        (Want::Any, _) | (_, Want::Any) => Want::Any,
        (Want::Nan, _) | (_, Want::Nan) => Want::Nan,
        _ => Want::Clean,
    };
}

fn dep(v: f32) -> Want {
    if v.is_nan() {
        Want::Nan
    } else {
        Want::Any
    }
}

/// `got` against the contract: NaN exactly where `want` says NaN, the NaN-free reference
/// (within `tol`) where it says clean.
fn check_output(what: &str, clean: &HostTensor, got: &HostTensor, want: &[Want], tol: Tolerance, floor: f64) -> Check {
    let (e, a) = (clean.to_f64_vec(), got.to_f64_vec());
    if a.len() != want.len() {
        return Err(format!("{what}: {} elements, expected {}", a.len(), want.len()));
    }
    let (mut ce, mut ca) = (Vec::new(), Vec::new());
    for (i, w) in want.iter().enumerate() {
        match w {
            Want::Nan if !a[i].is_nan() => return Err(format!("{what}[{i}] = {}, expected NaN", a[i])),
            Want::Clean if a[i].is_nan() => {
                return Err(format!("{what}[{i}] is NaN but depends on no NaN (clean value {})", e[i]))
            }
            Want::Clean => {
                ce.push(e[i]);
                ca.push(a[i]);
            }
            _ => {}
        }
    }
    let n = ce.len();
    close_floor(
        what,
        &HostTensor::from_f64(DType::F32, &[n], &ce),
        &HostTensor::from_f64(DType::F32, &[n], &ca),
        tol,
        DType::F32,
        floor,
    )
}

/// `n` (1..=3) distinct positions of a tensor of `len` elements with non-finite values.
fn plants(rng: &mut StdRng, len: usize, inf: bool) -> Vec<(usize, f32)> {
    let mut at = BTreeSet::new();
    let n = rng.gen_range(1..=3usize).min(len);
    while at.len() < n {
        at.insert(rng.gen_range(0..len));
    }
    at.into_iter().map(|i| (i, bad_value(rng, inf))).collect()
}

/// Which input gets the plants: one of `n` inputs.
fn pick(rng: &mut StdRng, n: usize) -> usize {
    rng.gen_range(0..n)
}

/// The float ops other than attention propagate NaN exactly along their dependencies.
///
/// # Errors
/// A report of the mismatch.
pub fn float_ops_propagate_non_finite<B: Backend>(b: &B, dtype: DType, c: &(FloatOp, bool, u64)) -> Check {
    let (op, inf, seed) = *c;
    let mut rng = gen::rng(seed);
    let r = &ReferenceBackend;
    match op {
        FloatOp::Gemm => {
            let (m, k, n) = (rng.gen_range(1..=20), rng.gen_range(1..=40), rng.gen_range(1..=20));
            let bt = rng.gen_bool(0.5);
            let p = GemmProblem { m, k, n, b_transposed: bt, dtype };
            let a = gen::normal_tensor(&mut rng, dtype, &[m, k], 1.0);
            let bm = gen::normal_tensor(&mut rng, dtype, &(if bt { [n, k] } else { [k, n] }), 1.0);
            let cz = gen::poison(dtype, &[m, n]);
            let clean = exec::gemm(r, &p, &a, &bm, &cz).map_err(ctx("reference gemm"))?;
            let mut want = vec![Want::Clean; m * n];
            let (mut a2, mut b2) = (a.clone(), bm.clone());
            if pick(&mut rng, 2) == 0 {
                let at = plants(&mut rng, m * k, inf);
                for &(i, v) in &at {
                    (0..n).for_each(|j| mark(&mut want, (i / k) * n + j, dep(v)));
                }
                a2 = with(&a, &at);
            } else {
                let at = plants(&mut rng, k * n, inf);
                for &(i, v) in &at {
                    let col = if bt { i / k } else { i % n };
                    (0..m).for_each(|row| mark(&mut want, row * n + col, dep(v)));
                }
                b2 = with(&bm, &at);
            }
            let got = exec::gemm(b, &p, &a2, &b2, &cz).map_err(ctx("gemm"))?;
            check_output("c", &clean, &got, &want, Tolerance::for_dtype(dtype, k), dot_scale(&a, &bm, k))
        }
        FloatOp::GroupedGemm => {
            let e = rng.gen_range(1..=5usize);
            let (kd, nd) = (rng.gen_range(1..=32), rng.gen_range(1..=24));
            let total = rng.gen_range(0..=24);
            let counts = gen::skewed_counts(&mut rng, e, total, 1.0);
            let offsets = gen::offsets_from_counts(&counts, 1);
            let used = offsets[e] as usize;
            let rows = used + rng.gen_range(0..=3);
            let mut p = GroupedGemmProblem::contiguous(rows, e, kd, nd, dtype);
            if rng.gen_bool(0.5) {
                p.weight_layout = WeightLayout::NK;
            }
            let x = gen::normal_tensor(&mut rng, dtype, &p.x_shape(), 1.0);
            let w = gen::normal_tensor(&mut rng, dtype, &p.w_shape(), 1.0);
            let bufs = GroupedGemmBufs {
                x: x.clone(),
                w: w.clone(),
                group: HostTensor::from_i32(&[e + 1], &offsets),
                row_to_token: None,
                row_scale: None,
                y: gen::poison(dtype, &p.y_shape()),
            };
            let clean = exec::grouped_gemm(r, &p, &bufs).map_err(ctx("reference grouped_gemm"))?;
            let mut want = vec![Want::Clean; rows * nd];
            let expert_of =
                |row: usize| (0..e).find(|&ee| offsets[ee] as usize <= row && row < offsets[ee + 1] as usize);
            let mut bad = bufs.clone();
            if rows > 0 && pick(&mut rng, 2) == 0 {
                let at = plants(&mut rng, rows * kd, inf);
                for &(i, v) in &at {
                    let row = i / kd;
                    // NOTE: rows outside every expert stay 0 whatever x holds.
                    if expert_of(row).is_some() {
                        (0..nd).for_each(|j| mark(&mut want, row * nd + j, dep(v)));
                    }
                }
                bad.x = with(&x, &at);
            } else {
                let at = plants(&mut rng, e * kd * nd, inf);
                for &(i, v) in &at {
                    let (ee, rest) = (i / (kd * nd), i % (kd * nd));
                    let col = if p.weight_layout == WeightLayout::NK { rest / kd } else { rest % nd };
                    for row in offsets[ee] as usize..offsets[ee + 1] as usize {
                        mark(&mut want, row * nd + col, dep(v));
                    }
                }
                bad.w = with(&w, &at);
            }
            let got = exec::grouped_gemm(b, &p, &bad).map_err(ctx("grouped_gemm"))?;
            check_output("y", &clean, &got, &want, Tolerance::for_dtype(dtype, kd), dot_scale(&x, &w, kd))
        }
        FloatOp::RmsNorm => {
            let (rows, h) = (rng.gen_range(1..=8), rng.gen_range(1..=64));
            let residual = rng.gen_bool(0.5);
            let p = RmsNormProblem { rows, hidden: h, eps: 1e-6, residual, dtype };
            let bufs = RmsNormBufs {
                x: gen::normal_tensor(&mut rng, dtype, &[rows, h], 1.0),
                weight: gen::normal_tensor(&mut rng, dtype, &[h], 1.0),
                residual: residual.then(|| gen::normal_tensor(&mut rng, dtype, &[rows, h], 1.0)),
                y: gen::poison(dtype, &[rows, h]),
                residual_out: residual.then(|| gen::poison(dtype, &[rows, h])),
            };
            let (clean_y, clean_r) = exec::rms_norm(r, &p, &bufs).map_err(ctx("reference rms_norm"))?;
            let mut want_y = vec![Want::Clean; rows * h];
            let mut want_r = vec![Want::Clean; rows * h];
            let mut bad = bufs.clone();
            match pick(&mut rng, if residual { 3 } else { 2 }) {
                0 => {
                    let at = plants(&mut rng, h, inf);
                    for &(j, v) in &at {
                        (0..rows).for_each(|row| mark(&mut want_y, row * h + j, dep(v)));
                    }
                    bad.weight = with(&bufs.weight, &at);
                }
                which => {
                    let at = plants(&mut rng, rows * h, inf);
                    for &(i, v) in &at {
                        let row = i / h;
                        (0..h).for_each(|j| mark(&mut want_y, row * h + j, dep(v)));
                        mark(&mut want_r, i, dep(v));
                    }
                    if which == 1 {
                        bad.x = with(&bufs.x, &at);
                    } else {
                        bad.residual = bufs.residual.as_ref().map(|t| with(t, &at));
                    }
                }
            }
            let (y, res_out) = exec::rms_norm(b, &p, &bad).map_err(ctx("rms_norm"))?;
            let tol = Tolerance::for_dtype(dtype, h);
            check_output("y", &clean_y, &y, &want_y, tol, 0.0)?;
            match (clean_r, res_out) {
                (Some(c), Some(g)) => {
                    check_output("residual_out", &c, &g, &want_r, Tolerance::for_dtype(dtype, 1), 0.0)
                }
                _ => Ok(()),
            }
        }
        FloatOp::Swiglu => {
            let (rows, i_dim) = (rng.gen_range(1..=8), rng.gen_range(1..=40));
            let p = SwigluProblem { rows, inter: i_dim, dtype };
            let x = gen::normal_tensor(&mut rng, dtype, &[rows, 2 * i_dim], 2.0);
            let y0 = gen::poison(dtype, &[rows, i_dim]);
            let clean = exec::swiglu(r, &p, &x, &y0).map_err(ctx("reference swiglu"))?;
            let at = plants(&mut rng, rows * 2 * i_dim, inf);
            let mut want = vec![Want::Clean; rows * i_dim];
            for &(i, v) in &at {
                let (row, col) = (i / (2 * i_dim), i % (2 * i_dim));
                mark(&mut want, row * i_dim + col % i_dim, dep(v));
            }
            let got = exec::swiglu(b, &p, &with(&x, &at), &y0).map_err(ctx("swiglu"))?;
            check_output("y", &clean, &got, &want, Tolerance::for_dtype(dtype, 4), 0.0)
        }
        FloatOp::Rotary => {
            let (t, heads, d) = (rng.gen_range(1..=6), rng.gen_range(1..=3), 2 * rng.gen_range(1..=16));
            let p = RotaryProblem {
                tokens: t,
                heads,
                head_dim: d,
                theta: 10000.0,
                positions: RotaryPositions::OneD,
                dtype,
            };
            let x = gen::normal_tensor(&mut rng, dtype, &[t, heads, d], 1.0);
            let pos: Vec<i32> = (0..t).map(|_| rng.gen_range(0..=4096)).collect();
            let pos = HostTensor::from_i32(&[t], &pos);
            let o0 = gen::poison(dtype, &[t, heads, d]);
            let clean = exec::rotary(r, &p, &x, &pos, &o0).map_err(ctx("reference rotary"))?;
            let at = plants(&mut rng, t * heads * d, inf);
            let mut want = vec![Want::Clean; t * heads * d];
            for &(i, v) in &at {
                let (base, f) = (i - i % d, i % d);
                let partner = if f < d / 2 { f + d / 2 } else { f - d / 2 };
                mark(&mut want, i, dep(v));
                mark(&mut want, base + partner, dep(v));
            }
            let got = exec::rotary(b, &p, &with(&x, &at), &pos, &o0).map_err(ctx("rotary"))?;
            // NOTE: as the rotary property: the angle `pos · inv_freq` is formed in f32 on
            // some backends, an absolute error of a few ulp of the largest position.
            let angle = 8.0 * 4096.0 * DType::F32.epsilon();
            let tol = Tolerance { rel: Tolerance::for_dtype(dtype, 2).rel + angle };
            check_output("out", &clean, &got, &want, tol, 0.0)
        }
        FloatOp::Embedding => {
            let (t, v, h) = (rng.gen_range(1..=10), rng.gen_range(1..=16), rng.gen_range(1..=32));
            let p = EmbeddingProblem { tokens: t, vocab: v, hidden: h, dtype };
            let table = gen::normal_tensor(&mut rng, dtype, &[v, h], 1.0);
            let ids: Vec<i32> = (0..t).map(|_| rng.gen_range(0..v as i32)).collect();
            let ids_t = HostTensor::from_i32(&[t], &ids);
            let o0 = gen::poison(dtype, &[t, h]);
            let clean = exec::embedding(r, &p, &table, &ids_t, &o0).map_err(ctx("reference embedding"))?;
            let at = plants(&mut rng, v * h, inf);
            let mut want = vec![Want::Clean; t * h];
            for &(i, val) in &at {
                let (row, col) = (i / h, i % h);
                for (tok, _) in ids.iter().enumerate().filter(|&(_, &id)| id as usize == row) {
                    mark(&mut want, tok * h + col, dep(val));
                }
            }
            let got = exec::embedding(b, &p, &with(&table, &at), &ids_t, &o0).map_err(ctx("embedding"))?;
            check_output("out", &clean, &got, &want, Tolerance::for_dtype(dtype, 1), 0.0)
        }
        FloatOp::Combine => {
            let (t, k, h) = (rng.gen_range(1..=8), rng.gen_range(1..=3), rng.gen_range(1..=32));
            let rows = t * k + rng.gen_range(0..=4);
            let add = rng.gen_bool(0.5);
            let p = CombineProblem { tokens: t, hidden: h, k, rows, add, dtype };
            let tsr: Vec<i32> = (0..t * k).map(|_| rng.gen_range(0..rows as i32)).collect();
            let bufs = CombineBufs {
                y: gen::normal_tensor(&mut rng, dtype, &[rows, h], 1.0),
                weights: HostTensor::from_f32(DType::F32, &[t, k], &gen::uniform(&mut rng, t * k, 0.1, 1.0)),
                token_slot_to_row: HostTensor::from_i32(&[t, k], &tsr),
                add: add.then(|| gen::normal_tensor(&mut rng, dtype, &[t, h], 1.0)),
                out: gen::poison(dtype, &[t, h]),
            };
            let clean = exec::combine(r, &p, &bufs).map_err(ctx("reference unpermute_combine"))?;
            let mut want = vec![Want::Clean; t * h];
            let mut bad = bufs.clone();
            match pick(&mut rng, if add { 3 } else { 2 }) {
                0 => {
                    let at = plants(&mut rng, rows * h, inf);
                    for &(i, v) in &at {
                        let (row, col) = (i / h, i % h);
                        for s in (0..t * k).filter(|&s| tsr[s] as usize == row) {
                            mark(&mut want, (s / k) * h + col, dep(v));
                        }
                    }
                    bad.y = with(&bufs.y, &at);
                }
                1 => {
                    let at = plants(&mut rng, t * k, inf);
                    for &(s, v) in &at {
                        (0..h).for_each(|col| mark(&mut want, (s / k) * h + col, dep(v)));
                    }
                    bad.weights = with(&bufs.weights, &at);
                }
                _ => {
                    let at = plants(&mut rng, t * h, inf);
                    for &(i, v) in &at {
                        mark(&mut want, i, dep(v));
                    }
                    bad.add = bufs.add.as_ref().map(|a| with(a, &at));
                }
            }
            let got = exec::combine(b, &p, &bad).map_err(ctx("unpermute_combine"))?;
            check_output("out", &clean, &got, &want, Tolerance::for_dtype(dtype, k + 1), 0.0)
        }
    }
}

// ---- attention --------------------------------------------------------------------------------

/// An attention case (from the attention property's strategy), whether ±inf is planted too,
/// and the planting seed.
pub fn attention_nonfinite_cases() -> impl Strategy<Value = (super::attention::AttentionCase, bool, u64)> {
    (super::attention::attention_cases(), any::<bool>(), seed())
        .prop_filter("needs a query row", |(c, _, _)| c.problem.total_q() > 0)
}

/// Attention with NaN/±inf in q, k or v, or with a row whose visible scores are all `-inf`:
/// NaN exactly where the contract says, the NaN-free reference elsewhere.
///
/// # Errors
/// A report of the mismatch.
pub fn attention_propagates_non_finite<B: Backend>(
    b: &B,
    dtype: DType,
    c: &(super::attention::AttentionCase, bool, u64),
) -> Check {
    let (case, inf, plant_seed) = c;
    let p = AttentionProblem { dtype, ..case.problem.clone() };
    let mut x: AttentionBufs = super::attention::attention_inputs(&p, case.seed);
    let mut rng = gen::rng(*plant_seed);
    let (tq, tk, hq, hkv, d) = (p.total_q(), p.total_k(), p.heads_q, p.heads_kv, p.head_dim);
    let group = hq / hkv;
    let seq_of_q = |t: usize| (0..p.batch()).find(|&bb| p.cu_seqlens_q[bb] <= t && t < p.cu_seqlens_q[bb + 1]);
    let seq_of_k = |j: usize| (0..p.batch()).find(|&bb| p.cu_seqlens_k[bb] <= j && j < p.cu_seqlens_k[bb + 1]);
    let visible = |bb: usize, i: usize, j: usize| {
        let (lo, hi) = p.key_range(bb, i);
        lo <= j && j < hi && p.allowed(bb, i, j)
    };
    let mut want_o = vec![Want::Clean; tq * hq * d];
    let mut want_l = vec![Want::Clean; hq * tq];
    let mark_row = |wo: &mut [Want], wl: &mut [Want], t: usize, h: usize, w: Want, lse: bool| {
        (0..d).for_each(|cc| mark(wo, (t * hq + h) * d + cc, w));
        if lse {
            mark(wl, h * tq + t, w);
        }
    };

    // The all -inf row first: it changes k (finite) in the clean inputs too.
    let mut q_bad = x.q.to_f32_vec();
    let (mut k_bad, mut v_bad) = (x.k.to_f32_vec(), x.v.to_f32_vec());
    let mode = rng.gen_range(0..4);
    if mode == 3 && p.softcap.is_none() {
        let t = rng.gen_range(0..tq);
        let bb = seq_of_q(t).ok_or("query row in no sequence")?;
        let (h, cc) = (rng.gen_range(0..hq), rng.gen_range(0..d));
        let g = h / group;
        let mut k = x.k.to_f32_vec();
        for j in p.cu_seqlens_k[bb]..p.cu_seqlens_k[bb + 1] {
            let at = (j * hkv + g) * d + cc;
            k[at] = k[at].abs() + 0.5;
        }
        x.k = gen::tensor(dtype, x.k.shape(), &k);
        k_bad = x.k.to_f32_vec();
        q_bad[(t * hq + h) * d + cc] = f32::NEG_INFINITY;
        mark_row(&mut want_o, &mut want_l, t, h, Want::Nan, true);
    } else {
        for _ in 0..rng.gen_range(1..=2) {
            let v = bad_value(&mut rng, *inf);
            let w = dep(v);
            match rng.gen_range(0..3) {
                0 => {
                    let (t, h, cc) = (rng.gen_range(0..tq), rng.gen_range(0..hq), rng.gen_range(0..d));
                    q_bad[(t * hq + h) * d + cc] = v;
                    mark_row(&mut want_o, &mut want_l, t, h, w, true);
                }
                which if tk > 0 => {
                    let (j, g) = (rng.gen_range(0..tk), rng.gen_range(0..hkv));
                    let target = if which == 1 { &mut k_bad } else { &mut v_bad };
                    // NaN in the whole row; an infinity in one element.
                    if v.is_nan() {
                        target[(j * hkv + g) * d..(j * hkv + g + 1) * d].fill(v);
                    } else {
                        target[(j * hkv + g) * d + rng.gen_range(0..d)] = v;
                    }
                    let bb = seq_of_k(j).ok_or("key row in no sequence")?;
                    let jl = j - p.cu_seqlens_k[bb];
                    let (lq, _) = p.seq_lens(bb);
                    for il in 0..lq {
                        let t = p.cu_seqlens_q[bb] + il;
                        for h in g * group..(g + 1) * group {
                            // NOTE: v never reaches lse; rows that cannot see the key are
                            // unspecified (flash kernels multiply a masked p of 0 by v).
                            let sees = if visible(bb, il, jl) { w } else { Want::Any };
                            mark_row(&mut want_o, &mut want_l, t, h, sees, which == 1);
                        }
                    }
                }
                _ => {}
            }
        }
    }
    let clean_x = x.clone();
    let bad = AttentionBufs {
        q: gen::tensor(dtype, x.q.shape(), &q_bad),
        k: gen::tensor(dtype, x.k.shape(), &k_bad),
        v: gen::tensor(dtype, x.v.shape(), &v_bad),
        ..x
    };
    let (clean_o, clean_l) = exec::attention(&ReferenceBackend, &p, &clean_x).map_err(ctx("reference attention"))?;
    let (o, l) = exec::attention(b, &p, &bad).map_err(ctx("attention"))?;
    let longest = (0..p.batch()).map(|bb| p.seq_lens(bb).1).max().unwrap_or(0);
    let len = 4 * (longest + d);
    let (tol_o, tol_l) = (Tolerance::for_dtype(dtype, len), Tolerance::for_dtype(DType::F32, len).times(4.0));
    check_output("o", &clean_o, &o, &want_o, tol_o, 0.0)?;
    let score = p.scale as f64 * dot_scale(&clean_x.q, &clean_x.k, d);
    check_output("lse", &clean_l, &l, &want_l, tol_l, score)
}
