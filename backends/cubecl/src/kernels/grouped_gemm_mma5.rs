//! The manual-MMA grouped GEMM, variant 5 (opt-in `MOEKIT_CUBECL_GEMM=cmma5` until a GPU has
//! checked it): [`super::grouped_gemm_mma4`] (same tiles, fragments, cube order, register
//! epilogue, grouping and semantics; staged vectors of 8 elements) with its register staging
//! replaced by asynchronous copies (`cp.async.cg`, 16 bytes, zero-filled where the vector is
//! not real data) into [`STAGES`] shared stages of [`BK`]-deep K steps:
//!
//! - No staging registers (64 per unit in the fourth kernel) and no shared stores: the copies
//!   land in shared memory by themselves.
//! - Each step's copies are issued two steps before the step that reads them, so they have
//!   two steps of matrix work to land behind (one in the fourth kernel).
//! - Output pairs: a lane's accumulator elements `2v` and `2v + 1` are one row's adjacent
//!   columns `c`, `c + 1` (`c` even), written as one 4-byte store (`y` as pairs, `N_out`
//!   even): half the store instructions of the fourth kernel, twice the bytes per sector.
//! - One wait per step: stage `s` has a cube barrier; every unit commits its copies into the
//!   stage to the barrier (`cp.async.mbarrier.arrive`) and, before reading the stage, arrives
//!   and waits. The barrier completes when every unit has arrived (so every unit has finished
//!   the previous step: its stage may be refilled) and every committed copy has landed.
//!
//! NOTE: launched unchecked: every index is kept in bounds whatever the index data says (as
//! in the first kernels).

use super::flag::record;
use super::grouped_gemm::{check_offsets, clamp_row, BAD_COUNTS, BAD_GATHER, MODE_CONTIGUOUS, MODE_MASKED};
use super::grouped_gemm_cmma::{BM, BN, FRAG, LDB_KN, PLANES};
use super::grouped_gemm_mma4::{
    a_k, a_row, a_slot, acc_zero, b_col, b_k, b_slot, half, load_frag, mma_row, Out, BK, LDA, LDB_NK, P2, TN,
};
use cubecl::cmma::{MatrixIdent, MmaDefinition};
use cubecl::ir::ElemType;
use cubecl::prelude::barrier::{copy_async_checked, Barrier};
use cubecl::prelude::*;

/// Shared stages: steps `s + 1` and `s + 2` are in flight while step `s` is read.
pub(crate) const STAGES: usize = 3;

/// Bytes of shared memory before the stages: the three barriers (8 bytes each), the stages
/// being 32-byte aligned.
const BARRIER_BYTES: usize = 32;

/// Shared memory of one launch in bytes for an element of `elem_bytes`: the barriers and
/// [`STAGES`] stages of x and weight tiles.
pub(crate) fn shared_bytes(elem_bytes: usize, nk: bool) -> usize {
    let b = if nk { BN * LDB_NK } else { BK * LDB_KN };
    BARRIER_BYTES + STAGES * (BM * LDA + b) * elem_bytes
}

