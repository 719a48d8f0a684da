//! Dispatch to expert-contiguous rows and the weighted combine back.

use crate::convert::{dispatch_float, elems, elems_mut, ints, ints_mut, Elem};
use crate::CpuBackend;
use moekit_ops::{
    check, CombineIo, CombineProblem, HostTensor, PermuteIo, PermuteOps, PermuteProblem, Result, Validated,
};
use rayon::prelude::*;

const OP_PERMUTE: &str = "permute";
const OP_COMBINE: &str = "unpermute_combine";

/// Rows per rayon task when copying rows.
const ROWS_PER_TASK: usize = 16;

impl PermuteOps for CpuBackend {
    fn permute(&self, p: &Validated<PermuteProblem>, io: PermuteIo<'_, HostTensor>) -> Result<()> {
        let (e_count, k) = (p.experts, p.k);
        let ids = ints(OP_PERMUTE, "ids", io.ids)?;
        check::in_range(OP_PERMUTE, "ids", ids, 0, e_count as i64)?;

        let mut counts = vec![0usize; e_count];
        ids.iter().for_each(|&e| counts[e as usize] += 1);
        let offsets = ints_mut(OP_PERMUTE, "offsets", io.offsets)?;
        offsets[0] = 0;
        for e in 0..e_count {
            offsets[e + 1] = offsets[e] + counts[e].next_multiple_of(p.align) as i32;
        }

        let row_to_token = ints_mut(OP_PERMUTE, "row_to_token", io.row_to_token)?;
        row_to_token.fill(-1);
        let slot_rows = ints_mut(OP_PERMUTE, "token_slot_to_row", io.token_slot_to_row)?;
        let mut cursor: Vec<i32> = offsets[..e_count].to_vec();
        for (slot, &e) in ids.iter().enumerate() {
            let row = cursor[e as usize];
            cursor[e as usize] += 1;
            slot_rows[slot] = row;
            row_to_token[row as usize] = (slot / k) as i32;
        }

        dispatch_float!(OP_PERMUTE, p.dtype, T => {
            let hidden = elems::<T>(OP_PERMUTE, "hidden", io.hidden)?;
            let out = elems_mut::<T>(OP_PERMUTE, "permuted", io.permuted)?;
            gather_rows(hidden, row_to_token, out, p.hidden);
            Ok(())
        })
    }

    fn unpermute_combine(&self, p: &Validated<CombineProblem>, io: CombineIo<'_, HostTensor>) -> Result<()> {
        let slot_rows = ints(OP_COMBINE, "token_slot_to_row", io.token_slot_to_row)?;
        check::in_range(OP_COMBINE, "token_slot_to_row", slot_rows, 0, p.rows as i64)?;
        let weights = io.weights.as_f32()?;
        dispatch_float!(OP_COMBINE, p.dtype, T => {
            let y = elems::<T>(OP_COMBINE, "y", io.y)?;
            let add = io.add.map(|a| elems::<T>(OP_COMBINE, "add", a)).transpose()?;
            let out = elems_mut::<T>(OP_COMBINE, "out", io.out)?;
            combine(p, y, weights, slot_rows, add, out);
            Ok(())
        })
    }
}

/// `out[r] = src[row_to_token[r]]`, or zeros where `row_to_token[r] = -1`; rows `[.., h]`.
/// Every index is in `-1..src rows` (written by `permute` itself).
pub(crate) fn gather_rows<T: Elem + Default>(src: &[T], row_to_token: &[i32], out: &mut [T], h: usize) {
    out.par_chunks_mut(ROWS_PER_TASK * h).enumerate().for_each(|(task, rows)| {
        for (i, row) in rows.chunks_mut(h).enumerate() {
            match usize::try_from(row_to_token[task * ROWS_PER_TASK + i]) {
                Ok(t) => row.copy_from_slice(&src[t * h..(t + 1) * h]),
                Err(_) => row.fill(T::default()),
            }
        }
    });
}

/// `out[t] = add[t] + Σ_j w[t, j] · y[rows[t, j]]`, accumulated in f32, rounded once.
fn combine<T: Elem>(p: &CombineProblem, y: &[T], weights: &[f32], slot_rows: &[i32], add: Option<&[T]>, out: &mut [T]) {
    let (h, k) = (p.hidden, p.k);
    // NOTE: no rows, nothing to do; rayon may still run `init` (an `h`-sized scratch), and `h`
    // is unbounded when `T = 0`.
    if out.is_empty() {
        return;
    }
    out.par_chunks_mut(h).enumerate().for_each_init(
        || vec![0f32; h],
        |acc, (t, out_row)| {
            match add {
                Some(a) => acc.iter_mut().zip(&a[t * h..(t + 1) * h]).for_each(|(x, v)| *x = v.to_f32()),
                None => acc.fill(0.0),
            }
            for j in 0..k {
                let (w, r) = (weights[t * k + j], slot_rows[t * k + j] as usize);
                acc.iter_mut().zip(&y[r * h..(r + 1) * h]).for_each(|(x, v)| *x += w * v.to_f32());
            }
            out_row.iter_mut().zip(acc.iter()).for_each(|(o, &v)| *o = T::from_f32(v));
        },
    );
}
