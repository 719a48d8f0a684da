//! Dumps the logits of one forward on the CPU backend to a safetensors file, for the PyTorch
//! peer's outside check (`benches/peers/moekit_model.py check`).
//!
//! ```text
//! cargo run --release -p moekit-model --example dump_logits -- \
//!     [--preset tiny|small|ernie-a3b | --config FILE] --weights FILE --out FILE \
//!     [--ids 1,2,3 | --tokens T --seed S | --mixed | --mixed-demo --tokens T --seed S] \
//!     [--dtype f32|f16|bf16] [--layers 0,1] [--experts 0-5,7] [--top-k K]
//! ```
//!
//! Text mode (`--ids` or `--tokens`, `Model::forward_text`): the file holds `logits [T, V] f32`,
//! `ids [T] i32` and, for every MoE layer run, `routing.{layer} [T, k] i32` (the chosen
//! experts, by score).
//!
//! Mixed mode (`Model::forward_mtp` on segments of every modality): `--mixed` runs the
//! sequence of `model/tests/common/mod.rs::mixed` (text, an image of scales 1×1, 2×2, 3×3,
//! text, a two-frame video of scales 1×1, 2×2, four audio frames, text: 38 rows), rebuilt here
//! with the same values; `--mixed-demo` runs `moekit_model::demo_sequence(cfg, T, S)`. The file
//! holds every head: `text_logits [text rows, V]`, `visual_logits [visual rows, bits]`,
//! `audio_logits.{l} [audio rows, codebook]`, `audio_codes [audio rows, levels] i32`,
//! `mtp_logits.{j} [T - j - 1, V]`, `routing.{layer} [T, k] i32`, the rows of each head
//! (`text_rows`, `visual_rows`, `audio_rows`, i32), and moekit's layout for diagnosis
//! (`positions [3, T] i32`, `blocks [blocks, 2] i32`: each bidirectional block's rows
//! `start..end`); the metadata's `segments` (JSON) describes the input:
//! `[{"text": [ids]}, {"visual": {"frames", "scales": [[h, w]], "blocks": [start, end] | null,
//! "bits": [..]}}, {"audio": {"codes": [frames · levels]}}]`.
//!
//! In both modes the metadata holds the configuration as JSON (`config`) and the sub-model and
//! dtype of the run (`layers`, `experts`, `top_k`, `dtype`, `backend`), so the check needs no
//! other input than the weights file.

use moekit_model::{Audio, Elastic, Forward, Model, ModelConfig, Preset, Segment, Visual, Weights};
use moekit_ops::DType;
use rand::{rngs::StdRng, Rng, SeedableRng};
use safetensors::tensor::{Dtype, TensorView};
use std::collections::HashMap;
use std::path::PathBuf;
use std::process::ExitCode;

const USAGE: &str = "usage: dump_logits [--preset NAME | --config FILE] --weights FILE --out FILE \
[--ids 1,2,3 | --tokens T --seed S | --mixed | --mixed-demo --tokens T --seed S] [--dtype f32|f16|bf16] \
[--layers 0,1] [--experts 0-5,7] [--top-k K]";

/// Which input the run takes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Input {
    /// Text ids (`--ids`, or `--tokens` drawn from `--seed`) through `forward_text`.
    Text,
    /// The mixed sequence of `model/tests/common/mod.rs` through `forward_mtp`.
    Mixed,
    /// `demo_sequence(cfg, --tokens, --seed)` through `forward_mtp`.
    MixedDemo,
}

/// The parsed command line.
#[derive(Debug)]
struct Args {
    preset: String,
    config: Option<PathBuf>,
    weights: PathBuf,
    out: PathBuf,
    ids: Option<Vec<i32>>,
    tokens: usize,
    seed: u64,
    dtype: DType,
    layers: Option<Vec<usize>>,
    experts: Option<String>,
    top_k: Option<usize>,
    input: Input,
}

fn list<T: std::str::FromStr>(flag: &str, s: &str) -> Result<Vec<T>, String> {
    s.split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(|p| p.parse::<T>().map_err(|_| format!("{flag}: `{p}` is not a number")))
        .collect()
}

