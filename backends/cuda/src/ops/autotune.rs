//! Autotuned kernel choice for the grouped GEMM: time every candidate kernel on the first call
//! of each shape bucket, keep the fastest per backend (and optionally in a file), and, in a
//! checking mode, refuse to go on when two candidates disagree.
//!
//! Why: the best f16/bf16 kernel on Hopper depends on the shape. The warp-specialised TMA
//! kernel wins on the large prefill GEMMs it was measured on (run 16), but the wide forms, the
//! plain one-block-per-tile kernel or `mma.sync` may win on few rows per expert or small N.
//! Off Hopper, for f32, and for sizes only one kernel takes there is one candidate and nothing
//! is timed.
//!
//! Environment:
//!
//! | variable | values | effect |
//! | --- | --- | --- |
//! | `MOEKIT_CUDA_AUTOTUNE` | `off` (default), `on`, `check` | `on`: time the candidates on the first call of each bucket and keep the fastest; `check`: as `on`, and compare every candidate's output with the first's (a typed error names both, the bucket and the worst element). Anything else is `off`. [`CudaBackend::set_autotune`] overrides it per backend. |
//! | `MOEKIT_CUDA_AUTOTUNE_CACHE` | a file path | choices are appended one line per bucket (`device \t arch \t bucket \t candidate`) and, in `on` mode, read on first use; lines of another device or architecture are ignored, unreadable ones skipped with a warning. `check` mode never reads it: it tunes and checks every bucket again. |
//! | `MOEKIT_CUDA_AUTOTUNE_QUIET` | `1` | no `moekit-cuda autotune: ...` line on stderr per tuned bucket |
//!
//! `MOEKIT_CUDA_GEMM` (set, non-empty) or `MOEKIT_CUDA_WGMMA_WIDE=1` always win: they force a
//! kernel and nothing is tuned.
//!
//! Tuning runs each candidate into a scratch output of `y`'s shape (the caller's `y` is written
//! only by the chosen kernel afterwards): once to compile and warm up, then [`TIMED_RUNS`] runs
//! timed with CUDA events on the backend's stream; the median counts. It synchronises the
//! stream, once per bucket. Never while the stream captures a CUDA graph (then a cached choice
//! or the default runs) and never for an empty output.

use super::grouped_gemm::{kernel_name, GemmEnv};
use crate::backend::device_err;
use crate::{CudaBackend, CudaBuffer, NAME};
use cudarc::driver::sys::CUevent_flags;
use moekit_ops::tolerance::{compare, Tolerance};
use moekit_ops::{
    DType, Device, Error, GemmLayout, GroupedGemmIo, GroupedGemmProblem, HostTensor, Result, Validated, WeightLayout,
};
use std::collections::HashMap;
use std::fmt;
use std::io::Write;
use std::path::Path;
use std::sync::{Mutex, MutexGuard, PoisonError};

const OP: &str = "grouped_gemm";

/// The mode variable; see the module docs.
const MODE_ENV: &str = "MOEKIT_CUDA_AUTOTUNE";
/// The cache file variable.
const CACHE_ENV: &str = "MOEKIT_CUDA_AUTOTUNE_CACHE";
/// The quiet variable.
const QUIET_ENV: &str = "MOEKIT_CUDA_AUTOTUNE_QUIET";

/// Timed runs per candidate (after one warm-up run).
pub(super) const TIMED_RUNS: usize = 5;

/// Whether, and how, the grouped GEMM's kernel is autotuned (`MOEKIT_CUDA_AUTOTUNE`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AutotuneMode {
    /// The fixed heuristic, nothing timed (the default).
    #[default]
    Off,
    /// Time the candidates on the first call of each shape bucket and keep the fastest.
    On,
    /// As [`AutotuneMode::On`], and every candidate's output must match the first
    /// candidate's within the tolerance of a K-long dot product, else [`Error::Device`].
    Check,
}

impl AutotuneMode {
    /// `on` or `check` (any case, spaces trimmed); anything else, or nothing, is `Off`.
    fn parse(v: Option<&str>) -> Self {
        match v.map(|v| v.trim().to_ascii_lowercase()).as_deref() {
            Some("on") => AutotuneMode::On,
            Some("check") => AutotuneMode::Check,
            _ => AutotuneMode::Off,
        }
    }

    /// The mode `MOEKIT_CUDA_AUTOTUNE` asks for.
    pub fn from_env() -> Self {
        AutotuneMode::parse(std::env::var(MODE_ENV).ok().as_deref())
    }
}

