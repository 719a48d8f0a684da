//! `moekit`: the unified MoE model end to end on any moekit backend.
//!
//! ```text
//! moekit run      [MODEL] [--tokens T] [--iters N]            a mixed text+image+audio sequence, timed
//! moekit generate [MODEL] [--text N] [--image 1x1,2x2,4x4] [--audio F]
//!                         [--temperature X] [--top-p P] [--sample-seed S]
//! moekit report   [MODEL] [--tokens T] --out DIR              routing heatmap PNG, IoU/entropy JSON + table
//! moekit bench    [MODEL] [--prefill 1024,4096] [--context 1024] [--iters N] [--json FILE]
//! moekit init-weights [--preset ... | --config FILE] [--seed N] --out FILE [--dtype f32|f16|bf16]
//!
//! MODEL: [--preset tiny|small|ernie-a3b | --config FILE] [--weights FILE | --seed N]
//!        [--backend auto|reference|cpu|cuda|cubecl-cuda|cubecl-wgpu] [--dtype f32|f16|bf16]
//!        [--depth L,L,..] [--experts E,E-E,..] [--top-k K] [--input-seed S]
//! ```
//!
//! `--backend auto` (the default) takes the first backend that starts: CUDA, cubecl on CUDA,
//! cubecl on wgpu, then the CPU.

mod actions;
mod bench;

use actions::{run_on, Action, RunPlan};
use clap::{Parser, Subcommand, ValueEnum};
use moekit_model::{param_count, Elastic, FileDType, ModelConfig, Preset, Sampler, Weights};
use moekit_ops::{Backend, Error};
use std::path::PathBuf;
use std::process::ExitCode;

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

/// The model, its weights, the backend and the sub-model.
/// The file (and weight) dtype of a `--dtype` choice.
fn file_dtype(d: DTypeArg) -> FileDType {
    match d {
        DTypeArg::F32 => FileDType::F32,
        DTypeArg::F16 => FileDType::F16,
        DTypeArg::Bf16 => FileDType::BF16,
    }
}

#[derive(clap::Args, Debug)]
struct ModelArgs {
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
    /// Elastic depth: the layers to run, e.g. `0,2,3`.
    #[arg(long, value_delimiter = ',')]
    depth: Option<Vec<usize>>,
    /// Elastic width: the routed experts to keep, e.g. `0-5,7`.
    #[arg(long)]
    experts: Option<String>,
    /// Elastic sparsity: routed experts per token.
    #[arg(long)]
    top_k: Option<usize>,
    /// Seed of the input sequence (text ids, visual codes, audio codes).
    #[arg(long, default_value_t = 0)]
    input_seed: u64,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Run a mixed text + image + audio sequence through the model and time it.
    Run {
        #[command(flatten)]
        model: ModelArgs,
        /// Rows in the sequence (text fills what the 21 image tokens and 8 audio frames leave).
        #[arg(long, default_value_t = 64)]
        tokens: usize,
        /// Timed forwards after one warm-up.
        #[arg(long, default_value_t = 3)]
        iters: usize,
    },
    /// Generate text, then an image one scale at a time, then audio frame by frame.
    Generate {
        #[command(flatten)]
        model: ModelArgs,
        /// Prompt text tokens (seeded).
        #[arg(long, default_value_t = 8)]
        prompt: usize,
        /// Text tokens to generate.
        #[arg(long, default_value_t = 16)]
        text: usize,
        /// Image scales, coarse to fine (`none` for no image).
        #[arg(long, default_value = "1x1,2x2,4x4")]
        image: String,
        /// Audio frames to generate.
        #[arg(long, default_value_t = 4)]
        audio: usize,
        /// Sampling temperature (0: greedy).
        #[arg(long, default_value_t = 0.0)]
        temperature: f32,
        /// Nucleus size.
        #[arg(long, default_value_t = 1.0)]
        top_p: f32,
        /// Seed of the sampler.
        #[arg(long, default_value_t = 0)]
        sample_seed: u64,
    },
    /// Time prefill and decode (tokens/s, TFLOP/s, GB/s against the H200's limits).
    Bench {
        #[command(flatten)]
        model: ModelArgs,
        /// Prefill lengths.
        #[arg(long, value_delimiter = ',', default_value = "1024,4096")]
        prefill: Vec<usize>,
        /// Cache lengths of the decode steps.
        #[arg(long, value_delimiter = ',', default_value = "1024")]
        context: Vec<usize>,
        /// Timed runs per figure (median).
        #[arg(long, default_value_t = 5)]
        iters: usize,
        /// Also write the figures as JSON lines to this file.
        #[arg(long)]
        json: Option<PathBuf>,
    },
    /// Write the routing report of a mixed sequence: heatmap PNG, JSON, printed table.
    Report {
        #[command(flatten)]
        model: ModelArgs,
        /// Rows in the sequence.
        #[arg(long, default_value_t = 256)]
        tokens: usize,
        /// Folder for `routing_heatmap.png` and `routing_report.json`.
        #[arg(long, default_value = "moekit-report")]
        out: PathBuf,
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

/// `1x1,2x2,4x4` → scales; `none` → none.
fn scales(spec: &str) -> Result<Vec<(usize, usize)>, String> {
    if spec == "none" {
        return Ok(vec![]);
    }
    spec.split(',')
        .map(|part| {
            let (h, w) = part.trim().split_once('x').ok_or_else(|| format!("--image: `{part}` is not HxW"))?;
            let n = |x: &str| {
                x.parse::<usize>().ok().filter(|&v| v > 0).ok_or_else(|| format!("--image: `{part}` is not HxW"))
            };
            Ok((n(h)?, n(w)?))
        })
        .collect()
}

/// `run_on` as work for whichever backend a name picks.
struct Go<'p>(&'p RunPlan);

impl moekit::pick::OnBackend for Go<'_> {
    type Output = Result<(), String>;
    fn run<B: Backend>(self, b: &B, _about: &str) -> Result<(), String> {
        run_on(b, self.0)
    }
}

