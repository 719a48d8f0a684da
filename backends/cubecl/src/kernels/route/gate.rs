//! The router's gate GEMM: `logits [T, E] f32 = hidden [T, H] · gate [H, E]`, register-blocked.
//!
//! A cube of [`GATE_UNITS`]² units owns a tile of `GATE_UNITS·tm` tokens by `GATE_UNITS·tn`
//! experts; unit `(x, y)` accumulates the `tm × tn` outputs of rows `y + GATE_UNITS·i` and
//! columns `x + GATE_UNITS·j` in registers, over depth slices of [`GATE_BK`] staged in shared
//! memory as f32. Accumulation is f32 in depth order; the logits are never rounded to `F`.

use cubecl::ir::ElemType;
use cubecl::prelude::*;

/// Units along each side of the cube.
pub const GATE_UNITS: usize = 16;
/// Depth of one shared-memory slice.
pub const GATE_BK: usize = 16;

/// The gate GEMM; see the module doc. Launch with a cube of `GATE_UNITS × GATE_UNITS` units
/// and `(ceil(T / (GATE_UNITS·tm)), ceil(E / (GATE_UNITS·tn)))` cubes.
#[cube(launch)]
#[allow(clippy::too_many_arguments)]
pub fn gate_logits<F: Float>(
    x: &Array<F>,
    gate: &Array<F>,
    out: &mut Array<f32>,
    tokens: u32,
    hidden: u32,
    experts: u32,
    #[comptime] tm: usize,
    #[comptime] tn: usize,
    #[define(F)] _dtype: ElemType,
) {
    let units = comptime!(GATE_UNITS);
    let bk = comptime!(GATE_BK);
    let bm = comptime!(GATE_UNITS * tm);
    let bn = comptime!(GATE_UNITS * tn);
    // NOTE: one padding column keeps the transposed stores of the hidden tile off one bank.
    let a_stride = comptime!(GATE_UNITS * tm + 1);
    let cube_units = comptime!(GATE_UNITS * GATE_UNITS);
    let tx = UNIT_POS_X as usize;
    let ty = UNIT_POS_Y as usize;
    let u = ty * units + tx;
    let (t_count, h_count, e_count) = (tokens as usize, hidden as usize, experts as usize);
    let m0 = CUBE_POS_X as usize * bm;
    let n0 = CUBE_POS_Y as usize * bn;

    let mut a_sh = SharedMemory::<f32>::new(comptime!(GATE_BK * (GATE_UNITS * tm + 1)));
    let mut b_sh = SharedMemory::<f32>::new(comptime!(GATE_BK * GATE_UNITS * tn));
    let mut acc = Array::<f32>::new(comptime!(tm * tn));
    let mut a = Array::<f32>::new(tm);
    let mut b = Array::<f32>::new(tn);
    #[unroll]
    for i in 0..tm * tn {
        acc[i] = 0.0f32;
    }

    let mut k0 = 0usize;
    while k0 < h_count {
        // Hidden slice [bm, bk], stored depth-major: `tm` elements per unit.
        #[unroll]
        for q in 0..tm {
            let idx = u + q * cube_units;
            let kk = idx % bk;
            let r = idx / bk;
            let (gr, gk) = (m0 + r, k0 + kk);
            let mut v = 0.0f32;
            if gr < t_count && gk < h_count {
                v = f32::cast_from(x[gr * h_count + gk]);
            }
            a_sh[kk * a_stride + r] = v;
        }
        // Gate slice [bk, bn]: `tn` elements per unit.
        #[unroll]
        for q in 0..tn {
            let idx = u + q * cube_units;
            let c = idx % bn;
            let kk = idx / bn;
            let (gk, gc) = (k0 + kk, n0 + c);
            let mut v = 0.0f32;
            if gk < h_count && gc < e_count {
                v = f32::cast_from(gate[gk * e_count + gc]);
            }
            b_sh[kk * bn + c] = v;
        }
        sync_cube();
        #[unroll]
        for kk in 0..bk {
            #[unroll]
            for i in 0..tm {
                a[i] = a_sh[kk * a_stride + ty + units * i];
            }
            #[unroll]
            for j in 0..tn {
                b[j] = b_sh[kk * bn + tx + units * j];
            }
            #[unroll]
            for i in 0..tm {
                #[unroll]
                for j in 0..tn {
                    acc[i * tn + j] += a[i] * b[j];
                }
            }
        }
        sync_cube();
        k0 += bk;
    }
    #[unroll]
    for i in 0..tm {
        #[unroll]
        for j in 0..tn {
            let r = m0 + ty + units * i;
            let c = n0 + tx + units * j;
            if r < t_count && c < e_count {
                out[r * e_count + c] = acc[i * tn + j];
            }
        }
    }
}
