//! # moekit-ops: the backend seam
//!
//! Everything a moekit backend and its callers share, with no GPU dependency:
//!
//! - [`DType`], [`HostTensor`] and [`TensorMeta`] (what every buffer reports);
//! - one [`Error`] enum, naming the op and the shapes;
//! - a `*Problem` descriptor per op ([`RouteProblem`], [`PermuteProblem`],
//!   [`CombineProblem`], [`GroupedGemmProblem`], [`AttentionProblem`], the glue problems,
//!   [`MoeLayerProblem`]), validated once into a [`Validated`] that only this crate can make;
//! - one trait per op family ([`RouteOps`], [`PermuteOps`], [`GroupedGemmOps`],
//!   [`AttentionOps`], [`GlueOps`], [`MoeOps`]) over a [`Device`], composed into [`Backend`];
//! - [`api`]: the checked entry points callers use;
//! - [`check`]: content checks for index data in host memory;
//! - [`numerics`]: what NaN, infinities and empty cases give (docs only);
//! - [`tolerance`]: how float results are compared.
//!
//! ```
//! use moekit_ops::{DType, RouteProblem};
//! let mut p = RouteProblem::new(4, 8, 9, DType::F32); // k = 9 > 8 experts
//! assert!(p.validate().is_err());
//! p.k = 2;
//! assert!(p.validate().is_ok());
//! ```

pub mod api;
pub mod attention;
pub mod backend;
pub mod check;
mod dtype;
mod error;
pub mod glue;
pub mod grouped_gemm;
pub mod moe;
pub mod numerics;
pub mod permute;
pub mod route;
mod tensor;
pub mod tolerance;
mod validated;

pub use attention::{AttentionIo, AttentionMask, AttentionProblem, ColumnRanges, Window, HEAD_DIMS};
pub use backend::{AttentionOps, Backend, Device, GlueOps, GroupedGemmOps, PermuteOps, Replay, RouteOps};
pub use dtype::DType;
pub use error::{Error, Result};
pub use glue::{
    EmbeddingProblem, GemmProblem, RmsNormIo, RmsNormProblem, RotaryIo, RotaryPositions, RotaryProblem, SwigluProblem,
};
pub use grouped_gemm::{GemmLayout, GroupedGemmIo, GroupedGemmProblem, WeightLayout};
pub use moe::{MoeLayerIo, MoeLayerProblem, MoeOps};
pub use permute::{CombineIo, CombineProblem, PermuteIo, PermuteProblem};
pub use route::{BiasUpdateProblem, GroupLimit, RouteIo, RouteProblem, ScoreFn};
pub use tensor::{check_copy_rows, check_reshape, HostData, HostTensor, TensorMeta};
pub use validated::Validated;

/// Implements [`Device`] for a host-memory backend: buffers are [`HostTensor`]s, `alloc` is
/// zero-filled, upload and download clone, `reshape` sets the shape in place, `sync` has nothing
/// to wait for. The reference and
/// CPU backends share it.
#[macro_export]
macro_rules! host_device {
    ($ty:ty, $name:expr) => {
        impl $crate::Device for $ty {
            type Buffer = $crate::HostTensor;
            fn name(&self) -> &'static str {
                $name
            }
            fn float_dtypes(&self) -> &'static [$crate::DType] {
                &$crate::DType::FLOATS
            }
            fn alloc(&self, dtype: $crate::DType, shape: &[usize]) -> $crate::Result<$crate::HostTensor> {
                Ok($crate::HostTensor::zeros(dtype, shape))
            }
            fn upload(&self, tensor: &$crate::HostTensor) -> $crate::Result<$crate::HostTensor> {
                Ok(tensor.clone())
            }
            fn download(&self, buffer: &$crate::HostTensor) -> $crate::Result<$crate::HostTensor> {
                Ok(buffer.clone())
            }
            fn reshape(&self, buffer: &mut $crate::HostTensor, shape: &[usize]) -> $crate::Result<()> {
                $crate::check_reshape("buffer", &*buffer, shape)?;
                buffer.reshape_in_place(shape)
            }
            fn copy_rows(
                &self,
                src: &$crate::HostTensor,
                src_row: usize,
                dst: &mut $crate::HostTensor,
                dst_row: usize,
                rows: usize,
            ) -> $crate::Result<()> {
                dst.copy_rows_from(src, src_row, dst_row, rows)
            }
            fn sync(&self) -> $crate::Result<()> {
                Ok(())
            }
        }
    };
}

