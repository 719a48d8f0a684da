//! One op on one problem ([`Workload`]), its uploaded state ([`Prepared`]) and the timing loop
//! ([`measure`]): warm-up, median of timed runs, then a checked run into poisoned outputs.

use crate::data::poison;
use crate::verify::{OutCheck, Verdict};
use moekit_ops::{Backend, DType, HostTensor, Result};
use moekit_reference::ReferenceBackend;
use std::fmt;
use std::str::FromStr;

/// The benchmarked ops.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Op {
    /// Routing with the gate GEMM fused (softmax, top-k, renormalised).
    Route,
    /// Dispatch to expert-contiguous rows.
    Permute,
    /// Weighted combine back to tokens.
    UnpermuteCombine,
    /// Grouped GEMM gate/up `[R, H] · [E, H, 2I]` with the SwiGLU epilogue.
    GroupedGemmUp,
    /// Grouped GEMM down `[R, I] · [E, I, H]`.
    GroupedGemmDown,
    /// Dense GEMM with the FLOPs of the up GEMM: `[T·k, H] · [H, 2I]`.
    Gemm,
    /// Packed varlen attention (GQA, causal by default).
    Attention,
    /// RMSNorm with the fused residual add.
    RmsNorm,
    /// The whole routed-expert layer through `api::moe_layer`.
    MoeLayer,
}

impl Op {
    /// Every op, in the order `--op all` runs them.
    pub const ALL: [Op; 9] = [
        Op::Route,
        Op::Permute,
        Op::UnpermuteCombine,
        Op::GroupedGemmUp,
        Op::GroupedGemmDown,
        Op::Gemm,
        Op::Attention,
        Op::RmsNorm,
        Op::MoeLayer,
    ];

    /// Name on the command line and in the JSON lines.
    pub fn name(self) -> &'static str {
        match self {
            Op::Route => "route",
            Op::Permute => "permute",
            Op::UnpermuteCombine => "unpermute_combine",
            Op::GroupedGemmUp => "grouped_gemm_up",
            Op::GroupedGemmDown => "grouped_gemm_down",
            Op::Gemm => "gemm",
            Op::Attention => "attention",
            Op::RmsNorm => "rms_norm",
            Op::MoeLayer => "moe_layer",
        }
    }

    /// Data-movement ops, measured against the copy rate rather than a GEMM: routing (its
    /// gate GEMM is thin, `[T, H] · [H, E]`), permute, unpermute-combine and RMSNorm.
    pub fn memory_bound(self) -> bool {
        matches!(self, Op::Route | Op::Permute | Op::UnpermuteCombine | Op::RmsNorm)
    }

    /// The op name the PyTorch peer lines use (`../shared/peers/torch_peers.py`).
    pub fn peer_name(self) -> &'static str {
        match self {
            Op::Attention => "attention_fwd",
            Op::MoeLayer => "moe_layer_fwd",
            other => other.name(),
        }
    }
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Op {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        Op::ALL.into_iter().find(|op| op.name() == s || op.peer_name() == s).ok_or_else(|| {
            let names: Vec<_> = Op::ALL.iter().map(|o| o.name()).collect();
            format!("unknown op `{s}`: expected one of {names:?} or all")
        })
    }
}

