//! One generic test body per property: `fn(&B, DType, &Case) -> Check` for any backend `B`,
//! with the proptest strategy of its cases beside it.
//!
//! Bodies named `*_matches_reference` compare against [`moekit_reference::ReferenceBackend`];
//! `*_invariants` and the round trip check properties of the backend alone (meaningful on the
//! reference itself); [`invalid::invalid_inputs_rejected`] throws invalid calls at every op;
//! [`nonfinite`] plants NaN and infinities and checks the numerics contract.

pub mod attention;
pub mod glue;
pub mod grouped_gemm;
pub mod invalid;
mod invalid_glue;
mod invalid_ops;
pub mod moe;
pub mod nonfinite;
pub mod permute;
pub mod route;
mod route_scores;

pub use route_scores::Scores;
