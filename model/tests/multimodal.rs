//! The unified model on interleaved text, image, video and audio: every backend here against
//! the reference path, the next-frame-and-scale mask, decoding with a KV cache, the MTP
//! modules and the depth-wise audio heads.

mod common;

use common::{all_logits, audio, mixed, tiny, visual};
use moekit_cpu::CpuBackend;
use moekit_model::{Elastic, Forward, Layout, Model, Segment, Visual};
use moekit_ops::tolerance::{compare, Tolerance};
use moekit_ops::{AttentionMask, AttentionProblem, DType, TensorMeta};
use moekit_reference::ReferenceBackend;

fn elastic(cfg: &moekit_model::ModelConfig) -> Elastic {
    let mut mask = vec![true; cfg.routed_experts];
    mask[1] = false;
    mask[6] = false;
    Elastic { layers: Some(vec![0, 2]), experts: Some(mask), top_k: Some(1) }
}

#[test]
fn layout_gives_uni_rope_positions_and_one_block_per_frame_and_scale() {
    let (cfg, _) = tiny();
    let segs = [
        Segment::Text(vec![1, 2, 3]),
        Segment::Visual(visual(&cfg, 2, &[(1, 1), (2, 4)], 0)),
        Segment::Audio(audio(&cfg, 2, 0)),
    ];
    let l = Layout::new(&cfg, &segs, 0).unwrap();
    assert_eq!(l.rows, 3 + 2 * 9 + 2);
    assert_eq!(l.blocks, vec![3..4, 4..12, 12..13, 13..21]);
    let (t, h, w) = (&l.positions[..l.rows], &l.positions[l.rows..2 * l.rows], &l.positions[2 * l.rows..]);
    assert_eq!(&t[..4], &[0, 1, 2, 3]);
    // Scale (1, 1) sits at the centre of the finest (2, 4) grid: h = 3 + 1, w = 3 + 2.
    assert_eq!((t[3], h[3], w[3]), (3, 4, 5));
    // Scale (2, 4), cell (1, 3): h = 3 + 3·2/4 = 4, w = 3 + 7·4/8 = 6; frame 1 has t = 4.
    assert_eq!((t[11], h[11], w[11]), (3, 4, 6));
    assert_eq!((t[12], t[20]), (4, 4));
    // The video spans max(F, Hf, Wf) = 4 positions; audio continues at 3 + 4.
    assert_eq!((t[21], h[21], w[21], t[22]), (7, 7, 7, 8));
    assert_eq!(l.next_position, 9);
}

#[test]
fn the_visual_scale_block_is_bidirectional_and_causal_across_scales_in_the_mask() {
    let (cfg, _) = tiny();
    let segs =
        [Segment::Text(vec![1, 2]), Segment::Visual(visual(&cfg, 1, &[(1, 1), (2, 2)], 0)), Segment::Text(vec![3])];
    let l = Layout::new(&cfg, &segs, 0).unwrap();
    for past in [0usize, 3] {
        let ranges = l.column_ranges(past).unwrap();
        let (tq, tk) = (l.rows, past + l.rows);
        let p = AttentionProblem {
            cu_seqlens_q: vec![0, tq],
            cu_seqlens_k: vec![0, tk],
            heads_q: 2,
            heads_kv: 1,
            head_dim: 64,
            scale: 0.125,
            softcap: None,
            mask: AttentionMask { column_ranges: Some(ranges), ..AttentionMask::none() },
            dtype: DType::F32,
        };
        p.validate().unwrap();
        // Scale (1, 1) is row 2, scale (2, 2) rows 3..7.
        let block_of = |r: usize| match r {
            2 => Some(0),
            3..=6 => Some(1),
            _ => None,
        };
        for i in 0..tq {
            for j in 0..tk {
                let want = match j.checked_sub(past) {
                    None => true,
                    Some(c) => c <= i || (block_of(c).is_some() && block_of(c) == block_of(i)),
                };
                assert_eq!(p.allowed(0, i, j), want, "past {past}, row {i}, key {j}");
            }
        }
    }
}

