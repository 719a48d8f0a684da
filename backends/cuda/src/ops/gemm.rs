//! Dense GEMM on CUDA (cuBLASLt).

use crate::{CudaBackend, CudaBuffer};
use moekit_ops::{Device, Error, GemmProblem, Result, Validated};

/// `c = a · b` (see [`GemmProblem`]).
pub(crate) fn gemm(
    be: &CudaBackend,
    _p: &Validated<GemmProblem>,
    _a: &CudaBuffer,
    _b: &CudaBuffer,
    _c: &mut CudaBuffer,
) -> Result<()> {
    Err(Error::NotImplemented { op: "gemm", backend: be.name() })
}
