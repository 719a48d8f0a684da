//! What `CudaBackend` does on this machine: without the `cuda` feature, or without the CUDA
//! driver, `new` answers a typed error (never a panic); with a GPU, memory round-trips and
//! a bad index a kernel meets surfaces as a typed error at the next sync.

use moekit_cuda::CudaBackend;
use moekit_ops::{api, DType, Device, EmbeddingProblem, Error, HostTensor, TensorMeta};
use std::io::Write;

/// The backend, or `None` (with the reason printed) when this machine cannot have one.
fn backend_or_skip(test: &str) -> Option<CudaBackend> {
    match CudaBackend::new(0) {
        Ok(b) => Some(b),
        Err(e) => {
            check_unavailable(&e);
            // NOTE: written to stderr directly, past the test harness's output capture, so a
            // skipped GPU test says so in every run instead of passing silently.
            let _ = writeln!(std::io::stderr(), "SKIPPED {test}: {e}");
            None
        }
    }
}

/// The error is the one this build and machine should give.
fn check_unavailable(e: &Error) {
    if cfg!(feature = "cuda") {
        assert!(matches!(e, Error::NoDevice { backend: "cuda", .. }), "unexpected error: {e:?}");
    } else {
        assert_eq!(*e, Error::NotCompiled { backend: "cuda", feature: "cuda" });
    }
}

#[test]
fn new_answers_an_error_or_a_backend_never_a_panic() {
    match CudaBackend::new(0) {
        Ok(b) => assert_eq!(b.name(), "cuda"),
        Err(e) => check_unavailable(&e),
    }
}

#[test]
fn a_missing_ordinal_is_an_error() {
    let e = CudaBackend::new(4096).unwrap_err();
    if cfg!(feature = "cuda") {
        assert!(matches!(e, Error::NoDevice { .. }), "{e:?}");
    } else {
        check_unavailable(&e);
    }
}

#[test]
fn memory_round_trips_every_dtype() {
    let Some(gpu) = backend_or_skip("memory_round_trips_every_dtype") else { return };
    for dtype in [DType::F32, DType::F16, DType::BF16, DType::I32] {
        for shape in [vec![3, 5], vec![0, 4], vec![1]] {
            let n: usize = shape.iter().product();
            let values: Vec<f32> = (0..n).map(|i| i as f32 * 0.5 - 3.0).collect();
            let host = HostTensor::from_f32(dtype, &shape, &values);
            let buf = gpu.upload(&host).unwrap();
            assert_eq!((buf.dtype(), buf.shape()), (dtype, &shape[..]));
            assert_eq!(gpu.download(&buf).unwrap(), host, "{dtype} {shape:?}");
            let zeros = gpu.alloc(dtype, &shape).unwrap();
            assert_eq!(gpu.download(&zeros).unwrap(), HostTensor::zeros(dtype, &shape));
        }
    }
    gpu.sync().unwrap();
}

#[test]
fn a_bad_index_surfaces_at_the_next_sync_and_then_clears() {
    let Some(gpu) = backend_or_skip("a_bad_index_surfaces_at_the_next_sync_and_then_clears") else { return };
    let p = EmbeddingProblem { tokens: 3, vocab: 4, hidden: 5, dtype: DType::F32 };
    let table = gpu.upload(&HostTensor::from_f32(DType::F32, &[4, 5], &[1.5; 20])).unwrap();
    let ids = gpu.upload(&HostTensor::from_i32(&[3], &[0, 7, 2])).unwrap();
    let mut out = gpu.alloc(DType::F32, &[3, 5]).unwrap();
    // NOTE: the op itself queues the kernel and returns; the kernel records the bad id.
    api::embedding(&gpu, &p, &table, &ids, &mut out).unwrap();
    let e = gpu.sync().unwrap_err();
    assert_eq!(e, Error::IndexOutOfRange { op: "embedding", what: "ids", index: 1, value: 7, lo: 0, hi: 4 });
    gpu.sync().unwrap();
    let row = gpu.download(&out).unwrap().to_f32_vec();
    assert_eq!(&row[5..10], &[0.0; 5], "the bad token's row is zeros");
    assert_eq!(&row[..5], &[1.5; 5]);
}

