//! The model glue: `rms_norm` (with and without the fused residual), `rotary` (1-D and 3-D
//! Uni-RoPE positions), `swiglu`, `embedding`, dense `gemm` (`b` plain or transposed):
//! arbitrary problems and buffers through `moekit_ops::api` on the reference and the CPU
//! backend; same `Result`; outputs agree on valid problems with tame data.

#![no_main]

#[path = "common/mod.rs"]
mod common;

use common::{check, max_abs, same_result, tol, Cmp, Gen};
use libfuzzer_sys::fuzz_target;
use moekit_cpu::CpuBackend;
use moekit_ops::{
    api, EmbeddingProblem, GemmProblem, HostTensor, RmsNormIo, RmsNormProblem, RotaryIo, RotaryPositions,
    RotaryProblem, SwigluProblem,
};
use moekit_reference::ReferenceBackend;

type R = moekit_ops::Result<()>;

/// Runs `f` on the reference and on the CPU with fresh copies of `outs`; checks the results
/// agree and returns both sets of outputs when both succeeded.
fn both(
    what: &str,
    may_overflow: bool,
    case: &dyn std::fmt::Debug,
    outs: &[HostTensor],
    f: impl Fn(bool, &mut [HostTensor]) -> R,
) -> Option<(Vec<HostTensor>, Vec<HostTensor>)> {
    let (mut want, mut got) = (outs.to_vec(), outs.to_vec());
    let rw = f(true, &mut want);
    let rg = f(false, &mut got);
    same_result(what, &rw, &rg, may_overflow, case);
    rw.is_ok().then_some((want, got))
}

fn rms_norm(g: &mut Gen) {
    let p = RmsNormProblem {
        rows: g.size(0, 4),
        hidden: g.size(1, 8),
        eps: g.scalar(&[1e-6, 1e-5, 0.1]),
        residual: g.bool(),
        dtype: g.dtype(),
    };
    let s = [p.rows, p.hidden];
    let x = g.input(p.dtype, &s, 0.125, 4.0);
    let weight = g.input(p.dtype, &[p.hidden], 0.125, 2.0);
    let residual = g.present(p.residual, |g| g.input(p.dtype, &s, 0.125, 4.0));
    let residual_out = g.present(p.residual, |g| g.output(p.dtype, &s));
    let y = g.output(p.dtype, &s);
    let mut outs = vec![y];
    outs.extend(residual_out.clone());
    let has_r = residual_out.is_some();
    let Some((want, got)) = both("rms_norm", g.may_overflow(), &(&p, &x, &weight, &residual), &outs, |reference, o| {
        let (y, rest) = o.split_first_mut().unwrap();
        let io = RmsNormIo {
            x: &x,
            weight: &weight,
            residual: residual.as_ref(),
            y,
            residual_out: if has_r { rest.first_mut() } else { None },
        };
        if reference {
            api::rms_norm(&ReferenceBackend, &p, io)
        } else {
            api::rms_norm(&CpuBackend::new(), &p, io)
        }
    }) else {
        return;
    };
    if g.tame {
        check("y", &want[0], &got[0], Cmp::Close { rel: tol(p.dtype, p.hidden), floor: max_abs(&weight) });
        if has_r {
            check("residual_out", &want[1], &got[1], Cmp::Close { rel: tol(p.dtype, 1), floor: 0.0 });
        }
    }
}