/// One kernel the tuner may pick, by the `MOEKIT_CUDA_GEMM` value (plus `-wide`) that forces it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Candidate {
    pub(super) name: &'static str,
    pub(super) env: GemmEnv,
}

/// Every candidate; the first is the default heuristic's, the reference in `check` mode.
const CANDIDATES: [Candidate; 10] = [
    Candidate { name: "wgmma-ws-tma", env: GemmEnv::DEFAULT },
    Candidate { name: "wgmma-ws-tma-wide", env: GemmEnv::DEFAULT.widened() },
    Candidate { name: "wgmma", env: GemmEnv::WGMMA },
    Candidate { name: "wgmma-wide", env: GemmEnv::WGMMA.widened() },
    Candidate { name: "wgmma-ws", env: GemmEnv::WS },
    Candidate { name: "mma", env: GemmEnv::MMA },
    Candidate { name: "wgmma-ws-tma-b", env: GemmEnv::TMA_B },
    Candidate { name: "wgmma-ws-tma2", env: GemmEnv::TMA2 },
    Candidate { name: "wgmma-ws-tma-epi", env: GemmEnv::EPI },
    Candidate { name: "wgmma-pp", env: GemmEnv::PINGPONG },
];

impl Candidate {
    fn named(name: &str) -> Option<Candidate> {
        CANDIDATES.into_iter().find(|c| c.name == name)
    }
}

/// The candidates that run distinct kernels for `p` on `arch`, the default first. One only off
/// Hopper, for f32, or where the wgmma kernels cannot take the sizes (every env then names the
/// same kernel).
pub(super) fn candidates(p: &GroupedGemmProblem, arch: &str) -> Vec<Candidate> {
    let mut seen: Vec<(Candidate, String)> = Vec::new();
    for c in CANDIDATES {
        let kernel = kernel_name(p, arch, c.env);
        if !seen.iter().any(|(_, k)| *k == kernel) {
            seen.push((c, kernel));
        }
    }
    seen.into_iter().map(|(c, _)| c).collect()
}

/// The shape bucket a choice holds for: whatever picks the kernel or moves the ranking.
///
/// - dtype, weight layout, swiglu, gather: each selects a different compiled kernel (or load
///   path), which may rank differently.
/// - masked or contiguous: a different plan and tile bound.
/// - N, K, E exactly: model constants (few per model), and they set the weight traffic, the
///   n-tiles and how many tiles fill the SMs.
/// - `rows`: the mean rows per expert (`R / E`, or the capacity `C` when masked) rounded up to
///   a power of two. Rows change with every batch; the exact count would retune on each new
///   one, while a power-of-two bucket tunes at most ~30 times per shape, and the ranking
///   changes slowly with rows (it turns on how many 128-row m-tiles each expert fills).
///
/// The row-scale epilogue is left out: one multiply per output, the same in every kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(super) struct Bucket {
    dtype: &'static str,
    nk: bool,
    masked: bool,
    swiglu: bool,
    gather: bool,
    n: usize,
    k: usize,
    experts: usize,
    rows: usize,
}

impl Bucket {
    pub(super) fn of(p: &GroupedGemmProblem) -> Bucket {
        let (masked, mean) = match p.layout {
            GemmLayout::Contiguous { rows } => (false, rows / p.experts.max(1)),
            GemmLayout::Masked { capacity } => (true, capacity),
        };
        Bucket {
            dtype: p.dtype.name(),
            nk: p.weight_layout == WeightLayout::NK,
            masked,
            swiglu: p.swiglu,
            gather: p.gather_tokens.is_some(),
            n: p.n_dim,
            k: p.k_dim,
            experts: p.experts,
            rows: if mean == 0 { 0 } else { mean.next_power_of_two() },
        }
    }
}

/// `bf16 kn contiguous swiglu=1 gather=0 n=768 k=512 e=8 rows=128`; [`Bucket::parse`] reads it back.
impl fmt::Display for Bucket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let nk = if self.nk { "nk" } else { "kn" };
        let layout = if self.masked { "masked" } else { "contiguous" };
        write!(
            f,
            "{} {nk} {layout} swiglu={} gather={} n={} k={} e={} rows={}",
            self.dtype,
            u8::from(self.swiglu),
            u8::from(self.gather),
            self.n,
            self.k,
            self.experts,
            self.rows
        )
    }
}