/// Implements every op-family trait of a backend that has no kernels yet: each op answers
/// [`Error::NotImplemented`] naming the op and the backend. Never a panic, never a fake
/// result.
#[macro_export]
macro_rules! not_implemented_ops {
    ($ty:ty) => {
        impl $crate::RouteOps for $ty {
            fn route(
                &self,
                _: &$crate::Validated<$crate::RouteProblem>,
                _: $crate::RouteIo<'_, Self::Buffer>,
            ) -> $crate::Result<()> {
                Err($crate::Error::NotImplemented { op: "route", backend: $crate::Device::name(self) })
            }
            fn update_bias(
                &self,
                _: &$crate::Validated<$crate::BiasUpdateProblem>,
                _: &mut Self::Buffer,
                _: &Self::Buffer,
            ) -> $crate::Result<()> {
                Err($crate::Error::NotImplemented { op: "update_bias", backend: $crate::Device::name(self) })
            }
        }
        impl $crate::PermuteOps for $ty {
            fn permute(
                &self,
                _: &$crate::Validated<$crate::PermuteProblem>,
                _: $crate::PermuteIo<'_, Self::Buffer>,
            ) -> $crate::Result<()> {
                Err($crate::Error::NotImplemented { op: "permute", backend: $crate::Device::name(self) })
            }
            fn unpermute_combine(
                &self,
                _: &$crate::Validated<$crate::CombineProblem>,
                _: $crate::CombineIo<'_, Self::Buffer>,
            ) -> $crate::Result<()> {
                Err($crate::Error::NotImplemented { op: "unpermute_combine", backend: $crate::Device::name(self) })
            }
        }
        impl $crate::GroupedGemmOps for $ty {
            fn grouped_gemm(
                &self,
                _: &$crate::Validated<$crate::GroupedGemmProblem>,
                _: $crate::GroupedGemmIo<'_, Self::Buffer>,
            ) -> $crate::Result<()> {
                Err($crate::Error::NotImplemented { op: "grouped_gemm", backend: $crate::Device::name(self) })
            }
        }
        impl $crate::AttentionOps for $ty {
            fn attention(
                &self,
                _: &$crate::Validated<$crate::AttentionProblem>,
                _: $crate::AttentionIo<'_, Self::Buffer>,
            ) -> $crate::Result<()> {
                Err($crate::Error::NotImplemented { op: "attention", backend: $crate::Device::name(self) })
            }
        }
        impl $crate::GlueOps for $ty {
            fn rms_norm(
                &self,
                _: &$crate::Validated<$crate::RmsNormProblem>,
                _: $crate::RmsNormIo<'_, Self::Buffer>,
            ) -> $crate::Result<()> {
                Err($crate::Error::NotImplemented { op: "rms_norm", backend: $crate::Device::name(self) })
            }
            fn rotary(
                &self,
                _: &$crate::Validated<$crate::RotaryProblem>,
                _: $crate::RotaryIo<'_, Self::Buffer>,
            ) -> $crate::Result<()> {
                Err($crate::Error::NotImplemented { op: "rotary", backend: $crate::Device::name(self) })
            }
            fn swiglu(
                &self,
                _: &$crate::Validated<$crate::SwigluProblem>,
                _: &Self::Buffer,
                _: &mut Self::Buffer,
            ) -> $crate::Result<()> {
                Err($crate::Error::NotImplemented { op: "swiglu", backend: $crate::Device::name(self) })
            }
            fn embedding(
                &self,
                _: &$crate::Validated<$crate::EmbeddingProblem>,
                _: &Self::Buffer,
                _: &Self::Buffer,
                _: &mut Self::Buffer,
            ) -> $crate::Result<()> {
                Err($crate::Error::NotImplemented { op: "embedding", backend: $crate::Device::name(self) })
            }
            fn gemm(
                &self,
                _: &$crate::Validated<$crate::GemmProblem>,
                _: &Self::Buffer,
                _: &Self::Buffer,
                _: &mut Self::Buffer,
            ) -> $crate::Result<()> {
                Err($crate::Error::NotImplemented { op: "gemm", backend: $crate::Device::name(self) })
            }
        }
        impl $crate::MoeOps for $ty {}
    };
}
