//! Seeded random data. Every generator takes an explicit RNG made from a case's seed, so a
//! failing case printed by proptest reproduces exactly.
//!
//! Data is never all zeros (a kernel that writes nothing would pass against zeros). Routing
//! logits sit on a coarse grid so that ties are exact and non-ties are far apart compared with
//! the f32-versus-f64 rounding of the scores.

use moekit_ops::{ColumnRanges, DType, HostTensor};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_distr::{Distribution, StandardNormal, Zipf};

/// Grid step of routing logits: multiples of 1/8 are exact in f32, f16 and bf16 up to ±8.
pub const LOGIT_STEP: f32 = 0.125;

/// The RNG of a case.
pub fn rng(seed: u64) -> StdRng {
    StdRng::seed_from_u64(seed)
}

/// `n` standard-normal values times `scale`.
pub fn normal(rng: &mut StdRng, n: usize, scale: f32) -> Vec<f32> {
    (0..n)
        .map(|_| {
            let v: f32 = StandardNormal.sample(rng);
            v * scale
        })
        .collect()
}

/// `n` values uniform in `[lo, hi)`.
pub fn uniform(rng: &mut StdRng, n: usize, lo: f32, hi: f32) -> Vec<f32> {
    (0..n).map(|_| rng.gen_range(lo..hi)).collect()
}

/// `n` multiples of `step` in `[-max, max]` (exact in every float dtype for small values).
pub fn grid(rng: &mut StdRng, n: usize, step: f32, max: f32) -> Vec<f32> {
    let m = (max / step).floor() as i32;
    (0..n).map(|_| rng.gen_range(-m..=m) as f32 * step).collect()
}

/// A float tensor of `dtype` from f32 values (rounded once to the dtype).
pub fn tensor(dtype: DType, shape: &[usize], values: &[f32]) -> HostTensor {
    HostTensor::from_f32(dtype, shape, values)
}

/// A normal tensor `[shape]` of `dtype`.
pub fn normal_tensor(rng: &mut StdRng, dtype: DType, shape: &[usize], scale: f32) -> HostTensor {
    let n = shape.iter().product();
    tensor(dtype, shape, &normal(rng, n, scale))
}

/// Zipf popularity of `experts` experts, shuffled so the hot expert is not always expert 0:
/// `pop[e]` is the rank weight `1 / rank^s`.
pub fn zipf_popularity(rng: &mut StdRng, experts: usize, s: f64) -> Vec<f64> {
    let mut ranks: Vec<usize> = (1..=experts).collect();
    ranks.shuffle(rng);
    ranks.iter().map(|&r| 1.0 / (r as f64).powf(s)).collect()
}

/// Routing logits `[tokens, experts]` on the [`LOGIT_STEP`] grid: per-token noise plus a
/// per-expert offset `log(popularity)` (Zipf-skewed with exponent `skew`, 0 for uniform),
/// clamped to `[-8, 8]`. A fraction of tokens copy one logit onto another expert to force
/// exact ties.
pub fn routing_logits(rng: &mut StdRng, tokens: usize, experts: usize, skew: f64) -> Vec<f32> {
    let pop = zipf_popularity(rng, experts, skew);
    let mut out = Vec::with_capacity(tokens * experts);
    for _ in 0..tokens {
        let mut row: Vec<f32> = pop
            .iter()
            .map(|&p| {
                let noise = rng.gen_range(-16..=16) as f32 * LOGIT_STEP;
                let v = noise + (p.ln() as f32 / LOGIT_STEP).round() * LOGIT_STEP;
                v.clamp(-8.0, 8.0)
            })
            .collect();
        if experts > 1 && rng.gen_bool(0.3) {
            let (a, b) = (rng.gen_range(0..experts), rng.gen_range(0..experts));
            row[b] = row[a];
        }
        out.extend(row);
    }
    out
}

