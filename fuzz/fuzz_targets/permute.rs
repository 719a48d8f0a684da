//! `permute` (alignment, empty experts, repeated ids) and `unpermute_combine` (with and
//! without `add`), alone and chained: arbitrary problems and buffers through `moekit_ops::api`
//! on the reference and the CPU backend; same `Result`; permutation outputs equal exactly and
//! the combine within tolerance on valid problems with tame data.

#![no_main]

#[path = "common/mod.rs"]
mod common;

use common::{check, max_abs, same_result, tol, Cmp, Gen};
use libfuzzer_sys::fuzz_target;
use moekit_cpu::CpuBackend;
use moekit_ops::{api, Backend, CombineIo, CombineProblem, DType, HostTensor, PermuteIo, PermuteProblem, TensorMeta};
use moekit_reference::ReferenceBackend;

type Out = (moekit_ops::Result<()>, Vec<HostTensor>);

fn run_permute<B: Backend<Buffer = HostTensor>>(
    b: &B,
    p: &PermuteProblem,
    ins: &[HostTensor; 2],
    outs: &[HostTensor],
) -> Out {
    let mut o = outs.to_vec();
    let [permuted, offsets, rtt, tsr] = &mut o[..] else { unreachable!() };
    let io = PermuteIo { hidden: &ins[0], ids: &ins[1], permuted, offsets, row_to_token: rtt, token_slot_to_row: tsr };
    (api::permute(b, p, io), o)
}

fn run_combine<B: Backend<Buffer = HostTensor>>(
    b: &B,
    p: &CombineProblem,
    ins: &[HostTensor; 3],
    add: Option<&HostTensor>,
    out: &HostTensor,
) -> Out {
    let mut out = out.clone();
    let io = CombineIo { y: &ins[0], weights: &ins[1], token_slot_to_row: &ins[2], add, out: &mut out };
    (api::unpermute_combine(b, p, io), vec![out])
}

/// Dispatch; returns the problem and the reference's outputs when both backends succeeded.
fn permute(g: &mut Gen) -> Option<(PermuteProblem, Vec<HostTensor>)> {
    let t = g.size(0, 6);
    let e = g.size(1, 6);
    let k = g.size(1, 4);
    let align = if g.valid && g.bool() { 1 } else { g.size(1, 4) };
    let p = PermuteProblem { tokens: t, hidden: g.size(1, 5), experts: e, k, align, dtype: g.dtype() };
    // NOTE: max_rows() is computed here with checked arithmetic (the generator must not
    // overflow on huge garbage sizes; validation is what must refuse them).
    let r = t
        .checked_mul(k)
        .and_then(|tk| if align > 1 { e.checked_mul(align - 1).and_then(|pad| tk.checked_add(pad)) } else { Some(tk) })
        .unwrap_or(usize::MAX);
    let e1 = e.saturating_add(1);
    let hidden = g.input(p.dtype, &[t, p.hidden], 0.125, 4.0);
    let ids = g.input_idx(&[t, k], 0, e.min(i32::MAX as usize) as i32);
    let outs = vec![
        g.output(p.dtype, &[r, p.hidden]),
        g.output(DType::I32, &[e1]),
        g.output(DType::I32, &[r]),
        g.output(DType::I32, &[t, k]),
    ];
    let ins = [hidden, ids];
    let (rw, want) = run_permute(&ReferenceBackend, &p, &ins, &outs);
    let (rg, got) = run_permute(&CpuBackend::new(), &p, &ins, &outs);
    same_result("permute", &rw, &rg, g.may_overflow(), &(&p, &ins));
    if rw.is_err() {
        return None;
    }
    for (name, (w, c)) in ["permuted", "offsets", "row_to_token", "token_slot_to_row"].iter().zip(want.iter().zip(&got))
    {
        check(name, w, c, Cmp::Exact);
    }
    Some((p, want))
}

fn combine(g: &mut Gen, from: Option<(PermuteProblem, Vec<HostTensor>)>) {
    let (p, y, tsr) = match from {
        Some((pp, outs)) => {
            let p = CombineProblem {
                tokens: pp.tokens,
                hidden: pp.hidden,
                k: pp.k,
                rows: outs[0].shape()[0],
                add: g.bool(),
                dtype: pp.dtype,
            };
            // NOTE: padding rows of the permuted output are zero, never NaN poison.
            (p, outs[0].clone(), outs[3].clone())
        }
        None => {
            let t = g.size(0, 6);
            let p = CombineProblem {
                tokens: t,
                hidden: g.size(1, 5),
                k: g.size(1, 4),
                rows: if g.valid && t == 0 { g.int(0, 3) } else { g.size(1, 8) },
                add: g.bool(),
                dtype: g.dtype(),
            };
            let y = g.input(p.dtype, &[p.rows, p.hidden], 0.125, 4.0);
            let tsr = g.input_idx(&[t, p.k], 0, p.rows.min(i32::MAX as usize) as i32);
            (p, y, tsr)
        }
    };
    let (t, h, k) = (p.tokens, p.hidden, p.k);
    let weights = g.input(DType::F32, &[t, k], 0.125, 2.0);
    let add = g.present(p.add, |g| g.input(p.dtype, &[t, h], 0.125, 4.0));
    let out = g.output(p.dtype, &[t, h]);
    let ins = [y, weights, tsr];
    let (rw, want) = run_combine(&ReferenceBackend, &p, &ins, add.as_ref(), &out);
    let (rg, got) = run_combine(&CpuBackend::new(), &p, &ins, add.as_ref(), &out);
    same_result("unpermute_combine", &rw, &rg, g.may_overflow(), &(&p, &ins, &add));
    if rw.is_ok() && g.tame {
        let floor = max_abs(&ins[0]) * max_abs(&ins[1]) * k as f64 + add.as_ref().map_or(0.0, max_abs);
        check("out", &want[0], &got[0], Cmp::Close { rel: tol(p.dtype, k.saturating_add(1)), floor });
    }
}

fuzz_target!(|data: &[u8]| {
    let mut g = Gen::new(data);
    match g.byte() % 3 {
        0 => {
            permute(&mut g);
        }
        1 => combine(&mut g, None),
        _ => {
            let from = permute(&mut g);
            if from.is_some() {
                combine(&mut g, from);
            }
        }
    }
});
