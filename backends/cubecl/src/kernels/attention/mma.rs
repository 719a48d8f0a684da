//! Flash-attention forward (FlashAttention-2 style) through cubecl's manual MMA API
//! ([`MmaDefinition`]: `ldmatrix` fragment loads from shared memory, `mma.sync` m16n8k16,
//! f16/bf16 inputs, f32 accumulators): the opt-in variant `MOEKIT_CUBECL_ATTN=mma` beside the
//! default [`super::cmma`], with the same arguments, block table and semantics.
//!
//! A cube of `planes` planes of 32 lanes ([`PLANES`]; [`PLANES_WIDE`] with
//! `MOEKIT_CUBECL_ATTN=mma8`) owns [`rows`]`(planes)` query rows of one (query block, head);
//! plane `w` owns rows `16w..16w + 16` and keeps in registers, across the key blocks, its Q
//! fragments (`D/16` A fragments, 4 registers each), its output accumulators (`D/8` m16n8
//! tiles) and per row the running max and the lane's part of the running sum. Per block of
//! [`BK`] keys (K and V tiles double-buffered in shared memory, stage `kb / BK % 2`):
//! 1. the next block's K tile is loaded into registers (global), the scores `S [16, BK] =
//!    Q·Kᵀ` are accumulated in `BK/8` m16n8 tiles (K fragments by `ldmatrix`, no transpose),
//!    then the K registers go to the other stage and the next V tile is loaded into them;
//! 2. online softmax on the accumulator registers: lane `l` holds rows `l/4` and `l/4 + 8`,
//!    columns `2(l%4) + {0, 1}` of every n8 tile, so a row's max and sum need two shuffles
//!    among the four lanes of a quad; scale, softcap and mask (only on blocks that cut a
//!    row's key range), `m_new = max(m, rowmax)`, the accumulators scaled by `e^(m - m_new)`,
//!    `P = e^(S - m_new)` (the fast intrinsic; masked scores give exactly 0, also while a
//!    row has seen no allowed key);
//! 3. `O += P·V` with P converted to the input dtype in registers: the C registers of the n8
//!    tiles `2kk, 2kk + 1` are the A fragment of the k16 step `kk` (no shared round trip);
//!    V fragments by `ldmatrix.trans`; then the V registers go to the other stage and one
//!    cube barrier ends the block.
//!
//! Blocks past a row's causal / window range are never visited (the block table's key range);
//! rows past the block (`nq`) compute on zero queries and write nothing. The host orders the
//! blocks longest key range first (see `ops::attention`), so a launch does not end on the
//! longest cubes.
//!
//! Shared memory (bytes): `2 stages · 2 (K, V) · BK · (D + 8) · 2`: 68 KiB at D = 128, 36 KiB
//! at D = 64. The `+ 8` pad makes the eight 16-byte rows of every `ldmatrix` 8×8 matrix fall
//! in distinct banks. Q is staged once in the last rows of the K stages ([`q_row0`]).
//!
//! The kernel is launched unchecked: global reads are guarded by the block's row and key
//! counts (a masked-off tile vector reads element 0 and stores zero), FlashMask reads sit
//! behind `j < key_hi`, shared indices stay inside the stages.

use super::cmma::{fast_exp, BK, PLANE};
use super::{allowed, BLOCK_ENTRIES, MASKED};
use cubecl::cmma::{MatrixIdent, MmaDefinition};
use cubecl::ir::ElemType;
use cubecl::prelude::*;

/// Two elements: one 32-bit register of a 16-bit fragment, or two f32 of an accumulator.
type P2 = Const<2>;
/// Rows of an m16 fragment and keys / head-dim columns of a k16 step.
const FRAG: usize = 16;
/// Columns of an n8 tile.
const TN: usize = 8;

