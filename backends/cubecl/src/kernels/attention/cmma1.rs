//! The first matrix-instruction flash attention (kept behind `MOEKIT_CUBECL_ATTN=cmma1`; the
//! default is [`super::cmma`]): element-wise (2-byte) K/V copies, one tile at a time, the
//! softmax's scores stored back to shared memory between its two passes. Verified on the H200
//! (9.03 ms on B4 Hq32 Hkv8 S4096 D128 causal bf16).
//!
//! A cube of [`PLANES`] planes of 32 lanes owns [`BQ`] query rows of one (query block, head);
//! plane `w` owns the 16-row strip `16w..16w + 16` and keeps its Q fragments `[16, D]` and
//! its output accumulators `[16, D]` in registers across the key blocks. Per block of [`BK`]
//! keys:
//! 1. the cube copies the K and V tiles `[BK, D]` to shared memory (zero past the range);
//! 2. each plane computes its scores `S [16, BK] = Q·Kᵀ` and stores them (f32) to its own
//!    shared strip;
//! 3. lanes `2r, 2r + 1` own row `r` of the strip (even / odd columns): scale, softcap, mask,
//!    row max (one shuffle), `P = exp(S - m)` written as the input dtype, row sum;
//! 4. when some row's max grew by more than [`RESCALE_AT`] (natural log units), the plane
//!    stores its accumulators to the shared strip, scales the rows and reloads them;
//!    otherwise the running max stays, so `P <= e^RESCALE_AT` (exact after the final
//!    division; it only saves the rescale);
//! 5. `O += P·V`.
//!
//! The epilogue stores the accumulators to the shared strip in halves of 64 columns, divides
//! each row by its sum and writes them with coalesced stores; `lse = m + ln(l)`.
//!
//! Shared memory (bytes): K and V tiles `2·BK·(D + 8)·2`, score strips `BQ·(BK + 4)·4`,
//! probability strips `BQ·(BK + 8)·2`: 60 KiB at D = 128, 44 KiB at D = 64.
//!
//! The kernel is launched unchecked (no bounds checks): every global read is guarded by the
//! block's row count or key count, FlashMask reads sit behind `j < key_hi`, and every shared
//! index stays inside its tile. The exponentials use the fast intrinsic (`__expf` on CUDA).
//!
//! NOTE: wmma fragments need 32-byte aligned tile starts and strides that are multiples of
//! 16 bytes: every offset below is a multiple of 16 rows of a padded stride or of 16 columns.

use super::cmma::{fast_exp, scale_row, BK, BQ, PLANE, PLANES, RESCALE_AT};
use super::{allowed, BLOCK_ENTRIES, MASKED};
use cubecl::cmma;
use cubecl::ir::ElemType;
use cubecl::prelude::*;

