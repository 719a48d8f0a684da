//! Flash-attention forward (FlashAttention-2 style) through cubecl's manual MMA API
//! ([`MmaDefinition`]: `ldmatrix` fragment loads from shared memory, `mma.sync` m16n8k16,
//! f16/bf16 inputs, f32 accumulators): the default attention kernel where the runtime has
//! manual MMA (`crate::ops::attention` picks it), with the same arguments, block table and
//! semantics as [`super::cmma`].
//!
//! A cube of `planes` planes of 32 lanes ([`PLANES`] by default: 2.9 ms on the H200's
//! benchmark, 168 registers, 3 cubes per SM; [`PLANES_WIDE`] with `MOEKIT_CUBECL_ATTN=mma8`:
//! 3.2 ms) owns [`rows`]`(planes)` query rows of one (query block, head);
//! plane `w` owns rows `16w..16w + 16` and keeps in registers, across the key blocks, its Q
//! fragments (`D/16` A fragments, 4 registers each), its output accumulators (`D/8` m16n8
//! tiles) and per row the running max and the lane's part of the running sum.
//!
//! K and V tiles go straight from global to shared memory by asynchronous copies
//! (`cp.async.cg`, 16 bytes, zero-filled for keys past the block's range): no staging
//! registers, no shared stores. `NS` = [`stages`]`(planes)` stages (2 with 4 planes, 3 with 8)
//! each hold one block's K and V tiles; stage `s` has a cube barrier to which every unit
//! commits its copies into the stage (`cp.async.mbarrier.arrive`). Per block of [`BK`] keys,
//! in stage `i % NS` for the block `i` of the cube's key range:
//! 1. arrive and wait on the stage's barrier: the block has landed, and every unit has
//!    finished the previous block, so its stage takes the copies of block `i + NS - 1`
//!    (issued now: `NS - 1` blocks of matrix work to land behind); no other cube barrier in
//!    the loop;
//! 2. the scores `S [16, BK] = Q·Kᵀ` are accumulated in `BK/8` m16n8 tiles (K fragments by
//!    `ldmatrix`, no transpose);
//! 3. online softmax on the accumulator registers: lane `l` holds rows `l/4` and `l/4 + 8`,
//!    columns `2(l%4) + {0, 1}` of every n8 tile, so a row's max and sum need two shuffles
//!    among the four lanes of a quad; scale, softcap and mask (only on blocks that cut a
//!    row's key range), `m_new = max(m, rowmax)`, the accumulators scaled by `e^(m - m_new)`
//!    (skipped by a plane none of whose rows' maxima moved: the factors are exactly 1),
//!    `P = e^(S - m_new)` (the fast intrinsic; masked scores give exactly 0, also while a
//!    row has seen no allowed key);
//! 4. `O += P·V` with P converted to the input dtype in registers: the C registers of the n8
//!    tiles `2kk, 2kk + 1` are the A fragment of the k16 step `kk` (no shared round trip);
//!    V fragments by `ldmatrix.trans`.
//!
//! Q is copied once (zeros past the block's rows) into the last stage ([`q_row0`]: its K
//! tile with 4 planes, K and V with 8), committed to that stage's barrier, and read into
//! registers after a wait on it, before the loop, while the first `NS - 1` blocks are in
//! flight; the stage's first refill (block `NS - 1`) comes after the first block's wait,
//! which every unit reaches after its Q reads. The emulation (`mma_emulate.rs`) checks this
//! schedule against a model of the barriers.
//!
//! Blocks past a row's causal / window range are never visited (the block table's key range);
//! rows past the block (`nq`) compute on zero queries and write nothing. The host orders the
//! blocks longest key range first (see `ops::attention`), so a launch does not end on the
//! longest cubes.
//!
//! Shared memory (bytes): 32 (the barriers) `+ NS · 2 (K, V) · BK · (D + 8) · 2`: with 4
//! planes 68 KiB at D = 128, 36 KiB at D = 64; with 8 planes 102 KiB and 54 KiB. The
//! `+ 8` pad makes the eight 16-byte rows of every `ldmatrix` 8×8 matrix fall in distinct
//! banks.
//!
//! The kernel is launched unchecked: global reads are guarded by the block's row and key
//! counts (a vector past them is a copy of 0 bytes from element 0: zeros), FlashMask reads
//! sit behind `j < key_hi`, shared indices stay inside the stages.

