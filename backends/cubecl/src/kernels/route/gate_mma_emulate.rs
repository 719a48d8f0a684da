//! CPU emulation of the manual-MMA gate (no GPU here): the kernel's staging maps (as the
//! units run them, vectors of 8), `ldmatrix.x4` (with and without `.trans`) driven by the
//! kernel's lane addresses, `mma.sync` m16n8k16 and the register epilogue, with the PTX ISA's
//! register layouts, checked against a plain matmul on a shape with partial token, depth and
//! expert blocks.

use super::{FRAG, KB, LANES, LDA, LDB, MB, NB, PER_A, PER_B, PLANES, TN, VEC};
use crate::kernels::mma_emulate::{acc_pos, half, ldmatrix_x4, mma, Frag};

const UNITS: usize = LANES * PLANES;

/// Stages one depth step at `k0` as the units do (vector `i` of a unit: `load_a`/`load_b`
/// then `store`), element-wise into f32 copies of the two stages.
#[allow(clippy::too_many_arguments)]
fn stage(
    x: &[f32],
    g: &[f32],
    (t, h, e): (usize, usize, usize),
    m0: usize,
    n0: usize,
    k0: usize,
) -> (Vec<f32>, Vec<f32>) {
    let mut sa = vec![f32::NAN; MB * LDA];
    let mut sb = vec![f32::NAN; KB * LDB];
    for unit in 0..UNITS {
        let (a_r, a_k) = (unit / (KB / VEC), unit % (KB / VEC) * VEC);
        let (b_k, b_c) = (unit / (NB / VEC), unit % (NB / VEC) * VEC);
        let a_src = (m0 + a_r) * h + a_k + k0;
        let a_slot = a_r * (LDA / VEC) + a_k / VEC;
        let b_src = b_k * e + n0 + b_c + k0 * e;
        let b_slot = b_k * (LDB / VEC) + b_c / VEC;
        let col_ok = n0 + b_c < e;
        let k_ok = a_k + k0 < h;
        for i in 0..PER_A {
            let rows = i * MB / PER_A;
            let real = k_ok && m0 + a_r + rows < t;
            let slot = (a_slot + i * 16 * LDA / VEC) * VEC;
            for q in 0..VEC {
                sa[slot + q] = if real { x[a_src + rows * h + q] } else { 0.0 };
            }
        }
        for i in 0..PER_B {
            let depth = i * KB / PER_B;
            let real = col_ok && b_k + k0 + depth < h;
            let slot = (b_slot + i * 8 * LDB / VEC) * VEC;
            for q in 0..VEC {
                sb[slot + q] = if real { g[b_src + depth * e + q] } else { 0.0 };
            }
        }
    }
    (sa, sb)
}

#[test]
fn the_fragments_and_epilogue_reproduce_the_product() {
    // Partial blocks everywhere: 70 tokens (a second, partial token block), H = 136 (a partial
    // depth step), E = 136 (a second expert block of 8 columns).
    let (t, h, e) = (70usize, 136usize, 136usize);
    // Small integers: every product and sum is exact in f32.
    let x: Vec<f32> = (0..t * h).map(|i| ((i * 7 % 13) as f32) - 6.0).collect();
    let g: Vec<f32> = (0..h * e).map(|i| ((i * 5 % 11) as f32) - 5.0).collect();
    let mut out = vec![f32::NAN; t * e];
    let mut writes = vec![0u32; t * e];
    for m0 in (0..t).step_by(MB) {
        for n0 in (0..e).step_by(NB) {
            // acc[plane][fi][tile]
            let mut acc: Vec<Vec<Vec<Frag>>> = vec![vec![vec![vec![vec![[0.0; 2]; 2]; LANES]; 8]; 2]; PLANES];
            for k0 in (0..h).step_by(KB) {
                let (sa, sb) = stage(&x, &g, (t, h, e), m0, n0, k0);
                for (plane, frags) in acc.iter_mut().enumerate() {
                    let (pr, pc) = (plane / 2, plane % 2);
                    let a_lane: Vec<usize> =
                        (0..LANES).map(|l| (pr * 2 * FRAG + l % FRAG) * LDA + l / FRAG * TN).collect();
                    let b_lane: Vec<usize> =
                        (0..LANES).map(|l| (l / TN % 2 * TN + l % TN) * LDB + pc * 4 * FRAG + l / FRAG * TN).collect();
                    for ks in 0..KB / FRAG {
                        for a in a_lane.iter().chain(&b_lane) {
                            assert_eq!(a % VEC, 0, "16-byte aligned rows");
                        }
                        let bs: Vec<Frag> = (0..4)
                            .map(|j| {
                                let addr: Vec<usize> = b_lane.iter().map(|b| b + ks * FRAG * LDB + j * FRAG).collect();
                                ldmatrix_x4(&sb, &addr, true)
                            })
                            .collect();
                        for (fi, tiles) in frags.iter_mut().enumerate() {
                            let addr: Vec<usize> = a_lane.iter().map(|a| a + ks * FRAG + fi * FRAG * LDA).collect();
                            let a = ldmatrix_x4(&sa, &addr, false);
                            for (tile, c) in tiles.iter_mut().enumerate() {
                                mma(&a, &half(&bs[tile / 2], 2 * (tile % 2)), c);
                            }
                        }
                    }
                }
            }
            for (plane, frags) in acc.iter().enumerate() {
                let (pr, pc) = (plane / 2, plane % 2);
                for (fi, tiles) in frags.iter().enumerate() {
                    let row0 = m0 + pr * 2 * FRAG + fi * FRAG;
                    let col0 = n0 + pc * 4 * FRAG;
                    for (tile, c) in tiles.iter().enumerate() {
                        for (lane, regs) in c.iter().enumerate() {
                            for n in 0..4 {
                                let (r, col) = acc_pos(lane, n);
                                let (row, oc) = (row0 + r, col0 + col + tile * TN);
                                if row < t && oc < e {
                                    out[row * e + oc] = regs[n / 2][n % 2];
                                    writes[row * e + oc] += 1;
                                }
                            }
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

#[test]
fn ldmatrix_rows_are_conflict_free() {
    // The 8 row addresses of one 8×8 matrix fall in distinct 16-byte bank groups.
    for ld in [LDA, LDB] {
        let groups: std::collections::HashSet<usize> = (0..8).map(|r| (r * ld * 2 / 16) % 8).collect();
        assert_eq!(groups.len(), 8, "stride {ld}");
    }
}