/// One op on one problem, with its host inputs and how to check its outputs.
///
/// `call` is generic over the backend, so the same workload runs on the backend under test
/// and on the reference.
pub trait Workload: Sync {
    /// The op.
    fn op(&self) -> Op;
    /// Problem dims as the peer lines spell them (e.g. `[T, H, E, k]` for routing).
    fn dims(&self) -> Vec<usize>;
    /// Useful FLOPs of one run, `None` for data-movement ops.
    fn flops(&self) -> Option<f64>;
    /// Minimum bytes read plus written by one run.
    fn bytes(&self) -> f64;
    /// Host inputs, in the order `call` takes them.
    fn inputs(&self) -> &[HostTensor];
    /// The op's argument name of each input (the `*Io` field it is passed as), in input
    /// order; `--dump` names the tensors `in.<name>`.
    fn input_names(&self) -> &'static [&'static str];
    /// Dtype and shape of each output, in the order `call` takes them.
    fn outputs(&self) -> Vec<(DType, Vec<usize>)>;
    /// Output names and how each is compared, in output order.
    fn output_checks(&self) -> Vec<(&'static str, OutCheck)>;
    /// Run the op once (no sync) through `moekit_ops::api`.
    ///
    /// # Errors
    /// The op's error.
    fn call<B: Backend>(&self, b: &B, ins: &[B::Buffer], outs: &mut [B::Buffer]) -> Result<()>;
    /// Roughly the reference's work for the whole problem, in multiply-adds; decides between
    /// a full check and a sampled one.
    fn reference_work(&self) -> f64;
    /// How many rows or tokens [`Workload::verify_sample`] draws its sample from.
    fn sample_units(&self) -> usize;
    /// Check the backend's outputs against the reference on a sample of `samples` rows or
    /// tokens (used when the whole problem is too slow for the reference).
    ///
    /// # Errors
    /// Reference errors.
    fn verify_sample(&self, got: &[HostTensor], samples: usize, seed: u64) -> Result<Verdict>;
    /// Check the backend's outputs against the reference's outputs of the whole problem.
    ///
    /// # Errors
    /// [`moekit_ops::Error::DType`] when an output has an unexpected dtype.
    fn verify_full(&self, expected: &[HostTensor], got: &[HostTensor]) -> Result<Verdict> {
        let checks = self.output_checks();
        let names: Vec<&str> = checks.iter().map(|c| c.0).collect();
        let how: Vec<OutCheck> = checks.iter().map(|c| c.1).collect();
        crate::verify::full(&names, &how, expected, got)
    }
    /// The dense GEMM `(M, K, N)` with the same FLOPs, for the ceiling; `None` for
    /// data-movement ops.
    fn ceiling_gemm(&self) -> Option<(usize, usize, usize)>;
}

/// The reference's outputs for the whole problem, computed on the host tensors in place (the
/// reference's buffers are host tensors, so nothing is copied).
///
/// # Errors
/// The reference's error.
pub fn reference_outputs<W: Workload>(w: &W) -> Result<Vec<HostTensor>> {
    let mut outs: Vec<HostTensor> = w.outputs().iter().map(|(dt, s)| HostTensor::zeros(*dt, s)).collect();
    w.call(&ReferenceBackend, w.inputs(), &mut outs)?;
    Ok(outs)
}

/// Error for an input/output list of the wrong length (a bug in a workload).
pub(crate) fn arity(op: &'static str) -> moekit_ops::Error {
    moekit_ops::Error::invalid(op, "bench workload passed the wrong number of buffers")
}

/// A workload uploaded to a backend, ready to run repeatedly.
#[derive(Debug)]
pub struct Prepared<'a, B: Backend, W: Workload> {
    backend: &'a B,
    work: &'a W,
    ins: Vec<B::Buffer>,
    outs: Vec<B::Buffer>,
}

impl<'a, B: Backend, W: Workload> Prepared<'a, B, W> {
    /// Upload the inputs and allocate the outputs.
    ///
    /// # Errors
    /// Device errors.
    pub fn new(backend: &'a B, work: &'a W) -> Result<Self> {
        let ins = work.inputs().iter().map(|t| backend.upload(t)).collect::<Result<Vec<_>>>()?;
        let outs = work.outputs().iter().map(|(dt, s)| backend.alloc(*dt, s)).collect::<Result<Vec<_>>>()?;
        Ok(Prepared { backend, work, ins, outs })
    }

    /// One run, waited for.
    ///
    /// # Errors
    /// The op's error or a device error.
    pub fn run(&mut self) -> Result<()> {
        self.work.call(self.backend, &self.ins, &mut self.outs)?;
        self.backend.sync()
    }

