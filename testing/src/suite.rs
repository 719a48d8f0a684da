//! Running one property on one backend and dtype: case counts, seeds, and skips that are
//! never silent.

use crate::compare::Check;
use moekit_ops::{Backend, DType, Error};
use proptest::strategy::Strategy;
use proptest::test_runner::{Config, RngAlgorithm, TestCaseError, TestRng, TestRunner};
use std::io::Write;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Environment variable overriding every property's case count.
pub const CASES_ENV: &str = "MOEKIT_PROPTEST_CASES";
/// Environment variable overriding the base seed (decimal `u64`); each test mixes in its name.
pub const SEED_ENV: &str = "MOEKIT_PROPTEST_SEED";
/// Environment variable that turns every skip into a failure (for runs that must cover all).
pub const NO_SKIP_ENV: &str = "MOEKIT_NO_SKIP";

/// Default case count of the cheap properties.
pub const MANY: u32 = 512;
/// Default case count of the expensive properties (attention, the MoE layer).
pub const FEW: u32 = 256;
/// Default case count of the non-finite properties: each case plants NaN or Inf in one op's
/// inputs, and their value is in the paths covered (every op, dtype and kernel variant), which
/// a few dozen cases reach; more only adds kernel compiles on lavapipe.
pub const SOME: u32 = 64;

const DEFAULT_SEED: u64 = 0x6d6f_656b_6974;

static SKIPPED: AtomicUsize = AtomicUsize::new(0);

/// Tests skipped so far in this test binary.
pub fn skipped() -> usize {
    SKIPPED.load(Ordering::SeqCst)
}

/// Case count: [`CASES_ENV`] when set, else `default`.
pub fn cases(default: u32) -> u32 {
    std::env::var(CASES_ENV).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// Records a skip and prints `SKIPPED: <test>: <reason>` straight to the process's stderr
/// (past the test harness's capture, so it shows in every run).
///
/// # Panics
/// When [`NO_SKIP_ENV`] is set: a run that asked for full coverage fails instead.
pub fn skip(test: &str, reason: &str) {
    if std::env::var_os(NO_SKIP_ENV).is_some() {
        panic!("{test}: would be skipped ({reason}) but {NO_SKIP_ENV} is set");
    }
    let n = SKIPPED.fetch_add(1, Ordering::SeqCst) + 1;
    // NOTE: `eprintln!` goes through libtest's capture and vanishes for passing tests; a
    // direct write to the stderr handle does not.
    let _ = writeln!(std::io::stderr(), "SKIPPED: {test}: {reason} ({n} skipped so far in this test binary)");
}

/// The dtype named by a test's dtype identifier (`f32`, `f16`, `bf16`).
///
/// # Panics
/// On an unknown name: the suite was instantiated with a typo.
pub fn dtype(name: &str) -> DType {
    name.parse().unwrap_or_else(|e| panic!("backend_suite!: {e}"))
}

/// The backend, or `None` after recording a skip when the constructor answered
/// [`Error::NoDevice`] or [`Error::NotCompiled`].
///
/// # Panics
/// On any other constructor error: a backend that exists but fails to start is a failure.
pub fn backend_or_skip<B>(test: &str, made: Result<B, Error>) -> Option<B> {
    match made {
        Ok(b) => Some(b),
        Err(e @ (Error::NoDevice { .. } | Error::NotCompiled { .. })) => {
            skip(test, &e.to_string());
            None
        }
        Err(e) => panic!("{test}: the backend constructor failed: {e}"),
    }
}

fn seed_bytes(test: &str) -> ([u8; 32], u64) {
    let base = std::env::var(SEED_ENV).ok().and_then(|v| v.parse().ok()).unwrap_or(DEFAULT_SEED);
    // FNV-1a over the test name, so every test explores its own cases.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325 ^ base;
    for byte in test.bytes() {
        h = (h ^ byte as u64).wrapping_mul(0x0100_0000_01b3);
    }
    let mut out = [0u8; 32];
    for (i, chunk) in out.chunks_mut(8).enumerate() {
        chunk.copy_from_slice(&h.wrapping_add(i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15).to_le_bytes());
    }
    (out, base)
}

/// Runs `body` over `default_cases` cases of `strategy` (see [`cases`]) on the backend `make`
/// builds, for `dtype`. Skips (printed, counted) when the backend is unavailable or does not
/// take `dtype`.
///
/// # Panics
/// When a case fails: the message holds the minimal failing case, the error and the seed.
pub fn run<B, S>(
    test: &str,
    make: impl FnOnce() -> Result<B, Error>,
    dtype: DType,
    default_cases: u32,
    strategy: S,
    body: impl Fn(&B, DType, &S::Value) -> Check,
) where
    B: Backend,
    S: Strategy,
{
    let Some(backend) = backend_or_skip(test, make()) else { return };
    if !backend.float_dtypes().contains(&dtype) {
        skip(
            test,
            &format!("backend `{}` does not take {dtype} (it takes {:?})", backend.name(), backend.float_dtypes()),
        );
        return;
    }
    let (seed, base) = seed_bytes(test);
    let config =
        Config { cases: cases(default_cases), failure_persistence: None, max_shrink_time: 60_000, ..Config::default() };
    let mut runner = TestRunner::new_with_rng(config, TestRng::from_seed(RngAlgorithm::ChaCha, &seed));
    let result = runner.run(&strategy, |case| body(&backend, dtype, &case).map_err(TestCaseError::fail));
    if let Err(e) = result {
        let name = backend.name();
        let hint = format!("reproduce with {SEED_ENV}={base}; raise {CASES_ENV} to explore more");
        panic!("{test} on backend `{name}` ({dtype}) failed: {e}\n({hint})");
    }
}
