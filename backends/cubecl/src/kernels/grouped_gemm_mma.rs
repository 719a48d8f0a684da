//! Tensor-core grouped GEMM through cubecl's manual MMA API ([`MmaDefinition`]: `ldmatrix`
//! fragment loads from shared memory and `mma.sync` m16n8k16, f16/bf16 inputs, f32
//! accumulators): the default tensor-core kernel where the runtime has manual MMA and planes
//! of 32 (`MOEKIT_CUBECL_GEMM=cmma3`; 121 TFLOP/s on the H200's up GEMM, the whole suite
//! passed there), beside [`super::grouped_gemm_cmma`], whose block shape, staging, grouping
//! and epilogue it reuses unchanged (see that module's doc for the semantics).
//!
//! NOTE: why a third kernel: nvcuda `wmma::load_matrix_sync` compiles (sm_90a) to generic
//! 32-bit loads per fragment register, plus a `MOVM` transpose per register of a row-major B
//! fragment. Here every fragment comes from one `ldmatrix.x4` (a 16×16 A fragment, or two
//! n8 B tiles), and `[E, K, N]` weights staged row-major are transposed by `ldmatrix.trans`
//! for free, so the weights are staged as they lie in memory, whatever their layout.
//!
//! Plane `(pr, pc)` owns the same 64 rows × 2 fragment columns as in the first kernel, as
//! 4 fragment rows × 4 tiles of 8 columns (16 accumulators of 2 vectors of 2 f32 per lane).
//! Lane `l` addresses, per `ldmatrix.x4`: A row `l % 16`, K half `l / 16`; B matrix `l / 8`
//! (row `l % 8`), matrices ordered (n0-7, k0-7), (n0-7, k8-15), (n8-15, k0-7), (n8-15, k8-15)
//! so registers 0-1 are tile 0's B fragment and 2-3 tile 1's.

use super::grouped_gemm::{block_experts, expert_rows, visits, MODE_MASKED};
use super::grouped_gemm_cmma::{
    a_k, a_row, a_slot, b_k, b_slot, epilogue, Epilogue, BK, BM, BN, FRAG, LDA, LDB_KN, LDB_NK, PLANES,
};
use super::mma_frag::{acc_zero, half, load_frag, mma_row, P2, TN};
use cubecl::cmma::{MatrixIdent, MmaDefinition};
use cubecl::ir::ElemType;
use cubecl::prelude::*;

/// The grouped GEMM; arguments and launch as
/// [`super::grouped_gemm_cmma::grouped_gemm_cmma_kernel`], on planes of 32.
#[cube(launch_unchecked)]
#[allow(clippy::too_many_arguments)]
pub(crate) fn grouped_gemm_mma_kernel<F: Float, V: Size>(
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
    let m0 = CUBE_POS_X as usize * BM;
    let n0 = if swiglu { CUBE_POS_Y as usize * comptime!(BN / 2) } else { CUBE_POS_Y as usize * BN };

    let a_stage = comptime!(BM * LDA / vec);
    let b_stage = comptime!(if nk { BN * LDB_NK / vec } else { BK * LDB_KN / vec });
    let mut sa = SharedMemory::<Vector<F, V>>::new_aligned(comptime!(2 * BM * LDA / vec), 32usize);
    let mut sb = SharedMemory::<Vector<F, V>>::new_aligned(comptime!(2 * b_stage), 32usize);
    let mut scratch = SharedMemory::<f32>::new_aligned(comptime!(PLANES * 2 * FRAG * FRAG), 32usize);

    let a_total = comptime!(BM * BK / vec);
    let b_total = comptime!(BK * BN / vec);
    let per_a = comptime!(a_total.div_ceil(units));
    let nb = comptime!(b_total.div_ceil(units));
    let mut ra = Array::<Vector<F, V>>::new(per_a);
    let mut rb = Array::<Vector<F, V>>::new(nb);

    // Where each staged weight vector starts inside an expert's weight at k = 0, and whether
    // its column exists (as in the first kernel, without transposed staging).
    let mut b_off = Array::<usize>::new(nb);
    let mut b_ok = Array::<u32>::new(nb);
    #[unroll]
    for i in 0..nb {
        let v = unit + i * units;
        let kk = if nk { v % comptime!(BK / vec) * vec } else { v / comptime!(BN / vec) };
        let c = if nk { v / comptime!(BK / vec) } else { v % comptime!(BN / vec) * vec };
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
        more = visits(group, e, e_end, rows_u, m0 + BM, mode);
    }

    let mut y_base = 0usize;
    if mode == MODE_MASKED {
        y_base = (e_end - 1) * rows_u;
    }
    let ep = Epilogue { m0: m0 + pr * comptime!(4 * FRAG), n0, pc, rows: rows_u, rows_end, n_out, y_base, tokens };
    let s0 = plane * comptime!(2 * FRAG * FRAG);
    store_row::<F>(&mut scratch, s0, &c00, &c01, &c02, &c03);
    epilogue(&scratch, s0, &ep, 0usize, y, row_to_token, row_scale, flag, plane_dim, swiglu, scale, gather);
    store_row::<F>(&mut scratch, s0, &c10, &c11, &c12, &c13);
    epilogue(&scratch, s0, &ep, 1usize, y, row_to_token, row_scale, flag, plane_dim, swiglu, scale, gather);
    store_row::<F>(&mut scratch, s0, &c20, &c21, &c22, &c23);
    epilogue(&scratch, s0, &ep, 2usize, y, row_to_token, row_scale, flag, plane_dim, swiglu, scale, gather);
    store_row::<F>(&mut scratch, s0, &c30, &c31, &c32, &c33);
    epilogue(&scratch, s0, &ep, 3usize, y, row_to_token, row_scale, flag, plane_dim, swiglu, scale, gather);
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
    ra: &mut Array<Vector<F, V>>,
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
        ra[i] = x[at];
        ok[i] = real;
    }
}

