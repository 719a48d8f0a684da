//! Deferred content errors: kernels that meet bad index data (an expert id, offset, row or
//! token id out of range) cannot return an error without a host synchronisation, which ops
//! never do. They record the first bad value in a small device buffer instead, keep their
//! writes in bounds, and the next `sync` or `download` reports it as a typed error.

use crate::NAME;
use cudarc::driver::{CudaSlice, CudaStream, DriverError};
use moekit_ops::check::BadIndex;
use moekit_ops::{Error, Result};
use std::sync::Arc;

/// The device record `[code, index, value, hi]` (code 0: nothing seen).
#[derive(Debug)]
pub(crate) struct ErrorFlag {
    pub(crate) record: CudaSlice<i32>,
}

impl ErrorFlag {
    /// A cleared record.
    ///
    /// # Errors
    /// [`Error::Device`] when the allocation fails.
    pub fn new(stream: &Arc<CudaStream>) -> Result<Self> {
        let record = stream.alloc_zeros::<i32>(4).map_err(err)?;
        Ok(ErrorFlag { record })
    }

    /// Read the record after `stream` finished, clear it, and turn a hit into an error.
    ///
    /// # Errors
    /// The recorded content error, or [`Error::Device`].
    pub fn take(&mut self, stream: &Arc<CudaStream>) -> Result<()> {
        let mut host = [0i32; 4];
        stream.memcpy_dtoh(&self.record, &mut host).map_err(err)?;
        stream.synchronize().map_err(err)?;
        match BadIndex::error_of(host, NAME) {
            None => Ok(()),
            Some(e) => {
                stream.memset_zeros(&mut self.record).map_err(err)?;
                Err(e)
            }
        }
    }
}

fn err(e: DriverError) -> Error {
    Error::Device { op: "sync", backend: NAME, msg: e.to_string() }
}
