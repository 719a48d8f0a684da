//! Tiled grouped GEMM (and dense GEMM as its one-expert case): shared-memory tiles of
//! [`TILE`]×[`TILE`], one output element per unit, f32 accumulation, the SwiGLU and row-scale
//! epilogues and the gather prologue fused.
//!
//! Contiguous layout: cube `(x, y)` owns output rows `x·TILE..` and columns `y·TILE..`; it
//! walks the experts whose row segments meet its rows (found by a binary search over the
//! device offsets, no host sync), loading only the rows of the current expert, so each row
//! accumulates against its own expert's weight. Masked layout: cube `z` is the expert.
//!
//! NOTE: this is the portable path (lavapipe has neither plane ops nor matrix units); where
//! the runtime has matrix instructions for the dtype, `super::grouped_gemm_cmma` runs instead
//! (the choice: `crate::ops::gemm_path::select_path`).

use super::flag::record;
use cubecl::ir::ElemType;
use cubecl::prelude::*;

/// Rows, columns and reduction depth of one tile; the cube is `TILE × TILE` units.
pub(crate) const TILE: usize = 16;

/// Row grouping of a launch.
pub(crate) const MODE_CONTIGUOUS: u32 = 0;
/// `x [E, C, K]` with device counts.
pub(crate) const MODE_MASKED: u32 = 1;
/// One expert owning every row (dense GEMM): no group buffer is read.
pub(crate) const MODE_DENSE: u32 = 2;

/// Codes recorded in the content-error flag (`crate::flag::BadIndex`): offsets that break
/// `0 = offsets[0] <= ... <= offsets[E] <= R`.
pub(crate) const BAD_OFFSETS: i32 = 3;
/// A masked count outside `0..=C`.
pub(crate) const BAD_COUNTS: i32 = 4;
/// A gather row outside `-1..T`.
pub(crate) const BAD_GATHER: i32 = 5;

