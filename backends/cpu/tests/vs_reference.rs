//! Smoke test: one MoE layer forward on random data, CPU backend against the f64 reference.
//! (The property suite over every op lives in `moekit-testing`.)

use moekit_cpu::CpuBackend;
use moekit_ops::tolerance::{compare, Tolerance};
use moekit_ops::{api, DType, HostTensor, MoeLayerIo, MoeLayerProblem, RouteProblem, ScoreFn};
use moekit_reference::ReferenceBackend;

/// Deterministic values in `[-scale, scale)` (a 64-bit LCG; no dependency needed).
fn random(seed: u64, n: usize, scale: f32) -> Vec<f32> {
    let mut s = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
    (0..n)
        .map(|_| {
            s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            ((s >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0) * scale
        })
        .collect()
}

fn moe_layer<B: moekit_ops::Backend<Buffer = HostTensor>>(b: &B, p: &MoeLayerProblem) -> HostTensor {
    let r = &p.route;
    let (t, h, e, i, dt) = (r.tokens, p.hidden(), r.experts, p.inter, r.dtype);
    let x = HostTensor::from_f32(dt, &[t, h], &random(1, t * h, 1.0));
    let gate = HostTensor::from_f32(dt, &[h, e], &random(2, h * e, 0.5));
    let bias = HostTensor::from_f32(DType::F32, &[e], &random(3, e, 0.05));
    let w_up = HostTensor::from_f32(dt, &[e, h, 2 * i], &random(4, e * h * 2 * i, 0.2));
    let w_down = HostTensor::from_f32(dt, &[e, i, h], &random(5, e * i * h, 0.2));
    let add = HostTensor::from_f32(dt, &[t, h], &random(6, t * h, 1.0));
    let mut out = b.alloc(dt, &[t, h]).unwrap();
    let io = MoeLayerIo {
        x: &x,
        gate: &gate,
        bias: Some(&bias),
        w_up: &w_up,
        w_down: &w_down,
        add: Some(&add),
        out: &mut out,
        routed: None,
    };
    api::moe_layer(b, p, io).unwrap();
    out
}

#[test]
fn moe_layer_matches_reference() {
    for dtype in [DType::F32, DType::BF16] {
        let mut route = RouteProblem::new(48, 16, 4, dtype);
        route.hidden = Some(64);
        route.score = ScoreFn::Sigmoid;
        route.use_bias = true;
        route.renormalize = true;
        route.expert_mask = Some((0..16).map(|e| e != 5).collect());
        let p = MoeLayerProblem { route, inter: 32, add: true };
        let cpu = moe_layer(&CpuBackend::new(), &p).to_f64_vec();
        let reference = moe_layer(&ReferenceBackend, &p).to_f64_vec();
        let report = compare("moe_layer", &reference, &cpu, Tolerance::chained(dtype, 64, 4));
        assert!(report.ok(), "{dtype}: {report}");
    }
}
