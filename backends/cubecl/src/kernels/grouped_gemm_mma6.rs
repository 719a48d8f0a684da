//! The wide manual-MMA grouped GEMM (the default tensor-core kernel where the staged vectors
//! are 16 bytes and `N_out` is even, see `crate::ops::gemm_path`; H200, bf16, the benchmark's
//! up GEMM: 3.34 ms, 247 TFLOP/s, where the default kernel of `grouped_gemm_mma` takes 6.8 ms).
//! Same arguments, grouping and semantics as the first kernels, and:
//!
//! - Blocks of [`BM`] × [`BN`] = 128 × 256; each of the 8 planes (`2 × 4`) owns a 64 × 64 warp
//!   tile: 4 fragment rows × 8 n8 tiles, 128 f32 accumulators per lane. Per k16 step 4
//!   `ldmatrix.x4` for A and 4 for B feed 32 `mma.sync` (`ldmatrix` + `mma.sync`, see
//!   `mma_frag`). A block reads `(BM + BN) · K` elements for `BM · BN` outputs: three quarters
//!   of the L2 traffic per output of 128 × 128 blocks (which pulled ~14.5 GB from L2 for the
//!   benchmark's up GEMM; measured 3.86 ms there, 1.16× this kernel's time).
//! - Asynchronous 16-byte copies (`cp.async.cg`, zero-filled where the vector is not real data)
//!   into [`STAGES`] = 4 shared stages of [`BK`] = 64-deep K steps, three steps in flight; no
//!   staging registers. One barrier per stage: every unit commits its copies into the stage
//!   to the barrier and, before reading the stage, arrives and waits; the barrier completes
//!   when every unit has arrived (so every unit has finished the previous step: its stage may
//!   be refilled) and every committed copy has landed (pipeline model:
//!   `grouped_gemm_mma6_pipeline.rs`).
//! - Column-first cube order: the launch grid is read as one linear index whose fastest part
//!   is the column block, so the cubes of one row block run together and read its x rows from
//!   L2.
//! - Register epilogue, output pairs: a lane's accumulator elements `2v`, `2v + 1` are one
//!   row's adjacent columns, written as one 4-byte store (`y` as pairs, `N_out` even). With
//!   SwiGLU the block's first 128 weight columns are gate columns `n0 ..` and the last 128 the
//!   matching up columns `N_out + n0 ..`; plane column `pc` holds gate tile columns `32·pc ..`
//!   and up tile columns `128 + 32·pc ..`, so `silu(gate) · up` meets in one lane.
//!
//! Shared memory: 4 stages of `128 × 72` x and `64 × 264` (`[E, K, N]`) or `256 × 72`
//! (`[E, N, K]`) weight elements: 204 / 216 KiB at 2 bytes (one cube per SM; 225-240
//! registers). The pads keep every `ldmatrix` row in its own bank group (rows 144 and 528
//! bytes apart: 16 modulo 128).
//!
//! NOTE: launched unchecked: every index is kept in bounds whatever the index data says (as
//! in the first kernels).

use super::flag::record;
use super::grouped_gemm::{block_experts, expert_rows, visits, BAD_GATHER, MODE_MASKED};
use super::grouped_gemm_cmma::{FRAG, PLANES};
use super::mma_frag::{acc_zero, half, load_frag, mma_row, P2, TN};
use cubecl::cmma::{MatrixIdent, MmaDefinition};
use cubecl::ir::ElemType;
use cubecl::prelude::barrier::{copy_async_checked, Barrier};
use cubecl::prelude::*;

/// Rows of a block.
pub(crate) const BM: usize = 128;
/// Weight columns of a block (with SwiGLU: 128 gate and 128 up columns).
pub(crate) const BN: usize = 256;
/// Reduction depth of one K step.
pub(crate) const BK: usize = 64;
/// Shared stages: steps `s + 1 .. s + 3` are in flight while step `s` is read.
pub(crate) const STAGES: usize = 4;
/// Padding of a staged row, in elements (see the module doc).
const PAD: usize = 8;
/// Row stride of the staged x tile `[BM, BK]`.
pub(crate) const LDA: usize = BK + PAD;
/// Row stride of the staged `[E, K, N]` weight tile `[BK, BN]`.
pub(crate) const LDB_KN: usize = BN + PAD;
/// Row stride of the staged `[E, N, K]` weight tile `[BN, BK]`.
pub(crate) const LDB_NK: usize = BK + PAD;
/// Rows and columns of a plane's warp tile.
const WM: usize = 64;
const WN: usize = 64;