/// The grouped GEMM; arguments and launch as
/// [`super::grouped_gemm_cmma::grouped_gemm_cmma_kernel`], on planes of 32, with `V` = 8,
/// except `y`: `[rows, N_out / 2]` pairs (`N_out` even).
#[cube(launch_unchecked)]
#[allow(clippy::too_many_arguments)]
pub(crate) fn grouped_gemm_mma5_kernel<F: Float, V: Size>(
    x: &Array<Vector<F, V>>,
    w: &Array<Vector<F, V>>,
    group: &Array<i32>,
    row_to_token: &Array<i32>,
    row_scale: &Array<f32>,
    y: &mut Array<Vector<F, P2>>,
    flag: &mut Array<i32>,
    experts: u32,
    rows: u32,
    tokens: u32,
    k_dim: u32,
    n_dim: u32,
    #[comptime] plane_dim: usize,
    #[comptime] mode: u32,
    #[comptime] nk: bool,
    #[comptime] swiglu: bool,
    #[comptime] scale: bool,
    #[comptime] gather: bool,
    #[define(F)] _dtype: ElemType,
) {
    let vec = V::value();
    let units = comptime!(plane_dim * PLANES);
    let unit = UNIT_POS as usize;
    let lane = UNIT_POS_X as usize;
    let plane = UNIT_POS_Y as usize;
    let pr = plane / 4;
    let pc = plane % 4;
    let rows_u = rows as usize;
    let k_u = k_dim as usize;
    let n_u = n_dim as usize;
    let n_out = if swiglu { n_u / 2 } else { n_u };
    // Column-first cube order, as the fourth kernel.
    let col_cubes = CUBE_COUNT_Y as usize;
    let lin = CUBE_POS_X as usize + CUBE_POS_Y as usize * CUBE_COUNT_X as usize;
    let cube_m = lin / col_cubes;
    let cube_n = lin % col_cubes;
    let m0 = cube_m * BM;
    let n0 = if swiglu { cube_n * comptime!(BN / 2) } else { cube_n * BN };

    let a_stage = comptime!(BM * LDA / vec);
    let b_stage = comptime!(if nk { BN * LDB_NK / vec } else { BK * LDB_KN / vec });
    let mut sa = SharedMemory::<Vector<F, V>>::new_aligned(comptime!(STAGES * a_stage), 32usize);
    let mut sb = SharedMemory::<Vector<F, V>>::new_aligned(comptime!(STAGES * b_stage), 32usize);
    let bar0 = Barrier::shared(CUBE_DIM, UNIT_POS == 0);
    let bar1 = Barrier::shared(CUBE_DIM, UNIT_POS == 0);
    let bar2 = Barrier::shared(CUBE_DIM, UNIT_POS == 0);

    let a_total = comptime!(BM * BK / vec);
    let b_total = comptime!(BK * BN / vec);
    let per_a = comptime!(a_total.div_ceil(units));
    let nb = comptime!(b_total.div_ceil(units));

    // Each copied weight vector (as the fourth kernel's staging): its source inside an
    // expert's weight at k = 0, in vectors, and the first K step offset it no longer exists
    // at (`K - k`, 0 past N).
    let mut b_at = Array::<usize>::new(nb);
    let mut b_lim = Array::<usize>::new(nb);
    // The sources of the next K step to copy (the expert's weight, then each step).
    let mut b_src = Array::<usize>::new(nb);
    #[unroll]
    for i in 0..nb {
        let v = unit + i * units;
        let kk = b_k(v, nk, vec);
        let c = b_col(v, nk, vec);
        let mut oc = n0 + c;
        let mut wc = oc;
        if swiglu && c >= comptime!(BN / 2) {
            oc = n0 + c - comptime!(BN / 2);
            wc = n_out + oc;
        }
        let mut lim = 0usize;
        if v < b_total && oc < n_out && kk < k_u {
            lim = k_u - kk;
        }
        b_lim[i] = lim;
        // NOTE: every term is a multiple of `vec` (K, and N for `[E, K, N]` weights, are:
        // `select_path`), so vector indices add up.
        let off = if nk { wc * k_u + kk } else { kk * n_u + wc };
        b_at[i] = off / vec;
    }
    // The same for x, per expert (rows outside the expert or with a bad token: limit 0), the
    // source being that of the next K step to copy.
    let mut a_at = Array::<usize>::new(per_a);
    let mut a_lim = Array::<usize>::new(per_a);

    let mut c00 = acc_zero();
    let mut c01 = acc_zero();
    let mut c02 = acc_zero();
    let mut c03 = acc_zero();
    let mut c10 = acc_zero();
    let mut c11 = acc_zero();
    let mut c12 = acc_zero();
    let mut c13 = acc_zero();
    let mut c20 = acc_zero();
    let mut c21 = acc_zero();
    let mut c22 = acc_zero();
    let mut c23 = acc_zero();
    let mut c30 = acc_zero();
    let mut c31 = acc_zero();
    let mut c32 = acc_zero();
    let mut c33 = acc_zero();

    let mut cb0 = pc * comptime!(2 * FRAG);
    let mut cb1 = cb0 + FRAG;
    if swiglu {
        cb0 = pc * FRAG;
        cb1 = cb0 + comptime!(BN / 2);
    }
    let a_lane = (pr * comptime!(4 * FRAG) + lane % FRAG) * LDA + lane / FRAG * TN;
    let mi = lane / TN;
    let mut b_lane0 = (mi % 2 * TN + lane % TN) * LDB_KN + cb0 + mi / 2 * TN;
    let mut b_lane1 = b_lane0 + cb1 - cb0;
    if nk {
        b_lane0 = (cb0 + mi / 2 * TN + lane % TN) * LDB_NK + mi % 2 * TN;
        b_lane1 = b_lane0 + (cb1 - cb0) * LDB_NK;
    }

    let mut e = 0usize;
    let mut e_end = 1usize;
    let mut rows_end = rows_u;
    if mode == MODE_MASKED {
        e = CUBE_POS_Z as usize;
        e_end = e + 1;
        let count = group[e];
        if CUBE_POS_X == 0 && CUBE_POS_Y == 0 && UNIT_POS == 0 && (count < 0 || count > rows as i32) {
            record(flag, BAD_COUNTS, e as i32, count, rows as i32 + 1);
        }
        rows_end = clamp_row(count, rows_u);
    } else if mode == MODE_CONTIGUOUS {
        let ex = experts as usize;
        if CUBE_POS_X == 0 && CUBE_POS_Y == 0 && UNIT_POS == 0 {
            check_offsets(group, flag, ex, rows_u);
        }
        let mut lo = 0usize;
        let mut hi = ex;
        while lo < hi {
            let mid = (lo + hi) / 2;
            if clamp_row(group[mid + 1], rows_u) > m0 {
                hi = mid;
            } else {
                lo = mid + 1;
            }
        }
        e = lo;
        e_end = ex;
        rows_end = clamp_row(group[ex], rows_u);
    }

    let steps = k_u.div_ceil(BK);
    let mut more = e < e_end;
    while more {
        let mut start = 0usize;
        let mut end = rows_u;
        let mut x_base = 0usize;
        if mode == MODE_CONTIGUOUS {
            start = clamp_row(group[e], rows_u);
            end = start.max(clamp_row(group[e + 1], rows_u));
        } else if mode == MODE_MASKED {
            end = rows_end;
            x_base = e * rows_u;
        }
        let w_base = e * k_u * n_u;

        if start.max(m0) < end.min(m0 + BM) {
            #[unroll]
            for i in 0..per_a {
                let r = a_row(unit + i * units, vec);
                let row = m0 + r;
                let mut ok = r < BM && row >= start && row < end;
                let mut src = (x_base + row) * k_u;
                if gather && ok {
                    let t = row_to_token[row];
                    ok = t >= 0 && t < tokens as i32;
                    src = t as usize * k_u;
                }
                let kk = a_k(unit + i * units, vec);
                let mut lim = 0usize;
                let mut at = 0usize;
                if ok && kk < k_u {
                    lim = k_u - kk;
                    at = (src + kk) / vec;
                }
                a_lim[i] = lim;
                a_at[i] = at;
            }
            // How far one K step moves a weight source, in vectors, and the sources of step 0.
            let mut w_step = n_u * comptime!(BK / vec);
            if nk {
                w_step = comptime!(BK / vec);
            }
            let wb = w_base / vec;
            #[unroll]
            for i in 0..nb {
                b_src[i] = b_at[i] + wb;
            }
            let a_step = comptime!(BK / vec);

            // Steps 0 and 1 into stages 0 and 1 (none with K = 0: every copy is waited for).
            if steps > 0 {
                copy(x, &mut sa, &mut a_at, &a_lim, 0, 0, a_step, unit, units, per_a, a_total, false, nk, vec);
                copy(w, &mut sb, &mut b_src, &b_lim, 0, 0, w_step, unit, units, nb, b_total, true, nk, vec);
                bar0.commit_copy_async();
            }
            if steps > 1 {
                copy(x, &mut sa, &mut a_at, &a_lim, a_stage, BK, a_step, unit, units, per_a, a_total, false, nk, vec);
                copy(w, &mut sb, &mut b_src, &b_lim, b_stage, BK, w_step, unit, units, nb, b_total, true, nk, vec);
                bar1.commit_copy_async();
            }

            for step in 0..steps {
                let cur = step % STAGES;
                // Stage `cur` has landed and every unit is done with step - 1 (its stage is
                // the one refilled below).
                if cur == 0 {
                    bar0.arrive_and_wait();
                } else if cur == 1 {
                    bar1.arrive_and_wait();
                } else {
                    bar2.arrive_and_wait();
                }
                if step + 2 < steps {
                    let st = (step + 2) % STAGES;
                    let k0 = (step + 2) * BK;
                    copy(
                        x,
                        &mut sa,
                        &mut a_at,
                        &a_lim,
                        st * a_stage,
                        k0,
                        a_step,
                        unit,
                        units,
                        per_a,
                        a_total,
                        false,
                        nk,
                        vec,
                    );
                    copy(
                        w,
                        &mut sb,
                        &mut b_src,
                        &b_lim,
                        st * b_stage,
                        k0,
                        w_step,
                        unit,
                        units,
                        nb,
                        b_total,
                        true,
                        nk,
                        vec,
                    );
                    if st == 0 {
                        bar0.commit_copy_async();
                    } else if st == 1 {
                        bar1.commit_copy_async();
                    } else {
                        bar2.commit_copy_async();
                    }
                }

                let sa0 = cur * comptime!(BM * LDA) + a_lane;
                let sb0 = cur * comptime!(b_stage * vec);
                #[unroll]
                for ks in 0..comptime!(BK / FRAG) {
                    let kb = comptime!(if nk { ks * FRAG } else { ks * FRAG * LDB_KN });
                    let b0 = load_frag::<F, V>(&sb, sb0 + kb + b_lane0, vec, comptime!(!nk));
                    let b1 = load_frag::<F, V>(&sb, sb0 + kb + b_lane1, vec, comptime!(!nk));
                    let b00 = half(&b0, 0usize);
                    let b01 = half(&b0, 2usize);
                    let b10 = half(&b1, 0usize);
                    let b11 = half(&b1, 2usize);
                    let a0 = sa0 + comptime!(ks * FRAG);
                    let fa = comptime!(FRAG * LDA);
                    let a = load_frag::<F, V>(&sa, a0, vec, false);
                    mma_row::<F>(&a, &b00, &b01, &b10, &b11, &mut c00, &mut c01, &mut c02, &mut c03);
                    let a = load_frag::<F, V>(&sa, a0 + fa, vec, false);
                    mma_row::<F>(&a, &b00, &b01, &b10, &b11, &mut c10, &mut c11, &mut c12, &mut c13);
                    let a = load_frag::<F, V>(&sa, a0 + fa * 2, vec, false);
                    mma_row::<F>(&a, &b00, &b01, &b10, &b11, &mut c20, &mut c21, &mut c22, &mut c23);
                    let a = load_frag::<F, V>(&sa, a0 + fa * 3, vec, false);
                    mma_row::<F>(&a, &b00, &b01, &b10, &b11, &mut c30, &mut c31, &mut c32, &mut c33);
                }
            }
            // NOTE: the next expert's first copies refill stages 0 and 1, which other planes
            // may still be reading.
            sync_cube();
        }

        e += 1;
        more = e < e_end;
        if mode == MODE_CONTIGUOUS && more {
            more = clamp_row(group[e], rows_u) < m0 + BM;
        }
    }

    let mut y_base = 0usize;
    if mode == MODE_MASKED {
        y_base = (e_end - 1) * rows_u;
    }
    let ep = Out { m0: m0 + pr * comptime!(4 * FRAG), n0, pc, rows: rows_u, rows_end, n_out, y_base, tokens };
    write_pairs::<F>(&ep, 0usize, &c00, &c01, &c02, &c03, y, row_to_token, row_scale, flag, swiglu, scale, gather);
    write_pairs::<F>(&ep, 1usize, &c10, &c11, &c12, &c13, y, row_to_token, row_scale, flag, swiglu, scale, gather);
    write_pairs::<F>(&ep, 2usize, &c20, &c21, &c22, &c23, y, row_to_token, row_scale, flag, swiglu, scale, gather);
    write_pairs::<F>(&ep, 3usize, &c30, &c31, &c32, &c33, y, row_to_token, row_scale, flag, swiglu, scale, gather);
}

