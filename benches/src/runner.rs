//! Run one op on one shape on a backend: time it, check it against the reference, and
//! optionally time the reference and the dense-GEMM ceiling at the same FLOPs.

use crate::cases::{AnyWorkload, GemmCase, Visit, WeightStash};
use crate::dump::{self, DumpError, DumpInfo};
use crate::shapes::MoeShape;
use crate::verify::Verdict;
use crate::workload::{
    measure, measure_graph, measure_interleaved, reference_outputs, Measured, Op, Timing, TimingMode, Workload,
};
use moekit_ops::{Backend, DType, HostTensor, Result};
use moekit_reference::ReferenceBackend;
use std::path::PathBuf;

/// How every case runs.
#[derive(Clone, Debug, PartialEq)]
pub struct RunConfig {
    /// Untimed runs first.
    pub warmup: usize,
    /// Timed runs (the median is reported).
    pub iters: usize,
    /// Seed of every input.
    pub seed: u64,
    /// Rows or tokens compared when the reference cannot do the whole problem.
    pub samples: usize,
    /// Largest reference work (multiply-adds) checked in full; above it, a sample.
    pub full_check_work: f64,
    /// Reference work (multiply-adds) a sampled check aims at: fewer than `samples` rows
    /// are drawn where each is expensive (never fewer than 16).
    pub sample_work: f64,
    /// Also time the reference on the same problem.
    pub compare_reference: bool,
    /// Timed reference runs.
    pub ref_iters: usize,
    /// Largest reference work (multiply-adds) the reference is timed on.
    pub ref_max_work: f64,
    /// Measure the backend's dense GEMM at the same FLOPs, its runs interleaved with the op's.
    pub ceiling: bool,
    /// Copy rate (GB/s, bytes read plus written) that memory-bound ops are reported
    /// against; `None`: no copy ceiling.
    pub copy_ceiling_gbps: Option<f64>,
    /// Write each case's inputs and checked outputs as safetensors into this folder.
    pub dump: Option<PathBuf>,
    /// Time replays of the op recorded as a device graph ([`measure_graph`]; CUDA only), no
    /// ceiling interleaved.
    pub graph: bool,
    /// How the timed runs are timed (`--synced`: [`TimingMode::Synced`]).
    pub timing: TimingMode,
}

impl Default for RunConfig {
    fn default() -> Self {
        RunConfig {
            warmup: 2,
            iters: 10,
            seed: 0,
            samples: 256,
            full_check_work: 5e8,
            sample_work: 2e9,
            compare_reference: false,
            ref_iters: 2,
            ref_max_work: 2e10,
            ceiling: false,
            copy_ceiling_gbps: None,
            dump: None,
            graph: false,
            timing: TimingMode::Queued,
        }
    }
}

/// The dense-GEMM ceiling of one case.
#[derive(Clone, Debug, PartialEq)]
pub struct Ceiling {
    /// `(M, K, N)` of the GEMM.
    pub mkn: (usize, usize, usize),
    /// Its rate on the backend, TFLOP/s.
    pub tflops: f64,
}

/// Everything measured for one op on one shape.
#[derive(Clone, Debug)]
pub struct Outcome {
    /// The op.
    pub op: Op,
    /// Shape name.
    pub shape: String,
    /// Problem dims in the peer spelling.
    pub dims: Vec<usize>,
    /// Dtype.
    pub dtype: DType,
    /// Backend name.
    pub backend: &'static str,
    /// Timed runs on the backend.
    pub timing: Timing,
    /// FLOPs of one run (`None` for data movement).
    pub flops: Option<f64>,
    /// Minimum bytes moved by one run.
    pub bytes: f64,
    /// The check against the reference.
    pub verdict: Verdict,
    /// The reference's timing, with `--compare-reference`.
    pub reference: Option<Timing>,
    /// Why the reference was not timed, when asked to and skipped.
    pub reference_skipped: Option<String>,
    /// The dense-GEMM ceiling, with `--ceiling`.
    pub ceiling: Option<Ceiling>,
    /// The copy rate (GB/s) of the config, for memory-bound ops only ([`Op::memory_bound`],
    /// or no dense-GEMM equivalent).
    pub copy_ceiling_gbps: Option<f64>,
    /// The dump file written, or why it was not, with `--dump`.
    pub dump: Option<std::result::Result<PathBuf, DumpError>>,
    /// Timed as replays of a recorded graph (`--graph`).
    pub graph: bool,
    /// How the runs were timed.
    pub timing_mode: TimingMode,
}

impl Outcome {
    /// TFLOP/s of the median run.
    pub fn tflops(&self) -> Option<f64> {
        self.flops.map(|f| f / self.timing.median_s / 1e12)
    }
    /// GB/s of the median run.
    pub fn gbps(&self) -> f64 {
        self.bytes / self.timing.median_s / 1e9
    }
    /// Percent of the dense-GEMM ceiling.
    pub fn pct_of_ceiling(&self) -> Option<f64> {
        Some(100.0 * self.tflops()? / self.ceiling.as_ref()?.tflops)
    }
    /// Percent of the copy ceiling (memory-bound ops with a copy ceiling).
    pub fn pct_of_copy_ceiling(&self) -> Option<f64> {
        Some(100.0 * self.gbps() / self.copy_ceiling_gbps?)
    }
    /// Reference time over backend time.
    pub fn speedup_vs_reference(&self) -> Option<f64> {
        Some(self.reference.as_ref()?.median_s / self.timing.median_s)
    }
}