impl Bucket {
    fn parse(s: &str) -> Option<Bucket> {
        let t: Vec<&str> = s.split_whitespace().collect();
        let [dtype, nk, layout, swiglu, gather, n, k, e, rows] = t[..] else { return None };
        let flag = |tok: &str, key: &str| match tok.strip_prefix(key)?.strip_prefix('=')? {
            "0" => Some(false),
            "1" => Some(true),
            _ => None,
        };
        let num = |tok: &str, key: &str| tok.strip_prefix(key)?.strip_prefix('=')?.parse::<usize>().ok();
        Some(Bucket {
            dtype: dtype.parse::<DType>().ok()?.name(),
            nk: match nk {
                "nk" => true,
                "kn" => false,
                _ => return None,
            },
            masked: match layout {
                "masked" => true,
                "contiguous" => false,
                _ => return None,
            },
            swiglu: flag(swiglu, "swiglu")?,
            gather: flag(gather, "gather")?,
            n: num(n, "n")?,
            k: num(k, "k")?,
            experts: num(e, "e")?,
            rows: num(rows, "rows")?,
        })
    }
}

/// A backend's autotune state (`CudaBackend::autotune`).
#[derive(Debug, Default)]
pub(crate) struct AutotuneState {
    /// Set by [`CudaBackend::set_autotune`]; `None`: `MOEKIT_CUDA_AUTOTUNE` decides.
    mode: Option<AutotuneMode>,
    /// The chosen candidate per bucket.
    choices: HashMap<Bucket, Candidate>,
    /// Whether `MOEKIT_CUDA_AUTOTUNE_CACHE` has been read into `choices`.
    file_read: bool,
}

/// One cache file line.
fn cache_line(device: &str, arch: &str, bucket: &Bucket, c: &Candidate) -> String {
    let device = device.replace(['\t', '\n', '\r'], " ");
    format!("{device}\t{arch}\t{bucket}\t{}\n", c.name)
}

/// The entries of a cache file written on `device`/`arch` (later lines win), and a warning per
/// line that cannot be read. Blank lines and `#` comments are skipped.
fn parse_cache(text: &str, device: &str, arch: &str) -> (Vec<(Bucket, Candidate)>, Vec<String>) {
    let device = device.replace(['\t', '\n', '\r'], " ");
    let (mut entries, mut warnings) = (Vec::new(), Vec::new());
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() || line.starts_with('#') {
            continue;
        }
        let parsed = match line.split('\t').collect::<Vec<_>>()[..] {
            [d, a, b, c] => Bucket::parse(b).zip(Candidate::named(c.trim())).map(|e| (d, a, e)),
            _ => None,
        };
        match parsed {
            Some((d, a, entry)) if d == device && a == arch => entries.push(entry),
            Some(_) => {}
            None => warnings.push(format!("line {}: cannot read {line:?}", i + 1)),
        }
    }
    (entries, warnings)
}

/// Read `path`'s entries for `device`/`arch`, warning on stderr about what cannot be read (a
/// missing file is an empty cache).
fn load_cache(path: &Path, device: &str, arch: &str) -> Vec<(Bucket, Candidate)> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Vec::new(),
        Err(e) => {
            eprintln!("moekit-cuda autotune: cannot read {}: {e}; ignoring it", path.display());
            return Vec::new();
        }
    };
    let (entries, warnings) = parse_cache(&text, device, arch);
    for w in warnings {
        eprintln!("moekit-cuda autotune: {}: {w}; skipped", path.display());
    }
    entries
}

/// Append one choice to `path` (created when missing).
fn append_cache(path: &Path, line: &str) -> std::io::Result<()> {
    std::fs::OpenOptions::new().create(true).append(true).open(path)?.write_all(line.as_bytes())
}

/// The median of `samples` (NaN for none).
pub(super) fn median(samples: &mut [f64]) -> f64 {
    samples.sort_by(f64::total_cmp);
    samples.get(samples.len() / 2).copied().unwrap_or(f64::NAN)
}

/// The index of the fastest of `timed` (µs); the earlier one on a tie, so the default wins
/// ties.
pub(super) fn fastest(timed: &[(Candidate, f64)]) -> usize {
    let key = |us: f64| if us.is_nan() { f64::INFINITY } else { us };
    let best = (0..timed.len()).min_by(|&a, &b| key(timed[a].1).total_cmp(&key(timed[b].1))).unwrap_or(0);
    // NOTE: the first candidate (the heuristic's default) keeps the bucket unless another is
    // faster by more than DEFAULT_MARGIN: small problems time within a few percent of each other
    // from run to run, and a choice that flips between near-equal kernels helps nobody.
    match timed.first() {
        Some(&(_, d)) if key(timed[best].1) * (1.0 + DEFAULT_MARGIN) >= key(d) => 0,
        _ => best,
    }
}

