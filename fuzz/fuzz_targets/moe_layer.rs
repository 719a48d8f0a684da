//! `moe_layer` (route with the fused gate, permute, grouped GEMM up with SwiGLU, down, combine;
//! bias, mask, groups, `add`, the optional `routed` ids): arbitrary problems and buffers
//! through `moekit_ops::api` on the reference and the CPU backend; same `Result`; `routed`
//! equal and `out` within the chained tolerance on valid problems with tame data (unless the
//! routing met a near-tie).

#![no_main]

#[path = "common/mod.rs"]
mod common;

use common::{check, max_abs, same_result, Cmp, Gen};
use libfuzzer_sys::fuzz_target;
use moekit_cpu::CpuBackend;
use moekit_ops::tolerance::Tolerance;
use moekit_ops::{api, Backend, DType, GroupLimit, HostTensor, MoeLayerIo, MoeLayerProblem, RouteProblem, ScoreFn};
use moekit_reference::ReferenceBackend;
use moekit_testing::compare::{near, SCORE_REL};
use moekit_testing::props::Scores;

#[derive(Debug)]
struct Case {
    p: MoeLayerProblem,
    x: HostTensor,
    gate: HostTensor,
    bias: Option<HostTensor>,
    w_up: HostTensor,
    w_down: HostTensor,
    add: Option<HostTensor>,
    out: HostTensor,
    routed: Option<HostTensor>,
}

fn run<B: Backend<Buffer = HostTensor>>(b: &B, c: &Case) -> (moekit_ops::Result<()>, HostTensor, Option<HostTensor>) {
    let mut out = c.out.clone();
    let mut routed = c.routed.clone();
    let io = MoeLayerIo {
        x: &c.x,
        gate: &c.gate,
        bias: c.bias.as_ref(),
        w_up: &c.w_up,
        w_down: &c.w_down,
        add: c.add.as_ref(),
        out: &mut out,
        routed: routed.as_mut(),
    };
    (api::moe_layer(b, &c.p, io), out, routed)
}

fn case(g: &mut Gen) -> Case {
    let t = g.size(0, 4);
    let e = g.size(1, 6);
    let k = g.size(1, e.min(3));
    let mut route = RouteProblem::new(t, e, k, g.dtype());
    route.hidden = if g.valid || g.byte() % 4 != 0 { Some(g.size(1, 6)) } else { None };
    route.score = if g.bool() { ScoreFn::Sigmoid } else { ScoreFn::Softmax };
    route.use_bias = g.one_in(3);
    route.renormalize = g.bool();
    route.scaling = g.scalar(&[1.0, 2.5]);
    if g.one_in(3) {
        let len = if g.valid { e } else { g.int(0, 8) };
        let mut m: Vec<bool> = (0..len.min(16)).map(|_| !g.one_in(3)).collect();
        if let Some(first) = m.first_mut() {
            *first = true;
        }
        route.expert_mask = Some(m);
    }
    if g.one_in(4) && e % 2 == 0 {
        route.groups = Some(GroupLimit { n_group: 2, topk_group: if g.valid { g.int(1, 2) } else { g.size(0, 3) } });
    }
    let mut p = MoeLayerProblem { route, inter: g.size(1, 4), add: g.bool() };
    if g.valid {
        while p.route.validate().is_err() {
            if p.route.k > 1 {
                p.route.k -= 1;
            } else if p.route.groups.is_some() {
                p.route.groups = None;
            } else {
                p.route.expert_mask = None;
            }
        }
    }
    let (h, i, dt, k) = (p.route.hidden.unwrap_or(0), p.inter, p.route.dtype, p.route.k);
    let i2 = i.saturating_mul(2);
    // NOTE: x and the gate on a 1/8 grid make the fused gate GEMM exact in f32.
    let x = g.input(dt, &[t, h], 0.125, 1.0);
    let gate = g.input(dt, &[h, e], 0.125, 0.5);
    let bias = g.present(p.route.use_bias, |g| g.input(DType::F32, &[e], 0.25, 1.0));
    let w_up = g.input(dt, &[e, h, i2], 0.125, 0.5);
    let w_down = g.input(dt, &[e, i, h], 0.125, 0.5);
    let add = g.present(p.add, |g| g.input(dt, &[t, h], 0.125, 2.0));
    let out = g.output(dt, &[t, h]);
    let routed = g.bool().then(|| g.output(DType::I32, &[t, k]));
    Case { p, x, gate, bias, w_up, w_down, add, out, routed }
}

fuzz_target!(|data: &[u8]| {
    let mut g = Gen::new(data);
    let c = case(&mut g);
    let (rw, want, want_ids) = run(&ReferenceBackend, &c);
    let (rg, got, got_ids) = run(&CpuBackend::new(), &c);
    same_result("moe_layer", &rw, &rg, g.may_overflow(), &c);
    if rw.is_err() || !g.tame {
        return;
    }
    let r = &c.p.route;
    // Only a near-tie of the reference's selection scores at the k-th place may route
    // differently (and then no tolerance covers `out`): such inputs compare nothing more.
    let s = Scores::new(r, &c.x, Some(&c.gate), c.bias.as_ref());
    let fragile = (0..r.tokens).any(|t| {
        let mut sel: Vec<f64> =
            (0..r.experts).filter(|&x| s.in_groups[t * r.experts + x]).map(|x| s.sel(t, x)).collect();
        sel.sort_by(|a, b| b.total_cmp(a));
        s.ambiguous[t] || sel.len() > r.k && near(sel[r.k - 1], sel[r.k], SCORE_REL)
    });
    if fragile {
        return;
    }
    if let (Some(w), Some(gi)) = (&want_ids, &got_ids) {
        check("routed", w, gi, Cmp::Exact);
    }
    let h = c.p.route.hidden.unwrap_or(0);
    let rel = Tolerance::chained(r.dtype, h.max(c.p.inter), 5).times(4.0).rel;
    // NOTE: the error scales with the summed terms: x·w_up over H, SwiGLU, then ·w_down over I,
    // weighted (at most `scaling` per slot) over k slots, plus `add`.
    let up = max_abs(&c.x) * max_abs(&c.w_up) * h as f64;
    let act = up * up + up;
    let y = act * max_abs(&c.w_down) * c.p.inter as f64;
    let floor = y * r.k as f64 * (r.scaling.abs() as f64).max(1.0) + c.add.as_ref().map_or(0.0, max_abs);
    check("out", &want, &got, Cmp::Close { rel, floor: floor.max(1e-3) });
});
