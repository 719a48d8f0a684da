//! Packed variable-length attention: GQA, causal, sliding window, softcap, FlashMask column
//! ranges. Flash-style: for each (sequence, head, block of query rows) the keys are visited in
//! chunks, `S = Q·Kᵀ` and `O += P·V` run on the `gemm` crate, and the softmax is kept online
//! (running max and sum) in f32.

use crate::convert::{dispatch_float, elems, elems_mut, widen, Elem};
use crate::matmul::{matmul, Mat};
use crate::CpuBackend;
use gemm::Parallelism;
use moekit_ops::{AttentionIo, AttentionOps, AttentionProblem, HostTensor, Result, Validated};
use rayon::prelude::*;

const OP: &str = "attention";

/// Query rows per task.
const BLOCK_Q: usize = 64;
/// Keys per chunk of the online softmax.
const BLOCK_K: usize = 256;

impl AttentionOps for CpuBackend {
    fn attention(&self, p: &Validated<AttentionProblem>, io: AttentionIo<'_, HostTensor>) -> Result<()> {
        dispatch_float!(OP, p.dtype, T => {
            // NOTE: k and v may be caches with rows past Tk; only the first Tk rows are read.
            let kv = p.total_k() * p.heads_kv * p.head_dim;
            let (q, k, v) = (elems::<T>(OP, "q", io.q)?, elems::<T>(OP, "k", io.k)?, elems::<T>(OP, "v", io.v)?);
            let (q, k, v) = (widen(q), widen(&k[..kv]), widen(&v[..kv]));
            let ctx = Ctx { p, q: &q, k: &k, v: &v };
            let blocks: Vec<Block> = ctx.items().into_par_iter().map(|it| ctx.block(it)).collect::<Result<_>>()?;
            let o = elems_mut::<T>(OP, "o", io.o)?;
            let lse = io.lse.as_f32_mut()?;
            scatter(p, &blocks, o, lse);
            Ok(())
        })
    }
}

/// One unit of work: query rows `i0..i1` (local) of sequence `b`, query head `h`.
#[derive(Clone, Copy, Debug)]
struct Item {
    b: usize,
    h: usize,
    i0: usize,
    i1: usize,
}

/// The result of one [`Item`]: `o [i1 - i0, D]` and `lse [i1 - i0]`.
struct Block {
    item: Item,
    o: Vec<f32>,
    lse: Vec<f32>,
}

/// Inputs widened to f32, in their packed layouts.
struct Ctx<'a> {
    p: &'a AttentionProblem,
    q: &'a [f32],
    k: &'a [f32],
    v: &'a [f32],
}

