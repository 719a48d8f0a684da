//! The router's gate GEMM on matrix instructions: `logits [T, E] f32 = hidden [T, H] · gate
//! [H, E]` for f16/bf16 inputs through `cmma` (16×16×16, f32 accumulators), the same precision
//! as the CUDA backend's cuBLASLt gate (exact products of the half inputs, f32 sums, f32
//! logits never rounded to `F`); only the order of the f32 additions differs from
//! [`super::gate::gate_logits`].
//!
//! A cube of `(plane_dim, 4)` units owns [`GC_BM`] tokens × [`GC_BN`] experts; its planes form
//! a 2 × 2 grid, plane `(pr, pc)` accumulating the 32 × 32 outputs of rows `32·pr ..` and
//! columns `32·pc ..` in four fragments. Depth slices of [`GC_BK`] are staged in shared memory
//! element by element (`hidden` rows padded to [`GC_LDA`], gate rows to [`GC_LDB`] so every
//! fragment start is 32-byte aligned and rows do not all start on one bank); loads past `T`,
//! `H` or `E` read zero. The accumulators go through a per-plane f32 scratch to bounded
//! global stores.
//!
//! Index map (checked by hand): staged element `v = unit + i·units` of a step is `hidden` row
//! `v / GC_BK`, depth `v % GC_BK` (consecutive units read consecutive depths of one row), and
//! gate depth `v / GC_BN`, column `v % GC_BN`. A fragment `(i, j)` of plane `(pr, pc)` at
//! sub-step `ks` loads A from `sa[(32·pr + 16·i)·GC_LDA + 16·ks]` and B from
//! `sb[16·ks·GC_LDB + 32·pc + 16·j]`; its scratch element `w` (row-major 16 × 16) is output
//! `(m0 + 32·pr + 16·i + w / 16, n0 + 32·pc + 16·j + w % 16)`.
//!
//! NOTE: launched unchecked, as the other tensor-core kernels: every access is in bounds by
//! construction (staged indices below `GC_BM·GC_LDA` and `GC_BK·GC_LDB`, global reads and
//! writes guarded by `T`, `H`, `E`, fragment loads ending at row and column 63 of a slice).

use cubecl::cmma::{self, Matrix, MatrixIdent, MatrixLayout};
use cubecl::ir::ElemType;
use cubecl::prelude::*;

/// Tokens of a cube's block.
pub const GC_BM: usize = 64;
/// Experts of a cube's block.
pub const GC_BN: usize = 64;
/// Depth of one staged slice.
pub const GC_BK: usize = 32;
/// Planes per cube (2 × 2).
pub const GC_PLANES: usize = 4;
/// Row stride of the staged hidden slice `[GC_BM, GC_BK]` (elements).
pub const GC_LDA: usize = GC_BK + 8;
/// Row stride of the staged gate slice `[GC_BK, GC_BN]` (elements).
pub const GC_LDB: usize = GC_BN + 8;
/// Edge of a fragment.
const FRAG: usize = 16;

/// Shared memory of one cube in bytes for half inputs (both stages of f16/bf16 plus the f32
/// scratch).
pub const fn gate_cmma_shared_bytes() -> usize {
    (GC_BM * GC_LDA + GC_BK * GC_LDB) * 2 + GC_PLANES * 4 * FRAG * FRAG * 4
}

