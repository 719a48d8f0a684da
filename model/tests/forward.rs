//! The decoder forward: every backend here against the reference path (the model run through
//! `moekit-reference`), for the full model and elastic sub-models, and the semantics that are
//! easy to get wrong (masked experts, skipped layers).

mod common;

use common::{ids, tiny};
use moekit_cpu::CpuBackend;
use moekit_model::{Elastic, Model, ModelConfig, SubModel, Weights};
use moekit_ops::tolerance::{compare, Tolerance};
use moekit_ops::{Backend, DType, TensorMeta};
use moekit_reference::ReferenceBackend;

fn run<B: Backend>(b: &B, cfg: &ModelConfig, w: &Weights, e: &Elastic) -> (Vec<f64>, Vec<(usize, Vec<i32>)>) {
    let m = Model::new(b, cfg, w, DType::F32).unwrap();
    let f = m.forward_text(&ids(37), e).unwrap();
    assert_eq!(f.text_logits.shape(), &[37, cfg.text_vocab]);
    (f.text_logits.to_f64_vec(), f.routing.into_iter().map(|r| (r.layer, r.ids)).collect())
}

fn elastic_cases(cfg: &ModelConfig) -> Vec<(&'static str, Elastic)> {
    let mut mask = vec![true; cfg.routed_experts];
    mask[1] = false;
    mask[4] = false;
    mask[6] = false;
    vec![
        ("full", Elastic::default()),
        ("depth", Elastic { layers: Some(vec![0, 2]), ..Elastic::default() }),
        ("width", Elastic { experts: Some(mask.clone()), ..Elastic::default() }),
        ("top-k", Elastic { top_k: Some(1), ..Elastic::default() }),
        ("all three", Elastic { layers: Some(vec![1, 2]), experts: Some(mask), top_k: Some(1) }),
    ]
}

#[test]
fn the_cpu_backend_gives_the_reference_logits_for_full_and_elastic_models() {
    let (cfg, w) = tiny();
    for (what, e) in elastic_cases(&cfg) {
        let (want, want_routing) = run(&ReferenceBackend, &cfg, &w, &e);
        let (got, got_routing) = run(&CpuBackend::new(), &cfg, &w, &e);
        assert_eq!(got_routing, want_routing, "{what}: routing");
        let report = compare(what, &want, &got, Tolerance::chained(DType::F32, cfg.hidden, 4 * cfg.layers));
        assert!(report.ok(), "{report}");
    }
}

#[test]
fn masked_experts_are_never_routed_to_and_top_k_is_per_call() {
    let (cfg, w) = tiny();
    for (what, e) in elastic_cases(&cfg) {
        let (_, routing) = run(&ReferenceBackend, &cfg, &w, &e);
        let k = e.top_k.unwrap_or(cfg.top_k);
        for (layer, chosen) in routing {
            assert_eq!(chosen.len(), 37 * k, "{what} layer {layer}");
            if let Some(mask) = &e.experts {
                assert!(chosen.iter().all(|&x| mask[x as usize]), "{what} layer {layer}: {chosen:?}");
            }
        }
    }
}

#[test]
fn a_depth_reduced_model_is_exactly_the_model_of_the_chosen_layers() {
    let (cfg, w) = tiny();
    let keep = [0usize, 2];
    // The same weights with layers 0 and 2 renumbered 0 and 1, in a two-layer config.
    let mut small = cfg.clone();
    small.layers = keep.len();
    let mut w2 = Weights::empty();
    for name in w.names() {
        let t = w.get(name).unwrap();
        let renamed = match name.strip_prefix("layers.") {
            None => Some(name.to_owned()),
            Some(rest) => {
                let (l, tail) = rest.split_once('.').unwrap();
                keep.iter().position(|&k| k.to_string() == l).map(|i| format!("layers.{i}.{tail}"))
            }
        };
        if let Some(n) = renamed {
            w2.insert_tensor(&n, t.clone());
        }
    }
    let e = Elastic { layers: Some(keep.to_vec()), ..Elastic::default() };
    let (cut, cut_routing) = run(&ReferenceBackend, &cfg, &w, &e);
    let (whole, whole_routing) = run(&ReferenceBackend, &small, &w2, &Elastic::default());
    assert_eq!(cut, whole);
    // Layer 2 of the cut model is layer 1 of the small one (layer 0 is dense: no routing).
    assert_eq!(cut_routing.iter().map(|r| r.0).collect::<Vec<_>>(), vec![2]);
    assert_eq!(whole_routing.iter().map(|r| r.0).collect::<Vec<_>>(), vec![1]);
    assert_eq!(cut_routing[0].1, whole_routing[0].1);
    // And it differs from the full model.
    let (full, _) = run(&ReferenceBackend, &cfg, &w, &Elastic::default());
    assert_ne!(cut, full);
}

#[test]
fn bad_inputs_and_elastic_options_are_typed_errors() {
    let (cfg, w) = tiny();
    let b = ReferenceBackend;
    let m = Model::new(&b, &cfg, &w, DType::F32).unwrap();
    let err = |ids: &[i32], e: Elastic| m.forward_text(ids, &e).unwrap_err().to_string();
    assert!(err(&[], Elastic::default()).contains("no tokens"));
    assert!(err(&[1, 256], Elastic::default()).contains("token id 256 outside the vocabulary"));
    assert!(err(&[1], Elastic { layers: Some(vec![2, 1]), ..Elastic::default() }).contains("strictly increasing"));
    assert!(err(&[1], Elastic { layers: Some(vec![3]), ..Elastic::default() }).contains("below 3"));
    assert!(err(&[1], Elastic { top_k: Some(3), ..Elastic::default() }).contains("top_k 3 must be in 1..=2"));
    let one = Some((0..8).map(|e| e == 0).collect());
    assert!(err(&[1], Elastic { experts: one, ..Elastic::default() }).contains("at least top_k = 2 kept"));
    let missing = Weights::empty();
    assert!(Model::new(&b, &cfg, &missing, DType::F32).unwrap_err().to_string().contains("embed.text"));
}

#[test]
fn plan_reports_the_sub_model_and_refuses_a_bad_one() {
    let (cfg, w) = tiny();
    let b = ReferenceBackend;
    let m = Model::new(&b, &cfg, &w, DType::F32).unwrap();
    let all = m.plan(&Elastic::default()).unwrap();
    assert_eq!(all, SubModel { layers: (0..cfg.layers).collect(), top_k: cfg.top_k, experts: cfg.routed_experts });
    let mask: Vec<bool> = (0..cfg.routed_experts).map(|e| e % 2 == 0).collect();
    let e = Elastic { layers: Some(vec![1, 2]), experts: Some(mask), top_k: Some(1) };
    let cut = SubModel { layers: vec![1, 2], top_k: 1, experts: cfg.routed_experts.div_ceil(2) };
    assert_eq!(m.plan(&e).unwrap(), cut);
    assert!(m.plan(&Elastic { top_k: Some(0), ..Elastic::default() }).is_err());
}
