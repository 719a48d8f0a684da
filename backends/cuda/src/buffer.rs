//! [`CudaBuffer`]: device memory that knows its dtype and shape.

use moekit_ops::{DType, TensorMeta};
use std::fmt;

/// A device-resident tensor: dtype, logical row-major shape and, with the `cuda` feature, the
/// bytes in GPU memory (`numel * dtype.size()` of them).
pub struct CudaBuffer {
    pub(crate) dtype: DType,
    pub(crate) shape: Vec<usize>,
    #[cfg(feature = "cuda")]
    pub(crate) data: cudarc::driver::CudaSlice<u8>,
}

impl CudaBuffer {
    /// Size of the data in bytes.
    pub fn num_bytes(&self) -> usize {
        self.numel() * self.dtype.size()
    }

    /// The device bytes, for kernels and for callers that share the stream.
    #[cfg(feature = "cuda")]
    pub fn slice(&self) -> &cudarc::driver::CudaSlice<u8> {
        &self.data
    }

    /// The device bytes, mutable.
    #[cfg(feature = "cuda")]
    pub fn slice_mut(&mut self) -> &mut cudarc::driver::CudaSlice<u8> {
        &mut self.data
    }
}

impl TensorMeta for CudaBuffer {
    fn dtype(&self) -> DType {
        self.dtype
    }
    fn shape(&self) -> &[usize] {
        &self.shape
    }
}

impl fmt::Debug for CudaBuffer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CudaBuffer")
            .field("dtype", &self.dtype)
            .field("shape", &self.shape)
            .field("bytes", &self.num_bytes())
            .finish()
    }
}
