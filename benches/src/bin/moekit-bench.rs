//! `moekit-bench`: time moekit ops over a shape table on one backend, check every run against
//! the reference, print a table and optionally JSON lines.
//!
//! Exit status: 0 when every check passed, 1 when a check failed or an op errored, 2 for a
//! usage error or a backend that cannot start (not compiled in, no device).

use clap::Parser;
use indicatif::{ProgressBar, ProgressStyle};
use moekit_bench::peers::{self, PeerLine};
use moekit_bench::record::{host, utc_now, Record};
use moekit_bench::runner::{RunConfig, Runner};
use moekit_bench::shapes::{self, AttnShape, MoeShape};
use moekit_bench::{table, Op, TimingMode};
use moekit_ops::{Backend, DType, Error};
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

/// Benchmark moekit ops over named MoE shapes, checked against the reference.
#[derive(Debug, Parser)]
#[command(name = "moekit-bench", version, about, after_help = AFTER_HELP)]
struct Cli {
    /// Backend: reference, cpu, cuda, cubecl-cuda, cubecl-wgpu.
    #[arg(long, default_value = "cpu")]
    backend: String,
    /// Op to run (repeatable or comma-separated): route, permute, unpermute_combine,
    /// grouped_gemm_up, grouped_gemm_down, gemm, attention, rms_norm, moe_layer, or all.
    #[arg(long, default_value = "all", value_delimiter = ',')]
    op: Vec<String>,
    /// Shape (repeatable): a table name, small-set, public-set, or
    /// custom:T=..,H=..,E=..,k=..,I=..,skew=..
    #[arg(long, default_value = "small-set")]
    shape: Vec<String>,
    /// Dtype (repeatable or comma-separated): f32, f16, bf16.
    #[arg(long, default_value = "f32", value_delimiter = ',')]
    dtype: Vec<DType>,
    /// Timed runs per case (the median is reported).
    #[arg(long, default_value_t = 10)]
    iters: usize,
    /// Untimed warm-up runs per case.
    #[arg(long, default_value_t = 2)]
    warmup: usize,
    /// Seed of every random input.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Rows or tokens compared with the reference when the whole problem is too big for it.
    #[arg(long, default_value_t = 256)]
    samples: usize,
    /// Largest reference work (multiply-adds) checked in full; above it, a sample.
    #[arg(long, default_value_t = 5e8)]
    full_check_work: f64,
    /// Reference work (multiply-adds) a sampled check aims at; fewer rows are drawn where
    /// each is expensive (at least 16).
    #[arg(long, default_value_t = 2e9)]
    sample_work: f64,
    /// Attention batch for every shape: B,Hq,Hkv,S,D[,mask], the mask `0` (none), `1` (causal,
    /// the default), or FlashMask column ranges: `ranges` (causal), `docs` (packed documents),
    /// `image` (a 4-scale image inside text).
    #[arg(long)]
    attn: Option<String>,
    /// Write one JSON object per line to FILE (parent folders are created).
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
    /// PyTorch peer lines (torch_peers.py output) to compare with.
    #[arg(long, value_name = "FILE")]
    peers: Option<PathBuf>,
    /// Also time the reference backend on the same problem and print the speedup.
    #[arg(long)]
    compare_reference: bool,
    /// Timed reference runs with --compare-reference.
    #[arg(long, default_value_t = 2)]
    ref_iters: usize,
    /// Skip timing the reference above this work (multiply-adds).
    #[arg(long, default_value_t = 2e10)]
    ref_max_work: f64,
    /// Measure the backend's dense GEMM at each op's FLOPs and print % of it (FLOP-bound ops).
    #[arg(long)]
    ceiling: bool,
    /// Copy rate in GB/s (bytes read + written) that memory-bound ops (route, permute,
    /// unpermute_combine, rms_norm) are reported against as `%copy` / `pct_copy_ceiling`.
    /// Default: 4280 (the H200's measured device-to-device copy) on cuda, cubecl-cuda and
    /// cubecl-wgpu; none on cpu and reference.
    #[arg(long, value_name = "GBPS")]
    copy_ceiling_gbps: Option<f64>,
    /// Write each case's inputs and checked outputs to DIR/<op>-<shape>-<dtype>.safetensors
    /// (tensors `in.<arg>`, `out.<arg>`; files are as large as the op's inputs and outputs).
    #[arg(long, value_name = "DIR")]
    dump: Option<PathBuf>,
    /// Time replays of each op recorded once as a CUDA graph (one launch per run; the cuda
    /// backend only), for decode-sized problems whose eager time is launches. The check reads
    /// the outputs a replay wrote. No --ceiling GEMM is interleaved.
    #[arg(long)]
    graph: bool,
    /// Time each run on its own, the device idle before it, so the host's time until the run's
    /// first launch counts (the method of runs 1–22). By default runs are timed as
    /// triton.testing.do_bench times the PyTorch peers: each after a 256 MiB cache-clearing
    /// write, queued without waiting for one another.
    #[arg(long)]
    synced: bool,
    /// Print the shape table and exit.
    #[arg(long)]
    list: bool,
}

