//! The MoE layer forward (default composition or a backend's fused kernel) against the
//! reference, with the chained tolerance of its five hops.

use crate::compare::{close, ctx, exact, Check};
use crate::exec::{self, MoeBufs};
use crate::gen;
use crate::strategies::{dim, few_experts, seed, tokens};
use moekit_ops::tolerance::Tolerance;
use moekit_ops::{Backend, DType, MoeLayerProblem, RouteProblem, ScoreFn};
use moekit_reference::ReferenceBackend;
use proptest::prelude::*;

/// One MoE layer case (the dtype is replaced by the test's).
#[derive(Clone, Debug)]
pub struct MoeCase {
    /// The problem.
    pub problem: MoeLayerProblem,
    /// Data seed.
    pub seed: u64,
}

/// MoE layer cases: T 0..=24, H up to 40, E up to 24, k up to 4, I up to 24, softmax or
/// sigmoid, renormalised or not, with or without `add` and a mask.
pub fn moe_cases() -> impl Strategy<Value = MoeCase> {
    let flags = (any::<bool>(), any::<bool>(), any::<bool>(), any::<bool>());
    (tokens(24), dim(40), few_experts(), 1..=4usize, dim(24), flags, seed()).prop_map(
        |(t, h, e, k, inter, (sigmoid, renormalize, add, masked), seed)| {
            let mut route = RouteProblem::new(t, e, k.min(e), DType::F32);
            route.hidden = Some(h);
            route.score = if sigmoid { ScoreFn::Sigmoid } else { ScoreFn::Softmax };
            route.renormalize = renormalize;
            if masked {
                route.expert_mask = Some(gen::expert_mask(&mut gen::rng(seed ^ 0x3a5c), e, route.k));
            }
            MoeCase { problem: MoeLayerProblem { route, inter, add }, seed }
        },
    )
}

/// The MoE layer on `b` equals the reference within [`Tolerance::chained`] over its hops.
///
/// # Errors
/// A mismatch report.
pub fn moe_layer_matches_reference<B: Backend>(b: &B, dtype: DType, c: &MoeCase) -> Check {
    let mut p = c.problem.clone();
    p.route.dtype = dtype;
    let r = &p.route;
    let (t, h, e, i) = (r.tokens, p.hidden(), r.experts, p.inter);
    let mut rng = gen::rng(c.seed);
    // NOTE: x and the gate on a 1/8 grid make the fused gate GEMM exact in f32, so the
    // backend and the reference choose the same experts (near-ties would swap whole experts
    // and no tolerance could absorb that).
    let x = MoeBufs {
        x: gen::tensor(dtype, &[t, h], &gen::grid(&mut rng, t * h, 0.125, 1.0)),
        gate: gen::tensor(dtype, &[h, e], &gen::grid(&mut rng, h * e, 0.125, 0.5)),
        bias: None,
        w_up: gen::normal_tensor(&mut rng, dtype, &[e, h, 2 * i], 1.0 / (h as f32).sqrt()),
        w_down: gen::normal_tensor(&mut rng, dtype, &[e, i, h], 1.0 / (i as f32).sqrt()),
        add: p.add.then(|| gen::normal_tensor(&mut rng, dtype, &[t, h], 1.0)),
        out: gen::poison(dtype, &[t, h]),
    };
    let (want, want_ids) = exec::moe_layer_routed(&ReferenceBackend, &p, &x).map_err(ctx("reference moe_layer"))?;
    let (got, got_ids) = exec::moe_layer_routed(b, &p, &x).map_err(ctx("moe_layer"))?;
    exact("routed", &want_ids, &got_ids)?;
    close("out", &want, &got, Tolerance::chained(dtype, h.max(i), 5), dtype)
}
