//! The manual-MMA grouped GEMM, variant 4 (opt-in `MOEKIT_CUBECL_GEMM=cmma4` until a GPU has
//! checked it): [`super::grouped_gemm_mma`] (same block shape, fragments, grouping and
//! semantics) with four changes, for staged vectors of 8 elements (16 bytes; other shapes
//! keep the default kernel, see `crate::ops::gemm_path`):
//!
//! - 32-bit staging: each loaded 16-byte vector is reinterpreted as four `u32` words and kept
//!   so until its store. NOTE: with 16-bit lanes ptxas repacks the halves of the 8 loads into
//!   other registers (~50 `PRMT` per K step) right after the loads, so every step waited for
//!   its loads before its tensor-core work (the loads' latency was never hidden); words need
//!   no repacking, so the loads stay in flight behind the step's matrix work.
//! - K steps of [`BK`] = 128 (two stages, 136 KiB of shared memory, one cube per SM as
//!   before): twice the matrix work per step to hide each step's loads, half the syncs.
//! - Column-first cube order: the launch grid is read as one linear index whose fastest part
//!   is the column block, so the cubes of one row block run together and read its x rows from
//!   L2 (x was read once per column block from HBM, the blocks of a row far apart in time).
//! - Register epilogue: each lane writes its accumulators straight to `y`; with SwiGLU the
//!   gate tile and its up tile hold the same `(row, column)` in the same lane, so the pair
//!   meets in one unit (no shared scratch, no plane syncs).
//!
//! NOTE: launched unchecked: every index is kept in bounds whatever the index data says (as
//! in the first kernels).

use super::flag::record;
use super::grouped_gemm::{check_offsets, clamp_row, BAD_COUNTS, BAD_GATHER, MODE_CONTIGUOUS, MODE_MASKED};
use super::grouped_gemm_cmma::{BK as BK1, BM, BN, FRAG, LDB_KN, PLANES};
use cubecl::cmma::{MatrixIdent, MmaDefinition};
use cubecl::ir::ElemType;
use cubecl::prelude::*;

/// Two elements: one 32-bit register of a 16-bit fragment, or two f32 of an accumulator (the
/// vector size cubecl's CUDA target gives m16n8k16 for f16/bf16 with f32 accumulators).
pub(super) type P2 = Const<2>;
/// One staged 16-byte vector as 32-bit words.
type P4 = Const<4>;
/// Columns of an n8 tile.
pub(super) const TN: usize = 8;
/// Reduction depth of one K step: twice the first kernels', so each step's loads have twice
/// the matrix work to land behind and the cube syncs half as often.
pub(crate) const BK: usize = 2 * BK1;
/// Padding of a staged row, in elements: rows of 272 bytes start 16 bytes apart modulo 128,
/// so the 8 rows of an `ldmatrix` meet no bank conflict.
const PAD: usize = 8;
/// Row stride of the staged x tile `[BM, BK]`.
pub(crate) const LDA: usize = BK + PAD;
/// Row stride of the staged `[E, N, K]` weight tile `[BN, BK]`.
pub(crate) const LDB_NK: usize = BK + PAD;

/// Shared memory of one launch in bytes for an element of `elem_bytes`: two stages of x and
/// weight tiles (no epilogue scratch).
pub(crate) fn shared_bytes(elem_bytes: usize, nk: bool) -> usize {
    let b = if nk { BN * LDB_NK } else { BK * LDB_KN };
    2 * (BM * LDA + b) * elem_bytes
}