/// Runs cases on one backend.
#[derive(Debug)]
pub struct Runner<'a, B: Backend> {
    backend: &'a B,
    cfg: RunConfig,
    /// The last layer case's expert weights, for the next case with the same experts.
    stash: WeightStash,
}

impl<'a, B: Backend> Runner<'a, B> {
    /// A runner for `backend`.
    pub fn new(backend: &'a B, cfg: RunConfig) -> Self {
        Runner { backend, cfg, stash: WeightStash::default() }
    }

    /// The configuration.
    pub fn config(&self) -> &RunConfig {
        &self.cfg
    }

    /// Build, time and check `op` on `shape`.
    ///
    /// # Errors
    /// Errors of the op on the backend or on the reference.
    pub fn run(&mut self, op: Op, shape: &MoeShape, dtype: DType) -> Result<Outcome> {
        if op != Op::MoeLayer {
            // NOTE: only consecutive layer cases share weights; another op's case frees them.
            self.stash = WeightStash::default();
        }
        let work = AnyWorkload::build_reusing(op, shape, dtype, self.cfg.seed, &mut self.stash)?;
        let out = work.visit(RunCase { backend: self.backend, cfg: &self.cfg, dtype, shape: &shape.name });
        work.into_stash(&mut self.stash);
        out
    }
}

/// `cfg.samples`, reduced so the sampled check costs about `cfg.sample_work`, at least 16.
fn sample_count<W: Workload>(w: &W, cfg: &RunConfig) -> usize {
    let per_unit = w.reference_work() / w.sample_units().max(1) as f64;
    let affordable = if per_unit > 0.0 { (cfg.sample_work / per_unit) as usize } else { usize::MAX };
    cfg.samples.min(affordable.max(16)).max(1)
}

struct RunCase<'a, B: Backend> {
    backend: &'a B,
    cfg: &'a RunConfig,
    dtype: DType,
    shape: &'a str,
}

impl<B: Backend> RunCase<'_, B> {
    /// Time `w`, with its ceiling GEMM interleaved when asked for. The dense GEMM op is its
    /// own ceiling.
    fn time<W: Workload>(&self, w: &W) -> Result<(Measured, Option<Ceiling>)> {
        let cfg = self.cfg;
        let mkn = w.ceiling_gemm().filter(|_| cfg.ceiling);
        if cfg.graph {
            return Ok((measure_graph(self.backend, w, cfg.warmup, cfg.iters, cfg.timing)?, None));
        }
        match mkn {
            Some(mkn) if w.op() != Op::Gemm => {
                let g = GemmCase::new(mkn.0, mkn.1, mkn.2, self.dtype, cfg.seed ^ 0xCE11)?;
                let (m, t) = measure_interleaved(self.backend, w, &g, cfg.warmup, cfg.iters, cfg.timing)?;
                let tflops = g.flops().unwrap_or(0.0) / t.median_s / 1e12;
                Ok((m, Some(Ceiling { mkn, tflops })))
            }
            _ => {
                let m = measure(self.backend, w, cfg.warmup, cfg.iters, cfg.timing)?;
                let own = w.flops().map(|f| f / m.timing.median_s / 1e12);
                let ceiling = mkn.zip(own).map(|(mkn, tflops)| Ceiling { mkn, tflops });
                Ok((m, ceiling))
            }
        }
    }
}

impl<B: Backend> Visit for RunCase<'_, B> {
    type Out = Result<Outcome>;
    fn visit<W: Workload>(self, w: &W) -> Result<Outcome> {
        let cfg = self.cfg;
        let (measured, ceiling) = self.time(w)?;
        let dump = cfg.dump.as_deref().map(|dir| {
            let info = DumpInfo { shape: self.shape, backend: self.backend.name(), seed: cfg.seed };
            dump::write(dir, w, self.dtype, &measured.outputs, &info)
        });
        let (mut reference, mut reference_skipped, mut full): (_, _, Option<Vec<HostTensor>>) = (None, None, None);
        if cfg.compare_reference {
            if w.reference_work() <= cfg.ref_max_work {
                let r = measure(&ReferenceBackend, w, 0, cfg.ref_iters, TimingMode::Synced)?;
                reference = Some(r.timing);
                full = Some(r.outputs);
            } else {
                reference_skipped = Some(format!(
                    "reference work {:.1e} above --ref-max-work {:.1e}",
                    w.reference_work(),
                    cfg.ref_max_work
                ));
            }
        }
        if full.is_none() && w.reference_work() <= cfg.full_check_work {
            full = Some(reference_outputs(w)?);
        }
        let verdict = match full {
            Some(expected) => w.verify_full(&expected, &measured.outputs)?,
            None => w.verify_sample(&measured.outputs, sample_count(w, cfg), cfg.seed ^ 0xC4EC)?,
        };
        Ok(Outcome {
            op: w.op(),
            shape: self.shape.to_string(),
            dims: w.dims(),
            dtype: self.dtype,
            backend: self.backend.name(),
            timing: measured.timing,
            flops: w.flops(),
            bytes: w.bytes(),
            verdict,
            reference,
            reference_skipped,
            ceiling,
            copy_ceiling_gbps: cfg.copy_ceiling_gbps.filter(|_| w.op().memory_bound() || w.ceiling_gemm().is_none()),
            dump,
            graph: cfg.graph,
            timing_mode: cfg.timing,
        })
    }
}