fn parse_args() -> Result<Args, String> {
    let mut a = Args {
        preset: "tiny".into(),
        config: None,
        weights: PathBuf::new(),
        out: PathBuf::new(),
        ids: None,
        tokens: 16,
        seed: 0,
        dtype: DType::F32,
        layers: None,
        experts: None,
        top_k: None,
        input: Input::Text,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        if flag == "-h" || flag == "--help" {
            return Err(USAGE.into());
        }
        match flag.as_str() {
            "--mixed" => {
                a.input = Input::Mixed;
                continue;
            }
            "--mixed-demo" => {
                a.input = Input::MixedDemo;
                continue;
            }
            _ => {}
        }
        let v = it.next().ok_or_else(|| format!("{flag} needs a value\n{USAGE}"))?;
        let num = |v: &str| v.parse::<usize>().map_err(|_| format!("{flag}: `{v}` is not a number"));
        match flag.as_str() {
            "--preset" => a.preset = v,
            "--config" => a.config = Some(v.into()),
            "--weights" => a.weights = v.into(),
            "--out" => a.out = v.into(),
            "--ids" => a.ids = Some(list(&flag, &v)?),
            "--tokens" => a.tokens = num(&v)?,
            "--seed" => a.seed = num(&v)? as u64,
            "--dtype" => {
                a.dtype = match v.as_str() {
                    "f32" => DType::F32,
                    "f16" => DType::F16,
                    "bf16" => DType::BF16,
                    other => return Err(format!("--dtype: `{other}` is not f32, f16 or bf16")),
                }
            }
            "--layers" => a.layers = Some(list(&flag, &v)?),
            "--experts" => a.experts = Some(v),
            "--top-k" => a.top_k = Some(num(&v)?),
            other => return Err(format!("unknown option `{other}`\n{USAGE}")),
        }
    }
    if a.weights.as_os_str().is_empty() || a.out.as_os_str().is_empty() {
        return Err(format!("--weights and --out are required\n{USAGE}"));
    }
    if a.input != Input::Text && a.ids.is_some() {
        return Err(format!("--ids is for text mode, not with --mixed / --mixed-demo\n{USAGE}"));
    }
    Ok(a)
}

/// `0-5,7` → a mask over `n` experts (the `moekit run --experts` syntax).
fn expert_mask(spec: &str, n: usize) -> Result<Vec<bool>, String> {
    let mut mask = vec![false; n];
    for part in spec.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (lo, hi) = part.split_once('-').unwrap_or((part, part));
        let parse = |s: &str| s.trim().parse::<usize>().map_err(|_| format!("--experts: `{part}` is not a range"));
        let (lo, hi) = (parse(lo)?, parse(hi)?);
        if lo > hi || hi >= n {
            return Err(format!("--experts: `{part}` is not a range inside 0..{n}"));
        }
        mask[lo..=hi].iter_mut().for_each(|m| *m = true);
    }
    Ok(mask)
}

fn join<T: ToString>(v: &[T]) -> String {
    v.iter().map(T::to_string).collect::<Vec<_>>().join(",")
}

/// The mixed sequence of `model/tests/common/mod.rs::mixed`, value for value: text, an image of
/// three scales, text, a two-frame video, audio, text (38 rows on the tiny preset).
fn mixed(cfg: &ModelConfig) -> Vec<Segment> {
    let ids = |t: usize| -> Vec<i32> { (0..t).map(|i| ((i * 37 + 11) % 256) as i32).collect() };
    let visual = |frames: usize, scales: &[(usize, usize)], seed: u64| -> Visual {
        let n = frames * scales.iter().map(|&(h, w)| h * w).sum::<usize>();
        let bits =
            (0..n * cfg.visual_code_bits).map(|i| ((i as u64 * 2654435761 + seed * 97) >> 7 & 1) as u8).collect();
        Visual { frames, scales: scales.to_vec(), blocks: None, bits }
    };
    let audio = |frames: usize, seed: i32| -> Audio {
        let n = frames * cfg.audio_levels;
        Audio { codes: (0..n as i32).map(|i| (i * 13 + seed * 7 + 3) % cfg.audio_codebook as i32).collect() }
    };
    vec![
        Segment::Text(ids(5)),
        Segment::Visual(visual(1, &[(1, 1), (2, 2), (3, 3)], 1)),
        Segment::Text(vec![7, 8, 9]),
        Segment::Visual(visual(2, &[(1, 1), (2, 2)], 2)),
        Segment::Audio(audio(4, 1)),
        Segment::Text(vec![42, 43]),
    ]
}

