//! Model glue: RMSNorm (with fused residual add), rotary embedding (1-D and 3-D Uni-RoPE),
//! SwiGLU, embedding gather, dense GEMM.

use crate::convert::{dispatch_float, elems, elems_mut, ints, widen, with_f32_out, Elem};
use crate::grouped_gemm::silu;
use crate::matmul::{matmul, parallelism_for, Mat};
use crate::permute::gather_rows;
use crate::CpuBackend;
use moekit_ops::{
    check, EmbeddingProblem, GemmProblem, GlueOps, HostTensor, Result, RmsNormIo, RmsNormProblem, RotaryIo,
    RotaryProblem, SwigluProblem, Validated,
};
use rayon::prelude::*;

impl GlueOps for CpuBackend {
    fn rms_norm(&self, p: &Validated<RmsNormProblem>, io: RmsNormIo<'_, HostTensor>) -> Result<()> {
        const OP: &str = "rms_norm";
        dispatch_float!(OP, p.dtype, T => {
            let x = elems::<T>(OP, "x", io.x)?;
            let weight: Vec<f32> = elems::<T>(OP, "weight", io.weight)?.iter().map(|w| w.to_f32()).collect();
            let y = elems_mut::<T>(OP, "y", io.y)?;
            match (io.residual, io.residual_out) {
                (Some(r), Some(ro)) => {
                    let r = elems::<T>(OP, "residual", r)?;
                    let ro = elems_mut::<T>(OP, "residual_out", ro)?;
                    rms_norm_residual(p, x, r, &weight, y, ro);
                }
                _ => rms_norm_plain(p, x, &weight, y),
            }
            Ok(())
        })
    }

    fn rotary(&self, p: &Validated<RotaryProblem>, io: RotaryIo<'_, HostTensor>) -> Result<()> {
        const OP: &str = "rotary";
        let positions = ints(OP, "positions", io.positions)?;
        dispatch_float!(OP, p.dtype, T => {
            let x = elems::<T>(OP, "x", io.x)?;
            let out = elems_mut::<T>(OP, "out", io.out)?;
            rotary(p, positions, x, out);
            Ok(())
        })
    }

    fn swiglu(&self, p: &Validated<SwigluProblem>, x: &HostTensor, y: &mut HostTensor) -> Result<()> {
        const OP: &str = "swiglu";
        let i = p.inter;
        dispatch_float!(OP, p.dtype, T => {
            let x = elems::<T>(OP, "x", x)?;
            let y = elems_mut::<T>(OP, "y", y)?;
            y.par_chunks_mut(i).zip(x.par_chunks(2 * i)).for_each(|(y, x)| {
                let (gate, up) = x.split_at(i);
                for ((y, g), u) in y.iter_mut().zip(gate).zip(up) {
                    *y = T::from_f32(silu(g.to_f32()) * u.to_f32());
                }
            });
            Ok(())
        })
    }

    fn embedding(
        &self,
        p: &Validated<EmbeddingProblem>,
        table: &HostTensor,
        ids: &HostTensor,
        out: &mut HostTensor,
    ) -> Result<()> {
        const OP: &str = "embedding";
        let ids = ints(OP, "ids", ids)?;
        check::in_range(OP, "ids", ids, 0, p.vocab as i64)?;
        dispatch_float!(OP, p.dtype, T => {
            let table = elems::<T>(OP, "table", table)?;
            gather_rows(table, ids, elems_mut::<T>(OP, "out", out)?, p.hidden);
            Ok(())
        })
    }

    fn gemm(&self, p: &Validated<GemmProblem>, a: &HostTensor, b: &HostTensor, c: &mut HostTensor) -> Result<()> {
        const OP: &str = "gemm";
        dispatch_float!(OP, p.dtype, T => {
            let a = widen(elems::<T>(OP, "a", a)?);
            let b = widen(elems::<T>(OP, "b", b)?);
            let rhs = if p.b_transposed { Mat::transposed(&b, p.k) } else { Mat::row_major(&b, p.n) };
            let dims = (p.m, p.k, p.n);
            let par = parallelism_for(p.m, p.k, p.n);
            with_f32_out(OP, "c", c, |c| matmul(dims, Mat::row_major(&a, p.k), rhs, c, p.n, false, par))
        })
    }
}

