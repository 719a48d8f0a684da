//! `grouped_gemm`: contiguous (offsets, tail rows) and masked (counts) layouts, `[E, K, N]`
//! and `[E, N, K]` weights, the gather prologue (`row_to_token`, −1 rows), the row-scale and
//! SwiGLU epilogues, empty experts and `R = 0`: arbitrary problems and buffers through
//! `moekit_ops::api` on the reference and the CPU backend; same `Result`; `y` within tolerance
//! on valid problems with tame data.

#![no_main]

#[path = "common/mod.rs"]
mod common;

use common::{check, max_abs, same_result, tol, Cmp, Gen};
use libfuzzer_sys::fuzz_target;
use moekit_cpu::CpuBackend;
use moekit_ops::{api, Backend, DType, GemmLayout, GroupedGemmIo, GroupedGemmProblem, HostTensor, WeightLayout};
use moekit_reference::ReferenceBackend;

#[derive(Debug)]
struct Case {
    p: GroupedGemmProblem,
    x: HostTensor,
    w: HostTensor,
    group: HostTensor,
    row_to_token: Option<HostTensor>,
    row_scale: Option<HostTensor>,
    y: HostTensor,
}

fn run<B: Backend<Buffer = HostTensor>>(b: &B, c: &Case) -> (moekit_ops::Result<()>, HostTensor) {
    let mut y = c.y.clone();
    let io = GroupedGemmIo {
        x: &c.x,
        w: &c.w,
        group: &c.group,
        row_to_token: c.row_to_token.as_ref(),
        row_scale: c.row_scale.as_ref(),
        y: &mut y,
    };
    (api::grouped_gemm(b, &c.p, io), y)
}

fn case(g: &mut Gen) -> Case {
    let e = g.size(1, 4);
    let masked = g.one_in(3);
    let swiglu = g.bool();
    let n = g.size(1, 6);
    let n = if swiglu && g.valid { 2 * n } else { n };
    // Per-expert rows and the offsets (or counts) describing them.
    let counts: Vec<usize> = (0..e.min(8)).map(|_| if g.one_in(4) { 0 } else { g.int(0, 3) }).collect();
    let align = if g.one_in(3) { 2 } else { 1 };
    let (layout, group_vals) = if masked {
        let cap = g.size(0, 3);
        let c: Vec<i32> = counts.iter().map(|&c| c.min(cap) as i32).collect();
        (GemmLayout::Masked { capacity: cap }, c)
    } else {
        let mut off = vec![0i32];
        for &c in &counts {
            off.push(off.last().unwrap() + (c.div_ceil(align) * align) as i32);
        }
        let rows = *off.last().unwrap() as usize + g.int(0, 2);
        let rows = if g.valid { rows } else { g.size(0, rows + 1) };
        (GemmLayout::Contiguous { rows }, off)
    };
    let gather = !masked && g.one_in(3) || !g.valid && g.one_in(8);
    let p = GroupedGemmProblem {
        layout,
        experts: e,
        k_dim: g.size(1, 6),
        n_dim: n,
        weight_layout: if g.bool() { WeightLayout::NK } else { WeightLayout::KN },
        swiglu,
        row_scale: g.one_in(3),
        gather_tokens: gather.then(|| g.size(0, 5)),
        dtype: g.dtype(),
    };
    let (kd, nd) = (p.k_dim, p.n_dim);
    let sat = |a: usize, b: usize| a.saturating_mul(b);
    let out_rows = match layout {
        GemmLayout::Contiguous { rows } => rows,
        GemmLayout::Masked { capacity } => sat(e, capacity),
    };
    let x_shape = match (layout, p.gather_tokens) {
        (GemmLayout::Contiguous { .. }, Some(t)) => vec![t, kd],
        (GemmLayout::Contiguous { rows }, None) => vec![rows, kd],
        (GemmLayout::Masked { capacity }, _) => vec![e, capacity, kd],
    };
    let w_shape = if p.weight_layout == WeightLayout::KN { vec![e, kd, nd] } else { vec![e, nd, kd] };
    let n_out = if swiglu { nd / 2 } else { nd };
    let y_shape = match layout {
        GemmLayout::Contiguous { rows } => vec![rows, n_out],
        GemmLayout::Masked { capacity } => vec![e, capacity, n_out],
    };
    let rs_shape = match layout {
        GemmLayout::Contiguous { rows } => vec![rows],
        GemmLayout::Masked { capacity } => vec![e, capacity],
    };
    let x = g.input(p.dtype, &x_shape, 0.125, 2.0);
    let w = g.input(p.dtype, &w_shape, 0.125, 1.0);
    let group_len = if masked { e } else { e.saturating_add(1) };
    let (gdt, gshape) = g.meta(DType::I32, &[group_len]);
    let group = if gdt != DType::I32 {
        g.floats(gdt, &gshape, 1.0, 4.0)
    } else if g.valid && gshape == [group_len] {
        HostTensor::from_i32(&gshape, &group_vals)
    } else {
        // Garbage offsets/counts: decreasing, past the rows, negative, huge.
        g.indices(&gshape, -1, out_rows.min(8) as i32 + 2)
    };
    let tokens = p.gather_tokens.unwrap_or(0).min(i32::MAX as usize) as i32;
    let row_to_token = g.present(p.gather_tokens.is_some(), |g| g.input_idx(&[out_rows], -1, tokens.max(0)));
    let row_scale = g.present(p.row_scale, |g| g.input(DType::F32, &rs_shape, 0.25, 2.0));
    let y = g.output(p.dtype, &y_shape);
    Case { p, x, w, group, row_to_token, row_scale, y }
}

fuzz_target!(|data: &[u8]| {
    let mut g = Gen::new(data);
    let c = case(&mut g);
    let (rw, want) = run(&ReferenceBackend, &c);
    let (rg, got) = run(&CpuBackend::new(), &c);
    same_result("grouped_gemm", &rw, &rg, g.may_overflow(), &c);
    if rw.is_ok() && g.tame {
        // NOTE: the error scales with the summed terms, not with the output (which can cancel):
        // K products of |x|·|w|, squared through SwiGLU, times the row scale.
        let dot = max_abs(&c.x) * max_abs(&c.w) * c.p.k_dim as f64;
        let act = if c.p.swiglu { dot * dot + dot } else { dot };
        let floor = act * c.row_scale.as_ref().map_or(1.0, |s| max_abs(s).max(1.0));
        let rel = tol(c.p.dtype, c.p.k_dim) * if c.p.swiglu { 2.0 } else { 1.0 };
        check("y", &want, &got, Cmp::Close { rel, floor });
    }
});