/// The segments as JSON (the `segments` metadata the check rebuilds them from).
fn segments_json(segments: &[Segment]) -> String {
    let v: Vec<serde_json::Value> = segments
        .iter()
        .map(|s| match s {
            Segment::Text(ids) => serde_json::json!({ "text": ids }),
            Segment::Visual(v) => serde_json::json!({ "visual": {
                "frames": v.frames,
                "scales": v.scales.iter().map(|&(h, w)| [h, w]).collect::<Vec<_>>(),
                "blocks": v.blocks.as_ref().map(|b| [b.start, b.end]),
                "bits": v.bits,
            }}),
            Segment::Audio(a) => serde_json::json!({ "audio": { "codes": a.codes } }),
        })
        .collect();
    serde_json::Value::Array(v).to_string()
}

/// A tensor to write: (name, dtype, shape, little-endian bytes).
type Named = (String, Dtype, Vec<usize>, Vec<u8>);

fn f32_tensor(name: &str, shape: Vec<usize>, v: &[f32]) -> Result<Named, String> {
    if !v.iter().all(|x| x.is_finite()) {
        return Err(format!("{name} holds non-finite values"));
    }
    Ok((name.into(), Dtype::F32, shape, bytemuck::cast_slice(v).to_vec()))
}

fn i32_tensor(name: &str, shape: Vec<usize>, v: &[i32]) -> Named {
    (name.into(), Dtype::I32, shape, bytemuck::cast_slice(v).to_vec())
}

fn rows_i32(rows: &[usize]) -> Vec<i32> {
    rows.iter().map(|&r| r as i32).collect()
}

/// Every output of a mixed forward as tensors.
fn mixed_tensors(cfg: &ModelConfig, f: &Forward) -> Result<Vec<Named>, String> {
    let t = f.layout.rows;
    let (nt, nv, na) = (f.text_rows.len(), f.visual_rows.len(), f.audio_rows.len());
    let mut out = vec![
        f32_tensor("text_logits", vec![nt, cfg.text_vocab], &f.text_logits.to_f32_vec())?,
        f32_tensor("visual_logits", vec![nv, cfg.visual_code_bits], &f.visual_logits.to_f32_vec())?,
        i32_tensor("audio_codes", vec![na, cfg.audio_levels], &f.audio_codes),
        i32_tensor("text_rows", vec![nt], &rows_i32(&f.text_rows)),
        i32_tensor("visual_rows", vec![nv], &rows_i32(&f.visual_rows)),
        i32_tensor("audio_rows", vec![na], &rows_i32(&f.audio_rows)),
        i32_tensor("positions", vec![3, t], &f.layout.positions),
    ];
    let blocks: Vec<i32> = f.layout.blocks.iter().flat_map(|b| [b.start as i32, b.end as i32]).collect();
    out.push(i32_tensor("blocks", vec![f.layout.blocks.len(), 2], &blocks));
    for (l, a) in f.audio_logits.iter().enumerate() {
        out.push(f32_tensor(&format!("audio_logits.{l}"), vec![na, cfg.audio_codebook], &a.to_f32_vec())?);
    }
    for (j, m) in f.mtp_logits.iter().enumerate() {
        out.push(f32_tensor(&format!("mtp_logits.{j}"), vec![t - j - 1, cfg.text_vocab], &m.to_f32_vec())?);
    }
    Ok(out)
}