/// Bytes of shared memory before the stages: the four barriers (8 bytes each).
const BARRIER_BYTES: usize = 32;

/// Shared memory of one launch in bytes for an element of `elem_bytes`.
pub(crate) fn shared_bytes(elem_bytes: usize, nk: bool) -> usize {
    let b = if nk { BN * LDB_NK } else { BK * LDB_KN };
    BARRIER_BYTES + STAGES * (BM * LDA + b) * elem_bytes
}

/// Output columns of a block: `BN`, or `BN / 2` with SwiGLU.
pub(crate) const fn block_cols(swiglu: bool) -> usize {
    if swiglu {
        BN / 2
    } else {
        BN
    }
}

/// The grouped GEMM; arguments and launch as
/// [`super::grouped_gemm_cmma::grouped_gemm_cmma_kernel`] over blocks of [`BM`] rows and
/// [`block_cols`] output columns, on planes of 32, with `V` = 8 and `y` as pairs (`N_out`
/// even).
#[cube(launch_unchecked)]
#[allow(clippy::too_many_arguments)]
pub(crate) fn grouped_gemm_mma6_kernel<F: Float, V: Size>(
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
    // Column-first cube order.
    let col_cubes = CUBE_COUNT_Y as usize;
    let lin = CUBE_POS_X as usize + CUBE_POS_Y as usize * CUBE_COUNT_X as usize;
    let cube_m = lin / col_cubes;
    let cube_n = lin % col_cubes;
    let m0 = cube_m * BM;
    let n0 = cube_n * comptime!(block_cols(swiglu));

    let a_stage = comptime!(BM * LDA / vec);
    let b_stage = comptime!(if nk { BN * LDB_NK / vec } else { BK * LDB_KN / vec });
    let mut sa = SharedMemory::<Vector<F, V>>::new_aligned(comptime!(STAGES * a_stage), 32usize);
    let mut sb = SharedMemory::<Vector<F, V>>::new_aligned(comptime!(STAGES * b_stage), 32usize);
    let bar0 = Barrier::shared(CUBE_DIM, UNIT_POS == 0);
    let bar1 = Barrier::shared(CUBE_DIM, UNIT_POS == 0);
    let bar2 = Barrier::shared(CUBE_DIM, UNIT_POS == 0);
    let bar3 = Barrier::shared(CUBE_DIM, UNIT_POS == 0);

    let a_total = comptime!(BM * BK / vec);
    let b_total = comptime!(BK * BN / vec);
    let per_a = comptime!(a_total.div_ceil(units));
    let nb = comptime!(b_total.div_ceil(units));

    // Each copied weight vector: its source inside an expert's weight at k = 0, in vectors,
    // and the first K step offset it no longer exists at (`K - k`, 0 past N).
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
    // The same for x, per expert (rows outside the expert or with a bad token: limit 0).
    let mut a_at = Array::<usize>::new(per_a);
    let mut a_lim = Array::<usize>::new(per_a);

    let mut c00 = acc_zero();
    let mut c01 = acc_zero();
    let mut c02 = acc_zero();
    let mut c03 = acc_zero();
    let mut c04 = acc_zero();
    let mut c05 = acc_zero();
    let mut c06 = acc_zero();
    let mut c07 = acc_zero();
    let mut c10 = acc_zero();
    let mut c11 = acc_zero();
    let mut c12 = acc_zero();
    let mut c13 = acc_zero();
    let mut c14 = acc_zero();
    let mut c15 = acc_zero();
    let mut c16 = acc_zero();
    let mut c17 = acc_zero();
    let mut c20 = acc_zero();
    let mut c21 = acc_zero();
    let mut c22 = acc_zero();
    let mut c23 = acc_zero();
    let mut c24 = acc_zero();
    let mut c25 = acc_zero();
    let mut c26 = acc_zero();
    let mut c27 = acc_zero();
    let mut c30 = acc_zero();
    let mut c31 = acc_zero();
    let mut c32 = acc_zero();
    let mut c33 = acc_zero();
    let mut c34 = acc_zero();
    let mut c35 = acc_zero();
    let mut c36 = acc_zero();
    let mut c37 = acc_zero();

    // This lane's `ldmatrix` row addresses inside a stage: A rows `64·pr + lane % 16`, k
    // `8·(lane / 16)`; B load `l` at tile column `b_load_col(pc, l)` (`.trans` for `[E, K, N]`:
    // k row `8·(mi % 2) + lane % 8`, column `+ 8·(mi / 2)`; `[E, N, K]`: the transpose).
    let a_lane = (pr * WM + lane % FRAG) * LDA + lane / FRAG * TN;
    let mi = lane / TN;
    let mut cb0 = pc * WN;
    let mut cb2 = cb0 + 32;
    if swiglu {
        cb0 = pc * comptime!(WN / 2);
        cb2 = cb0 + comptime!(BN / 2);
    }
    let mut b_lane0 = (mi % 2 * TN + lane % TN) * LDB_KN + cb0 + mi / 2 * TN;
    let mut b_step = 16usize;
    let mut b_pair = cb2 - cb0;
    if nk {
        b_lane0 = (cb0 + mi / 2 * TN + lane % TN) * LDB_NK + mi % 2 * TN;
        b_step = 16 * LDB_NK;
        b_pair = (cb2 - cb0) * LDB_NK;
    }

    // The experts this cube visits and where rows stop belonging to any.
    let visit = block_experts(group, flag, experts, rows, m0, mode);
    let mut e = visit.first;
    let e_end = visit.end;
    let rows_end = visit.rows_end;

    let steps = k_u.div_ceil(BK);
    let mut more = visits(group, e, e_end, rows_u, m0 + BM, mode);
    while more {
        // Rows `start..end` (masked: of expert `e`'s block from `x_base`) belong to expert `e`.
        let seg = expert_rows(group, e, rows_u, rows_end, mode);
        let start = seg.start;
        let end = seg.end;
        let x_base = seg.base;
        let w_base = e * k_u * n_u;

        if start.max(m0) < end.min(m0 + BM) {
            #[unroll]
            for i in 0..per_a {
                let v = unit + i * units;
                let r = a_row(v, vec);
                let row = m0 + r;
                let mut ok = r < BM && row >= start && row < end;
                let mut src = (x_base + row) * k_u;
                if gather && ok {
                    let t = row_to_token[row];
                    ok = t >= 0 && t < tokens as i32;
                    src = t as usize * k_u;
                }
                let kk = a_k(v, vec);
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

            // Steps 0, 1 and 2 into stages 0, 1 and 2 (none with K = 0: every copy is waited
            // for).
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
            if steps > 2 {
                let (sa2, sb2) = (comptime!(2 * a_stage), comptime!(2 * b_stage));
                copy(x, &mut sa, &mut a_at, &a_lim, sa2, 2 * BK, a_step, unit, units, per_a, a_total, false, nk, vec);
                copy(w, &mut sb, &mut b_src, &b_lim, sb2, 2 * BK, w_step, unit, units, nb, b_total, true, nk, vec);
                bar2.commit_copy_async();
            }

            for step in 0..steps {
                let cur = step % STAGES;
                // Stage `cur` has landed and every unit is done with step - 1 (its stage is
                // the one refilled below).
                if cur == 0 {
                    bar0.arrive_and_wait();
                } else if cur == 1 {
                    bar1.arrive_and_wait();
                } else if cur == 2 {
                    bar2.arrive_and_wait();
                } else {
                    bar3.arrive_and_wait();
                }
                let ahead = step + comptime!(STAGES - 1);
                if ahead < steps {
                    let st = ahead % STAGES;
                    let k0 = ahead * BK;
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
                    } else if st == 2 {
                        bar2.commit_copy_async();
                    } else {
                        bar3.commit_copy_async();
                    }
                }

                let sa0 = cur * comptime!(BM * LDA) + a_lane;
                let sb0 = cur * comptime!(b_stage * vec) + b_lane0;
                #[unroll]
                for ks in 0..comptime!(BK / FRAG) {
                    let kb = comptime!(if nk { ks * FRAG } else { ks * FRAG * LDB_KN });
                    let l0 = load_frag::<F, V>(&sb, sb0 + kb, vec, comptime!(!nk));
                    let l1 = load_frag::<F, V>(&sb, sb0 + kb + b_step, vec, comptime!(!nk));
                    let l2 = load_frag::<F, V>(&sb, sb0 + kb + b_pair, vec, comptime!(!nk));
                    let l3 = load_frag::<F, V>(&sb, sb0 + kb + b_pair + b_step, vec, comptime!(!nk));
                    let t0 = half(&l0, 0usize);
                    let t1 = half(&l0, 2usize);
                    let t2 = half(&l1, 0usize);
                    let t3 = half(&l1, 2usize);
                    let t4 = half(&l2, 0usize);
                    let t5 = half(&l2, 2usize);
                    let t6 = half(&l3, 0usize);
                    let t7 = half(&l3, 2usize);
                    let a0 = sa0 + comptime!(ks * FRAG);
                    let fa = comptime!(FRAG * LDA);
                    let a = load_frag::<F, V>(&sa, a0, vec, false);
                    mma_row::<F>(&a, &t0, &t1, &t2, &t3, &mut c00, &mut c01, &mut c02, &mut c03);
                    mma_row::<F>(&a, &t4, &t5, &t6, &t7, &mut c04, &mut c05, &mut c06, &mut c07);
                    let a = load_frag::<F, V>(&sa, a0 + fa, vec, false);
                    mma_row::<F>(&a, &t0, &t1, &t2, &t3, &mut c10, &mut c11, &mut c12, &mut c13);
                    mma_row::<F>(&a, &t4, &t5, &t6, &t7, &mut c14, &mut c15, &mut c16, &mut c17);
                    let a = load_frag::<F, V>(&sa, a0 + fa * 2, vec, false);
                    mma_row::<F>(&a, &t0, &t1, &t2, &t3, &mut c20, &mut c21, &mut c22, &mut c23);
                    mma_row::<F>(&a, &t4, &t5, &t6, &t7, &mut c24, &mut c25, &mut c26, &mut c27);
                    let a = load_frag::<F, V>(&sa, a0 + fa * 3, vec, false);
                    mma_row::<F>(&a, &t0, &t1, &t2, &t3, &mut c30, &mut c31, &mut c32, &mut c33);
                    mma_row::<F>(&a, &t4, &t5, &t6, &t7, &mut c34, &mut c35, &mut c36, &mut c37);
                }
            }
            // NOTE: the next expert's first copies refill stages 0..2, which other planes may
            // still be reading.
            sync_cube();
        }

        e += 1;
        more = visits(group, e, e_end, rows_u, m0 + BM, mode);
    }

    let mut y_base = 0usize;
    if mode == MODE_MASKED {
        y_base = (e_end - 1) * rows_u;
    }
    let ep = Out { m0: m0 + pr * WM, n0, pc, rows: rows_u, rows_end, n_out, y_base, tokens };
    let g = (swiglu, scale, gather);
    write_pairs::<F>(
        &ep,
        0usize,
        &c00,
        &c01,
        &c02,
        &c03,
        &c04,
        &c05,
        &c06,
        &c07,
        y,
        row_to_token,
        row_scale,
        flag,
        g.0,
        g.1,
        g.2,
    );
    write_pairs::<F>(
        &ep,
        1usize,
        &c10,
        &c11,
        &c12,
        &c13,
        &c14,
        &c15,
        &c16,
        &c17,
        y,
        row_to_token,
        row_scale,
        flag,
        g.0,
        g.1,
        g.2,
    );
    write_pairs::<F>(
        &ep,
        2usize,
        &c20,
        &c21,
        &c22,
        &c23,
        &c24,
        &c25,
        &c26,
        &c27,
        y,
        row_to_token,
        row_scale,
        flag,
        g.0,
        g.1,
        g.2,
    );
    write_pairs::<F>(
        &ep,
        3usize,
        &c30,
        &c31,
        &c32,
        &c33,
        &c34,
        &c35,
        &c36,
        &c37,
        y,
        row_to_token,
        row_scale,
        flag,
        g.0,
        g.1,
        g.2,
    );
}