const AFTER_HELP: &str = "Peer op names: moe_layer <-> moe_layer_fwd [T,H,E,k,I]; attention <-> attention_fwd \
[B,Hq,Hkv,S,D,causal]; grouped_gemm_up [T*k,H,2I,E]; route, permute [T,H,E,k]. ratio = peer_ms / ms.

--dump DIR: one safetensors file per op, shape and dtype, e.g. DIR/moe_layer-qwen3-30b-a3b-bf16.safetensors, \
holding the op's inputs (in.x, in.gate, in.w_up, in.w_down) and the checked run's outputs (out.out), bf16/f16/f32/i32 \
as stored; the header metadata has op, shape, dims, dtype, backend, seed.

GPU backends need the bench built with the feature of the same name (cargo build -p moekit-bench --features cuda).";

/// Copy rate of the H200 (device-to-device copy, bytes read + written), `../shared/gpu/GPU.md`.
const H200_COPY_GBPS: f64 = 4280.0;

/// The backends that run on a GPU, whose memory-bound ops get the copy ceiling by default.
const GPU_BACKENDS: [&str; 3] = ["cuda", "cubecl-cuda", "cubecl-wgpu"];

/// Everything the run needs, resolved from the command line.
struct Plan {
    ops: Vec<Op>,
    shapes: Vec<MoeShape>,
    dtypes: Vec<DType>,
    cfg: RunConfig,
    peers: Vec<PeerLine>,
    json: Option<PathBuf>,
}

fn plan(cli: &Cli) -> Result<Plan, String> {
    let ops = if cli.op.iter().any(|o| o == "all") {
        Op::ALL.to_vec()
    } else {
        cli.op.iter().map(|o| o.parse::<Op>()).collect::<Result<Vec<_>, _>>()?
    };
    let attn = cli.attn.as_deref().map(AttnShape::parse).transpose()?;
    let mut shapes = Vec::new();
    for s in &cli.shape {
        for mut shape in shapes::resolve(s)? {
            if let Some(a) = attn {
                shape.attn = a;
            }
            shapes.push(shape);
        }
    }
    let peers = cli.peers.as_deref().map(peers::load).transpose()?.unwrap_or_default();
    let cfg = RunConfig {
        warmup: cli.warmup,
        iters: cli.iters.max(1),
        seed: cli.seed,
        samples: cli.samples.max(1),
        full_check_work: cli.full_check_work,
        sample_work: cli.sample_work,
        compare_reference: cli.compare_reference,
        ref_iters: cli.ref_iters.max(1),
        ref_max_work: cli.ref_max_work,
        ceiling: cli.ceiling,
        copy_ceiling_gbps: copy_ceiling(cli)?,
        dump: cli.dump.clone(),
        graph: cli.graph,
        timing: if cli.synced { TimingMode::Synced } else { TimingMode::Queued },
    };
    Ok(Plan { ops, shapes, dtypes: cli.dtype.clone(), cfg, peers, json: cli.json.clone() })
}

/// `--copy-ceiling-gbps`, else the H200's copy rate on GPU backends.
fn copy_ceiling(cli: &Cli) -> Result<Option<f64>, String> {
    match cli.copy_ceiling_gbps {
        Some(g) if !(g.is_finite() && g > 0.0) => Err(format!("--copy-ceiling-gbps {g}: expected a rate > 0")),
        Some(g) => Ok(Some(g)),
        None => Ok(GPU_BACKENDS.contains(&cli.backend.as_str()).then_some(H200_COPY_GBPS)),
    }
}