/// Planes per cube of the default configuration (64 query rows) and of the wide one (128
/// rows: each K/V tile in shared memory serves twice the rows).
pub(crate) const PLANES: usize = 4;
/// See [`PLANES`].
pub(crate) const PLANES_WIDE: usize = 8;

/// Query rows per cube with `planes` planes.
pub(crate) const fn rows(planes: usize) -> usize {
    FRAG * planes
}

/// First row (of the `2·BK` rows of both K stages) where the cube's Q rows are staged: the
/// last `rows(planes)` rows, so with 4 planes Q sits in the second stage only.
pub(crate) const fn q_row0(planes: usize) -> usize {
    2 * BK - rows(planes)
}

/// Shared memory of the kernel at head dim `d`, bytes (see the module doc).
pub(crate) fn shared_bytes(d: usize) -> usize {
    2 * 2 * BK * (d + 8) * 2
}

/// Element offset (inside a stage of row stride `ks`) of lane `lane`'s `ldmatrix` row for a
/// Q fragment: rows `lane % 16` of the plane's strip, columns `8 · (lane / 16)` (matrices:
/// rows 0-7 / 8-15 × columns 0-7, then 8-15: the A registers `a0..a3`).
#[cube]
pub(crate) fn q_lane(lane: usize, #[comptime] ks: usize) -> usize {
    lane % FRAG * ks + lane / FRAG * TN
}

/// Element offset of lane `lane`'s `ldmatrix` row for two K fragments (keys `16kn..16kn+16`
/// at column 0 of a k16 step): matrix `lane / 8` is (keys 0-7, d 0-7), (keys 0-7, d 8-15),
/// (keys 8-15, d 0-7), (keys 8-15, d 8-15), so registers 0-1 are the B fragment of the
/// first n8 key tile and 2-3 of the second.
#[cube]
pub(crate) fn k_lane(lane: usize, #[comptime] ks: usize) -> usize {
    (lane / FRAG * TN + lane % TN) * ks + lane / TN % 2 * TN
}

/// Element offset of lane `lane`'s `ldmatrix.trans` row for two V fragments (head-dim
/// columns `16dn..16dn+16` of a k16 key step): matrix `lane / 8` is (keys 0-7, d 0-7),
/// (keys 8-15, d 0-7), (keys 0-7, d 8-15), (keys 8-15, d 8-15), so registers 0-1 are the B
/// fragment of the first n8 column tile and 2-3 of the second.
#[cube]
pub(crate) fn v_lane(lane: usize, #[comptime] ks: usize) -> usize {
    (lane / TN % 2 * TN + lane % TN) * ks + lane / FRAG * TN
}