/// Where a plane's results go.
#[derive(CubeType)]
pub(crate) struct Out {
    /// First output row of the plane (fragment row 0).
    pub(crate) m0: usize,
    /// First output column of the block.
    pub(crate) n0: usize,
    /// Plane column `pc`.
    pub(crate) pc: usize,
    /// `R` (contiguous, dense) or `C` (masked).
    pub(crate) rows: usize,
    /// Rows at or past this belong to no expert (zero).
    pub(crate) rows_end: usize,
    pub(crate) n_out: usize,
    /// First output row of the expert (masked), else 0.
    pub(crate) y_base: usize,
    pub(crate) tokens: u32,
}

/// Tile row of staged x vector `v` (`>= BM` past the tile).
#[cube]
fn a_row(v: usize, #[comptime] vec: usize) -> usize {
    v / comptime!(BK / vec)
}

/// K offset inside the step of staged x vector `v`.
#[cube]
fn a_k(v: usize, #[comptime] vec: usize) -> usize {
    v % comptime!(BK / vec) * vec
}

/// Shared-memory slot (in vectors, inside a stage) of staged x vector `v`.
#[cube]
fn a_slot(v: usize, #[comptime] vec: usize) -> usize {
    a_row(v, vec) * comptime!(LDA / vec) + a_k(v, vec) / vec
}

