//! Dumps the text logits of one forward on the CPU backend to a safetensors file, for the
//! PyTorch peer's outside check (`benches/peers/moekit_model.py check`).
//!
//! ```text
//! cargo run --release -p moekit-model --example dump_logits -- \
//!     [--preset tiny|small|ernie-a3b | --config FILE] --weights FILE --out FILE \
//!     [--ids 1,2,3 | --tokens T --seed S] [--dtype f32|f16|bf16] \
//!     [--layers 0,1] [--experts 0-5,7] [--top-k K]
//! ```
//!
//! The file holds `logits [T, V] f32`, `ids [T] i32` and, for every MoE layer run,
//! `routing.{layer} [T, k] i32` (the chosen experts, by score). Its metadata holds the
//! configuration as JSON (`config`) and the sub-model and dtype of the run (`layers`,
//! `experts`, `top_k`, `dtype`, `backend`), so the check needs no other input than the
//! weights file.

use moekit_model::{Elastic, Model, ModelConfig, Preset, Weights};
use moekit_ops::DType;
use rand::{rngs::StdRng, Rng, SeedableRng};
use safetensors::tensor::{Dtype, TensorView};
use std::collections::HashMap;
use std::path::PathBuf;
use std::process::ExitCode;

const USAGE: &str = "usage: dump_logits [--preset NAME | --config FILE] --weights FILE --out FILE \
[--ids 1,2,3 | --tokens T --seed S] [--dtype f32|f16|bf16] [--layers 0,1] [--experts 0-5,7] [--top-k K]";

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
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        if flag == "-h" || flag == "--help" {
            return Err(USAGE.into());
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

fn run() -> Result<(), String> {
    let a = parse_args()?;
    let cfg = match &a.config {
        Some(p) => ModelConfig::from_json_file(p).map_err(|e| e.to_string())?,
        None => Preset::from_name(&a.preset).map_err(|e| e.to_string())?.config(),
    };
    let weights = Weights::load(&cfg, &a.weights).map_err(|e| e.to_string())?;
    let ids: Vec<i32> = match a.ids {
        Some(ids) => ids,
        None => {
            let mut rng = StdRng::seed_from_u64(a.seed);
            (0..a.tokens).map(|_| rng.gen_range(0..cfg.text_vocab as i32)).collect()
        }
    };
    let experts = a.experts.as_deref().map(|s| expert_mask(s, cfg.routed_experts)).transpose()?;
    let elastic = Elastic { layers: a.layers.clone(), experts: experts.clone(), top_k: a.top_k };

    let cpu = moekit_cpu::CpuBackend::new();
    let model = Model::new(&cpu, &cfg, &weights, a.dtype).map_err(|e| e.to_string())?;
    let f = model.forward_text(&ids, &elastic).map_err(|e| e.to_string())?;
    let (t, v) = (ids.len(), cfg.text_vocab);
    let logits = f.text_logits.to_f32_vec();
    if !logits.iter().all(|x| x.is_finite()) {
        return Err("the logits hold non-finite values".into());
    }

    // Every tensor as (name, dtype, shape, little-endian bytes).
    let mut tensors: Vec<(String, Dtype, Vec<usize>, Vec<u8>)> = vec![
        ("logits".into(), Dtype::F32, vec![t, v], bytemuck::cast_slice(&logits).to_vec()),
        ("ids".into(), Dtype::I32, vec![t], bytemuck::cast_slice(&ids).to_vec()),
    ];
    for r in &f.routing {
        tensors.push((format!("routing.{}", r.layer), Dtype::I32, vec![t, r.k], bytemuck::cast_slice(&r.ids).to_vec()));
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
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    safetensors::serialize_to_file(views, &Some(meta), &a.out).map_err(|e| format!("{}: {e}", a.out.display()))?;
    println!(
        "wrote {}: logits [{t}, {v}] of `{}` on cpu ({:?}), layers {layers:?}, {} of {} experts, top-{k}",
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
