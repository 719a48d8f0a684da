//! # moekit-cubecl: the cubecl backend
//!
//! [`CubeBackend<R>`] runs moekit on a [cubecl](https://docs.rs/cubecl) 0.10 runtime: CUDA
//! (cargo feature `cubecl-cuda`) or wgpu (feature `cubecl-wgpu`: Vulkan through SPIR-V on
//! Linux, Metal, DX12). Its `#[cube]` kernels arrive in issue #4; until then every op answers
//! [`Error::NotImplemented`], while memory ([`moekit_ops::Device`]: alloc, upload, download,
//! sync) already goes through the cubecl client.
//!
//! The API is the same whatever is compiled: [`CubeBackend::wgpu`] and [`CubeBackend::cuda`]
//! always exist and answer [`Error::NotCompiled`] when their feature is off, or
//! [`Error::NoDevice`] when the machine has no adapter or GPU. [`WgpuRuntime`] and
//! [`CudaRuntime`] are cubecl's runtimes when their feature is on, and empty placeholders
//! otherwise. With a feature on, `CubeBackend<R>` works over any `R: cubecl::Runtime` (a
//! caller's client through `CubeBackend::from_client` (with a cubecl feature)).
//!
//! ```
//! use moekit_cubecl::{CubeBackend, WgpuRuntime};
//! use moekit_ops::Error;
//!
//! match CubeBackend::<WgpuRuntime>::wgpu() {
//!     Ok(b) => println!("running on {b:?}"),
//!     Err(Error::NotCompiled { feature, .. }) => println!("build with `--features {feature}`"),
//!     Err(e) => println!("no wgpu adapter here: {e}"),
//! }
//! ```

mod backend;
mod buffer;
#[cfg(any(feature = "cubecl-wgpu", feature = "cubecl-cuda"))]
mod client;
mod runtime;

pub use backend::CubeBackend;
pub use buffer::CubeBuffer;
pub use moekit_ops::Error;
pub use runtime::{CubeRuntime, CudaRuntime, WgpuRuntime};
