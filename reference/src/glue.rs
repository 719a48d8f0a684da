//! Model glue: RMSNorm (with fused residual), rotary (1-D and 3-D), SwiGLU, embedding gather,
//! dense GEMM.

use crate::expect;
use crate::grouped_gemm::silu;
use moekit_ops::{
    check, DType, EmbeddingProblem, GemmProblem, HostTensor, Result, RmsNormProblem, RotaryProblem, SwigluProblem,
    Validated,
};

/// Outputs of [`rms_norm`].
#[derive(Clone, Debug, PartialEq)]
pub struct RmsNormOut {
    /// `[rows, H]`: the normalised rows.
    pub y: HostTensor,
    /// `[rows, H]`: `x + residual` rounded to the dtype; `Some` exactly with the fused residual.
    pub residual_out: Option<HostTensor>,
}

/// RMSNorm; see [`RmsNormProblem`]: `y = s / sqrt(mean(s²) + eps) * weight`, where `s = x`, or,
/// with the fused residual, `s = x + residual` rounded to the dtype (the rounded `s` is both
/// written out and normalised).
///
/// `x [rows, H]`, `weight [H]`, optional `residual [rows, H]` → [`RmsNormOut`].
///
/// # Errors
/// [`moekit_ops::Error::Shape`] / [`moekit_ops::Error::DType`] / [`moekit_ops::Error::Invalid`]
/// for inputs that do not match the problem.
pub fn rms_norm(
    p: &Validated<RmsNormProblem>,
    x: &HostTensor,
    weight: &HostTensor,
    residual: Option<&HostTensor>,
) -> Result<RmsNormOut> {
    const OP: &str = "rms_norm";
    let (rows, h_count) = (p.rows, p.hidden);
    expect(OP, "x", x, p.dtype, &[rows, h_count])?;
    expect(OP, "weight", weight, p.dtype, &[h_count])?;
    let (s, residual_out) = match (p.residual, residual) {
        (true, Some(r)) => {
            expect(OP, "residual", r, p.dtype, &[rows, h_count])?;
            let sum: Vec<f64> = x.to_f64_vec().iter().zip(r.to_f64_vec()).map(|(a, b)| a + b).collect();
            let rounded = HostTensor::from_f64(p.dtype, &[rows, h_count], &sum);
            (rounded.to_f64_vec(), Some(rounded))
        }
        (false, None) => (x.to_f64_vec(), None),
        _ => return Err(moekit_ops::Error::invalid(OP, "`residual` present/absent against problem.residual")),
    };

    let w = weight.to_f64_vec();
    let eps = p.eps as f64;
    let mut y = vec![0f64; rows * h_count];
    for r in 0..rows {
        let row = &s[r * h_count..(r + 1) * h_count];
        let mean_sq = row.iter().map(|v| v * v).sum::<f64>() / h_count as f64;
        let inv_rms = 1.0 / (mean_sq + eps).sqrt();
        for h in 0..h_count {
            y[r * h_count + h] = row[h] * inv_rms * w[h];
        }
    }
    Ok(RmsNormOut { y: HostTensor::from_f64(p.dtype, &[rows, h_count], &y), residual_out })
}

/// Rotary embedding, half-split (NeoX); see [`RotaryProblem`]. Pair `f < D/2` rotates
/// `(x[f], x[f + D/2])` by `a = pos · theta^(-2f/D)`, with `pos` from row `axis_of(f)` of the
/// positions.
///
/// `x [T, heads, D]`, `positions [T] i32` (1-D) or `[3, T] i32` (3-D) → `out [T, heads, D]`.
///
/// # Errors
/// [`moekit_ops::Error::Shape`] / [`moekit_ops::Error::DType`] for inputs that do not match.
pub fn rotary(p: &Validated<RotaryProblem>, x: &HostTensor, positions: &HostTensor) -> Result<HostTensor> {
    const OP: &str = "rotary";
    let (t_count, heads, d) = (p.tokens, p.heads, p.head_dim);
    expect(OP, "x", x, p.dtype, &[t_count, heads, d])?;
    expect(OP, "positions", positions, DType::I32, &p.positions_shape())?;
    let pos = positions.as_i32()?;
    let x = x.to_f64_vec();
    let half = d / 2;
    let theta = p.theta as f64;

    let mut out = vec![0f64; t_count * heads * d];
    for t in 0..t_count {
        for f in 0..half {
            let inv_freq = theta.powf(-2.0 * f as f64 / d as f64);
            let angle = pos[p.axis_of(f) * t_count + t] as f64 * inv_freq;
            let (sin, cos) = angle.sin_cos();
            for h in 0..heads {
                let base = (t * heads + h) * d;
                let (a, b) = (x[base + f], x[base + f + half]);
                out[base + f] = a * cos - b * sin;
                out[base + f + half] = b * cos + a * sin;
            }
        }
    }
    Ok(HostTensor::from_f64(p.dtype, &[t_count, heads, d], &out))
}

