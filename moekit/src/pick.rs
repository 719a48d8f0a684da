//! Backends chosen by name at run time, for tools (the `moekit` command, the benchmark): one
//! place that knows every backend's name and constructor.
//!
//! ```
//! use moekit::pick::{on_backend, OnBackend};
//! use moekit::Backend;
//!
//! struct Name;
//! impl OnBackend for Name {
//!     type Output = String;
//!     fn run<B: Backend>(self, b: &B, _about: &str) -> String {
//!         b.name().to_owned()
//!     }
//! }
//! assert_eq!(on_backend("cpu", Name).unwrap(), "cpu");
//! assert!(on_backend("tpu", Name).is_err());
//! ```

use crate::{Backend, Error, Result};

/// Every backend name [`on_backend`] takes.
pub const NAMES: [&str; 5] = ["reference", "cpu", "cuda", "cubecl-cuda", "cubecl-wgpu"];

/// The order `auto` tries: the fastest backend that starts.
pub const AUTO: [&str; 4] = ["cuda", "cubecl-cuda", "cubecl-wgpu", "cpu"];

/// Work to run on whichever backend a name picks.
pub trait OnBackend {
    /// What the work returns.
    type Output;
    /// Runs on `backend`; `about` describes it beyond its name (a cubecl runtime's
    /// capabilities; empty for the others).
    fn run<B: Backend>(self, backend: &B, about: &str) -> Self::Output;
}

/// Starts the backend called `name` (one of [`NAMES`]) and runs `work` on it.
///
/// # Errors
/// [`Error::Unsupported`] for an unknown name; the constructor's error when the backend does
/// not start ([`Error::NotCompiled`] when its feature is off, [`Error::NoDevice`], ...).
pub fn on_backend<W: OnBackend>(name: &str, work: W) -> Result<W::Output> {
    match name {
        "reference" => Ok(work.run(&crate::ReferenceBackend, "")),
        #[cfg(feature = "cpu")]
        "cpu" => Ok(work.run(&crate::CpuBackend::new(), "")),
        "cuda" => Ok(work.run(&crate::CudaBackend::new(0)?, "")),
        "cubecl-cuda" => {
            let b = crate::CubeBackend::<crate::CudaRuntime>::cuda(0)?;
            let about = b.capabilities().to_string();
            Ok(work.run(&b, &about))
        }
        "cubecl-wgpu" => {
            let b = crate::CubeBackend::<crate::WgpuRuntime>::wgpu()?;
            let about = b.capabilities().to_string();
            Ok(work.run(&b, &about))
        }
        other => Err(Error::unsupported("backend", format!("unknown backend `{other}` ({})", NAMES.join(", ")))),
    }
}