/// Run every case; returns whether all passed.
fn run_all<B: Backend>(backend: &B, plan: &Plan) -> Result<bool, String> {
    let mut json = match &plan.json {
        Some(path) => {
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir).map_err(|e| format!("--json {}: {e}", dir.display()))?;
            }
            Some(std::fs::File::create(path).map_err(|e| format!("--json {}: {e}", path.display()))?)
        }
        None => None,
    };
    let (host, date) = (host(), utc_now());
    let total = plan.ops.len() * plan.shapes.len() * plan.dtypes.len();
    let bar = ProgressBar::new(total as u64);
    bar.set_style(
        ProgressStyle::with_template("{bar:30} {pos}/{len} [{elapsed}] {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    println!("moekit-bench: backend {}, host {host}, {date}", backend.name());
    println!("{}", table::header());
    let mut runner = Runner::new(backend, plan.cfg.clone());
    let mut all_ok = true;
    for shape in &plan.shapes {
        for &dtype in &plan.dtypes {
            for &op in &plan.ops {
                bar.set_message(format!("{op} {} {dtype}", shape.name));
                match runner.run(op, shape, dtype) {
                    Ok(out) => {
                        let rec = Record::new(&out, &plan.peers, &host, &date);
                        all_ok &= out.verdict.pass && !matches!(out.dump, Some(Err(_)));
                        bar.suspend(|| {
                            println!("{}", table::row(&rec));
                            if let Some(d) = &out.verdict.detail {
                                println!("  check failed ({}):\n  {}", out.verdict.scope, d.replace('\n', "\n  "));
                            }
                            if let Some(Err(e)) = &out.dump {
                                println!("  dump failed: {e}");
                            }
                            if let Some(why) = &out.reference_skipped {
                                println!("  reference not timed: {why}");
                            }
                        });
                        if let Some(f) = json.as_mut() {
                            writeln!(f, "{}", rec.to_json()).map_err(|e| format!("--json: {e}"))?;
                        }
                    }
                    Err(e) => {
                        all_ok = false;
                        bar.suspend(|| println!("{:<18} {:<16} {:<5} error: {e}", op.name(), shape.name, dtype));
                        if let Some(f) = json.as_mut() {
                            let line = error_line(op, shape, dtype, backend.name(), &e, &host, &date);
                            writeln!(f, "{line}").map_err(|e| format!("--json: {e}"))?;
                        }
                    }
                }
                bar.inc(1);
            }
        }
    }
    bar.finish_and_clear();
    Ok(all_ok)
}

/// The JSON line of a case whose op returned an error (`check: "error"`).
fn error_line(op: Op, shape: &MoeShape, dtype: DType, backend: &str, e: &Error, host: &str, date: &str) -> String {
    serde_json::json!({
        "op": op.name(),
        "shape": shape.name,
        "backend": backend,
        "dtype": dtype.name(),
        "check": "error",
        "error": e.to_string(),
        "host": host,
        "date": date,
    })
    .to_string()
}

/// `run_all` as work for whichever backend a name picks; a cubecl runtime's capabilities go
/// to stderr first, so a log says which kernels ran.
struct Go<'p>(&'p Plan);

impl moekit::pick::OnBackend for Go<'_> {
    type Output = Result<bool, String>;
    fn run<B: moekit_ops::Backend>(self, b: &B, about: &str) -> Result<bool, String> {
        if !about.is_empty() {
            eprintln!("moekit-bench: cubecl {about}");
        }
        run_all(b, self.0)
    }
}

/// Start the named backend and run the plan on it. The GPU constructors exist whatever is
/// compiled and answer `Error::NotCompiled` when the bench's feature of the same name is off.
fn dispatch(name: &str, plan: &Plan) -> Result<Result<bool, String>, Error> {
    moekit::pick::on_backend(name, Go(plan))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if cli.list {
        for s in shapes::named() {
            println!("{s}  attention {:?}", s.attn.dims());
        }
        println!("small-set = {:?}, public-set = {:?}", shapes::SMALL_SET, shapes::PUBLIC_SET);
        return ExitCode::SUCCESS;
    }
    let plan = match plan(&cli) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("moekit-bench: {e}");
            return ExitCode::from(2);
        }
    };
    match dispatch(&cli.backend, &plan) {
        Err(e) => {
            eprintln!("moekit-bench: cannot start backend `{}`: {e}", cli.backend);
            if let Error::NotCompiled { feature, .. } = &e {
                eprintln!("moekit-bench: rebuild with `cargo build --release -p moekit-bench --features {feature}`");
            }
            ExitCode::from(2)
        }
        Ok(Err(e)) => {
            eprintln!("moekit-bench: {e}");
            ExitCode::from(2)
        }
        Ok(Ok(true)) => ExitCode::SUCCESS,
        Ok(Ok(false)) => {
            eprintln!("moekit-bench: some checks failed or ops errored");
            ExitCode::from(1)
        }
    }
}
