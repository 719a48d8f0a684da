//! The `#[cube]` kernels, written once for every cubecl runtime; `crate::ops` launches them.
//!
//! Conventions: float data is generic over `F: Float` (f32, f16, bf16) and computed in f32;
//! index data is i32; every kernel keeps its reads and writes in bounds whatever the index
//! data says, and records bad index data through [`flag::record`].

pub(crate) mod attention;
pub(crate) mod fill;
pub mod flag;
pub mod glue;
pub(crate) mod grouped_gemm;
pub(crate) mod grouped_gemm_cmma;
pub(crate) mod grouped_gemm_mma;
pub(crate) mod grouped_gemm_mma6;
#[cfg(test)]
pub(crate) mod mma_emulate;
pub(crate) mod mma_frag;
pub mod permute;
pub mod route;
