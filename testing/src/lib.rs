//! # moekit-testing: one test body per property, every backend
//!
//! The cross-backend test harness. Each property is one generic function
//! `fn(&B, DType, &Case) -> Result<(), String>` for any [`moekit_ops::Backend`] `B` (see
//! [`props`]), with a proptest strategy over shapes beside it ([`strategies`]); data comes from
//! a per-case seed ([`gen`]). Ops run through the checked entry points of [`moekit_ops::api`]
//! after uploading inputs, with outputs poisoned (NaN, or a sentinel for integers) so a
//! backend that forgets to write an element fails ([`exec`]). The oracle is
//! [`moekit_reference::ReferenceBackend`]; floats compare through
//! [`moekit_ops::tolerance`], integers exactly ([`compare`]).
//!
//! [`backend_suite!`] instantiates every property for one backend and its dtype list, one
//! `#[test]` per property and dtype (`cpu::route::bf16`):
//!
//! ```text
//! moekit_testing::backend_suite!(cpu, moekit_cpu::CpuBackend::new(), [f32, f16, bf16]);
//! // A constructor that may fail: `Err(NoDevice | NotCompiled)` skips, printing why.
//! moekit_testing::backend_suite!(cuda, try moekit_cuda::CudaBackend::new(0), [f32, f16, bf16]);
//! ```
//!
//! Environment: `MOEKIT_PROPTEST_CASES` overrides every case count, `MOEKIT_PROPTEST_SEED`
//! the base seed, and `MOEKIT_NO_SKIP` turns skips into failures.

pub mod compare;
pub mod exec;
pub mod faults;
pub mod gen;
pub mod props;
#[cfg(test)]
mod selftest;
pub mod strategies;
pub mod suite;

pub use moekit_ops::{DType, Error};

/// Instantiates every property for one backend: `backend_suite!(NAME, CONSTRUCTOR, [DTYPES])`.
///
/// - `NAME`: the module the tests live in (`cpu` gives `cpu::route::f32`, ...).
/// - `CONSTRUCTOR`: an expression giving the backend, or `try EXPR` with `EXPR` a
///   `Result<B, moekit_ops::Error>`: `Err(NoDevice | NotCompiled)` makes each test print
///   `SKIPPED: <test>: <reason>` and count the skip; any other error fails the test. Write
///   paths from the crate root (`moekit_cpu::CpuBackend::new()`); the test file's imports
///   are visible too.
/// - `DTYPES`: the float dtypes the backend supports, as `f32`, `f16`, `bf16`.
///
/// Each property × dtype becomes one `#[test]`; dtype-free properties (`update_bias`) run
/// once, as `f32`.
#[macro_export]
macro_rules! backend_suite {
    ($suite:ident, try $make:expr, [$($dt:ident),+ $(,)?]) => {
        #[allow(unused_imports)]
        mod $suite {
            use super::*;
            $crate::__moekit_properties!($suite, (|| $make), [$($dt),+]);
        }
    };
    ($suite:ident, $make:expr, [$($dt:ident),+ $(,)?]) => {
        $crate::backend_suite!($suite, try ::core::result::Result::<_, $crate::Error>::Ok($make), [$($dt),+]);
    };
}

/// The property table: name, dtypes, default case count, strategy, body.
#[doc(hidden)]
#[macro_export]
macro_rules! __moekit_properties {
    ($suite:ident, $make:expr, $dts:tt) => {
        $crate::__moekit_property! { $suite, $make, $dts, MANY,
        route: route::{route_cases, route_matches_reference} }
        $crate::__moekit_property! { $suite, $make, $dts, MANY,
        route_invariants: route::{route_cases, route_invariants} }
        $crate::__moekit_property! { $suite, $make, [f32], MANY,
        update_bias: route::{bias_cases, update_bias_matches_reference} }
        $crate::__moekit_property! { $suite, $make, $dts, MANY,
        permute: permute::{permute_cases, permute_matches_reference} }
        $crate::__moekit_property! { $suite, $make, $dts, MANY,
        permute_invariants: permute::{permute_cases, permute_invariants} }
        $crate::__moekit_property! { $suite, $make, $dts, MANY,
        unpermute_combine: permute::{combine_cases, combine_matches_reference} }
        $crate::__moekit_property! { $suite, $make, $dts, MANY,
        permute_combine_round_trip: permute::{permute_cases, permute_combine_round_trip} }
        $crate::__moekit_property! { $suite, $make, $dts, MANY,
        grouped_gemm: grouped_gemm::{grouped_gemm_cases, grouped_gemm_matches_reference} }
        $crate::__moekit_property! { $suite, $make, $dts, FEW,
        attention: attention::{attention_cases, attention_matches_reference} }
        $crate::__moekit_property! { $suite, $make, $dts, FEW,
        attention_invariants: attention::{attention_cases, attention_invariants} }
        $crate::__moekit_property! { $suite, $make, $dts, MANY,
        rms_norm: glue::{rms_norm_cases, rms_norm_matches_reference} }
        $crate::__moekit_property! { $suite, $make, $dts, MANY,
        rotary: glue::{rotary_cases, rotary_matches_reference} }
        $crate::__moekit_property! { $suite, $make, $dts, MANY,
        swiglu: glue::{swiglu_cases, swiglu_matches_reference} }
        $crate::__moekit_property! { $suite, $make, $dts, MANY,
        embedding: glue::{embedding_cases, embedding_matches_reference} }
        $crate::__moekit_property! { $suite, $make, $dts, MANY,
        gemm: glue::{gemm_cases, gemm_matches_reference} }
        $crate::__moekit_property! { $suite, $make, $dts, FEW,
        reshape: glue::{reshape_cases, reshape_keeps_data} }
        $crate::__moekit_property! { $suite, $make, $dts, MANY,
        copy_rows: glue::{copy_rows_cases, copy_rows_exact} }
        $crate::__moekit_property! { $suite, $make, $dts, FEW,
        moe_layer: moe::{moe_cases, moe_layer_matches_reference} }
        $crate::__moekit_property! { $suite, $make, $dts, MANY,
        invalid_inputs: invalid::{invalid_cases, invalid_inputs_rejected} }
        $crate::__moekit_property! { $suite, $make, $dts, SOME,
        nonfinite_route: nonfinite::{route_nonfinite_cases, route_rejects_non_finite} }
        $crate::__moekit_property! { $suite, $make, $dts, SOME,
        nonfinite_ops: nonfinite::{propagation_cases, float_ops_propagate_non_finite} }
        $crate::__moekit_property! { $suite, $make, $dts, SOME,
        nonfinite_attention: nonfinite::{attention_nonfinite_cases, attention_propagates_non_finite} }
    };
}

/// One property: a module of one `#[test]` per dtype.
#[doc(hidden)]
#[macro_export]
macro_rules! __moekit_property {
    (
        $suite:ident, $make:expr, [$($dt:ident),+], $cases:ident,
        $prop:ident: $m:ident::{$strategy:ident, $body:ident}
    ) => {
        pub mod $prop {
            use super::*;
            $(
                #[test]
                fn $dt() {
                    $crate::suite::run(
                        concat!(stringify!($suite), "::", stringify!($prop), "::", stringify!($dt)),
                        $make,
                        $crate::suite::dtype(stringify!($dt)),
                        $crate::suite::$cases,
                        $crate::props::$m::$strategy(),
                        $crate::props::$m::$body,
                    );
                }
            )+
        }
    };
}
