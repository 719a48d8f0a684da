//! The cubecl backend on its wgpu runtime (lavapipe in CI) against the reference: small valid
//! problems of every op family, f32 and f16, through the property bodies of `moekit-testing`
//! (floats within `moekit_ops::tolerance`, integers exactly). cubecl compiles a kernel per
//! shape and configuration, so shapes come from a small fixed set per op (kernels are cached
//! after the first use) while the flags, the data seed and the dtype come from the input.
//!
//! Without a wgpu adapter every input prints `SKIPPED` once and returns; with
//! `MOEKIT_NO_SKIP=1` a missing adapter is a crash.

#![no_main]

#[path = "common/mod.rs"]
mod common;

use common::Gen;
use libfuzzer_sys::fuzz_target;
use moekit_cubecl::{CubeBackend, WgpuRuntime};
use moekit_ops::{
    AttentionMask, AttentionProblem, BiasUpdateProblem, CombineProblem, DType, EmbeddingProblem, GemmLayout,
    GemmProblem, GroupLimit, GroupedGemmProblem, MoeLayerProblem, PermuteProblem, RmsNormProblem, RotaryPositions,
    RotaryProblem, RouteProblem, ScoreFn, SwigluProblem, WeightLayout, Window,
};
use moekit_testing::gen::{self, MaskPattern};
use moekit_testing::props::attention::{attention_invariants, attention_matches_reference, AttentionCase};
use moekit_testing::props::glue::{
    copy_rows_exact, embedding_matches_reference, gemm_matches_reference, reshape_keeps_data,
    rms_norm_matches_reference, rotary_matches_reference, swiglu_matches_reference, CopyRowsCase, GlueCase,
    ReshapeCase,
};
use moekit_testing::props::grouped_gemm::{grouped_gemm_matches_reference, GroupedGemmCase};
use moekit_testing::props::moe::{moe_layer_matches_reference, MoeCase};
use moekit_testing::props::permute::{
    combine_matches_reference, permute_combine_round_trip, permute_invariants, permute_matches_reference, CombineCase,
    PermuteCase,
};
use moekit_testing::props::route::{
    route_invariants, route_matches_reference, update_bias_matches_reference, BiasCase, RouteCase,
};

type Wgpu = CubeBackend<WgpuRuntime>;

thread_local! {
    /// The backend, made once per process (`None`: no adapter, said once).
    static BACKEND: &'static Option<Wgpu> = Box::leak(Box::new(make()));
}

fn make() -> Option<Wgpu> {
    match Wgpu::wgpu() {
        Ok(b) => Some(b),
        Err(e) => {
            assert!(
                std::env::var_os("MOEKIT_NO_SKIP").is_none_or(|v| v.is_empty() || v == "0"),
                "cubecl_wgpu: no wgpu backend and MOEKIT_NO_SKIP is set: {e}"
            );
            eprintln!("SKIPPED: cubecl_wgpu: no wgpu backend: {e}");
            None
        }
    }
}

/// One of `xs`.
fn pick<T: Copy>(g: &mut Gen, xs: &[T]) -> T {
    xs[g.int(0, xs.len() - 1)]
}

fn route_case(g: &mut Gen) -> RouteCase {
    let (t, e, k) = pick(g, &[(5, 8, 2), (16, 16, 4), (3, 6, 1)]);
    let seed = g.seed();
    let mut p = RouteProblem::new(t, e, k, DType::F32);
    p.score = if g.bool() { ScoreFn::Sigmoid } else { ScoreFn::Softmax };
    p.use_bias = g.bool();
    p.renormalize = g.bool();
    p.scaling = pick(g, &[1.0, 2.5]);
    p.hidden = g.one_in(3).then_some(8);
    if g.one_in(3) {
        p.expert_mask = Some(gen::expert_mask(&mut gen::rng(seed ^ 1), e, k));
    }
    if g.one_in(3) && e % 2 == 0 {
        let n_group = pick(g, &[2, 4]).min(e / 2);
        p.groups = Some(GroupLimit { n_group, topk_group: g.int(1, n_group) });
    }
    moekit_testing::props::route::lower_k_to_reachable(&mut p);
    RouteCase { problem: p, skew: pick(g, &[0.0, 1.2]), seed }
}

fn permute_case(g: &mut Gen) -> PermuteCase {
    let (tokens, hidden, experts, k, align) = pick(g, &[(6, 8, 4, 2, 1), (10, 12, 8, 2, 4), (0, 8, 4, 2, 1)]);
    let problem = PermuteProblem { tokens, hidden, experts, k, align, dtype: DType::F32 };
    PermuteCase { problem, empty: pick(g, &[0.0, 0.5]), skew: pick(g, &[0.0, 1.2]), seed: g.seed() }
}

