//! The CUDA runtime layer: kernel sources embedded in the crate, compiled with NVRTC for the
//! device's own architecture (cached on disk), loaded once per process, and launched on the
//! backend's stream.

mod compile;
pub(crate) mod sources;

pub(crate) use compile::{arch_for, cache_dir, compile, define_usize, Source};

use crate::NAME;
use cudarc::driver::{CudaContext, CudaFunction, CudaModule};
use moekit_ops::{Error, Result};
use std::collections::hash_map::Entry;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// Compiled modules of one context, by source name, with the functions looked up so far.
#[derive(Debug)]
pub(crate) struct Kernels {
    ctx: Arc<CudaContext>,
    arch: &'static str,
    modules: Mutex<HashMap<&'static str, Loaded>>,
}

/// One loaded module and its functions by name: a launch looks its function up here instead of
/// asking the driver (`cuModuleGetFunction`) every time.
#[derive(Debug)]
struct Loaded {
    module: Arc<CudaModule>,
    functions: HashMap<String, CudaFunction>,
}

impl Kernels {
    /// The registry for `ctx`, compiling for its device's architecture.
    ///
    /// # Errors
    /// [`Error::NoDevice`] when the compute capability cannot be read.
    pub fn new(ctx: Arc<CudaContext>) -> Result<Self> {
        let (major, minor) = ctx
            .compute_capability()
            .map_err(|e| Error::NoDevice { backend: NAME, reason: format!("compute capability: {e}") })?;
        Ok(Kernels { ctx, arch: arch_for(major, minor), modules: Mutex::new(HashMap::new()) })
    }

    /// The architecture kernels are compiled for (`sm_90a` on Hopper).
    pub fn arch(&self) -> &'static str {
        self.arch
    }

    /// Function `name` of `src`, compiling and loading the module on first use.
    ///
    /// # Errors
    /// [`Error::Device`] naming `op` when NVRTC is missing, compilation fails (with the log)
    /// or the driver cannot load the module or find the function.
    pub fn function(&self, op: &'static str, src: &'static Source, name: &str) -> Result<CudaFunction> {
        let err = |msg: String| Error::Device { op, backend: NAME, msg };
        let mut modules = self.modules.lock().map_err(|_| err("kernel registry poisoned".into()))?;
        let loaded = match modules.entry(src.name) {
            Entry::Occupied(o) => o.into_mut(),
            Entry::Vacant(v) => {
                // SAFETY: only tries to load the NVRTC library by its usual names.
                if !unsafe { cudarc::nvrtc::sys::is_culib_present() } {
                    return Err(err("the NVRTC library (libnvrtc) is not installed".into()));
                }
                let ptx = compile(src, self.arch, cache_dir().as_deref()).map_err(err)?;
                let module = self.ctx.load_module(ptx).map_err(|e| err(format!("{}: load: {e}", src.name)))?;
                v.insert(Loaded { module, functions: HashMap::new() })
            }
        };
        if let Some(f) = loaded.functions.get(name) {
            return Ok(f.clone());
        }
        let f = loaded.module.load_function(name).map_err(|e| err(format!("{}: function `{name}`: {e}", src.name)))?;
        loaded.functions.insert(name.to_string(), f.clone());
        Ok(f)
    }
}
