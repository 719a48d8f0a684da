//! The op workload the fault tests of every GPU backend cycle through (`tests/faults*.rs` of the
//! CUDA and cubecl backends): one small fixed-shape instance of each op, so that every round of
//! the memory test hits the same compiled kernels and cached workspaces, and each call checks
//! its op against the reference.

use crate::compare::Check;
use crate::props::{attention, glue, grouped_gemm, moe, permute, route};
use moekit_ops::{Backend, DType, MoeLayerProblem, RouteProblem};

/// The ops of [`Workload`] in the order [`run_op`] numbers them.
pub const OPS: [&str; 7] = ["route", "permute", "gemm", "combine", "attention", "rms_norm", "moe"];

/// One instance of each op the memory test cycles through (small, fixed shapes, so the set
/// of compiled kernels and cached workspaces is the same on every round).
#[derive(Debug, Clone)]
pub struct Workload {
    /// The route case.
    pub route: route::RouteCase,
    /// The permute case.
    pub permute: permute::PermuteCase,
    /// The grouped GEMM case.
    pub gemm: grouped_gemm::GroupedGemmCase,
    /// The weighted combine case.
    pub combine: permute::CombineCase,
    /// The attention case.
    pub attention: attention::AttentionCase,
    /// The RMSNorm case.
    pub rms_norm: glue::GlueCase<moekit_ops::RmsNormProblem>,
    /// The MoE layer case.
    pub moe: moe::MoeCase,
}

/// The workload of data seed `seed` (the problems are fixed; the dtype is the caller's).
pub fn workload(seed: u64) -> Workload {
    use moekit_ops::{
        AttentionMask, AttentionProblem, CombineProblem, GroupedGemmProblem, PermuteProblem, RmsNormProblem,
    };
    let f = DType::F32; // replaced by the test's dtype
    let mut r = RouteProblem::new(64, 32, 4, f);
    r.hidden = Some(48);
    let mut moe_route = RouteProblem::new(24, 8, 2, f);
    moe_route.hidden = Some(40);
    Workload {
        route: route::RouteCase { problem: r, skew: 1.0, seed },
        permute: permute::PermuteCase {
            problem: PermuteProblem { tokens: 64, hidden: 96, experts: 16, k: 4, align: 1, dtype: f },
            empty: 0.25,
            skew: 1.0,
            seed,
        },
        gemm: grouped_gemm::GroupedGemmCase {
            problem: GroupedGemmProblem::contiguous(128, 8, 64, 96, f),
            valid_rows: 120,
            align: 1,
            skew: 1.0,
            seed,
        },
        combine: permute::CombineCase {
            problem: CombineProblem { tokens: 64, hidden: 96, k: 4, rows: 256, add: true, dtype: f },
            seed,
        },
        attention: attention::AttentionCase {
            problem: AttentionProblem {
                cu_seqlens_q: vec![0, 40, 96],
                cu_seqlens_k: vec![0, 40, 96],
                heads_q: 4,
                heads_kv: 2,
                head_dim: 64,
                scale: 0.125,
                softcap: None,
                mask: AttentionMask::causal(),
                dtype: f,
            },
            pattern: None,
            seed,
        },
        rms_norm: glue::GlueCase {
            problem: RmsNormProblem { rows: 64, hidden: 128, eps: 1e-5, residual: true, dtype: f },
            seed,
        },
        moe: moe::MoeCase { problem: MoeLayerProblem { route: moe_route, inter: 24, add: true }, seed },
    }
}

/// Runs op `op` (an index into [`OPS`]) of `w` on `b` in `dtype` with fresh buffers (upload,
/// run, download, drop) and compares it with the reference.
///
/// # Errors
/// The property's mismatch or op error, as text.
///
/// # Panics
/// For `op >= OPS.len()`.
pub fn run_op<B: Backend>(b: &B, dtype: DType, w: &Workload, op: usize) -> Check {
    match op {
        0 => route::route_matches_reference(b, dtype, &w.route),
        1 => permute::permute_matches_reference(b, dtype, &w.permute),
        2 => grouped_gemm::grouped_gemm_matches_reference(b, dtype, &w.gemm),
        3 => permute::combine_matches_reference(b, dtype, &w.combine),
        4 => attention::attention_matches_reference(b, dtype, &w.attention),
        5 => glue::rms_norm_matches_reference(b, dtype, &w.rms_norm),
        6 => moe::moe_layer_matches_reference(b, dtype, &w.moe),
        _ => panic!("no fault-workload op {op} (0..{})", OPS.len()),
    }
}
