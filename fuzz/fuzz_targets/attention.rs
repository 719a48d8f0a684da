//! `attention`: packed varlen batches (`cu_seqlens`, empty sequences), GQA, causal, sliding
//! window, softcap, FlashMask column ranges (`lts/lte/uts/ute`), KV caches of capacity above
//! `Tk` (their unread rows hold NaN), `lse`: arbitrary problems and buffers through
//! `moekit_ops::api` on the reference and the CPU backend; same `Result`; `o` and `lse` within
//! tolerance on valid problems with tame data.

#![no_main]

#[path = "common/mod.rs"]
mod common;

use common::{check, max_abs, same_result, tol, Cmp, Gen};
use libfuzzer_sys::fuzz_target;
use moekit_cpu::CpuBackend;
use moekit_ops::{
    api, AttentionIo, AttentionMask, AttentionProblem, Backend, ColumnRanges, DType, Error, HostTensor, TensorMeta,
    Window,
};
use moekit_reference::ReferenceBackend;

#[derive(Debug)]
struct Case {
    p: AttentionProblem,
    ins: [HostTensor; 3],
    outs: [HostTensor; 2],
}

fn run<B: Backend<Buffer = HostTensor>>(b: &B, c: &Case) -> (moekit_ops::Result<()>, [HostTensor; 2]) {
    let [mut o, mut lse] = c.outs.clone();
    let io = AttentionIo { q: &c.ins[0], k: &c.ins[1], v: &c.ins[2], o: &mut o, lse: &mut lse };
    (api::attention(b, &c.p, io), [o, lse])
}

fn cumulative(lens: &[usize]) -> Vec<usize> {
    let mut cu: Vec<usize> = vec![0];
    for &l in lens {
        cu.push(cu.last().unwrap().saturating_add(l));
    }
    cu
}

fn problem(g: &mut Gen) -> AttentionProblem {
    let batch = g.size(1, 3).min(4);
    // NOTE: validation walks every query row (to find rows the mask leaves empty), so a
    // length in the billions costs seconds; lengths up to 2^16 and past i32::MAX (refused at
    // once) keep the runs fast.
    let len = |g: &mut Gen, hi: usize| match g.size(0, hi) {
        l if l > 1 << 16 && l <= i32::MAX as usize => 1 << 16,
        l => l,
    };
    let lq: Vec<usize> = (0..batch).map(|_| len(g, 3)).collect();
    let lk: Vec<usize> = (0..batch).map(|_| len(g, 4)).collect();
    let hkv = g.size(1, 2);
    let group = g.size(1, 3);
    let heads_q = if g.valid { hkv * group } else { g.size(0, 6) };
    let head_dim =
        if g.valid || g.byte() % 2 == 0 { [64, 64, 64, 64, 64, 128, 256][g.int(0, 6)] } else { g.size(0, 300) };
    let mut cu_q = cumulative(&lq);
    let mut cu_k = cumulative(&lk);
    if !g.valid {
        // Broken cumulative lengths: not from 0, decreasing, empty, of another length.
        match g.byte() % 6 {
            0 => cu_q[0] = 1,
            1 => cu_k.reverse(),
            2 => cu_q.clear(),
            3 => {
                cu_k.pop();
            }
            _ => {}
        }
    }
    let tk = cu_k.last().copied().unwrap_or(0);
    let causal = g.one_in(3);
    let window = g.one_in(3).then(|| Window { left: g.size(0, 3), right: g.size(0, 3) });
    let column_ranges = (g.one_in(3) && tk <= 64).then(|| {
        let v = |g: &mut Gen| -> Vec<i32> {
            let len = if g.valid || g.bool() { tk } else { g.int(0, tk + 1) };
            (0..len)
                .map(|j| {
                    // The query length of the column's sequence bounds the valid values.
                    let b = (0..batch).find(|&b| cu_k.get(b + 1).is_some_and(|&e| j < e)).unwrap_or(0);
                    let l = lq.get(b).copied().unwrap_or(0).min(1 << 20) as i32;
                    g.index(0, l + 1)
                })
                .collect()
        };
        ColumnRanges { lts: v(g), lte: v(g), uts: v(g), ute: v(g) }
    });
    AttentionProblem {
        cu_seqlens_q: cu_q,
        cu_seqlens_k: cu_k,
        heads_q,
        heads_kv: hkv,
        head_dim,
        scale: g.scalar(&[0.125, 0.0625, 0.25, 1.0]),
        softcap: if g.one_in(3) { Some(g.scalar(&[0.5, 5.0, 30.0])) } else { None },
        mask: AttentionMask { causal, window, column_ranges },
        dtype: g.dtype(),
    }
}

