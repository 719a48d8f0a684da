//! Grouped expert GEMM: contiguous and masked layouts, `[E, K, N]` and `[E, N, K]` weights,
//! gather prologue, SwiGLU and row-scale epilogues.

use crate::expect;
use moekit_ops::{check, DType, GemmLayout, GroupedGemmProblem, HostTensor, Result, Validated, WeightLayout};

const OP: &str = "grouped_gemm";

/// A grouped GEMM; see [`GroupedGemmProblem`]: for every row `r` of expert `e`,
/// `y[r] = row_scale[r] · epilogue(x[r] · W_e)`, accumulated in f64 and rounded once.
///
/// Inputs: `x [R, K]` (`[T, K]` with the gather prologue, `[E, C, K]` masked), `w [E, K, N]`
/// or `[E, N, K]`, `group` = `offsets [E+1] i32` (contiguous) or `counts [E] i32` (masked),
/// `row_to_token [R] i32` with the gather prologue, `row_scale [R] f32` or `[E, C] f32` with the
/// row-scale epilogue. Output `y [R, N_out]` or `[E, C, N_out]`; rows outside every expert are
/// zero.
///
/// # Errors
/// [`moekit_ops::Error::Shape`] / [`moekit_ops::Error::DType`] / [`moekit_ops::Error::Invalid`]
/// for inputs that do not match; [`moekit_ops::Error::BadOffsets`] for offsets that do not
/// start at 0, decrease or pass `R`; [`moekit_ops::Error::IndexOutOfRange`] for counts outside
/// `0..=C` or gather rows outside `-1..T`.
pub fn grouped_gemm(
    p: &Validated<GroupedGemmProblem>,
    x: &HostTensor,
    w: &HostTensor,
    group: &HostTensor,
    row_to_token: Option<&HostTensor>,
    row_scale: Option<&HostTensor>,
) -> Result<HostTensor> {
    expect(OP, "x", x, p.dtype, &p.x_shape())?;
    expect(OP, "w", w, p.dtype, &p.w_shape())?;
    let scale = row_scales(p, row_scale)?;
    let (x, w) = (x.to_f64_vec(), w.to_f64_vec());
    let (k_dim, n_out) = (p.k_dim, p.n_out());
    let mut y = vec![0f64; p.out_rows() * n_out];

    // Every (expert, output row, input row) triple; rows outside every expert stay zero.
    let mut work: Vec<(usize, usize, Option<usize>)> = Vec::new();
    match p.layout {
        GemmLayout::Contiguous { rows } => {
            expect(OP, "offsets", group, DType::I32, &[p.experts + 1])?;
            let offsets = group.as_i32()?;
            check::offsets(OP, "offsets", offsets, rows)?;
            let gather = gather_rows(p, row_to_token, rows)?;
            for e in 0..p.experts {
                for r in offsets[e] as usize..offsets[e + 1] as usize {
                    // With the gather prologue, row -1 reads a zero row.
                    let src = match &gather {
                        Some(g) => usize::try_from(g[r]).ok(),
                        None => Some(r),
                    };
                    work.push((e, r, src));
                }
            }
        }
        GemmLayout::Masked { capacity } => {
            expect(OP, "counts", group, DType::I32, &[p.experts])?;
            if row_to_token.is_some() {
                return Err(moekit_ops::Error::invalid(OP, "`row_to_token` passed with the masked layout"));
            }
            let counts = group.as_i32()?;
            check::in_range(OP, "counts", counts, 0, capacity as i64 + 1)?;
            for e in 0..p.experts {
                for c in 0..counts[e] as usize {
                    work.push((e, e * capacity + c, Some(e * capacity + c)));
                }
            }
        }
    }

    let zero = vec![0f64; k_dim];
    for (e, r, src) in work {
        let x_row = match src {
            Some(s) => &x[s * k_dim..(s + 1) * k_dim],
            None => &zero[..],
        };
        let acc = row_times_weight(p, x_row, &w, e);
        let out = epilogue(p, &acc);
        for n in 0..n_out {
            y[r * n_out + n] = out[n] * scale.as_ref().map_or(1.0, |s| s[r]);
        }
    }
    Ok(HostTensor::from_f64(p.dtype, &p.y_shape(), &y))
}

/// The gather map `[R]` (each in `-1..T`), when the problem gathers.
fn gather_rows(p: &GroupedGemmProblem, row_to_token: Option<&HostTensor>, rows: usize) -> Result<Option<Vec<i32>>> {
    match (p.gather_tokens, row_to_token) {
        (Some(t_count), Some(map)) => {
            expect(OP, "row_to_token", map, DType::I32, &[rows])?;
            let map = map.as_i32()?;
            check::in_range(OP, "row_to_token", map, -1, t_count as i64)?;
            Ok(Some(map.to_vec()))
        }
        (None, None) => Ok(None),
        _ => Err(moekit_ops::Error::invalid(OP, "`row_to_token` present/absent against gather_tokens")),
    }
}

/// The row scales (`[R]` or `[E, C]`, flattened), when the problem scales rows.
fn row_scales(p: &GroupedGemmProblem, row_scale: Option<&HostTensor>) -> Result<Option<Vec<f64>>> {
    match (p.row_scale, row_scale) {
        (true, Some(s)) => {
            expect(OP, "row_scale", s, DType::F32, &p.row_scale_shape())?;
            Ok(Some(s.to_f64_vec()))
        }
        (false, None) => Ok(None),
        _ => Err(moekit_ops::Error::invalid(OP, "`row_scale` present/absent against the problem")),
    }
}

/// `acc [N] = x_row [K] · W_e`, with `W_e` stored `[K, N]` or `[N, K]`.
fn row_times_weight(p: &GroupedGemmProblem, x_row: &[f64], w: &[f64], e: usize) -> Vec<f64> {
    let (k_dim, n_dim) = (p.k_dim, p.n_dim);
    let w_e = &w[e * k_dim * n_dim..(e + 1) * k_dim * n_dim];
    let mut acc = vec![0f64; n_dim];
    for n in 0..n_dim {
        for k in 0..k_dim {
            let w_kn = match p.weight_layout {
                WeightLayout::KN => w_e[k * n_dim + n],
                WeightLayout::NK => w_e[n * k_dim + k],
            };
            acc[n] += x_row[k] * w_kn;
        }
    }
    acc
}

/// SwiGLU over the unrounded accumulator (`silu(acc[:I]) * acc[I:]`), or the accumulator.
fn epilogue(p: &GroupedGemmProblem, acc: &[f64]) -> Vec<f64> {
    if !p.swiglu {
        return acc.to_vec();
    }
    let i_dim = p.n_dim / 2;
    (0..i_dim).map(|i| silu(acc[i]) * acc[i_dim + i]).collect()
}

/// `silu(g) = g · sigmoid(g)`.
pub(crate) fn silu(g: f64) -> f64 {
    g / (1.0 + (-g).exp())
}