/// Copies this unit's `n` vectors of the K step at `k0` (x with `!b`, weights with `b`) into
/// the stage at `base` (in vectors): vector `i` from `src[at[i]]`, then moves `at[i]` on by
/// `advance` to the next step's source (NOTE: carried from step to step so that the sources
/// stay in registers; recomputed from loop invariants, ptxas rebuilt them every step), to
/// its slot (as
/// the fourth kernel's staging), 16 bytes, zero-filled (a source of 0 bytes) where
/// `k0 >= lim[i]` (past K, N, the expert's rows or a bad token); vectors past the `total`
/// of a tile are not copied.
///
/// NOTE: where the cube's units cover the tile in whole rows of vectors (always for this
/// kernel: 256 units, rows of 16 vectors), vector `i`'s slot is the unit's first slot plus a
/// constant (no per-copy slot arithmetic, no bounds test); otherwise each slot is computed.
#[cube]
#[allow(clippy::too_many_arguments)]
fn copy<F: Float, V: Size>(
    src: &Array<Vector<F, V>>,
    stage: &mut SharedMemory<Vector<F, V>>,
    at: &mut Array<usize>,
    lim: &Array<usize>,
    base: usize,
    k0: usize,
    advance: usize,
    unit: usize,
    #[comptime] units: usize,
    #[comptime] n: usize,
    #[comptime] total: usize,
    #[comptime] b: bool,
    #[comptime] nk: bool,
    #[comptime] vec: usize,
) {
    // Vectors per tile row and the row stride, in vectors.
    let q = comptime!(if b && !nk { BN / vec } else { BK / vec });
    let ld = comptime!(if !b {
        LDA / vec
    } else if nk {
        LDB_NK / vec
    } else {
        LDB_KN / vec
    });
    let exact = comptime!(n * units == total && units % q == 0);
    let slot0 = if b { b_slot(unit, nk, vec) } else { a_slot(unit, vec) };
    #[unroll]
    for i in 0..n {
        if exact {
            copy_one(src, stage, at[i], k0 < lim[i], base + slot0 + comptime!(i * (units / q) * ld), vec);
        } else {
            let v = unit + i * units;
            if v < total {
                let slot = if b { b_slot(v, nk, vec) } else { a_slot(v, vec) };
                copy_one(src, stage, at[i], k0 < lim[i], base + slot, vec);
            }
        }
        at[i] += advance;
    }
}

