//! Dispatch and combine: agreement with the reference, the layout invariants, and the round
//! trip permute → combine with weights summing to 1, which returns the input.

use crate::compare::{close, ctx, exact, Check};
use crate::exec::{self, CombineBufs, PermuteBufs};
use crate::gen;
use crate::strategies::{dim, experts, seed, skew, tokens, top_k};
use moekit_ops::tolerance::Tolerance;
use moekit_ops::{Backend, CombineProblem, DType, HostTensor, PermuteProblem};
use moekit_reference::ReferenceBackend;
use proptest::prelude::*;
use rand::seq::SliceRandom;
use rand::Rng;

/// One dispatch case (the dtype is replaced by the test's).
#[derive(Clone, Debug)]
pub struct PermuteCase {
    /// The problem.
    pub problem: PermuteProblem,
    /// Fraction of experts that receive no token.
    pub empty: f64,
    /// Zipf exponent of the ids.
    pub skew: f64,
    /// Data seed.
    pub seed: u64,
}

/// Dispatch cases: T 0..=40, H not a multiple of 8, E up to 256, k 1..=8, align 1 or more.
pub fn permute_cases() -> impl Strategy<Value = PermuteCase> {
    let align = prop_oneof![3 => Just(1usize), 1 => Just(2usize), 1 => Just(4usize), 1 => 3..=16usize];
    (tokens(40), dim(72), experts(), top_k(), align, 0.0f64..0.8, skew(), seed()).prop_map(
        |(t, h, e, k, align, empty, skew, seed)| {
            let problem = PermuteProblem { tokens: t, hidden: h, experts: e, k: k.min(e), align, dtype: DType::F32 };
            PermuteCase { problem, empty, skew, seed }
        },
    )
}

/// Hidden `[T, H]` and ids `[T, k]` of a case: ids distinct per token, Zipf-skewed over a
/// subset of experts so that some experts are empty.
pub fn permute_inputs(p: &PermuteProblem, c: &PermuteCase) -> (HostTensor, HostTensor) {
    let mut rng = gen::rng(c.seed);
    let hidden = gen::normal_tensor(&mut rng, p.dtype, &[p.tokens, p.hidden], 1.0);
    let mut experts: Vec<usize> = (0..p.experts).collect();
    experts.shuffle(&mut rng);
    let keep = ((p.experts as f64 * (1.0 - c.empty)).ceil() as usize).clamp(p.k, p.experts);
    let ids = gen::zipf_ids(&mut rng, p.tokens, p.k, &experts[..keep], c.skew);
    (hidden, HostTensor::from_i32(&[p.tokens, p.k], &ids))
}

fn run_permute<B: Backend>(b: &B, dtype: DType, c: &PermuteCase) -> Result<(PermuteProblem, PermuteBufs), String> {
    let p = PermuteProblem { dtype, ..c.problem.clone() };
    let (hidden, ids) = permute_inputs(&p, c);
    let got = exec::permute(b, &p, &PermuteBufs::new(&p, hidden, ids)).map_err(ctx("permute"))?;
    Ok((p, got))
}

/// Every output of dispatch on `b` equals the reference exactly (rows are copies).
///
/// # Errors
/// A mismatch report.
pub fn permute_matches_reference<B: Backend>(b: &B, dtype: DType, c: &PermuteCase) -> Check {
    let (_, got) = run_permute(b, dtype, c)?;
    let (_, want) = run_permute(&ReferenceBackend, dtype, c)?;
    exact("offsets", &want.offsets, &got.offsets)?;
    exact("row_to_token", &want.row_to_token, &got.row_to_token)?;
    exact("token_slot_to_row", &want.token_slot_to_row, &got.token_slot_to_row)?;
    exact("permuted", &want.permuted, &got.permuted)
}

