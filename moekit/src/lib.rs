//! # moekit
//!
//! Operators for ultra-sparse, unified multimodal Mixture-of-Experts models: top-k routing,
//! token permutation and weighted combine, grouped expert GEMM, packed variable-length
//! attention, and the model glue around them (RMSNorm, rotary embeddings, SwiGLU, embedding
//! gather, dense GEMM), behind one backend seam with a reference implementation to check
//! every backend against.
//!
//! This facade re-exports the seam ([`ops`], and its main types at the top level) and every
//! backend. Cargo features map one to one onto backends:
//!
//! | backend | type | feature | state |
//! | --- | --- | --- | --- |
//! | reference | [`ReferenceBackend`] | always | every op, f64 loops (the oracle) |
//! | CPU | `CpuBackend` | `cpu` (default) | every op, rayon + `gemm` |
//! | CUDA | [`CudaBackend`] | `cuda` | every op: NVRTC kernels, Hopper `wgmma` paths |
//! | cubecl on CUDA | [`CubeBackend<CudaRuntime>`](CubeBackend) | `cubecl-cuda` | every op, `#[cube]` kernels on `mma.sync` |
//! | cubecl on wgpu | [`CubeBackend<WgpuRuntime>`](CubeBackend) | `cubecl-wgpu` | every op, f32/f16 (bf16 where the adapter has it) |
//!
//! A backend whose feature is off still names itself: its constructor answers
//! [`Error::NotCompiled`], so code written against moekit compiles the same whatever is
//! enabled.
//!
//! Every op is called through the checked entry points of [`api`] (also [`ops::api`]), which
//! validate the `*Problem` descriptor and every buffer before the backend runs. The
//! [`guide`] has a runnable example per op family.
//!
//! ```
//! use moekit::{CudaBackend, Error};
//!
//! match CudaBackend::new(0) {
//!     Ok(_) => println!("a GPU"),
//!     Err(Error::NotCompiled { feature, .. }) => println!("enable the `{feature}` feature"),
//!     Err(e) => println!("no GPU here: {e}"),
//! }
//! ```

#[cfg(feature = "cpu")]
pub mod guide;
pub mod pick;

/// The backend seam: dtypes, errors, problems, op-family traits, checked entry points.
pub use moekit_ops as ops;
pub use moekit_ops::*;

#[cfg(feature = "cpu")]
pub use moekit_cpu::CpuBackend;
pub use moekit_cubecl::{CubeBackend, CubeBuffer, CubeRuntime, CudaRuntime, WgpuRuntime};
pub use moekit_cuda::{CudaBackend, CudaBuffer};
pub use moekit_reference::ReferenceBackend;

/// The cubecl backend crate (runtimes, buffers).
pub use moekit_cubecl as cubecl;
