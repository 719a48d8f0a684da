//! FlashMask column ranges of the benchmarked attention masks ([`AttnMask`]): causal written as
//! ranges, packed documents, and a 4-scale image inside text. All of them leave the diagonal
//! visible and are built without the causal flag.

use crate::shapes::{AttnMask, AttnShape};
use moekit_ops::ColumnRanges;

/// The column ranges of `shape`'s mask over its `B` sequences of `S` tokens (`[B·S]` each),
/// or `None` for the plain masks (none, causal). Every sequence `b` gets its own segments
/// (documents of other lengths), from `seed` and `b`.
pub fn column_ranges(shape: &AttnShape, seed: u64) -> Option<ColumnRanges> {
    let segments = |b: usize| match shape.mask {
        AttnMask::None | AttnMask::Causal | AttnMask::DocumentsVarlen | AttnMask::Decode(_) => None,
        AttnMask::CausalRanges => Some(Vec::new()),
        AttnMask::Documents => Some(documents_of(shape, seed, b)),
        AttnMask::Image => Some(image(shape.seq)),
    };
    let n = shape.batch * shape.seq;
    let mut c = ColumnRanges { lts: vec![0; n], lte: vec![0; n], uts: vec![0; n], ute: vec![0; n] };
    for b in 0..shape.batch {
        let seg = segments(b)?;
        let (lts, ute) = ranges_of(shape.mask, shape.seq, &seg);
        let at = b * shape.seq;
        c.lts[at..at + shape.seq].copy_from_slice(&lts);
        c.lte[at..at + shape.seq].fill(shape.seq as i32);
        c.ute[at..at + shape.seq].copy_from_slice(&ute);
    }
    Some(c)
}

/// `(lts, ute)` per column of one sequence of `s` tokens (with `lte = s`, `uts = 0`): column
/// `j` hides rows `0..ute[j]` (above it: `j` itself, or its block's first row) and rows
/// `lts[j]..s` (after its document).
fn ranges_of(mask: AttnMask, s: usize, segments: &[(usize, usize)]) -> (Vec<i32>, Vec<i32>) {
    let mut lts = vec![s as i32; s];
    let mut ute: Vec<i32> = (0..s as i32).collect();
    for &(start, end) in segments {
        for j in start..end {
            match mask {
                AttnMask::Documents => lts[j] = end as i32,
                _ => ute[j] = start as i32,
            }
        }
    }
    (lts, ute)
}

/// The documents of sequence `b` of `shape` (those of [`AttnMask::Documents`] and
/// [`AttnMask::DocumentsVarlen`]).
pub fn documents_of(shape: &AttnShape, seed: u64, b: usize) -> Vec<(usize, usize)> {
    documents(shape.seq, seed ^ (b as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15))
}

/// Cumulative key lengths of the packed batch of `shape`: `B` sequences of `S`, or with
/// [`AttnMask::DocumentsVarlen`] each of their documents as a sequence. The query lengths are
/// the same but for [`AttnMask::Decode`] (`N` per sequence, [`cu_seqlens_q`]).
pub fn cu_seqlens(shape: &AttnShape, seed: u64) -> Vec<usize> {
    let mut cu = vec![0];
    for b in 0..shape.batch {
        match shape.mask {
            AttnMask::DocumentsVarlen => {
                cu.extend(documents_of(shape, seed, b).iter().map(|&(_, end)| b * shape.seq + end));
            }
            _ => cu.push((b + 1) * shape.seq),
        }
    }
    cu
}

/// Cumulative query lengths of the packed batch of `shape` (see [`cu_seqlens`]).
pub fn cu_seqlens_q(shape: &AttnShape, seed: u64) -> Vec<usize> {
    match shape.mask {
        AttnMask::Decode(_) => (0..=shape.batch).map(|b| b * shape.mask.queries(shape.seq)).collect(),
        _ => cu_seqlens(shape, seed),
    }
}

/// Documents packed into `s` tokens: lengths drawn from `s/16..=s/2` (a splitmix stream of
/// `seed`), the last one cut at `s`; `[(start, end)]`.
pub fn documents(s: usize, seed: u64) -> Vec<(usize, usize)> {
    let mut x = seed;
    let mut next = move || {
        x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = x;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    };
    let (lo, hi) = ((s / 16).max(1), (s / 2).max(1));
    let mut docs = Vec::new();
    let mut at = 0;
    while at < s {
        let len = lo + (next() % (hi - lo + 1) as u64) as usize;
        docs.push((at, (at + len).min(s)));
        at += len;
    }
    docs
}