    /// Overwrite every output with poison (NaN / garbage, through upload), run once, and
    /// download the outputs.
    ///
    /// # Errors
    /// The op's error or a device error.
    pub fn checked_run(&mut self) -> Result<Vec<HostTensor>> {
        self.outs =
            self.work.outputs().iter().map(|(dt, s)| self.backend.upload(&poison(*dt, s))).collect::<Result<_>>()?;
        self.run()?;
        self.outs.iter().map(|o| self.backend.download(o)).collect()
    }
}

/// Wall-clock times of the timed runs.
#[derive(Clone, Debug, PartialEq)]
pub struct Timing {
    /// Median seconds per run.
    pub median_s: f64,
    /// Fastest run, seconds.
    pub min_s: f64,
    /// Timed runs.
    pub iters: usize,
}

/// The median of a non-empty list (mean of the two middle values for an even count).
pub fn median(times: &mut [f64]) -> f64 {
    times.sort_by(f64::total_cmp);
    let n = times.len();
    match n {
        0 => f64::NAN,
        _ if n % 2 == 1 => times[n / 2],
        _ => 0.5 * (times[n / 2 - 1] + times[n / 2]),
    }
}

/// Timing plus the outputs of the checked run.
#[derive(Clone, Debug)]
pub struct Measured {
    /// The timed runs.
    pub timing: Timing,
    /// Outputs of the run into poisoned buffers.
    pub outputs: Vec<HostTensor>,
}

/// How timed runs are timed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum TimingMode {
    /// As `triton.testing.do_bench` times the PyTorch peers ([`moekit_ops::Device::time_runs_ms`]):
    /// each run after a cache-clearing write, the runs queued without waiting for each, so the
    /// host's launch time overlaps the device's work (the default since run 23).
    #[default]
    Queued,
    /// Each run timed on its own ([`moekit_ops::Device::time_ms`]) with the device idle before
    /// it, so the host's time until its first launch is in the figure (`--synced`; runs 1–22).
    Synced,
}

impl TimingMode {
    /// The name in the JSON records.
    pub fn name(self) -> &'static str {
        match self {
            TimingMode::Queued => "queued",
            TimingMode::Synced => "synced",
        }
    }
}

/// `warmup` untimed runs, `iters` timed runs (timed as `mode` says), then one run into
/// poisoned outputs whose results come back for the check.
///
/// # Errors
/// The op's error or a device error.
pub fn measure<B: Backend, W: Workload>(
    b: &B,
    w: &W,
    warmup: usize,
    iters: usize,
    mode: TimingMode,
) -> Result<Measured> {
    let mut p = Prepared::new(b, w)?;
    for _ in 0..warmup {
        p.run()?;
    }
    let times = timed(&mut p, iters.max(1), mode)?;
    Ok(Measured { timing: timing(times), outputs: p.checked_run()? })
}

/// Timed runs of the op and of the ceiling taken in turns, this many at a time.
const INTERLEAVE: usize = 5;

/// As [`measure`], with the runs of a second workload `c` (the ceiling GEMM) interleaved:
/// five runs of the op, five of the ceiling, and so on, so that load from other
/// processes on the machine weighs on both alike. Returns the op's measurement and the timing
/// of `c`.
///
/// # Errors
/// The op's or the ceiling's error, or a device error.
pub fn measure_interleaved<B: Backend, W: Workload, C: Workload>(
    b: &B,
    w: &W,
    c: &C,
    warmup: usize,
    iters: usize,
    mode: TimingMode,
) -> Result<(Measured, Timing)> {
    let (mut p, mut q) = (Prepared::new(b, w)?, Prepared::new(b, c)?);
    for _ in 0..warmup {
        p.run()?;
        q.run()?;
    }
    let (mut tp, mut tq) = (Vec::new(), Vec::new());
    let mut left = iters.max(1);
    while left > 0 {
        let n = left.min(INTERLEAVE);
        tp.extend(timed(&mut p, n, mode)?);
        tq.extend(timed(&mut q, n, mode)?);
        left -= n;
    }
    Ok((Measured { timing: timing(tp), outputs: p.checked_run()? }, timing(tq)))
}

