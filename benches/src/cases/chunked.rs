//! The reference's grouped GEMM over a few experts at a time, so checking a GPU-sized
//! problem never widens a whole `[E, K, N]` weight to f64 at once (DeepSeek-V3's up weight
//! would take 60 GB).

use crate::data::{concat_rows, offsets, select_rows};
use moekit_ops::{api, GemmLayout, GroupedGemmIo, GroupedGemmProblem, HostTensor, Result};
use moekit_reference::ReferenceBackend;

/// Weight elements the reference may widen to f64 in one call (512 MB).
pub(crate) const WEIGHT_BUDGET: usize = 1 << 26;

/// `y [n, N_out]` of rows `x [n, K]`, row `r` owned by expert `owners[r]` (rows of one expert
/// adjacent),
/// against `w [E, K, N]`, with the epilogue of `template` (its layout and expert count are
/// replaced), computed by the reference in chunks of at most `budget` weight elements (one
/// expert at least).
///
/// # Errors
/// The reference's errors.
pub(crate) fn reference_grouped(
    template: &GroupedGemmProblem,
    x: &HostTensor,
    owners: &[usize],
    w: &HostTensor,
    budget: usize,
) -> Result<HostTensor> {
    // Runs of rows with one owner: (expert, rows).
    let mut runs: Vec<(usize, usize)> = Vec::new();
    for &e in owners {
        match runs.last_mut() {
            Some((last, n)) if *last == e => *n += 1,
            _ => runs.push((e, 1)),
        }
    }
    let experts_per_call = (budget / (template.k_dim * template.n_dim).max(1)).max(1);
    let mut parts = Vec::new();
    let mut first_row = 0;
    for chunk in runs.chunks(experts_per_call) {
        let experts: Vec<usize> = chunk.iter().map(|r| r.0).collect();
        let counts: Vec<usize> = chunk.iter().map(|r| r.1).collect();
        let n: usize = counts.iter().sum();
        let rows: Vec<usize> = (first_row..first_row + n).collect();
        first_row += n;
        let mut sub = template.clone();
        sub.layout = GemmLayout::Contiguous { rows: n };
        sub.experts = experts.len();
        let (xs, ws) = (select_rows(x, &rows)?, select_rows(w, &experts)?);
        let offs = offsets(&counts);
        let group = HostTensor::from_i32(&[offs.len()], &offs);
        let mut y = HostTensor::zeros(sub.dtype, &sub.y_shape());
        api::grouped_gemm(
            &ReferenceBackend,
            &sub,
            GroupedGemmIo { x: &xs, w: &ws, group: &group, row_to_token: None, row_scale: None, y: &mut y },
        )?;
        parts.push(y);
    }
    if parts.is_empty() {
        return Ok(HostTensor::zeros(template.dtype, &[0, template.n_out()]));
    }
    concat_rows(&parts)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::{uniform, zipf_ids};
    use moekit_ops::{DType, TensorMeta};

    #[test]
    fn chunks_of_one_expert_match_one_call() {
        let (rows, e, k, n) = (40, 6, 16, 8);
        let mut p = GroupedGemmProblem::contiguous(rows, e, k, n, DType::BF16);
        p.swiglu = true;
        let mut owners: Vec<usize> = zipf_ids(rows, e, 1, 0.5, 3).iter().map(|&x| x as usize).collect();
        owners.sort_unstable();
        let x = uniform(DType::BF16, &[rows, k], 1.0, 1).unwrap();
        let w = uniform(DType::BF16, &[e, k, n], 0.3, 2).unwrap();
        let whole = reference_grouped(&p, &x, &owners, &w, usize::MAX).unwrap();
        let chunked = reference_grouped(&p, &x, &owners, &w, k * n).unwrap();
        assert_eq!(whole.shape(), &[rows, n / 2]);
        assert_eq!(whole, chunked);
    }
}