/// The scale blocks of a 4-scale image inside `s` tokens of text: scales of side `a`, `2a`,
/// `4a`, `8a` (85·a² tokens, `a` the largest with at most 2/3 of `s`), after a third of the
/// remaining text; `[(start, end)]` of each scale.
pub fn image(s: usize) -> Vec<(usize, usize)> {
    let a = (1..).take_while(|a| 85 * a * a <= 2 * s / 3).last().unwrap_or(0);
    let mut at = (s - 85 * a * a) / 3;
    let mut blocks = Vec::new();
    for side in [a, 2 * a, 4 * a, 8 * a] {
        if side > 0 {
            blocks.push((at, at + side * side));
        }
        at += side * side;
    }
    blocks
}

#[cfg(test)]
mod tests {
    use super::*;
    use moekit_ops::{AttentionMask, AttentionProblem, DType};

    fn problem(shape: &AttnShape, ranges: Option<ColumnRanges>, causal: bool) -> AttentionProblem {
        let cu: Vec<usize> = (0..=shape.batch).map(|b| b * shape.seq).collect();
        AttentionProblem {
            cu_seqlens_q: cu.clone(),
            cu_seqlens_k: cu,
            heads_q: 2,
            heads_kv: 1,
            head_dim: 64,
            scale: 0.125,
            softcap: None,
            mask: AttentionMask { causal, window: None, column_ranges: ranges },
            dtype: DType::BF16,
        }
    }

    fn shape(mask: AttnMask, seq: usize) -> AttnShape {
        AttnShape { batch: 2, heads_q: 2, heads_kv: 1, seq, head_dim: 64, mask }
    }

    #[test]
    fn causal_ranges_allow_what_the_flag_allows() {
        let s = shape(AttnMask::CausalRanges, 300);
        let p = problem(&s, column_ranges(&s, 1), false);
        let c = problem(&s, None, true);
        p.validate().unwrap();
        for b in 0..2 {
            for i in 0..300 {
                for j in 0..300 {
                    assert_eq!(p.allowed(b, i, j), c.allowed(b, i, j), "{b} {i} {j}");
                }
            }
        }
        assert!(column_ranges(&shape(AttnMask::Causal, 300), 1).is_none());
    }

    #[test]
    fn documents_are_causal_inside_and_apart() {
        let s = shape(AttnMask::Documents, 1000);
        let p = problem(&s, column_ranges(&s, 7), false);
        p.validate().unwrap();
        let docs = documents(1000, 7);
        assert!(docs.len() >= 2 && docs.iter().all(|&(a, b)| a < b) && docs.last().unwrap().1 == 1000);
        let doc = |i: usize| docs.iter().position(|&(a, b)| a <= i && i < b).unwrap();
        for i in 0..1000 {
            for j in 0..1000 {
                assert_eq!(p.allowed(0, i, j), j <= i && doc(i) == doc(j), "{i} {j}");
            }
        }
        // The second sequence has other documents.
        assert_ne!(documents(1000, 7 ^ 0x9E37_79B9_7F4A_7C15), docs);
    }

    #[test]
    fn varlen_documents_allow_what_the_document_mask_allows() {
        let ranged = shape(AttnMask::Documents, 900);
        let varlen = AttnShape { mask: AttnMask::DocumentsVarlen, ..ranged };
        let cu = cu_seqlens(&varlen, 3);
        assert!(cu.len() > 3 && cu.last() == Some(&1800) && cu.windows(2).all(|w| w[0] < w[1]));
        assert_eq!(cu_seqlens(&ranged, 3), vec![0, 900, 1800]);
        let p = problem(&ranged, column_ranges(&ranged, 3), false);
        let mut v = problem(&varlen, None, true);
        v.cu_seqlens_q = cu.clone();
        v.cu_seqlens_k = cu;
        assert_eq!(p.allowed_pairs(), v.allowed_pairs());
    }

    #[test]
    fn image_blocks_see_themselves_whole() {
        let blocks = image(4096);
        // a = 5: 25 + 100 + 400 + 1600 tokens after (4096 - 2125) / 3 = 657 of text.
        assert_eq!(blocks, vec![(657, 682), (682, 782), (782, 1182), (1182, 2782)]);
        let s = shape(AttnMask::Image, 4096);
        let p = problem(&s, column_ranges(&s, 0), false);
        let start = |j: usize| blocks.iter().find(|&&(a, b)| a <= j && j < b).map_or(j, |&(a, _)| a);
        // Row i sees key j iff it is not above j's block: inside a block every row sees all of it.
        for i in (0..4096).step_by(7) {
            for j in (0..4096).step_by(5) {
                assert_eq!(p.allowed(1, i, j), i >= start(j), "{i} {j}");
            }
        }
        assert!(p.allowed(1, 700, 781) && !p.allowed(1, 700, 782) && p.allowed(1, 1182, 2781));
        assert!(p.allowed_pairs() > problem(&s, None, true).allowed_pairs());
    }
}
