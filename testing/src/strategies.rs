//! Proptest strategies over shapes. Data comes from a per-case seed (see [`crate::gen`]), so
//! shrinking works on the shapes and a printed case reproduces its data.

use proptest::prelude::*;

/// Token counts: 0 and 1 often, then up to `max`.
pub fn tokens(max: usize) -> BoxedStrategy<usize> {
    prop_oneof![1 => Just(0usize), 2 => Just(1usize), 7 => 2..=max.max(2)].boxed()
}

/// Expert counts up to 256: mostly small, sometimes the DeepSeek-V3 256.
pub fn experts() -> BoxedStrategy<usize> {
    prop_oneof![6 => 1..=16usize, 2 => 17..=64usize, 1 => 65..=256usize, 1 => Just(256usize)].boxed()
}

/// Small expert counts for the GEMM-heavy ops.
pub fn few_experts() -> BoxedStrategy<usize> {
    prop_oneof![8 => 1..=8usize, 2 => 9..=24usize].boxed()
}

/// Top-k `1..=8`.
pub fn top_k() -> BoxedStrategy<usize> {
    (1..=8usize).boxed()
}

/// Hidden or GEMM sizes `1..=max`, biased towards sizes that are not multiples of 8.
pub fn dim(max: usize) -> BoxedStrategy<usize> {
    prop_oneof![
        3 => (1..=max.max(1)).prop_filter("not a multiple of 8", |d| d % 8 != 0),
        1 => 1..=max.max(1),
    ]
    .boxed()
}

/// Zipf exponents: 0 (uniform) to heavily skewed.
pub fn skew() -> BoxedStrategy<f64> {
    prop_oneof![1 => Just(0.0f64), 3 => 0.5f64..2.0].boxed()
}

/// A data seed.
pub fn seed() -> BoxedStrategy<u64> {
    any::<u64>().boxed()
}