fn grouped_gemm_case(g: &mut Gen) -> GroupedGemmCase {
    let (e, k_dim, n) = pick(g, &[(4, 16, 8), (3, 12, 6)]);
    let (masked, swiglu) = (g.one_in(3), g.bool());
    let valid_rows: usize = pick(g, &[0, 7, 20]);
    let align = pick(g, &[1, 4]);
    let layout = if masked {
        GemmLayout::Masked { capacity: pick(g, &[3, 5]) }
    } else {
        GemmLayout::Contiguous { rows: valid_rows.div_ceil(align) * align + e * (align - 1) + pick(g, &[0, 2]) }
    };
    let problem = GroupedGemmProblem {
        layout,
        experts: e,
        k_dim,
        n_dim: if swiglu { 2 * n } else { n },
        weight_layout: if g.bool() { WeightLayout::NK } else { WeightLayout::KN },
        swiglu,
        row_scale: g.bool(),
        gather_tokens: (!masked && g.bool()).then_some(6),
        dtype: DType::F32,
    };
    GroupedGemmCase { problem, valid_rows, align, skew: pick(g, &[0.0, 1.2]), seed: g.seed() }
}

fn attention_case(g: &mut Gen) -> AttentionCase {
    let seed = g.seed();
    let mut rng = gen::rng(seed ^ 0xa77e);
    let lq: Vec<usize> = (0..pick(g, &[1, 2])).map(|_| pick(g, &[1, 3, 5, 0])).collect();
    let (hkv, group) = (pick(g, &[1, 2]), pick(g, &[1, 2]));
    let kind = g.int(0, 3);
    let pattern = pick(g, &[MaskPattern::Causal, MaskPattern::Document, MaskPattern::PrefixLm, MaskPattern::Blocks]);
    // Keys as long as the queries (column-range patterns other than causal need that), or a
    // few more (bottom-right aligned causal and windows keep the diagonal inside every row).
    let same = kind == 3 && pattern != MaskPattern::Causal;
    let lk: Vec<usize> = lq.iter().map(|&l| if same || g.bool() { l } else { l + 2 }).collect();
    let (cu_q, cu_k) = (gen::cumsum(&lq), gen::cumsum(&lk));
    let mut mask = AttentionMask::none();
    let mut pat = None;
    match kind {
        0 => {}
        1 => mask.causal = true,
        2 => {
            mask.causal = g.bool();
            mask.window = Some(Window { left: pick(g, &[0, 2]), right: pick(g, &[0, 1]) });
        }
        _ => {
            mask.column_ranges = Some(gen::column_ranges(&mut rng, pattern, &cu_q, &cu_k));
            pat = Some(pattern);
        }
    }
    let problem = AttentionProblem {
        cu_seqlens_q: cu_q,
        cu_seqlens_k: cu_k,
        heads_q: hkv * group,
        heads_kv: hkv,
        head_dim: 64,
        scale: 0.125,
        softcap: g.one_in(3).then_some(5.0),
        mask,
        dtype: DType::F32,
    };
    AttentionCase { problem, pattern: pat, seed }
}

fn moe_case(g: &mut Gen) -> MoeCase {
    let (t, h, e, k, inter) = pick(g, &[(4, 8, 4, 2, 4), (6, 16, 8, 2, 8)]);
    let seed = g.seed();
    let mut route = RouteProblem::new(t, e, k, DType::F32);
    route.hidden = Some(h);
    route.score = if g.bool() { ScoreFn::Sigmoid } else { ScoreFn::Softmax };
    route.renormalize = g.bool();
    if g.one_in(3) {
        route.expert_mask = Some(gen::expert_mask(&mut gen::rng(seed ^ 0x3a5c), e, k));
    }
    MoeCase { problem: MoeLayerProblem { route, inter, add: g.bool() }, seed }
}

fn glue<P>(g: &mut Gen, problem: P) -> GlueCase<P> {
    GlueCase { problem, seed: g.seed() }
}

/// Runs one property on `b` in `dtype` and panics with its report and the case on failure.
macro_rules! prop {
    ($b:expr, $dt:expr, $name:literal, $body:path, $case:expr) => {{
        let case = $case;
        if let Err(msg) = $body($b, $dt, &case) {
            panic!("cubecl_wgpu {} ({}): {msg}\ncase: {case:?}", $name, $dt);
        }
    }};
}

