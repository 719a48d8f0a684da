//! The autotuned grouped GEMM (issue #7, `ops/autotune.rs`) on the GPU: in `check` mode every
//! candidate kernel's output agrees with the first's (else the op fails), the chosen kernel's
//! output equals the reference, and a bucket is tuned once, then served from the cache.
//!
//! Without the `cuda` feature or a GPU the test prints `SKIPPED` with the reason; off Hopper, or
//! with `MOEKIT_CUDA_GEMM` / `MOEKIT_CUDA_WGMMA_WIDE=1` forcing a kernel, there is nothing to
//! tune and it says so, checking only the results and that nothing was cached.

use moekit_cuda::CudaBackend;
use moekit_ops::{DType, GemmLayout, GroupedGemmProblem, WeightLayout};
use moekit_testing::props::grouped_gemm::{grouped_gemm_matches_reference, GroupedGemmCase};
use moekit_testing::suite::{backend_or_skip, skip};

/// Put `b` in `check` (or `on`) mode, whatever `MOEKIT_CUDA_AUTOTUNE` says.
#[cfg(feature = "cuda")]
fn set_mode(b: &CudaBackend, check: bool) {
    use moekit_cuda::AutotuneMode;
    b.set_autotune(if check { AutotuneMode::Check } else { AutotuneMode::On });
}

#[cfg(not(feature = "cuda"))]
fn set_mode(_: &CudaBackend, _: bool) {
    unreachable!("no CudaBackend exists without the `cuda` feature")
}

/// `b`'s cached `(bucket, candidate)` choices.
#[cfg(feature = "cuda")]
fn choices(b: &CudaBackend) -> Vec<(String, String)> {
    b.autotune_choices()
}

#[cfg(not(feature = "cuda"))]
fn choices(_: &CudaBackend) -> Vec<(String, String)> {
    unreachable!("no CudaBackend exists without the `cuda` feature")
}

/// Why `b` tunes nothing, if it does not: bf16/f16 have several candidates only on Hopper,
/// and a kernel forced through the environment wins over tuning.
#[cfg(feature = "cuda")]
fn no_tuning(b: &CudaBackend) -> Option<String> {
    let forced = std::env::var("MOEKIT_CUDA_GEMM").is_ok_and(|v| !v.trim().is_empty())
        || std::env::var("MOEKIT_CUDA_WGMMA_WIDE").is_ok_and(|v| v.trim() == "1");
    if b.arch() != "sm_90a" {
        Some(format!("one grouped GEMM candidate on {}", b.arch()))
    } else if forced {
        Some("MOEKIT_CUDA_GEMM or MOEKIT_CUDA_WGMMA_WIDE forces a kernel".into())
    } else {
        None
    }
}

#[cfg(not(feature = "cuda"))]
fn no_tuning(_: &CudaBackend) -> Option<String> {
    unreachable!("no CudaBackend exists without the `cuda` feature")
}

fn run(gpu: &CudaBackend, dtype: DType, problem: &GroupedGemmProblem, valid_rows: usize, seed: u64) {
    let case = GroupedGemmCase { problem: problem.clone(), valid_rows, align: 1, skew: 0.8, seed };
    if let Err(e) = grouped_gemm_matches_reference(gpu, dtype, &case) {
        panic!("seed {seed}: {e}");
    }
}

#[test]
fn checked_autotune_matches_the_reference_and_tunes_each_bucket_once() {
    let test = "checked_autotune_matches_the_reference_and_tunes_each_bucket_once";
    let Some(gpu) = backend_or_skip(test, CudaBackend::new(0)) else { return };
    set_mode(&gpu, true);
    let skipped = no_tuning(&gpu);
    if let Some(reason) = &skipped {
        skip(&format!("{test} (the tuning part)"), reason);
    }
    // E 8, K 512, N 2·384 with SwiGLU, ~1000 rows over Zipf-skewed random offsets: mean 125
    // rows per expert, bucket 128.
    let mut up = GroupedGemmProblem::contiguous(1000, 8, 512, 2 * 384, DType::BF16);
    up.swiglu = true;
    let bucket = "bf16 kn contiguous swiglu=1 gather=0 n=768 k=512 e=8 rows=128";
    run(&gpu, DType::BF16, &up, 990, 1);
    let first = choices(&gpu);
    match skipped {
        Some(_) => assert!(first.is_empty(), "{first:?}"),
        None => assert_eq!(first.iter().map(|(b, _)| b.as_str()).collect::<Vec<_>>(), [bucket]),
    }

    // The same bucket (960 rows: mean 120), other data: served from the cache, not retuned.
    up.layout = GemmLayout::Contiguous { rows: 960 };
    run(&gpu, DType::BF16, &up, 950, 2);
    assert_eq!(choices(&gpu), first);

    // Masked with capacity 96 (bucket 128): a bucket of its own.
    let mut masked = up.clone();
    masked.layout = GemmLayout::Masked { capacity: 96 };
    run(&gpu, DType::BF16, &masked, 0, 3);
    let masked_bucket = "bf16 kn masked swiglu=1 gather=0 n=768 k=512 e=8 rows=128";
    let after = choices(&gpu);
    assert_eq!(after.iter().any(|(b, _)| b == masked_bucket), skipped.is_none(), "{after:?}");

    // `on` mode (timed, unchecked), f16 [E, N, K] weights with the gather prologue.
    set_mode(&gpu, false);
    let mut down = GroupedGemmProblem::contiguous(700, 8, 384, 512, DType::F16);
    down.weight_layout = WeightLayout::NK;
    down.gather_tokens = Some(400);
    down.row_scale = true;
    run(&gpu, DType::F16, &down, 690, 4);
    let gathered = "f16 nk contiguous swiglu=0 gather=1 n=512 k=384 e=8 rows=128";
    let last = choices(&gpu);
    assert_eq!(last.iter().any(|(b, _)| b == gathered), skipped.is_none(), "{last:?}");
    for (b, c) in &last {
        eprintln!("autotune choice: {b} -> {c}");
    }
}