/// This unit's weight vectors of the K step at `k0` into `rb` (see [`load_a`]; `w[0]` past K
/// or N).
#[cube]
#[allow(clippy::too_many_arguments)]
fn load_w<F: Float, V: Size>(
    w: &Array<Vector<F, V>>,
    rb: &mut Array<Vector<F, V>>,
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
        rb[i] = w[at];
        ok[i] = real;
    }
}

/// Stores staged vectors `regs` (x with `!b`, weights with `b`) into the stage at `base`,
/// zero where `ok` says the vector is not real data (two predicated stores, no merging).
#[cube]
#[allow(clippy::too_many_arguments)]
fn store<F: Float, V: Size>(
    stage: &mut SharedMemory<Vector<F, V>>,
    regs: &Array<Vector<F, V>>,
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
                stage[slot] = regs[i];
            } else {
                stage[slot] = Vector::<F, V>::zeroed();
            }
        }
    }
}

/// Stores a plane's four accumulators of one fragment row into its scratch as the first
/// kernel's `[2, 16, 16]` f32 (tiles 0-1: the first 16-column fragment, 2-3: the second).
#[cube]
fn store_row<F: Float>(
    scratch: &mut SharedMemory<f32>,
    s0: usize,
    c0: &Array<Vector<f32, P2>>,
    c1: &Array<Vector<f32, P2>>,
    c2: &Array<Vector<f32, P2>>,
    c3: &Array<Vector<f32, P2>>,
) {
    store_tile::<F>(scratch, s0, c0);
    store_tile::<F>(scratch, s0 + TN, c1);
    store_tile::<F>(scratch, s0 + FRAG * FRAG, c2);
    store_tile::<F>(scratch, s0 + FRAG * FRAG + TN, c3);
    sync_plane();
}

/// One m16n8 accumulator into the scratch at `at` (row stride 16), where the target's
/// register layout puts each element.
#[cube]
fn store_tile<F: Float>(scratch: &mut SharedMemory<f32>, at: usize, c: &Array<Vector<f32, P2>>) {
    let def = MmaDefinition::<F, F, f32>::new(FRAG, TN, FRAG);
    let lane = UNIT_POS_X;
    #[unroll]
    for v in 0..2usize {
        let reg = c[v];
        #[unroll]
        for j in 0..2usize {
            let (row, col) = def.position_of_nth(lane, comptime!((v * 2 + j) as u32), MatrixIdent::Accumulator);
            scratch[at + row as usize * FRAG + col as usize] = reg[j];
        }
    }
}
