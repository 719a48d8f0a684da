//! AttentionOps on CUDA.

use crate::{CudaBackend, CudaBuffer};
use moekit_ops::{AttentionIo, AttentionOps, AttentionProblem, Device, Error, Result, Validated};

impl AttentionOps for CudaBackend {
    fn attention(&self, _p: &Validated<AttentionProblem>, _io: AttentionIo<'_, CudaBuffer>) -> Result<()> {
        Err(Error::NotImplemented { op: "attention", backend: self.name() })
    }
}