impl Ctx<'_> {
    fn items(&self) -> Vec<Item> {
        let p = self.p;
        let mut items = Vec::new();
        for b in 0..p.batch() {
            let (lq, _) = p.seq_lens(b);
            for h in 0..p.heads_q {
                for i0 in (0..lq).step_by(BLOCK_Q) {
                    items.push(Item { b, h, i0, i1: (i0 + BLOCK_Q).min(lq) });
                }
            }
        }
        items
    }

    fn block(&self, it: Item) -> Result<Block> {
        let p = self.p;
        let (hq, hkv, d) = (p.heads_q, p.heads_kv, p.head_dim);
        let hk = it.h / (hq / hkv);
        let (tq0, tk0) = (p.cu_seqlens_q[it.b], p.cu_seqlens_k[it.b]);
        let bq = it.i1 - it.i0;
        let ranges: Vec<(usize, usize)> = (it.i0..it.i1).map(|i| p.key_range(it.b, i)).collect();
        let lo = ranges.iter().map(|r| r.0).min().unwrap_or(0);
        let hi = ranges.iter().map(|r| r.1).max().unwrap_or(0);
        let q = Mat { data: &self.q[(tq0 + it.i0) * hq * d + it.h * d..], rs: hq * d, cs: 1 };

        let mut acc = vec![0f32; bq * d];
        let mut row_max = vec![f32::NEG_INFINITY; bq];
        let mut row_sum = vec![0f32; bq];
        let mut s = vec![0f32; bq * BLOCK_K];
        for c0 in (lo..hi).step_by(BLOCK_K) {
            let lc = (c0 + BLOCK_K).min(hi) - c0;
            let kv_off = (tk0 + c0) * hkv * d + hk * d;
            // Kᵀ: element (dim, key) of the chunk.
            let kt = Mat { data: &self.k[kv_off..], rs: 1, cs: hkv * d };
            matmul((bq, d, lc), q, kt, &mut s, lc, false, Parallelism::None)?;
            for r in 0..bq {
                let row = &mut s[r * lc..(r + 1) * lc];
                let corr = self.softmax_chunk(it, r, c0, ranges[r], row, &mut row_max[r], &mut row_sum[r]);
                if corr != 1.0 {
                    acc[r * d..(r + 1) * d].iter_mut().for_each(|a| *a *= corr);
                }
            }
            let v = Mat { data: &self.v[kv_off..], rs: hkv * d, cs: 1 };
            matmul((bq, lc, d), Mat::row_major(&s, lc), v, &mut acc, d, true, Parallelism::None)?;
        }

        let mut lse = vec![0f32; bq];
        for r in 0..bq {
            // NOTE: validation guarantees every row sees a key, so a max of -inf means every
            // visible score was -inf or NaN (non-finite inputs), and a NaN sum means a NaN score:
            // both give NaN in o and lse, as `moekit_ops::numerics` defines.
            if row_max[r] == f32::NEG_INFINITY || row_sum[r].is_nan() {
                acc[r * d..(r + 1) * d].fill(f32::NAN);
                lse[r] = f32::NAN;
                continue;
            }
            let inv = 1.0 / row_sum[r];
            acc[r * d..(r + 1) * d].iter_mut().for_each(|a| *a *= inv);
            lse[r] = row_max[r] + row_sum[r].ln();
        }
        Ok(Block { item: it, o: acc, lse })
    }

    /// Turns one row of raw scores `q·k` for keys `c0..c0 + row.len()` into unnormalised
    /// probabilities `exp(s - max)` (0 where masked), updating the running max and sum; returns
    /// the factor the row's accumulator must be rescaled by.
    fn softmax_chunk(
        &self,
        it: Item,
        r: usize,
        c0: usize,
        (lo, hi): (usize, usize),
        row: &mut [f32],
        max: &mut f32,
        sum: &mut f32,
    ) -> f32 {
        let p = self.p;
        let check_columns = p.mask.column_ranges.is_some();
        let mut chunk_max = f32::NEG_INFINITY;
        for (j, s) in row.iter_mut().enumerate() {
            let key = c0 + j;
            let visible = key >= lo && key < hi && (!check_columns || p.allowed(it.b, it.i0 + r, key));
            *s = if visible {
                let x = *s * p.scale;
                p.softcap.map_or(x, |c| c * (x / c).tanh())
            } else {
                f32::NEG_INFINITY
            };
            chunk_max = chunk_max.max(*s);
        }
        let new_max = max.max(chunk_max);
        if new_max == f32::NEG_INFINITY {
            // NOTE: `f32::max` skips NaN, so a NaN score (masked ones are -inf) would be lost
            // here; it poisons the running sum instead, as it does past a finite max.
            if row.iter().any(|s| s.is_nan()) {
                *sum = f32::NAN;
            }
            row.fill(0.0);
            return 1.0;
        }
        let corr = (*max - new_max).exp();
        let mut chunk_sum = 0f32;
        for s in row.iter_mut() {
            *s = (*s - new_max).exp();
            chunk_sum += *s;
        }
        *sum = *sum * corr + chunk_sum;
        *max = new_max;
        corr
    }
}

/// Writes every block into `o [Tq, Hq, D]` (rounded once) and `lse [Hq, Tq]`.
fn scatter<T: Elem>(p: &AttentionProblem, blocks: &[Block], o: &mut [T], lse: &mut [f32]) {
    let (hq, d, tq) = (p.heads_q, p.head_dim, p.total_q());
    for blk in blocks {
        let it = blk.item;
        let t0 = p.cu_seqlens_q[it.b] + it.i0;
        for (r, src) in blk.o.chunks(d).enumerate() {
            let t = t0 + r;
            o[(t * hq + it.h) * d..(t * hq + it.h + 1) * d].iter_mut().zip(src).for_each(|(o, &v)| *o = T::from_f32(v));
            lse[it.h * tq + t] = blk.lse[r];
        }
    }
}
