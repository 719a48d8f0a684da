//! # moekit-bench: the shape-table benchmark
//!
//! Times every moekit op on a backend over a table of real MoE shapes
//! ([`shapes`]: qwen3-30b-a3b, ernie45-21b-a3b, deepseek-v3, small ones for the CPU, and
//! `custom:T=..,H=..,E=..,k=..,I=..,skew=..`), and checks every run against the reference.
//!
//! Each case ([`cases`], one [`Workload`] per op) builds fresh seeded random inputs (never
//! zeros), runs warm-up and timed runs through `moekit_ops::api` on any
//! [`moekit_ops::Backend`], poisons the outputs (NaN / garbage, through upload), runs once
//! more and compares that run with `moekit_reference::ReferenceBackend`: on the whole
//! problem when the reference can do it quickly, else on a sample of rows or tokens built as
//! a sub-problem ([`Workload::verify_sample`]). Integers compare exactly, floats through
//! `moekit_ops::tolerance`.
//!
//! Timed runs are timed as `triton.testing.do_bench` times the PyTorch peers
//! ([`TimingMode::Queued`], the default since run 23): on the cuda backend each run follows a
//! 256 MiB cache-clearing write and the runs are queued without a sync between them, so the
//! host's launch time overlaps the device's work as it does for the peers.
//! [`TimingMode::Synced`] (`--synced`, runs 1–22) times each run on an idle device, with the
//! host's time until its first launch in the figure.
//!
//! [`runner::Runner`] adds the reference's own time (`--compare-reference`) and the
//! backend's dense GEMM rate at the same FLOPs (`--ceiling`) and, for memory-bound ops, the
//! percentage of a copy rate (`--copy-ceiling-gbps`, 4280 GB/s on GPU backends: the H200's
//! measured device-to-device copy); [`record::Record`] is the JSON line, [`peers`] matches
//! PyTorch peer lines, [`dump`] writes each case's inputs and outputs as safetensors
//! (`--dump DIR`).
//!
//! ```no_run
//! use moekit_bench::{runner::{RunConfig, Runner}, shapes, Op};
//! use moekit_ops::DType;
//! let cpu = moekit_cpu::CpuBackend::new();
//! let mut runner = Runner::new(&cpu, RunConfig::default());
//! let small = &shapes::resolve("small").unwrap()[0];
//! let out = runner.run(Op::MoeLayer, small, DType::F32).unwrap();
//! println!("{} ms, check {}", out.timing.median_s * 1e3, out.verdict.pass);
//! ```

pub mod cases;
pub mod data;
pub mod dump;
pub mod masks;
pub mod peers;
pub mod record;
pub mod runner;
pub mod shapes;
pub mod table;
pub mod verify;
pub mod workload;

pub use shapes::{AttnShape, MoeShape};
pub use workload::{measure, Measured, Op, Prepared, Timing, TimingMode, Workload};
