//! `route` (softmax/sigmoid, fused gate, bias, masks, groups, renormalisation, scaling) and
//! `update_bias`: arbitrary problems and buffers through `moekit_ops::api` on the reference and
//! the CPU backend; same `Result`; outputs agree on valid problems with tame data (ids
//! exactly unless the reference's selection scores are a near-tie).

#![no_main]

#[path = "common/mod.rs"]
mod common;

use common::{check, same_result, tol, Cmp, Gen};
use libfuzzer_sys::fuzz_target;
use moekit_cpu::CpuBackend;
use moekit_ops::{
    api, Backend, BiasUpdateProblem, DType, GroupLimit, HostTensor, RouteIo, RouteProblem, ScoreFn, TensorMeta,
};
use moekit_reference::ReferenceBackend;
use moekit_testing::compare::{near, SCORE_REL};
use moekit_testing::props::Scores;

#[derive(Debug)]
struct RouteCase {
    p: RouteProblem,
    logits: HostTensor,
    gate: Option<HostTensor>,
    bias: Option<HostTensor>,
    outs: [HostTensor; 4],
}

fn route_case(g: &mut Gen) -> RouteCase {
    let t = g.size(0, 6);
    let e = g.size(1, 8);
    let k = g.size(1, e.min(9));
    let mut p = RouteProblem::new(t, e, k, g.dtype());
    p.hidden = if g.bool() { Some(g.size(1, 4)) } else { None };
    p.score = if g.bool() { ScoreFn::Sigmoid } else { ScoreFn::Softmax };
    p.use_bias = g.bool();
    p.renormalize = g.bool();
    p.scaling = g.scalar(&[1.0, 2.5, 0.5, 0.125]);
    if g.bool() {
        let len = if g.valid { e } else { g.int(0, 10) };
        let mut mask: Vec<bool> = (0..len.min(16)).map(|_| !g.one_in(3)).collect();
        if g.valid && !mask.iter().any(|&a| a) {
            mask[0] = true;
        }
        p.expert_mask = Some(mask);
    }
    if g.bool() {
        let divisors: Vec<usize> = (1..=e.min(8)).filter(|d| e % d == 0).collect();
        let n_group = if g.valid { divisors[g.int(0, divisors.len() - 1)] } else { g.size(0, 4) };
        let topk_group = if g.valid { g.int(1, n_group) } else { g.size(0, 4) };
        p.groups = Some(GroupLimit { n_group, topk_group });
    }
    if g.valid {
        moekit_testing::props::route::lower_k_to_reachable(&mut p);
    }
    let (dt, h, k) = (p.dtype, p.hidden, p.k);
    // NOTE: hidden and gate on a 1/8 grid keep the fused gate GEMM exact in f32.
    let (logits, gate) = match h {
        Some(h) => {
            let x = g.input(dt, &[t, h], 0.125, 1.0);
            (x, g.present(true, |g| g.input(dt, &[h, e], 0.125, 0.5)))
        }
        None => {
            let x = g.input(dt, &[t, e], 0.125, 8.0);
            (x, g.present(false, |g| g.input(dt, &[1, e], 0.125, 0.5)))
        }
    };
    let bias = g.present(p.use_bias, |g| g.input(DType::F32, &[e], 0.25, 1.0));
    let outs = [
        g.output(DType::I32, &[t, k]),
        g.output(DType::F32, &[t, k]),
        g.output(DType::I32, &[e]),
        g.output(DType::F32, &[e]),
    ];
    RouteCase { p, logits, gate, bias, outs }
}

fn run_route<B: Backend<Buffer = HostTensor>>(b: &B, c: &RouteCase) -> (moekit_ops::Result<()>, [HostTensor; 4]) {
    let [mut ids, mut w, mut counts, mut load] = c.outs.clone();
    let io = RouteIo {
        logits: &c.logits,
        gate: c.gate.as_ref(),
        bias: c.bias.as_ref(),
        ids: &mut ids,
        weights: &mut w,
        counts: &mut counts,
        load: &mut load,
    };
    let r = api::route(b, &c.p, io);
    (r, [ids, w, counts, load])
}