fn forward<B: moekit_ops::Backend>(b: &B, segs: &[Segment], e: &Elastic) -> Forward {
    let (cfg, w) = tiny();
    Model::new(b, &cfg, &w, DType::F32).unwrap().forward_mtp(segs, e).unwrap()
}

#[test]
fn the_cpu_backend_gives_the_reference_logits_of_every_head_on_a_mixed_sequence() {
    let (cfg, _) = tiny();
    let segs = mixed(&cfg);
    for (what, e) in [("full", Elastic::default()), ("elastic", elastic(&cfg))] {
        let want = forward(&ReferenceBackend, &segs, &e);
        let got = forward(&CpuBackend::new(), &segs, &e);
        assert_eq!(want.text_rows.len(), 10);
        assert_eq!(want.visual_rows.len(), 24);
        assert_eq!(want.audio_rows.len(), 4);
        assert_eq!(want.mtp_logits[0].shape(), &[37, cfg.text_vocab]);
        let ids = |f: &Forward| f.routing.iter().map(|r| r.ids.clone()).collect::<Vec<_>>();
        assert_eq!(ids(&got), ids(&want), "{what}: routing");
        assert_eq!(got.audio_codes, want.audio_codes, "{what}: audio codes");
        let report = compare(
            what,
            &all_logits(&want),
            &all_logits(&got),
            Tolerance::chained(DType::F32, cfg.hidden, 4 * cfg.layers),
        );
        assert!(report.ok(), "{report}");
    }
}

/// Row `r`'s logits of every head that covers it.
fn row(f: &Forward, r: usize) -> Vec<f32> {
    let pick = |rows: &[usize], t: &moekit_ops::HostTensor| {
        rows.iter().position(|&x| x == r).map(|i| {
            let n = t.shape()[1];
            t.to_f32_vec()[i * n..(i + 1) * n].to_vec()
        })
    };
    pick(&f.text_rows, &f.text_logits).or_else(|| pick(&f.visual_rows, &f.visual_logits)).unwrap()
}

#[test]
fn a_visual_scale_block_sees_itself_whole_and_no_later_scale() {
    let (cfg, _) = tiny();
    // Rows: text 0..2, scale (1, 1) at 2, scale (2, 2) at 3..7, scale (3, 3) at 7..16, text 16.
    let base = visual(&cfg, 1, &[(1, 1), (2, 2), (3, 3)], 5);
    let segs = |v: Visual| vec![Segment::Text(vec![4, 5]), Segment::Visual(v), Segment::Text(vec![6])];
    let e = Elastic::default();
    let f0 = forward(&ReferenceBackend, &segs(base.clone()), &e);
    let flip = |token: usize| {
        let mut v = base.clone();
        let b = cfg.visual_code_bits;
        for x in &mut v.bits[token * b..(token + 1) * b] {
            *x ^= 1;
        }
        v
    };
    // The last token of scale (2, 2) (row 6) changes: its whole block (row 3 too) moves, the
    // rows before the block do not.
    let f1 = forward(&ReferenceBackend, &segs(flip(4)), &e);
    for r in 0..3 {
        assert_eq!(row(&f0, r), row(&f1, r), "row {r} before the block");
    }
    for r in [3, 6, 7, 16] {
        assert_ne!(row(&f0, r), row(&f1, r), "row {r} in or after the block");
    }
    // The first token of scale (3, 3) (row 7) changes: nothing of the scales before it moves.
    let f2 = forward(&ReferenceBackend, &segs(flip(5)), &e);
    for r in 0..7 {
        assert_eq!(row(&f0, r), row(&f2, r), "row {r} before the next scale");
    }
    assert_ne!(row(&f0, 15), row(&f2, 15));
}

