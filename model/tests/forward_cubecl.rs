//! The decoder on cubecl's wgpu runtime (CI: lavapipe) against the reference path, for the
//! full model and elastic sub-models. Needs `--features cubecl-wgpu`; without a Vulkan
//! adapter it prints `SKIPPED` (a failure under `MOEKIT_NO_SKIP=1`, as in CI).
#![cfg(feature = "cubecl-wgpu")]

use moekit_cubecl::{CubeBackend, WgpuRuntime};
use moekit_model::{Elastic, Model, Preset, Weights};
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
