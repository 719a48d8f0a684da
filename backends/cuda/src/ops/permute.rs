//! PermuteOps on CUDA.

use crate::{CudaBackend, CudaBuffer};
use moekit_ops::{CombineIo, CombineProblem, Device, Error, PermuteIo, PermuteOps, PermuteProblem, Result, Validated};

impl PermuteOps for CudaBackend {
    fn permute(&self, _p: &Validated<PermuteProblem>, _io: PermuteIo<'_, CudaBuffer>) -> Result<()> {
        Err(Error::NotImplemented { op: "permute", backend: self.name() })
    }
    fn unpermute_combine(&self, _p: &Validated<CombineProblem>, _io: CombineIo<'_, CudaBuffer>) -> Result<()> {
        Err(Error::NotImplemented { op: "unpermute_combine", backend: self.name() })
    }
}