/// The dispatch layout on `b` alone: offsets start at 0, are monotone, aligned and sized
/// `ceil(count/m)·m`; each segment holds its tokens in order, then zero padding rows with
/// `row_to_token = -1`; `token_slot_to_row` points at a row of the right expert holding a
/// copy of the token.
///
/// # Errors
/// The first violated invariant.
pub fn permute_invariants<B: Backend>(b: &B, dtype: DType, c: &PermuteCase) -> Check {
    let (p, got) = run_permute(b, dtype, c)?;
    let (t, h, e, k, m) = (p.tokens, p.hidden, p.experts, p.k, p.align);
    let ids = got.ids.as_i32().map_err(ctx("ids"))?;
    let off = got.offsets.as_i32().map_err(ctx("offsets"))?;
    let rtt = got.row_to_token.as_i32().map_err(ctx("row_to_token"))?;
    let tsr = got.token_slot_to_row.as_i32().map_err(ctx("token_slot_to_row"))?;
    let (x, y) = (got.hidden.to_f64_vec(), got.permuted.to_f64_vec());
    if off[0] != 0 {
        return Err(format!("offsets[0] = {}", off[0]));
    }
    for ex in 0..e {
        let members: Vec<i32> =
            (0..t).filter(|&ti| ids[ti * k..(ti + 1) * k].contains(&(ex as i32))).map(|ti| ti as i32).collect();
        let (lo, hi) = (off[ex] as usize, off[ex + 1] as usize);
        if off[ex + 1] < off[ex] || hi > rtt.len() || (hi - lo) != members.len().div_ceil(m) * m || lo % m != 0 {
            return Err(format!("expert {ex}: segment {lo}..{hi} for {} rows at align {m}", members.len()));
        }
        let pad = vec![-1; hi - lo - members.len()];
        if rtt[lo..lo + members.len()] != members[..] || rtt[lo + members.len()..hi] != pad[..] {
            return Err(format!("expert {ex}: row_to_token {:?}, expected {members:?} then padding", &rtt[lo..hi]));
        }
    }
    let end = off[e] as usize;
    if rtt[end..].iter().any(|&r| r != -1) {
        return Err(format!("rows past offsets[E] = {end} have row_to_token != -1"));
    }
    for r in 0..rtt.len() {
        let row = &y[r * h..(r + 1) * h];
        let want: Vec<f64> =
            if rtt[r] < 0 { vec![0.0; h] } else { x[rtt[r] as usize * h..(rtt[r] as usize + 1) * h].to_vec() };
        if row != &want[..] {
            return Err(format!("permuted row {r} (token {}) is not a copy", rtt[r]));
        }
    }
    for ti in 0..t {
        for j in 0..k {
            let r = tsr[ti * k + j];
            let ex = ids[ti * k + j] as usize;
            if r < off[ex] || r >= off[ex + 1] || rtt[r as usize] != ti as i32 {
                return Err(format!("token_slot_to_row[{ti}, {j}] = {r} is not token {ti}'s row in expert {ex}"));
            }
        }
    }
    Ok(())
}

/// One combine case (the dtype is replaced by the test's).
#[derive(Clone, Debug)]
pub struct CombineCase {
    /// The problem.
    pub problem: CombineProblem,
    /// Data seed.
    pub seed: u64,
}

/// Combine cases: T 0..=40, H not a multiple of 8, k 1..=8, R 1..=96 (0 with T = 0),
/// with and without `add`.
pub fn combine_cases() -> impl Strategy<Value = CombineCase> {
    (tokens(40), dim(72), top_k(), 1..=96usize, any::<bool>(), seed()).prop_map(|(t, h, k, r, add, seed)| {
        let rows = if t == 0 && r % 3 == 0 { 0 } else { r };
        CombineCase { problem: CombineProblem { tokens: t, hidden: h, k, rows, add, dtype: DType::F32 }, seed }
    })
}

/// Weighted combine on `b` equals the reference within tolerance (reduction of `k+1` terms).
///
/// # Errors
/// A mismatch report.
pub fn combine_matches_reference<B: Backend>(b: &B, dtype: DType, c: &CombineCase) -> Check {
    let p = CombineProblem { dtype, ..c.problem.clone() };
    let mut rng = gen::rng(c.seed);
    let (t, h, k, r) = (p.tokens, p.hidden, p.k, p.rows);
    let tsr: Vec<i32> = (0..t * k).map(|_| rng.gen_range(0..r.max(1)) as i32).collect();
    let x = CombineBufs {
        y: gen::normal_tensor(&mut rng, dtype, &[r, h], 1.0),
        // NOTE: routing weights are non-negative; signed ones could cancel a whole token,
        // below the tensor-wide floor of the tolerance.
        weights: HostTensor::from_f32(DType::F32, &[t, k], &gen::uniform(&mut rng, t * k, 0.01, 1.0)),
        token_slot_to_row: HostTensor::from_i32(&[t, k], &tsr),
        add: p.add.then(|| gen::normal_tensor(&mut rng, dtype, &[t, h], 1.0)),
        out: gen::poison(dtype, &[t, h]),
    };
    let want = exec::combine(&ReferenceBackend, &p, &x).map_err(ctx("reference combine"))?;
    let got = exec::combine(b, &p, &x).map_err(ctx("combine"))?;
    close("out", &want, &got, Tolerance::for_dtype(dtype, k + 1), dtype)
}

/// Permute then combine on `b` with per-token weights summing to 1 returns the input.
///
/// # Errors
/// A mismatch report.
pub fn permute_combine_round_trip<B: Backend>(b: &B, dtype: DType, c: &PermuteCase) -> Check {
    let (p, got) = run_permute(b, dtype, c)?;
    let mut rng = gen::rng(c.seed ^ 0x7c0b);
    let (t, k) = (p.tokens, p.k);
    let mut w = gen::uniform(&mut rng, t * k, 0.05, 1.0);
    for row in w.chunks_mut(k) {
        let s: f32 = row.iter().sum();
        row.iter_mut().for_each(|v| *v /= s);
    }
    let cp = CombineProblem { tokens: t, hidden: p.hidden, k, rows: p.max_rows(), add: false, dtype };
    let x = CombineBufs {
        y: got.permuted.clone(),
        weights: HostTensor::from_f32(DType::F32, &[t, k], &w),
        token_slot_to_row: got.token_slot_to_row.clone(),
        add: None,
        out: gen::poison(dtype, &[t, p.hidden]),
    };
    let out = exec::combine(b, &cp, &x).map_err(ctx("combine"))?;
    close("round trip", &got.hidden, &out, Tolerance::for_dtype(dtype, k), dtype)
}