/// See the module doc. Launch as [`super::cmma::attention_cmma_kernel`]: `(blocks, Hq)` cubes
/// of `(PLANE, planes)` units (`planes` [`PLANES`] or [`PLANES_WIDE`]), `V` =
/// [`super::cmma::VEC`], blocks of [`rows`]`(planes)` rows.
#[cube(launch_unchecked)]
#[allow(clippy::too_many_arguments)]
pub(crate) fn attention_mma_kernel<F: Float, V: Size>(
    q: &Array<Vector<F, V>>,
    k: &Array<Vector<F, V>>,
    value: &Array<Vector<F, V>>,
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
    #[comptime] planes: usize,
    #[comptime] causal: bool,
    #[comptime] window: bool,
    #[comptime] colr: bool,
    #[comptime] capped: bool,
    #[define(F)] _dtype: ElemType,
) {
    let masked = f32::new(MASKED);
    let lane = UNIT_POS_X as usize;
    let plane = UNIT_POS_Y as usize;
    let unit = UNIT_POS as usize;
    let vec = V::value();
    let ks = comptime!(d + 8);
    let row_v = comptime!(d / vec);
    let ks_v = comptime!((d + 8) / vec);
    // One stage (a K or V tile, or the staged Q), in vectors.
    let tile_v = comptime!(BK * (d + 8) / vec);
    // Rows between two copies of one unit, copies per unit and tile.
    let rstep = comptime!(PLANE * planes / (d / vec));
    let per = comptime!(BK / (PLANE * planes / (d / vec)));
    // Q overlaps the first K stage (wide cubes): the first K tile waits for the Q fragments.
    let overlap = comptime!(rows(planes) > BK);
    let q_base = comptime!(q_row0(planes) * ((d + 8) / vec));

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

    let mut kt = SharedMemory::<Vector<F, V>>::new_aligned(comptime!(2 * tile_v), 16usize);
    let mut vt = SharedMemory::<Vector<F, V>>::new_aligned(comptime!(2 * tile_v), 16usize);

    let col = unit % row_v;
    let row0 = unit / row_v;
    let kv_row = hkv * row_v;

    // Q rows (zero past the block) into the last `bq` rows of the K stages ([`q_row0`]), the
    // first V tile into the first V stage, the first K tile into the first K stage (after the
    // Q fragments are read where Q overlaps it).
    #[unroll]
    for t in 0..comptime!(rows(planes) / (PLANE * planes / (d / vec))) {
        let r = row0 + t * rstep;
        let mut val = Vector::<F, V>::zeroed();
        if r < nq {
            val = q[((q0 + r) * hq + h) * row_v + col];
        }
        kt[q_base + r * ks_v + col] = val;
    }
    let mut rk = Array::<Vector<F, V>>::new(per);
    let mut rv = Array::<Vector<F, V>>::new(per);
    let first = ((k0 + key_lo) * hkv + kvh) * row_v + col;
    let n_first = key_hi - key_lo;
    load_regs::<F, V>(k, &mut rk, first, kv_row, row0, n_first, rstep, per);
    load_regs::<F, V>(value, &mut rv, first, kv_row, row0, n_first, rstep, per);
    store_regs::<F, V>(&mut vt, &rv, 0usize, ks_v, col, row0, n_first, rstep, per);
    if !overlap {
        store_regs::<F, V>(&mut kt, &rk, 0usize, ks_v, col, row0, n_first, rstep, per);
    }
    sync_cube();

    let strip0 = plane * FRAG;
    let mut qf = Sequence::<Array<Vector<F, P2>>>::new();
    #[unroll]
    for dk in 0..comptime!(d / FRAG) {
        qf.push(load_frag::<F, V>(&kt, q_base * vec + strip0 * ks + q_lane(lane, ks) + dk * FRAG, vec, false));
    }
    let mut of = Sequence::<Array<Vector<f32, P2>>>::new();
    #[unroll]
    for _dn in 0..comptime!(d / TN) {
        of.push(acc_zero());
    }
    // Every plane holds its Q fragments before the K stages are overwritten.
    sync_cube();
    if overlap {
        store_regs::<F, V>(&mut kt, &rk, 0usize, ks_v, col, row0, n_first, rstep, per);
        sync_cube();
    }

    let def = MmaDefinition::<F, F, f32>::new(FRAG, TN, FRAG);
    let g = lane / 4;
    let quad = lane % 4;
    let kl = k_lane(lane, ks);
    let vl = v_lane(lane, ks);
    // Per fragment row half (rows `g`, `g + 8` of the strip): running max, the lane's part of
    // the running sum, the block's max, correction and sum.
    let mut m_run = Array::<f32>::new(2usize);
    let mut l_run = Array::<f32>::new(2usize);
    let mut mx = Array::<f32>::new(2usize);
    let mut corr = Array::<f32>::new(2usize);
    let mut sum = Array::<f32>::new(2usize);
    let mut base = Array::<f32>::new(2usize);
    #[unroll]
    for r in 0..2usize {
        m_run[r] = masked;
        l_run[r] = 0.0;
    }

    // Rows of the block see every key of a block `kb..kb + BK` past these bounds (cube-uniform).
    let diag_first = i0 + lk - lq;
    let diag_last = i0 + nq as i32 - 1 + lk - lq;

    let mut kb = key_lo;
    let mut stage = 0usize;
    while kb < key_hi {
        let next = kb + BK;
        let more = next < key_hi;
        let cur = stage * tile_v * vec;
        let other = (1 - stage) * tile_v;
        let src = ((k0 + next) * hkv + kvh) * row_v + col;
        if more {
            load_regs::<F, V>(k, &mut rk, src, kv_row, row0, key_hi - next, rstep, per);
        }

        // S = Q·Kᵀ: k16 steps outside, so consecutive mma write different accumulators.
        let mut sf = Sequence::<Array<Vector<f32, P2>>>::new();
        #[unroll]
        for _nt in 0..comptime!(BK / TN) {
            sf.push(acc_zero());
        }
        #[unroll]
        for dk in 0..comptime!(d / FRAG) {
            #[unroll]
            for kn in 0..comptime!(BK / FRAG) {
                let b = load_frag::<F, V>(&kt, cur + kl + kn * FRAG * ks + dk * FRAG, vec, false);
                def.execute_inplace(qf.index(dk), &half::<F>(&b, 0usize), sf.index_mut(2 * kn));
                def.execute_inplace(qf.index(dk), &half::<F>(&b, 2usize), sf.index_mut(2 * kn + 1));
            }
        }

        if more {
            store_regs::<F, V>(&mut kt, &rk, other, ks_v, col, row0, key_hi - next, rstep, per);
            load_regs::<F, V>(value, &mut rk, src, kv_row, row0, key_hi - next, rstep, per);
        }

        let last = (kb + BK - 1) as i32;
        let mut full = !colr && kb + BK <= key_hi;
        if causal {
            full = full && last <= diag_first;
        }
        if window {
            full = full && (kb as i32) >= diag_last - left && last <= diag_first + right;
        }

        // Scale, softcap, mask; the rows' block max.
        #[unroll]
        for r in 0..2usize {
            mx[r] = masked;
        }
        #[unroll]
        for nt in 0..comptime!(BK / TN) {
            let tile = sf.index_mut(nt);
            #[unroll]
            for r in 0..2usize {
                let mut pair = tile[r];
                #[unroll]
                for e in 0..2usize {
                    let mut s = pair[e] * scale;
                    if capped {
                        s = softcap * f32::tanh(s / softcap);
                    }
                    if !full {
                        // NOTE: cubecl evaluates both sides of `&&`; the range read must sit
                        // behind a branch to stay inside `ranges` (the kernel runs unchecked).
                        let qr = strip0 + g + r * TN;
                        let j = kb + nt * TN + quad * 2 + e;
                        let mut ok = false;
                        if qr < nq && j < key_hi {
                            ok = allowed(
                                ranges,
                                i0 + qr as i32,
                                j as i32,
                                lq,
                                lk,
                                k0 + j,
                                total_k,
                                left,
                                right,
                                causal,
                                window,
                                colr,
                            );
                        }
                        if !ok {
                            s = masked;
                        }
                    }
                    pair[e] = s;
                    mx[r] = f32::max(mx[r], s);
                }
                tile[r] = pair;
            }
        }

        // New running max per row (a quad shares a row); rescale the accumulators.
        // NOTE: masked scores never count (as the cmma kernel's `s > MASKED` guard): P is
        // `e^(s - base)` with `base` the running max, or 0 while the row has seen no
        // allowed key (max still MASKED), so a masked score gives `e^(MASKED - base) = 0`
        // even in a row whose first blocks are all masked (FlashMask, window). A row with
        // no allowed key at all never reaches the kernel: `validate` answers
        // `Error::EmptyMaskRow` (the cmma and portable kernels rely on the same).
        #[unroll]
        for r in 0..2usize {
            let mut m = f32::max(mx[r], plane_shuffle_xor(mx[r], 1u32));
            m = f32::max(m, plane_shuffle_xor(m, 2u32));
            let m_new = f32::max(m_run[r], m);
            corr[r] = fast_exp(m_run[r] - m_new);
            m_run[r] = m_new;
            base[r] = m_new;
            if m_new == masked {
                base[r] = 0.0;
            }
            sum[r] = 0.0;
        }
        #[unroll]
        for dn in 0..comptime!(d / TN) {
            let acc = of.index_mut(dn);
            #[unroll]
            for r in 0..2usize {
                let mut pair = acc[r];
                pair[0usize] = pair[0usize] * corr[r];
                pair[1usize] = pair[1usize] * corr[r];
                acc[r] = pair;
            }
        }

        // P = e^(S - m) in place, the lane's row sums.
        #[unroll]
        for nt in 0..comptime!(BK / TN) {
            let tile = sf.index_mut(nt);
            #[unroll]
            for r in 0..2usize {
                let mut pair = tile[r];
                #[unroll]
                for e in 0..2usize {
                    let p = fast_exp(pair[e] - base[r]);
                    pair[e] = p;
                    sum[r] += p;
                }
                tile[r] = pair;
            }
        }
        #[unroll]
        for r in 0..2usize {
            l_run[r] = l_run[r] * corr[r] + sum[r];
        }

        // O += P·V: the C registers of tiles 2kk, 2kk + 1 are the A fragment of step kk.
        #[unroll]
        for kk in 0..comptime!(BK / FRAG) {
            let pa = p_frag::<F>(sf.index(2 * kk), sf.index(2 * kk + 1));
            #[unroll]
            for dn in 0..comptime!(d / FRAG) {
                let b = load_frag::<F, V>(&vt, cur + vl + kk * FRAG * ks + dn * FRAG, vec, true);
                def.execute_inplace(&pa, &half::<F>(&b, 0usize), of.index_mut(2 * dn));
                def.execute_inplace(&pa, &half::<F>(&b, 2usize), of.index_mut(2 * dn + 1));
            }
        }

        if more {
            store_regs::<F, V>(&mut vt, &rk, other, ks_v, col, row0, key_hi - next, rstep, per);
        }
        // The next stages are complete and every plane is done with the current ones.
        sync_cube();
        kb = next;
        stage = 1 - stage;
    }

    // Epilogue: row sums over the quad, O / l straight from the registers, lse = m + ln(l).
    #[unroll]
    for r in 0..2usize {
        let mut l = l_run[r] + plane_shuffle_xor(l_run[r], 1u32);
        l += plane_shuffle_xor(l, 2u32);
        let qr = strip0 + g + r * TN;
        if qr < nq {
            let inv = 1.0f32 / l;
            let out = ((q0 + qr) * hq + h) * d + quad * 2;
            #[unroll]
            for dn in 0..comptime!(d / TN) {
                let pair = of.index(dn)[r];
                o[out + dn * TN] = F::cast_from(pair[0usize] * inv);
                o[out + dn * TN + 1] = F::cast_from(pair[1usize] * inv);
            }
            if quad == 0 {
                lse[h * total_q as usize + q0 + qr] = m_run[r] + f32::ln(l);
            }
        }
    }
}

