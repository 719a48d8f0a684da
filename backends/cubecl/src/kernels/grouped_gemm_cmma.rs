//! Tensor-core grouped GEMM (and dense GEMM, its one-expert case) through cubecl's matrix
//! instructions (`cmma`, 16×16×16, f16/bf16 inputs, f32 accumulators): the fast path beside
//! the portable tiled kernel of [`super::grouped_gemm`], with the same semantics.
//!
//! A cube owns a block of [`BM`] rows × [`BN`] weight columns (with SwiGLU: `BN/2` gate
//! columns and the `BN/2` matching up columns, i.e. `BN/2` output columns) and walks K in steps
//! of [`BK`]. Its [`PLANES`] planes form a 2 × 4 grid; plane `(pr, pc)` owns rows
//! `64·pr .. 64·pr + 64` (4 fragment rows) and two fragment columns: tile columns `16·pc` and
//! `64 + 16·pc` with SwiGLU (a gate fragment and its up fragment, so the epilogue pairs them
//! inside the plane), `32·pc` and `32·pc + 16` without.
//!
//! Staging: x and w tiles go through shared memory as vectors of `V` elements (`V` divides K,
//! and N and N_out for `[E, K, N]` weights), two stages: the next K step is loaded into
//! registers while the tensor cores work on the current stage, then stored into the other one
//! (one `sync_cube` per step). Rows are padded by [`PAD`] elements so fragment loads meet no
//! bank conflicts, and every fragment start is 32-byte aligned as `wmma` requires.
//!
//! NOTE: this is the fallback tensor-core kernel (`MOEKIT_CUBECL_GEMM=cmma`, and runtimes
//! without manual MMA or planes of 32, such as Vulkan): a row-major B fragment compiles
//! (nvcuda `wmma`, sm_90a) to 32-bit loads plus a `MOVM.16.MT88` transpose per register, and
//! the H200 measured 49 TFLOP/s. Staging `[E, K, N]` weights transposed instead measured
//! 37 TFLOP/s and was removed; the default is the manual-MMA kernel of
//! [`super::grouped_gemm_mma`] (121 TFLOP/s).
//!
//! Grouping as in the tiled kernel: contiguous, the cube visits every expert whose row segment
//! meets its rows (a binary search over the device offsets, no host sync), loading only that
//! expert's rows, so each row accumulates against its own expert's weight; masked, cube `z` is
//! the expert. Loads out of rows, K or N read zero; the epilogue (SwiGLU, row scale, zero
//! rows outside every expert) goes through a per-plane f32 scratch in shared memory.
//!
//! NOTE: one cube per SM on an H200 (ptxas: ~180 registers × 256 units, no spills; ~88 KiB of
//! shared memory), so the K step is 64 deep: each step's loads have a whole step of matrix
//! work to land behind. `memcpy_async` (cp.async) stages would hide more; not used yet.
//!
//! NOTE: launched unchecked: every index below is kept in bounds whatever the index data says
//! (rows clamped to `0..=rows`, gather tokens to `0..T`, columns to `N`, K to `K`).

use super::flag::record;
use super::grouped_gemm::{block_experts, expert_rows, visits, BAD_GATHER, MODE_MASKED};
use cubecl::cmma::{self, Matrix, MatrixIdent, MatrixLayout};
use cubecl::ir::ElemType;
use cubecl::prelude::*;

/// Rows of a cube's block.
pub(crate) const BM: usize = 128;
/// Weight columns of a cube's block (`BN/2` output columns with SwiGLU).
pub(crate) const BN: usize = 128;
/// Reduction depth of one K step.
pub(crate) const BK: usize = 64;
/// Planes per cube (2 × 4).
pub(crate) const PLANES: usize = 8;
/// Padding of a staged row, in elements (keeps fragment loads free of bank conflicts).
const PAD: usize = 8;
/// Edge of a matrix fragment.
pub(super) const FRAG: usize = 16;
/// Row stride of the staged x tile `[BM, BK]`.
pub(super) const LDA: usize = BK + PAD;
/// Row stride of the staged `[E, K, N]` weight tile `[BK, BN]`.
pub(super) const LDB_KN: usize = BN + PAD;
/// Row stride of the staged `[E, N, K]` weight tile `[BN, BK]` (column-major B).
pub(super) const LDB_NK: usize = BK + PAD;

