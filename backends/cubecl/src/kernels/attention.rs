//! Flash-style attention over packed variable-length batches: one cube per (query block,
//! head), online softmax in f32, key/value tiles streamed through shared memory.
//!
//! The cube is `BK × BQ` units: unit `(kj, qi)` scores query `qi` against key `kj` of the
//! tile, one unit per query row keeps the running max and sum, and every unit updates the
//! output columns `kj, kj + BK, ..` of its row. Query rows, the output accumulator and one
//! key-or-value tile live in shared memory as f32: `(2·BQ + BK)·D·4` bytes (24 KiB with the
//! block sizes [`blocks`] picks), inside lavapipe's 32 KiB for every head dim.
//!
//! NOTE: plane operations and matrix instructions are not used; this is the portable path.

use cubecl::ir::ElemType;
use cubecl::prelude::*;

pub(crate) mod cmma;
pub(crate) mod mma;

/// Entries per query block in the block table: `[q0, nq, k0, lq, lk, key_lo, key_hi, i0]`
/// (global first query row, rows in the block, global first key row of the sequence, the
/// sequence's query and key lengths, the local key range `key_lo..key_hi` that causal and
/// window allow for some row of the block, and the block's first query row local to the
/// sequence).
pub(crate) const BLOCK_ENTRIES: usize = 8;

/// Score of a masked (query, key) pair in the cmma and mma kernels, which keep masking in the
/// score itself. Real scores are far above it for finite inputs of sane size; the portable
/// kernel keeps a separate visibility bit instead, so any real score counts there.
const MASKED: f32 = -1.0e30;

/// `-inf`, built at run time from the bits of `x` (any value): cubecl 0.10's CUDA C++ generator
/// writes an infinite literal as `inf`, which NVRTC rejects, and reinterprets through a
/// reference, which needs a variable rather than a literal.
#[cube]
#[allow(clippy::erasing_op)] // NOTE: the `& 0` is the point: a run-time value with fixed bits.
pub(crate) fn neg_inf(x: f32) -> f32 {
    let bits = (u32::reinterpret(x) & 0u32) | 0xff80_0000u32;
    f32::reinterpret(bits)
}

/// A quiet NaN, built at run time from the bits of `x` (see [`neg_inf`]): the `o` and `lse` of
/// a row without a positive softmax sum (every visible score `-inf`, or a NaN among them), as
/// `moekit_ops::numerics` defines on every backend.
#[cube]
#[allow(clippy::erasing_op)] // NOTE: as in `neg_inf`.
pub(crate) fn nan(x: f32) -> f32 {
    let bits = (u32::reinterpret(x) & 0u32) | 0x7fc0_0000u32;
    f32::reinterpret(bits)
}

/// `(BQ, BK)`: query rows per cube and keys per tile for head dim `d`.
pub(crate) fn blocks(d: usize) -> (usize, usize) {
    if d > 128 {
        (8, 8)
    } else {
        (16, 16)
    }
}