/// See the module doc. Launch with `(blocks, Hq)` cubes of `(PLANE, PLANES)` units; the block
/// table is [`super::BLOCK_ENTRIES`] entries per block of [`BQ`] rows.
///
/// `q [Tq, Hq, D]`, `k, v [Tk, Hkv, D]`, `table [blocks · BLOCK_ENTRIES] i32`, `ranges
/// [4, Tk] i32` (a placeholder without `colr`), outputs `o [Tq, Hq, D]`, `lse [Hq, Tq] f32`.
#[cube(launch_unchecked)]
#[allow(clippy::too_many_arguments)]
pub(crate) fn attention_cmma1_kernel<F: Float>(
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
    let ks = comptime!(d + 8);
    let ss_stride = comptime!(BK + 4);
    let ps_stride = comptime!(BK + 8);
    let dt = comptime!(d / 16);
    let kt_n = comptime!(BK / 16);

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

    let mut kt = SharedMemory::<F>::new_aligned(comptime!(BK * (d + 8)), 32usize);
    let mut vt = SharedMemory::<F>::new_aligned(comptime!(BK * (d + 8)), 32usize);
    let mut ss = SharedMemory::<f32>::new_aligned(comptime!(BQ * (BK + 4)), 32usize);
    let mut ps = SharedMemory::<F>::new_aligned(comptime!(BQ * (BK + 8)), 32usize);

    // Unit `unit` copies column `unit % D` of rows `unit / D, unit / D + step, ..`.
    let step = comptime!(PLANE * PLANES / d);
    let col = unit % d;
    let row0 = unit / d;

    // Query rows of the cube (zero past the block), staged in the K tile.
    for t in 0..comptime!(BQ / (PLANE * PLANES / d)) {
        let r = row0 + t * step;
        let mut val = F::new(0.0);
        if r < nq {
            val = q[((q0 + r) * hq + h) * d + col];
        }
        kt[r * ks + col] = val;
    }
    sync_cube();

    let strip0 = plane * 16;
    let active = strip0 < nq;
    let s_base = strip0 * ss_stride;
    let p_base = strip0 * ps_stride;
    let mut qf = Sequence::<cmma::Matrix<F>>::new();
    let mut of = Sequence::<cmma::Matrix<f32>>::new();
    #[unroll]
    for dk in 0..dt {
        let off = strip0 * ks + dk * 16;
        qf.push(cmma::Matrix::<F>::from_slice(
            cmma::MatrixIdent::A,
            16usize,
            16usize,
            16usize,
            cmma::MatrixLayout::RowMajor,
            &kt.slice(off, comptime!(BK * (d + 8))),
            comptime!((d + 8) as u32),
        ));
        of.push(cmma::Matrix::<f32>::from_value(
            cmma::MatrixIdent::Accumulator,
            16usize,
            16usize,
            16usize,
            cmma::MatrixLayout::Undefined,
            0.0,
        ));
    }
    sync_cube();

    // Row `r` of the plane's strip belongs to lanes `2r` (even columns) and `2r + 1` (odd).
    let r = lane / 2;
    let part = lane % 2;
    let qr = strip0 + r;
    let i = i0 + qr as i32;
    let mut m_run = masked;
    let mut l_run = 0.0f32;

    // Rows of the block see every key of a block `kb..kb + BK` past these bounds (cube-uniform).
    let diag_first = i0 + lk - lq;
    let diag_last = i0 + nq as i32 - 1 + lk - lq;

    let mut kb = key_lo;
    while kb < key_hi {
        let n = key_hi - kb;
        let src0 = ((k0 + kb) * hkv + kvh) * d + col;
        for t in 0..comptime!(BK / (PLANE * PLANES / d)) {
            let rr = row0 + t * step;
            let mut kval = F::new(0.0);
            let mut vval = F::new(0.0);
            if rr < n {
                let at = src0 + rr * hkv * d;
                kval = k[at];
                vval = v[at];
            }
            kt[rr * ks + col] = kval;
            vt[rr * ks + col] = vval;
        }
        sync_cube();

        if active {
            let last = (kb + BK - 1) as i32;
            let mut full = !colr && kb + BK <= key_hi;
            if causal {
                full = full && last <= diag_first;
            }
            if window {
                full = full && (kb as i32) >= diag_last - left && last <= diag_first + right;
            }

            // S = Q·Kᵀ, strip by strip of 16 keys.
            #[unroll]
            for kn in 0..kt_n {
                let acc = cmma::Matrix::<f32>::from_value(
                    cmma::MatrixIdent::Accumulator,
                    16usize,
                    16usize,
                    16usize,
                    cmma::MatrixLayout::Undefined,
                    0.0,
                );
                #[unroll]
                for dk in 0..dt {
                    let kf = cmma::Matrix::<F>::from_slice(
                        cmma::MatrixIdent::B,
                        16usize,
                        16usize,
                        16usize,
                        cmma::MatrixLayout::ColMajor,
                        &kt.slice(kn * 16 * ks + dk * 16, comptime!(BK * (d + 8))),
                        comptime!((d + 8) as u32),
                    );
                    cmma::execute::<F, F, f32, f32>(&qf[dk], &kf, &acc, &acc);
                }
                cmma::store(
                    &mut ss.slice_mut(s_base + kn * 16, comptime!(BQ * (BK + 4))),
                    &acc,
                    comptime!((BK + 4) as u32),
                    cmma::MatrixLayout::RowMajor,
                );
            }
            sync_plane();

            // Scores of the lane's half row: scale, softcap, mask; the row max.
            let row_s = s_base + r * ss_stride;
            let mut mx = masked;
            for t in 0..comptime!(BK / 2) {
                let c = part + 2 * t;
                let mut s = ss[row_s + c] * scale;
                if capped {
                    s = softcap * f32::tanh(s / softcap);
                }
                if !full {
                    // NOTE: cubecl evaluates both sides of `&&`; the range read must sit
                    // behind a branch to stay inside `ranges` (the kernel runs unchecked).
                    let j = kb + c;
                    let mut ok = false;
                    if qr < nq && j < key_hi {
                        ok = allowed(ranges, i, j as i32, lq, lk, k0 + j, total_k, left, right, causal, window, colr);
                    }
                    if !ok {
                        s = masked;
                    }
                }
                ss[row_s + c] = s;
                mx = f32::max(mx, s);
            }
            mx = f32::max(mx, plane_shuffle_xor(mx, 1u32));

            // The running max moves only when it must (see RESCALE_AT); a row that saw no key
            // yet takes the block's max (its accumulator and sum are zero).
            let grows = mx > m_run + RESCALE_AT;
            let need = m_run > masked && grows;
            let mut m_use = m_run;
            let mut corr = 1.0f32;
            if need {
                m_use = mx;
                corr = fast_exp(m_run - mx);
            }
            if m_run == masked {
                m_use = mx;
            }

            let row_p = p_base + r * ps_stride;
            let mut sum = 0.0f32;
            for t in 0..comptime!(BK / 2) {
                let c = part + 2 * t;
                let s = ss[row_s + c];
                let mut p = 0.0f32;
                if s > masked {
                    p = fast_exp(s - m_use);
                }
                ps[row_p + c] = F::cast_from(p);
                sum += p;
            }
            sum += plane_shuffle_xor(sum, 1u32);
            l_run = l_run * corr + sum;
            m_run = m_use;

            if plane_any(need) {
                #[unroll]
                for half in 0..comptime!(d / 64) {
                    sync_plane();
                    #[unroll]
                    for n4 in 0..4usize {
                        cmma::store(
                            &mut ss.slice_mut(s_base + n4 * 16, comptime!(BQ * (BK + 4))),
                            &of[half * 4 + n4],
                            comptime!((BK + 4) as u32),
                            cmma::MatrixLayout::RowMajor,
                        );
                    }
                    sync_plane();
                    scale_row(&mut ss, row_s, part, corr);
                    sync_plane();
                    #[unroll]
                    for n4 in 0..4usize {
                        cmma::load_with_layout(
                            &of[half * 4 + n4],
                            &ss.slice(s_base + n4 * 16, comptime!(BQ * (BK + 4))),
                            comptime!((BK + 4) as u32),
                            cmma::MatrixLayout::RowMajor,
                        );
                    }
                }
            }
            sync_plane();

            // O += P·V.
            #[unroll]
            for kk in 0..kt_n {
                let pf = cmma::Matrix::<F>::from_slice(
                    cmma::MatrixIdent::A,
                    16usize,
                    16usize,
                    16usize,
                    cmma::MatrixLayout::RowMajor,
                    &ps.slice(p_base + kk * 16, comptime!(BQ * (BK + 8))),
                    comptime!((BK + 8) as u32),
                );
                #[unroll]
                for dn in 0..dt {
                    let vf = cmma::Matrix::<F>::from_slice(
                        cmma::MatrixIdent::B,
                        16usize,
                        16usize,
                        16usize,
                        cmma::MatrixLayout::RowMajor,
                        &vt.slice(kk * 16 * ks + dn * 16, comptime!(BK * (d + 8))),
                        comptime!((d + 8) as u32),
                    );
                    cmma::execute::<F, F, f32, f32>(&pf, &vf, &of[dn], &of[dn]);
                }
            }
        }
        sync_cube();
        kb += BK;
    }

    // Epilogue: O / l through the shared strip, 64 columns at a time, coalesced stores.
    if active {
        let row_s = s_base + r * ss_stride;
        let inv = 1.0f32 / l_run;
        #[unroll]
        for half in 0..comptime!(d / 64) {
            sync_plane();
            #[unroll]
            for n4 in 0..4usize {
                cmma::store(
                    &mut ss.slice_mut(s_base + n4 * 16, comptime!(BQ * (BK + 4))),
                    &of[half * 4 + n4],
                    comptime!((BK + 4) as u32),
                    cmma::MatrixLayout::RowMajor,
                );
            }
            sync_plane();
            scale_row(&mut ss, row_s, part, inv);
            sync_plane();
            for rr in 0..16usize {
                let row = strip0 + rr;
                if row < nq {
                    let out = ((q0 + row) * hq + h) * d + half * 64;
                    let src = s_base + rr * ss_stride;
                    o[out + lane] = F::cast_from(ss[src + lane]);
                    o[out + lane + 32] = F::cast_from(ss[src + lane + 32]);
                }
            }
        }
        if part == 0 && qr < nq {
            lse[h * total_q as usize + q0 + qr] = m_run + f32::ln(l_run);
        }
    }
}