/// Shared memory of one launch in bytes for an element of `elem_bytes`, the weight tile staged
/// column-major (`[BN, BK]`, as `[E, N, K]` weights) or not (the caller checks it against the
/// runtime's limit).
pub(crate) fn shared_bytes(elem_bytes: usize, col_major_b: bool) -> usize {
    let b = if col_major_b { BN * LDB_NK } else { BK * LDB_KN };
    2 * (BM * LDA + b) * elem_bytes + PLANES * 2 * FRAG * FRAG * 4
}

/// The grouped GEMM; see the module doc. Launch with a cube of `(plane_dim, PLANES)` units
/// and `(max(1, ceil(rows / BM)), ceil(N_out / (BN or BN/2 with SwiGLU)), E or 1)` cubes.
///
/// `x`: `[R or T, K]` or `[E, C, K]`; `w`: `[E, K, N]` (or `[E, N, K]` with `nk`), both as
/// vectors of `V`; `group`: offsets `[E+1]` or counts `[E]`; `row_to_token [R]` (gather),
/// `row_scale [R or E·C]` (scale), each a one-element placeholder when unused; `y`: `[R or
/// E·C, N_out]`; `rows`: `R` (contiguous, dense) or `C` (masked); `tokens`: `T` with gather.
#[cube(launch_unchecked)]
#[allow(clippy::too_many_arguments)]
pub(crate) fn grouped_gemm_cmma_kernel<F: Float, V: Size>(
    x: &Array<Vector<F, V>>,
    w: &Array<Vector<F, V>>,
    group: &Array<i32>,
    row_to_token: &Array<i32>,
    row_scale: &Array<f32>,
    y: &mut Array<F>,
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
    // The weight tile is staged column-major (`[BN, BK]`) for `[E, N, K]` weights.
    let bt = comptime!(nk);
    let units = comptime!(plane_dim * PLANES);
    let unit = UNIT_POS as usize;
    let plane = UNIT_POS_Y as usize;
    let pr = plane / 4;
    let pc = plane % 4;
    let rows_u = rows as usize;
    let k_u = k_dim as usize;
    let n_u = n_dim as usize;
    let n_out = if swiglu { n_u / 2 } else { n_u };
    let m0 = CUBE_POS_X as usize * BM;
    // First output column of the block.
    let n0 = if swiglu { CUBE_POS_Y as usize * comptime!(BN / 2) } else { CUBE_POS_Y as usize * BN };

    // Staging, in vectors of `V`.
    let a_stage = comptime!(BM * LDA / vec);
    let b_stage = comptime!(if bt { BN * LDB_NK / vec } else { BK * LDB_KN / vec });
    let mut sa = SharedMemory::<Vector<F, V>>::new_aligned(comptime!(2 * BM * LDA / vec), 32usize);
    let mut sb = SharedMemory::<Vector<F, V>>::new_aligned(comptime!(2 * b_stage), 32usize);
    let mut scratch = SharedMemory::<f32>::new_aligned(comptime!(PLANES * 2 * FRAG * FRAG), 32usize);

    // The vectors this unit stages per K step: `per_a` of x, `per_b` of w.
    let a_total = comptime!(BM * BK / vec);
    let b_total = comptime!(BK * BN / vec);
    let per_a = comptime!(a_total.div_ceil(units));
    let nb = comptime!(b_total.div_ceil(units));
    let mut ra = Array::<Vector<F, V>>::new(per_a);
    let mut rb = Array::<Vector<F, V>>::new(nb);

    // Staged vector `v = unit + i·units` of a step: x row `a_row(v)`, K offset `a_k(v)`; weight
    // K offset (NK) or tile row (KN) `b_k(v)` and tile column `b_col(v)` (recomputed where
    // used: shifts and masks, cheaper than registers). Fixed for the cube: where each weight
    // vector starts inside an expert's weight at k = 0 and whether its column exists.
    let mut b_off = Array::<usize>::new(nb);
    let mut b_ok = Array::<u32>::new(nb);
    #[unroll]
    for i in 0..nb {
        let v = unit + i * units;
        let kk = b_k(v, nk, vec);
        let c = b_col(v, nk, vec);
        let in_tile = v < b_total;
        // Tile column `c` → output column `oc` and weight column `wc`.
        let mut oc = n0 + c;
        let mut wc = oc;
        if swiglu && c >= comptime!(BN / 2) {
            oc = n0 + c - comptime!(BN / 2);
            wc = n_out + oc;
        }
        // NOTE: not `if .. { 1 } else { 0 }`: cubecl 0.10 drops an `if` expression whose
        // branches are both literals (the CUDA source keeps empty branches and stores 0).
        let mut ok = 0u32;
        if in_tile && oc < n_out {
            ok = 1u32;
        }
        b_ok[i] = ok;
        b_off[i] = if nk { wc * k_u + kk } else { kk * n_u + wc };
    }
    // Per expert: where each x vector's row starts in `x` and whether it is loaded.
    let mut a_src = Array::<usize>::new(per_a);
    let mut a_ok = Array::<u32>::new(per_a);

    let zero = Vector::<F, V>::zeroed();
    let acc_l = MatrixLayout::Undefined;
    let c00 = Matrix::<f32>::from_value(MatrixIdent::Accumulator, FRAG, FRAG, FRAG, acc_l, 0.0);
    let c01 = Matrix::<f32>::from_value(MatrixIdent::Accumulator, FRAG, FRAG, FRAG, acc_l, 0.0);
    let c10 = Matrix::<f32>::from_value(MatrixIdent::Accumulator, FRAG, FRAG, FRAG, acc_l, 0.0);
    let c11 = Matrix::<f32>::from_value(MatrixIdent::Accumulator, FRAG, FRAG, FRAG, acc_l, 0.0);
    let c20 = Matrix::<f32>::from_value(MatrixIdent::Accumulator, FRAG, FRAG, FRAG, acc_l, 0.0);
    let c21 = Matrix::<f32>::from_value(MatrixIdent::Accumulator, FRAG, FRAG, FRAG, acc_l, 0.0);
    let c30 = Matrix::<f32>::from_value(MatrixIdent::Accumulator, FRAG, FRAG, FRAG, acc_l, 0.0);
    let c31 = Matrix::<f32>::from_value(MatrixIdent::Accumulator, FRAG, FRAG, FRAG, acc_l, 0.0);
    let a_frag = unsafe { Matrix::<F>::uninitialized(MatrixIdent::A, FRAG, FRAG, FRAG, MatrixLayout::RowMajor) };
    let b_layout = comptime!(if bt { MatrixLayout::ColMajor } else { MatrixLayout::RowMajor });
    let b0 = unsafe { Matrix::<F>::uninitialized(MatrixIdent::B, FRAG, FRAG, FRAG, b_layout) };
    let b1 = unsafe { Matrix::<F>::uninitialized(MatrixIdent::B, FRAG, FRAG, FRAG, b_layout) };

    // Fragment starts inside a stage, in vectors: x rows of fragment row 0 (the others follow
    // at `FRAG·LDA`), and the plane's two weight fragment columns.
    let a_frag0 = (pr * comptime!(4 * FRAG)) * comptime!(LDA / vec);
    let mut cb0 = pc * comptime!(2 * FRAG);
    let mut cb1 = cb0 + FRAG;
    if swiglu {
        cb0 = pc * FRAG;
        cb1 = cb0 + comptime!(BN / 2);
    }
    let b_frag0 = if bt { cb0 * comptime!(LDB_NK / vec) } else { cb0 / vec };
    let b_frag1 = if bt { cb1 * comptime!(LDB_NK / vec) } else { cb1 / vec };

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

        // Only a segment that meets the block costs a K loop (uniform across the cube).
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
                let mut flag_ok = 0u32;
                let mut src_ok = 0usize;
                if ok {
                    flag_ok = 1u32;
                    src_ok = src;
                }
                a_ok[i] = flag_ok;
                a_src[i] = src_ok;
            }

            // Prologue: step 0 into stage 0.
            #[unroll]
            for i in 0..per_a {
                let k = a_k(unit + i * units, vec);
                ra[i] = if a_ok[i] == 1 && k < k_u { x[(a_src[i] + k) / vec] } else { zero };
            }
            load_b(w, &mut rb, &b_off, &b_ok, w_base, 0, k_u, n_u, unit, units, nb, nk, vec);
            #[unroll]
            for i in 0..per_a {
                let v = unit + i * units;
                if v < a_total {
                    sa[a_slot(v, vec)] = ra[i];
                }
            }
            store_b(&mut sb, &rb, 0, unit, units, nb, nk, vec);
            sync_cube();

            for step in 0..steps {
                let cur = step % 2;
                let next = step + 1 < steps;
                let k0n = (step + 1) * BK;
                if next {
                    #[unroll]
                    for i in 0..per_a {
                        let k = k0n + a_k(unit + i * units, vec);
                        ra[i] = if a_ok[i] == 1 && k < k_u { x[(a_src[i] + k) / vec] } else { zero };
                    }
                    load_b(w, &mut rb, &b_off, &b_ok, w_base, k0n, k_u, n_u, unit, units, nb, nk, vec);
                }

                let sa0 = cur * a_stage + a_frag0;
                let sb0 = cur * b_stage;
                #[unroll]
                for ks in 0..comptime!(BK / FRAG) {
                    // K offset of this sub-step inside the stage, in vectors: along a row of x
                    // and of NK weights, down the rows of KN weights.
                    let ka = comptime!(ks * FRAG / vec);
                    let kb = comptime!(if bt { ks * FRAG / vec } else { ks * FRAG * LDB_KN / vec });
                    let b0s = sb0 + kb + b_frag0;
                    let b1s = sb0 + kb + b_frag1;
                    cmma::load(&b0, &sb.slice(b0s, comptime!(2 * b_stage)), comptime!(ldb(bt)));
                    cmma::load(&b1, &sb.slice(b1s, comptime!(2 * b_stage)), comptime!(ldb(bt)));
                    let a0 = sa0 + ka;
                    let fstep = comptime!(FRAG * LDA / vec);
                    let lda = comptime!(LDA as u32);
                    let a_len = comptime!(2 * BM * LDA / vec);
                    cmma::load(&a_frag, &sa.slice(a0, a_len), lda);
                    mma_pair(&a_frag, &b0, &b1, &c00, &c01);
                    cmma::load(&a_frag, &sa.slice(a0 + fstep, a_len), lda);
                    mma_pair(&a_frag, &b0, &b1, &c10, &c11);
                    cmma::load(&a_frag, &sa.slice(a0 + fstep * 2, a_len), lda);
                    mma_pair(&a_frag, &b0, &b1, &c20, &c21);
                    cmma::load(&a_frag, &sa.slice(a0 + fstep * 3, a_len), lda);
                    mma_pair(&a_frag, &b0, &b1, &c30, &c31);
                }

                if next {
                    let st = (step + 1) % 2;
                    #[unroll]
                    for i in 0..per_a {
                        let v = unit + i * units;
                        if v < a_total {
                            sa[st * a_stage + a_slot(v, vec)] = ra[i];
                        }
                    }
                    store_b(&mut sb, &rb, st * b_stage, unit, units, nb, nk, vec);
                }
                sync_cube();
            }
        }

        e += 1;
        more = visits(group, e, e_end, rows_u, m0 + BM, mode);
    }

    // Epilogue, one fragment row at a time through the plane's scratch.
    let mut y_base = 0usize;
    if mode == MODE_MASKED {
        y_base = (e_end - 1) * rows_u;
    }
    let ep = Epilogue { m0: m0 + pr * comptime!(4 * FRAG), n0, pc, rows: rows_u, rows_end, n_out, y_base, tokens };
    let s0 = plane * comptime!(2 * FRAG * FRAG);
    store_frags(&mut scratch, s0, &c00, &c01);
    epilogue(&scratch, s0, &ep, 0usize, y, row_to_token, row_scale, flag, plane_dim, swiglu, scale, gather);
    store_frags(&mut scratch, s0, &c10, &c11);
    epilogue(&scratch, s0, &ep, 1usize, y, row_to_token, row_scale, flag, plane_dim, swiglu, scale, gather);
    store_frags(&mut scratch, s0, &c20, &c21);
    epilogue(&scratch, s0, &ep, 2usize, y, row_to_token, row_scale, flag, plane_dim, swiglu, scale, gather);
    store_frags(&mut scratch, s0, &c30, &c31);
    epilogue(&scratch, s0, &ep, 3usize, y, row_to_token, row_scale, flag, plane_dim, swiglu, scale, gather);
}