fn route(g: &mut Gen) {
    let c = route_case(g);
    let (rw, want) = run_route(&ReferenceBackend, &c);
    let (rg, got) = run_route(&CpuBackend::new(), &c);
    same_result("route", &rw, &rg, g.may_overflow(), &c);
    if rw.is_err() || !g.tame {
        return;
    }
    let p = &c.p;
    let k = p.k;
    let s = Scores::new(p, &c.logits, c.gate.as_ref(), c.bias.as_ref());
    let (wi, gi) = (want[0].as_i32().unwrap(), got[0].as_i32().unwrap());
    let (ww, gw) = (want[1].to_f64_vec(), got[1].to_f64_vec());
    let mut all_same = true;
    for t in 0..p.tokens {
        let (a, b) = (&wi[t * k..(t + 1) * k], &gi[t * k..(t + 1) * k]);
        if a == b {
            let (we, ge) = (&ww[t * k..(t + 1) * k], &gw[t * k..(t + 1) * k]);
            let (we, ge) = (HostTensor::from_f64(DType::F32, &[k], we), HostTensor::from_f64(DType::F32, &[k], ge));
            check("weights", &we, &ge, Cmp::Close { rel: tol(DType::F32, p.experts), floor: 0.0 });
            continue;
        }
        all_same = false;
        s.check_valid(t, b).unwrap_or_else(|m| panic!("cpu ids: {m}"));
        let tie = s.ambiguous[t]
            || a.iter().zip(b).all(|(&x, &y)| near(s.sel(t, x as usize), s.sel(t, y as usize), SCORE_REL));
        assert!(tie, "token {t}: cpu ids {b:?}, reference {a:?} (not a near-tie)");
    }
    if all_same {
        check("counts", &want[2], &got[2], Cmp::Exact);
    }
    let hist = moekit_testing::props::route::histogram(&got[0], p.experts);
    check("counts (cpu ids' histogram)", &hist, &got[2], Cmp::Exact);
    check("load", &want[3], &got[3], Cmp::Close { rel: tol(DType::F32, p.tokens + p.experts), floor: 0.0 });
}

fn update_bias(g: &mut Gen) {
    let e = g.size(1, 8);
    let speed = g.scalar(&[0.0, 1e-3, 0.01, 0.125]);
    let mask = g.bool().then(|| {
        let len = if g.valid { e } else { g.int(0, 10) };
        let mut m: Vec<bool> = (0..len.min(16)).map(|_| !g.one_in(3)).collect();
        if g.valid {
            m[0] = true;
        }
        m
    });
    let p = BiasUpdateProblem { experts: e, speed, expert_mask: mask };
    let bias = g.input(DType::F32, &[e], 0.125, 1.0);
    let (dt, shape) = g.meta(DType::I32, &[e]);
    let counts = if dt == DType::I32 {
        let n = common::numel(&shape).unwrap_or(0);
        let v: Vec<i32> =
            (0..n).map(|_| if g.valid || !g.one_in(4) { g.int(0, 12) as i32 } else { g.index(-5, 5) }).collect();
        HostTensor::from_i32(&shape, &v)
    } else {
        g.floats(dt, &shape, 1.0, 8.0)
    };
    let (mut want, mut got) = (bias.clone(), bias.clone());
    let rw = api::update_bias(&ReferenceBackend, &p, &mut want, &counts);
    let rg = api::update_bias(&CpuBackend::new(), &p, &mut got, &counts);
    same_result("update_bias", &rw, &rg, g.may_overflow(), &(&p, &bias, &counts));
    if rw.is_ok() && g.tame && want.dtype() == DType::F32 {
        check("bias", &want, &got, Cmp::Close { rel: tol(DType::F32, 1), floor: 0.0 });
    }
}

fuzz_target!(|data: &[u8]| {
    let mut g = Gen::new(data);
    if g.one_in(5) {
        update_bias(&mut g);
    } else {
        route(&mut g);
    }
});
