//! CPU emulation of the fourth kernel's index maps (no GPU here): the column-first cube order
//! and the register epilogue's `(row, column)` of every accumulator element, derived from
//! the PTX m16n8k16 layouts (`ldmatrix.x4` matrices by lane, accumulator element `n` of lane
//! `l` at row `l/4 + 8·(n/2)`, column `2·(l%4) + n%2`), with the kernel's formulas.

use super::{BM, BN, FRAG, TN};
use crate::kernels::mma_emulate::acc_pos;
use std::collections::HashSet;

/// The first tile column of n8 tile `j` of plane column `pc`: `ldmatrix.x4` matrix `mi` of
/// the B loads starts at column `cb + 8·(mi/2)` and registers `2q, 2q+1` hold matrices
/// `2q, 2q+1`, so the B operand of registers `2q..` (tile `q` of the load) starts at
/// `cb + 8·q`; tiles 0-1 come from the load at `cb0`, tiles 2-3 from the one at `cb1`.
fn tile_col(pc: usize, j: usize, swiglu: bool) -> usize {
    let (cb0, cb1) = if swiglu { (pc * FRAG, pc * FRAG + BN / 2) } else { (pc * 2 * FRAG, pc * 2 * FRAG + FRAG) };
    let mi = 2 * (j % 2);
    [cb0, cb1][j / 2] + mi / 2 * TN
}

/// The weight column staged at tile column `c` (as the staging's `b_off`).
fn weight_col(n0: usize, c: usize, n_out: usize, swiglu: bool) -> usize {
    if swiglu && c >= BN / 2 {
        n_out + n0 + c - BN / 2
    } else {
        n0 + c
    }
}

#[test]
fn the_cube_order_visits_every_block_once_columns_first() {
    for (rows, cols) in [(1, 1), (3, 12), (1024, 12), (7, 16)] {
        let mut seen = HashSet::new();
        for y in 0..cols {
            for x in 0..rows {
                let lin = x + y * rows;
                let (m, n) = (lin / cols, lin % cols);
                assert!(m < rows && n < cols);
                assert!(seen.insert((m, n)));
                // Launch order (x fastest): consecutive cubes share a row block.
                if lin + 1 < rows * cols && n + 1 < cols {
                    assert_eq!((lin + 1) / cols, m);
                }
            }
        }
        assert_eq!(seen.len(), rows * cols);
    }
}

#[test]
fn the_register_epilogue_writes_each_output_once_from_its_own_columns() {
    for swiglu in [false, true] {
        let (n_out, block_cols) = if swiglu { (768, BN / 2) } else { (2048, BN) };
        let n0 = 3 * block_cols;
        let mut seen = HashSet::new();
        for plane in 0..8 {
            let (pr, pc) = (plane / 4, plane % 4);
            for lane in 0..32 {
                for fi in 0..4 {
                    for n in 0..4 {
                        let (r, col) = acc_pos(lane, n);
                        let row = pr * 4 * FRAG + fi * FRAG + r;
                        // `write_row`: the output column of element `n` of tile 0.
                        let oc = if swiglu { n0 + pc * FRAG + col } else { n0 + pc * 2 * FRAG + col };
                        let tiles = if swiglu { 2 } else { 4 };
                        for j in 0..tiles {
                            let out = oc + j * TN;
                            assert!(seen.insert((row, out)), "{swiglu} {row} {out}");
                            let w = weight_col(n0, tile_col(pc, j, swiglu) + col, n_out, swiglu);
                            assert_eq!(w, out, "tile {j} of plane {plane}");
                            if swiglu {
                                // The up tile `j + 2` of the same lane and element.
                                let up = weight_col(n0, tile_col(pc, j + 2, swiglu) + col, n_out, swiglu);
                                assert_eq!(up, n_out + out, "up tile {} of plane {plane}", j + 2);
                            }
                        }
                    }
                }
            }
        }
        let want: HashSet<_> = (0..BM).flat_map(|r| (n0..n0 + block_cols).map(move |c| (r, c))).collect();
        assert_eq!(seen, want, "swiglu {swiglu}");
    }
}
