//! Host tensors and the metadata every backend buffer exposes.

use crate::{DType, Error, Result};
use half::{bf16, f16};

/// What every backend buffer reports about itself: dtype and logical shape.
///
/// Validation compares these against the shapes a problem implies before any backend runs.
pub trait TensorMeta {
    /// Element type.
    fn dtype(&self) -> DType;
    /// Logical row-major shape.
    fn shape(&self) -> &[usize];
    /// Number of elements (product of the shape).
    fn numel(&self) -> usize {
        self.shape().iter().product()
    }
}

/// The check of every metadata-only reshape ([`crate::Device::reshape`],
/// [`HostTensor::reshape`]): `shape` must hold as many elements as `buffer`. A shape whose
/// element count overflows `usize` never matches.
///
/// # Errors
/// [`Error::Shape`] (op `reshape`, argument `what`) with the buffer's element count as
/// `expected` and the requested shape as `got`.
pub fn check_reshape<T: TensorMeta + ?Sized>(what: &'static str, buffer: &T, shape: &[usize]) -> Result<()> {
    let numel = buffer.numel();
    let n = shape.iter().try_fold(1usize, |acc, &d| acc.checked_mul(d));
    if n != Some(numel) {
        return Err(Error::Shape { op: "reshape", what, expected: vec![numel], got: shape.to_vec() });
    }
    Ok(())
}

/// The check of every row copy ([`crate::Device::copy_rows`]): `src` and `dst` hold the
/// same dtype, each has at least one axis, their rows (the first axis) hold the same number
/// of elements, and rows `src_row..src_row + rows` of `src` and `dst_row..dst_row + rows` of
/// `dst` exist. Returns the elements per row.
///
/// # Errors
/// [`Error::DType`] (op `copy_rows`, argument `dst`) for differing dtypes, [`Error::Shape`]
/// for rows of different widths, [`Error::Invalid`] for a 0-d buffer or a range past either
/// buffer's rows (or one that overflows).
pub fn check_copy_rows<T: TensorMeta + ?Sized>(
    src: &T,
    src_row: usize,
    dst: &T,
    dst_row: usize,
    rows: usize,
) -> Result<usize> {
    const OP: &str = "copy_rows";
    if src.dtype() != dst.dtype() {
        return Err(Error::DType { op: OP, what: "dst", expected: src.dtype(), got: dst.dtype() });
    }
    let (Some((&rs, ws)), Some((&rd, wd))) = (src.shape().split_first(), dst.shape().split_first()) else {
        let what = if src.shape().is_empty() { "src" } else { "dst" };
        return Err(Error::invalid(OP, format!("`{what}` is 0-d: no rows to copy")));
    };
    // NOTE: a buffer with no rows may have other axes whose product overflows.
    let (Some(width), Some(wdst)) = (checked_numel(ws), checked_numel(wd)) else {
        return Err(Error::invalid(OP, "a row holds more elements than usize counts"));
    };
    if width != wdst {
        let expected = std::iter::once(rd).chain(ws.iter().copied()).collect();
        return Err(Error::Shape { op: OP, what: "dst", expected, got: dst.shape().to_vec() });
    }
    for (what, at, have) in [("src", src_row, rs), ("dst", dst_row, rd)] {
        if at.checked_add(rows).is_none_or(|end| end > have) {
            return Err(Error::Invalid {
                op: OP,
                msg: format!("rows {at}..{at}+{rows} of `{what}`, which has {have} rows"),
            });
        }
    }
    Ok(width)
}

/// The element count of `shape`, `None` when it overflows `usize`.
fn checked_numel(shape: &[usize]) -> Option<usize> {
    shape.iter().try_fold(1usize, |acc, &d| acc.checked_mul(d))
}

/// Typed storage of a [`HostTensor`].
#[derive(Clone, Debug, PartialEq)]
pub enum HostData {
    /// f32 elements.
    F32(Vec<f32>),
    /// f16 elements.
    F16(Vec<f16>),
    /// bf16 elements.
    BF16(Vec<bf16>),
    /// i32 elements.
    I32(Vec<i32>),
}

impl HostData {
    fn len(&self) -> usize {
        match self {
            HostData::F32(v) => v.len(),
            HostData::F16(v) => v.len(),
            HostData::BF16(v) => v.len(),
            HostData::I32(v) => v.len(),
        }
    }
}

/// A dense row-major tensor in host memory: the unit of upload and download, and the buffer
/// type of the host backends (reference and CPU).
#[derive(Clone, Debug, PartialEq)]
pub struct HostTensor {
    shape: Vec<usize>,
    data: HostData,
}

