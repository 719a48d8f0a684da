//! GroupedGemmOps on CUDA.

use crate::{CudaBackend, CudaBuffer};
use moekit_ops::{Device, Error, GroupedGemmIo, GroupedGemmOps, GroupedGemmProblem, Result, Validated};

impl GroupedGemmOps for CudaBackend {
    fn grouped_gemm(&self, _p: &Validated<GroupedGemmProblem>, _io: GroupedGemmIo<'_, CudaBuffer>) -> Result<()> {
        Err(Error::NotImplemented { op: "grouped_gemm", backend: self.name() })
    }
}