/// The gate GEMM; see the module doc. Launch with cubes of `(plane_dim, GC_PLANES)` units and
/// `(ceil(E / GC_BN), ceil(T / GC_BM))` cubes (the expert blocks of one token block run side
/// by side, so its hidden rows are read from L2 the second time).
#[cube(launch_unchecked)]
#[allow(clippy::too_many_arguments)]
pub fn gate_logits_cmma<F: Float>(
    x: &Array<F>,
    gate: &Array<F>,
    out: &mut Array<f32>,
    tokens: u32,
    hidden: u32,
    experts: u32,
    #[comptime] plane_dim: usize,
    #[define(F)] _dtype: ElemType,
) {
    let units = comptime!(plane_dim * GC_PLANES);
    let a_total = comptime!(GC_BM * GC_BK);
    let b_total = comptime!(GC_BK * GC_BN);
    let per_a = comptime!((GC_BM * GC_BK).div_ceil(plane_dim * GC_PLANES));
    let per_b = comptime!((GC_BK * GC_BN).div_ceil(plane_dim * GC_PLANES));
    let unit = UNIT_POS as usize;
    let lane = UNIT_POS_X as usize;
    let plane = UNIT_POS_Y as usize;
    let pr = plane / 2;
    let pc = plane % 2;
    let (t_count, h_count, e_count) = (tokens as usize, hidden as usize, experts as usize);
    let n0 = CUBE_POS_X as usize * GC_BN;
    let m0 = CUBE_POS_Y as usize * GC_BM;

    let mut sa = SharedMemory::<F>::new_aligned(comptime!(GC_BM * GC_LDA), 32usize);
    let mut sb = SharedMemory::<F>::new_aligned(comptime!(GC_BK * GC_LDB), 32usize);
    let mut scratch = SharedMemory::<f32>::new_aligned(comptime!(GC_PLANES * 4 * FRAG * FRAG), 32usize);

    let acc_l = MatrixLayout::Undefined;
    let c00 = Matrix::<f32>::from_value(MatrixIdent::Accumulator, FRAG, FRAG, FRAG, acc_l, 0.0);
    let c01 = Matrix::<f32>::from_value(MatrixIdent::Accumulator, FRAG, FRAG, FRAG, acc_l, 0.0);
    let c10 = Matrix::<f32>::from_value(MatrixIdent::Accumulator, FRAG, FRAG, FRAG, acc_l, 0.0);
    let c11 = Matrix::<f32>::from_value(MatrixIdent::Accumulator, FRAG, FRAG, FRAG, acc_l, 0.0);
    let a0 = unsafe { Matrix::<F>::uninitialized(MatrixIdent::A, FRAG, FRAG, FRAG, MatrixLayout::RowMajor) };
    let a1 = unsafe { Matrix::<F>::uninitialized(MatrixIdent::A, FRAG, FRAG, FRAG, MatrixLayout::RowMajor) };
    let b0 = unsafe { Matrix::<F>::uninitialized(MatrixIdent::B, FRAG, FRAG, FRAG, MatrixLayout::RowMajor) };
    let b1 = unsafe { Matrix::<F>::uninitialized(MatrixIdent::B, FRAG, FRAG, FRAG, MatrixLayout::RowMajor) };

    let a_frag = pr * comptime!(2 * FRAG * GC_LDA);
    let b_frag = pc * comptime!(2 * FRAG);
    let a_len = comptime!(GC_BM * GC_LDA);
    let b_len = comptime!(GC_BK * GC_LDB);
    let lda = comptime!(GC_LDA as u32);
    let ldb = comptime!(GC_LDB as u32);

    let zero = F::new(0.0);
    let mut k0 = 0usize;
    while k0 < h_count {
        #[unroll]
        for i in 0..per_a {
            let v = unit + i * units;
            let r = v / GC_BK;
            let kk = v % GC_BK;
            let (gr, gk) = (m0 + r, k0 + kk);
            let mut val = zero;
            if v < a_total && gr < t_count && gk < h_count {
                val = x[gr * h_count + gk];
            }
            if v < a_total {
                sa[r * GC_LDA + kk] = val;
            }
        }
        #[unroll]
        for i in 0..per_b {
            let v = unit + i * units;
            let kk = v / GC_BN;
            let c = v % GC_BN;
            let (gk, gc) = (k0 + kk, n0 + c);
            let mut val = zero;
            if v < b_total && gk < h_count && gc < e_count {
                val = gate[gk * e_count + gc];
            }
            if v < b_total {
                sb[kk * GC_LDB + c] = val;
            }
        }
        sync_cube();
        #[unroll]
        for ks in 0..comptime!(GC_BK / FRAG) {
            let sa0 = a_frag + comptime!(ks * FRAG);
            let sb0 = b_frag + comptime!(ks * FRAG * GC_LDB);
            cmma::load(&a0, &sa.slice(sa0, a_len), lda);
            cmma::load(&a1, &sa.slice(sa0 + comptime!(FRAG * GC_LDA), a_len), lda);
            cmma::load(&b0, &sb.slice(sb0, b_len), ldb);
            cmma::load(&b1, &sb.slice(sb0 + FRAG, b_len), ldb);
            cmma::execute::<F, F, f32, f32>(&a0, &b0, &c00, &c00);
            cmma::execute::<F, F, f32, f32>(&a0, &b1, &c01, &c01);
            cmma::execute::<F, F, f32, f32>(&a1, &b0, &c10, &c10);
            cmma::execute::<F, F, f32, f32>(&a1, &b1, &c11, &c11);
        }
        sync_cube();
        k0 += GC_BK;
    }

    // Fragment f = 2·i + j of this plane at `base + 256·f`, row-major 16 × 16.
    let n = comptime!(FRAG * FRAG);
    let base = plane * comptime!(4 * FRAG * FRAG);
    let st = comptime!(FRAG as u32);
    cmma::store(&mut scratch.slice_mut(base, base + n), &c00, st, MatrixLayout::RowMajor);
    cmma::store(&mut scratch.slice_mut(base + n, base + 2 * n), &c01, st, MatrixLayout::RowMajor);
    cmma::store(&mut scratch.slice_mut(base + 2 * n, base + 3 * n), &c10, st, MatrixLayout::RowMajor);
    cmma::store(&mut scratch.slice_mut(base + 3 * n, base + 4 * n), &c11, st, MatrixLayout::RowMajor);
    sync_cube();
    #[unroll]
    for q in 0..comptime!((4 * FRAG * FRAG).div_ceil(plane_dim)) {
        let idx = lane + q * plane_dim;
        let f = idx / n;
        let w = idx % n;
        let row = m0 + pr * comptime!(2 * FRAG) + (f / 2) * FRAG + w / FRAG;
        let col = n0 + pc * comptime!(2 * FRAG) + (f % 2) * FRAG + w % FRAG;
        if idx < comptime!(4 * FRAG * FRAG) && row < t_count && col < e_count {
            out[row * e_count + col] = scratch[base + idx];
        }
    }
}

