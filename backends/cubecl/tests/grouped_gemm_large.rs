//! The grouped GEMM (and dense GEMM) at sizes the property suite never reaches, against the
//! reference: several experts with empty and ragged segments, R ≈ 2000 rows, K ≈ 1000, N ≈ 600,
//! both layouts, both weight layouts, SwiGLU, gather, row scale, and K or N that no vector
//! width divides. On cubecl's CUDA runtime this checks the tensor-core kernel (and asserts it
//! is the one chosen for f16 and bf16); without the feature or a GPU it prints `SKIPPED`.
//! The same cases on wgpu (the tiled kernel on lavapipe: slow) run with `--ignored`.

#![cfg(any(feature = "cubecl-cuda", feature = "cubecl-wgpu"))]

use moekit_cubecl::CubeBackend;
use moekit_ops::{DType, Device, Error, GemmLayout, GemmProblem, GroupedGemmProblem, WeightLayout};
use moekit_testing::props::glue::{gemm_matches_reference, GlueCase};
use moekit_testing::props::grouped_gemm::{grouped_gemm_matches_reference, GroupedGemmCase};
use std::io::Write;

/// One grouped GEMM case: `(layout, experts, K, N, nk, swiglu, scale, gather)`.
type Shape = (GemmLayout, usize, usize, usize, bool, bool, bool, bool);

/// The grouped cases: contiguous with ~2000 valid rows (zipf-skewed, some experts empty, the
/// last rows in no expert), masked with counts in `0..=C`.
fn grouped_cases() -> Vec<GroupedGemmCase> {
    let contiguous = GemmLayout::Contiguous { rows: 2050 };
    let masked = GemmLayout::Masked { capacity: 300 };
    let shapes: [Shape; 8] = [
        // The up projection: SwiGLU, gather (-1 rows), row scale; N_out = 300 (vectors of 4).
        (contiguous, 9, 1000, 600, false, true, true, true),
        (contiguous, 9, 1000, 600, true, true, true, true),
        // The down projection's shape: plain, [E, N, K] and [E, K, N].
        (contiguous, 7, 1000, 600, true, false, true, false),
        (contiguous, 7, 1000, 600, false, false, false, false),
        // K and N that no vector width above 1 divides, K not a multiple of the block's step.
        (contiguous, 5, 999, 301, false, false, true, false),
        (contiguous, 5, 1001, 598, true, true, false, true),
        (masked, 6, 1000, 600, false, true, true, false),
        (masked, 6, 1000, 600, true, false, true, false),
    ];
    shapes
        .into_iter()
        .enumerate()
        .map(|(i, (layout, experts, k_dim, n_dim, nk, swiglu, row_scale, gather))| GroupedGemmCase {
            problem: GroupedGemmProblem {
                layout,
                experts,
                k_dim,
                n_dim,
                weight_layout: if nk { WeightLayout::NK } else { WeightLayout::KN },
                swiglu,
                row_scale,
                gather_tokens: gather.then_some(1500),
                dtype: DType::F32,
            },
            valid_rows: 2000,
            align: 1,
            skew: 1.2,
            seed: 0x6e_6d_6d_61 + i as u64,
        })
        .collect()
}

/// Dense GEMM cases: `(M, K, N, b transposed)`.
fn dense_cases() -> Vec<GlueCase<GemmProblem>> {
    [(2000, 1000, 600, false), (2000, 1000, 600, true), (1999, 1003, 257, false), (130, 72, 1030, true)]
        .into_iter()
        .enumerate()
        .map(|(i, (m, k, n, b_transposed))| GlueCase {
            problem: GemmProblem { m, k, n, b_transposed, dtype: DType::F32 },
            seed: 0x64_65_6e + i as u64,
        })
        .collect()
}

/// Runs every case in every dtype on `b`; `kernel` is the grouped-GEMM kernel expected for
/// each `(dtype, problem)`, `None` to accept either.
fn run<R: cubecl::Runtime>(b: &CubeBackend<R>, dtypes: &[DType], kernel: impl Fn(DType) -> Option<&'static str>) {
    let mut failures = Vec::new();
    for &dtype in dtypes {
        for c in grouped_cases() {
            let p = GroupedGemmProblem { dtype, ..c.problem.clone() };
            let chosen = b.grouped_gemm_kernel(&p);
            if let Some(want) = kernel(dtype) {
                assert_eq!(chosen, want, "kernel for {dtype} {p:?}");
            }
            if let Err(e) = grouped_gemm_matches_reference(b, dtype, &c) {
                failures.push(format!("grouped_gemm {dtype} ({chosen}) {p:?}:\n{e}"));
            }
        }
        for c in dense_cases() {
            if let Err(e) = gemm_matches_reference(b, dtype, &c) {
                failures.push(format!("gemm {dtype} {:?}:\n{e}", c.problem));
            }
        }
    }
    assert!(failures.is_empty(), "{} failures:\n{}", failures.len(), failures.join("\n"));
}

fn skip(test: &str, e: &Error) {
    // NOTE: written to stderr directly, past the harness's output capture, so a skipped
    // device test says so in every run.
    let _ = writeln!(std::io::stderr(), "SKIPPED {test}: {e}");
}

#[test]
fn cuda_grouped_gemm_large_matches_reference() {
    #[cfg(feature = "cubecl-cuda")]
    {
        match CubeBackend::<moekit_cubecl::CudaRuntime>::cuda(0) {
            Ok(b) => {
                let forced = std::env::var("MOEKIT_CUBECL_GEMM").is_ok_and(|v| v.trim().eq_ignore_ascii_case("tiled"));
                // f16 and bf16 take the tensor cores unless forced off; f32 is always tiled.
                let kernel = |d: DType| match (d, forced) {
                    (DType::F32, _) | (_, true) => Some("tiled"),
                    _ => Some("cmma"),
                };
                run(&b, &[DType::BF16, DType::F16, DType::F32], kernel);
            }
            Err(e) => skip("cuda_grouped_gemm_large_matches_reference", &e),
        }
    }
    #[cfg(not(feature = "cubecl-cuda"))]
    skip(
        "cuda_grouped_gemm_large_matches_reference",
        &Error::NotCompiled { backend: "cubecl-cuda", feature: "cubecl-cuda" },
    );
}

#[test]
#[ignore = "the tiled kernel on lavapipe takes minutes at these sizes; run with --ignored"]
fn wgpu_grouped_gemm_large_matches_reference() {
    #[cfg(feature = "cubecl-wgpu")]
    {
        match CubeBackend::<moekit_cubecl::WgpuRuntime>::wgpu() {
            Ok(b) => {
                let dtypes: Vec<DType> =
                    [DType::F16, DType::BF16].into_iter().filter(|d| b.float_dtypes().contains(d)).collect();
                run(&b, &dtypes, |_| None);
            }
            Err(e) => skip("wgpu_grouped_gemm_large_matches_reference", &e),
        }
    }
    #[cfg(not(feature = "cubecl-wgpu"))]
    skip(
        "wgpu_grouped_gemm_large_matches_reference",
        &Error::NotCompiled { backend: "cubecl-wgpu", feature: "cubecl-wgpu" },
    );
}
