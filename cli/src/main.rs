//! `moekit`: the unified MoE model end to end on any moekit backend.
//!
//! ```text
//! moekit run [--preset tiny|small|ernie-a3b | --config FILE] [--weights FILE | --seed N]
//!            [--backend auto|reference|cpu|cuda|cubecl-cuda|cubecl-wgpu] [--dtype f32|f16|bf16]
//!            [--tokens T] [--iters N] [--depth L,L,..] [--experts E,E-E,..] [--top-k K]
//! moekit init-weights [--preset ... | --config FILE] [--seed N] --out FILE [--dtype f32|f16|bf16]
//! ```
//!
//! `run` sends a text sequence through the model (so far the text path; images, video and
//! audio come with issue #5's next steps) and prints the backend, the sub-model, each MoE
//! layer's routing, the last position's top tokens and the time per forward with tokens/s.
//! `--backend auto` (the default) takes the first backend that starts: CUDA, cubecl on CUDA,
//! cubecl on wgpu, then the CPU.

use clap::{Parser, Subcommand, ValueEnum};
use moekit_model::{param_count, Elastic, FileDType, Modality, Model, ModelConfig, Preset, RoutingStats, Weights};
use moekit_ops::{Backend, DType, Error};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

#[derive(Parser, Debug)]
#[command(name = "moekit", version, about = "The unified multimodal MoE model on moekit's backends")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

/// Which model: a preset or a JSON config.
#[derive(clap::Args, Debug)]
struct Which {
    /// A shipped configuration (tiny, small, ernie-a3b).
    #[arg(long, default_value = "tiny", conflicts_with = "config")]
    preset: String,
    /// A JSON configuration file (the format `ModelConfig` writes).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Seed of the random weights (when no `--weights`).
    #[arg(long, default_value_t = 0)]
    seed: u64,
}

impl Which {
    fn config(&self) -> Result<ModelConfig, String> {
        match &self.config {
            Some(p) => ModelConfig::from_json_file(p).map_err(|e| e.to_string()),
            None => Ok(Preset::from_name(&self.preset).map_err(|e| e.to_string())?.config()),
        }
    }
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum DTypeArg {
    F32,
    F16,
    Bf16,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Run a text sequence through the model and time it.
    Run {
        #[command(flatten)]
        which: Which,
        /// Weights from a safetensors file instead of the seeded random init.
        #[arg(long)]
        weights: Option<PathBuf>,
        /// auto (CUDA, cubecl-cuda, cubecl-wgpu, then CPU), reference, cpu, cuda, cubecl-cuda, cubecl-wgpu.
        #[arg(long, default_value = "auto")]
        backend: String,
        /// Compute dtype (f32 on the reference and CPU backends is the exact path).
        #[arg(long, value_enum, default_value = "f32")]
        dtype: DTypeArg,
        /// Tokens in the sequence.
        #[arg(long, default_value_t = 64)]
        tokens: usize,
        /// Timed forwards after one warm-up.
        #[arg(long, default_value_t = 3)]
        iters: usize,
        /// Elastic depth: the layers to run, e.g. `0,2,3`.
        #[arg(long, value_delimiter = ',')]
        depth: Option<Vec<usize>>,
        /// Elastic width: the routed experts to keep, e.g. `0-5,7`.
        #[arg(long)]
        experts: Option<String>,
        /// Elastic sparsity: routed experts per token.
        #[arg(long)]
        top_k: Option<usize>,
    },
    /// Write a configuration's seeded random weights to a safetensors file.
    InitWeights {
        #[command(flatten)]
        which: Which,
        /// The file to write.
        #[arg(long)]
        out: PathBuf,
        /// Element type in the file.
        #[arg(long, value_enum, default_value = "bf16")]
        dtype: DTypeArg,
    },
}

/// `0-5,7` → a mask over `n` experts.
fn expert_mask(spec: &str, n: usize) -> Result<Vec<bool>, String> {
    let mut mask = vec![false; n];
    for part in spec.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (lo, hi) = match part.split_once('-') {
            Some((a, b)) => (a.trim(), b.trim()),
            None => (part, part),
        };
        let parse = |s: &str| s.parse::<usize>().map_err(|_| format!("--experts: `{part}` is not a number or a range"));
        let (lo, hi) = (parse(lo)?, parse(hi)?);
        if lo > hi || hi >= n {
            return Err(format!("--experts: `{part}` is not a range inside 0..{n}"));
        }
        mask[lo..=hi].iter_mut().for_each(|m| *m = true);
    }
    Ok(mask)
}

