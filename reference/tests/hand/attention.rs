//! Attention by hand. Head dim 64 (the smallest supported); most cases only fill a few
//! components so the scores are easy to write down.

use crate::{assert_close, f32s};
use moekit_ops::{AttentionMask, AttentionProblem, ColumnRanges, DType, HostTensor, Window};
use moekit_reference::attention;

const D: usize = 64;

/// A `[rows, heads, D]` f32 tensor with element `f(row, head, c)`.
fn tensor(rows: usize, heads: usize, f: impl Fn(usize, usize, usize) -> f64) -> HostTensor {
    let mut v = Vec::with_capacity(rows * heads * D);
    for r in 0..rows {
        for h in 0..heads {
            for c in 0..D {
                v.push(f(r, h, c));
            }
        }
    }
    f32s(&[rows, heads, D], &v)
}

fn problem(cu_q: &[usize], cu_k: &[usize], heads_q: usize, mask: AttentionMask) -> AttentionProblem {
    AttentionProblem {
        cu_seqlens_q: cu_q.to_vec(),
        cu_seqlens_k: cu_k.to_vec(),
        heads_q,
        heads_kv: 1,
        head_dim: D,
        scale: 0.5,
        softcap: None,
        mask,
        dtype: DType::F32,
    }
}

/// `(Σ_j softmax(s)_j · v_j[c] for every c, ln Σ exp(s))`, written out.
fn explicit_softmax(s: &[f64], v: impl Fn(usize, usize) -> f64) -> (Vec<f64>, f64) {
    let z: f64 = s.iter().map(|x| x.exp()).sum();
    let o = (0..D).map(|c| (0..s.len()).map(|j| s[j].exp() / z * v(j, c)).sum()).collect();
    (o, z.ln())
}

#[test]
fn one_row_against_an_explicit_softmax_with_gqa_and_softcap() {
    // One query, three keys, two query heads sharing one kv head, scale 0.5.
    // Head 0: q = e0, k_j[0] = j → s = [0, 0.5, 1]. Head 1: q = 2·e1, k_j[1] = 1 - j → s = [1, 0, -1].
    let q = tensor(1, 2, |_, h, c| match (h, c) {
        (0, 0) => 1.0,
        (1, 1) => 2.0,
        _ => 0.0,
    });
    let k = tensor(3, 1, |j, _, c| match c {
        0 => j as f64,
        1 => 1.0 - j as f64,
        _ => 0.0,
    });
    let v_of = |j: usize, c: usize| ((j + 1) * (c + 1)) as f64 / 64.0;
    let v = tensor(3, 1, |j, _, c| v_of(j, c));
    for softcap in [None, Some(0.75f32)] {
        let mut p = problem(&[0, 1], &[0, 3], 2, AttentionMask::none());
        p.softcap = softcap;
        let (o, lse) = attention(&p.validate().unwrap(), &q, &k, &v).unwrap();
        let cap = |s: f64| softcap.map_or(s, |c| c as f64 * (s / c as f64).tanh());
        let (o0, lse0) = explicit_softmax(&[cap(0.0), cap(0.5), cap(1.0)], v_of);
        let (o1, lse1) = explicit_softmax(&[cap(1.0), cap(0.0), cap(-1.0)], v_of);
        assert_close(&o, &[o0, o1].concat(), 1e-6);
        assert_close(&lse, &[lse0, lse1], 1e-6);
    }
}

/// Two sequences of 3 and 2 tokens, two query heads, varied values.
fn varied() -> (HostTensor, HostTensor, HostTensor) {
    let q = tensor(5, 2, |r, h, c| ((r * 7 + h * 3 + c) as f64 * 0.37).sin());
    let k = tensor(5, 1, |r, _, c| ((r * 5 + c) as f64 * 0.23).cos());
    let v = tensor(5, 1, |r, _, c| ((r * 11 + c) as f64 * 0.19).sin());
    (q, k, v)
}

#[test]
fn causal_equals_its_column_ranges() {
    let (q, k, v) = varied();
    let cu = [0, 3, 5];
    let causal = problem(&cu, &cu, 2, AttentionMask::causal());
    // Column j (local) masks rows 0..j: uts = 0, ute = j; the lower interval is empty.
    let ute = vec![0, 1, 2, 0, 1];
    let ranges = ColumnRanges { lts: vec![0; 5], lte: vec![0; 5], uts: vec![0; 5], ute };
    let flash = problem(&cu, &cu, 2, AttentionMask { column_ranges: Some(ranges), ..AttentionMask::none() });
    let a = attention(&causal.validate().unwrap(), &q, &k, &v).unwrap();
    let b = attention(&flash.validate().unwrap(), &q, &k, &v).unwrap();
    assert_eq!(a, b);

    // The first row of each sequence sees only its first key: o = v of that key.
    let (o, v) = (a.0.to_f64_vec(), v.to_f64_vec());
    for (row, key) in [(0, 0), (3, 3)] {
        for h in 0..2 {
            assert_eq!(&o[(row * 2 + h) * D..][..D], &v[key * D..][..D]);
        }
    }
}

/// Keys all zero, so every allowed key scores 0 and the output is the mean of the allowed
/// values; `v_j = j` in every component.
fn uniform(lq: usize, lk: usize, mask: AttentionMask) -> (HostTensor, HostTensor) {
    let p = problem(&[0, lq], &[0, lk], 1, mask);
    let q = tensor(lq, 1, |_, _, _| 1.0);
    let k = tensor(lk, 1, |_, _, _| 0.0);
    let v = tensor(lk, 1, |j, _, _| j as f64);
    attention(&p.validate().unwrap(), &q, &k, &v).unwrap()
}

fn rows_of(means: &[f64]) -> Vec<f64> {
    means.iter().flat_map(|&m| vec![m; D]).collect()
}

#[test]
fn sliding_window_one_key_back() {
    // Row i sees keys max(0, i-1)..=i.
    let (o, lse) = uniform(4, 4, AttentionMask { window: Some(Window { left: 1, right: 0 }), ..AttentionMask::none() });
    assert_close(&o, &rows_of(&[0.0, 0.5, 1.5, 2.5]), 1e-6);
    let ln2 = 2f64.ln();
    assert_close(&lse, &[0.0, ln2, ln2, ln2], 1e-6);
}

#[test]
fn causal_is_bottom_right_aligned() {
    // 2 queries over 4 keys: row 0 sees keys 0..=2, row 1 sees 0..=3.
    let (o, lse) = uniform(2, 4, AttentionMask::causal());
    assert_close(&o, &rows_of(&[1.0, 1.5]), 1e-6);
    assert_close(&lse, &[3f64.ln(), 4f64.ln()], 1e-6);
}

#[test]
fn lower_column_interval_masks_rows_below() {
    // Column 0 masks rows 2..3: row 2 sees keys 1, 2 only.
    let ranges = ColumnRanges { lts: vec![2, 0, 0], lte: vec![3, 0, 0], uts: vec![0; 3], ute: vec![0; 3] };
    let (o, _) = uniform(3, 3, AttentionMask { column_ranges: Some(ranges), ..AttentionMask::none() });
    assert_close(&o, &rows_of(&[1.0, 1.0, 1.5]), 1e-6);
}