/// See the module doc. Launch with `(blocks, Hq)` cubes of `(BK, BQ)` units.
///
/// `q [Tq, Hq, D]`, `k, v [Tk, Hkv, D]`, `table [blocks · BLOCK_ENTRIES] i32`, `ranges
/// [4, Tk] i32` (FlashMask `lts, lte, uts, ute`; a placeholder without `colr`), outputs `o
/// [Tq, Hq, D]`, `lse [Hq, Tq] f32`.
#[cube(launch)]
#[allow(clippy::too_many_arguments)]
pub(crate) fn attention_kernel<F: Float>(
    q: &Array<F>,
    k: &Array<F>,
    v: &Array<F>,
    table: &Array<i32>,
    ranges: &Array<i32>,
    o: &mut Array<F>,
    lse: &mut Array<f32>,
    heads_q: u32,
    heads_kv: u32,
    total_q: u32,
    total_k: u32,
    scale: f32,
    softcap: f32,
    left: i32,
    right: i32,
    #[comptime] d: usize,
    #[comptime] bq: usize,
    #[comptime] bk: usize,
    #[comptime] causal: bool,
    #[comptime] window: bool,
    #[comptime] colr: bool,
    #[comptime] capped: bool,
    #[define(F)] _dtype: ElemType,
) {
    let ninf = neg_inf(scale);
    let kj = UNIT_POS_X as usize;
    let qi = UNIT_POS_Y as usize;
    let units = comptime!(bq * bk);
    let unit = UNIT_POS as usize;
    let blk = CUBE_POS_X as usize * comptime!(BLOCK_ENTRIES);
    let h = CUBE_POS_Y as usize;
    let hq = heads_q as usize;
    let hkv = heads_kv as usize;
    let kvh = h / (hq / hkv);

    let q0 = table[blk] as usize;
    let nq = table[blk + 1] as usize;
    let k0 = table[blk + 2] as usize;
    let lq = table[blk + 3];
    let lk = table[blk + 4];
    let key_lo = table[blk + 5] as usize;
    let key_hi = table[blk + 6] as usize;
    let i0 = table[blk + 7];

    let mut qs = SharedMemory::<f32>::new(comptime!(bq * d));
    let mut os = SharedMemory::<f32>::new(comptime!(bq * d));
    let mut kv = SharedMemory::<f32>::new(comptime!(bk * d));
    let mut ss = SharedMemory::<f32>::new(comptime!(bq * bk));
    let mut vs = SharedMemory::<u32>::new(comptime!(bq * bk));
    let mut ms = SharedMemory::<f32>::new(bq);
    let mut ls = SharedMemory::<f32>::new(bq);
    let mut cs = SharedMemory::<f32>::new(bq);

    // Query rows (zero past the block) and a cleared accumulator.
    let mut idx = unit;
    while idx < comptime!(bq * d) {
        let r = idx / d;
        let c = idx % d;
        let mut val = 0.0f32;
        if r < nq {
            val = f32::cast_from(q[((q0 + r) * hq + h) * d + c]);
        }
        qs[idx] = val;
        os[idx] = 0.0;
        idx += units;
    }
    if kj == 0 {
        ms[qi] = ninf;
        ls[qi] = 0.0;
    }
    sync_cube();

    let mut kb = key_lo;
    while kb < key_hi {
        load_tile(k, &mut kv, k0 + kb, key_hi - kb, hkv, kvh, d, units, unit, bk);
        sync_cube();

        // Score of (qi, kj).
        let j = kb + kj;
        let mut s = 0.0f32;
        let mut seen = 0u32;
        if qi < nq && j < key_hi {
            let i = i0 + qi as i32;
            if allowed(ranges, i, j as i32, lq, lk, k0 + j, total_k, left, right, causal, window, colr) {
                let mut dot = 0.0f32;
                for c in 0..d {
                    dot += qs[qi * d + c] * kv[kj * d + c];
                }
                s = dot * scale;
                if capped {
                    s = softcap * f32::tanh(s / softcap);
                }
                seen = 1u32;
            }
        }
        ss[qi * bk + kj] = s;
        vs[qi * bk + kj] = seen;
        sync_cube();

        // Running max and sum of the row; the tile's scores become probabilities.
        // NOTE: the max skips NaN (a NaN score still poisons the sum through its p); the shift
        // is 0 while the max is -inf, so an all -inf row makes p = 0, never -inf - -inf.
        if kj == 0 {
            let m_old = ms[qi];
            let mut mx = m_old;
            for jj in 0..bk {
                let sv = ss[qi * bk + jj];
                if vs[qi * bk + jj] != 0u32 && sv > mx {
                    mx = sv;
                }
            }
            let mut mu = mx;
            if mx == ninf {
                mu = 0.0f32;
            }
            let corr = f32::exp(m_old - mu);
            let mut sum = 0.0f32;
            for jj in 0..bk {
                let mut p = 0.0f32;
                if vs[qi * bk + jj] != 0u32 {
                    p = f32::exp(ss[qi * bk + jj] - mu);
                }
                ss[qi * bk + jj] = p;
                sum += p;
            }
            ms[qi] = mx;
            ls[qi] = ls[qi] * corr + sum;
            cs[qi] = corr;
        }
        sync_cube();

        load_tile(v, &mut kv, k0 + kb, key_hi - kb, hkv, kvh, d, units, unit, bk);
        sync_cube();

        let corr = cs[qi];
        let mut c = kj;
        while c < d {
            let mut acc = os[qi * d + c] * corr;
            for jj in 0..bk {
                acc += ss[qi * bk + jj] * kv[jj * d + c];
            }
            os[qi * d + c] = acc;
            c += bk;
        }
        sync_cube();
        kb += bk;
    }

    if qi < nq {
        let l = ls[qi];
        let ok = l > 0.0f32;
        let mut c = kj;
        while c < d {
            let mut val = nan(l);
            if ok {
                val = os[qi * d + c] / l;
            }
            o[((q0 + qi) * hq + h) * d + c] = F::cast_from(val);
            c += bk;
        }
        if kj == 0 {
            let mut out = nan(l);
            if ok {
                out = ms[qi] + f32::ln(l);
            }
            lse[h * total_q as usize + q0 + qi] = out;
        }
    }
}

/// Loads `n` (at most `bk`) key or value rows from global row `row0`, head `kvh`, into `tile`
/// as f32; rows past `n` are zero.
#[cube]
#[allow(clippy::too_many_arguments)]
fn load_tile<F: Float>(
    src: &Array<F>,
    tile: &mut SharedMemory<f32>,
    row0: usize,
    n: usize,
    hkv: usize,
    kvh: usize,
    #[comptime] d: usize,
    #[comptime] units: usize,
    unit: usize,
    #[comptime] bk: usize,
) {
    let mut idx = unit;
    while idx < comptime!(bk * d) {
        let r = idx / d;
        let c = idx % d;
        let mut val = 0.0f32;
        if r < n {
            val = f32::cast_from(src[((row0 + r) * hkv + kvh) * d + c]);
        }
        tile[idx] = val;
        idx += units;
    }
}

/// Whether local query row `i` sees local key `j` (global key column `col`): causal
/// (bottom-right), window, FlashMask column ranges.
#[cube]
#[allow(clippy::too_many_arguments)]
fn allowed(
    ranges: &Array<i32>,
    i: i32,
    j: i32,
    lq: i32,
    lk: i32,
    col: usize,
    total_k: u32,
    left: i32,
    right: i32,
    #[comptime] causal: bool,
    #[comptime] window: bool,
    #[comptime] colr: bool,
) -> bool {
    let diag = i + lk - lq;
    let mut ok = true;
    if causal && j > diag {
        ok = false;
    }
    if window && (j < diag - left || j > diag + right) {
        ok = false;
    }
    if colr {
        let tk = total_k as usize;
        let in_lower = ranges[col] <= i && i < ranges[tk + col];
        let in_upper = ranges[2 * tk + col] <= i && i < ranges[3 * tk + col];
        if in_lower || in_upper {
            ok = false;
        }
    }
    ok
}