use super::cmma::{fast_exp, BK, PLANE};
use super::{allowed, nan, BLOCK_ENTRIES, MASKED};
use cubecl::cmma::{MatrixIdent, MmaDefinition};
use cubecl::ir::ElemType;
use cubecl::prelude::barrier::{copy_async_checked, Barrier};
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

/// Shared K/V stages with `planes` planes: blocks `kb + BK .. kb + (stages - 1)·BK` are in
/// flight while block `kb` is read. Two with [`PLANES`], three with [`PLANES_WIDE`].
///
/// NOTE: occupancy decides. At D = 128 the 4-plane kernel fits three cubes (12 planes) per
/// H200 SM by registers where ptxas gives it at most 168 a unit (168 with NVRTC 12.8); three
/// stages (102 KiB) would leave room for two. One block ahead is enough for a cube sharing
/// its SM with two others. The 8-plane kernel (over 170 registers) runs one cube per SM
/// whatever its stages, and with no other cube to switch to, its waits gain most from a
/// second block in flight.
pub(crate) const fn stages(planes: usize) -> usize {
    if planes == PLANES {
        2
    } else {
        3
    }
}

/// `ldmatrix` fragment loads issued ahead of the mma that use them with `planes` planes
/// (see the loop): none with [`PLANES`], two with [`PLANES_WIDE`].
///
/// NOTE: with its loads ahead, ptxas (NVRTC 12.8) gives the 4-plane kernel 173 registers,
/// past the 168 of its third cube per SM (see [`stages`]), and without, 168; the 8-plane
/// kernel, one cube per SM, has registers to spare (201 with its loads ahead) but no other
/// cube's planes to hide its loads behind.
pub(crate) const fn frag_ahead(planes: usize) -> usize {
    if planes == PLANES {
        0
    } else {
        2
    }
}

/// Step `i` of `Q·Kᵀ` in the loads-ahead loop: `(dk, kn)`, the k16 step of the head dim and
/// the pair of n8 key tiles, in the order of the nested loops (`dk` outer).
pub(crate) const fn k_step(i: usize) -> (usize, usize) {
    (i / (BK / FRAG), i % (BK / FRAG))
}

/// Step `i` of `P·V` at head dim `d` in the loads-ahead loop: `(kk, dn)`, the k16 key step and
/// the pair of n8 head-dim tiles, in the order of the nested loops (`kk` outer).
pub(crate) const fn v_step(i: usize, d: usize) -> (usize, usize) {
    (i / (d / FRAG), i % (d / FRAG))
}

/// Bytes of shared memory before the stages: the three barriers (8 bytes each), the stages
/// being 32-byte aligned.
const BARRIER_BYTES: usize = 32;

/// First row (of the `2·BK` rows per stage, K then V) where the cube's Q rows are staged: the
/// last stage (its K tile with 4 planes, K and V with 8).
pub(crate) const fn q_row0(planes: usize) -> usize {
    (stages(planes) - 1) * 2 * BK
}

