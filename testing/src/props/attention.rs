//! Attention: agreement with the reference over varlen batches, GQA, masks, softcap and lse;
//! invariants (all-equal V rows give that row back; causal as column ranges equals causal).

use crate::compare::{close, close_floor, ctx, dot_scale, exact, Check};
use crate::exec::{self, AttentionBufs};
use crate::gen::{self, MaskPattern};
use crate::strategies::seed;
use moekit_ops::tolerance::Tolerance;
use moekit_ops::{AttentionMask, AttentionProblem, Backend, DType, HostTensor, Window};
use moekit_reference::ReferenceBackend;
use proptest::prelude::*;
use rand::Rng;

/// One attention case (the dtype is replaced by the test's).
#[derive(Clone, Debug)]
pub struct AttentionCase {
    /// The problem, lengths and mask included.
    pub problem: AttentionProblem,
    /// The FlashMask pattern behind the column ranges, if any.
    pub pattern: Option<MaskPattern>,
    /// Data seed.
    pub seed: u64,
}

/// Mask kinds drawn by the strategy.
#[derive(Clone, Copy, Debug)]
enum MaskKind {
    None,
    Causal,
    Window { causal: bool },
    Columns(MaskPattern),
}

fn mask_kind() -> impl Strategy<Value = MaskKind> {
    prop_oneof![
        Just(MaskKind::None),
        Just(MaskKind::Causal),
        any::<bool>().prop_map(|causal| MaskKind::Window { causal }),
        prop_oneof![
            Just(MaskPattern::Causal),
            Just(MaskPattern::Document),
            Just(MaskPattern::PrefixLm),
            Just(MaskPattern::Blocks),
        ]
        .prop_map(MaskKind::Columns),
    ]
}

/// Attention cases: 1..=3 sequences (empty, short and long), head dims 64/128/256 with few
/// tokens, GQA groups 1..=3, softcap, every mask kind.
pub fn attention_cases() -> impl Strategy<Value = AttentionCase> {
    let head_dim = prop_oneof![2 => Just(64usize), 1 => Just(128usize), 1 => Just(256usize)];
    (1..=3usize, head_dim, 1..=2usize, 1..=3usize, mask_kind(), any::<bool>(), 0.5f32..2.0, seed())
        .prop_map(|(batch, d, hkv, group, kind, softcap, scale, seed)| {
            build_case(batch, d, hkv, group, kind, softcap, scale, seed)
        })
        .prop_filter("problem must validate", |c| c.problem.validate().is_ok())
}

fn build_case(
    batch: usize,
    d: usize,
    hkv: usize,
    group: usize,
    kind: MaskKind,
    softcap: bool,
    scale: f32,
    seed: u64,
) -> AttentionCase {
    let mut rng = gen::rng(seed ^ 0xa77e);
    let long = if d == 64 { 40 } else { 20 };
    let lq = gen::seq_lens(&mut rng, batch, 12, long);
    let same_len = matches!(kind, MaskKind::Columns(p) if p != MaskPattern::Causal);
    let lk: Vec<usize> = lq
        .iter()
        .map(|&l| match kind {
            _ if same_len => l,
            // NOTE: without a mask any positive key length works; with causal or a window
            // `Lk >= Lq` keeps the (bottom-right aligned) diagonal inside every row.
            MaskKind::None if l > 0 => rng.gen_range(1..=l + 8),
            _ if rng.gen_bool(0.5) => l,
            _ => l + rng.gen_range(0..=8),
        })
        .collect();
    let (cu_q, cu_k) = (gen::cumsum(&lq), gen::cumsum(&lk));
    let (mut mask, mut pattern) = (AttentionMask::none(), None);
    match kind {
        MaskKind::None => {}
        MaskKind::Causal => mask.causal = true,
        MaskKind::Window { causal } => {
            mask.causal = causal;
            mask.window = Some(Window { left: rng.gen_range(0..=8), right: rng.gen_range(0..=4) });
        }
        MaskKind::Columns(pat) => {
            mask.column_ranges = Some(gen::column_ranges(&mut rng, pat, &cu_q, &cu_k));
            mask.causal = rng.gen_bool(0.25);
            pattern = Some(pat);
        }
    }
    let problem = AttentionProblem {
        cu_seqlens_q: cu_q,
        cu_seqlens_k: cu_k,
        heads_q: hkv * group,
        heads_kv: hkv,
        head_dim: d,
        scale: scale / (d as f32).sqrt(),
        softcap: softcap.then(|| rng.gen_range(2.0f32..30.0)),
        mask,
        dtype: DType::F32,
    };
    AttentionCase { problem, pattern, seed }
}

/// `q`, `k`, `v` and poisoned outputs of a problem.
pub fn attention_inputs(p: &AttentionProblem, seed: u64) -> AttentionBufs {
    let mut rng = gen::rng(seed);
    let (tq, tk, hq, hkv, d) = (p.total_q(), p.total_k(), p.heads_q, p.heads_kv, p.head_dim);
    AttentionBufs {
        q: gen::normal_tensor(&mut rng, p.dtype, &[tq, hq, d], 1.0),
        k: gen::normal_tensor(&mut rng, p.dtype, &[tk, hkv, d], 1.0),
        v: gen::normal_tensor(&mut rng, p.dtype, &[tk, hkv, d], 1.0),
        o: gen::poison(p.dtype, &[tq, hq, d]),
        lse: gen::poison(DType::F32, &[hq, tq]),
    }
}

