//! # moekit-cuda: the CUDA backend
//!
//! [`CudaBackend`] owns a CUDA context and a stream on one GPU, through
//! [cudarc](https://docs.rs/cudarc) 0.19. Its kernels (CUDA C++ sources compiled at run time
//! with NVRTC, cuBLASLt for dense GEMM) arrive in issue #3; until then every op answers
//! [`Error::NotImplemented`], while memory ([`moekit_ops::Device`]: alloc, upload, download,
//! sync) already works.
//!
//! The type exists whatever is compiled, so the API does not change with features: without
//! the cargo feature `cuda`, [`CudaBackend::new`] answers [`Error::NotCompiled`]; with it, on
//! a machine without the CUDA driver or a GPU, [`Error::NoDevice`]. Neither panics. No CUDA
//! toolkit is needed to build: cudarc loads libcuda and NVRTC at run time.
//!
//! ```
//! use moekit_cuda::CudaBackend;
//! use moekit_ops::Error;
//!
//! match CudaBackend::new(0) {
//!     Ok(gpu) => println!("running on {gpu:?}"),
//!     Err(Error::NotCompiled { feature, .. }) => println!("build with `--features {feature}`"),
//!     Err(e) => println!("no CUDA device here: {e}"),
//! }
//! ```

mod backend;
mod buffer;

pub use backend::CudaBackend;
pub use buffer::CudaBuffer;
pub use moekit_ops::Error;

/// The backend name every error and report uses.
pub const NAME: &str = "cuda";