/// `1 / sqrt(mean(s²) + eps)` of one row, accumulated in f32.
fn inv_rms(s: &[f32], eps: f32) -> f32 {
    let ss = crate::convert::dot(s, s);
    1.0 / (ss / s.len() as f32 + eps).sqrt()
}

fn rms_norm_plain<T: Elem>(p: &RmsNormProblem, x: &[T], weight: &[f32], y: &mut [T]) {
    let h = p.hidden;
    if y.is_empty() {
        return;
    }
    y.par_chunks_mut(h).zip(x.par_chunks(h)).for_each_init(
        || vec![0f32; h],
        |s, (y, x)| {
            s.iter_mut().zip(x).for_each(|(s, x)| *s = x.to_f32());
            let inv = inv_rms(s, p.eps);
            y.iter_mut().zip(s.iter()).zip(weight).for_each(|((y, &s), &w)| *y = T::from_f32(s * inv * w));
        },
    );
}

/// `s = round(x + residual)` to `residual_out`, then the norm of the rounded `s`.
fn rms_norm_residual<T: Elem>(p: &RmsNormProblem, x: &[T], r: &[T], weight: &[f32], y: &mut [T], ro: &mut [T]) {
    let h = p.hidden;
    if y.is_empty() {
        return;
    }
    y.par_chunks_mut(h).zip(ro.par_chunks_mut(h)).zip(x.par_chunks(h).zip(r.par_chunks(h))).for_each_init(
        || vec![0f32; h],
        |s, ((y, ro), (x, r))| {
            for (((s, ro), x), r) in s.iter_mut().zip(ro.iter_mut()).zip(x).zip(r) {
                let sum = T::from_f32(x.to_f32() + r.to_f32());
                *ro = sum;
                *s = sum.to_f32();
            }
            let inv = inv_rms(s, p.eps);
            y.iter_mut().zip(s.iter()).zip(weight).for_each(|((y, &s), &w)| *y = T::from_f32(s * inv * w));
        },
    );
}

/// NeoX half-split rotary. Angles, cos and sin in f64 (angles grow with the position, and
/// an f32 angle loses the phase at long contexts), the rotation itself in f32.
fn rotary<T: Elem>(p: &RotaryProblem, positions: &[i32], x: &[T], out: &mut [T]) {
    let (t_count, heads, d) = (p.tokens, p.heads, p.head_dim);
    // NOTE: no tokens, nothing to do: the tables below are `D/2` long and `D` is unbounded
    // (up to i32::MAX) when `T = 0`.
    if out.is_empty() {
        return;
    }
    let half = d / 2;
    let inv_freq: Vec<f64> = (0..half).map(|f| (p.theta as f64).powf(-2.0 * f as f64 / d as f64)).collect();
    let axis: Vec<usize> = (0..half).map(|f| p.axis_of(f)).collect();
    out.par_chunks_mut(heads * d).zip(x.par_chunks(heads * d)).enumerate().for_each_init(
        || (vec![0f32; half], vec![0f32; half]),
        |(cos, sin), (t, (out, x))| {
            for f in 0..half {
                let a = positions[axis[f] * t_count + t] as f64 * inv_freq[f];
                cos[f] = a.cos() as f32;
                sin[f] = a.sin() as f32;
            }
            for (o, x) in out.chunks_mut(d).zip(x.chunks(d)) {
                for f in 0..half {
                    let (x0, x1) = (x[f].to_f32(), x[f + half].to_f32());
                    o[f] = T::from_f32(x0 * cos[f] - x1 * sin[f]);
                    o[f + half] = T::from_f32(x1 * cos[f] + x0 * sin[f]);
                }
            }
        },
    );
}