/// Grouped GEMM shapes the property suite never reaches (it keeps K ≤ 64, N ≤ 48): many k-tiles
/// (the 4-stage ring of the Hopper kernel wraps), several n-tiles with a partial last one,
/// m-tiles split across experts, both weight layouts, SwiGLU, gather and row scale, masked.
#[test]
fn grouped_gemm_matches_the_reference_on_large_shapes() {
    use moekit_ops::{GemmLayout, GroupedGemmProblem, WeightLayout};
    use moekit_testing::props::grouped_gemm::{grouped_gemm_matches_reference, GroupedGemmCase};
    let Some(gpu) = backend_or_skip("grouped_gemm_matches_the_reference_on_large_shapes") else { return };
    // (k, n, nk, swiglu, gather, row_scale, masked)
    let shapes = [
        (520, 600, false, false, false, false, false),
        (520, 600, true, false, false, true, false),
        (264, 2 * 304, false, true, false, false, false),
        (264, 2 * 304, true, true, true, true, false),
        (136, 272, false, false, true, false, false),
        (200, 2 * 136, false, true, false, true, true),
        (1032, 2 * 264, false, true, false, false, false),
        // K not a multiple of 8: the mma.sync kernel on every GPU.
        (130, 200, false, false, true, true, false),
    ];
    for (i, &(k, n, nk, swiglu, gather, row_scale, masked)) in shapes.iter().enumerate() {
        let (experts, valid) = (5, 700);
        let layout =
            if masked { GemmLayout::Masked { capacity: 300 } } else { GemmLayout::Contiguous { rows: valid + 9 } };
        let problem = GroupedGemmProblem {
            layout,
            experts,
            k_dim: k,
            n_dim: n,
            weight_layout: if nk { WeightLayout::NK } else { WeightLayout::KN },
            swiglu,
            row_scale,
            gather_tokens: gather.then_some(400),
            dtype: DType::F32,
        };
        let case = GroupedGemmCase { problem, valid_rows: valid, align: 1, skew: 0.8, seed: 17 + i as u64 };
        for dtype in [DType::BF16, DType::F16] {
            if let Err(e) = grouped_gemm_matches_reference(&gpu, dtype, &case) {
                panic!("shape {i} {dtype}: {e}");
            }
        }
    }
}

/// The fused gate keeps cuBLASLt plans per `(dtype, M, N, K)` and one grow-only logits buffer
/// per backend: routing calls of different shapes and dtypes on one backend, then the first
/// shape again, each match the reference (a cache that mixed shapes would misroute).
#[test]
fn fused_route_of_several_shapes_on_one_backend_matches_the_reference() {
    use moekit_ops::{GroupLimit, RouteProblem, ScoreFn};
    use moekit_testing::props::route::{route_matches_reference, RouteCase};
    let Some(gpu) = backend_or_skip("fused_route_of_several_shapes_on_one_backend_matches_the_reference") else {
        return;
    };
    let case = |t: usize, e: usize, k: usize, h: usize, seed: u64| {
        let mut problem = RouteProblem::new(t, e, k, DType::F32);
        problem.hidden = Some(h);
        problem.renormalize = true;
        RouteCase { problem, skew: 0.5, seed }
    };
    let first = case(300, 64, 6, 200, 1);
    let mut larger = case(1000, 128, 8, 72, 2);
    larger.problem.score = ScoreFn::Sigmoid;
    larger.problem.use_bias = true;
    larger.problem.groups = Some(GroupLimit { n_group: 8, topk_group: 4 });
    let smaller = case(5, 16, 2, 40, 3);
    let runs = [
        (&first, DType::BF16),
        (&larger, DType::BF16),
        (&smaller, DType::F16),
        (&first, DType::BF16),
        (&first, DType::F16),
    ];
    for (i, (c, dtype)) in runs.into_iter().enumerate() {
        if let Err(e) = route_matches_reference(&gpu, dtype, c) {
            panic!("run {i} ({dtype}, T {} E {}): {e}", c.problem.tokens, c.problem.experts);
        }
    }
    gpu.sync().unwrap();
}

