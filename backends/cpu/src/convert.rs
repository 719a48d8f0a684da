//! Element access and dtype <-> f32 conversion for [`HostTensor`] buffers.
//!
//! Float ops read their inputs as f32 (borrowed when the buffer already is f32, converted in
//! parallel otherwise), compute in f32 and round each output element once.

use half::{bf16, f16};
use moekit_ops::{DType, Error, HostData, HostTensor, Result, TensorMeta};
use rayon::prelude::*;
use std::borrow::Cow;

/// Elements per rayon task when converting whole tensors.
const CONVERT_CHUNK: usize = 1 << 14;

/// A float element type a [`HostTensor`] can hold.
pub(crate) trait Elem: Copy + Send + Sync + 'static {
    /// The element's dtype.
    const DTYPE: DType;
    /// Widen to f32 (exact).
    fn to_f32(self) -> f32;
    /// Round an f32 to this type (nearest, ties to even).
    fn from_f32(v: f32) -> Self;
    /// The typed storage of a tensor of this dtype.
    fn slice(t: &HostTensor) -> Option<&[Self]>;
    /// The typed storage of a tensor of this dtype, mutable.
    fn slice_mut(t: &mut HostTensor) -> Option<&mut [Self]>;
    /// The slice itself when `Self` is f32 (no conversion needed).
    fn as_f32(s: &[Self]) -> Option<&[f32]>;
}

impl Elem for f32 {
    const DTYPE: DType = DType::F32;
    fn to_f32(self) -> f32 {
        self
    }
    fn from_f32(v: f32) -> Self {
        v
    }
    fn slice(t: &HostTensor) -> Option<&[Self]> {
        match t.data() {
            HostData::F32(v) => Some(v),
            _ => None,
        }
    }
    fn slice_mut(t: &mut HostTensor) -> Option<&mut [Self]> {
        match t.data_mut() {
            HostData::F32(v) => Some(v),
            _ => None,
        }
    }
    fn as_f32(s: &[Self]) -> Option<&[f32]> {
        Some(s)
    }
}

macro_rules! half_elem {
    ($ty:ty, $variant:ident, $dtype:expr) => {
        impl Elem for $ty {
            const DTYPE: DType = $dtype;
            fn to_f32(self) -> f32 {
                <$ty>::to_f32(self)
            }
            fn from_f32(v: f32) -> Self {
                <$ty>::from_f32(v)
            }
            fn slice(t: &HostTensor) -> Option<&[Self]> {
                match t.data() {
                    HostData::$variant(v) => Some(v),
                    _ => None,
                }
            }
            fn slice_mut(t: &mut HostTensor) -> Option<&mut [Self]> {
                match t.data_mut() {
                    HostData::$variant(v) => Some(v),
                    _ => None,
                }
            }
            fn as_f32(_: &[Self]) -> Option<&[f32]> {
                None
            }
        }
    };
}

half_elem!(f16, F16, DType::F16);
half_elem!(bf16, BF16, DType::BF16);

/// Runs `$body` with `$T` bound to the element type of the float dtype `$dtype`; a non-float
/// dtype answers [`Error::Unsupported`] for `$op`.
macro_rules! dispatch_float {
    ($op:expr, $dtype:expr, $T:ident => $body:expr) => {
        match $dtype {
            moekit_ops::DType::F32 => {
                type $T = f32;
                $body
            }
            moekit_ops::DType::F16 => {
                type $T = half::f16;
                $body
            }
            moekit_ops::DType::BF16 => {
                type $T = half::bf16;
                $body
            }
            other => Err(moekit_ops::Error::unsupported($op, format!("dtype {other} on backend `cpu`"))),
        }
    };
}
pub(crate) use dispatch_float;

fn dtype_error(op: &'static str, what: &'static str, expected: DType, t: &HostTensor) -> Error {
    Error::DType { op, what, expected, got: t.dtype() }
}

/// The typed elements of `t`.
///
/// # Errors
/// [`Error::DType`] when `t` does not hold `T`.
pub(crate) fn elems<'a, T: Elem>(op: &'static str, what: &'static str, t: &'a HostTensor) -> Result<&'a [T]> {
    T::slice(t).ok_or_else(|| dtype_error(op, what, T::DTYPE, t))
}

