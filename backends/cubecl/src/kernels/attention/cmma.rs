//! Flash-attention forward on matrix instructions (`cmma`, 16×16×16, f16/bf16 in, f32
//! accumulators) for runtimes that have them, the default there; [`super`] keeps the portable
//! kernel. (The first version, element-wise copies and one tile at a time, took 8.82 ms on the
//! H200 where this one takes 5.28 ms: B4 Hq32 Hkv8 S4096 D128 causal bf16; it was removed.)
//!
//! A cube of [`PLANES`] planes of 32 lanes owns [`BQ`] query rows of one (query block, head);
//! plane `w` owns the 16-row strip `16w..16w + 16` and keeps its Q fragments `[16, D]` and
//! its output accumulators `[16, D]` in registers across the key blocks. Per block of [`BK`]
//! keys:
//! 1. the cube stores the K and V tiles `[BK, D]` it holds in registers to shared memory
//!    (zero past the range) and starts loading the next block's tiles into those registers,
//!    so the global latency hides behind steps 2-5;
//! 2. each plane computes its scores `S [16, BK] = Q·Kᵀ` and stores them (f32) to its own
//!    shared strip;
//! 3. lanes `2r, 2r + 1` own row `r` of the strip (even / odd columns): scale, softcap, mask,
//!    row max (one shuffle), `P = exp(S - m)` written as the input dtype, row sum; the lane's
//!    32 scores stay in registers between the two passes;
//! 4. when some row's max grew by more than [`RESCALE_AT`] (natural log units), the plane
//!    stores its accumulators to the shared strip, scales the rows and reloads them;
//!    otherwise the running max stays, so `P <= e^RESCALE_AT` (exact after the final
//!    division; it only saves the rescale);
//! 5. `O += P·V`.
//!
//! Q, K and V are read as vectors of `V` elements (8: 16 bytes), so `V` divides `D`; a unit
//! copies vector column `unit % (D/V)` of every `(units / (D/V))`-th row of a tile.
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

use super::{allowed, nan, BLOCK_ENTRIES, MASKED};
use cubecl::cmma;
use cubecl::cmma::{Matrix, MatrixIdent, MatrixLayout};
use cubecl::ir::ElemType;
use cubecl::prelude::*;

/// Planes per cube.
pub(crate) const PLANES: usize = 4;
/// Lanes per plane the kernel is written for (the lane-to-row mapping of the softmax).
pub(crate) const PLANE: usize = 32;
/// Query rows per cube.
pub(crate) const BQ: usize = 16 * PLANES;
/// Keys per block.
pub(crate) const BK: usize = 64;
/// Elements per vector of the Q/K/V reads (16 bytes of f16/bf16); divides every head dim the
/// selection lets through.
pub(crate) const VEC: usize = 8;
/// How far (natural log) a row's max may grow before the accumulators are rescaled.
pub(super) const RESCALE_AT: f32 = 8.0;