/// Attention shapes the property suite never reaches (it keeps sequences under ~40 tokens):
/// several sequences of 300–1100 tokens (many 128-key tiles, ragged ends, Lk > Lq), GQA 4:1,
/// causal and not, windows, softcap and FlashMask column ranges (segments of up to 12 keys, and
/// of up to 400, whose key tiles the Hopper kernel skips or runs unmasked: documents, blocks and
/// causal written as ranges alone; at D 64 the key tiles that some of a block's consumers skip),
/// D 64, 128 and 256, f16 and bf16.
/// On Hopper this runs the warp-specialised wgmma kernel (`attention_sm90ws_*`, 64-key tiles at
/// D 256; the earlier `attention_sm90_*` with `MOEKIT_CUDA_ATTN=sm90`), elsewhere the mma.sync
/// ones.
#[test]
fn attention_matches_the_reference_on_long_sequences() {
    use moekit_ops::{AttentionMask, AttentionProblem, Window};
    use moekit_testing::gen::{self, MaskPattern};
    use moekit_testing::props::attention::{attention_matches_reference, AttentionCase};
    let Some(gpu) = backend_or_skip("attention_matches_the_reference_on_long_sequences") else { return };
    let window = |left, right| Some(Window { left, right });
    // (q lengths, k lengths, D, causal, window, softcap, column-range pattern and longest segment)
    type Pattern = Option<(MaskPattern, usize)>;
    type Shape = (&'static [usize], &'static [usize], usize, bool, Option<Window>, Option<f32>, Pattern);
    let shapes: [Shape; 22] = [
        (&[300, 1100, 517], &[300, 1100, 517], 128, true, None, None, None),
        (&[700, 333], &[1029, 333], 128, false, None, None, None),
        (&[450, 1000], &[600, 1000], 64, true, None, None, None),
        (&[900, 640], &[900, 700], 128, true, window(200, 0), None, None),
        (&[1100, 388], &[1100, 388], 64, false, window(90, 150), None, None),
        (&[777, 301], &[777, 301], 128, true, None, Some(20.0), None),
        (&[1024, 470], &[1024, 470], 64, false, None, None, Some((MaskPattern::Document, 12))),
        (&[640, 1100], &[640, 1100], 128, true, None, None, Some((MaskPattern::Blocks, 12))),
        (&[530, 813], &[530, 813], 128, false, None, Some(30.0), Some((MaskPattern::PrefixLm, 12))),
        (&[1300, 700], &[1300, 700], 128, false, None, None, Some((MaskPattern::Document, 400))),
        (&[1200, 333], &[1200, 333], 64, false, None, None, Some((MaskPattern::Blocks, 400))),
        (&[1000, 555], &[1100, 555], 128, false, None, None, Some((MaskPattern::Causal, 1))),
        (&[900, 1024], &[900, 1024], 128, true, window(300, 0), None, Some((MaskPattern::Document, 300))),
        (&[300, 1100, 517], &[300, 1100, 517], 256, true, None, None, None),
        (&[700, 333], &[1029, 333], 256, false, None, Some(20.0), None),
        (&[900, 640], &[900, 700], 256, true, window(200, 0), None, None),
        (&[1300, 700], &[1300, 700], 256, false, None, None, Some((MaskPattern::Document, 400))),
        (&[640, 1100], &[640, 1100], 256, true, None, None, Some((MaskPattern::Blocks, 12))),
        // D 64 with ranges: blocks and documents in long segments, a prefix-LM (the rows past
        // its prefix: the plan's causal blocks, on the banded kernel), documents with a window.
        (&[1500, 650], &[1500, 650], 64, false, None, None, Some((MaskPattern::Blocks, 150))),
        (&[1400, 900], &[1400, 900], 64, false, None, Some(15.0), Some((MaskPattern::Document, 250))),
        (&[1000, 700], &[1000, 700], 64, false, None, None, Some((MaskPattern::PrefixLm, 300))),
        (&[1100, 600], &[1100, 600], 64, true, window(150, 0), None, Some((MaskPattern::Document, 200))),
    ];
    for (i, &(lq, lk, d, causal, win, softcap, pattern)) in shapes.iter().enumerate() {
        let (cu_q, cu_k) = (gen::cumsum(lq), gen::cumsum(lk));
        let mut rng = gen::rng(71 + i as u64);
        let column_ranges = pattern.map(|(pat, seg)| gen::column_ranges_of(&mut rng, pat, &cu_q, &cu_k, seg));
        let problem = AttentionProblem {
            cu_seqlens_q: cu_q,
            cu_seqlens_k: cu_k,
            heads_q: 8,
            heads_kv: 2,
            head_dim: d,
            scale: 1.3 / (d as f32).sqrt(),
            softcap,
            mask: AttentionMask { causal, window: win, column_ranges },
            dtype: DType::F32,
        };
        problem.validate().unwrap_or_else(|e| panic!("shape {i}: {e}"));
        let case = AttentionCase { problem, pattern: pattern.map(|(pat, _)| pat), seed: 300 + i as u64 };
        for dtype in [DType::BF16, DType::F16] {
            if let Err(e) = attention_matches_reference(&gpu, dtype, &case) {
                panic!("shape {i} {dtype}: {e}");
            }
        }
    }
}