/// The typed elements of `t`, mutable.
///
/// # Errors
/// [`Error::DType`] when `t` does not hold `T`.
pub(crate) fn elems_mut<'a, T: Elem>(
    op: &'static str,
    what: &'static str,
    t: &'a mut HostTensor,
) -> Result<&'a mut [T]> {
    let got = t.dtype();
    T::slice_mut(t).ok_or(Error::DType { op, what, expected: T::DTYPE, got })
}

/// The i32 elements of `t`.
///
/// # Errors
/// [`Error::DType`] when `t` is not `I32`.
pub(crate) fn ints<'a>(op: &'static str, what: &'static str, t: &'a HostTensor) -> Result<&'a [i32]> {
    match t.data() {
        HostData::I32(v) => Ok(v),
        _ => Err(dtype_error(op, what, DType::I32, t)),
    }
}

/// The i32 elements of `t`, mutable.
///
/// # Errors
/// [`Error::DType`] when `t` is not `I32`.
pub(crate) fn ints_mut<'a>(op: &'static str, what: &'static str, t: &'a mut HostTensor) -> Result<&'a mut [i32]> {
    let got = t.dtype();
    match t.data_mut() {
        HostData::I32(v) => Ok(v),
        _ => Err(Error::DType { op, what, expected: DType::I32, got }),
    }
}

/// A typed slice widened to f32: borrowed for f32, converted in parallel otherwise.
pub(crate) fn widen<T: Elem>(s: &[T]) -> Cow<'_, [f32]> {
    match T::as_f32(s) {
        Some(f) => Cow::Borrowed(f),
        None => {
            let mut out = vec![0f32; s.len()];
            out.par_chunks_mut(CONVERT_CHUNK)
                .zip(s.par_chunks(CONVERT_CHUNK))
                .for_each(|(o, i)| o.iter_mut().zip(i).for_each(|(o, &i)| *o = i.to_f32()));
            Cow::Owned(out)
        }
    }
}

/// A whole float tensor widened to f32 (see [`widen`]).
///
/// # Errors
/// [`Error::Unsupported`] for an `I32` tensor.
pub(crate) fn widen_tensor<'a>(op: &'static str, what: &'static str, t: &'a HostTensor) -> Result<Cow<'a, [f32]>> {
    match t.data() {
        HostData::F32(v) => Ok(Cow::Borrowed(v)),
        HostData::F16(v) => Ok(widen(v)),
        HostData::BF16(v) => Ok(widen(v)),
        HostData::I32(_) => Err(Error::unsupported(op, format!("`{what}` is i32, expected a float tensor"))),
    }
}

/// Round `src` into `dst` element by element.
pub(crate) fn narrow_into<T: Elem>(src: &[f32], dst: &mut [T]) {
    dst.iter_mut().zip(src).for_each(|(d, &s)| *d = T::from_f32(s));
}

/// Runs `f` on an f32 view of `out` and rounds the result into `out` once: `out` itself when
/// it is f32, a scratch buffer otherwise.
///
/// # Errors
/// [`Error::Unsupported`] for an `I32` tensor; whatever `f` returns.
pub(crate) fn with_f32_out<F>(op: &'static str, what: &'static str, out: &mut HostTensor, f: F) -> Result<()>
where
    F: FnOnce(&mut [f32]) -> Result<()>,
{
    match out.data_mut() {
        HostData::F32(v) => f(v),
        HostData::F16(v) => narrow_via_scratch(v, f),
        HostData::BF16(v) => narrow_via_scratch(v, f),
        HostData::I32(_) => Err(Error::unsupported(op, format!("`{what}` is i32, expected a float tensor"))),
    }
}

fn narrow_via_scratch<T: Elem, F>(dst: &mut [T], f: F) -> Result<()>
where
    F: FnOnce(&mut [f32]) -> Result<()>,
{
    let mut scratch = vec![0f32; dst.len()];
    f(&mut scratch)?;
    dst.par_chunks_mut(CONVERT_CHUNK).zip(scratch.par_chunks(CONVERT_CHUNK)).for_each(|(d, s)| narrow_into(s, d));
    Ok(())
}

/// Dot product of two equally long f32 slices with eight partial sums (vectorises).
pub(crate) fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for l in 0..8 {
            acc[l] += x[l] * y[l];
        }
    }
    let tail: f32 = ra.iter().zip(rb).map(|(x, y)| x * y).sum();
    acc.iter().sum::<f32>() + tail
}
