//! Content checks on index data that lives in host memory.
//!
//! Problems are validated from their descriptors; index data produced on a device (ids,
//! offsets, counts, gather rows) can only be read where it lives. Host backends (reference,
//! CPU) call these before computing, so bad data gets a typed error there; device backends
//! keep their kernels in bounds and document what they do with bad indices.

use crate::{DType, Error, Result, TensorMeta};

/// Every value in `lo..hi`.
///
/// # Errors
/// [`Error::IndexOutOfRange`] at the first bad value.
pub fn in_range(op: &'static str, what: &'static str, values: &[i32], lo: i64, hi: i64) -> Result<()> {
    match values.iter().position(|&v| (v as i64) < lo || (v as i64) >= hi) {
        None => Ok(()),
        Some(index) => Err(Error::IndexOutOfRange { op, what, index, value: values[index] as i64, lo, hi }),
    }
}

/// An offsets array `[E+1]`: starts at 0, non-decreasing, ends at most at `rows`.
///
/// # Errors
/// [`Error::BadOffsets`].
pub fn offsets(op: &'static str, what: &'static str, offsets: &[i32], rows: usize) -> Result<()> {
    let bad = |msg: String| Err(Error::BadOffsets { op, what, msg });
    if offsets.first() != Some(&0) {
        return bad(format!("must start with 0, starts with {:?}", offsets.first()));
    }
    if let Some(i) = offsets.windows(2).position(|w| w[1] < w[0]) {
        return bad(format!("decreases at {}: {} > {}", i + 1, offsets[i], offsets[i + 1]));
    }
    let last = *offsets.last().unwrap_or(&0);
    if last as i64 > rows as i64 {
        return bad(format!("ends at {last}, past the {rows} rows"));
    }
    Ok(())
}

/// Every value finite.
///
/// # Errors
/// [`Error::NonFinite`] at the first NaN or infinity.
pub fn finite(op: &'static str, what: &'static str, values: &[f32]) -> Result<()> {
    match values.iter().position(|v| !v.is_finite()) {
        None => Ok(()),
        Some(index) => Err(Error::NonFinite { op, what, index }),
    }
}

/// Every value finite, for values held in f64 (the reference's accumulators).
///
/// # Errors
/// [`Error::NonFinite`] at the first NaN or infinity.
pub fn finite_f64(op: &'static str, what: &'static str, values: &[f64]) -> Result<()> {
    match values.iter().position(|v| !v.is_finite()) {
        None => Ok(()),
        Some(index) => Err(Error::NonFinite { op, what, index }),
    }
}

/// A buffer's dtype and shape are the ones the problem implies.
///
/// # Errors
/// [`Error::DType`] or [`Error::Shape`] naming `what`.
pub fn meta<B: TensorMeta + ?Sized>(
    op: &'static str,
    what: &'static str,
    buf: &B,
    dtype: DType,
    shape: &[usize],
) -> Result<()> {
    crate::validated::expect(op, what, buf, dtype, shape)
}

/// Where a device kernel found bad index data. GPU backends cannot return a content error
/// from an op without a host synchronisation, so their kernels record the first bad value as
/// `[code, index, value, hi]` (`code` from [`BadIndex::code`]) in a small device buffer, stay in
/// bounds, and the next `sync` or `download` turns the record into the typed error through
/// [`BadIndex::error_of`]. The codes are shared by every device backend (and mirrored as
/// `MOEKIT_BAD_*` in the CUDA kernels' prelude).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(i32)]
pub enum BadIndex {
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
    /// `route`: a non-finite logit (given, or computed by the fused gate); the index is
    /// `t·E + e`.
    RouteNonFinite = 7,
    /// `route`: a non-finite correction bias; the index is `e`.
    RouteBiasNonFinite = 8,
}

impl BadIndex {
    const ALL: [BadIndex; 8] = [
        BadIndex::PermuteIds,
        BadIndex::CombineRows,
        BadIndex::GemmOffsets,
        BadIndex::GemmCounts,
        BadIndex::GemmGather,
        BadIndex::EmbeddingIds,
        BadIndex::RouteNonFinite,
        BadIndex::RouteBiasNonFinite,
    ];

    /// The code a kernel records.
    pub fn code(self) -> i32 {
        self as i32
    }

    /// The error a device record `[code, index, value, hi]` stands for: `None` for code 0
    /// (nothing recorded), [`Error::Device`] naming `backend` for an unknown code.
    pub fn error_of(record: [i32; 4], backend: &'static str) -> Option<Error> {
        let [code, index, value, hi] = record;
        if code == 0 {
            return None;
        }
        let Some(bad) = Self::ALL.into_iter().find(|b| b.code() == code) else {
            return Some(Error::Device { op: "sync", backend, msg: format!("unknown kernel error code {code}") });
        };
        let index_usize = index.max(0) as usize;
        let (op, what, lo) = match bad {
            BadIndex::PermuteIds => ("permute", "ids", 0),
            BadIndex::CombineRows => ("unpermute_combine", "token_slot_to_row", 0),
            BadIndex::GemmOffsets => {
                return Some(Error::BadOffsets {
                    op: "grouped_gemm",
                    what: "offsets",
                    msg: format!("offsets[{index}] = {value} breaks 0 = offsets[0] <= ... <= offsets[E] <= R = {hi}"),
                })
            }
            BadIndex::GemmCounts => ("grouped_gemm", "counts", 0),
            BadIndex::GemmGather => ("grouped_gemm", "row_to_token", -1),
            BadIndex::EmbeddingIds => ("embedding", "ids", 0),
            BadIndex::RouteNonFinite => {
                return Some(Error::NonFinite { op: "route", what: "logits", index: index_usize })
            }
            BadIndex::RouteBiasNonFinite => {
                return Some(Error::NonFinite { op: "route", what: "bias", index: index_usize })
            }
        };
        Some(Error::IndexOutOfRange { op, what, index: index_usize, value: value as i64, lo, hi: hi as i64 })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_records_become_typed_errors() {
        assert_eq!(BadIndex::error_of([0, 5, 6, 7], "x"), None);
        assert_eq!(
            BadIndex::error_of([BadIndex::EmbeddingIds.code(), 1, 7, 4], "x"),
            Some(Error::IndexOutOfRange { op: "embedding", what: "ids", index: 1, value: 7, lo: 0, hi: 4 })
        );
        assert!(matches!(BadIndex::error_of([3, 2, -1, 9], "x"), Some(Error::BadOffsets { .. })));
        assert!(matches!(BadIndex::error_of([99, 0, 0, 0], "x"), Some(Error::Device { .. })));
        assert_eq!(
            BadIndex::error_of([BadIndex::RouteNonFinite.code(), 13, 0, 0], "x"),
            Some(Error::NonFinite { op: "route", what: "logits", index: 13 })
        );
        assert_eq!(
            BadIndex::error_of([BadIndex::RouteBiasNonFinite.code(), 3, 0, 0], "x"),
            Some(Error::NonFinite { op: "route", what: "bias", index: 3 })
        );
        for (i, b) in BadIndex::ALL.into_iter().enumerate() {
            assert_eq!(b.code(), i as i32 + 1, "codes are dense from 1, as the kernels' prelude mirrors them");
        }
    }
}
