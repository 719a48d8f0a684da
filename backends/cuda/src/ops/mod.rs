//! The op families on the CUDA backend, one file each; every launcher takes a validated
//! problem and queues its kernels on the backend's stream without a host synchronisation.

mod attention;
mod attention_decode;
pub(crate) mod autotune;
pub(crate) mod flashmask;
pub(crate) mod gemm;
mod glue;
mod grouped_gemm;
mod grouped_gemm_tma;
mod moe;
mod permute;
pub(crate) mod route;
