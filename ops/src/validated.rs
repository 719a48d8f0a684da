//! `Validated<P>`: a problem that passed its checks. Only this crate can make one.

use crate::{DType, Error, Result, TensorMeta};
use std::ops::Deref;

/// A problem descriptor that passed `validate()`. Backends take `&Validated<P>`, so a backend
/// can never be handed an unchecked problem.
#[derive(Clone, Debug, PartialEq)]
pub struct Validated<P>(P);

impl<P> Validated<P> {
    pub(crate) fn new(problem: P) -> Self {
        Validated(problem)
    }

    /// The checked problem.
    pub fn problem(&self) -> &P {
        &self.0
    }

    /// Give back the problem.
    pub fn into_inner(self) -> P {
        self.0
    }
}

impl<P> Deref for Validated<P> {
    type Target = P;
    fn deref(&self) -> &P {
        &self.0
    }
}

/// Checks one buffer's dtype and shape against what the problem implies.
pub(crate) fn expect<B: TensorMeta + ?Sized>(
    op: &'static str,
    what: &'static str,
    buf: &B,
    dtype: DType,
    shape: &[usize],
) -> Result<()> {
    if buf.dtype() != dtype {
        return Err(Error::DType { op, what, expected: dtype, got: buf.dtype() });
    }
    if buf.shape() != shape {
        return Err(Error::Shape { op, what, expected: shape.to_vec(), got: buf.shape().to_vec() });
    }
    Ok(())
}

/// Checks a float dtype is one of the float dtypes.
pub(crate) fn expect_float(op: &'static str, dtype: DType) -> Result<()> {
    if dtype.is_float() {
        Ok(())
    } else {
        Err(Error::unsupported(op, format!("dtype {dtype} (float ops take f32, f16 or bf16)")))
    }
}

/// Checks that every named size fits the `i32` the kernels index with.
///
/// # Errors
/// [`Error::Invalid`] naming the first size past `i32::MAX`.
pub(crate) fn fits_i32(op: &'static str, sizes: &[(&str, usize)]) -> Result<()> {
    match sizes.iter().find(|(_, v)| *v > i32::MAX as usize) {
        Some((name, v)) => Err(Error::invalid(op, format!("{name} = {v} exceeds i32::MAX"))),
        None => Ok(()),
    }
}
