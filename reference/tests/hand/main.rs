//! Small cases worked out by hand: every expected number is written in the test (or computed
//! from its closed form right there), never taken from the reference itself.

mod attention;
mod backend;
mod errors;
mod glue;
mod grouped_gemm;
mod permute;
mod route;

use moekit_ops::{DType, HostTensor};

/// An f32 tensor.
pub fn f32s(shape: &[usize], values: &[f64]) -> HostTensor {
    HostTensor::from_f64(DType::F32, shape, values)
}

/// Asserts every element of `actual` is within `tol` (absolute) of `expected`.
#[track_caller]
pub fn assert_close(actual: &HostTensor, expected: &[f64], tol: f64) {
    let got = actual.to_f64_vec();
    assert_eq!(got.len(), expected.len(), "length: got {got:?}, expected {expected:?}");
    for (i, (g, e)) in got.iter().zip(expected).enumerate() {
        assert!((g - e).abs() <= tol, "element {i}: got {g}, expected {e} (tol {tol}); all: {got:?}");
    }
}
