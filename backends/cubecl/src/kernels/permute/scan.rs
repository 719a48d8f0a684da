//! Scalable dispatch and combine, no host sync, deterministic and stable. The `N = T·k` slots
//! (token-major) are cut into chunks of [`CHUNK`] consecutive slots:
//! 1. [`permute_hist`] (one cube per chunk): `cc[e, c]` = slots of chunk `c` that chose `e`;
//!    bad ids are recorded; every row of `row_to_token` becomes −1.
//! 2. [`permute_scan_chunks`] (one cube per expert): `cc[e, ·]` becomes its exclusive prefix over
//!    the chunks; `sizes[e]` = the expert's slots rounded up to `align`.
//! 3. [`permute_scan_offsets`] (one cube): `offsets [E+1]` = the exclusive scan of `sizes`.
//! 4. [`permute_scatter`] (one cube per chunk): slot `s` of expert `e` gets row
//!    `offsets[e] + cc[e, c] + (earlier slots of the chunk with expert e)`.
//! 5. [`permute_copy_tokens`] (`align = 1`: every row is a slot's; one cube per token, its
//!    hidden row read once and written to its k rows) or [`permute_copy_rows`] (one cube per
//!    row, zeros on padding), both in lines of `N` elements.
//!
//! [`combine_lines`]: one cube per token, in lines.

use super::super::flag::record;
use cubecl::ir::ElemType;
use cubecl::prelude::*;

/// Slots per chunk, and units per cube of every launch here (the minimum every Vulkan device
/// offers is 128 invocations).
pub const CHUNK: usize = 128;

/// Inclusive prefix sum of `v` over the cube's `CHUNK` units (Hillis–Steele in `sh`); the
/// cube's total is left in `sh[CHUNK - 1]` until the caller's next barrier.
#[cube]
fn cube_scan(v: i32, sh: &mut SharedMemory<i32>) -> i32 {
    let u = UNIT_POS as usize;
    sh[u] = v;
    sync_cube();
    let steps = comptime!(CHUNK.trailing_zeros() as usize);
    for step in 0..steps {
        let off = 1usize << step;
        let mut add = 0i32;
        if u >= off {
            add = sh[u - off];
        }
        sync_cube();
        sh[u] = sh[u] + add;
        sync_cube();
    }
    sh[u]
}

/// Chunk histograms (cube `c` < `chunks`): `cc [E, chunks]`; every cube also sets its share
/// of `row_to_token [rows]` to −1 (stride `cubes · CHUNK`). An id outside `0..E` is recorded
/// (code `bad`) and its `token_slot_to_row` set to −1.
#[cube(launch)]
#[allow(clippy::too_many_arguments)]
pub fn permute_hist(
    ids: &Array<i32>,
    cc: &mut Array<i32>,
    row_to_token: &mut Array<i32>,
    token_slot_to_row: &mut Array<i32>,
    flag: &mut Array<i32>,
    slots: u32,
    rows: u32,
    experts: u32,
    chunks: u32,
    cubes: u32,
    bad: i32,
) {
    let c = CUBE_POS;
    let u = UNIT_POS as usize;
    let chunk = comptime!(CHUNK);
    let mut sh = SharedMemory::<i32>::new(CHUNK);
    let s = c * chunk + u;
    // NOTE: −1 marks a slot past the end or with a bad id.
    let mut id = 0i32;
    let mut ok = false;
    if s < slots as usize {
        let v = ids[s];
        if v >= 0 && v < experts as i32 {
            id = v;
            ok = true;
        } else {
            record(flag, bad, s as i32, v, experts as i32);
            token_slot_to_row[s] = -1i32;
        }
    }
    sh[u] = select(ok, id, -1i32);
    let stride = cubes as usize * chunk;
    let mut r = c * chunk + u;
    while r < rows as usize {
        row_to_token[r] = -1i32;
        r += stride;
    }
    sync_cube();
    if c < chunks as usize {
        let mut e = u;
        while e < experts as usize {
            let mut n = 0i32;
            for i in 0..chunk {
                if sh[i] == e as i32 {
                    n += 1i32;
                }
            }
            cc[e * chunks as usize + c] = n;
            e += chunk;
        }
    }
}