/// Decode batches (few query rows per sequence against long keys), which take the split-KV
/// decode kernels on sm_80+: one to 16 query rows per sequence, GQA groups of 1, 4 and 8, keys
/// from 1 to 9000 (one split, many, a ragged last block), causal and not, a window, softcap and
/// column ranges, D 64 and 128, f16 and bf16, against the reference.
#[test]
fn attention_decode_matches_the_reference() {
    use moekit_ops::{AttentionMask, AttentionProblem, Window};
    use moekit_testing::gen::{self, MaskPattern};
    use moekit_testing::props::attention::{attention_matches_reference, AttentionCase};
    let Some(gpu) = backend_or_skip("attention_decode_matches_the_reference") else { return };
    // (q lengths, k lengths, Hq, Hkv, D, causal, window, softcap, causal as column ranges)
    type Shape = (&'static [usize], &'static [usize], usize, usize, usize, bool, Option<Window>, Option<f32>, bool);
    let shapes: [Shape; 8] = [
        (&[1, 1, 1], &[1, 63, 5000], 32, 8, 128, true, None, None, false),
        (&[1, 1], &[9000, 65], 32, 4, 64, true, None, None, false),
        (&[2, 4, 1], &[700, 3000, 129], 16, 4, 128, true, None, None, false),
        (&[16, 3], &[2048, 4000], 8, 8, 64, true, None, None, false),
        (&[1, 2], &[6000, 1500], 16, 2, 128, false, Some(Window { left: 1000, right: 0 }), None, false),
        (&[1, 1], &[3000, 777], 32, 8, 128, true, None, Some(25.0), false),
        (&[4, 1], &[2500, 900], 8, 2, 64, false, None, None, true),
        (&[1, 0, 1], &[4096, 10, 4096], 32, 8, 128, false, None, None, false),
    ];
    for (i, &(lq, lk, hq, hkv, d, causal, window, softcap, ranges)) in shapes.iter().enumerate() {
        let (cu_q, cu_k) = (gen::cumsum(lq), gen::cumsum(lk));
        let mut rng = gen::rng(90 + i as u64);
        let pattern = ranges.then_some(MaskPattern::Causal);
        let column_ranges = pattern.map(|pat| gen::column_ranges(&mut rng, pat, &cu_q, &cu_k));
        let problem = AttentionProblem {
            cu_seqlens_q: cu_q,
            cu_seqlens_k: cu_k,
            heads_q: hq,
            heads_kv: hkv,
            head_dim: d,
            scale: 1.1 / (d as f32).sqrt(),
            softcap,
            mask: AttentionMask { causal, window, column_ranges },
            dtype: DType::F32,
        };
        problem.validate().unwrap_or_else(|e| panic!("shape {i}: {e}"));
        let case = AttentionCase { problem, pattern, seed: 500 + i as u64 };
        for dtype in [DType::BF16, DType::F16] {
            if let Err(e) = attention_matches_reference(&gpu, dtype, &case) {
                panic!("shape {i} {dtype}: {e}");
            }
        }
    }
}