/// How much faster than the default a candidate must be to replace it (3%).
const DEFAULT_MARGIN: f64 = 0.03;

/// The stderr line of a tuned bucket.
fn summary(bucket: &Bucket, timed: &[(Candidate, f64)], best: usize) -> String {
    let others: Vec<String> = timed
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != best)
        .map(|(_, (c, us))| format!("{} {us:.1}", c.name))
        .collect();
    let (c, us) = timed[best];
    format!("moekit-cuda autotune: {bucket} -> {} ({us:.1} us; others {} us)", c.name, others.join(", "))
}

/// `Ok` when `got` (candidate `b`) matches `want` (candidate `a`) within twice the tolerance of
/// a K-long dot product in `dtype` (each candidate may be that far from the exact result; twice
/// more after SwiGLU, as the reference tests allow); else [`Error::Device`] naming both
/// candidates, the bucket and the worst element.
pub(super) fn check_agree(bucket: &Bucket, a: &str, want: &[f64], b: &str, got: &[f64], dtype: DType) -> Result<()> {
    let tol = Tolerance::for_dtype(dtype, bucket.k).times(if bucket.swiglu { 4.0 } else { 2.0 });
    let report = compare("y", want, got, tol);
    if report.ok() {
        return Ok(());
    }
    let floor = moekit_ops::tolerance::rms(want).max(f64::MIN_POSITIVE);
    let err = |(e, g): (&f64, &f64)| if e == g { 0.0 } else { (g - e).abs() / (e.abs() + floor) };
    let worst = want.iter().zip(got).map(err).enumerate().max_by(|x, y| x.1.total_cmp(&y.1)).map_or(0, |(i, _)| i);
    let (e, g) = (want.get(worst).copied().unwrap_or(f64::NAN), got.get(worst).copied().unwrap_or(f64::NAN));
    Err(Error::Device {
        op: OP,
        backend: NAME,
        msg: format!(
            "autotune check: candidate `{b}` differs from `{a}` on bucket [{bucket}]: worst element [{worst}] \
             {a} {e:.6e}, {b} {g:.6e}; {report}"
        ),
    })
}

