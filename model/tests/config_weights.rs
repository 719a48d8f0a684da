//! The configuration (presets, JSON, validation) and the weights (specs, seeded init,
//! safetensors files) of the model.

use moekit_model::{param_count, specs, ConfigError, FileDType, Init, ModelConfig, Preset, Weights, WeightsError};
use moekit_ops::{DType, HostTensor, TensorMeta};
use std::collections::HashSet;
use std::path::PathBuf;

fn tmp(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("moekit-model-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

#[test]
fn every_preset_is_valid_and_survives_a_json_round_trip() {
    for name in Preset::NAMES {
        let cfg = Preset::from_name(name).unwrap().config();
        assert_eq!(cfg.name, name);
        cfg.validate().unwrap();
        let path = tmp(&format!("{name}.json"));
        std::fs::write(&path, cfg.to_json()).unwrap();
        assert_eq!(ModelConfig::from_json_file(&path).unwrap(), cfg);
    }
    assert_eq!(Preset::from_name(" Tiny "), Ok(Preset::Tiny));
    assert!(matches!(Preset::from_name("huge"), Err(ConfigError::UnknownPreset(n)) if n == "huge"));
}

#[test]
fn json_defaults_fill_the_optional_fields_and_unknown_fields_are_refused() {
    let tiny = Preset::Tiny.config();
    let mut v: serde_json::Value = serde_json::from_str(&tiny.to_json()).unwrap();
    let obj = v.as_object_mut().unwrap();
    for optional in ["rope_base", "route_scale", "dense_first_layers", "dense_intermediate", "mtp_depth", "rms_eps"] {
        obj.remove(optional);
    }
    let path = tmp("defaults.json");
    std::fs::write(&path, v.to_string()).unwrap();
    let cfg = ModelConfig::from_json_file(&path).unwrap();
    assert_eq!((cfg.rope_base, cfg.route_scale, cfg.dense_first_layers, cfg.mtp_depth), (1e6, 1.0, 0, 0));
    obj_insert(&mut v, "hidden_size", 128);
    std::fs::write(&path, v.to_string()).unwrap();
    let err = ModelConfig::from_json_file(&path).unwrap_err();
    assert!(matches!(&err, ConfigError::Read { msg, .. } if msg.contains("hidden_size")), "{err}");
    let err = ModelConfig::from_json_file(&tmp("absent.json")).unwrap_err();
    assert!(matches!(err, ConfigError::Read { .. }));
}

fn obj_insert(v: &mut serde_json::Value, k: &str, n: u64) {
    v.as_object_mut().unwrap().insert(k.into(), n.into());
}

#[test]
fn validation_names_the_field_and_the_numbers() {
    let base = Preset::Tiny.config();
    let check = |f: &dyn Fn(&mut ModelConfig), want: &str| {
        let mut c = base.clone();
        f(&mut c);
        let err = c.validate().unwrap_err().to_string();
        assert!(err.contains(want), "{err:?} lacks {want:?}");
    };
    check(&|c| c.hidden = 0, "`hidden` must be positive");
    check(&|c| c.routed_experts = 0, "`routed_experts`");
    check(&|c| c.kv_heads = 3, "q_heads 2 is not a multiple of kv_heads 3");
    check(&|c| c.head_dim = 96, "head_dim 96 is not one the attention op takes");
    check(&|c| c.head_dim = 15, "head_dim 15 is odd");
    check(&|c| c.rope_sections = [2, 2, 2], "sum to 6, not head_dim / 2 = 32");
    check(&|c| c.top_k = 9, "top_k 9 exceeds routed_experts 8");
    check(&|c| c.dense_first_layers = 3, "dense_first_layers 3 exceeds layers 2");
    check(&|c| c.dense_first_layers = 1, "`dense_intermediate` must be positive");
    check(&|c| c.shared_intermediate = 0, "`shared_intermediate`");
    check(&|c| c.rms_eps = f32::NAN, "rms_eps NaN must be > 0");
    let mut no_shared = base.clone();
    no_shared.shared_experts = 0;
    no_shared.shared_intermediate = 0;
    no_shared.validate().unwrap();
}

/// The parameter count written out field by field (independent of `specs`).
fn count_by_hand(c: &ModelConfig) -> usize {
    let h = c.hidden;
    let attn = h * c.q_heads * c.head_dim * 2 + h * c.kv_heads * c.head_dim * 2 + 2 * h;
    let moe = h * c.routed_experts
        + c.routed_experts
        + c.routed_experts * 3 * h * c.expert_intermediate
        + 3 * h * c.shared_experts * c.shared_intermediate;
    let dense = 3 * h * c.dense_intermediate;
    let layers = c.dense_first_layers * (attn + dense) + (c.layers - c.dense_first_layers) * (attn + moe);
    let embed = (c.text_vocab + c.visual_code_bits + c.audio_levels * c.audio_codebook) * h;
    let heads = embed + h;
    let mtp = c.mtp_depth * (2 * h + 2 * h * h + attn + moe);
    embed + layers + heads + mtp
}

#[test]
fn specs_cover_every_parameter_once() {
    for p in [Preset::Tiny, Preset::Small, Preset::ErnieA3b] {
        let c = p.config();
        let s = specs(&c);
        let names: HashSet<_> = s.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(names.len(), s.len(), "{p:?}: duplicate names");
        assert_eq!(param_count(&c), count_by_hand(&c), "{p:?}");
    }
    // The ERNIE-like preset: ~21 B parameters (28 layers, 64 experts of 3·2560·1536).
    let n = param_count(&Preset::ErnieA3b.config());
    assert!((20_000_000_000..23_000_000_000).contains(&n), "{n}");
    // A dense first layer has an MLP and no router; the others a router and experts.
    let mut c = Preset::Tiny.config();
    c.dense_first_layers = 1;
    c.dense_intermediate = 48;
    let s = specs(&c);
    let has = |n: &str| s.iter().any(|t| t.name == n);
    assert!(has("layers.0.mlp.up") && !has("layers.0.router") && !has("layers.0.experts.up"));
    assert!(has("layers.1.router") && has("layers.1.experts.up") && !has("layers.1.mlp.up"));
    let up = s.iter().find(|t| t.name == "layers.1.experts.up").unwrap();
    assert_eq!(up.shape, vec![8, 128, 64]);
    assert_eq!(s.iter().find(|t| t.name == "layers.1.router_bias").unwrap().init, Init::Zeros);
}

#[test]
fn random_weights_are_seeded_and_follow_their_init() {
    let c = Preset::Tiny.config();
    let a = Weights::random(&c, 7);
    assert_eq!(a, Weights::random(&c, 7));
    assert_ne!(a, Weights::random(&c, 8));
    assert_eq!(a.len(), specs(&c).len());
    assert_eq!(a.params(), param_count(&c));
    let norm = a.get("layers.0.attn_norm").unwrap();
    assert_eq!((norm.shape(), norm.dtype()), (&[128usize][..], DType::F32));
    assert!(norm.to_f32_vec().iter().all(|&v| v == 1.0));
    assert!(a.get("layers.1.router_bias").unwrap().to_f32_vec().iter().all(|&v| v == 0.0));
    let emb = a.get("embed.text").unwrap().to_f32_vec();
    let std = (emb.iter().map(|v| v * v).sum::<f32>() / emb.len() as f32).sqrt();
    assert!((0.018..0.022).contains(&std), "{std}");
    assert!(a.get("no.such.tensor").is_none());
    // Drawn straight in bf16: the f32 draw rounded once, 2 bytes a parameter.
    let h = Weights::random_as(&c, 7, FileDType::BF16);
    for s in specs(&c) {
        let (x, y) = (a.get(&s.name).unwrap(), h.get(&s.name).unwrap());
        assert_eq!(y.dtype(), DType::BF16);
        assert_eq!(*y, HostTensor::from_f32(DType::BF16, x.shape(), &x.to_f32_vec()), "{}", s.name);
    }
}

#[test]
fn safetensors_files_round_trip_and_are_checked_against_the_config() {
    let c = Preset::Tiny.config();
    let w = Weights::random(&c, 1);
    let f32_path = tmp("tiny-f32.safetensors");
    w.save(&f32_path, FileDType::F32).unwrap();
    assert_eq!(Weights::load(&c, &f32_path).unwrap(), w);
    // The progress callback climbs to the file's tensor bytes (4 per f32 parameter).
    let mut seen = Vec::new();
    let again = Weights::load_with_progress(&c, &f32_path, &mut |done, total| seen.push((done, total))).unwrap();
    assert_eq!(again, w);
    assert_eq!(seen.len(), w.len());
    assert!(seen.windows(2).all(|p| p[0].0 < p[1].0));
    assert_eq!(seen.last().copied(), Some((4 * w.params() as u64, 4 * w.params() as u64)));
    for (dtype, rel) in [(FileDType::BF16, 2f32.powi(-8)), (FileDType::F16, 2f32.powi(-11))] {
        let path = tmp(&format!("tiny-{dtype:?}.safetensors"));
        w.save(&path, dtype).unwrap();
        let r = Weights::load(&c, &path).unwrap();
        for s in specs(&c) {
            let (a, b) = (w.get(&s.name).unwrap().to_f32_vec(), r.get(&s.name).unwrap().to_f32_vec());
            assert_eq!(r.get(&s.name).unwrap().dtype(), dtype.dtype(), "read in the file's dtype");
            for (x, y) in a.iter().zip(b) {
                assert!((x - y).abs() <= rel * x.abs() + 1e-7, "{dtype:?} {}: {x} vs {y}", s.name);
            }
        }
    }
    // Another configuration: a tensor with another shape, or one the file lacks.
    let mut wide = c.clone();
    wide.expert_intermediate = 48;
    let err = Weights::load(&wide, &f32_path).unwrap_err();
    assert!(matches!(&err, WeightsError::Shape { name, .. } if name == "layers.0.experts.up"), "{err}");
    let mut deeper = c.clone();
    deeper.layers = 3;
    let err = Weights::load(&deeper, &f32_path).unwrap_err();
    assert!(matches!(&err, WeightsError::Missing { name, .. } if name.starts_with("layers.2.")), "{err}");
    // Not a safetensors file; no file.
    let junk = tmp("junk.safetensors");
    std::fs::write(&junk, b"not a safetensors file at all").unwrap();
    assert!(matches!(Weights::load(&c, &junk), Err(WeightsError::Format { .. })));
    assert!(matches!(Weights::load(&c, &tmp("absent.safetensors")), Err(WeightsError::Io { .. })));
}
