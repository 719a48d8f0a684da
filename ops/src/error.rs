//! The one error type of moekit. Every variant names the op it came from.

use crate::DType;

/// Result alias used across moekit.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Every way an op can refuse or fail. Validation errors are returned before any backend
/// runs; device errors carry the backend's own message.
#[derive(Debug, thiserror::Error, Clone, PartialEq)]
#[non_exhaustive]
pub enum Error {
    /// A buffer's shape does not match what the problem implies.
    #[error("{op}: `{what}` has shape {got:?}, expected {expected:?}")]
    Shape {
        /// Op name.
        op: &'static str,
        /// Which argument.
        what: &'static str,
        /// Shape the problem implies.
        expected: Vec<usize>,
        /// Shape that was passed.
        got: Vec<usize>,
    },
    /// A buffer has the wrong dtype.
    #[error("{op}: `{what}` has dtype {got}, expected {expected}")]
    DType {
        /// Op name.
        op: &'static str,
        /// Which argument.
        what: &'static str,
        /// Dtype the problem implies.
        expected: DType,
        /// Dtype that was passed.
        got: DType,
    },
    /// The problem itself is inconsistent (k = 0, GQA heads that do not divide, ...).
    #[error("{op}: invalid problem: {msg}")]
    Invalid {
        /// Op name.
        op: &'static str,
        /// What is wrong, with the numbers.
        msg: String,
    },
    /// A dtype, head dim or option this op (or backend) does not support.
    #[error("{op}: unsupported: {msg}")]
    Unsupported {
        /// Op name.
        op: &'static str,
        /// What is unsupported.
        msg: String,
    },
    /// Index data (ids, offsets, rows, positions) holds a value outside its range.
    #[error("{op}: `{what}`[{index}] = {value} is outside {lo}..{hi}")]
    IndexOutOfRange {
        /// Op name.
        op: &'static str,
        /// Which argument.
        what: &'static str,
        /// Flat index of the bad element.
        index: usize,
        /// The bad value.
        value: i64,
        /// Inclusive lower bound.
        lo: i64,
        /// Exclusive upper bound.
        hi: i64,
    },
    /// Offsets that do not start at 0, decrease, or overrun the rows.
    #[error("{op}: `{what}` is not a valid offsets array: {msg}")]
    BadOffsets {
        /// Op name.
        op: &'static str,
        /// Which argument.
        what: &'static str,
        /// What is wrong.
        msg: String,
    },
    /// A mask leaves a query row with no key to attend to.
    #[error("{op}: mask leaves query row {row} of sequence {seq} with no key to attend to")]
    EmptyMaskRow {
        /// Op name.
        op: &'static str,
        /// Sequence index in the batch.
        seq: usize,
        /// Row inside the sequence.
        row: usize,
    },
    /// A NaN or infinity where it would poison the result (routing logits, ...).
    #[error("{op}: `{what}`[{index}] is not finite")]
    NonFinite {
        /// Op name.
        op: &'static str,
        /// Which argument.
        what: &'static str,
        /// Flat index of the first bad element.
        index: usize,
    },
    /// The backend exists but does not implement this op yet.
    #[error("{op}: not implemented on backend `{backend}`")]
    NotImplemented {
        /// Op name.
        op: &'static str,
        /// Backend name.
        backend: &'static str,
    },
    /// The backend's cargo feature is off.
    #[error("backend `{backend}` is not compiled in (enable the cargo feature `{feature}`)")]
    NotCompiled {
        /// Backend name.
        backend: &'static str,
        /// Feature that turns it on.
        feature: &'static str,
    },
    /// No device (no driver, no adapter, no GPU) for the backend.
    #[error("backend `{backend}`: no device: {reason}")]
    NoDevice {
        /// Backend name.
        backend: &'static str,
        /// Why.
        reason: String,
    },
    /// The device cannot hold a buffer of this size: the driver refused the allocation (CUDA's
    /// `CUDA_ERROR_OUT_OF_MEMORY`), the request is larger than the largest single allocation
    /// the runtime makes (cubecl: `max_page_size`) or than the memory free on the device, or
    /// its byte count overflows `usize` (then `bytes` is `usize::MAX`). Nothing was allocated
    /// and the backend stays usable: free buffers and retry, or split the problem.
    #[error("{op}: out of device memory on `{backend}` ({bytes} bytes requested): {msg}")]
    OutOfMemory {
        /// Op name (or `"alloc"`, `"upload"`).
        op: &'static str,
        /// Backend name.
        backend: &'static str,
        /// Bytes requested (`0` when the failing driver call did not say, as for an op's
        /// scratch; `usize::MAX` when the size overflows).
        bytes: usize,
        /// What refused it, with the numbers known.
        msg: String,
    },
    /// A driver, compiler or runtime error on the device.
    #[error("{op}: device error on `{backend}`: {msg}")]
    Device {
        /// Op name (or `"alloc"`, `"upload"`, ...).
        op: &'static str,
        /// Backend name.
        backend: &'static str,
        /// The runtime's message.
        msg: String,
    },
}

impl Error {
    /// Shorthand for [`Error::Invalid`].
    pub fn invalid(op: &'static str, msg: impl Into<String>) -> Self {
        Error::Invalid { op, msg: msg.into() }
    }

    /// Shorthand for [`Error::Unsupported`].
    pub fn unsupported(op: &'static str, msg: impl Into<String>) -> Self {
        Error::Unsupported { op, msg: msg.into() }
    }

    /// `true` for the errors validation returns (as opposed to device or availability errors).
    pub fn is_validation(&self) -> bool {
        matches!(
            self,
            Error::Shape { .. }
                | Error::DType { .. }
                | Error::Invalid { .. }
                | Error::Unsupported { .. }
                | Error::IndexOutOfRange { .. }
                | Error::BadOffsets { .. }
                | Error::EmptyMaskRow { .. }
                | Error::NonFinite { .. }
        )
    }
}