/// Starts the named backend and runs; `Err(e)` when it does not start.
fn dispatch(name: &str, p: &RunPlan) -> Result<Result<(), String>, Error> {
    moekit::pick::on_backend(name, Go(p))
}

/// Builds the plan of `m` and `action`, then runs it on the chosen backend.
fn start(m: &ModelArgs, action: impl FnOnce(&ModelConfig) -> Result<Action, String>) -> ExitCode {
    let plan = (|| -> Result<RunPlan, String> {
        let cfg = m.which.config()?;
        let weights = match &m.weights {
            Some(path) => {
                // A bar on stderr (drawn only on a terminal) while the tensors are read.
                let bar = indicatif::ProgressBar::new(0).with_style(
                    indicatif::ProgressStyle::with_template("reading weights {bar:40} {bytes}/{total_bytes} ({eta})")
                        .map_err(|e| e.to_string())?,
                );
                let w = Weights::load_with_progress(&cfg, path, &mut |done, total| {
                    bar.set_length(total);
                    bar.set_position(done);
                })
                .map_err(|e| e.to_string())?;
                bar.finish_and_clear();
                w
            }
            // NOTE: drawn in the model's dtype, so a large preset never holds f32 host copies
            // (the same weights the f32 draw would give, rounded once).
            None => Weights::random_as(&cfg, m.which.seed, file_dtype(m.dtype)),
        };
        let experts = m.experts.as_deref().map(|s| expert_mask(s, cfg.routed_experts)).transpose()?;
        let dtype = file_dtype(m.dtype).dtype();
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
        let action = action(&cfg)?;
        let elastic = Elastic { layers: m.depth.clone(), experts, top_k: m.top_k };
        Ok(RunPlan { cfg, weights, dtype, seed: m.input_seed, elastic, action })
    })();
    let plan = match plan {
        Ok(p) => p,
        Err(e) => {
            eprintln!("moekit: {e}");
            return ExitCode::from(2);
        }
    };
    let order: Vec<&str> = if m.backend == "auto" { moekit::pick::AUTO.to_vec() } else { vec![m.backend.as_str()] };
    for name in order {
        match dispatch(name, &plan) {
            Ok(Ok(())) => return ExitCode::SUCCESS,
            Ok(Err(e)) => {
                eprintln!("moekit: {name}: {e}");
                return ExitCode::FAILURE;
            }
            Err(e) if m.backend == "auto" => eprintln!("moekit: {name} not available ({e}); trying the next backend"),
            Err(e) => {
                eprintln!("moekit: {e}");
                return ExitCode::from(2);
            }
        }
    }
    ExitCode::FAILURE
}

fn main() -> ExitCode {
    // NOTE: before any thread starts (std reads it once, at the first spawn): cubecl's device
    // threads compile kernels with Rust's default 2 MiB stack, which its SPIR-V compiler can
    // overflow on the routing kernel (README, "Backends and features").
    if std::env::var_os("RUST_MIN_STACK").is_none() {
        std::env::set_var("RUST_MIN_STACK", "16777216");
    }
    match Cli::parse().cmd {
        Cmd::Run { model, tokens, iters } => {
            if tokens == 0 {
                eprintln!("moekit: --tokens must be positive");
                return ExitCode::from(2);
            }
            start(&model, |_| Ok(Action::Run { tokens, iters }))
        }
        Cmd::Generate { model, prompt, text, image, audio, temperature, top_p, sample_seed } => start(&model, |_| {
            let sampler = Sampler::new(temperature, top_p, sample_seed).map_err(|e| e.to_string())?;
            Ok(Action::Generate { prompt, text, image: scales(&image)?, audio, sampler: Box::new(sampler) })
        }),
        Cmd::Bench { model, prefill, context, iters, json } => start(&model, |_| {
            if prefill.contains(&0) || iters == 0 {
                return Err("--prefill lengths and --iters must be positive".into());
            }
            Ok(Action::Bench { plan: bench::BenchPlan { prefill, context, iters }, json: json.clone() })
        }),
        Cmd::Report { model, tokens, out } => start(&model, |_| Ok(Action::Report { tokens, out: out.clone() })),
        Cmd::InitWeights { which, out, dtype } => {
            let cfg = match which.config() {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("moekit: {e}");
                    return ExitCode::from(2);
                }
            };
            let fd = file_dtype(dtype);
            let w = Weights::random_as(&cfg, which.seed, fd);
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
