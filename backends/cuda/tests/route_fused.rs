//! The fused Hopper gate + routing kernel (issue #7: `route_fused_r*`, kernels/route_sm90.cu)
//! on the GPU, at the shapes that take it: 8 to 256 experts in multiples of 8 (both GEMM tile
//! widths and every lane count of the routing), hidden sizes that end inside a pipeline stage,
//! one token up to three thousand, and the split hidden dimension that few token tiles take
//! (one token over 28 splits, 300 tokens over 7168). Every option (softmax or sigmoid, bias,
//! masks, groups, renormalisation, scaling), in bf16 and f16, agrees with the reference and keeps
//! the routing invariants, and each call queues exactly the one fused kernel.
//!
//! The path is opt-in (`CudaBackend::set_fused_routing`, which the test turns on). Off Hopper the
//! same cases check the two-kernel path and the test says the fused part was skipped. Without
//! the `cuda` feature or a GPU it prints `SKIPPED` with the reason.

use moekit_cuda::CudaBackend;
use moekit_ops::{DType, GroupLimit, RouteProblem, ScoreFn};
use moekit_testing::props::route::{lower_k_to_reachable, route_invariants, route_matches_reference, RouteCase};
use moekit_testing::suite::{backend_or_skip, skip};

/// Cases `(tokens, hidden, experts, k)` × five option sets each.
fn cases() -> Vec<RouteCase> {
    let shapes = [
        (1usize, 7168usize, 256usize, 8usize),
        (5, 200, 160, 5),
        (130, 2048, 128, 8),
        (300, 7168, 256, 8),
        (1000, 520, 64, 6),
        (3000, 1024, 8, 2),
        (257, 64, 248, 8),
    ];
    let mut cases = Vec::new();
    for (i, &(tokens, hidden, experts, k)) in shapes.iter().enumerate() {
        for variant in 0..5u64 {
            let mut p = RouteProblem::new(tokens, experts, k, DType::F32);
            let sigmoid = variant % 2 == 1;
            p.score = if sigmoid { ScoreFn::Sigmoid } else { ScoreFn::Softmax };
            p.renormalize = variant != 0;
            p.scaling = if variant == 3 { 2.5 } else { 1.0 };
            p.hidden = Some(hidden);
            if variant >= 2 {
                // Every third expert of the first half masked out.
                p.expert_mask = Some((0..experts).map(|e| e >= experts / 2 || e % 3 != 0).collect());
            }
            // NOTE: no bias with groups, as in the cubecl suite (route_permute_scale.rs): the
            // quantised test logits make exact f64 ties between group scores common, and an f32
            // sum of score + bias can break such a tie either way.
            let n_group = [8usize, 4, 2].into_iter().find(|g| experts % g == 0 && experts / g >= 2);
            match n_group {
                Some(n_group) if variant == 1 || variant == 4 => {
                    p.groups = Some(GroupLimit { n_group, topk_group: n_group / 2 });
                }
                _ => p.use_bias = sigmoid,
            }
            lower_k_to_reachable(&mut p);
            cases.push(RouteCase { problem: p, skew: 1.1, seed: 0xf05e + 31 * i as u64 + variant });
        }
    }
    cases
}

/// The kernels a `route` call of `p` queues on `gpu`.
#[cfg(feature = "cuda")]
fn kernels(gpu: &CudaBackend, p: &RouteProblem) -> Vec<String> {
    gpu.route_kernels(&p.validate().expect("valid case"))
}

#[cfg(not(feature = "cuda"))]
fn kernels(_: &CudaBackend, _: &RouteProblem) -> Vec<String> {
    unreachable!("no CudaBackend exists without the `cuda` feature")
}

/// Turn the fused path on for `gpu`; why it still does not take it, if it does not.
#[cfg(feature = "cuda")]
fn no_fused(gpu: &CudaBackend) -> Option<String> {
    gpu.set_fused_routing(true);
    (gpu.arch() != "sm_90a").then(|| format!("the fused routing kernel is Hopper-only, this is {}", gpu.arch()))
}

#[cfg(not(feature = "cuda"))]
fn no_fused(_: &CudaBackend) -> Option<String> {
    unreachable!("no CudaBackend exists without the `cuda` feature")
}

#[test]
fn fused_gate_routing_matches_the_reference() {
    let test = "fused_gate_routing_matches_the_reference";
    let Some(gpu) = backend_or_skip(test, CudaBackend::new(0)) else { return };
    let skipped = no_fused(&gpu);
    if let Some(reason) = &skipped {
        skip(&format!("{test} (the fused kernel)"), reason);
    }
    let all = cases();
    for (n, case) in all.iter().enumerate() {
        let dtype = if n % 2 == 0 { DType::BF16 } else { DType::F16 };
        let p = RouteProblem { dtype, ..case.problem.clone() };
        let queued = kernels(&gpu, &p);
        let fused = queued.len() == 1 && queued[0].starts_with("route_fused_r");
        assert_eq!(fused, skipped.is_none(), "case {n} {p:?}: queues {queued:?}");
        let what = || format!("case {n} ({dtype:?}, T {}, H {:?}, E {}, k {})", p.tokens, p.hidden, p.experts, p.k);
        if let Err(e) = route_matches_reference(&gpu, dtype, case) {
            panic!("{}: {e}", what());
        }
        if let Err(e) = route_invariants(&gpu, dtype, case) {
            panic!("{} invariants: {e}", what());
        }
    }
    eprintln!("{} fused routing cases checked", all.len());
}

#[test]
fn fused_routing_replays_the_same_result() {
    // The split hidden dimension counts arrivals per tile in device memory; a second call on the
    // same problem (the counters zeroed again) routes exactly as the first.
    let test = "fused_routing_replays_the_same_result";
    let Some(gpu) = backend_or_skip(test, CudaBackend::new(0)) else { return };
    let _ = no_fused(&gpu);
    let case = &cases()[3 * 5 + 1];
    for _ in 0..3 {
        if let Err(e) = route_matches_reference(&gpu, DType::BF16, case) {
            panic!("{test}: {e}");
        }
    }
}