/// As [`measure`], for the op recorded once as a device graph ([`moekit_ops::Device::capture`])
/// and replayed: `warmup` untimed replays, `iters` timed replays (one launch each). The checked
/// outputs are those of a replay of a second recording that first overwrites the outputs with
/// poison, whose eager run (the one `capture` does first) writes only the poison, so a replay
/// that computed nothing fails the check.
///
/// # Errors
/// [`moekit_ops::Error::Unsupported`] on backends without graphs; the op's or a device error.
pub fn measure_graph<B: Backend, W: Workload>(
    b: &B,
    w: &W,
    warmup: usize,
    iters: usize,
    mode: TimingMode,
) -> Result<Measured> {
    let mut p = Prepared::new(b, w)?;
    let times = {
        let (ins, outs) = (&p.ins, &mut p.outs);
        let graph = b.capture(&mut || w.call(b, ins, outs))?;
        for _ in 0..warmup {
            graph.replay()?;
        }
        time_runs(b, &mut || graph.replay(), iters.max(1), mode)?
    };
    let shapes = w.outputs();
    let poisoned = shapes.iter().map(|(dt, s)| b.upload(&poison(*dt, s))).collect::<Result<Vec<_>>>()?;
    {
        let (ins, outs) = (&p.ins, &mut p.outs);
        let mut calls = 0;
        let graph = b.capture(&mut || {
            calls += 1;
            for ((src, dst), (_, s)) in poisoned.iter().zip(outs.iter_mut()).zip(&shapes) {
                b.copy_rows(src, 0, dst, 0, s.first().copied().unwrap_or(1))?;
            }
            if calls == 1 {
                return Ok(());
            }
            w.call(b, ins, outs)
        })?;
        graph.replay()?;
    }
    b.sync()?;
    let outputs = p.outs.iter().map(|o| b.download(o)).collect::<Result<_>>()?;
    Ok(Measured { timing: timing(times), outputs })
}

/// Seconds of each of `runs` runs of `work`, timed by the backend as `mode` says
/// ([`moekit_ops::Device::time_runs_ms`] or [`moekit_ops::Device::time_ms`]: device events on
/// GPU backends, the wall clock around a sync elsewhere).
fn time_runs<B: Backend>(
    b: &B,
    work: &mut dyn FnMut() -> Result<()>,
    runs: usize,
    mode: TimingMode,
) -> Result<Vec<f64>> {
    let ms = match mode {
        TimingMode::Queued => b.time_runs_ms(work, runs)?,
        TimingMode::Synced => (0..runs).map(|_| b.time_ms(work)).collect::<Result<Vec<_>>>()?,
    };
    Ok(ms.into_iter().map(|ms| ms / 1e3).collect())
}

/// Seconds of each of `runs` runs of the prepared op.
fn timed<B: Backend, W: Workload>(p: &mut Prepared<'_, B, W>, runs: usize, mode: TimingMode) -> Result<Vec<f64>> {
    let (backend, work) = (p.backend, p.work);
    let (ins, outs) = (&p.ins, &mut p.outs);
    time_runs(backend, &mut || work.call(backend, ins, outs), runs, mode)
}

fn timing(mut times: Vec<f64>) -> Timing {
    let min_s = times.iter().copied().fold(f64::INFINITY, f64::min);
    Timing { median_s: median(&mut times), min_s, iters: times.len() }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn op_names_round_trip_including_peer_names() {
        for op in Op::ALL {
            assert_eq!(op.name().parse::<Op>().unwrap(), op);
            assert_eq!(op.peer_name().parse::<Op>().unwrap(), op);
        }
        assert!("nope".parse::<Op>().is_err());
    }

    #[test]
    fn median_of_odd_and_even_lists() {
        assert_eq!(median(&mut [3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&mut [4.0, 1.0, 2.0, 3.0]), 2.5);
    }
}