/// The mixed sequence fed in pieces: text one token at a time, the image one scale at a
/// time, the video whole, audio one frame at a time.
fn pieces(cfg: &moekit_model::ModelConfig) -> Vec<Vec<Segment>> {
    let segs = mixed(cfg);
    let mut out = Vec::new();
    for s in segs {
        match s {
            Segment::Text(ids) => out.extend(ids.into_iter().map(|i| vec![Segment::Text(vec![i])])),
            Segment::Audio(a) => out.extend(
                a.codes
                    .chunks(cfg.audio_levels)
                    .map(|c| vec![Segment::Audio(moekit_model::Audio { codes: c.to_vec() })]),
            ),
            Segment::Visual(v) if v.frames == 1 => {
                let b = cfg.visual_code_bits;
                let mut at = 0;
                for blk in v.all_blocks() {
                    let n = v.block_rows(blk);
                    let bits = v.bits[at * b..(at + n) * b].to_vec();
                    at += n;
                    out.push(vec![Segment::Visual(Visual { blocks: Some(blk..blk + 1), bits, ..v.clone() })]);
                }
            }
            other => out.push(vec![other]),
        }
    }
    out
}

/// Every head's logits of `parts` in row order, as one vector laid out like `all_logits` of
/// the whole (text rows, visual rows, then each audio level).
fn concat(parts: &[Forward]) -> Vec<f64> {
    let mut v = Vec::new();
    for p in parts {
        v.extend(p.text_logits.to_f64_vec());
    }
    for p in parts {
        v.extend(p.visual_logits.to_f64_vec());
    }
    let levels = parts[0].audio_logits.len();
    for l in 0..levels {
        for p in parts {
            v.extend(p.audio_logits[l].to_f64_vec());
        }
    }
    v
}

fn decode_matches_forward<B: moekit_ops::Backend>(b: &B) {
    let (cfg, w) = tiny();
    let m = Model::new(b, &cfg, &w, DType::F32).unwrap();
    for (what, e) in [("full", Elastic::default()), ("elastic", elastic(&cfg))] {
        let whole = m.forward(&mixed(&cfg), &e).unwrap();
        let mut cache = m.cache(64, &e).unwrap();
        let parts: Vec<Forward> = pieces(&cfg).iter().map(|p| m.step(&mut cache, p, &e).unwrap()).collect();
        assert_eq!(cache.len(), 38);
        assert_eq!(cache.next_position(), whole.layout.next_position);
        let routing = |f: &Forward| f.routing.iter().map(|r| r.ids.clone()).collect::<Vec<_>>();
        let mut stepped = vec![Vec::new(); whole.routing.len()];
        for p in &parts {
            for (s, r) in stepped.iter_mut().zip(routing(p)) {
                s.extend(r);
            }
        }
        assert_eq!(stepped, routing(&whole), "{what}: routing");
        let want = [whole.text_logits.to_f64_vec(), whole.visual_logits.to_f64_vec()]
            .into_iter()
            .chain(whole.audio_logits.iter().map(|a| a.to_f64_vec()))
            .flatten()
            .collect::<Vec<_>>();
        let report = compare(what, &want, &concat(&parts), Tolerance::chained(DType::F32, cfg.hidden, 4 * cfg.layers));
        assert!(report.ok(), "{report}");
    }
}

#[test]
fn kv_cache_decode_gives_the_logits_of_the_full_forward() {
    decode_matches_forward(&ReferenceBackend);
    decode_matches_forward(&CpuBackend::new());
}

#[test]
fn mtp_rows_see_only_the_past_and_their_next_token() {
    let (cfg, _) = tiny();
    let base: Vec<i32> = (0..12).map(|i| (i * 29 + 3) % 256).collect();
    let e = Elastic::default();
    let f0 = forward(&ReferenceBackend, &[Segment::Text(base.clone())], &e);
    let mut changed = base.clone();
    changed[8] = (changed[8] + 1) % 256;
    let f1 = forward(&ReferenceBackend, &[Segment::Text(changed)], &e);
    let v = cfg.text_vocab;
    let (a, b) = (f0.mtp_logits[0].to_f32_vec(), f1.mtp_logits[0].to_f32_vec());
    // Module 0's row i reads rows 0..=i and the embedding of row i + 1: rows 0..7 keep, 7 moves.
    assert_eq!(&a[..7 * v], &b[..7 * v]);
    assert_ne!(&a[7 * v..8 * v], &b[7 * v..8 * v]);
}