/// Row stride of the staged weight tile, in elements.
fn ldb(col_major: bool) -> u32 {
    if col_major {
        LDB_NK as u32
    } else {
        LDB_KN as u32
    }
}

/// Tile row of staged x vector `v` (`>= BM` past the tile).
#[cube]
pub(super) fn a_row(v: usize, #[comptime] vec: usize) -> usize {
    v / comptime!(BK / vec)
}

/// K offset inside the step of staged x vector `v`.
#[cube]
pub(super) fn a_k(v: usize, #[comptime] vec: usize) -> usize {
    v % comptime!(BK / vec) * vec
}

/// Shared-memory slot (in vectors, inside a stage) of staged x vector `v`.
#[cube]
pub(super) fn a_slot(v: usize, #[comptime] vec: usize) -> usize {
    a_row(v, vec) * comptime!(LDA / vec) + a_k(v, vec) / vec
}

/// K offset inside the step of staged weight vector `v`: along a row of `[E, N, K]` weights,
/// down the rows of `[E, K, N]` ones.
#[cube]
pub(super) fn b_k(v: usize, #[comptime] nk: bool, #[comptime] vec: usize) -> usize {
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
pub(super) fn b_slot(v: usize, #[comptime] nk: bool, #[comptime] vec: usize) -> usize {
    if nk {
        b_col(v, nk, vec) * comptime!(LDB_NK / vec) + b_k(v, nk, vec) / vec
    } else {
        b_k(v, nk, vec) * comptime!(LDB_KN / vec) + b_col(v, nk, vec) / vec
    }
}

/// This unit's weight vectors of the K step at `k0` into `rb`, one per staged slot (zero past
/// K or N).
#[cube]
#[allow(clippy::too_many_arguments)]
pub(super) fn load_b<F: Float, V: Size>(
    w: &Array<Vector<F, V>>,
    rb: &mut Array<Vector<F, V>>,
    b_off: &Array<usize>,
    b_ok: &Array<u32>,
    w_base: usize,
    k0: usize,
    k_dim: usize,
    n_dim: usize,
    unit: usize,
    #[comptime] units: usize,
    #[comptime] nb: usize,
    #[comptime] nk: bool,
    #[comptime] vec: usize,
) {
    #[unroll]
    for i in 0..nb {
        let v = unit + i * units;
        rb[i] = load_w(w, w_base, b_off[i], b_k(v, nk, vec), b_ok[i], k0, k_dim, n_dim, nk, vec);
    }
}

/// Stores `rb` (see [`load_b`]) into the stage at `base` of `sb`.
#[cube]
#[allow(clippy::too_many_arguments)]
pub(super) fn store_b<F: Float, V: Size>(
    sb: &mut SharedMemory<Vector<F, V>>,
    rb: &Array<Vector<F, V>>,
    base: usize,
    unit: usize,
    #[comptime] units: usize,
    #[comptime] nb: usize,
    #[comptime] nk: bool,
    #[comptime] vec: usize,
) {
    #[unroll]
    for i in 0..nb {
        let v = unit + i * units;
        if v < comptime!(BK * BN / vec) {
            sb[base + b_slot(v, nk, vec)] = rb[i];
        }
    }
}

/// `c0 += a · b0`, `c1 += a · b1`.
#[cube]
fn mma_pair<F: Float>(a: &Matrix<F>, b0: &Matrix<F>, b1: &Matrix<F>, c0: &Matrix<f32>, c1: &Matrix<f32>) {
    cmma::execute::<F, F, f32, f32>(a, b0, c0, c0);
    cmma::execute::<F, F, f32, f32>(a, b1, c1, c1);
}

/// One staged weight vector for the K step at `k0`: `w_e[k0 + kk, col..]` (KN) or
/// `w_e[col, k0 + kk..]` (NK), zero past K or N.
#[cube]
#[allow(clippy::too_many_arguments)]
pub(super) fn load_w<F: Float, V: Size>(
    w: &Array<Vector<F, V>>,
    w_base: usize,
    off: usize,
    kk: usize,
    ok: u32,
    k0: usize,
    k_dim: usize,
    n_dim: usize,
    #[comptime] nk: bool,
    #[comptime] vec: usize,
) -> Vector<F, V> {
    let mut v = Vector::<F, V>::zeroed();
    if ok == 1 && k0 + kk < k_dim {
        let step = if nk { k0 } else { k0 * n_dim };
        v = w[(w_base + off + step) / vec];
    }
    v
}

/// Stores a plane's two accumulators of one fragment row into its scratch (`[2, 16, 16]` f32).
#[cube]
fn store_frags(scratch: &mut SharedMemory<f32>, s0: usize, c0: &Matrix<f32>, c1: &Matrix<f32>) {
    let n = comptime!(FRAG * FRAG);
    cmma::store(&mut scratch.slice_mut(s0, s0 + n), c0, comptime!(FRAG as u32), MatrixLayout::RowMajor);
    cmma::store(&mut scratch.slice_mut(s0 + n, s0 + 2 * n), c1, comptime!(FRAG as u32), MatrixLayout::RowMajor);
    sync_plane();
}

/// Where a plane's results go.
#[derive(CubeType)]
pub(super) struct Epilogue {
    /// First output row of the plane (fragment row 0).
    pub(super) m0: usize,
    /// First output column of the block.
    pub(super) n0: usize,
    /// Plane column `pc`.
    pub(super) pc: usize,
    /// `R` (contiguous, dense) or `C` (masked).
    pub(super) rows: usize,
    /// Rows at or past this belong to no expert (zero).
    pub(super) rows_end: usize,
    pub(super) n_out: usize,
    /// First output row of the expert (masked), else 0.
    pub(super) y_base: usize,
    pub(super) tokens: u32,
}

/// Writes fragment row `fi` of the plane from its scratch: SwiGLU of the gate/up pair, or the
/// two column fragments; row scale; zero for rows outside every expert.
#[cube]
#[allow(clippy::too_many_arguments)]
pub(super) fn epilogue<F: Float>(
    scratch: &SharedMemory<f32>,
    s0: usize,
    ep: &Epilogue,
    #[comptime] fi: usize,
    y: &mut Array<F>,
    row_to_token: &Array<i32>,
    row_scale: &Array<f32>,
    flag: &mut Array<i32>,
    #[comptime] plane_dim: usize,
    #[comptime] swiglu: bool,
    #[comptime] scale: bool,
    #[comptime] gather: bool,
) {
    let n = comptime!(FRAG * FRAG);
    let lane = UNIT_POS_X as usize;
    #[unroll]
    for t in 0..comptime!(n.div_ceil(plane_dim)) {
        let idx = lane + t * plane_dim;
        let row = ep.m0 + fi * FRAG + idx / FRAG;
        let cc = idx % FRAG;
        if idx < n && row < ep.rows {
            let y_row = ep.y_base + row;
            let valid = row < ep.rows_end;
            let mut s = 1.0f32;
            if scale {
                s = row_scale[y_row];
            }
            let mut oc = ep.n0 + ep.pc * comptime!(2 * FRAG) + cc;
            if swiglu {
                oc = ep.n0 + ep.pc * FRAG + cc;
            }
            if gather && oc == 0 {
                let tk = row_to_token[row];
                if tk < -1 || tk >= ep.tokens as i32 {
                    record(flag, BAD_GATHER, row as i32, tk, ep.tokens as i32);
                }
            }
            if swiglu {
                let g = scratch[s0 + idx];
                let u = scratch[s0 + n + idx];
                let mut out = g / (1.0 + f32::exp(-g)) * u * s;
                if !valid {
                    out = 0.0;
                }
                if oc < ep.n_out {
                    y[y_row * ep.n_out + oc] = F::cast_from(out);
                }
            } else {
                let mut o0 = scratch[s0 + idx] * s;
                let mut o1 = scratch[s0 + n + idx] * s;
                if !valid {
                    o0 = 0.0;
                    o1 = 0.0;
                }
                if oc < ep.n_out {
                    y[y_row * ep.n_out + oc] = F::cast_from(o0);
                }
                if oc + FRAG < ep.n_out {
                    y[y_row * ep.n_out + oc + FRAG] = F::cast_from(o1);
                }
            }
        }
    }
    sync_plane();
}

#[cfg(all(test, feature = "cubecl-cuda", feature = "cubecl-wgpu"))]
#[path = "grouped_gemm_cmma_source.rs"]
pub(crate) mod source;