fn rotary(g: &mut Gen) {
    let head_dim = if g.valid { 2 * g.int(1, 4) } else { g.size(0, 9) };
    let three_d = g.bool();
    let positions = if three_d {
        let half = head_dim / 2;
        let a = g.int(0, half);
        let b = g.int(0, half - a);
        let c = if g.valid { half - a - b } else { g.int(0, 4) };
        RotaryPositions::ThreeD { sections: [a, b, c] }
    } else {
        RotaryPositions::OneD
    };
    let p = RotaryProblem {
        tokens: g.size(0, 4),
        heads: g.size(1, 2),
        head_dim,
        theta: g.scalar(&[10000.0, 500.0, 1e6]),
        positions,
        dtype: g.dtype(),
    };
    let s = [p.tokens, p.heads, p.head_dim];
    let x = g.input(p.dtype, &s, 0.125, 2.0);
    let pos_shape = if three_d { vec![3, p.tokens] } else { vec![p.tokens] };
    let pos = g.input_idx(&pos_shape, 0, 64);
    // NOTE: a position past a few thousand turns the f32 angle's rounding into radians of
    // error: the outputs are compared only for small positions.
    if pos.to_f64_vec().iter().any(|&v| !(0.0..=4096.0).contains(&v)) {
        g.tame = false;
    }
    let out = g.output(p.dtype, &s);
    let Some((want, got)) = both("rotary", g.may_overflow(), &(&p, &x, &pos), &[out], |reference, o| {
        let io = RotaryIo { x: &x, positions: &pos, out: &mut o[0] };
        if reference {
            api::rotary(&ReferenceBackend, &p, io)
        } else {
            api::rotary(&CpuBackend::new(), &p, io)
        }
    }) else {
        return;
    };
    if g.tame {
        check("out", &want[0], &got[0], Cmp::Close { rel: tol(p.dtype, 2) * 4.0, floor: max_abs(&x) });
    }
}

fn swiglu(g: &mut Gen) {
    let p = SwigluProblem { rows: g.size(0, 4), inter: g.size(1, 6), dtype: g.dtype() };
    let x = g.input(p.dtype, &[p.rows, p.inter.saturating_mul(2)], 0.125, 4.0);
    let y = g.output(p.dtype, &[p.rows, p.inter]);
    let Some((want, got)) = both("swiglu", g.may_overflow(), &(&p, &x), &[y], |reference, o| {
        if reference {
            api::swiglu(&ReferenceBackend, &p, &x, &mut o[0])
        } else {
            api::swiglu(&CpuBackend::new(), &p, &x, &mut o[0])
        }
    }) else {
        return;
    };
    if g.tame {
        let m = max_abs(&x);
        check("y", &want[0], &got[0], Cmp::Close { rel: tol(p.dtype, 1), floor: m * m });
    }
}

fn embedding(g: &mut Gen) {
    let p = EmbeddingProblem { tokens: g.size(0, 5), vocab: g.size(1, 6), hidden: g.size(1, 6), dtype: g.dtype() };
    let table = g.input(p.dtype, &[p.vocab, p.hidden], 0.125, 4.0);
    let ids = g.input_idx(&[p.tokens], 0, p.vocab.min(i32::MAX as usize) as i32);
    let out = g.output(p.dtype, &[p.tokens, p.hidden]);
    let Some((want, got)) = both("embedding", g.may_overflow(), &(&p, &table, &ids), &[out], |reference, o| {
        if reference {
            api::embedding(&ReferenceBackend, &p, &table, &ids, &mut o[0])
        } else {
            api::embedding(&CpuBackend::new(), &p, &table, &ids, &mut o[0])
        }
    }) else {
        return;
    };
    check("out", &want[0], &got[0], Cmp::Exact);
}

fn gemm(g: &mut Gen) {
    let p = GemmProblem { m: g.size(0, 6), k: g.size(0, 6), n: g.size(0, 6), b_transposed: g.bool(), dtype: g.dtype() };
    let a = g.input(p.dtype, &[p.m, p.k], 0.125, 2.0);
    let b_shape = if p.b_transposed { [p.n, p.k] } else { [p.k, p.n] };
    let b = g.input(p.dtype, &b_shape, 0.125, 2.0);
    let c = g.output(p.dtype, &[p.m, p.n]);
    let Some((want, got)) = both("gemm", g.may_overflow(), &(&p, &a, &b), &[c], |reference, o| {
        if reference {
            api::gemm(&ReferenceBackend, &p, &a, &b, &mut o[0])
        } else {
            api::gemm(&CpuBackend::new(), &p, &a, &b, &mut o[0])
        }
    }) else {
        return;
    };
    if g.tame {
        let floor = max_abs(&a) * max_abs(&b) * p.k as f64;
        check("c", &want[0], &got[0], Cmp::Close { rel: tol(p.dtype, p.k), floor });
    }
}

fuzz_target!(|data: &[u8]| {
    let mut g = Gen::new(data);
    match g.byte() % 5 {
        0 => rms_norm(&mut g),
        1 => rotary(&mut g),
        2 => swiglu(&mut g),
        3 => embedding(&mut g),
        _ => gemm(&mut g),
    }
});