/// The grouped GEMM; arguments and launch as
/// [`super::grouped_gemm_cmma::grouped_gemm_cmma_kernel`], on planes of 32, with `V` = 8.
#[cube(launch_unchecked)]
#[allow(clippy::too_many_arguments)]
pub(crate) fn grouped_gemm_mma4_kernel<F: Float, V: Size>(
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
    // Column-first cube order (see the module doc): the grid `(x, y)` as one linear index,
    // column blocks fastest.
    let col_cubes = CUBE_COUNT_Y as usize;
    let lin = CUBE_POS_X as usize + CUBE_POS_Y as usize * CUBE_COUNT_X as usize;
    let cube_m = lin / col_cubes;
    let cube_n = lin % col_cubes;
    let m0 = cube_m * BM;
    let n0 = if swiglu { cube_n * comptime!(BN / 2) } else { cube_n * BN };

    let a_stage = comptime!(BM * LDA / vec);
    let b_stage = comptime!(if nk { BN * LDB_NK / vec } else { BK * LDB_KN / vec });
    let mut sa = SharedMemory::<Vector<F, V>>::new_aligned(comptime!(2 * BM * LDA / vec), 32usize);
    let mut sb = SharedMemory::<Vector<F, V>>::new_aligned(comptime!(2 * b_stage), 32usize);

    let a_total = comptime!(BM * BK / vec);
    let b_total = comptime!(BK * BN / vec);
    let per_a = comptime!(a_total.div_ceil(units));
    let nb = comptime!(b_total.div_ceil(units));
    let mut ra = Array::<Vector<u32, P4>>::new(per_a);
    let mut rb = Array::<Vector<u32, P4>>::new(nb);

    // Where each staged weight vector starts inside an expert's weight at k = 0, and whether
    // its column exists (as in the first kernel, without transposed staging).
    let mut b_off = Array::<usize>::new(nb);
    let mut b_ok = Array::<u32>::new(nb);
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
        let mut ok = 0u32;
        if v < b_total && oc < n_out {
            ok = 1u32;
        }
        b_ok[i] = ok;
        b_off[i] = if nk { wc * k_u + kk } else { kk * n_u + wc };
    }
    let mut a_src = Array::<usize>::new(per_a);
    let mut a_ok = Array::<u32>::new(per_a);
    // Whether each staged vector of the step in flight is real data (else it stages zero).
    let mut ra_ok = Array::<u32>::new(per_a);
    let mut rb_ok = Array::<u32>::new(nb);

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

    // The plane's two 16-column weight fragments start at tile columns `cb0` and `cb1`.
    let mut cb0 = pc * comptime!(2 * FRAG);
    let mut cb1 = cb0 + FRAG;
    if swiglu {
        cb0 = pc * FRAG;
        cb1 = cb0 + comptime!(BN / 2);
    }
    // This lane's `ldmatrix` row addresses inside a stage, in elements, at K sub-step 0.
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
                let mut flag_ok = 0u32;
                let mut src_ok = 0usize;
                if ok {
                    flag_ok = 1u32;
                    src_ok = src;
                }
                a_ok[i] = flag_ok;
                a_src[i] = src_ok;
            }

            load_a(x, &mut ra, &mut ra_ok, &a_src, &a_ok, 0, k_u, unit, units, per_a, vec);
            load_w(w, &mut rb, &mut rb_ok, &b_off, &b_ok, w_base, 0, k_u, n_u, unit, units, nb, nk, vec);
            store(&mut sa, &ra, &ra_ok, 0, unit, units, per_a, a_total, false, nk, vec);
            store(&mut sb, &rb, &rb_ok, 0, unit, units, nb, b_total, true, nk, vec);
            sync_cube();

            for step in 0..steps {
                let cur = step % 2;
                let next = step + 1 < steps;
                let k0n = (step + 1) * BK;
                // NOTE: the branch keeps the loads above the matrix work: issued
                // unconditionally in one basic block with it, ptxas sinks each load next to its
                // store to save registers (seen in the SASS: 16 serial load-store pairs).
                if next {
                    load_a(x, &mut ra, &mut ra_ok, &a_src, &a_ok, k0n, k_u, unit, units, per_a, vec);
                    load_w(w, &mut rb, &mut rb_ok, &b_off, &b_ok, w_base, k0n, k_u, n_u, unit, units, nb, nk, vec);
                }

                let sa0 = cur * comptime!(BM * LDA) + a_lane;
                let sb0 = cur * comptime!(b_stage * vec);
                #[unroll]
                for ks in 0..comptime!(BK / FRAG) {
                    // K offset of the sub-step inside the stage, in elements: along a row of
                    // x and of NK weights, down the rows of KN weights.
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

                if next {
                    let st = (step + 1) % 2;
                    store(&mut sa, &ra, &ra_ok, st * a_stage, unit, units, per_a, a_total, false, nk, vec);
                    store(&mut sb, &rb, &rb_ok, st * b_stage, unit, units, nb, b_total, true, nk, vec);
                }
                sync_cube();
            }
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
    write_row::<F>(&ep, 0usize, &c00, &c01, &c02, &c03, y, row_to_token, row_scale, flag, swiglu, scale, gather);
    write_row::<F>(&ep, 1usize, &c10, &c11, &c12, &c13, y, row_to_token, row_scale, flag, swiglu, scale, gather);
    write_row::<F>(&ep, 2usize, &c20, &c21, &c22, &c23, y, row_to_token, row_scale, flag, swiglu, scale, gather);
    write_row::<F>(&ep, 3usize, &c30, &c31, &c32, &c33, y, row_to_token, row_scale, flag, swiglu, scale, gather);
}