/// The grouped GEMM; see the module doc. Launch with a cube of `TILE × TILE` units and
/// `(max(1, ceil(rows / TILE)), ceil(N_out / TILE), E or 1)` cubes (rows on x, the axis
/// with the largest limit).
///
/// `x`: `[R or T, K]` or `[E, C, K]`; `w`: `[E, K, N]` (or `[E, N, K]` with `nk`); `group`:
/// offsets `[E+1]` or counts `[E]`; `row_to_token [R]` (gather), `row_scale [R or E·C]`
/// (scale), each a one-element placeholder when unused; `y`: `[R or E·C, N_out]`; `rows`: `R`
/// (contiguous, dense) or `C` (masked); `tokens`: `T` with gather.
#[cube(launch)]
#[allow(clippy::too_many_arguments)]
pub(crate) fn grouped_gemm_kernel<F: Float>(
    x: &Array<F>,
    w: &Array<F>,
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
    #[comptime] mode: u32,
    #[comptime] nk: bool,
    #[comptime] swiglu: bool,
    #[comptime] scale: bool,
    #[comptime] gather: bool,
    #[define(F)] _dtype: ElemType,
) {
    let tile = comptime!(TILE);
    let tx = UNIT_POS_X as usize;
    let ty = UNIT_POS_Y as usize;
    let n_out = if swiglu { n_dim as usize / 2 } else { n_dim as usize };
    let rows_u = rows as usize;
    let k_u = k_dim as usize;
    let n_u = n_dim as usize;
    let m0 = CUBE_POS_X as usize * tile;
    let col = CUBE_POS_Y as usize * tile + tx;
    let row = m0 + ty;

    let mut xs = SharedMemory::<f32>::new(tile * tile);
    let mut wg = SharedMemory::<f32>::new(tile * tile);
    let mut wu = SharedMemory::<f32>::new(tile * tile);

    let mut acc_g = 0.0f32;
    let mut acc_u = 0.0f32;
    let mut valid = false;

    // The experts this cube visits (contiguous: while their segment starts before the tile's
    // last row).
    let visit = block_experts(group, flag, experts, rows, m0, mode);
    let mut e = visit.first;
    let e_end = visit.end;
    let mut more = visits(group, e, e_end, rows_u, m0 + tile, mode);
    while more {
        // Rows `start..end` (masked: of expert `e`'s block from `y_base`) belong to expert `e`.
        let seg = expert_rows(group, e, rows_u, visit.rows_end, mode);
        let start = seg.start;
        let end = seg.end;
        let y_base = seg.base;
        let mine = row >= start && row < end;
        if mine {
            valid = true;
        }
        let w_base = e * k_u * n_u;
        // NOTE: this expert's sums, kept only for its own rows: the other rows load zeros
        // for `x`, but 0 · NaN is NaN, so adding them would spread a non-finite weight of one
        // expert into another expert's rows (numerics contract: `moekit_ops::numerics`).
        let mut eg = 0.0f32;
        let mut eu = 0.0f32;

        let mut k0 = 0usize;
        while k0 < k_u {
            // X tile: unit (ty, tx) loads row m0+ty, column k0+tx.
            let xr = m0 + ty;
            let xc = k0 + tx;
            let mut xv = 0.0f32;
            if xr >= start && xr < end && xc < k_u {
                if gather {
                    let t = row_to_token[xr];
                    if t >= 0 && t < tokens as i32 {
                        xv = f32::cast_from(x[t as usize * k_u + xc]);
                    }
                } else {
                    xv = f32::cast_from(x[(y_base + xr) * k_u + xc]);
                }
            }
            xs[ty * tile + tx] = xv;

            // W tiles: [kk, c] = W_e[k0+kk, n0+c] (gate) and W_e[k0+kk, n_out+n0+c] (up).
            let n0 = CUBE_POS_Y as usize * tile;
            if nk {
                // Unit (ty, tx) reads W_e[n0+ty, k0+tx] (contiguous along K) and stores it
                // transposed.
                let wn = n0 + ty;
                let wk = k0 + tx;
                let mut g = 0.0f32;
                let mut u = 0.0f32;
                if wk < k_u && wn < n_out {
                    g = f32::cast_from(w[w_base + wn * k_u + wk]);
                    if swiglu {
                        u = f32::cast_from(w[w_base + (n_out + wn) * k_u + wk]);
                    }
                }
                wg[tx * tile + ty] = g;
                wu[tx * tile + ty] = u;
            } else {
                let wk = k0 + ty;
                let wn = n0 + tx;
                let mut g = 0.0f32;
                let mut u = 0.0f32;
                if wk < k_u && wn < n_out {
                    g = f32::cast_from(w[w_base + wk * n_u + wn]);
                    if swiglu {
                        u = f32::cast_from(w[w_base + wk * n_u + n_out + wn]);
                    }
                }
                wg[ty * tile + tx] = g;
                wu[ty * tile + tx] = u;
            }
            sync_cube();

            #[unroll]
            for kk in 0..tile {
                let a = xs[ty * tile + kk];
                eg += a * wg[kk * tile + tx];
                if swiglu {
                    eu += a * wu[kk * tile + tx];
                }
            }
            sync_cube();
            k0 += tile;
        }

        if mine {
            acc_g = eg;
            acc_u = eu;
        }
        e += 1;
        more = visits(group, e, e_end, rows_u, m0 + tile, mode);
    }

    // Every output element of the cube's tile is written, zero outside every expert.
    if row < rows_u && col < n_out {
        let y_row = if mode == MODE_MASKED { CUBE_POS_Z as usize * rows_u + row } else { row };
        if gather && col == 0 {
            let t = row_to_token[row];
            if t < -1 || t >= tokens as i32 {
                record(flag, BAD_GATHER, row as i32, t, tokens as i32);
            }
        }
        let mut out = acc_g;
        if swiglu {
            out = acc_g / (1.0 + f32::exp(-acc_g)) * acc_u;
        }
        if scale {
            out *= row_scale[y_row];
        }
        if !valid {
            out = 0.0;
        }
        y[y_row * n_out + col] = F::cast_from(out);
    }
}

