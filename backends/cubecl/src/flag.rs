//! Deferred content errors: kernels that meet bad index data (an expert id, offset, row or
//! token id out of range, a non-finite logit) cannot return an error without a host
//! synchronisation, which ops never do. They record the first bad value in the backend's
//! small device record `[code, index, value, hi] i32` instead
//! ([`crate::kernels::flag::record`]), keep their writes in bounds, and the next `sync` or
//! `download` reports it as a typed error and clears the record.

use crate::kernels::flag::clear_flag;
use crate::CubeBackend;
use cubecl::prelude::*;
use cubecl::server::Handle;
use moekit_ops::{Error, Result};

pub(crate) use moekit_ops::check::BadIndex;

/// Bytes of the record: four i32.
const FLAG_BYTES: usize = 16;

/// The device record `[code, index, value, hi] i32` (code 0: nothing seen).
#[derive(Clone, Debug)]
pub(crate) struct ErrorFlag {
    /// The record's memory.
    pub(crate) handle: Handle,
}

impl ErrorFlag {
    /// A fresh, cleared record.
    pub(crate) fn new<R: Runtime>(client: &ComputeClient<R>) -> Self {
        ErrorFlag { handle: client.create_from_slice(&[0u8; FLAG_BYTES]) }
    }

    /// The record as a kernel argument (`&mut Array<i32>` of 4).
    pub(crate) fn arg<R: Runtime>(&self) -> ArrayArg<R> {
        // SAFETY: the record holds exactly 4 i32 (`FLAG_BYTES`).
        unsafe { ArrayArg::from_raw_parts(self.handle.clone(), 4) }
    }

    /// Read the record (waiting for the queued work), clear it, and turn a hit into an error.
    ///
    /// # Errors
    /// The recorded content error, or [`Error::Device`].
    pub(crate) fn check<R: Runtime>(&self, client: &ComputeClient<R>, backend: &'static str) -> Result<()> {
        let bytes = client.read_one(self.handle.clone()).map_err(|e| Error::Device {
            op: "sync",
            backend,
            msg: e.to_string(),
        })?;
        let word = |i: usize| bytes.get(4 * i..4 * i + 4).map_or(0, |b| i32::from_le_bytes([b[0], b[1], b[2], b[3]]));
        match BadIndex::error_of([word(0), word(1), word(2), word(3)], backend) {
            None => Ok(()),
            Some(e) => {
                clear_flag::launch::<R>(client, CubeCount::Static(1, 1, 1), CubeDim::new_1d(4), self.arg());
                Err(e)
            }
        }
    }
}

impl<R: Runtime> CubeBackend<R> {
    /// The backend's content-error record as a kernel argument.
    pub(crate) fn flag_arg(&self) -> ArrayArg<R> {
        self.flag.arg()
    }
}