/// An expert mask `[experts]` with at least `min_allowed` experts allowed.
pub fn expert_mask(rng: &mut StdRng, experts: usize, min_allowed: usize) -> Vec<bool> {
    let p_keep = rng.gen_range(0.3..1.0);
    let mut mask: Vec<bool> = (0..experts).map(|_| rng.gen_bool(p_keep)).collect();
    let mut order: Vec<usize> = (0..experts).collect();
    order.shuffle(rng);
    for &e in &order {
        if mask.iter().filter(|&&a| a).count() >= min_allowed.min(experts) {
            break;
        }
        mask[e] = true;
    }
    mask
}

/// Expert ids `[tokens, k]`: distinct per token, drawn from the `allowed` experts with a
/// Zipf(`skew`) preference over a shuffled ranking, so some experts are hot and many are empty.
/// Needs `k <= allowed.len()`.
pub fn zipf_ids(rng: &mut StdRng, tokens: usize, k: usize, allowed: &[usize], skew: f64) -> Vec<i32> {
    let mut ranked = allowed.to_vec();
    ranked.shuffle(rng);
    let n = ranked.len();
    let zipf = Zipf::new(n as u64, skew.max(1e-3)).ok();
    let mut out = Vec::with_capacity(tokens * k);
    for _ in 0..tokens {
        let mut chosen: Vec<usize> = Vec::with_capacity(k);
        let mut tries = 0;
        while chosen.len() < k && tries < 8 * k {
            tries += 1;
            let r = match &zipf {
                Some(z) => (z.sample(rng) as usize).clamp(1, n) - 1,
                None => rng.gen_range(0..n),
            };
            if !chosen.contains(&ranked[r]) {
                chosen.push(ranked[r]);
            }
        }
        // NOTE: rejection sampling can stall when k is close to the allowed count under heavy
        // skew; fill up from a shuffled remainder so every token still gets k distinct ids.
        if chosen.len() < k {
            let mut rest: Vec<usize> = ranked.iter().copied().filter(|e| !chosen.contains(e)).collect();
            rest.shuffle(rng);
            chosen.extend(rest.into_iter().take(k - chosen.len()));
        }
        out.extend(chosen.iter().map(|&e| e as i32));
    }
    out
}

/// Per-expert row counts of `total` rows over `experts` experts, Zipf-skewed, with some
/// experts forced empty.
pub fn skewed_counts(rng: &mut StdRng, experts: usize, total: usize, skew: f64) -> Vec<usize> {
    let mut pop = zipf_popularity(rng, experts, skew);
    for p in pop.iter_mut() {
        if rng.gen_bool(0.25) {
            *p = 0.0;
        }
    }
    if pop.iter().all(|&p| p == 0.0) {
        pop[rng.gen_range(0..experts)] = 1.0;
    }
    let sum: f64 = pop.iter().sum();
    let mut counts = vec![0usize; experts];
    for _ in 0..total {
        let mut x = rng.gen_range(0.0..sum);
        let mut e = 0;
        while e + 1 < experts && x >= pop[e] {
            x -= pop[e];
            e += 1;
        }
        counts[e] += 1;
    }
    counts
}

/// `[E+1]` offsets from counts, each segment rounded up to a multiple of `align`.
pub fn offsets_from_counts(counts: &[usize], align: usize) -> Vec<i32> {
    let mut off = Vec::with_capacity(counts.len() + 1);
    let mut acc = 0usize;
    off.push(0);
    for &c in counts {
        acc += c.div_ceil(align.max(1)) * align.max(1);
        off.push(acc as i32);
    }
    off
}

/// Sequence lengths of a varlen batch: a mix of empty, short and long sequences.
pub fn seq_lens(rng: &mut StdRng, batch: usize, short_max: usize, long_max: usize) -> Vec<usize> {
    (0..batch)
        .map(|_| match rng.gen_range(0..10) {
            0 => 0,
            1 | 2 => long_max,
            3 => 1,
            _ => rng.gen_range(1..=short_max.max(1)),
        })
        .collect()
}

/// Prefix sums `[B+1]` from lengths.
pub fn cumsum(lens: &[usize]) -> Vec<usize> {
    let mut cu = Vec::with_capacity(lens.len() + 1);
    cu.push(0);
    for &l in lens {
        cu.push(cu.last().copied().unwrap_or(0) + l);
    }
    cu
}