/// This unit's x vectors of the K step at `k0` into `ra`, with whether each is real data in
/// `ok` (past its rows or K: `x[0]`, in bounds because a launch that loads has `x` non-empty).
///
/// NOTE: the load is unconditional and the zeroing waits for [`store`]: the first kernel's
/// `zero` / `if ok { v = x[..] }` makes ptxas merge each loaded 16-bit lane into the staging
/// registers right after the load (12 `PRMT`), so all 8 `LDG.128` of a step reuse one
/// register quad and wait for each other; here they stay in flight together.
#[cube]
#[allow(clippy::too_many_arguments)]
fn load_a<F: Float, V: Size>(
    x: &Array<Vector<F, V>>,
    ra: &mut Array<Vector<u32, P4>>,
    ok: &mut Array<u32>,
    a_src: &Array<usize>,
    a_ok: &Array<u32>,
    k0: usize,
    k_dim: usize,
    unit: usize,
    #[comptime] units: usize,
    #[comptime] per_a: usize,
    #[comptime] vec: usize,
) {
    #[unroll]
    for i in 0..per_a {
        let k = k0 + a_k(unit + i * units, vec);
        let mut at = 0usize;
        let mut real = 0u32;
        if a_ok[i] == 1 && k < k_dim {
            at = (a_src[i] + k) / vec;
            real = 1u32;
        }
        ra[i] = Vector::<u32, P4>::reinterpret(x[at]);
        ok[i] = real;
    }
}

/// This unit's weight vectors of the K step at `k0` into `rb` (see [`load_a`]; `w[0]` past K
/// or N).
#[cube]
#[allow(clippy::too_many_arguments)]
fn load_w<F: Float, V: Size>(
    w: &Array<Vector<F, V>>,
    rb: &mut Array<Vector<u32, P4>>,
    ok: &mut Array<u32>,
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
    let step = if nk { k0 } else { k0 * n_dim };
    #[unroll]
    for i in 0..nb {
        let kk = b_k(unit + i * units, nk, vec);
        let mut at = 0usize;
        let mut real = 0u32;
        if b_ok[i] == 1 && k0 + kk < k_dim {
            at = (w_base + b_off[i] + step) / vec;
            real = 1u32;
        }
        rb[i] = Vector::<u32, P4>::reinterpret(w[at]);
        ok[i] = real;
    }
}

/// Stores staged vectors `regs` (x with `!b`, weights with `b`) into the stage at `base`,
/// zero where `ok` says the vector is not real data (two predicated stores, no merging).
#[cube]
#[allow(clippy::too_many_arguments)]
fn store<F: Float, V: Size>(
    stage: &mut SharedMemory<Vector<F, V>>,
    regs: &Array<Vector<u32, P4>>,
    ok: &Array<u32>,
    base: usize,
    unit: usize,
    #[comptime] units: usize,
    #[comptime] n: usize,
    #[comptime] total: usize,
    #[comptime] b: bool,
    #[comptime] nk: bool,
    #[comptime] vec: usize,
) {
    #[unroll]
    for i in 0..n {
        let v = unit + i * units;
        if v < total {
            let slot = if b { base + b_slot(v, nk, vec) } else { base + a_slot(v, vec) };
            if ok[i] == 1 {
                stage[slot] = Vector::<F, V>::reinterpret(regs[i]);
            } else {
                stage[slot] = Vector::<F, V>::zeroed();
            }
        }
    }
}

/// A zeroed m16n8 accumulator (2 vectors of 2 f32 per lane).
#[cube]
pub(super) fn acc_zero() -> Array<Vector<f32, P2>> {
    let mut c = Array::<Vector<f32, P2>>::new(2usize);
    c[0usize] = Vector::<f32, P2>::zeroed();
    c[1usize] = Vector::<f32, P2>::zeroed();
    c
}

/// Four 8×8 matrices by one `ldmatrix.x4` (`.trans` with `trans`) from `stage`, this lane's
/// row starting at element `at` (a multiple of 8: 16-byte aligned). NOTE: the ident only
/// names the operand; cubecl lowers A and B loads alike.
#[cube]
pub(super) fn load_frag<F: Float, V: Size>(
    stage: &SharedMemory<Vector<F, V>>,
    at: usize,
    #[comptime] vec: usize,
    #[comptime] trans: bool,
) -> Array<Vector<F, P2>> {
    let def = MmaDefinition::<F, F, f32>::new(FRAG, TN, FRAG);
    let row = stage.slice(at / vec, at / vec + comptime!(TN.div_ceil(vec)));
    def.load_matrix::<Vector<F, V>, P2>(&row, MatrixIdent::A, 4usize, trans)
}