/// What `run` does once the backend is up.
struct RunPlan {
    cfg: ModelConfig,
    weights: Weights,
    dtype: DType,
    tokens: usize,
    iters: usize,
    elastic: Elastic,
}

fn run_on<B: Backend>(b: &B, p: &RunPlan) -> Result<(), String> {
    let cfg = &p.cfg;
    let t0 = Instant::now();
    let model = Model::new(b, cfg, &p.weights, p.dtype).map_err(|e| e.to_string())?;
    let upload = t0.elapsed().as_secs_f64();
    println!("backend      {} ({:?}), weights uploaded in {:.2} s", b.name(), p.dtype, upload);
    let layers = p.elastic.layers.clone().unwrap_or_else(|| (0..cfg.layers).collect());
    let kept = p.elastic.experts.as_ref().map_or(cfg.routed_experts, |m| m.iter().filter(|&&x| x).count());
    let k = p.elastic.top_k.unwrap_or(cfg.top_k);
    println!(
        "sub-model    layers {layers:?} of {}, {kept} of {} routed experts, top-{k} of {}",
        cfg.layers, cfg.routed_experts, cfg.top_k
    );
    let ids: Vec<i32> = (0..p.tokens).map(|i| ((i * 7919 + 13) % cfg.text_vocab) as i32).collect();
    let f = model.forward_text(&ids, &p.elastic).map_err(|e| e.to_string())?;
    let mut stats = RoutingStats::new(cfg.routed_experts);
    for r in &f.routing {
        stats.record(r.layer, Modality::Text, &r.ids);
        let counts = stats.layer_counts(r.layer, None).unwrap_or_default();
        let used = counts.iter().filter(|&&c| c > 0).count();
        let max = counts.iter().max().copied().unwrap_or(0);
        let mean = r.ids.len() as f64 / kept.max(1) as f64;
        println!(
            "routing      layer {:>2}: {used} experts used, busiest {max} rows ({:.2}× the mean), entropy {:.3}",
            r.layer,
            max as f64 / mean.max(1e-9),
            stats.entropy(r.layer).unwrap_or(0.0)
        );
    }
    let logits = f.text_logits.to_f32_vec();
    let v = cfg.text_vocab;
    let last = &logits[(p.tokens - 1) * v..p.tokens * v];
    let mut top: Vec<usize> = (0..v).collect();
    top.sort_by(|&a, &b| last[b].total_cmp(&last[a]));
    let shown: Vec<String> = top.iter().take(5).map(|&i| format!("{i} ({:.3})", last[i])).collect();
    println!("text head    last position, top tokens: {}", shown.join(", "));
    if !logits.iter().all(|x| x.is_finite()) {
        return Err("the logits hold non-finite values".into());
    }
    let mut times = Vec::with_capacity(p.iters);
    for _ in 0..p.iters {
        let t = Instant::now();
        model.forward_text(&ids, &p.elastic).map_err(|e| e.to_string())?;
        times.push(t.elapsed().as_secs_f64());
    }
    if let Some(best) = times.iter().copied().reduce(f64::min) {
        println!(
            "forward      {} tokens: best {:.2} ms of {} ({:.0} tokens/s; includes the logits' download)",
            p.tokens,
            best * 1e3,
            p.iters,
            p.tokens as f64 / best
        );
    }
    Ok(())
}