fn run() -> Result<(), String> {
    let a = parse_args()?;
    let cfg = match &a.config {
        Some(p) => ModelConfig::from_json_file(p).map_err(|e| e.to_string())?,
        None => Preset::from_name(&a.preset).map_err(|e| e.to_string())?.config(),
    };
    let weights = Weights::load(&cfg, &a.weights).map_err(|e| e.to_string())?;
    let experts = a.experts.as_deref().map(|s| expert_mask(s, cfg.routed_experts)).transpose()?;
    let elastic = Elastic { layers: a.layers.clone(), experts: experts.clone(), top_k: a.top_k };

    let cpu = moekit_cpu::CpuBackend::new();
    let model = Model::new(&cpu, &cfg, &weights, a.dtype).map_err(|e| e.to_string())?;

    let mut extra_meta: Vec<(&str, String)> = Vec::new();
    let (f, mut tensors, what) = match a.input {
        Input::Text => {
            let ids: Vec<i32> = match &a.ids {
                Some(ids) => ids.clone(),
                None => {
                    let mut rng = StdRng::seed_from_u64(a.seed);
                    (0..a.tokens).map(|_| rng.gen_range(0..cfg.text_vocab as i32)).collect()
                }
            };
            let f = model.forward_text(&ids, &elastic).map_err(|e| e.to_string())?;
            let (t, v) = (ids.len(), cfg.text_vocab);
            let tensors =
                vec![f32_tensor("logits", vec![t, v], &f.text_logits.to_f32_vec())?, i32_tensor("ids", vec![t], &ids)];
            (f, tensors, format!("logits [{t}, {v}]"))
        }
        Input::Mixed | Input::MixedDemo => {
            let segments = match a.input {
                Input::Mixed => mixed(&cfg),
                _ => moekit_model::demo_sequence(&cfg, a.tokens, a.seed),
            };
            let f = model.forward_mtp(&segments, &elastic).map_err(|e| e.to_string())?;
            let tensors = mixed_tensors(&cfg, &f)?;
            extra_meta.push(("segments", segments_json(&segments)));
            extra_meta.push(("mode", "mixed".into()));
            let what = format!(
                "mixed, {} rows (text {}, visual {}, audio {}), {} MTP heads",
                f.layout.rows,
                f.text_rows.len(),
                f.visual_rows.len(),
                f.audio_rows.len(),
                f.mtp_logits.len()
            );
            (f, tensors, what)
        }
    };
    let t = f.layout.rows;
    for r in &f.routing {
        tensors.push(i32_tensor(&format!("routing.{}", r.layer), vec![t, r.k], &r.ids));
    }
    let views = tensors
        .iter()
        .map(|(name, dt, shape, b)| {
            TensorView::new(*dt, shape.clone(), b).map(|view| (name.as_str(), view)).map_err(|e| e.to_string())
        })
        .collect::<Result<Vec<_>, String>>()?;

    let layers = a.layers.unwrap_or_else(|| (0..cfg.layers).collect());
    let kept: Vec<usize> = match &experts {
        Some(m) => (0..cfg.routed_experts).filter(|&e| m[e]).collect(),
        None => (0..cfg.routed_experts).collect(),
    };
    let k = a.top_k.unwrap_or(cfg.top_k);
    let meta: HashMap<String, String> = [
        ("config", cfg.to_json()),
        ("layers", join(&layers)),
        ("experts", join(&kept)),
        ("top_k", k.to_string()),
        ("dtype", format!("{:?}", a.dtype).to_lowercase()),
        ("backend", "cpu".to_string()),
        ("weights", a.weights.display().to_string()),
    ]
    .into_iter()
    .chain(extra_meta)
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    safetensors::serialize_to_file(views, &Some(meta), &a.out).map_err(|e| format!("{}: {e}", a.out.display()))?;
    println!(
        "wrote {}: {what} of `{}` on cpu ({:?}), layers {layers:?}, {} of {} experts, top-{k}",
        a.out.display(),
        cfg.name,
        a.dtype,
        kept.len(),
        cfg.routed_experts
    );
    Ok(())
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("dump_logits: {e}");
            ExitCode::FAILURE
        }
    }
}