/// In valid mode, drops mask parts (then lengthens key sequences) until no query row is empty.
fn make_valid(p: &mut AttentionProblem) {
    for step in 0..4 {
        match p.validate() {
            Err(Error::EmptyMaskRow { .. }) => match step {
                0 => p.mask.column_ranges = None,
                1 => p.mask.window = None,
                2 => p.mask.causal = false,
                _ => {
                    // No mask left: only a sequence with queries and no keys is empty.
                    let lens: Vec<usize> = (0..p.batch())
                        .map(|b| {
                            let (lq, lk) = p.seq_lens(b);
                            if lq > 0 {
                                lk.max(1)
                            } else {
                                lk
                            }
                        })
                        .collect();
                    p.cu_seqlens_k = cumulative(&lens);
                }
            },
            _ => return,
        }
    }
}

fn case(g: &mut Gen) -> Case {
    let mut p = problem(g);
    if g.valid {
        make_valid(&mut p);
    }
    let (tq, tk) = (p.total_q(), p.total_k());
    let (hq, hkv, d, dt) = (p.heads_q, p.heads_kv, p.head_dim, p.dtype);
    let q = g.input(dt, &[tq, hq, d], 0.125, 1.0);
    // A KV cache: capacity past Tk, its unread rows NaN (a backend that reads them differs).
    let cap = tk.saturating_add(if g.one_in(3) { g.int(1, 2) } else { 0 });
    let kv = |g: &mut Gen| {
        let mut t = g.input(dt, &[tk, hkv, d], 0.125, 1.0);
        let fits = common::numel(&[cap, hkv, d]).is_some_and(|n| n <= common::MAX_NUMEL);
        if cap > tk && fits && t.shape() == [tk, hkv, d] && dt != DType::I32 {
            let mut v = t.to_f32_vec();
            v.resize(cap * hkv * d, f32::NAN);
            t = HostTensor::from_f32(dt, &[cap, hkv, d], &v);
        }
        t
    };
    let (k, v) = (kv(g), kv(g));
    let o = g.output(dt, &[tq, hq, d]);
    let lse = g.output(DType::F32, &[hq, tq]);
    Case { p, ins: [q, k, v], outs: [o, lse] }
}

fuzz_target!(|data: &[u8]| {
    let mut g = Gen::new(data);
    let c = case(&mut g);
    let (rw, want) = run(&ReferenceBackend, &c);
    let (rg, got) = run(&CpuBackend::new(), &c);
    same_result("attention", &rw, &rg, g.may_overflow(), &(&c.p, &c.ins));
    if rw.is_ok() && g.tame {
        let p = &c.p;
        let max_lk = (0..p.batch()).map(|b| p.seq_lens(b).1).max().unwrap_or(0);
        let v_scale = max_abs(&c.ins[2]);
        check("o", &want[0], &got[0], Cmp::Close { rel: tol(p.dtype, p.head_dim + max_lk), floor: v_scale });
        // NOTE: lse is a log of a sum of exp(score): its error scales with the scores' size.
        let score = p.scale.abs() as f64 * max_abs(&c.ins[0]) * max_abs(&c.ins[1]) * p.head_dim as f64;
        let rel = tol(DType::F32, p.head_dim + max_lk);
        check("lse", &want[1], &got[1], Cmp::Close { rel, floor: score.max(1.0) });
    }
});
