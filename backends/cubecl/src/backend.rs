//! [`CubeBackend`]: the type, and its constructors whatever is compiled (the ops are in
//! `crate::ops`, with a cubecl feature on).

use crate::CubeRuntime;
#[cfg(not(feature = "cubecl-cuda"))]
use crate::CudaRuntime;
#[cfg(not(feature = "cubecl-wgpu"))]
use crate::WgpuRuntime;
use moekit_ops::DType;
use std::fmt;

/// The cubecl backend over runtime `R`: a cubecl compute client and what it supports.
///
/// Build one with [`CubeBackend::wgpu`], [`CubeBackend::cuda`] or, with a cubecl feature on,
/// `CubeBackend::from_client` for a caller's client.
pub struct CubeBackend<R: CubeRuntime> {
    #[cfg_attr(not(any(feature = "cubecl-wgpu", feature = "cubecl-cuda")), allow(dead_code))]
    pub(crate) client: R::Client,
    pub(crate) name: &'static str,
    pub(crate) float_dtypes: &'static [DType],
    /// Content errors kernels record, reported at the next sync or download.
    #[cfg(any(feature = "cubecl-wgpu", feature = "cubecl-cuda"))]
    pub(crate) flag: crate::flag::ErrorFlag,
    /// Grow-only intermediates of the fused MoE layer.
    #[cfg(any(feature = "cubecl-wgpu", feature = "cubecl-cuda"))]
    pub(crate) moe_scratch: crate::ops::MoeScratch,
}

impl<R: CubeRuntime> fmt::Debug for CubeBackend<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CubeBackend")
            .field("name", &self.name)
            .field("float_dtypes", &self.float_dtypes)
            .finish_non_exhaustive()
    }
}

/// What the runtime under a [`CubeBackend`] offers moekit's kernels, as asked of it at start-up
/// (`CubeBackend::capabilities`): the kernel choices follow from these.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Capabilities {
    /// The runtime's own name for itself (`cuda`, `wgpu<spirv>`, ...).
    pub runtime: String,
    /// Float dtypes the backend computes in.
    pub float_dtypes: Vec<DType>,
    /// Plane (warp, subgroup) operations: shuffles and reductions.
    pub plane_ops: bool,
    /// Smallest and largest plane size.
    pub plane_size: (u32, u32),
    /// Matrix instructions (`cmma`, 16×16×16 with f32 accumulators) for f16 and for bf16.
    pub cmma: (bool, bool),
    /// Manual MMA (`mma.sync`-style m16n8k16, f32 accumulators) for f16 and for bf16.
    pub mma: (bool, bool),
    /// Shared memory per cube, bytes.
    pub max_shared_bytes: usize,
}

impl fmt::Display for Capabilities {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let dts: Vec<String> = self.float_dtypes.iter().map(ToString::to_string).collect();
        let yes = |b: bool| if b { "yes" } else { "no" };
        write!(
            f,
            "runtime {}: dtypes {}; plane ops {} (size {}..{}); cmma f16 {} bf16 {}; mma f16 {} bf16 {}; \
             shared {} KiB",
            self.runtime,
            dts.join(","),
            yes(self.plane_ops),
            self.plane_size.0,
            self.plane_size.1,
            yes(self.cmma.0),
            yes(self.cmma.1),
            yes(self.mma.0),
            yes(self.mma.1),
            self.max_shared_bytes / 1024
        )
    }
}

/// Backend name of the wgpu runtime.
pub(crate) const WGPU: &str = "cubecl-wgpu";
/// Backend name of the CUDA runtime.
pub(crate) const CUDA: &str = "cubecl-cuda";

#[cfg(not(feature = "cubecl-wgpu"))]
impl CubeBackend<WgpuRuntime> {
    /// The backend on the default wgpu adapter.
    ///
    /// # Errors
    /// Always [`moekit_ops::Error::NotCompiled`]: this build lacks the feature `cubecl-wgpu`.
    pub fn wgpu() -> moekit_ops::Result<Self> {
        Err(not_compiled(WGPU))
    }
}

#[cfg(not(feature = "cubecl-cuda"))]
impl CubeBackend<CudaRuntime> {
    /// The backend on CUDA device `index`.
    ///
    /// # Errors
    /// Always [`moekit_ops::Error::NotCompiled`]: this build lacks the feature `cubecl-cuda`.
    pub fn cuda(index: usize) -> moekit_ops::Result<Self> {
        let _ = index;
        Err(not_compiled(CUDA))
    }
}

#[cfg(not(all(feature = "cubecl-wgpu", feature = "cubecl-cuda")))]
fn not_compiled(backend: &'static str) -> moekit_ops::Error {
    // NOTE: the backend names are the feature names.
    moekit_ops::Error::NotCompiled { backend, feature: backend }
}

/// [`moekit_ops::Device`] for a runtime whose feature is off. No such backend can be built
/// (its constructor always fails), so these are never reached; they answer the same typed
/// error rather than panic.
#[cfg(any(not(feature = "cubecl-wgpu"), not(feature = "cubecl-cuda")))]
macro_rules! not_compiled_device {
    ($rt:ty, $name:expr) => {
        impl moekit_ops::Device for CubeBackend<$rt> {
            type Buffer = crate::CubeBuffer;
            fn name(&self) -> &'static str {
                $name
            }
            fn float_dtypes(&self) -> &'static [DType] {
                &[]
            }
            fn alloc(&self, _: DType, _: &[usize]) -> moekit_ops::Result<crate::CubeBuffer> {
                Err(not_compiled($name))
            }
            fn upload(&self, _: &moekit_ops::HostTensor) -> moekit_ops::Result<crate::CubeBuffer> {
                Err(not_compiled($name))
            }
            fn download(&self, _: &crate::CubeBuffer) -> moekit_ops::Result<moekit_ops::HostTensor> {
                Err(not_compiled($name))
            }
            fn reshape(&self, _: &mut crate::CubeBuffer, _: &[usize]) -> moekit_ops::Result<()> {
                Err(not_compiled($name))
            }
            fn copy_rows(
                &self,
                _: &crate::CubeBuffer,
                _: usize,
                _: &mut crate::CubeBuffer,
                _: usize,
                _: usize,
            ) -> moekit_ops::Result<()> {
                Err(not_compiled($name))
            }
            fn sync(&self) -> moekit_ops::Result<()> {
                Err(not_compiled($name))
            }
        }

        impl CubeBackend<$rt> {
            /// What the runtime offers; empty for a runtime whose feature is off (its backend
            /// cannot be built).
            pub fn capabilities(&self) -> Capabilities {
                Capabilities::default()
            }
        }
    };
}

#[cfg(not(feature = "cubecl-wgpu"))]
not_compiled_device!(WgpuRuntime, WGPU);
#[cfg(not(feature = "cubecl-cuda"))]
not_compiled_device!(CudaRuntime, CUDA);

// NOTE: with a feature on, the ops are implemented once for every `R: cubecl::Runtime`
// (`crate::ops`); only a placeholder runtime (never a cubecl runtime, so the impls do not
// overlap) answers NotImplemented, and its backend cannot be built anyway.
#[cfg(not(feature = "cubecl-wgpu"))]
moekit_ops::not_implemented_ops!(CubeBackend<WgpuRuntime>);
#[cfg(not(feature = "cubecl-cuda"))]
moekit_ops::not_implemented_ops!(CubeBackend<CudaRuntime>);