fn one(b: &Wgpu, g: &mut Gen) {
    let dt = if g.bool() { DType::F16 } else { DType::F32 };
    match g.byte() % 18 {
        0 => prop!(b, dt, "route", route_matches_reference, route_case(g)),
        1 => prop!(b, dt, "route_invariants", route_invariants, route_case(g)),
        2 => {
            let e = pick(g, &[8, 16]);
            let seed = g.seed();
            let expert_mask = g.bool().then(|| gen::expert_mask(&mut gen::rng(seed), e, 1));
            let problem = BiasUpdateProblem { experts: e, speed: pick(g, &[0.0, 1e-3, 0.05]), expert_mask };
            prop!(b, DType::F32, "update_bias", update_bias_matches_reference, BiasCase { problem, seed })
        }
        3 => prop!(b, dt, "permute", permute_matches_reference, permute_case(g)),
        4 => prop!(b, dt, "permute_invariants", permute_invariants, permute_case(g)),
        5 => prop!(b, dt, "permute_combine_round_trip", permute_combine_round_trip, permute_case(g)),
        6 => {
            let (tokens, hidden, k, rows) = pick(g, &[(6, 8, 2, 16), (3, 12, 4, 12), (0, 8, 2, 4)]);
            let problem = CombineProblem { tokens, hidden, k, rows, add: g.bool(), dtype: DType::F32 };
            prop!(b, dt, "unpermute_combine", combine_matches_reference, CombineCase { problem, seed: g.seed() })
        }
        7 => prop!(b, dt, "grouped_gemm", grouped_gemm_matches_reference, grouped_gemm_case(g)),
        8 => prop!(b, dt, "attention", attention_matches_reference, attention_case(g)),
        9 => prop!(b, dt, "attention_invariants", attention_invariants, attention_case(g)),
        10 => {
            let (rows, hidden) = pick(g, &[(3, 16), (5, 24)]);
            let p = RmsNormProblem { rows, hidden, eps: 1e-5, residual: g.bool(), dtype: DType::F32 };
            prop!(b, dt, "rms_norm", rms_norm_matches_reference, glue(g, p))
        }
        11 => {
            let (tokens, heads, head_dim) = pick(g, &[(4, 2, 8), (3, 1, 16)]);
            let positions = if g.bool() {
                let half = head_dim / 2;
                let a = g.int(0, half);
                let c = g.int(0, half - a);
                RotaryPositions::ThreeD { sections: [a, c, half - a - c] }
            } else {
                RotaryPositions::OneD
            };
            let p = RotaryProblem { tokens, heads, head_dim, theta: 10_000.0, positions, dtype: DType::F32 };
            prop!(b, dt, "rotary", rotary_matches_reference, glue(g, p))
        }
        12 => {
            let (rows, inter) = pick(g, &[(3, 8), (5, 12)]);
            let p = SwigluProblem { rows, inter, dtype: DType::F32 };
            prop!(b, dt, "swiglu", swiglu_matches_reference, glue(g, p))
        }
        13 => {
            let (tokens, vocab, hidden) = pick(g, &[(5, 10, 8), (0, 4, 8)]);
            let p = EmbeddingProblem { tokens, vocab, hidden, dtype: DType::F32 };
            prop!(b, dt, "embedding", embedding_matches_reference, glue(g, p))
        }
        14 => {
            let (m, k, n) = pick(g, &[(4, 8, 6), (0, 8, 4), (7, 5, 9)]);
            let p = GemmProblem { m, k, n, b_transposed: g.bool(), dtype: DType::F32 };
            prop!(b, dt, "gemm", gemm_matches_reference, glue(g, p))
        }
        15 => {
            let c = ReshapeCase { tokens: 4, heads: 2, head_dim: 8, seed: g.seed() };
            prop!(b, dt, "reshape", reshape_keeps_data, c)
        }
        16 => {
            let (src_rows, dst_rows) = pick(g, &[(6, 8), (3, 3)]);
            let rows = g.int(0, src_rows.min(dst_rows));
            let (src_row, dst_row) = (g.int(0, src_rows - rows), g.int(0, dst_rows - rows));
            let c = CopyRowsCase { src_rows, dst_rows, src_row, dst_row, rows, heads: 2, head_dim: 4, seed: g.seed() };
            prop!(b, dt, "copy_rows", copy_rows_exact, c)
        }
        _ => prop!(b, dt, "moe_layer", moe_layer_matches_reference, moe_case(g)),
    }
}

fuzz_target!(|data: &[u8]| {
    BACKEND.with(|b| {
        if let Some(b) = b.as_ref() {
            // NOTE: every input is a valid problem here; the mode byte is only consumed.
            let mut g = Gen::new(data);
            one(b, &mut g);
        }
    });
});