/// One cube per expert `e` (linear `CUBE_POS`): `cc[e, ·]` becomes its exclusive prefix sum;
/// `sizes[e]` = its total rounded up to `align`.
#[cube(launch)]
pub fn permute_scan_chunks(cc: &mut Array<i32>, sizes: &mut Array<i32>, experts: u32, chunks: u32, align: u32) {
    let e = CUBE_POS;
    let u = UNIT_POS as usize;
    let chunk = comptime!(CHUNK);
    let live = e < experts as usize;
    let n = chunks as usize;
    let mut sh = SharedMemory::<i32>::new(CHUNK);
    let mut carry = 0i32;
    let mut base = 0usize;
    while base < n {
        let c = base + u;
        let ok = live && c < n;
        let mut v = 0i32;
        if ok {
            v = cc[e * n + c];
        }
        let incl = cube_scan(v, &mut sh);
        let total = sh[chunk - 1];
        if ok {
            cc[e * n + c] = carry + incl - v;
        }
        carry += total;
        sync_cube();
        base += chunk;
    }
    if live && u == 0 {
        let a = align as i32;
        sizes[e] = (carry + a - 1) / a * a;
    }
}

/// One cube: `offsets[0] = 0`, `offsets[e+1] = sizes[0] + … + sizes[e]`.
#[cube(launch)]
pub fn permute_scan_offsets(sizes: &Array<i32>, offsets: &mut Array<i32>, experts: u32) {
    let u = UNIT_POS as usize;
    let chunk = comptime!(CHUNK);
    let n = experts as usize;
    let mut sh = SharedMemory::<i32>::new(CHUNK);
    let mut carry = 0i32;
    let mut base = 0usize;
    while base < n {
        let e = base + u;
        let mut v = 0i32;
        if e < n {
            v = sizes[e];
        }
        let incl = cube_scan(v, &mut sh);
        let total = sh[chunk - 1];
        if e < n {
            offsets[e + 1] = carry + incl;
        }
        carry += total;
        sync_cube();
        base += chunk;
    }
    if u == 0 {
        offsets[0] = 0i32;
    }
}

/// One cube per chunk, one slot per unit: the slot's row (see the module doc) into
/// `token_slot_to_row`, its token into `row_to_token`.
#[cube(launch)]
#[allow(clippy::too_many_arguments)]
pub fn permute_scatter(
    ids: &Array<i32>,
    cc: &Array<i32>,
    offsets: &Array<i32>,
    token_slot_to_row: &mut Array<i32>,
    row_to_token: &mut Array<i32>,
    slots: u32,
    experts: u32,
    k: u32,
    chunks: u32,
) {
    let c = CUBE_POS;
    let u = UNIT_POS as usize;
    let chunk = comptime!(CHUNK);
    let mut sh = SharedMemory::<i32>::new(CHUNK);
    let s = c * chunk + u;
    let mut id = 0i32;
    let mut ok = false;
    if s < slots as usize {
        let v = ids[s];
        if v >= 0 && v < experts as i32 {
            id = v;
            ok = true;
        }
    }
    sh[u] = select(ok, id, -1i32);
    sync_cube();
    if ok {
        let mut rank = 0i32;
        for i in 0..u {
            if sh[i] == id {
                rank += 1i32;
            }
        }
        let e = id as usize;
        let row = offsets[e] + cc[e * chunks as usize + c] + rank;
        token_slot_to_row[s] = row;
        row_to_token[row as usize] = (s / k as usize) as i32;
    }
}