/// Loads this unit's vectors of one K or V tile into `regs`: the vector at `src` (vector
/// index of the tile's row 0 plus the unit's column) of rows `row0 + t·rstep`, `t < per`,
/// `kv_row` vectors apart; rows at or past `n` read vector 0 (in bounds: a block has keys)
/// and [`store_regs`] stores zero for them.
#[cube]
#[allow(clippy::too_many_arguments)]
fn load_regs<F: Float, V: Size>(
    src_arr: &Array<Vector<F, V>>,
    regs: &mut Array<Vector<F, V>>,
    src: usize,
    kv_row: usize,
    row0: usize,
    n: usize,
    #[comptime] rstep: usize,
    #[comptime] per: usize,
) {
    #[unroll]
    for t in 0..per {
        let rr = row0 + t * rstep;
        let mut at = 0usize;
        if rr < n {
            at = src + rr * kv_row;
        }
        regs[t] = src_arr[at];
    }
}

/// Stores `regs` (see [`load_regs`]) into the stage starting at vector `base`: row `row0 +
/// t·rstep`, column `col`, zero for rows at or past `n`.
#[cube]
#[allow(clippy::too_many_arguments)]
fn store_regs<F: Float, V: Size>(
    stage: &mut SharedMemory<Vector<F, V>>,
    regs: &Array<Vector<F, V>>,
    base: usize,
    #[comptime] ks_v: usize,
    col: usize,
    row0: usize,
    n: usize,
    #[comptime] rstep: usize,
    #[comptime] per: usize,
) {
    #[unroll]
    for t in 0..per {
        let rr = row0 + t * rstep;
        let at = base + rr * ks_v + col;
        if rr < n {
            stage[at] = regs[t];
        } else {
            stage[at] = Vector::<F, V>::zeroed();
        }
    }
}

