//! # moekit-cubecl: the cubecl backend
//!
//! [`CubeBackend<R>`] runs moekit on a [cubecl](https://docs.rs/cubecl) 0.10 runtime: CUDA
//! (cargo feature `cubecl-cuda`) or wgpu (feature `cubecl-wgpu`: Vulkan through SPIR-V on
//! Linux, Metal, DX12). Its `#[cube]` kernels are written once for every runtime and need no
//! plane operations; memory ([`moekit_ops::Device`]: alloc, upload, download, sync) goes
//! through the cubecl client. Bad index data a kernel meets (ids, rows, offsets out of range,
//! non-finite router logits) is reported as a typed error at the next `sync` or `download`.
//!
//! The API is the same whatever is compiled: [`CubeBackend::wgpu`] and [`CubeBackend::cuda`]
//! always exist and answer [`Error::NotCompiled`] when their feature is off, or
//! [`Error::NoDevice`] when the machine has no adapter or GPU. [`WgpuRuntime`] and
//! [`CudaRuntime`] are cubecl's runtimes when their feature is on, and empty placeholders
//! otherwise. With a feature on, `CubeBackend<R>` works over any `R: cubecl::Runtime` (a
//! caller's client through `CubeBackend::from_client` (with a cubecl feature)). A program that
//! already owns a wgpu device and queue hands them over with `CubeBackend::from_wgpu_setup`
//! (feature `cubecl-wgpu`), so moekit runs on its queue instead of opening a device of its own.
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
#[cfg(any(feature = "cubecl-wgpu", feature = "cubecl-cuda"))]
mod flag;
#[cfg(any(feature = "cubecl-wgpu", feature = "cubecl-cuda"))]
mod kernels;
#[cfg(any(feature = "cubecl-wgpu", feature = "cubecl-cuda"))]
mod ops;
mod runtime;

pub use backend::{Capabilities, CubeBackend};
pub use buffer::CubeBuffer;
/// A caller's wgpu instance, adapter, device and queue, for `CubeBackend::from_wgpu_setup`.
#[cfg(feature = "cubecl-wgpu")]
pub use cubecl::wgpu::WgpuSetup;
pub use moekit_ops::Error;
pub use runtime::{CubeRuntime, CudaRuntime, WgpuRuntime};
/// The wgpu crate (the version cubecl's wgpu runtime uses), for building a [`WgpuSetup`].
#[cfg(feature = "cubecl-wgpu")]
pub use wgpu;