/// Starts the named backend and runs; `Err(e)` when it does not start.
fn dispatch(name: &str, p: &RunPlan) -> Result<Result<(), String>, Error> {
    match name {
        "reference" => Ok(run_on(&moekit_reference::ReferenceBackend, p)),
        "cpu" => Ok(run_on(&moekit_cpu::CpuBackend::new(), p)),
        "cuda" => Ok(run_on(&moekit_cuda::CudaBackend::new(0)?, p)),
        "cubecl-cuda" => Ok(run_on(&moekit_cubecl::CubeBackend::<moekit_cubecl::CudaRuntime>::cuda(0)?, p)),
        "cubecl-wgpu" => Ok(run_on(&moekit_cubecl::CubeBackend::<moekit_cubecl::WgpuRuntime>::wgpu()?, p)),
        other => Err(Error::unsupported(
            "moekit",
            format!("unknown backend `{other}` (auto, reference, cpu, cuda, cubecl-cuda, cubecl-wgpu)"),
        )),
    }
}

fn main() -> ExitCode {
    match Cli::parse().cmd {
        Cmd::Run { which, weights, backend, dtype, tokens, iters, depth, experts, top_k } => {
            let plan = (|| -> Result<RunPlan, String> {
                let cfg = which.config()?;
                if tokens == 0 {
                    return Err("--tokens must be positive".into());
                }
                let weights = match &weights {
                    Some(path) => Weights::load(&cfg, path).map_err(|e| e.to_string())?,
                    None => Weights::random(&cfg, which.seed),
                };
                let experts = experts.map(|s| expert_mask(&s, cfg.routed_experts)).transpose()?;
                let dtype = match dtype {
                    DTypeArg::F32 => DType::F32,
                    DTypeArg::F16 => DType::F16,
                    DTypeArg::Bf16 => DType::BF16,
                };
                println!(
                    "model        {}: {} layers, H {}, {} routed experts of I {} (top-{}), {} shared; {:.2} M parameters",
                    cfg.name,
                    cfg.layers,
                    cfg.hidden,
                    cfg.routed_experts,
                    cfg.expert_intermediate,
                    cfg.top_k,
                    cfg.shared_experts,
                    param_count(&cfg) as f64 / 1e6
                );
                Ok(RunPlan { cfg, weights, dtype, tokens, iters, elastic: Elastic { layers: depth, experts, top_k } })
            })();
            let plan = match plan {
                Ok(p) => p,
                Err(e) => {
                    eprintln!("moekit: {e}");
                    return ExitCode::from(2);
                }
            };
            let order: Vec<&str> = if backend == "auto" {
                vec!["cuda", "cubecl-cuda", "cubecl-wgpu", "cpu"]
            } else {
                vec![backend.as_str()]
            };
            for name in order {
                match dispatch(name, &plan) {
                    Ok(Ok(())) => return ExitCode::SUCCESS,
                    Ok(Err(e)) => {
                        eprintln!("moekit: {name}: {e}");
                        return ExitCode::FAILURE;
                    }
                    Err(e) if backend == "auto" => {
                        eprintln!("moekit: {name} not available ({e}); trying the next backend")
                    }
                    Err(e) => {
                        eprintln!("moekit: {e}");
                        return ExitCode::from(2);
                    }
                }
            }
            ExitCode::FAILURE
        }
        Cmd::InitWeights { which, out, dtype } => {
            let cfg = match which.config() {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("moekit: {e}");
                    return ExitCode::from(2);
                }
            };
            let fd = match dtype {
                DTypeArg::F32 => FileDType::F32,
                DTypeArg::F16 => FileDType::F16,
                DTypeArg::Bf16 => FileDType::BF16,
            };
            let w = Weights::random(&cfg, which.seed);
            match w.save(&out, fd) {
                Ok(()) => {
                    println!(
                        "wrote {} ({} tensors, {:.2} M parameters, {fd:?})",
                        out.display(),
                        w.len(),
                        w.params() as f64 / 1e6
                    );
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("moekit: {e}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}