/// Registers `i, i + 1` of an `ldmatrix.x4` result: one n8 tile's B fragment.
#[cube]
pub(super) fn half<F: Float>(regs: &Array<Vector<F, P2>>, #[comptime] i: usize) -> Array<Vector<F, P2>> {
    let mut b = Array::<Vector<F, P2>>::new(2usize);
    b[0usize] = regs[i];
    b[1usize] = regs[i + 1];
    b
}

/// One fragment row: `c_j += a · b_j` for the plane's four n8 tiles.
#[cube]
#[allow(clippy::too_many_arguments)]
pub(super) fn mma_row<F: Float>(
    a: &Array<Vector<F, P2>>,
    b0: &Array<Vector<F, P2>>,
    b1: &Array<Vector<F, P2>>,
    b2: &Array<Vector<F, P2>>,
    b3: &Array<Vector<F, P2>>,
    c0: &mut Array<Vector<f32, P2>>,
    c1: &mut Array<Vector<f32, P2>>,
    c2: &mut Array<Vector<f32, P2>>,
    c3: &mut Array<Vector<f32, P2>>,
) {
    let def = MmaDefinition::<F, F, f32>::new(FRAG, TN, FRAG);
    def.execute_inplace(a, b0, c0);
    def.execute_inplace(a, b1, c1);
    def.execute_inplace(a, b2, c2);
    def.execute_inplace(a, b3, c3);
}

/// Where a plane's results go.
#[derive(CubeType)]
pub(super) struct Out {
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

/// Writes fragment row `fi` of the plane from its accumulators `c0..c3` (n8 tiles at tile
/// columns `cb0`, `cb0 + 8`, `cb1`, `cb1 + 8`): with SwiGLU `silu(c_j) · c_{j+2}` (gate and
/// up tiles hold the same element in the same lane) at output column `n0 + 16·pc + 8·j + col`,
/// else `c_j` at `n0 + 32·pc + 8·j + col`; row scale; zero for rows outside every expert;
/// with gather the unit owning output column 0 checks its rows' tokens (as the first kernel).
#[cube]
#[allow(clippy::too_many_arguments)]
pub(super) fn write_row<F: Float>(
    ep: &Out,
    #[comptime] fi: usize,
    c0: &Array<Vector<f32, P2>>,
    c1: &Array<Vector<f32, P2>>,
    c2: &Array<Vector<f32, P2>>,
    c3: &Array<Vector<f32, P2>>,
    y: &mut Array<F>,
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
    for n in 0..4usize {
        let (r, col) = def.position_of_nth(lane, comptime!(n as u32), MatrixIdent::Accumulator);
        let v = comptime!(n / 2);
        let h = comptime!(n % 2);
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
                let g0 = c0[v][h];
                let g1 = c1[v][h];
                put(y, base, oc, ep.n_out, g0 / (1.0 + f32::exp(-g0)) * c2[v][h] * s, valid);
                put(y, base, oc + TN, ep.n_out, g1 / (1.0 + f32::exp(-g1)) * c3[v][h] * s, valid);
            } else {
                put(y, base, oc, ep.n_out, c0[v][h] * s, valid);
                put(y, base, oc + TN, ep.n_out, c1[v][h] * s, valid);
                put(y, base, oc + comptime!(2 * TN), ep.n_out, c2[v][h] * s, valid);
                put(y, base, oc + comptime!(3 * TN), ep.n_out, c3[v][h] * s, valid);
            }
        }
    }
}

/// `y[base + col] = value` (zero unless `valid`) where `col < n_out`.
#[cube]
fn put<F: Float>(y: &mut Array<F>, base: usize, col: usize, n_out: usize, value: f32, valid: bool) {
    if col < n_out {
        let mut out = 0.0f32;
        if valid {
            out = value;
        }
        y[base + col] = F::cast_from(out);
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
pub(super) fn b_col(v: usize, #[comptime] nk: bool, #[comptime] vec: usize) -> usize {
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

#[cfg(test)]
#[path = "grouped_gemm_mma4_emulate.rs"]
mod emulate;
