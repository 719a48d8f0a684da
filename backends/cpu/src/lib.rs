//! # moekit-cpu: the default backend
//!
//! [`CpuBackend`] runs every moekit op on the host: rayon across tokens, experts, heads and
//! query blocks; the `gemm` crate for every matrix product (router logits, grouped expert
//! GEMM, attention, dense GEMM); f32 accumulation for f32, f16 and bf16 inputs, each output
//! rounded once. Index data (ids, offsets, counts, gather rows) is checked before use, so bad
//! data gets a typed error, never a panic.
//!
//! Call it through the checked entry points of [`moekit_ops::api`]:
//!
//! ```
//! use moekit_cpu::CpuBackend;
//! use moekit_ops::{api, DType, Device, HostTensor, RouteIo, RouteProblem};
//! let cpu = CpuBackend::new();
//! let p = RouteProblem::new(1, 4, 2, DType::F32);
//! let logits = HostTensor::from_f32(DType::F32, &[1, 4], &[0.1, 2.0, -1.0, 1.0]);
//! let mut ids = cpu.alloc(DType::I32, &[1, 2]).unwrap();
//! let mut weights = cpu.alloc(DType::F32, &[1, 2]).unwrap();
//! let mut counts = cpu.alloc(DType::I32, &[4]).unwrap();
//! let mut load = cpu.alloc(DType::F32, &[4]).unwrap();
//! let io = RouteIo {
//!     logits: &logits,
//!     gate: None,
//!     bias: None,
//!     ids: &mut ids,
//!     weights: &mut weights,
//!     counts: &mut counts,
//!     load: &mut load,
//! };
//! api::route(&cpu, &p, io).unwrap();
//! assert_eq!(ids.as_i32().unwrap(), &[1, 3]);
//! ```

mod attention;
mod convert;
mod device;
mod glue;
mod grouped_gemm;
mod matmul;
mod permute;
mod route;

pub use device::CpuBackend;

impl moekit_ops::MoeOps for CpuBackend {}
