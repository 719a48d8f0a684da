//! CPU emulation of the manual-MMA fragment instructions (test only; no GPU here):
//! `ldmatrix.x4` (with and without `.trans`) and `mma.sync` m16n8k16 with the register layouts
//! of the PTX ISA, and the accumulator positions, shared by the emulations of the kernels that
//! use them (attention, the router's gate, the grouped GEMM epilogue).

/// Lanes of a plane.
pub(crate) const LANES: usize = 32;
/// One lane's fragment: registers of two elements.
pub(crate) type Regs = Vec<[f32; 2]>;
/// A plane's fragment: one [`Regs`] per lane.
pub(crate) type Frag = Vec<Regs>;

/// `ldmatrix.x4`: lanes `8m..8m + 8` give the row addresses of matrix `m`; register `m` of lane
/// `l` holds row `l/4`, columns `2(l%4) + {0, 1}` of matrix `m` (with `trans`: column `l/4`,
/// rows `2(l%4) + {0, 1}`).
pub(crate) fn ldmatrix_x4(smem: &[f32], addr: &[usize], trans: bool) -> Frag {
    (0..LANES)
        .map(|l| {
            (0..4)
                .map(|m| {
                    let e = |i: usize| {
                        if trans {
                            smem[addr[8 * m + 2 * (l % 4) + i] + l / 4]
                        } else {
                            smem[addr[8 * m + l / 4] + 2 * (l % 4) + i]
                        }
                    };
                    [e(0), e(1)]
                })
                .collect()
        })
        .collect()
}

/// `mma.sync.m16n8k16.row.col`: `c += a·b` with the PTX fragment layouts (groupID `l/4`,
/// thread in group `l%4`): A register `i` element `e` is (row `g + 8(i%2)`, col `2t + e +
/// 8(i/2)`), B register `i` element `e` is (k `2t + e + 8i`, n `g`), C register pair `v`
/// element `e` is (row `g + 8v`, col `2t + e`).
pub(crate) fn mma(a: &Frag, b: &Frag, c: &mut Frag) {
    let mut am = [[0f32; 16]; 16];
    let mut bm = [[0f32; 8]; 16];
    for l in 0..LANES {
        let (g, t) = (l / 4, l % 4);
        for i in 0..4 {
            for e in 0..2 {
                am[g + 8 * (i % 2)][2 * t + e + 8 * (i / 2)] = a[l][i][e];
            }
        }
        for i in 0..2 {
            for e in 0..2 {
                bm[2 * t + e + 8 * i][g] = b[l][i][e];
            }
        }
    }
    for l in 0..LANES {
        let (g, t) = (l / 4, l % 4);
        for v in 0..2 {
            for e in 0..2 {
                let (row, col) = (g + 8 * v, 2 * t + e);
                c[l][v][e] += (0..16).map(|kk| am[row][kk] * bm[kk][col]).sum::<f32>();
            }
        }
    }
}

/// Registers `i, i + 1` of every lane (the kernel's `half`).
pub(crate) fn half(f: &Frag, i: usize) -> Frag {
    f.iter().map(|r| vec![r[i], r[i + 1]]).collect()
}

/// `(row, column)` of accumulator element `n` of lane `lane` inside an m16n8 tile.
pub(crate) fn acc_pos(lane: usize, n: usize) -> (usize, usize) {
    (lane / 4 + 8 * (n / 2), 2 * (lane % 4) + n % 2)
}
