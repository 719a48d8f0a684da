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