/// See the module doc. Launch with `(blocks, Hq)` cubes of `(PLANE, PLANES)` units and `V` =
/// [`VEC`]; the block table is [`super::BLOCK_ENTRIES`] entries per block of [`BQ`] rows.
///
/// `q [Tq, Hq, D]`, `k, value [Tk, Hkv, D]` (vectors of `V`), `table [blocks · BLOCK_ENTRIES]
/// i32`, `ranges [4, Tk] i32` (a placeholder without `colr`), outputs `o [Tq, Hq, D]`, `lse
/// [Hq, Tq] f32`.
#[cube(launch_unchecked)]
#[allow(clippy::too_many_arguments)]
pub(crate) fn attention_cmma_kernel<F: Float, V: Size>(
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
    let ss_stride = comptime!(BK + 4);
    let ps_stride = comptime!(BK + 8);
    let dt = comptime!(d / 16);
    let kt_n = comptime!(BK / 16);
    // Tiles in vectors: a row of q/k/v, a padded tile row, the whole tile.
    let row_v = comptime!(d / vec);
    let ks_v = comptime!((d + 8) / vec);
    let tile_v = comptime!(BK * (d + 8) / vec);
    // Rows between two copies of one unit, copies per unit and tile.
    let rstep = comptime!(PLANE * PLANES / (d / vec));
    let per = comptime!(BK / (PLANE * PLANES / (d / vec)));

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

    let mut kt = SharedMemory::<Vector<F, V>>::new_aligned(tile_v, 32usize);
    let mut vt = SharedMemory::<Vector<F, V>>::new_aligned(tile_v, 32usize);
    let mut ss = SharedMemory::<f32>::new_aligned(comptime!(BQ * (BK + 4)), 32usize);
    let mut ps = SharedMemory::<F>::new_aligned(comptime!(BQ * (BK + 8)), 32usize);

    let col = unit % row_v;
    let row0 = unit / row_v;
    let zero = Vector::<F, V>::zeroed();

    // Query rows of the cube (zero past the block), staged in the K tile.
    #[unroll]
    for t in 0..comptime!(BQ / (PLANE * PLANES / (d / vec))) {
        let r = row0 + t * rstep;
        let mut val = zero;
        if r < nq {
            val = q[((q0 + r) * hq + h) * row_v + col];
        }
        kt[r * ks_v + col] = val;
    }
    sync_cube();

    let strip0 = plane * 16;
    let active = strip0 < nq;
    let s_base = strip0 * ss_stride;
    let p_base = strip0 * ps_stride;
    let mut qf = Sequence::<Matrix<F>>::new();
    let mut of = Sequence::<Matrix<f32>>::new();
    #[unroll]
    for dk in 0..dt {
        let a =
            unsafe { Matrix::<F>::uninitialized(MatrixIdent::A, 16usize, 16usize, 16usize, MatrixLayout::RowMajor) };
        cmma::load(&a, &kt.slice((strip0 * ks + dk * 16) / vec, tile_v), comptime!(ks as u32));
        qf.push(a);
        of.push(Matrix::<f32>::from_value(
            MatrixIdent::Accumulator,
            16usize,
            16usize,
            16usize,
            MatrixLayout::Undefined,
            0.0,
        ));
    }
    let kf = unsafe { Matrix::<F>::uninitialized(MatrixIdent::B, 16usize, 16usize, 16usize, MatrixLayout::ColMajor) };
    let pf = unsafe { Matrix::<F>::uninitialized(MatrixIdent::A, 16usize, 16usize, 16usize, MatrixLayout::RowMajor) };
    let vf = unsafe { Matrix::<F>::uninitialized(MatrixIdent::B, 16usize, 16usize, 16usize, MatrixLayout::RowMajor) };

    // Row `r` of the plane's strip belongs to lanes `2r` (even columns) and `2r + 1` (odd).
    let r = lane / 2;
    let part = lane % 2;
    let qr = strip0 + r;
    let i = i0 + qr as i32;
    let mut m_run = masked;
    let mut l_run = 0.0f32;
    let row_s = s_base + r * ss_stride;
    let row_p = p_base + r * ps_stride;

    // Rows of the block see every key of a block `kb..kb + BK` past these bounds (cube-uniform).
    let diag_first = i0 + lk - lq;
    let diag_last = i0 + nq as i32 - 1 + lk - lq;

    // The first block's K and V tiles, into registers.
    let kv_row = hkv * row_v;
    let mut rk = Array::<Vector<F, V>>::new(per);
    let mut rv = Array::<Vector<F, V>>::new(per);
    load_tiles::<F, V>(
        k,
        value,
        &mut rk,
        &mut rv,
        ((k0 + key_lo) * hkv + kvh) * row_v + col,
        kv_row,
        row0,
        key_hi - key_lo,
        rstep,
        per,
    );
    let mut sc = Array::<f32>::new(comptime!(BK / 2));

    let mut kb = key_lo;
    while kb < key_hi {
        // Every plane is done with the previous tiles (and with the Q staging).
        sync_cube();
        #[unroll]
        for t in 0..per {
            let at = (row0 + t * rstep) * ks_v + col;
            kt[at] = rk[t];
            vt[at] = rv[t];
        }
        sync_cube();
        let next = kb + BK;
        if next < key_hi {
            load_tiles::<F, V>(
                k,
                value,
                &mut rk,
                &mut rv,
                ((k0 + next) * hkv + kvh) * row_v + col,
                kv_row,
                row0,
                key_hi - next,
                rstep,
                per,
            );
        }

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
                let acc = Matrix::<f32>::from_value(
                    MatrixIdent::Accumulator,
                    16usize,
                    16usize,
                    16usize,
                    MatrixLayout::Undefined,
                    0.0,
                );
                #[unroll]
                for dk in 0..dt {
                    cmma::load(&kf, &kt.slice((kn * 16 * ks + dk * 16) / vec, tile_v), comptime!(ks as u32));
                    cmma::execute::<F, F, f32, f32>(&qf[dk], &kf, &acc, &acc);
                }
                cmma::store(
                    &mut ss.slice_mut(s_base + kn * 16, comptime!(BQ * (BK + 4))),
                    &acc,
                    comptime!((BK + 4) as u32),
                    MatrixLayout::RowMajor,
                );
            }
            sync_plane();

            // Scores of the lane's half row: scale, softcap, mask; the row max.
            let mut mx = masked;
            #[unroll]
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
                sc[t] = s;
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

            let mut sum = 0.0f32;
            #[unroll]
            for t in 0..comptime!(BK / 2) {
                let s = sc[t];
                let mut p = 0.0f32;
                // NOTE: a NaN score is visible (it makes the row NaN, `moekit_ops::numerics`);
                // -inf, and any real score at or below MASKED, counts as masked.
                if s > masked || f32::is_nan(s) {
                    p = fast_exp(s - m_use);
                }
                ps[row_p + part + 2 * t] = F::cast_from(p);
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
                            MatrixLayout::RowMajor,
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
                            MatrixLayout::RowMajor,
                        );
                    }
                }
            }
            sync_plane();

            // O += P·V.
            #[unroll]
            for kk in 0..kt_n {
                cmma::load(&pf, &ps.slice(p_base + kk * 16, comptime!(BQ * (BK + 8))), comptime!((BK + 8) as u32));
                #[unroll]
                for dn in 0..dt {
                    cmma::load(&vf, &vt.slice((kk * 16 * ks + dn * 16) / vec, tile_v), comptime!(ks as u32));
                    cmma::execute::<F, F, f32, f32>(&pf, &vf, &of[dn], &of[dn]);
                }
            }
        }
        kb = next;
    }

    // Epilogue: O / l through the shared strip, 64 columns at a time, coalesced stores.
    if active {
        // NOTE: a row without a positive sum (every visible score -inf or at most MASKED, or a
        // NaN among them) gets NaN in o and lse.
        let ok = l_run > 0.0f32;
        let mut inv = nan(l_run);
        if ok {
            inv = 1.0f32 / l_run;
        }
        #[unroll]
        for half in 0..comptime!(d / 64) {
            sync_plane();
            #[unroll]
            for n4 in 0..4usize {
                cmma::store(
                    &mut ss.slice_mut(s_base + n4 * 16, comptime!(BQ * (BK + 4))),
                    &of[half * 4 + n4],
                    comptime!((BK + 4) as u32),
                    MatrixLayout::RowMajor,
                );
            }
            sync_plane();
            scale_row(&mut ss, row_s, part, inv);
            sync_plane();
            #[unroll]
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
            let mut out = nan(l_run);
            if ok {
                out = m_run + f32::ln(l_run);
            }
            lse[h * total_q as usize + q0 + qr] = out;
        }
    }
}

