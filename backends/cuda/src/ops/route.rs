//! RouteOps on CUDA.

use crate::{CudaBackend, CudaBuffer};
use moekit_ops::{BiasUpdateProblem, Device, Error, Result, RouteIo, RouteOps, RouteProblem, Validated};

impl RouteOps for CudaBackend {
    fn route(&self, _p: &Validated<RouteProblem>, _io: RouteIo<'_, CudaBuffer>) -> Result<()> {
        Err(Error::NotImplemented { op: "route", backend: self.name() })
    }
    fn update_bias(
        &self,
        _p: &Validated<BiasUpdateProblem>,
        _bias: &mut CudaBuffer,
        _counts: &CudaBuffer,
    ) -> Result<()> {
        Err(Error::NotImplemented { op: "update_bias", backend: self.name() })
    }
}