/// SwiGLU; see [`SwigluProblem`]: `y = silu(x[:, :I]) * x[:, I:]`.
///
/// `x [rows, 2I]` → `y [rows, I]`.
///
/// # Errors
/// [`moekit_ops::Error::Shape`] / [`moekit_ops::Error::DType`] for an input that does not match.
pub fn swiglu(p: &Validated<SwigluProblem>, x: &HostTensor) -> Result<HostTensor> {
    let (rows, i_dim) = (p.rows, p.inter);
    expect("swiglu", "x", x, p.dtype, &[rows, 2 * i_dim])?;
    let x = x.to_f64_vec();
    let mut y = vec![0f64; rows * i_dim];
    for r in 0..rows {
        for i in 0..i_dim {
            y[r * i_dim + i] = silu(x[r * 2 * i_dim + i]) * x[r * 2 * i_dim + i_dim + i];
        }
    }
    Ok(HostTensor::from_f64(p.dtype, &[rows, i_dim], &y))
}

/// Embedding gather; see [`EmbeddingProblem`]: `out[t] = table[ids[t]]` (exact copies).
///
/// `table [V, H]`, `ids [T] i32` → `out [T, H]`.
///
/// # Errors
/// [`moekit_ops::Error::Shape`] / [`moekit_ops::Error::DType`] for inputs that do not match;
/// [`moekit_ops::Error::IndexOutOfRange`] for an id outside `0..V`.
pub fn embedding(p: &Validated<EmbeddingProblem>, table: &HostTensor, ids: &HostTensor) -> Result<HostTensor> {
    const OP: &str = "embedding";
    let (t_count, h_count) = (p.tokens, p.hidden);
    expect(OP, "table", table, p.dtype, &[p.vocab, h_count])?;
    expect(OP, "ids", ids, DType::I32, &[t_count])?;
    let ids = ids.as_i32()?;
    check::in_range(OP, "ids", ids, 0, p.vocab as i64)?;
    let table = table.to_f64_vec();
    let mut out = vec![0f64; t_count * h_count];
    for t in 0..t_count {
        let v = ids[t] as usize;
        out[t * h_count..(t + 1) * h_count].copy_from_slice(&table[v * h_count..(v + 1) * h_count]);
    }
    Ok(HostTensor::from_f64(p.dtype, &[t_count, h_count], &out))
}

/// Dense GEMM; see [`GemmProblem`]: `c = a · b`.
///
/// `a [M, K]`, `b [K, N]` (or `[N, K]` with `b_transposed`) → `c [M, N]`.
///
/// # Errors
/// [`moekit_ops::Error::Shape`] / [`moekit_ops::Error::DType`] for inputs that do not match.
pub fn gemm(p: &Validated<GemmProblem>, a: &HostTensor, b: &HostTensor) -> Result<HostTensor> {
    let (m, k_dim, n) = (p.m, p.k, p.n);
    expect("gemm", "a", a, p.dtype, &[m, k_dim])?;
    let b_shape = if p.b_transposed { [n, k_dim] } else { [k_dim, n] };
    expect("gemm", "b", b, p.dtype, &b_shape)?;
    let (a, b) = (a.to_f64_vec(), b.to_f64_vec());
    let mut c = vec![0f64; m * n];
    for i in 0..m {
        for j in 0..n {
            let mut acc = 0f64;
            for kk in 0..k_dim {
                let b_kj = if p.b_transposed { b[j * k_dim + kk] } else { b[kk * n + j] };
                acc += a[i * k_dim + kk] * b_kj;
            }
            c[i * n + j] = acc;
        }
    }
    Ok(HostTensor::from_f64(p.dtype, &[m, n], &c))
}