impl TensorMeta for HostTensor {
    fn dtype(&self) -> DType {
        match self.data {
            HostData::F32(_) => DType::F32,
            HostData::F16(_) => DType::F16,
            HostData::BF16(_) => DType::BF16,
            HostData::I32(_) => DType::I32,
        }
    }
    fn shape(&self) -> &[usize] {
        &self.shape
    }
}

impl HostTensor {
    /// A tensor from typed data.
    ///
    /// # Errors
    /// [`Error::Shape`] when `data` does not hold `shape.product()` elements.
    pub fn new(shape: &[usize], data: HostData) -> Result<Self> {
        // NOTE: a shape whose element count overflows matches no data (`usize::MAX` stands in).
        let n = checked_numel(shape).unwrap_or(usize::MAX);
        if data.len() != n {
            return Err(Error::Shape { op: "host_tensor", what: "data", expected: vec![n], got: vec![data.len()] });
        }
        Ok(HostTensor { shape: shape.to_vec(), data })
    }

    /// A zero-filled tensor.
    pub fn zeros(dtype: DType, shape: &[usize]) -> Self {
        let n: usize = shape.iter().product();
        let data = match dtype {
            DType::F32 => HostData::F32(vec![0.0; n]),
            DType::F16 => HostData::F16(vec![f16::ZERO; n]),
            DType::BF16 => HostData::BF16(vec![bf16::ZERO; n]),
            DType::I32 => HostData::I32(vec![0; n]),
        };
        HostTensor { shape: shape.to_vec(), data }
    }

    /// A tensor filled with one value (rounded to `dtype`; truncated for `I32`).
    pub fn full(dtype: DType, shape: &[usize], value: f64) -> Self {
        let n: usize = shape.iter().product();
        Self::from_f64(dtype, shape, &vec![value; n])
    }

    /// A float tensor of `dtype` from f32 values, rounding to nearest.
    ///
    /// # Panics
    /// Never for valid input; a length mismatch is a programming error and panics in debug
    /// builds only through the assertion below.
    pub fn from_f32(dtype: DType, shape: &[usize], values: &[f32]) -> Self {
        debug_assert_eq!(values.len(), shape.iter().product::<usize>());
        let data = match dtype {
            DType::F32 => HostData::F32(values.to_vec()),
            DType::F16 => HostData::F16(values.iter().map(|&v| f16::from_f32(v)).collect()),
            DType::BF16 => HostData::BF16(values.iter().map(|&v| bf16::from_f32(v)).collect()),
            DType::I32 => HostData::I32(values.iter().map(|&v| v as i32).collect()),
        };
        HostTensor { shape: shape.to_vec(), data }
    }

    /// A float tensor of `dtype` from f64 values, rounding to nearest.
    pub fn from_f64(dtype: DType, shape: &[usize], values: &[f64]) -> Self {
        debug_assert_eq!(values.len(), shape.iter().product::<usize>());
        let data = match dtype {
            DType::F32 => HostData::F32(values.iter().map(|&v| v as f32).collect()),
            DType::F16 => HostData::F16(values.iter().map(|&v| f16::from_f64(v)).collect()),
            DType::BF16 => HostData::BF16(values.iter().map(|&v| bf16::from_f64(v)).collect()),
            DType::I32 => HostData::I32(values.iter().map(|&v| v as i32).collect()),
        };
        HostTensor { shape: shape.to_vec(), data }
    }

    /// An i32 tensor.
    pub fn from_i32(shape: &[usize], values: &[i32]) -> Self {
        debug_assert_eq!(values.len(), shape.iter().product::<usize>());
        HostTensor { shape: shape.to_vec(), data: HostData::I32(values.to_vec()) }
    }

    /// The typed storage.
    pub fn data(&self) -> &HostData {
        &self.data
    }

    /// The typed storage, mutable.
    pub fn data_mut(&mut self) -> &mut HostData {
        &mut self.data
    }

    /// Same data, new shape with the same element count.
    ///
    /// # Errors
    /// [`Error::Shape`] when the element counts differ.
    pub fn reshape(mut self, shape: &[usize]) -> Result<Self> {
        self.reshape_in_place(shape)?;
        Ok(self)
    }

    /// [`HostTensor::reshape`] in place: the data stays where it is, only the shape changes.
    ///
    /// # Errors
    /// [`Error::Shape`] when the element counts differ (the tensor is left as it was).
    pub fn reshape_in_place(&mut self, shape: &[usize]) -> Result<()> {
        check_reshape("tensor", self, shape)?;
        self.shape = shape.to_vec();
        Ok(())
    }