/// A FlashMask pattern. Every pattern leaves the diagonal visible, so with equal query and key
/// lengths no query row is ever empty.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MaskPattern {
    /// Causal (bottom-right aligned), written as column ranges.
    Causal,
    /// Causal inside documents, nothing across documents.
    Document,
    /// Bidirectional over a prefix, causal after it.
    PrefixLm,
    /// Bidirectional inside blocks, causal across blocks (next-frame-and-scale prediction).
    Blocks,
}

/// Column ranges `[Tk]` for `pattern` over a packed batch, documents and blocks of 1 to 12
/// keys. Sequences must have `Lq == Lk` except for [`MaskPattern::Causal`], which is
/// bottom-right aligned for any `Lk >= Lq`.
pub fn column_ranges(rng: &mut StdRng, pattern: MaskPattern, cu_q: &[usize], cu_k: &[usize]) -> ColumnRanges {
    column_ranges_of(rng, pattern, cu_q, cu_k, 12)
}

/// [`column_ranges`] with documents and blocks of 1 to `max_segment` keys (long ones give the
/// GPU kernels whole key tiles that the ranges mask or leave clear).
pub fn column_ranges_of(
    rng: &mut StdRng,
    pattern: MaskPattern,
    cu_q: &[usize],
    cu_k: &[usize],
    max_segment: usize,
) -> ColumnRanges {
    let tk = *cu_k.last().unwrap_or(&0);
    let mut c = ColumnRanges { lts: vec![0; tk], lte: vec![0; tk], uts: vec![0; tk], ute: vec![0; tk] };
    for b in 0..cu_q.len().saturating_sub(1) {
        let (lq, lk) = (cu_q[b + 1] - cu_q[b], cu_k[b + 1] - cu_k[b]);
        let cuts = random_cuts(rng, lk, max_segment);
        let prefix = rng.gen_range(0..=lk);
        for j in 0..lk {
            let col = cu_k[b] + j;
            let (lo, hi) = cuts.windows(2).map(|w| (w[0], w[1])).find(|&(s, e)| s <= j && j < e).unwrap_or((0, lk));
            let (lts, lte, ute) = match pattern {
                MaskPattern::Causal => (lq, lq, (j + lq).saturating_sub(lk)),
                MaskPattern::Document => (hi, lq, j),
                MaskPattern::PrefixLm => (lq, lq, if j < prefix { 0 } else { j }),
                MaskPattern::Blocks => (lq, lq, lo),
            };
            c.lts[col] = lts.min(lq) as i32;
            c.lte[col] = lte.min(lq) as i32;
            c.uts[col] = 0;
            c.ute[col] = ute.min(lq) as i32;
        }
    }
    c
}

/// Random segment boundaries `0 = c0 < c1 < ... < cn = len` (documents or blocks), segments of
/// 1 to `max_segment` keys.
fn random_cuts(rng: &mut StdRng, len: usize, max_segment: usize) -> Vec<usize> {
    let mut cuts = vec![0];
    let mut at = 0;
    while at < len {
        at = (at + rng.gen_range(1..=len.clamp(1, max_segment.max(1)))).min(len);
        cuts.push(at);
    }
    if cuts.len() == 1 {
        cuts.push(len);
    }
    cuts
}

/// Poison for an output buffer: NaN for floats, a large negative sentinel for integers, so an
/// element a backend forgets to write never passes as a plausible value.
pub fn poison(dtype: DType, shape: &[usize]) -> HostTensor {
    let n: usize = shape.iter().product();
    match dtype {
        DType::I32 => HostTensor::from_i32(shape, &vec![POISON_I32; n]),
        _ => HostTensor::from_f32(dtype, shape, &vec![f32::NAN; n]),
    }
}

/// Sentinel written into integer outputs before an op runs: below every index range (the
/// smallest valid index value is the `-1` of padding rows).
pub const POISON_I32: i32 = -1_234_567;
const _: () = assert!(POISON_I32 < -1);
