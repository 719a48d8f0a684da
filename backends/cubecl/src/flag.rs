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

/// Where a kernel found a bad value: the `code` kernels record (the same numbers as the CUDA
/// backend's `BadIndex`).
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
    /// The code a kernel records.
    pub(crate) fn code(self) -> i32 {
        self as i32
    }

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
            BadIndex::RouteNonFinite => {
                return Error::NonFinite { op: "route", what: "logits", index: index.max(0) as usize }
            }
        };
        Error::IndexOutOfRange { op, what, index: index.max(0) as usize, value: value as i64, lo, hi: hi as i64 }
    }
}

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
        let code = word(0);
        if code == 0 {
            return Ok(());
        }
        clear_flag::launch::<R>(client, CubeCount::Static(1, 1, 1), CubeDim::new_1d(4), self.arg());
        Err(match BadIndex::from_code(code) {
            Some(b) => b.error(word(1), word(2), word(3)),
            None => Error::Device { op: "sync", backend, msg: format!("unknown kernel error code {code}") },
        })
    }
}

impl<R: Runtime> CubeBackend<R> {
    /// The backend's content-error record as a kernel argument.
    pub(crate) fn flag_arg(&self) -> ArrayArg<R> {
        self.flag.arg()
    }
}