    /// Copies rows `src_row..src_row + rows` of `src` into rows `dst_row..` of `self` (rows:
    /// the first axis), as [`crate::Device::copy_rows`] specifies.
    ///
    /// # Errors
    /// Those of [`check_copy_rows`]; `self` is unchanged on error.
    pub fn copy_rows_from(&mut self, src: &HostTensor, src_row: usize, dst_row: usize, rows: usize) -> Result<()> {
        let w = check_copy_rows(src, src_row, &*self, dst_row, rows)?;
        let (s, d, n) = (src_row * w, dst_row * w, rows * w);
        match (&mut self.data, &src.data) {
            (HostData::F32(dv), HostData::F32(sv)) => dv[d..d + n].copy_from_slice(&sv[s..s + n]),
            (HostData::F16(dv), HostData::F16(sv)) => dv[d..d + n].copy_from_slice(&sv[s..s + n]),
            (HostData::BF16(dv), HostData::BF16(sv)) => dv[d..d + n].copy_from_slice(&sv[s..s + n]),
            (HostData::I32(dv), HostData::I32(sv)) => dv[d..d + n].copy_from_slice(&sv[s..s + n]),
            _ => return Err(Error::DType { op: "copy_rows", what: "dst", expected: src.dtype(), got: self.dtype() }),
        }
        Ok(())
    }

    /// Every element widened to f32 (integers converted exactly where they fit).
    pub fn to_f32_vec(&self) -> Vec<f32> {
        match &self.data {
            HostData::F32(v) => v.clone(),
            HostData::F16(v) => v.iter().map(|x| x.to_f32()).collect(),
            HostData::BF16(v) => v.iter().map(|x| x.to_f32()).collect(),
            HostData::I32(v) => v.iter().map(|&x| x as f32).collect(),
        }
    }

    /// Every element widened to f64.
    pub fn to_f64_vec(&self) -> Vec<f64> {
        match &self.data {
            HostData::F32(v) => v.iter().map(|&x| x as f64).collect(),
            HostData::F16(v) => v.iter().map(|x| x.to_f64()).collect(),
            HostData::BF16(v) => v.iter().map(|x| x.to_f64()).collect(),
            HostData::I32(v) => v.iter().map(|&x| x as f64).collect(),
        }
    }

    /// The i32 elements.
    ///
    /// # Errors
    /// [`Error::DType`] when the tensor is not `I32`.
    pub fn as_i32(&self) -> Result<&[i32]> {
        match &self.data {
            HostData::I32(v) => Ok(v),
            _ => Err(Error::DType { op: "as_i32", what: "tensor", expected: DType::I32, got: self.dtype() }),
        }
    }

    /// The i32 elements, mutable.
    ///
    /// # Errors
    /// [`Error::DType`] when the tensor is not `I32`.
    pub fn as_i32_mut(&mut self) -> Result<&mut [i32]> {
        let got = self.dtype();
        match &mut self.data {
            HostData::I32(v) => Ok(v),
            _ => Err(Error::DType { op: "as_i32_mut", what: "tensor", expected: DType::I32, got }),
        }
    }

    /// The f32 elements.
    ///
    /// # Errors
    /// [`Error::DType`] when the tensor is not `F32`.
    pub fn as_f32(&self) -> Result<&[f32]> {
        match &self.data {
            HostData::F32(v) => Ok(v),
            _ => Err(Error::DType { op: "as_f32", what: "tensor", expected: DType::F32, got: self.dtype() }),
        }
    }

    /// The f32 elements, mutable.
    ///
    /// # Errors
    /// [`Error::DType`] when the tensor is not `F32`.
    pub fn as_f32_mut(&mut self) -> Result<&mut [f32]> {
        let got = self.dtype();
        match &mut self.data {
            HostData::F32(v) => Ok(v),
            _ => Err(Error::DType { op: "as_f32_mut", what: "tensor", expected: DType::F32, got }),
        }
    }

    /// Overwrite every element from f32 values (rounded to this tensor's dtype).
    ///
    /// # Errors
    /// [`Error::Shape`] when the lengths differ.
    pub fn assign_f32(&mut self, values: &[f32]) -> Result<()> {
        if values.len() != self.numel() {
            return Err(Error::Shape {
                op: "assign_f32",
                what: "values",
                expected: vec![self.numel()],
                got: vec![values.len()],
            });
        }
        let shape = self.shape.clone();
        *self = HostTensor::from_f32(self.dtype(), &shape, values);
        Ok(())
    }

