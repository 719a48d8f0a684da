//! [`CubeBuffer`]: device memory behind a cubecl handle, with its dtype and shape.

use moekit_ops::{DType, TensorMeta};
use std::fmt;

/// A device-resident tensor: dtype, logical row-major shape and, with a cubecl feature, the
/// cubecl handle of its bytes (contiguous, `numel * dtype.size()` of them).
#[derive(Clone)]
pub struct CubeBuffer {
    pub(crate) dtype: DType,
    pub(crate) shape: Vec<usize>,
    #[cfg(any(feature = "cubecl-wgpu", feature = "cubecl-cuda"))]
    pub(crate) handle: cubecl::server::Handle,
}

impl CubeBuffer {
    /// Size of the data in bytes.
    pub fn num_bytes(&self) -> usize {
        self.numel() * self.dtype.size()
    }

    /// The cubecl handle, for kernels and for callers sharing the client.
    #[cfg(any(feature = "cubecl-wgpu", feature = "cubecl-cuda"))]
    pub fn handle(&self) -> &cubecl::server::Handle {
        &self.handle
    }
}

impl TensorMeta for CubeBuffer {
    fn dtype(&self) -> DType {
        self.dtype
    }
    fn shape(&self) -> &[usize] {
        &self.shape
    }
}

impl fmt::Debug for CubeBuffer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CubeBuffer")
            .field("dtype", &self.dtype)
            .field("shape", &self.shape)
            .field("bytes", &self.num_bytes())
            .finish()
    }
}