/// Lock the state; a poisoned lock still holds a valid cache (entries are inserted whole).
fn state(m: &Mutex<AutotuneState>) -> MutexGuard<'_, AutotuneState> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl CudaBackend {
    /// Sets how this backend picks its grouped GEMM kernel, over `MOEKIT_CUDA_AUTOTUNE`
    /// (`MOEKIT_CUDA_GEMM` still wins). Choices already cached are kept.
    pub fn set_autotune(&self, mode: AutotuneMode) {
        state(&self.autotune).mode = Some(mode);
    }

    /// The autotune mode in force: the one set by [`CudaBackend::set_autotune`], else
    /// `MOEKIT_CUDA_AUTOTUNE`'s.
    pub fn autotune_mode(&self) -> AutotuneMode {
        state(&self.autotune).mode.unwrap_or_else(AutotuneMode::from_env)
    }

    /// The cached choices as `(bucket, candidate)`, sorted by bucket; the candidate is the
    /// `MOEKIT_CUDA_GEMM` value forcing that kernel, with `-wide` for `MOEKIT_CUDA_WGMMA_WIDE=1`.
    pub fn autotune_choices(&self) -> Vec<(String, String)> {
        let st = state(&self.autotune);
        let mut v: Vec<_> = st.choices.iter().collect();
        v.sort_by_key(|(b, _)| **b);
        v.into_iter().map(|(b, c)| (b.to_string(), c.name.to_string())).collect()
    }

    /// The kernel for `p`: the environment's when it forces one or autotuning is off, else the
    /// cached choice for its bucket, else (tuning now) the fastest candidate.
    pub(super) fn gemm_env(
        &self,
        p: &Validated<GroupedGemmProblem>,
        io: &GroupedGemmIo<'_, CudaBuffer>,
    ) -> Result<GemmEnv> {
        let mode = self.autotune_mode();
        if mode == AutotuneMode::Off || GemmEnv::forced_by_env() {
            return Ok(GemmEnv::from_env());
        }
        let cands = candidates(p, self.arch());
        let [first, _, ..] = cands[..] else { return Ok(GemmEnv::from_env()) };
        let bucket = Bucket::of(p);
        if let Some(c) = self.cached(&bucket, mode) {
            return Ok(c.env);
        }
        // NOTE: `capturing` (graph.rs) also answers `true` when the status cannot be read.
        if p.out_rows() == 0 || self.capturing() {
            return Ok(first.env);
        }
        match self.tune(p, io, &bucket, &cands, mode == AutotuneMode::Check)? {
            Some(best) => {
                self.remember(bucket, best);
                Ok(best.env)
            }
            None => Ok(first.env),
        }
    }

    /// The cached choice for `bucket`, reading the cache file first on first use in `on` mode.
    fn cached(&self, bucket: &Bucket, mode: AutotuneMode) -> Option<Candidate> {
        let mut st = state(&self.autotune);
        if mode == AutotuneMode::On && !st.file_read {
            st.file_read = true;
            if let Some(path) = std::env::var_os(CACHE_ENV) {
                let device = self.device_name();
                for (b, c) in load_cache(Path::new(&path), &device, self.arch()) {
                    st.choices.entry(b).or_insert(c);
                }
            }
        }
        st.choices.get(bucket).copied()
    }

    /// Cache `c` for `bucket`, and append it to the cache file when there is one.
    fn remember(&self, bucket: Bucket, c: Candidate) {
        state(&self.autotune).choices.insert(bucket, c);
        if let Some(path) = std::env::var_os(CACHE_ENV) {
            let line = cache_line(&self.device_name(), self.arch(), &bucket, &c);
            if let Err(e) = append_cache(Path::new(&path), &line) {
                eprintln!("moekit-cuda autotune: cannot append to {}: {e}", Path::new(&path).display());
            }
        }
    }

    /// The device's name, for the cache file.
    fn device_name(&self) -> String {
        self.context().name().unwrap_or_else(|_| "unknown device".into())
    }

    /// Time every candidate into a scratch output; in `check` mode compare their outputs.
    /// `None` (untuned) when the scratch output does not fit in memory (with a warning) or no
    /// candidate can take the problem.
    fn tune(
        &self,
        p: &Validated<GroupedGemmProblem>,
        io: &GroupedGemmIo<'_, CudaBuffer>,
        bucket: &Bucket,
        cands: &[Candidate],
        check: bool,
    ) -> Result<Option<Candidate>> {
        let mut scratch = match self.alloc(io.y.dtype, &io.y.shape) {
            Ok(s) => s,
            Err(e @ Error::OutOfMemory { .. }) => {
                eprintln!("moekit-cuda autotune: {bucket}: no memory for a scratch output ({e}); not tuned");
                return Ok(None);
            }
            Err(e) => return Err(e),
        };
        let mut timed = Vec::with_capacity(cands.len());
        let mut reference: Option<(&str, Vec<f64>)> = None;
        for &c in cands {
            if check {
                // NOTE: NaN in every float dtype, so an element a candidate leaves unwritten
                // cannot pass by holding the previous candidate's value.
                self.fill_bytes(&mut scratch, 0xFF)?;
            }
            let us = match self.time_candidate(p, io, &mut scratch, c.env) {
                Ok(ms) => 1e3 * ms,
                // A kernel that cannot take the problem (too many tiles for one launch) is no
                // candidate; the others still are.
                Err(Error::Unsupported { .. }) => continue,
                Err(e) => return Err(e),
            };
            if check {
                let got = self.values(&scratch)?;
                match &reference {
                    None => reference = Some((c.name, got)),
                    Some((a, want)) => check_agree(bucket, a, want, c.name, &got, p.dtype)?,
                }
            }
            timed.push((c, us));
        }
        if timed.is_empty() {
            return Ok(None);
        }
        let best = fastest(&timed);
        if !std::env::var(QUIET_ENV).is_ok_and(|v| v.trim() == "1") {
            let agree = if check { "; outputs agree" } else { "" };
            eprintln!("{}{agree}", summary(bucket, &timed, best));
        }
        Ok(Some(timed[best].0))
    }

    /// Median milliseconds of [`TIMED_RUNS`] runs of `env` into `y`, after a warm-up run
    /// (which also compiles the kernel).
    fn time_candidate(
        &self,
        p: &Validated<GroupedGemmProblem>,
        io: &GroupedGemmIo<'_, CudaBuffer>,
        y: &mut CudaBuffer,
        env: GemmEnv,
    ) -> Result<f64> {
        let run = |y: &mut CudaBuffer| {
            let io = GroupedGemmIo {
                x: io.x,
                w: io.w,
                group: io.group,
                row_to_token: io.row_to_token,
                row_scale: io.row_scale,
                y,
            };
            self.run_with(p, io, env)
        };
        run(y)?;
        let event = || self.stream.record_event(Some(CUevent_flags::CU_EVENT_DEFAULT)).map_err(device_err(OP));
        let mut events = Vec::with_capacity(TIMED_RUNS);
        for _ in 0..TIMED_RUNS {
            let start = event()?;
            run(y)?;
            events.push((start, event()?));
        }
        let mut ms = events
            .iter()
            .map(|(s, e)| s.elapsed_ms(e).map(f64::from))
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(device_err(OP))?;
        Ok(median(&mut ms))
    }

    /// Set every byte of `buf` to `byte` (stream-ordered).
    fn fill_bytes(&self, buf: &mut CudaBuffer, byte: u8) -> Result<()> {
        let n = buf.num_bytes();
        if n > 0 {
            let mut dst = buf.data.slice_mut(..n);
            self.stream.memcpy_htod(&vec![byte; n][..], &mut dst).map_err(device_err(OP))?;
        }
        Ok(())
    }

    /// `buf`'s values. Unlike `download`, leaves a pending content error to the caller's next
    /// check.
    fn values(&self, buf: &CudaBuffer) -> Result<Vec<f64>> {
        let n = buf.num_bytes();
        let mut host = vec![0u8; n];
        if n > 0 {
            self.stream.memcpy_dtoh(&buf.data.slice(..n), &mut host).map_err(device_err(OP))?;
            self.stream.synchronize().map_err(device_err(OP))?;
        }
        Ok(HostTensor::from_bytes(buf.dtype, &buf.shape, &host)?.to_f64_vec())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn up_gemm(rows: usize, dtype: DType) -> GroupedGemmProblem {
        let mut p = GroupedGemmProblem::contiguous(rows, 8, 512, 768, dtype);
        p.swiglu = true;
        p
    }

    fn names(c: &[Candidate]) -> Vec<&'static str> {
        c.iter().map(|c| c.name).collect()
    }

    #[test]
    fn mode_parses() {
        assert_eq!(AutotuneMode::parse(None), AutotuneMode::Off);
        assert_eq!(AutotuneMode::parse(Some("off")), AutotuneMode::Off);
        assert_eq!(AutotuneMode::parse(Some("ON")), AutotuneMode::On);
        assert_eq!(AutotuneMode::parse(Some(" check\n")), AutotuneMode::Check);
        assert_eq!(AutotuneMode::parse(Some("yes")), AutotuneMode::Off);
        assert_eq!(AutotuneMode::parse(Some("")), AutotuneMode::Off);
        assert_eq!(AutotuneMode::default(), AutotuneMode::Off);
    }

    #[test]
    fn bucket_rounds_mean_rows_up_to_a_power_of_two() {
        let b = |rows| Bucket::of(&up_gemm(rows, DType::BF16)).rows;
        assert_eq!((b(1000), b(1024), b(1025), b(1032), b(8 * 257)), (128, 128, 128, 256, 512));
        assert_eq!((b(0), b(7), b(8), b(24)), (0, 0, 1, 4));
        assert_eq!(Bucket::of(&up_gemm(1000, DType::BF16)), Bucket::of(&up_gemm(900, DType::BF16)));
        assert_ne!(Bucket::of(&up_gemm(1000, DType::BF16)), Bucket::of(&up_gemm(1000, DType::F16)));
    }

    #[test]
    fn bucket_tells_masked_from_contiguous_and_the_kernel_choices() {
        let contiguous = up_gemm(8 * 100, DType::BF16);
        let mut masked = contiguous.clone();
        masked.layout = GemmLayout::Masked { capacity: 100 };
        let (c, m) = (Bucket::of(&contiguous), Bucket::of(&masked));
        assert_eq!((c.rows, m.rows), (128, 128));
        assert!(!c.masked && m.masked);
        assert_ne!(c, m);
        let with = |f: &dyn Fn(&mut GroupedGemmProblem)| {
            let mut q = contiguous.clone();
            f(&mut q);
            Bucket::of(&q)
        };
        assert_ne!(with(&|q| q.weight_layout = WeightLayout::NK), c);
        assert_ne!(with(&|q| q.gather_tokens = Some(300)), c);
        assert_ne!(with(&|q| q.swiglu = false), c);
        assert_ne!(with(&|q| q.n_dim = 1536), c);
        assert_ne!(with(&|q| q.k_dim = 1024), c);
        assert_eq!(with(&|q| q.row_scale = true), c);
        assert_eq!(m.to_string(), "bf16 kn masked swiglu=1 gather=0 n=768 k=512 e=8 rows=128");
        for b in [c, m, with(&|q| q.gather_tokens = Some(3)), with(&|q| q.weight_layout = WeightLayout::NK)] {
            assert_eq!(Bucket::parse(&b.to_string()), Some(b));
        }
        for bad in [
            "",
            "bf16 kn",
            "bf17 kn masked swiglu=1 gather=0 n=1 k=1 e=1 rows=1",
            "bf16 kn masked swiglu=2 gather=0 n=1 k=1 e=1 rows=1",
        ] {
            assert_eq!(Bucket::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn hopper_half_precision_has_eight_candidates_else_one() {
        // Rows not gathered: the default loads A through TMA and has no wide form (its wide
        // candidate is the same kernel), and the weights-only TMA kernel is a candidate of its own.
        // With SwiGLU the default has no storer warps (wgmma-ws-tma2 is the same kernel), so the
        // storer-warp kernel is one more candidate; without SwiGLU and from 128 rows per expert
        // the default has them, and the kernel without them is the extra one. The ping-pong
        // kernel is a candidate wherever the TMA kernels run.
        let all = [
            "wgmma-ws-tma",
            "wgmma",
            "wgmma-wide",
            "wgmma-ws",
            "mma",
            "wgmma-ws-tma-b",
            "wgmma-ws-tma-epi",
            "wgmma-pp",
        ];
        for dtype in [DType::BF16, DType::F16] {
            assert_eq!(names(&candidates(&up_gemm(1000, dtype), "sm_90a")), all);
        }
        let mut plain = up_gemm(8 * 128, DType::BF16);
        plain.swiglu = false;
        let all =
            ["wgmma-ws-tma", "wgmma", "wgmma-wide", "wgmma-ws", "mma", "wgmma-ws-tma-b", "wgmma-ws-tma2", "wgmma-pp"];
        assert_eq!(names(&candidates(&plain, "sm_90a")), all);
        // Gathered rows: the default is the weights-only TMA kernel, which comes wide too.
        let mut gathered = up_gemm(1000, DType::BF16);
        gathered.gather_tokens = Some(200);
        let all = ["wgmma-ws-tma", "wgmma-ws-tma-wide", "wgmma", "wgmma-wide", "wgmma-ws", "mma", "wgmma-pp"];
        assert_eq!(names(&candidates(&gathered, "sm_90a")), all);
        // The default first, whatever runs.
        assert_eq!(names(&candidates(&up_gemm(1000, DType::BF16), "sm_80")), ["wgmma-ws-tma"]);
        assert_eq!(names(&candidates(&up_gemm(1000, DType::F32), "sm_90a")), ["wgmma-ws-tma"]);
        // K not a multiple of 8: only mma.sync runs on Hopper too.
        let mut odd = up_gemm(1000, DType::BF16);
        odd.k_dim = 20;
        assert_eq!(candidates(&odd, "sm_90a").len(), 1);
        for c in CANDIDATES {
            assert_eq!(Candidate::named(c.name), Some(c));
        }
        assert_eq!(Candidate::named("wgmma-ws-fence"), None);
    }

    #[test]
    fn fastest_takes_the_least_median_and_the_default_on_ties() {
        let t = |us: [f64; 3]| [(CANDIDATES[0], us[0]), (CANDIDATES[2], us[1]), (CANDIDATES[5], us[2])];
        assert_eq!(fastest(&t([30.0, 20.0, 25.0])), 1);
        assert_eq!(fastest(&t([20.0, 20.0, 25.0])), 0);
        // Within the 3% margin the default stays.
        assert_eq!(fastest(&t([20.5, 20.0, 25.0])), 0);
        assert_eq!(fastest(&t([f64::NAN, 40.0, 25.0])), 2);
        assert_eq!(fastest(&[]), 0);
        assert_eq!(median(&mut [5.0, 1.0, 9.0, 2.0, 3.0]), 3.0);
        assert!(median(&mut []).is_nan());
        let b = Bucket::of(&up_gemm(1000, DType::BF16));
        assert_eq!(
            summary(&b, &t([30.0, 20.0, 25.0]), 1),
            "moekit-cuda autotune: bf16 kn contiguous swiglu=1 gather=0 n=768 k=512 e=8 rows=128 -> wgmma \
             (20.0 us; others wgmma-ws-tma 30.0, mma 25.0 us)"
        );
    }

    /// A unique temporary file that is removed on drop.
    struct TempFile(std::path::PathBuf);

    impl TempFile {
        fn new(tag: &str) -> Self {
            let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
            TempFile(std::env::temp_dir().join(format!("moekit-autotune-{tag}-{}-{nanos}.txt", std::process::id())))
        }
    }

    impl Drop for TempFile {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }

    #[test]
    fn cache_file_round_trips_per_device() {
        let f = TempFile::new("round-trip");
        assert!(load_cache(&f.0, "NVIDIA H200", "sm_90a").is_empty(), "a missing file is empty");
        let (b1, b2) = (Bucket::of(&up_gemm(1000, DType::BF16)), Bucket::of(&up_gemm(64, DType::F16)));
        let (c1, c2) = (Candidate::named("wgmma-wide").unwrap(), Candidate::named("mma").unwrap());
        append_cache(&f.0, &cache_line("NVIDIA H200", "sm_90a", &b1, &c1)).unwrap();
        append_cache(&f.0, &cache_line("NVIDIA H100\t80GB", "sm_90a", &b1, &c2)).unwrap();
        append_cache(&f.0, &cache_line("NVIDIA H200", "sm_90a", &b2, &c2)).unwrap();
        append_cache(&f.0, &cache_line("NVIDIA H200", "sm_80", &b2, &c1)).unwrap();
        assert_eq!(load_cache(&f.0, "NVIDIA H200", "sm_90a"), [(b1, c1), (b2, c2)]);
        assert_eq!(load_cache(&f.0, "NVIDIA H100\t80GB", "sm_90a"), [(b1, c2)]);
        assert_eq!(load_cache(&f.0, "NVIDIA H200", "sm_80"), [(b2, c1)]);
    }

    #[test]
    fn cache_file_skips_lines_it_cannot_read() {
        let b = Bucket::of(&up_gemm(1000, DType::BF16));
        let good = cache_line("GPU", "sm_90a", &b, &CANDIDATES[3]);
        let text = format!(
            "# a comment\n\ngarbage\nGPU\tsm_90a\t{b}\tno-such-kernel\nGPU\tsm_90a\tbf16 kn\twgmma\n{good}GPU\tsm_90a\n"
        );
        let (entries, warnings) = parse_cache(&text, "GPU", "sm_90a");
        assert_eq!(entries, [(b, CANDIDATES[3])]);
        assert_eq!(warnings.len(), 4, "{warnings:?}");
        assert!(warnings[0].starts_with("line 3:"), "{warnings:?}");
        // Through a file: the same, without a panic.
        let f = TempFile::new("bad-lines");
        std::fs::write(&f.0, text).unwrap();
        assert_eq!(load_cache(&f.0, "GPU", "sm_90a"), [(b, CANDIDATES[3])]);
    }

    #[test]
    fn check_flags_a_planted_mismatch_and_accepts_rounding() {
        let b = Bucket::of(&up_gemm(1000, DType::BF16));
        let want: Vec<f64> = (0..4096).map(|i| ((i as f64) * 0.37).sin()).collect();
        // One bf16 rounding step (2^-8 relative) on every element, both directions.
        let rounded: Vec<f64> = want
            .iter()
            .enumerate()
            .map(|(i, v)| v * if i % 2 == 0 { 1.0 + 1.0 / 256.0 } else { 1.0 - 1.0 / 256.0 })
            .collect();
        check_agree(&b, "wgmma-ws-tma", &want, "wgmma", &rounded, DType::BF16).unwrap();
        let mut planted = rounded.clone();
        planted[1234] += 0.5;
        let e = check_agree(&b, "wgmma-ws-tma", &want, "mma", &planted, DType::BF16).unwrap_err();
        let Error::Device { op: "grouped_gemm", msg, .. } = &e else { panic!("{e:?}") };
        for part in ["`mma`", "`wgmma-ws-tma`", "rows=128", "[1234]", "1 of 4096"] {
            assert!(msg.contains(part), "{part} not in {msg}");
        }
        let mut nan = want.clone();
        nan[7] = f64::NAN;
        assert!(check_agree(&b, "a", &want, "b", &nan, DType::BF16).is_err());
    }
}
