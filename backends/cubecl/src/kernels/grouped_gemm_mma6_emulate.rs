//! CPU emulation of the sixth kernel (no GPU here): its copy pipeline (the hazard model of
//! `grouped_gemm_mma6_pipeline.rs`: four stages, copies three steps ahead) and closed-form copy
//! slots, and its warp tiles: every
//! plane's `ldmatrix` addresses, `mma.sync` fragments and epilogue columns, replayed on a
//! staged random block and compared with the block's product.

use super::{block_cols, BK, BM, BN, LDA, LDB_KN, LDB_NK, STAGES, WM, WN};
use crate::kernels::mma_emulate::{acc_pos, half, ldmatrix_x4, mma, Frag, LANES};

/// Tile column of the first n8 tile of `ldmatrix.x4` load `l` (0..4, n8 tiles `2l`, `2l + 1`)
/// of plane column `pc`: `64·pc + 16·l`; with SwiGLU gate columns `32·pc + 16·l` for `l < 2`,
/// up columns `128 + 32·pc + 16·(l - 2)`.
const fn b_load_col(pc: usize, l: usize, swiglu: bool) -> usize {
    if !swiglu {
        pc * WN + 16 * l
    } else if l < 2 {
        pc * (WN / 2) + 16 * l
    } else {
        BN / 2 + pc * (WN / 2) + 16 * (l - 2)
    }
}

#[path = "grouped_gemm_mma6_pipeline.rs"]
mod pipeline;

/// A small deterministic generator (xorshift) of values in [-1, 1).
fn random(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed | 1;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            (s >> 40) as f32 / (1u64 << 23) as f32 - 1.0
        })
        .collect()
}

/// Output `(row, output column) -> value` of one block, by the kernel's fragment formulas:
/// `a` is `[BM, BK]`, `b` is `[BK, BN]` (weight tile columns), staged as the kernel stages
/// them (`nk`: `b` transposed into `[BN, LDB_NK]`), one K step.
fn block(a: &[f32], b: &[f32], nk: bool, swiglu: bool) -> Vec<Vec<Option<f32>>> {
    let mut sa = vec![0f32; BM * LDA];
    for r in 0..BM {
        sa[r * LDA..r * LDA + BK].copy_from_slice(&a[r * BK..(r + 1) * BK]);
    }
    let mut sb = vec![0f32; if nk { BN * LDB_NK } else { BK * LDB_KN }];
    for k in 0..BK {
        for c in 0..BN {
            let at = if nk { c * LDB_NK + k } else { k * LDB_KN + c };
            sb[at] = b[k * BN + c];
        }
    }
    let cols = block_cols(swiglu);
    let mut out = vec![vec![None; cols]; BM];
    for plane in 0..8 {
        let (pr, pc) = (plane / 4, plane % 4);
        let mut acc: Vec<Vec<Frag>> = vec![vec![vec![vec![[0f32; 2]; 2]; LANES]; 8]; 4];
        // The kernel's lane addresses.
        let a_lane = |lane: usize| (pr * WM + lane % 16) * LDA + lane / 16 * 8;
        let (mut cb0, mut cb2) = (pc * WN, pc * WN + 32);
        if swiglu {
            cb0 = pc * (WN / 2);
            cb2 = cb0 + BN / 2;
        }
        for l in 0..4 {
            assert_eq!(b_load_col(pc, l, swiglu), [cb0, cb0 + 16, cb2, cb2 + 16][l]);
        }
        let b_lane = |lane: usize| {
            let mi = lane / 8;
            if nk {
                (cb0 + mi / 2 * 8 + lane % 8) * LDB_NK + mi % 2 * 8
            } else {
                (mi % 2 * 8 + lane % 8) * LDB_KN + cb0 + mi / 2 * 8
            }
        };
        let (b_step, b_pair) = if nk { (16 * LDB_NK, (cb2 - cb0) * LDB_NK) } else { (16, cb2 - cb0) };
        for ks in 0..BK / 16 {
            let kb = if nk { ks * 16 } else { ks * 16 * LDB_KN };
            let load_b = |off: usize| {
                let addr: Vec<usize> = (0..LANES).map(|l| b_lane(l) + kb + off).collect();
                ldmatrix_x4(&sb, &addr, !nk)
            };
            let ls = [load_b(0), load_b(b_step), load_b(b_pair), load_b(b_pair + b_step)];
            let t: Vec<Frag> = (0..8).map(|j| half(&ls[j / 2], 2 * (j % 2))).collect();
            for (fi, row) in acc.iter_mut().enumerate() {
                let addr: Vec<usize> = (0..LANES).map(|l| a_lane(l) + ks * 16 + fi * 16 * LDA).collect();
                let fa = ldmatrix_x4(&sa, &addr, false);
                for (j, c) in row.iter_mut().enumerate() {
                    mma(&fa, &t[j], c);
                }
            }
        }
        // The epilogue's columns.
        for (fi, row) in acc.iter().enumerate() {
            for lane in 0..LANES {
                for n in 0..4 {
                    let (r, col) = acc_pos(lane, n);
                    let (v, e) = (n / 2, n % 2);
                    let orow = pr * WM + fi * 16 + r;
                    if swiglu {
                        for j in 0..4 {
                            let g = row[j][lane][v][e];
                            let u = row[j + 4][lane][v][e];
                            let oc = pc * (WN / 2) + 8 * j + col;
                            assert!(out[orow][oc].is_none(), "written twice");
                            out[orow][oc] = Some(g / (1.0 + (-g).exp()) * u);
                        }
                    } else {
                        for j in 0..8 {
                            let oc = pc * WN + 8 * j + col;
                            assert!(out[orow][oc].is_none(), "written twice");
                            out[orow][oc] = Some(row[j][lane][v][e]);
                        }
                    }
                }
            }
        }
    }
    out
}

#[test]
fn every_plane_computes_its_warp_tile_and_the_epilogue_writes_each_output_once() {
    for (seed, nk, swiglu) in [(1, false, false), (2, true, false), (3, false, true), (4, true, true)] {
        let a = random(BM * BK, seed);
        let b = random(BK * BN, seed + 10);
        let out = block(&a, &b, nk, swiglu);
        let dot = |r: usize, c: usize| (0..BK).map(|k| a[r * BK + k] * b[k * BN + c]).sum::<f32>();
        for (r, row) in out.iter().enumerate() {
            for (c, v) in row.iter().enumerate() {
                let got = v.unwrap_or_else(|| panic!("({r}, {c}) never written, nk {nk} swiglu {swiglu}"));
                let want = if swiglu {
                    // Tile column c is gate column c, tile column BN/2 + c its up column.
                    let g = dot(r, c);
                    g / (1.0 + (-g).exp()) * dot(r, BN / 2 + c)
                } else {
                    dot(r, c)
                };
                assert!((got - want).abs() <= 1e-4 * (1.0 + want.abs()), "({r}, {c}): {got} vs {want}");
            }
        }
    }
}
