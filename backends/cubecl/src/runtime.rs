//! The runtimes [`crate::CubeBackend`] names: cubecl's own when their feature is on, empty
//! placeholders when it is off, so the API does not change with features.

/// A runtime a [`crate::CubeBackend`] can be built over: every `cubecl::Runtime` (with a
/// cubecl feature on), and the placeholder of a runtime whose feature is off.
pub trait CubeRuntime: Sized + 'static {
    /// What a backend on this runtime holds: the cubecl client, or nothing for a placeholder
    /// (whose backend can never be built).
    type Client: Clone;
}

#[cfg(any(feature = "cubecl-wgpu", feature = "cubecl-cuda"))]
impl<R: cubecl::Runtime> CubeRuntime for R {
    type Client = cubecl::client::ComputeClient<R>;
}

/// cubecl's wgpu runtime (Vulkan via SPIR-V, Metal, DX12, WebGPU).
#[cfg(feature = "cubecl-wgpu")]
pub use cubecl::wgpu::WgpuRuntime;

/// Placeholder for cubecl's wgpu runtime: this build lacks the feature `cubecl-wgpu`.
#[cfg(not(feature = "cubecl-wgpu"))]
#[derive(Clone, Copy, Debug)]
pub enum WgpuRuntime {}

#[cfg(not(feature = "cubecl-wgpu"))]
impl CubeRuntime for WgpuRuntime {
    type Client = std::convert::Infallible;
}

/// cubecl's CUDA runtime.
#[cfg(feature = "cubecl-cuda")]
pub use cubecl::cuda::CudaRuntime;

/// Placeholder for cubecl's CUDA runtime: this build lacks the feature `cubecl-cuda`.
#[cfg(not(feature = "cubecl-cuda"))]
#[derive(Clone, Copy, Debug)]
pub enum CudaRuntime {}

#[cfg(not(feature = "cubecl-cuda"))]
impl CubeRuntime for CudaRuntime {
    type Client = std::convert::Infallible;
}