/// One cube per token `t` (linear `CUBE_POS`), `align = 1`: line `l` of `hidden[t]` goes to
/// line `l` of each row `token_slot_to_row[t, ·]` inside `0..rows` of `permuted`.
#[cube(launch)]
#[allow(clippy::too_many_arguments)]
pub fn permute_copy_tokens<F: Float, N: Size>(
    hidden: &Array<Vector<F, N>>,
    token_slot_to_row: &Array<i32>,
    permuted: &mut Array<Vector<F, N>>,
    tokens: u32,
    lines: u32,
    k: u32,
    rows: u32,
    #[define(F)] _dtype: ElemType,
) {
    let t = CUBE_POS;
    if t < tokens as usize {
        let n = lines as usize;
        let k_count = k as usize;
        let mut l = UNIT_POS as usize;
        while l < n {
            let v = hidden[t * n + l];
            for j in 0..k_count {
                let r = token_slot_to_row[t * k_count + j];
                if r >= 0 && r < rows as i32 {
                    permuted[r as usize * n + l] = v;
                }
            }
            l += CUBE_DIM as usize;
        }
    }
}

/// One cube per row `r` (linear `CUBE_POS`): `permuted[r]` = `hidden[row_to_token[r]]`, zeros
/// where it is −1 (padding).
#[cube(launch)]
pub fn permute_copy_rows<F: Float, N: Size>(
    hidden: &Array<Vector<F, N>>,
    row_to_token: &Array<i32>,
    permuted: &mut Array<Vector<F, N>>,
    rows: u32,
    lines: u32,
    tokens: u32,
    #[define(F)] _dtype: ElemType,
) {
    let r = CUBE_POS;
    if r < rows as usize {
        let n = lines as usize;
        let t = row_to_token[r];
        let mut l = UNIT_POS as usize;
        while l < n {
            if t >= 0 && t < tokens as i32 {
                permuted[r * n + l] = hidden[t as usize * n + l];
            } else {
                permuted[r * n + l] = Vector::new(F::new(0.0));
            }
            l += CUBE_DIM as usize;
        }
    }
}

/// One cube per token `t` (linear `CUBE_POS`): `out[t] = add[t] + Σ_j weights[t, j] ·
/// y[token_slot_to_row[t, j]]` in f32 lines, rounded once. A row outside `0..rows` is
/// recorded (code `bad`) and its term skipped.
#[cube(launch)]
#[allow(clippy::too_many_arguments)]
pub fn combine_lines<F: Float, N: Size>(
    y: &Array<Vector<F, N>>,
    weights: &Array<f32>,
    token_slot_to_row: &Array<i32>,
    add: &Array<Vector<F, N>>,
    out: &mut Array<Vector<F, N>>,
    flag: &mut Array<i32>,
    tokens: u32,
    lines: u32,
    k: u32,
    rows: u32,
    bad: i32,
    #[comptime] has_add: bool,
    #[define(F)] _dtype: ElemType,
) {
    let t = CUBE_POS;
    if t < tokens as usize {
        let n = lines as usize;
        let k_count = k as usize;
        if UNIT_POS == 0 {
            for j in 0..k_count {
                let s = t * k_count + j;
                let r = token_slot_to_row[s];
                if r < 0 || r >= rows as i32 {
                    record(flag, bad, s as i32, r, rows as i32);
                }
            }
        }
        let mut l = UNIT_POS as usize;
        while l < n {
            let mut acc = Vector::<f32, N>::new(0.0f32);
            if comptime!(has_add) {
                acc = Vector::<f32, N>::cast_from(add[t * n + l]);
            }
            for j in 0..k_count {
                let s = t * k_count + j;
                let r = token_slot_to_row[s];
                if r >= 0 && r < rows as i32 {
                    let w = Vector::<f32, N>::new(weights[s]);
                    acc += w * Vector::<f32, N>::cast_from(y[r as usize * n + l]);
                }
            }
            out[t * n + l] = Vector::<F, N>::cast_from(acc);
            l += CUBE_DIM as usize;
        }
    }
}