#[test]
fn the_audio_heads_choose_each_level_greedily() {
    let (cfg, _) = tiny();
    let f = forward(
        &ReferenceBackend,
        &[Segment::Text(vec![1, 2]), Segment::Audio(audio(&cfg, 3, 2))],
        &Elastic::default(),
    );
    assert_eq!(f.audio_rows, vec![2, 3, 4]);
    let (levels, cb) = (cfg.audio_levels, cfg.audio_codebook);
    for (l, lg) in f.audio_logits.iter().enumerate() {
        for (i, r) in lg.to_f32_vec().chunks(cb).enumerate() {
            let best = r.iter().enumerate().fold(0, |b, (j, &x)| if x > r[b] { j } else { b });
            assert_eq!(f.audio_codes[i * levels + l] as usize, best, "row {i} level {l}");
        }
    }
}

#[test]
fn bad_segments_and_caches_are_typed_errors() {
    let (cfg, w) = tiny();
    let b = ReferenceBackend;
    let m = Model::new(&b, &cfg, &w, DType::F32).unwrap();
    let e = Elastic::default();
    let err = |s: Segment| m.forward(&[s], &e).unwrap_err().to_string();
    let mut v = visual(&cfg, 1, &[(2, 2)], 0);
    v.bits.pop();
    assert!(err(Segment::Visual(v)).contains("31 bits, expected 4 tokens × 8 bits"));
    let mut v = visual(&cfg, 1, &[(2, 2)], 0);
    v.bits[0] = 2;
    assert!(err(Segment::Visual(v)).contains("visual bit 2"));
    assert!(err(Segment::Audio(moekit_model::Audio { codes: vec![1, 2, 3] })).contains("multiple of 2 levels"));
    assert!(err(Segment::Audio(moekit_model::Audio { codes: vec![1, 64] })).contains("audio code 64"));
    let cont = Visual { blocks: Some(1..2), bits: vec![0; 4 * 8], ..visual(&cfg, 1, &[(1, 1), (2, 2)], 0) };
    let text_then = m.forward(&[Segment::Text(vec![1]), Segment::Visual(cont)], &e).unwrap_err().to_string();
    assert!(text_then.contains("do not continue"), "{text_then}");
    let mut cache = m.cache(4, &e).unwrap();
    let full = m.step(&mut cache, &[Segment::Text(vec![1, 2, 3, 4, 5])], &e).unwrap_err().to_string();
    assert!(full.contains("exceed the cache's capacity 4"), "{full}");
    let other = Elastic { layers: Some(vec![0]), ..Elastic::default() };
    assert!(m
        .step(&mut cache, &[Segment::Text(vec![1])], &other)
        .unwrap_err()
        .to_string()
        .contains("differ from the cache"));
}

#[test]
fn heads_last_gives_the_last_row_of_every_head_only() {
    let (cfg, w) = tiny();
    let b = CpuBackend::new();
    let m = Model::new(&b, &cfg, &w, DType::F32).unwrap();
    let e = Elastic::default();
    let segs = mixed(&cfg);
    let all = m.forward(&segs, &e).unwrap();
    let mut cache = m.cache(38, &e).unwrap();
    let last = m.step_with(&mut cache, &segs, &e, moekit_model::Heads::Last).unwrap();
    assert_eq!(last.text_rows, vec![37]);
    assert!(last.visual_rows.is_empty() && last.audio_rows.is_empty());
    let v = cfg.text_vocab;
    assert_eq!(last.text_logits.to_f32_vec(), all.text_logits.to_f32_vec()[9 * v..].to_vec());
}