/// A zeroed m16n8 accumulator (2 vectors of 2 f32 per lane: rows `l/4` and `l/4 + 8`).
#[cube]
fn acc_zero() -> Array<Vector<f32, P2>> {
    let mut c = Array::<Vector<f32, P2>>::new(2usize);
    c[0usize] = Vector::<f32, P2>::zeroed();
    c[1usize] = Vector::<f32, P2>::zeroed();
    c
}

/// Four 8×8 matrices by one `ldmatrix.x4` (`.trans` with `trans`) from `stage`, this lane's
/// row starting at element `at` (a multiple of 8: 16-byte aligned).
#[cube]
fn load_frag<F: Float, V: Size>(
    stage: &SharedMemory<Vector<F, V>>,
    at: usize,
    #[comptime] vec: usize,
    #[comptime] trans: bool,
) -> Array<Vector<F, P2>> {
    let def = MmaDefinition::<F, F, f32>::new(FRAG, TN, FRAG);
    let row = stage.slice(at / vec, at / vec + 1);
    def.load_matrix::<Vector<F, V>, P2>(&row, MatrixIdent::A, 4usize, trans)
}

/// Registers `i, i + 1` of an `ldmatrix.x4` result: one n8 tile's B fragment.
#[cube]
fn half<F: Float>(regs: &Array<Vector<F, P2>>, #[comptime] i: usize) -> Array<Vector<F, P2>> {
    let mut b = Array::<Vector<F, P2>>::new(2usize);
    b[0usize] = regs[i];
    b[1usize] = regs[i + 1];
    b
}

/// The A fragment of a k16 step from the probabilities of its two n8 key tiles (`lo`: keys
/// 0-7, `hi`: 8-15), converted: `a0 a1` = row `l/4`, keys `2(l%4)..`: `lo`'s first pair;
/// `a2 a3` = row `l/4 + 8`: `lo`'s second; `a4..a7`: the same of `hi`.
#[cube]
fn p_frag<F: Float>(lo: &Array<Vector<f32, P2>>, hi: &Array<Vector<f32, P2>>) -> Array<Vector<F, P2>> {
    let mut a = Array::<Vector<F, P2>>::new(4usize);
    a[0usize] = Vector::<F, P2>::cast_from(lo[0usize]);
    a[1usize] = Vector::<F, P2>::cast_from(lo[1usize]);
    a[2usize] = Vector::<F, P2>::cast_from(hi[0usize]);
    a[3usize] = Vector::<F, P2>::cast_from(hi[1usize]);
    a
}

#[cfg(test)]
#[path = "mma_emulate.rs"]
mod emulate;

#[cfg(all(test, feature = "cubecl-cuda", feature = "cubecl-wgpu"))]
#[path = "mma_source.rs"]
mod source;