/// K offset inside the step of staged weight vector `v`: along a row of `[E, N, K]` weights,
/// down the rows of `[E, K, N]` ones.
#[cube]
fn b_k(v: usize, #[comptime] nk: bool, #[comptime] vec: usize) -> usize {
    if nk {
        v % comptime!(BK / vec) * vec
    } else {
        v / comptime!(BN / vec)
    }
}

/// Tile column (weight column inside the block) of staged weight vector `v`.
#[cube]
fn b_col(v: usize, #[comptime] nk: bool, #[comptime] vec: usize) -> usize {
    if nk {
        v / comptime!(BK / vec)
    } else {
        v % comptime!(BN / vec) * vec
    }
}

/// Shared-memory slot (in vectors, inside a stage) of staged weight vector `v`.
#[cube]
fn b_slot(v: usize, #[comptime] nk: bool, #[comptime] vec: usize) -> usize {
    if nk {
        b_col(v, nk, vec) * comptime!(LDB_NK / vec) + b_k(v, nk, vec) / vec
    } else {
        b_k(v, nk, vec) * comptime!(LDB_KN / vec) + b_col(v, nk, vec) / vec
    }
}

/// Copies this unit's `n` vectors of the K step at `k0` into the stage at `base` (in
/// vectors): vector `i` from `src[at[i]]`, then `at[i]` moves on by `advance` to the next
/// step's source (carried from step to step so the sources stay in registers); zero-filled (a
/// source of 0 bytes) where `k0 >= lim[i]` (past K, N, the expert's rows or a bad token).
/// Where the cube's units cover the tile in whole rows of vectors (always here: 256 units,
/// rows of 8 or 32 vectors) vector `i`'s slot is the unit's first slot plus a constant.
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
fn copy_one<F: Float, V: Size>(
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

/// Writes fragment row `fi` of the plane from its accumulators `c0..c7` (n8 tiles `8j` past
/// the load columns `cb0`, `cb0 + 16`, `cb2`, `cb2 + 16` of the K loop), one pair of adjacent columns per store: with SwiGLU
/// `silu(c_j) · c_{j+4}` at output column `n0 + 32·pc + 8·j + col` (`j < 4`), else `c_j` at
/// `n0 + 64·pc + 8·j + col`; row scale; zero for rows outside every expert; with gather the
/// unit owning output column 0 checks its rows' tokens.
#[cube]
#[allow(clippy::too_many_arguments)]
fn write_pairs<F: Float>(
    ep: &Out,
    #[comptime] fi: usize,
    c0: &Array<Vector<f32, P2>>,
    c1: &Array<Vector<f32, P2>>,
    c2: &Array<Vector<f32, P2>>,
    c3: &Array<Vector<f32, P2>>,
    c4: &Array<Vector<f32, P2>>,
    c5: &Array<Vector<f32, P2>>,
    c6: &Array<Vector<f32, P2>>,
    c7: &Array<Vector<f32, P2>>,
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
            let mut oc = ep.n0 + ep.pc * WN + col as usize;
            if swiglu {
                oc = ep.n0 + ep.pc * comptime!(WN / 2) + col as usize;
            }
            if gather && oc == 0 {
                let tk = row_to_token[row];
                if tk < -1 || tk >= ep.tokens as i32 {
                    record(flag, BAD_GATHER, row as i32, tk, ep.tokens as i32);
                }
            }
            let base = y_row * ep.n_out;
            if swiglu {
                glu_pair::<F>(y, base, oc, ep.n_out, c0, c4, v, s, valid);
                glu_pair::<F>(y, base, oc + TN, ep.n_out, c1, c5, v, s, valid);
                glu_pair::<F>(y, base, oc + comptime!(2 * TN), ep.n_out, c2, c6, v, s, valid);
                glu_pair::<F>(y, base, oc + comptime!(3 * TN), ep.n_out, c3, c7, v, s, valid);
            } else {
                put_pair(y, base, oc, ep.n_out, c0[v][0usize] * s, c0[v][1usize] * s, valid);
                put_pair(y, base, oc + TN, ep.n_out, c1[v][0usize] * s, c1[v][1usize] * s, valid);
                put_pair(y, base, oc + comptime!(2 * TN), ep.n_out, c2[v][0usize] * s, c2[v][1usize] * s, valid);
                put_pair(y, base, oc + comptime!(3 * TN), ep.n_out, c3[v][0usize] * s, c3[v][1usize] * s, valid);
                put_pair(y, base, oc + comptime!(4 * TN), ep.n_out, c4[v][0usize] * s, c4[v][1usize] * s, valid);
                put_pair(y, base, oc + comptime!(5 * TN), ep.n_out, c5[v][0usize] * s, c5[v][1usize] * s, valid);
                put_pair(y, base, oc + comptime!(6 * TN), ep.n_out, c6[v][0usize] * s, c6[v][1usize] * s, valid);
                put_pair(y, base, oc + comptime!(7 * TN), ep.n_out, c7[v][0usize] * s, c7[v][1usize] * s, valid);
            }
        }
    }
}

/// `silu(gate) · up · s` for the pair `v` of accumulators `gate` and `up`, stored at `col`.
#[cube]
#[allow(clippy::too_many_arguments)]
fn glu_pair<F: Float>(
    y: &mut Array<Vector<F, P2>>,
    base: usize,
    col: usize,
    n_out: usize,
    gate: &Array<Vector<f32, P2>>,
    up: &Array<Vector<f32, P2>>,
    v: usize,
    s: f32,
    valid: bool,
) {
    let g0 = gate[v][0usize];
    let g1 = gate[v][1usize];
    let a = g0 / (1.0 + f32::exp(-g0)) * up[v][0usize] * s;
    let b = g1 / (1.0 + f32::exp(-g1)) * up[v][1usize] * s;
    put_pair(y, base, col, n_out, a, b, valid);
}

/// `y[base + col]`, `y[base + col + 1]` = `a`, `b` (zeros unless `valid`) as one pair where
/// `col < n_out` (`col` and `n_out` even, so the pair is whole and aligned).
#[cube]
fn put_pair<F: Float>(
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
#[path = "grouped_gemm_mma6_emulate.rs"]
mod emulate;