#[test]
fn queued_timing_runs_the_work_once_per_run_and_times_each_run() {
    let Some(gpu) = backend_or_skip("queued_timing_runs_the_work_once_per_run_and_times_each_run") else { return };
    // 64 MiB of bf16 copied: 134 MB moved, at least ~30 µs at the H200's 4.3 TB/s, so a timing
    // that missed the work (events recorded around nothing) would fall under the bound below.
    let (rows, cols) = (1 << 14, 2048);
    let values: Vec<f32> = (0..rows * cols).map(|i| ((i * 7919) % 1000) as f32 * 0.01 - 5.0).collect();
    let host = HostTensor::from_f32(DType::BF16, &[rows, cols], &values);
    let src = gpu.upload(&host).unwrap();
    let mut dst = gpu.alloc(DType::BF16, &[rows, cols]).unwrap();
    let mut calls = 0;
    let times = gpu
        .time_runs_ms(
            &mut || {
                calls += 1;
                gpu.copy_rows(&src, 0, &mut dst, 0, rows)
            },
            7,
        )
        .unwrap();
    assert_eq!((calls, times.len()), (7, 7));
    for t in &times {
        assert!(t.is_finite() && *t >= 0.02 && *t < 1e3, "{times:?}");
    }
    assert_eq!(gpu.download(&dst).unwrap(), host);
    assert!(gpu.time_runs_ms(&mut || Ok(()), 0).unwrap().is_empty());
    // The work's error comes back as it is.
    let refused = gpu.time_runs_ms(&mut || gpu.copy_rows(&src, rows, &mut dst, 0, 1), 3).unwrap_err();
    assert!(matches!(refused, Error::Invalid { op: "copy_rows", .. }), "{refused:?}");
    gpu.sync().unwrap();
}

/// The release threshold of the device's default memory pool (where the backend's
/// stream-ordered allocations come from).
#[cfg(feature = "cuda")]
fn pool_release_threshold() -> u64 {
    use cudarc::driver::sys;
    let mut dev: sys::CUdevice = 0;
    let mut pool: sys::CUmemoryPool = std::ptr::null_mut();
    let mut threshold = 0u64;
    // SAFETY: out-pointers of the right types; the driver is initialised by the backend.
    unsafe {
        sys::cuDeviceGet(&mut dev, 0).result().unwrap();
        sys::cuDeviceGetDefaultMemPool(&mut pool, dev).result().unwrap();
        sys::cuMemPoolGetAttribute(
            pool,
            sys::CUmemPool_attribute::CU_MEMPOOL_ATTR_RELEASE_THRESHOLD,
            (&mut threshold as *mut u64).cast(),
        )
        .result()
        .unwrap();
    }
    threshold
}

#[cfg(feature = "cuda")]
#[test]
fn freed_memory_stays_in_the_pool_across_syncs() {
    let Some(gpu) = backend_or_skip("freed_memory_stays_in_the_pool_across_syncs") else { return };
    if std::env::var("MOEKIT_CUDA_POOL").as_deref() == Ok("release") {
        let _ = writeln!(
            std::io::stderr(),
            "SKIPPED freed_memory_stays_in_the_pool_across_syncs: MOEKIT_CUDA_POOL=release"
        );
        return;
    }
    assert_eq!(pool_release_threshold(), u64::MAX);
    // Memory freed and allocated again across a sync still round-trips.
    for _ in 0..2 {
        let host = HostTensor::from_f32(DType::F32, &[1 << 16], &vec![1.5; 1 << 16]);
        let buf = gpu.upload(&host).unwrap();
        gpu.sync().unwrap();
        assert_eq!(gpu.download(&buf).unwrap(), host);
    }
}
