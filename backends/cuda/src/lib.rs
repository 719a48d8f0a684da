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
#[cfg(feature = "cuda")]
mod flag;
#[cfg(feature = "cuda")]
mod graph;
#[cfg(feature = "cuda")]
mod launch;
#[cfg(feature = "cuda")]
mod ops;
#[cfg(feature = "cuda")]
mod runtime;

pub use backend::CudaBackend;
pub use buffer::CudaBuffer;
pub use moekit_ops::Error;
#[cfg(feature = "cuda")]
pub use ops::autotune::AutotuneMode;

/// The backend name every error and report uses.
pub const NAME: &str = "cuda";

/// Compile every embedded kernel source for `arch` (for example `"sm_90a"` or `"sm_80"`)
/// with NVRTC, without a GPU, and return `(file name, PTX)` pairs. For build checks and CI;
/// the backend compiles what it needs by itself, for its device's own architecture.
///
/// # Errors
/// [`Error::Device`] with the NVRTC log when a source does not compile, or when the NVRTC
/// library is not installed.
#[cfg(feature = "cuda")]
pub fn compile_kernels(arch: &'static str) -> Result<Vec<(&'static str, String)>, Error> {
    if !nvrtc_present() {
        return Err(Error::Device { op: "compile", backend: NAME, msg: "libnvrtc is not installed".into() });
    }
    runtime::sources::ALL
        .iter()
        .map(|src| {
            runtime::compile(src, arch, None).map(|ptx| (src.name, ptx.to_src())).map_err(|msg| Error::Device {
                op: "compile",
                backend: NAME,
                msg,
            })
        })
        .collect()
}

/// Whether the NVRTC library can be loaded on this machine.
#[cfg(feature = "cuda")]
pub fn nvrtc_present() -> bool {
    // SAFETY: only tries to load the NVRTC library by its usual names.
    unsafe { cudarc::nvrtc::sys::is_culib_present() }
}
