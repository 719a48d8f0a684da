//! Deferred content errors: kernels that meet bad index data (an expert id, offset, row or
//! token id out of range) cannot return an error without a host synchronisation, which ops
//! never do. They record the first bad value in a small device buffer instead, keep their
//! writes in bounds, and the next `sync` or `download` reports it as a typed error.

use crate::NAME;
use cudarc::driver::{CudaSlice, CudaStream, DriverError};
use moekit_ops::{Error, Result};
use std::sync::Arc;

/// Where a kernel found a bad value. The numbers are the `code` kernels write (keep them in
/// step with `MOEKIT_BAD_*` in `kernels/common.cuh`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(i32)]
pub(crate) enum BadIndex {
    /// `permute`: an expert id outside `0..E`.
    PermuteIds = 1,
    /// `unpermute_combine`: a row outside `0..R`.
    CombineRows = 2,
    /// `grouped_gemm`: offsets that start past 0, decrease or overrun `R`.
    GemmOffsets = 3,
    /// `grouped_gemm`: a masked count outside `0..=C`.
    GemmCounts = 4,
    /// `grouped_gemm`: a gather row outside `-1..T`.
    GemmGather = 5,
    /// `embedding`: an id outside `0..V`.
    EmbeddingIds = 6,
    /// `route`: a non-finite logit.
    RouteNonFinite = 7,
}

impl BadIndex {
    fn from_code(code: i32) -> Option<Self> {
        use BadIndex::*;
        [PermuteIds, CombineRows, GemmOffsets, GemmCounts, GemmGather, EmbeddingIds, RouteNonFinite]
            .into_iter()
            .find(|b| *b as i32 == code)
    }

    /// The typed error for a record `[code, index, value, hi]`.
    fn error(self, index: i32, value: i32, hi: i32) -> Error {
        let (op, what, lo) = match self {
            BadIndex::PermuteIds => ("permute", "ids", 0),
            BadIndex::CombineRows => ("unpermute_combine", "token_slot_to_row", 0),
            BadIndex::GemmOffsets => {
                return Error::BadOffsets {
                    op: "grouped_gemm",
                    what: "offsets",
                    msg: format!("offsets[{index}] = {value} breaks 0 = offsets[0] <= ... <= offsets[E] <= R = {hi}"),
                }
            }
            BadIndex::GemmCounts => ("grouped_gemm", "counts", 0),
            BadIndex::GemmGather => ("grouped_gemm", "row_to_token", -1),
            BadIndex::EmbeddingIds => ("embedding", "ids", 0),
            BadIndex::RouteNonFinite => return Error::NonFinite { op: "route", what: "logits", index: index as usize },
        };
        Error::IndexOutOfRange { op, what, index: index as usize, value: value as i64, lo, hi: hi as i64 }
    }
}

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
        if host[0] == 0 {
            return Ok(());
        }
        stream.memset_zeros(&mut self.record).map_err(err)?;
        Err(match BadIndex::from_code(host[0]) {
            Some(b) => b.error(host[1], host[2], host[3]),
            None => Error::Device { op: "sync", backend: NAME, msg: format!("unknown kernel error code {}", host[0]) },
        })
    }
}

fn err(e: DriverError) -> Error {
    Error::Device { op: "sync", backend: NAME, msg: e.to_string() }
}
