//! Dispatch and combine kernels: per-expert segment sizes ([`permute_sizes`]), their prefix
//! sum ([`permute_offsets`]), the stable row assignment ([`permute_assign`]), the row copy
//! ([`permute_copy`]) and the weighted combine ([`combine`]): the portable per-expert-scan
//! path. The scalable path (chunk histograms, scans, scatter, vectorised copies) is in
//! [`scan`]; `crate::ops` chooses between them.

pub mod scan;

use super::flag::record;
use super::glue::unit_index;
use cubecl::ir::ElemType;
use cubecl::prelude::*;

/// One unit per expert `e`: `sizes[e]` = slots of `ids [T·k]` that chose `e`, rounded up to
/// `align`. Unit 0 also records the first id outside `0..E` (code `bad`) and marks its slot's
/// `token_slot_to_row` −1.
#[cube(launch)]
pub fn permute_sizes(
    ids: &Array<i32>,
    sizes: &mut Array<i32>,
    token_slot_to_row: &mut Array<i32>,
    flag: &mut Array<i32>,
    slots: u32,
    experts: u32,
    align: u32,
    bad: i32,
) {
    let e = unit_index();
    if e < experts as usize {
        let mut n = 0u32;
        for s in 0..slots as usize {
            let id = ids[s];
            if id == e as i32 {
                n += 1u32;
            }
            if e == 0 && (id < 0 || id >= experts as i32) {
                record(flag, bad, s as i32, id, experts as i32);
                token_slot_to_row[s] = -1i32;
            }
        }
        sizes[e] = (n.div_ceil(align) * align) as i32;
    }
}

/// One unit: `offsets [E+1]` = the exclusive prefix sum of `sizes [E]`.
#[cube(launch)]
pub fn permute_offsets(sizes: &Array<i32>, offsets: &mut Array<i32>, experts: u32) {
    if unit_index() == 0 {
        let mut acc = 0i32;
        offsets[0] = acc;
        for e in 0..experts as usize {
            acc += sizes[e];
            offsets[e + 1] = acc;
        }
    }
}

/// One unit per expert `e`: walks the slots in token, then slot order, giving the `n`-th slot
/// of `e` row `offsets[e] + n` (`token_slot_to_row`, `row_to_token`), and marks the segment's
/// padding rows −1 in `row_to_token`.
#[cube(launch)]
pub fn permute_assign(
    ids: &Array<i32>,
    offsets: &Array<i32>,
    token_slot_to_row: &mut Array<i32>,
    row_to_token: &mut Array<i32>,
    slots: u32,
    experts: u32,
    k: u32,
) {
    let e = unit_index();
    if e < experts as usize {
        let mut row = offsets[e];
        for s in 0..slots as usize {
            if ids[s] == e as i32 {
                token_slot_to_row[s] = row;
                row_to_token[row as usize] = (s / k as usize) as i32;
                row += 1i32;
            }
        }
        let end = offsets[e + 1];
        while row < end {
            row_to_token[row as usize] = -1i32;
            row += 1i32;
        }
    }
}

/// One unit per element of `permuted [R, H]`: a copy of its token's hidden row, zero on
/// padding; rows from `offsets[E]` up to `R` also get `row_to_token = −1`.
#[cube(launch)]
pub fn permute_copy<F: Float>(
    hidden: &Array<F>,
    offsets: &Array<i32>,
    row_to_token: &mut Array<i32>,
    permuted: &mut Array<F>,
    rows: u32,
    width: u32,
    experts: u32,
    #[define(F)] _dtype: ElemType,
) {
    let i = unit_index();
    let h_count = width as usize;
    if i < rows as usize * h_count {
        let r = i / h_count;
        let h = i % h_count;
        let used = offsets[experts as usize] as usize;
        let token = select(r < used, row_to_token[r], -1i32);
        if r >= used && h == 0 {
            row_to_token[r] = -1i32;
        }
        if token >= 0 {
            permuted[i] = hidden[token as usize * h_count + h];
        } else {
            permuted[i] = F::new(0.0);
        }
    }
}

/// One unit per element of `out [T, H]`: `out = add + Σ_j weights[t, j] · y[row(t, j)]` in
/// f32, rounded once. A row outside `0..R` is recorded (code `bad`) and skipped.
#[cube(launch)]
pub fn combine<F: Float>(
    y: &Array<F>,
    weights: &Array<f32>,
    token_slot_to_row: &Array<i32>,
    add: &Array<F>,
    out: &mut Array<F>,
    flag: &mut Array<i32>,
    tokens: u32,
    width: u32,
    k: u32,
    rows: u32,
    bad: i32,
    #[comptime] has_add: bool,
    #[define(F)] _dtype: ElemType,
) {
    let i = unit_index();
    let h_count = width as usize;
    if i < tokens as usize * h_count {
        let t = i / h_count;
        let h = i % h_count;
        let mut acc = 0.0f32;
        if comptime!(has_add) {
            acc = f32::cast_from(add[i]);
        }
        for j in 0..k as usize {
            let s = t * k as usize + j;
            let r = token_slot_to_row[s];
            if r >= 0 && r < rows as i32 {
                acc += weights[s] * f32::cast_from(y[r as usize * h_count + h]);
            } else if h == 0 {
                record(flag, bad, s as i32, r, rows as i32);
            }
        }
        out[i] = F::cast_from(acc);
    }
}