fn longest_k(p: &AttentionProblem) -> usize {
    (0..p.batch()).map(|b| p.seq_lens(b).1).max().unwrap_or(0)
}

/// Tolerances of `o` (in `dtype`) and `lse` (f32) for a problem.
fn tolerances(p: &AttentionProblem) -> (Tolerance, Tolerance) {
    // NOTE: two reductions in a row (`D` terms per score, `Lk` per output), and the scores
    // pass through `exp`, which turns their absolute error into a relative error of the
    // probabilities; a length of 4·(Lk + D) doubles the f32 accumulation allowance.
    let len = 4 * (longest_k(p) + p.head_dim);
    (Tolerance::for_dtype(p.dtype, len), Tolerance::for_dtype(DType::F32, len).times(4.0))
}

/// Attention on `b` equals the reference: `o` within the dtype's tolerance, `lse` within f32's.
///
/// # Errors
/// A mismatch report.
pub fn attention_matches_reference<B: Backend>(b: &B, dtype: DType, c: &AttentionCase) -> Check {
    let p = AttentionProblem { dtype, ..c.problem.clone() };
    let x = attention_inputs(&p, c.seed);
    let (want_o, want_lse) = exec::attention(&ReferenceBackend, &p, &x).map_err(ctx("reference attention"))?;
    let (got_o, got_lse) = exec::attention(b, &p, &x).map_err(ctx("attention"))?;
    let (tol_o, tol_lse) = tolerances(&p);
    close("o", &want_o, &got_o, tol_o, dtype)?;
    // NOTE: a one-key row's lse is its score, which can cancel to ~0; judge it against the
    // magnitude of a typical score instead.
    let score = p.scale as f64 * dot_scale(&x.q, &x.k, p.head_dim);
    close_floor("lse", &want_lse, &got_lse, tol_lse, DType::F32, score)
}

/// Attention invariants on `b` alone: with every key's V row equal (per kv head) the output
/// is that row whatever the mask; causal written as column ranges gives the causal output.
///
/// # Errors
/// The first violated invariant.
pub fn attention_invariants<B: Backend>(b: &B, dtype: DType, c: &AttentionCase) -> Check {
    let p = AttentionProblem { dtype, ..c.problem.clone() };
    let (tq, tk, hq, hkv, d) = (p.total_q(), p.total_k(), p.heads_q, p.heads_kv, p.head_dim);
    let mut x = attention_inputs(&p, c.seed);
    let mut rng = gen::rng(c.seed ^ 0x0e0e);
    let rows = gen::normal(&mut rng, hkv * d, 1.0);
    let v: Vec<f32> = (0..tk).flat_map(|_| rows.iter().copied()).collect();
    x.v = gen::tensor(dtype, &[tk, hkv, d], &v);
    let (o, _) = exec::attention(b, &p, &x).map_err(ctx("attention"))?;
    let row_of = x.v.to_f64_vec();
    let want: Vec<f64> = (0..tq * hq)
        .flat_map(|i| {
            let kv = (i % hq) / (hq / hkv);
            row_of[kv * d..(kv + 1) * d].to_vec()
        })
        .collect();
    let (tol_o, _) = tolerances(&p);
    close("o with equal V rows", &HostTensor::from_f64(DType::F32, &[tq, hq, d], &want), &o, tol_o, dtype)?;

    // K/V passed as caches with spare rows of NaN: the rows past Tk are never read.
    let x = attention_inputs(&p, c.seed);
    let (o1, l1) = exec::attention(b, &p, &x).map_err(ctx("attention"))?;
    let spare = 1 + (c.seed % 7) as usize;
    let pad = |t: &HostTensor| {
        let mut v = t.to_f32_vec();
        v.extend(std::iter::repeat_n(f32::NAN, spare * hkv * d));
        gen::tensor(dtype, &[tk + spare, hkv, d], &v)
    };
    let cached = AttentionBufs { k: pad(&x.k), v: pad(&x.v), ..x.clone() };
    let (o2, l2) = exec::attention(b, &p, &cached).map_err(ctx("attention on caches"))?;
    exact("o with K/V caches", &o1, &o2)?;
    exact("lse with K/V caches", &l1, &l2)?;

    let causal = AttentionProblem { mask: AttentionMask::causal(), ..p.clone() };
    if causal.validate().is_err() {
        return Ok(());
    }
    let ranges = gen::column_ranges(&mut rng, MaskPattern::Causal, &p.cu_seqlens_q, &p.cu_seqlens_k);
    let as_ranges =
        AttentionProblem { mask: AttentionMask { column_ranges: Some(ranges), ..AttentionMask::none() }, ..p.clone() };
    let x = attention_inputs(&p, c.seed);
    let (o1, l1) = exec::attention(b, &causal, &x).map_err(ctx("causal attention"))?;
    let (o2, l2) = exec::attention(b, &as_ranges, &x).map_err(ctx("column-range attention"))?;
    let (tol_o, tol_lse) = tolerances(&p);
    close("o: column-range causal vs causal", &o1, &o2, tol_o, dtype)?;
    let score = p.scale as f64 * dot_scale(&x.q, &x.k, p.head_dim);
    close_floor("lse: column-range causal vs causal", &l1, &l2, tol_lse, DType::F32, score)
}
