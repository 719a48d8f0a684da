//! The setup the model tests share: the tiny preset grown to three layers (the first dense),
//! a mixed sequence of every modality, and every head's logits as one vector.
#![allow(dead_code)]

use moekit_model::{Audio, Forward, ModelConfig, Preset, Segment, Visual, Weights};

/// Tiny with three layers, the first dense: every kind of layer and a depth to cut.
pub fn tiny() -> (ModelConfig, Weights) {
    let mut cfg = Preset::Tiny.config();
    cfg.layers = 3;
    cfg.dense_first_layers = 1;
    cfg.dense_intermediate = 96;
    cfg.validate().unwrap();
    let w = Weights::random(&cfg, 11);
    (cfg, w)
}

/// `t` text ids, spread over the vocabulary.
pub fn ids(t: usize) -> Vec<i32> {
    (0..t).map(|i| ((i * 37 + 11) % 256) as i32).collect()
}

/// Visual codes of `frames` frames of `scales`, bits drawn from `seed`.
pub fn visual(cfg: &ModelConfig, frames: usize, scales: &[(usize, usize)], seed: u64) -> Visual {
    let n = frames * scales.iter().map(|&(h, w)| h * w).sum::<usize>();
    let bits = (0..n * cfg.visual_code_bits).map(|i| ((i as u64 * 2654435761 + seed * 97) >> 7 & 1) as u8).collect();
    Visual { frames, scales: scales.to_vec(), blocks: None, bits }
}

/// `frames` audio frames of every level.
pub fn audio(cfg: &ModelConfig, frames: usize, seed: i32) -> Audio {
    let n = frames * cfg.audio_levels;
    Audio { codes: (0..n as i32).map(|i| (i * 13 + seed * 7 + 3) % cfg.audio_codebook as i32).collect() }
}

/// Text, an image of three scales, text, a two-frame video, audio, text: 38 rows.
pub fn mixed(cfg: &ModelConfig) -> Vec<Segment> {
    vec![
        Segment::Text(ids(5)),
        Segment::Visual(visual(cfg, 1, &[(1, 1), (2, 2), (3, 3)], 1)),
        Segment::Text(vec![7, 8, 9]),
        Segment::Visual(visual(cfg, 2, &[(1, 1), (2, 2)], 2)),
        Segment::Audio(audio(cfg, 4, 1)),
        Segment::Text(vec![42, 43]),
    ]
}

/// Every head's logits of `f` in one vector: text, visual, each audio level, each MTP module.
pub fn all_logits(f: &Forward) -> Vec<f64> {
    let mut v = f.text_logits.to_f64_vec();
    v.extend(f.visual_logits.to_f64_vec());
    for a in f.audio_logits.iter().chain(&f.mtp_logits) {
        v.extend(a.to_f64_vec());
    }
    v
}

/// The checks every GPU backend runs against the reference path (f32): the text model full
/// and elastic (logits and routing), the mixed sequence of every modality through
/// `forward_mtp` (every head), and the same sequence decoded piece by piece through a KV cache.
pub fn check_against_reference<B: moekit_ops::Backend>(b: &B) {
    use moekit_model::{Elastic, Model};
    use moekit_ops::tolerance::{compare, Tolerance};
    use moekit_ops::DType;
    use moekit_reference::ReferenceBackend;
    let (cfg, w) = tiny();
    let tol = Tolerance::chained(DType::F32, cfg.hidden, 4 * cfg.layers);
    let mut mask = vec![true; cfg.routed_experts];
    mask[2] = false;
    mask[5] = false;
    let elastic = Elastic { layers: Some(vec![1, 2]), experts: Some(mask), top_k: Some(1) };
    let want_m = Model::new(&ReferenceBackend, &cfg, &w, DType::F32).unwrap();
    let m = Model::new(b, &cfg, &w, DType::F32).unwrap();
    let routing = |f: &Forward| f.routing.iter().map(|r| r.ids.clone()).collect::<Vec<_>>();
    for (what, e) in [("full", Elastic::default()), ("all three", elastic)] {
        let want = want_m.forward_text(&ids(37), &e).unwrap();
        let got = m.forward_text(&ids(37), &e).unwrap();
        assert_eq!(routing(&got), routing(&want), "{what}: routing");
        let report = compare(what, &want.text_logits.to_f64_vec(), &got.text_logits.to_f64_vec(), tol);
        assert!(report.ok(), "{report}");
        let segs = mixed(&cfg);
        let want = want_m.forward_mtp(&segs, &e).unwrap();
        let got = m.forward_mtp(&segs, &e).unwrap();
        assert_eq!(routing(&got), routing(&want), "{what}: mixed routing");
        let report = compare(&format!("{what} mixed"), &all_logits(&want), &all_logits(&got), tol);
        assert!(report.ok(), "{report}");
        let mut cache = m.cache(64, &e).unwrap();
        let mut text = Vec::new();
        for s in &segs {
            // Text one token at a time, the rest one segment at a time.
            let pieces: Vec<Segment> = match s {
                Segment::Text(ids) => ids.iter().map(|&i| Segment::Text(vec![i])).collect(),
                other => vec![other.clone()],
            };
            for p in pieces {
                text.extend(m.step(&mut cache, &[p], &e).unwrap().text_logits.to_f64_vec());
            }
        }
        let report = compare(&format!("{what} decoded text"), &want.text_logits.to_f64_vec(), &text, tol);
        assert!(report.ok(), "{report}");
    }
}