#[cfg(all(test, feature = "cubecl-cuda", feature = "cubecl-wgpu"))]
#[path = "gate_cmma_source.rs"]
mod source;

#[cfg(test)]
mod tests {
    use super::*;

    /// The kernel's index map on the host: staging as the units do it, 16×16×16 fragment
    /// products read from the staged slices at the starts the planes use, the scratch read back
    /// as the lanes do; every output must equal the plain product, and be written exactly once.
    #[test]
    fn the_index_map_reproduces_the_product() {
        let (t, h, e, plane_dim) = (70usize, 100usize, 72usize, 32usize);
        let x: Vec<f32> = (0..t * h).map(|i| ((i * 7 % 13) as f32) - 6.0).collect();
        let g: Vec<f32> = (0..h * e).map(|i| ((i * 5 % 11) as f32) - 5.0).collect();
        let units = plane_dim * GC_PLANES;
        let mut out = vec![f32::NAN; t * e];
        let mut writes = vec![0u32; t * e];
        for m0 in (0..t).step_by(GC_BM) {
            for n0 in (0..e).step_by(GC_BN) {
                let mut acc = vec![[[0f32; FRAG * FRAG]; 4]; GC_PLANES];
                for k0 in (0..h).step_by(GC_BK) {
                    let mut sa = vec![f32::NAN; GC_BM * GC_LDA];
                    let mut sb = vec![f32::NAN; GC_BK * GC_LDB];
                    for v in 0..units * (GC_BM * GC_BK).div_ceil(units) {
                        let (r, kk) = (v / GC_BK, v % GC_BK);
                        if v < GC_BM * GC_BK {
                            let ok = m0 + r < t && k0 + kk < h;
                            sa[r * GC_LDA + kk] = if ok { x[(m0 + r) * h + k0 + kk] } else { 0.0 };
                        }
                        let (kk, c) = (v / GC_BN, v % GC_BN);
                        if v < GC_BK * GC_BN {
                            let ok = k0 + kk < h && n0 + c < e;
                            sb[kk * GC_LDB + c] = if ok { g[(k0 + kk) * e + n0 + c] } else { 0.0 };
                        }
                    }
                    for (plane, frags) in acc.iter_mut().enumerate() {
                        let (pr, pc) = (plane / 2, plane % 2);
                        for ks in 0..GC_BK / FRAG {
                            let sa0 = pr * 2 * FRAG * GC_LDA + ks * FRAG;
                            let sb0 = pc * 2 * FRAG + ks * FRAG * GC_LDB;
                            for (f, frag) in frags.iter_mut().enumerate() {
                                let a = sa0 + (f / 2) * FRAG * GC_LDA;
                                let b = sb0 + (f % 2) * FRAG;
                                for (w, c) in frag.iter_mut().enumerate() {
                                    for q in 0..FRAG {
                                        *c += sa[a + (w / FRAG) * GC_LDA + q] * sb[b + q * GC_LDB + w % FRAG];
                                    }
                                }
                            }
                        }
                    }
                }
                for (plane, frags) in acc.iter().enumerate() {
                    let (pr, pc) = (plane / 2, plane % 2);
                    for lane in 0..plane_dim {
                        for q in 0..(4 * FRAG * FRAG).div_ceil(plane_dim) {
                            let idx = lane + q * plane_dim;
                            let (f, w) = (idx / (FRAG * FRAG), idx % (FRAG * FRAG));
                            let row = m0 + pr * 2 * FRAG + (f / 2) * FRAG + w / FRAG;
                            let col = n0 + pc * 2 * FRAG + (f % 2) * FRAG + w % FRAG;
                            if idx < 4 * FRAG * FRAG && row < t && col < e {
                                out[row * e + col] = frags[f][w];
                                writes[row * e + col] += 1;
                            }
                        }
                    }
                }
            }
        }
        for r in 0..t {
            for c in 0..e {
                let want: f32 = (0..h).map(|k| x[r * h + k] * g[k * e + c]).sum();
                assert_eq!(writes[r * e + c], 1, "({r}, {c})");
                assert_eq!(out[r * e + c], want, "({r}, {c})");
            }
        }
    }
}
