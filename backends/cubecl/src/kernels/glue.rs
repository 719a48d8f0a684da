//! Model-glue kernels: RMSNorm (with fused residual), rotary (1-D and 3-D), SwiGLU and the
//! embedding gather. Float data is computed in f32; sizes arrive as `u32`.

use super::flag::record;
use cubecl::ir::ElemType;
use cubecl::prelude::*;

/// Global index of this unit over a 1-D launch of any cube count.
#[cube]
pub fn unit_index() -> usize {
    CUBE_POS * CUBE_DIM as usize + UNIT_POS as usize
}

/// Sum of `value` over the cube's `block` units (a power of two) through shared memory; every
/// unit gets the sum. Needs no plane operations, so it runs wherever shared memory does.
#[cube]
pub fn cube_sum(value: f32, #[comptime] block: usize) -> f32 {
    let mut shared = SharedMemory::<f32>::new(block);
    let unit = UNIT_POS as usize;
    shared[unit] = value;
    sync_cube();
    let steps = comptime!(block.trailing_zeros() as usize);
    for step in 0..steps {
        let stride = block >> (step + 1);
        if unit < stride {
            shared[unit] = shared[unit] + shared[unit + stride];
        }
        sync_cube();
    }
    let total = shared[0];
    sync_cube();
    total
}

/// RMSNorm: one cube of `block` units per row of `x [rows, H]`.
///
/// With `fused`, `s = x + residual` rounded to `F` is written to `residual_out` and
/// normalised; otherwise `residual` and `residual_out` are unused placeholders.
#[cube(launch)]
pub fn rms_norm<F: Float>(
    x: &Array<F>,
    weight: &Array<F>,
    residual: &Array<F>,
    y: &mut Array<F>,
    residual_out: &mut Array<F>,
    rows: u32,
    hidden: u32,
    eps: f32,
    #[comptime] fused: bool,
    #[comptime] block: usize,
    #[define(F)] _dtype: ElemType,
) {
    let row = CUBE_POS;
    let width = hidden as usize;
    // NOTE: no early return: every unit of the cube must reach the barriers in `cube_sum`.
    let live = row < rows as usize;
    let base = row * width;
    let mut sq = 0.0f32;
    if live {
        let mut h = UNIT_POS as usize;
        while h < width {
            let mut s = x[base + h];
            if comptime!(fused) {
                s = F::cast_from(f32::cast_from(s) + f32::cast_from(residual[base + h]));
                residual_out[base + h] = s;
            }
            let v = f32::cast_from(s);
            sq += v * v;
            h += block;
        }
    }
    let total = cube_sum(sq, block);
    if live {
        let inv_rms = 1.0f32 / f32::sqrt(total / f32::cast_from(hidden) + eps);
        let mut h = UNIT_POS as usize;
        while h < width {
            // NOTE: with the residual, the rounded sum is read back from `residual_out`, which
            // this same unit wrote above.
            let s = if comptime!(fused) { residual_out[base + h] } else { x[base + h] };
            y[base + h] = F::cast_from(f32::cast_from(s) * inv_rms * f32::cast_from(weight[h]));
            h += block;
        }
    }
}

/// Rotary, half-split: one unit per `(token, head, pair)` of `x [T, heads, D]`.
///
/// `positions` is `[T]` or `[3, T]`; pair `f` reads row 0 for `f < s0`, row 1 for
/// `f < s01`, else row 2 (1-D: `s0 = s01 = D/2`).
#[cube(launch)]
pub fn rotary<F: Float>(
    x: &Array<F>,
    positions: &Array<i32>,
    out: &mut Array<F>,
    tokens: u32,
    heads: u32,
    half: u32,
    theta: f32,
    s0: u32,
    s01: u32,
    #[define(F)] _dtype: ElemType,
) {
    let i = unit_index();
    let (t_count, half_n) = (tokens as usize, half as usize);
    if i < t_count * heads as usize * half_n {
        let f = i % half_n;
        let th = i / half_n;
        let t = th / heads as usize;
        let mut axis = 2usize;
        if f < s0 as usize {
            axis = 0;
        } else if f < s01 as usize {
            axis = 1;
        }
        let pos = f32::cast_from(positions[axis * t_count + t]);
        let expo = -2.0f32 * f32::cast_from(f as u32) / f32::cast_from(2 * half);
        let angle = pos * f32::powf(theta, expo);
        let sin = f32::sin(angle);
        let cos = f32::cos(angle);
        let base = th * 2 * half_n;
        let a = f32::cast_from(x[base + f]);
        let b = f32::cast_from(x[base + f + half_n]);
        out[base + f] = F::cast_from(a * cos - b * sin);
        out[base + f + half_n] = F::cast_from(b * cos + a * sin);
    }
}

/// SwiGLU: one unit per element of `y [rows, I]`, `y = silu(x[:, :I]) * x[:, I:]`.
#[cube(launch)]
pub fn swiglu<F: Float>(x: &Array<F>, y: &mut Array<F>, rows: u32, inter: u32, #[define(F)] _dtype: ElemType) {
    let i = unit_index();
    let width = inter as usize;
    if i < rows as usize * width {
        let r = i / width;
        let c = i % width;
        let g = f32::cast_from(x[r * 2 * width + c]);
        let u = f32::cast_from(x[r * 2 * width + width + c]);
        y[i] = F::cast_from(g / (1.0f32 + f32::exp(-g)) * u);
    }
}

/// Embedding gather: one unit per element of `out [T, H]`; an id outside `0..V` is recorded
/// (code `bad`) and its row written as zeros.
#[cube(launch)]
pub fn embedding<F: Float>(
    table: &Array<F>,
    ids: &Array<i32>,
    out: &mut Array<F>,
    flag: &mut Array<i32>,
    tokens: u32,
    vocab: u32,
    hidden: u32,
    bad: i32,
    #[define(F)] _dtype: ElemType,
) {
    let i = unit_index();
    let width = hidden as usize;
    if i < tokens as usize * width {
        let t = i / width;
        let h = i % width;
        let id = ids[t];
        if id >= 0 && id < vocab as i32 {
            out[i] = table[id as usize * width + h];
        } else {
            out[i] = F::new(0.0);
            if h == 0 {
                record(flag, bad, t as i32, id, vocab as i32);
            }
        }
    }
}