/// Loads one K and one V tile into registers: the unit's vector at `src` (vector index of
/// the tile's row 0 plus the unit's column) of rows `row0 + t·rstep`, `t < per`, `kv_row`
/// vectors apart; zero for rows at or past `n`.
#[cube]
#[allow(clippy::too_many_arguments)]
fn load_tiles<F: Float, V: Size>(
    k: &Array<Vector<F, V>>,
    value: &Array<Vector<F, V>>,
    rk: &mut Array<Vector<F, V>>,
    rv: &mut Array<Vector<F, V>>,
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
        let mut kval = Vector::<F, V>::zeroed();
        let mut vval = Vector::<F, V>::zeroed();
        if rr < n {
            let at = src + rr * kv_row;
            kval = k[at];
            vval = value[at];
        }
        rk[t] = kval;
        rv[t] = vval;
    }
}

/// Multiplies the lane's half (columns `part, part + 2, ..`) of the 64-column shared row at
/// `row` by `factor`.
#[cube]
pub(super) fn scale_row(ss: &mut SharedMemory<f32>, row: usize, part: usize, factor: f32) {
    for t in 0..comptime!(BK / 2) {
        let c = row + part + 2 * t;
        ss[c] = ss[c] * factor;
    }
}

/// `e^x` through the runtime's fast intrinsic where it has one (`__expf` on CUDA, a few ulp):
/// the arguments are `s - m <= RESCALE_AT` or a rescale's `m_old - m_new < 0`, never NaN or
/// infinite. Only the exponentials get the relaxed precision (not the softcap's `tanh`).
#[allow(unused_variables)]
pub(super) fn fast_exp(x: f32) -> f32 {
    cubecl::unexpanded!()
}

pub(super) mod fast_exp {
    use cubecl::ir::{FastMath, Scope};
    use cubecl::prelude::*;

    pub(in crate::kernels::attention) fn expand(scope: &mut Scope, x: NativeExpand<f32>) -> NativeExpand<f32> {
        let modes = FastMath::ReducedPrecision | FastMath::NotNaN | FastMath::NotInf;
        cubecl::frontend::fast_math_expand(scope, modes, |scope| <f32 as Exp>::__expand_exp(scope, x))
    }
}

#[cfg(all(test, feature = "cubecl-cuda", feature = "cubecl-wgpu"))]
#[path = "cmma_source.rs"]
pub(super) mod source;
