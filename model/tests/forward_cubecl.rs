//! The decoder on cubecl's wgpu runtime (CI: lavapipe) against the reference path, for the
//! full model and elastic sub-models, on text and on a mixed sequence of every modality, in
//! one forward and decoded piece by piece through a KV cache. Needs `--features cubecl-wgpu`; without a Vulkan
//! adapter it prints `SKIPPED` (a failure under `MOEKIT_NO_SKIP=1`, as in CI).
#![cfg(feature = "cubecl-wgpu")]

mod common;

use moekit_cubecl::{CubeBackend, WgpuRuntime};
use moekit_model::{Elastic, Forward, Model, Preset, Segment, Weights};
use moekit_ops::tolerance::{compare, Tolerance};
use moekit_ops::{Backend, DType};
use moekit_reference::ReferenceBackend;

#[test]
fn cubecl_wgpu_gives_the_reference_logits_for_full_and_elastic_models() {
    let b = match CubeBackend::<WgpuRuntime>::wgpu() {
        Ok(b) => b,
        Err(e) if std::env::var_os("MOEKIT_NO_SKIP").is_none() => {
            println!("SKIPPED cubecl_wgpu_gives_the_reference_logits: {e}");
            return;
        }
        Err(e) => panic!("no cubecl-wgpu backend under MOEKIT_NO_SKIP: {e}"),
    };
    let mut cfg = Preset::Tiny.config();
    cfg.layers = 3;
    cfg.dense_first_layers = 1;
    cfg.dense_intermediate = 96;
    let w = Weights::random(&cfg, 11);
    let ids: Vec<i32> = (0..37).map(|i| (i * 37 + 11) % 256).collect();
    let mut mask = vec![true; cfg.routed_experts];
    mask[2] = false;
    mask[5] = false;
    let cases = [
        ("full", Elastic::default()),
        ("all three", Elastic { layers: Some(vec![1, 2]), experts: Some(mask), top_k: Some(1) }),
    ];
    for (what, e) in cases {
        let want = logits(&ReferenceBackend, &cfg, &w, &ids, &e);
        let got = logits(&b, &cfg, &w, &ids, &e);
        assert_eq!(got.1, want.1, "{what}: routing");
        let report = compare(what, &want.0, &got.0, Tolerance::chained(DType::F32, cfg.hidden, 4 * cfg.layers));
        assert!(report.ok(), "{report}");
    }
    mixed_and_decoded(&b);
}

/// The mixed sequence of every modality, whole (with the MTP modules) and then decoded: the
/// visual block mask, the KV cache and every head on cubecl.
fn mixed_and_decoded(b: &CubeBackend<WgpuRuntime>) {
    let (cfg, w) = common::tiny();
    let segs = common::mixed(&cfg);
    let tol = Tolerance::chained(DType::F32, cfg.hidden, 4 * cfg.layers);
    let want =
        Model::new(&ReferenceBackend, &cfg, &w, DType::F32).unwrap().forward_mtp(&segs, &Elastic::default()).unwrap();
    let m = Model::new(b, &cfg, &w, DType::F32).unwrap();
    let got = m.forward_mtp(&segs, &Elastic::default()).unwrap();
    let report = compare("mixed", &common::all_logits(&want), &common::all_logits(&got), tol);
    assert!(report.ok(), "{report}");
    let mut cache = m.cache(64, &Elastic::default()).unwrap();
    let mut text = Vec::new();
    for s in &segs {
        // Text one token at a time, the rest one segment at a time.
        let pieces: Vec<Segment> = match s {
            Segment::Text(ids) => ids.iter().map(|&i| Segment::Text(vec![i])).collect(),
            other => vec![other.clone()],
        };
        for p in pieces {
            let f: Forward = m.step(&mut cache, &[p], &Elastic::default()).unwrap();
            text.extend(f.text_logits.to_f64_vec());
        }
    }
    let report = compare("decoded text", &want.text_logits.to_f64_vec(), &text, tol);
    assert!(report.ok(), "{report}");
}

fn logits<B: Backend>(
    b: &B,
    cfg: &moekit_model::ModelConfig,
    w: &Weights,
    ids: &[i32],
    e: &Elastic,
) -> (Vec<f64>, Vec<Vec<i32>>) {
    let m = Model::new(b, cfg, w, DType::F32).unwrap();
    let f = m.forward_text(ids, e).unwrap();
    (f.text_logits.to_f64_vec(), f.routing.into_iter().map(|r| r.ids).collect())
}
