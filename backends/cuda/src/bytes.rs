//! Raw little-endian bytes back into a typed [`HostTensor`].

use moekit_ops::{DType, Error, HostData, HostTensor, Result};

/// The host tensor of `dtype` and `shape` whose memory is `bytes`.
///
/// # Errors
/// [`Error::Shape`] when `bytes` does not hold `numel * dtype.size()` bytes.
pub(crate) fn host_from_bytes(dtype: DType, shape: &[usize], bytes: &[u8]) -> Result<HostTensor> {
    let want = shape.iter().product::<usize>() * dtype.size();
    if bytes.len() != want {
        return Err(Error::Shape { op: "download", what: "bytes", expected: vec![want], got: vec![bytes.len()] });
    }
    let data = match dtype {
        DType::F32 => HostData::F32(collect(bytes)),
        DType::F16 => HostData::F16(collect(bytes)),
        DType::BF16 => HostData::BF16(collect(bytes)),
        DType::I32 => HostData::I32(collect(bytes)),
    };
    HostTensor::new(shape, data)
}

/// Every `size_of::<T>()` bytes read as one `T`.
///
/// NOTE: unaligned reads, because a `Vec<u8>` gives no alignment guarantee for wider types
/// (`cast_slice` would fail on a misaligned start).
fn collect<T: bytemuck::Pod>(bytes: &[u8]) -> Vec<T> {
    bytes.chunks_exact(std::mem::size_of::<T>()).map(bytemuck::pod_read_unaligned).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_round_trip_every_dtype() {
        for dtype in [DType::F32, DType::F16, DType::BF16, DType::I32] {
            let t = HostTensor::from_f32(dtype, &[2, 3], &[1.0, -2.0, 3.5, 0.0, 7.0, -0.25]);
            let back = host_from_bytes(dtype, &[2, 3], t.as_bytes()).unwrap();
            assert_eq!(back, t, "{dtype}");
        }
    }

    #[test]
    fn wrong_byte_count_is_an_error() {
        for len in [20, 22, 26] {
            let e = host_from_bytes(DType::F32, &[2, 3], &vec![0u8; len]).unwrap_err();
            assert!(matches!(e, Error::Shape { .. }), "{e}");
        }
    }
}
