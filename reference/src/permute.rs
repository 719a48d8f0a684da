//! Dispatch to expert-contiguous rows, and the weighted combine back.

use crate::expect;
use moekit_ops::{check, CombineProblem, DType, HostTensor, PermuteProblem, Result, Validated};

/// Outputs of [`permute`].
#[derive(Clone, Debug, PartialEq)]
pub struct PermuteOut {
    /// `[R, H]`: exact copies of the hidden rows, zero on padding; `R = max_rows()`.
    pub permuted: HostTensor,
    /// `[E+1] i32`: rows of expert `e` are `offsets[e]..offsets[e+1]`.
    pub offsets: HostTensor,
    /// `[R] i32`: source token of each row, −1 on padding and past `offsets[E]`.
    pub row_to_token: HostTensor,
    /// `[T, k] i32`: the row that holds slot `j` of token `t`.
    pub token_slot_to_row: HostTensor,
}

/// Dispatch; see [`PermuteProblem`].
///
/// `hidden [T, H]`, `ids [T, k] i32` → [`PermuteOut`]. Each expert's segment holds its slots in
/// token order, then slot order, and is padded to a multiple of `align` rows.
///
/// # Errors
/// [`moekit_ops::Error::Shape`] / [`moekit_ops::Error::DType`] for inputs that do not match;
/// [`moekit_ops::Error::IndexOutOfRange`] for an id outside `0..E`.
pub fn permute(p: &Validated<PermuteProblem>, hidden: &HostTensor, ids: &HostTensor) -> Result<PermuteOut> {
    const OP: &str = "permute";
    let (t_count, h_count, e_count, k, rows) = (p.tokens, p.hidden, p.experts, p.k, p.max_rows());
    expect(OP, "hidden", hidden, p.dtype, &[t_count, h_count])?;
    expect(OP, "ids", ids, DType::I32, &[t_count, k])?;
    let ids = ids.as_i32()?;
    check::in_range(OP, "ids", ids, 0, e_count as i64)?;

    // Segment sizes: the slots per expert, rounded up to the alignment.
    let mut counts = vec![0usize; e_count];
    for &e in ids {
        counts[e as usize] += 1;
    }
    let mut offsets = vec![0usize; e_count + 1];
    for e in 0..e_count {
        offsets[e + 1] = offsets[e] + counts[e].div_ceil(p.align) * p.align;
    }

    // Fill each segment in token order, then slot order.
    let x = hidden.to_f64_vec();
    let mut permuted = vec![0f64; rows * h_count];
    let mut row_to_token = vec![-1i32; rows];
    let mut token_slot_to_row = vec![0i32; t_count * k];
    let mut next_row = offsets[..e_count].to_vec();
    for t in 0..t_count {
        for j in 0..k {
            let e = ids[t * k + j] as usize;
            let r = next_row[e];
            next_row[e] += 1;
            permuted[r * h_count..(r + 1) * h_count].copy_from_slice(&x[t * h_count..(t + 1) * h_count]);
            row_to_token[r] = t as i32;
            token_slot_to_row[t * k + j] = r as i32;
        }
    }
    let offsets: Vec<i32> = offsets.iter().map(|&o| o as i32).collect();
    Ok(PermuteOut {
        // NOTE: widening to f64 and rounding back is exact, so the rows are bit copies.
        permuted: HostTensor::from_f64(p.dtype, &[rows, h_count], &permuted),
        offsets: HostTensor::from_i32(&[e_count + 1], &offsets),
        row_to_token: HostTensor::from_i32(&[rows], &row_to_token),
        token_slot_to_row: HostTensor::from_i32(&[t_count, k], &token_slot_to_row),
    })
}

/// Weighted combine; see [`CombineProblem`]:
/// `out[t] = add[t] + Σ_j weights[t, j] · y[token_slot_to_row[t, j]]`, summed in f64 and rounded
/// once.
///
/// `y [R, H]`, `weights [T, k] f32`, `token_slot_to_row [T, k] i32`, optional `add [T, H]` →
/// `out [T, H]`.
///
/// # Errors
/// [`moekit_ops::Error::Shape`] / [`moekit_ops::Error::DType`] / [`moekit_ops::Error::Invalid`]
/// for inputs that do not match; [`moekit_ops::Error::IndexOutOfRange`] for a row outside
/// `0..R`.
pub fn unpermute_combine(
    p: &Validated<CombineProblem>,
    y: &HostTensor,
    weights: &HostTensor,
    token_slot_to_row: &HostTensor,
    add: Option<&HostTensor>,
) -> Result<HostTensor> {
    const OP: &str = "unpermute_combine";
    let (t_count, h_count, k, rows) = (p.tokens, p.hidden, p.k, p.rows);
    expect(OP, "y", y, p.dtype, &[rows, h_count])?;
    expect(OP, "weights", weights, DType::F32, &[t_count, k])?;
    expect(OP, "token_slot_to_row", token_slot_to_row, DType::I32, &[t_count, k])?;
    let tsr = token_slot_to_row.as_i32()?;
    check::in_range(OP, "token_slot_to_row", tsr, 0, rows as i64)?;
    let mut out = match (p.add, add) {
        (true, Some(a)) => {
            expect(OP, "add", a, p.dtype, &[t_count, h_count])?;
            a.to_f64_vec()
        }
        (false, None) => vec![0f64; t_count * h_count],
        _ => return Err(moekit_ops::Error::invalid(OP, "`add` buffer present/absent against problem.add")),
    };

    let (y, w) = (y.to_f64_vec(), weights.to_f64_vec());
    for t in 0..t_count {
        for j in 0..k {
            let r = tsr[t * k + j] as usize;
            for h in 0..h_count {
                out[t * h_count + h] += w[t * k + j] * y[r * h_count + h];
            }
        }
    }
    Ok(HostTensor::from_f64(p.dtype, &[t_count, h_count], &out))
}