/// Shared memory of the kernel at head dim `d` with `planes` planes, bytes (see the module
/// doc).
pub(crate) fn shared_bytes_of(d: usize, planes: usize) -> usize {
    BARRIER_BYTES + stages(planes) * 2 * BK * (d + 8) * 2
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
    // Rows between two copies of one unit, copies per unit and K/V tile, and of Q.
    let rstep = comptime!(PLANE * planes / (d / vec));
    let per = comptime!(BK / (PLANE * planes / (d / vec)));
    let q_copies = comptime!(rows(planes) / (PLANE * planes / (d / vec)));
    let n_stages = comptime!(stages(planes));
    let ahead_n = comptime!(frag_ahead(planes));
    let three = comptime!(stages(planes) == 3);
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

    // Stage `s` = K tile at vector `s · 2 · tile_v`, V tile right after it.
    let mut kv = SharedMemory::<Vector<F, V>>::new_aligned(comptime!(stages(planes) * 2 * tile_v), 32usize);
    let bar0 = Barrier::shared(CUBE_DIM, UNIT_POS == 0);
    let bar1 = Barrier::shared(CUBE_DIM, UNIT_POS == 0);
    let bar2 = Barrier::shared(CUBE_DIM, UNIT_POS == 0);

    // The unit's copy slot: column `col` of rows `row0 + t·rstep` of every tile (and of Q).
    let col = unit % row_v;
    let row0 = unit / row_v;
    let slot0 = row0 * ks_v + col;
    let kv_row = hkv * row_v;
    let kv_step = kv_row * rstep;

    // Q (zero past the block) into the last stage, committed to its barrier; the first
    // `NS - 1` K/V blocks into stages `0..NS - 1` (see the module doc).
    let q_src = ((q0 + row0) * hq + h) * row_v + col;
    copy_tile::<F, V>(q, &mut kv, q_src, hq * row_v * rstep, q_base + slot0, row0, nq, rstep, ks_v, q_copies, vec);
    if three {
        bar2.commit_copy_async();
    } else {
        bar1.commit_copy_async();
    }
    let mut src = ((k0 + key_lo + row0) * hkv + kvh) * row_v + col;
    let n_first = key_hi - key_lo;
    copy_tile::<F, V>(k, &mut kv, src, kv_step, slot0, row0, n_first, rstep, ks_v, per, vec);
    copy_tile::<F, V>(value, &mut kv, src, kv_step, tile_v + slot0, row0, n_first, rstep, ks_v, per, vec);
    bar0.commit_copy_async();
    src += BK * kv_row;
    if three {
        if n_first > BK {
            let n = n_first - BK;
            let at = comptime!(2 * tile_v) + slot0;
            copy_tile::<F, V>(k, &mut kv, src, kv_step, at, row0, n, rstep, ks_v, per, vec);
            copy_tile::<F, V>(value, &mut kv, src, kv_step, at + tile_v, row0, n, rstep, ks_v, per, vec);
            bar1.commit_copy_async();
        }
        src += BK * kv_row;
    }

    // Q has landed: every plane reads its fragments (the last stage is refilled only after the
    // first block's wait, which every unit reaches after these reads).
    if three {
        bar2.arrive_and_wait();
    } else {
        bar1.arrive_and_wait();
    }
    let strip0 = plane * FRAG;
    let mut qf = Sequence::<Array<Vector<F, P2>>>::new();
    #[unroll]
    for dk in 0..comptime!(d / FRAG) {
        qf.push(load_frag::<F, V>(&kv, q_base * vec + strip0 * ks + q_lane(lane, ks) + dk * FRAG, vec, false));
    }
    let mut of = Sequence::<Array<Vector<f32, P2>>>::new();
    #[unroll]
    for _dn in 0..comptime!(d / TN) {
        of.push(acc_zero());
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
        // Block `kb` has landed in `stage`, and every unit is done with the previous block:
        // its stage takes block `kb + (NS - 1)·BK`.
        if stage == 0 {
            bar0.arrive_and_wait();
        } else if stage == 1 {
            bar1.arrive_and_wait();
        } else {
            bar2.arrive_and_wait();
        }
        let ahead = kb + comptime!((stages(planes) - 1) * BK);
        if ahead < key_hi {
            let mut fill = stage + comptime!(stages(planes) - 1);
            if fill >= n_stages {
                fill -= n_stages;
            }
            let at = fill * comptime!(2 * tile_v) + slot0;
            let n = key_hi - ahead;
            copy_tile::<F, V>(k, &mut kv, src, kv_step, at, row0, n, rstep, ks_v, per, vec);
            copy_tile::<F, V>(value, &mut kv, src, kv_step, at + tile_v, row0, n, rstep, ks_v, per, vec);
            if fill == 0 {
                bar0.commit_copy_async();
            } else if fill == 1 {
                bar1.commit_copy_async();
            } else {
                bar2.commit_copy_async();
            }
        }
        src += BK * kv_row;
        let cur = stage * comptime!(2 * tile_v * vec);
        let cur_v = cur + comptime!(tile_v * vec);

        // S = Q·Kᵀ: k16 steps outside, so consecutive mma write different accumulators.
        let mut sf = Sequence::<Array<Vector<f32, P2>>>::new();
        #[unroll]
        for _nt in 0..comptime!(BK / TN) {
            sf.push(acc_zero());
        }
        if comptime!(ahead_n == 0) {
            #[unroll]
            for dk in 0..comptime!(d / FRAG) {
                #[unroll]
                for kn in 0..comptime!(BK / FRAG) {
                    let b = load_frag::<F, V>(&kv, cur + kl + kn * FRAG * ks + dk * FRAG, vec, false);
                    def.execute_inplace(qf.index(dk), &half::<F>(&b, 0usize), sf.index_mut(2 * kn));
                    def.execute_inplace(qf.index(dk), &half::<F>(&b, 2usize), sf.index_mut(2 * kn + 1));
                }
            }
        } else {
            // The fragments of step `i` loaded with those of step `i - ahead_n`'s mma.
            let k_steps = comptime!((d / FRAG) * (BK / FRAG));
            let mut kf = Sequence::<Array<Vector<F, P2>>>::new();
            #[unroll]
            for i in 0..comptime!(k_steps + ahead_n) {
                if comptime!(i < k_steps) {
                    let (dk, kn) = comptime!(k_step(i));
                    kf.push(load_frag::<F, V>(&kv, cur + kl + kn * FRAG * ks + dk * FRAG, vec, false));
                }
                if comptime!(i >= ahead_n) {
                    let j = comptime!(i - ahead_n);
                    let (dk, kn) = comptime!(k_step(j));
                    let b = kf.index(j);
                    def.execute_inplace(qf.index(dk), &half::<F>(b, 0usize), sf.index_mut(2 * kn));
                    def.execute_inplace(qf.index(dk), &half::<F>(b, 2usize), sf.index_mut(2 * kn + 1));
                }
            }
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
        // NOTE: an unchanged max gives `corr = e^0 = 1` exactly; where no row of the plane
        // changed (most blocks once the rows' maxima settle) the plane skips the rescale.
        let mut same = true;
        #[unroll]
        for r in 0..2usize {
            let mut m = f32::max(mx[r], plane_shuffle_xor(mx[r], 1u32));
            m = f32::max(m, plane_shuffle_xor(m, 2u32));
            let m_new = f32::max(m_run[r], m);
            if m_new != m_run[r] {
                same = false;
            }
            corr[r] = fast_exp(m_run[r] - m_new);
            m_run[r] = m_new;
            base[r] = m_new;
            if m_new == masked {
                base[r] = 0.0;
            }
            sum[r] = 0.0;
        }
        if !plane_all(same) {
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
        if comptime!(ahead_n == 0) {
            #[unroll]
            for kk in 0..comptime!(BK / FRAG) {
                let pa = p_frag::<F>(sf.index(2 * kk), sf.index(2 * kk + 1));
                #[unroll]
                for dn in 0..comptime!(d / FRAG) {
                    let b = load_frag::<F, V>(&kv, cur_v + vl + kk * FRAG * ks + dn * FRAG, vec, true);
                    def.execute_inplace(&pa, &half::<F>(&b, 0usize), of.index_mut(2 * dn));
                    def.execute_inplace(&pa, &half::<F>(&b, 2usize), of.index_mut(2 * dn + 1));
                }
            }
        } else {
            // V fragments ahead, as K's.
            let v_steps = comptime!((BK / FRAG) * (d / FRAG));
            let mut pf = Sequence::<Array<Vector<F, P2>>>::new();
            #[unroll]
            for kk in 0..comptime!(BK / FRAG) {
                pf.push(p_frag::<F>(sf.index(2 * kk), sf.index(2 * kk + 1)));
            }
            let mut vf = Sequence::<Array<Vector<F, P2>>>::new();
            #[unroll]
            for i in 0..comptime!(v_steps + ahead_n) {
                if comptime!(i < v_steps) {
                    let (kk, dn) = comptime!(v_step(i, d));
                    vf.push(load_frag::<F, V>(&kv, cur_v + vl + kk * FRAG * ks + dn * FRAG, vec, true));
                }
                if comptime!(i >= ahead_n) {
                    let j = comptime!(i - ahead_n);
                    let (kk, dn) = comptime!(v_step(j, d));
                    let b = vf.index(j);
                    def.execute_inplace(pf.index(kk), &half::<F>(b, 0usize), of.index_mut(2 * dn));
                    def.execute_inplace(pf.index(kk), &half::<F>(b, 2usize), of.index_mut(2 * dn + 1));
                }
            }
        }

        kb += BK;
        stage += 1;
        if stage == n_stages {
            stage = 0;
        }
    }

    // Epilogue: row sums over the quad, O / l straight from the registers, lse = m + ln(l).
    #[unroll]
    for r in 0..2usize {
        let mut l = l_run[r] + plane_shuffle_xor(l_run[r], 1u32);
        l += plane_shuffle_xor(l, 2u32);
        let qr = strip0 + g + r * TN;
        if qr < nq {
            // NOTE: a row without a positive sum (every visible score -inf or at most MASKED,
            // or a NaN among them) gets NaN in o and lse (`moekit_ops::numerics`).
            let ok = l > 0.0f32;
            let mut inv = nan(l);
            if ok {
                inv = 1.0f32 / l;
            }
            let out = ((q0 + qr) * hq + h) * d + quad * 2;
            #[unroll]
            for dn in 0..comptime!(d / TN) {
                let pair = of.index(dn)[r];
                o[out + dn * TN] = F::cast_from(pair[0usize] * inv);
                o[out + dn * TN + 1] = F::cast_from(pair[1usize] * inv);
            }
            if quad == 0 {
                let mut out = nan(l);
                if ok {
                    out = m_run[r] + f32::ln(l);
                }
                lse[h * total_q as usize + q0 + qr] = out;
            }
        }
    }
}

/// Copies this unit's vectors of one tile (K or V block, or Q) into `smem`: `count` rows
/// `row0 + t·rstep`, the vector of row `t` from `src[from + t·stride]` to `smem[to + t·rstep·ks_v]`
/// by one 16-byte `cp.async`, zeros (a source of 0 bytes) for rows at or past `n`.
#[cube]
#[allow(clippy::too_many_arguments)]
fn copy_tile<F: Float, V: Size>(
    src: &Array<Vector<F, V>>,
    smem: &mut SharedMemory<Vector<F, V>>,
    from: usize,
    stride: usize,
    to: usize,
    row0: usize,
    n: usize,
    #[comptime] rstep: usize,
    #[comptime] ks_v: usize,
    #[comptime] count: usize,
    #[comptime] vec: usize,
) {
    // NOTE: rows are tested as `t·rstep < n - row0` (an immediate per copy), not with one
    // register per row.
    let mut avail = 0usize;
    if n > row0 {
        avail = n - row0;
    }
    #[unroll]
    for t in 0..count {
        let mut at = 0usize;
        let mut len = 0usize;
        if comptime!(t * rstep) < avail {
            at = from + t * stride;
            len = 1usize;
        }
        let to_t = to + comptime!(t * rstep * ks_v);
        let mut dst = smem.slice_mut(to_t, to_t + 1);
        copy_async_checked(&src.slice(at, at + len), &mut dst, comptime!(vec as u32));
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