/// One 16-byte copy of `src[from]` into `stage[to]`, or zeros unless `real`.
#[cube]
pub(super) fn copy_one<F: Float, V: Size>(
    src: &Array<Vector<F, V>>,
    stage: &mut SharedMemory<Vector<F, V>>,
    from: usize,
    real: bool,
    to: usize,
    #[comptime] vec: usize,
) {
    let mut at = 0usize;
    let mut len = 0usize;
    if real {
        at = from;
        len = 1usize;
    }
    let mut dst = stage.slice_mut(to, to + 1);
    copy_async_checked(&src.slice(at, at + len), &mut dst, comptime!(vec as u32));
}

/// Writes fragment row `fi` of the plane from its accumulators `c0..c3` as the fourth
/// kernel's `write_row` does, one pair of adjacent columns per store: accumulator vector `v`
/// of a lane holds elements `2v` and `2v + 1`, one row at columns `col` and `col + 1`.
#[cube]
#[allow(clippy::too_many_arguments)]
fn write_pairs<F: Float>(
    ep: &Out,
    #[comptime] fi: usize,
    c0: &Array<Vector<f32, P2>>,
    c1: &Array<Vector<f32, P2>>,
    c2: &Array<Vector<f32, P2>>,
    c3: &Array<Vector<f32, P2>>,
    y: &mut Array<Vector<F, P2>>,
    row_to_token: &Array<i32>,
    row_scale: &Array<f32>,
    flag: &mut Array<i32>,
    #[comptime] swiglu: bool,
    #[comptime] scale: bool,
    #[comptime] gather: bool,
) {
    let def = MmaDefinition::<F, F, f32>::new(FRAG, TN, FRAG);
    let lane = UNIT_POS_X;
    #[unroll]
    for v in 0..2usize {
        let (r, col) = def.position_of_nth(lane, comptime!((2 * v) as u32), MatrixIdent::Accumulator);
        let row = ep.m0 + comptime!(fi * FRAG) + r as usize;
        if row < ep.rows {
            let y_row = ep.y_base + row;
            let valid = row < ep.rows_end;
            let mut s = 1.0f32;
            if scale {
                s = row_scale[y_row];
            }
            let mut oc = ep.n0 + ep.pc * comptime!(2 * FRAG) + col as usize;
            if swiglu {
                oc = ep.n0 + ep.pc * FRAG + col as usize;
            }
            if gather && oc == 0 {
                let tk = row_to_token[row];
                if tk < -1 || tk >= ep.tokens as i32 {
                    record(flag, BAD_GATHER, row as i32, tk, ep.tokens as i32);
                }
            }
            let base = y_row * ep.n_out;
            if swiglu {
                let g0 = c0[v][0usize];
                let g1 = c0[v][1usize];
                let a = g0 / (1.0 + f32::exp(-g0)) * c2[v][0usize] * s;
                let b = g1 / (1.0 + f32::exp(-g1)) * c2[v][1usize] * s;
                put_pair(y, base, oc, ep.n_out, a, b, valid);
                let g0 = c1[v][0usize];
                let g1 = c1[v][1usize];
                let a = g0 / (1.0 + f32::exp(-g0)) * c3[v][0usize] * s;
                let b = g1 / (1.0 + f32::exp(-g1)) * c3[v][1usize] * s;
                put_pair(y, base, oc + TN, ep.n_out, a, b, valid);
            } else {
                put_pair(y, base, oc, ep.n_out, c0[v][0usize] * s, c0[v][1usize] * s, valid);
                put_pair(y, base, oc + TN, ep.n_out, c1[v][0usize] * s, c1[v][1usize] * s, valid);
                put_pair(y, base, oc + comptime!(2 * TN), ep.n_out, c2[v][0usize] * s, c2[v][1usize] * s, valid);
                put_pair(y, base, oc + comptime!(3 * TN), ep.n_out, c3[v][0usize] * s, c3[v][1usize] * s, valid);
            }
        }
    }
}

/// `y[base + col]`, `y[base + col + 1]` = `a`, `b` (zeros unless `valid`) as one pair where
/// `col < n_out` (`col` and `n_out` even, so the pair is whole and aligned).
#[cube]
pub(super) fn put_pair<F: Float>(
    y: &mut Array<Vector<F, P2>>,
    base: usize,
    col: usize,
    n_out: usize,
    a: f32,
    b: f32,
    valid: bool,
) {
    if col < n_out {
        let mut lo = 0.0f32;
        let mut hi = 0.0f32;
        if valid {
            lo = a;
            hi = b;
        }
        let mut out = Vector::<F, P2>::empty();
        out[0usize] = F::cast_from(lo);
        out[1usize] = F::cast_from(hi);
        y[(base + col) / 2] = out;
    }
}

#[cfg(test)]
#[path = "grouped_gemm_mma5_emulate.rs"]
mod emulate;