/// The experts a cube visits: `first .. end` (contiguous: the first expert whose segment ends
/// past the block's first row `m0`, found by a binary search over the device offsets, then on
/// while [`visits`] says; masked: cube `z`'s expert; dense: the one expert), and `rows_end`,
/// where rows stop belonging to any expert (masked: the expert's count; contiguous:
/// `offsets[E]`). Records bad offsets (contiguous) or a bad count (masked) once per launch.
#[derive(CubeType)]
pub(crate) struct Visit {
    pub(crate) first: usize,
    pub(crate) end: usize,
    pub(crate) rows_end: usize,
}

/// See [`Visit`]: `group` holds offsets `[E + 1]` (contiguous) or counts `[E]` (masked),
/// `rows` is `R` or `C`.
#[cube]
pub(crate) fn block_experts(
    group: &Array<i32>,
    flag: &mut Array<i32>,
    experts: u32,
    rows: u32,
    m0: usize,
    #[comptime] mode: u32,
) -> Visit {
    let rows_u = rows as usize;
    let mut first = 0usize;
    let mut end = 1usize;
    let mut rows_end = rows_u;
    if mode == MODE_MASKED {
        first = CUBE_POS_Z as usize;
        end = first + 1;
        let count = group[first];
        if CUBE_POS_X == 0 && CUBE_POS_Y == 0 && UNIT_POS == 0 && (count < 0 || count > rows as i32) {
            record(flag, BAD_COUNTS, first as i32, count, rows as i32 + 1);
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
        first = lo;
        end = ex;
        rows_end = clamp_row(group[ex], rows_u);
    }
    Visit { first, end, rows_end }
}

/// The rows of expert `e`: `start .. end` (masked: of the expert's block of `rows` rows from
/// row `base`).
#[derive(CubeType)]
pub(crate) struct Segment {
    pub(crate) start: usize,
    pub(crate) end: usize,
    pub(crate) base: usize,
}

/// See [`Segment`]; `rows_end` from [`block_experts`].
#[cube]
pub(crate) fn expert_rows(
    group: &Array<i32>,
    e: usize,
    rows: usize,
    rows_end: usize,
    #[comptime] mode: u32,
) -> Segment {
    let mut start = 0usize;
    let mut end = rows;
    let mut base = 0usize;
    if mode == MODE_CONTIGUOUS {
        start = clamp_row(group[e], rows);
        end = start.max(clamp_row(group[e + 1], rows));
    } else if mode == MODE_MASKED {
        end = rows_end;
        base = e * rows;
    }
    Segment { start, end, base }
}

/// Whether the cube visits expert `e` after the one before it: `e < end` and (contiguous) the
/// expert's segment starts before `block_end`, the row past the block.
#[cube]
pub(crate) fn visits(
    group: &Array<i32>,
    e: usize,
    end: usize,
    rows: usize,
    block_end: usize,
    #[comptime] mode: u32,
) -> bool {
    let mut more = e < end;
    if mode == MODE_CONTIGUOUS && more {
        more = clamp_row(group[e], rows) < block_end;
    }
    more
}

/// `v` clamped into `0..=rows`.
#[cube]
pub(crate) fn clamp_row(v: i32, rows: usize) -> usize {
    let mut r = 0usize;
    if v > 0 {
        r = (v as usize).min(rows);
    }
    r
}

/// Records the first offset that breaks `0 = offsets[0] <= ... <= offsets[E] <= R`.
#[cube]
pub(crate) fn check_offsets(offsets: &Array<i32>, flag: &mut Array<i32>, experts: usize, rows: usize) {
    let mut found = offsets[0] != 0;
    let mut bad = 0usize;
    for e in 0..experts {
        let next = offsets[e + 1];
        if !found && (next < offsets[e] || next > rows as i32) {
            found = true;
            bad = e + 1;
        }
    }
    if found {
        record(flag, BAD_OFFSETS, bad as i32, offsets[bad], rows as i32);
    }
}