    /// The tensor of `dtype` and `shape` whose little-endian memory is `bytes` (a download).
    ///
    /// # Errors
    /// [`Error::Shape`] when `bytes` does not hold `shape.product() * dtype.size()` bytes.
    pub fn from_bytes(dtype: DType, shape: &[usize], bytes: &[u8]) -> Result<Self> {
        let want = checked_numel(shape).and_then(|n| n.checked_mul(dtype.size())).unwrap_or(usize::MAX);
        if bytes.len() != want {
            return Err(Error::Shape { op: "from_bytes", what: "bytes", expected: vec![want], got: vec![bytes.len()] });
        }
        let data = match dtype {
            DType::F32 => HostData::F32(read_unaligned(bytes)),
            DType::F16 => HostData::F16(read_unaligned(bytes)),
            DType::BF16 => HostData::BF16(read_unaligned(bytes)),
            DType::I32 => HostData::I32(read_unaligned(bytes)),
        };
        HostTensor::new(shape, data)
    }

    /// Raw bytes (little-endian, as laid out in memory), for dumps and uploads.
    pub fn as_bytes(&self) -> &[u8] {
        match &self.data {
            HostData::F32(v) => bytemuck::cast_slice(v),
            HostData::F16(v) => bytemuck::cast_slice(v),
            HostData::BF16(v) => bytemuck::cast_slice(v),
            HostData::I32(v) => bytemuck::cast_slice(v),
        }
    }
}

/// Every `size_of::<T>()` bytes read as one `T`.
///
/// NOTE: unaligned reads, because a `Vec<u8>` gives no alignment guarantee for wider types
/// (`cast_slice` would fail on a misaligned start).
fn read_unaligned<T: bytemuck::Pod>(bytes: &[u8]) -> Vec<T> {
    bytes.chunks_exact(std::mem::size_of::<T>()).map(bytemuck::pod_read_unaligned).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_round_trip_every_dtype() {
        for dtype in [DType::F32, DType::F16, DType::BF16, DType::I32] {
            let t = HostTensor::from_f32(dtype, &[2, 3], &[1.0, -2.0, 3.5, 0.0, 7.0, -0.25]);
            assert_eq!(HostTensor::from_bytes(dtype, &[2, 3], t.as_bytes()).unwrap(), t, "{dtype}");
        }
    }

    #[test]
    fn wrong_byte_count_is_an_error() {
        for len in [20, 22, 26] {
            let e = HostTensor::from_bytes(DType::F32, &[2, 3], &vec![0u8; len]).unwrap_err();
            assert!(matches!(e, Error::Shape { .. }), "{e}");
        }
    }

    #[test]
    fn reshape_in_place_checks_the_count() {
        let mut t = HostTensor::from_f32(DType::F32, &[2, 6], &(0..12).map(|i| i as f32).collect::<Vec<_>>());
        let data = t.data().clone();
        t.reshape_in_place(&[2, 3, 2]).unwrap();
        assert_eq!((t.shape(), t.data()), (&[2, 3, 2][..], &data));
        let e = t.reshape_in_place(&[2, 3, 3]).unwrap_err();
        assert!(
            matches!(&e, Error::Shape { op: "reshape", what: "tensor", expected, got }
            if expected == &[12] && got == &[2, 3, 3]),
            "{e}"
        );
        assert_eq!(t.shape(), [2, 3, 2], "a failed reshape leaves the shape");
        // An element count that overflows never matches (and does not panic).
        assert!(check_reshape("buffer", &t, &[usize::MAX, 2, 0, 3]).is_err());
        assert!(HostTensor::zeros(DType::F32, &[0, 4]).reshape(&[5, 0]).is_ok());
    }

    #[test]
    fn copy_rows_refuses_0d_buffers_and_other_widths() {
        let scalar = HostTensor::zeros(DType::F32, &[]);
        let mut rows = HostTensor::zeros(DType::F32, &[2, 3]);
        let err = rows.copy_rows_from(&scalar, 0, 0, 0).unwrap_err();
        assert_eq!(err, Error::invalid("copy_rows", "`src` is 0-d: no rows to copy"));
        let wide = HostTensor::zeros(DType::F32, &[2, 4]);
        assert!(matches!(rows.copy_rows_from(&wide, 0, 0, 1), Err(Error::Shape { what: "dst", .. })));
        let src = HostTensor::from_f32(DType::F32, &[2, 1, 3], &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
        rows.copy_rows_from(&src, 1, 0, 1).unwrap();
        assert_eq!(rows.to_f32_vec(), vec![4.0, 5.0, 6.0, 0.0, 0.0, 0.0]);
    }
}
