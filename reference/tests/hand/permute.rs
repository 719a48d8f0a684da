//! Dispatch and combine by hand.
//!
//! Three tokens, k = 2, three experts: ids t0 = [2, 0], t1 = [0, 2], t2 = [2, 1], so expert 0
//! gets (t0,1), (t1,0); expert 1 gets (t2,1); expert 2 gets (t0,0), (t1,1), (t2,0).

use crate::{assert_close, f32s};
use moekit_ops::{CombineProblem, DType, HostTensor, PermuteProblem, TensorMeta};
use moekit_reference::{permute, unpermute_combine, PermuteOut};

const H0: [f64; 2] = [1.0, 1.5];
const H1: [f64; 2] = [2.0, 2.5];
const H2: [f64; 2] = [3.0, 3.5];
const Z: [f64; 2] = [0.0, 0.0];

fn run(align: usize) -> PermuteOut {
    let p = PermuteProblem { tokens: 3, hidden: 2, experts: 3, k: 2, align, dtype: DType::F32 };
    let hidden = f32s(&[3, 2], &[H0, H1, H2].concat());
    let ids = HostTensor::from_i32(&[3, 2], &[2, 0, 0, 2, 2, 1]);
    permute(&p.validate().unwrap(), &hidden, &ids).unwrap()
}

#[test]
fn permute_without_alignment() {
    let out = run(1);
    assert_eq!(out.offsets.as_i32().unwrap(), &[0, 2, 3, 6]);
    assert_eq!(out.row_to_token.as_i32().unwrap(), &[0, 1, 2, 0, 1, 2]);
    assert_eq!(out.token_slot_to_row.as_i32().unwrap(), &[3, 0, 1, 4, 5, 2]);
    assert_eq!(out.permuted.shape(), &[6, 2]);
    assert_close(&out.permuted, &[H0, H1, H2, H0, H1, H2].concat(), 0.0);
}

#[test]
fn permute_with_alignment_four() {
    // Segments of 2, 1, 3 rows padded to 4 each; R = 6 + 3·3 = 15, rows 12..15 trailing.
    let out = run(4);
    assert_eq!(out.offsets.as_i32().unwrap(), &[0, 4, 8, 12]);
    assert_eq!(out.row_to_token.as_i32().unwrap(), &[0, 1, -1, -1, 2, -1, -1, -1, 0, 1, 2, -1, -1, -1, -1]);
    assert_eq!(out.token_slot_to_row.as_i32().unwrap(), &[8, 0, 1, 9, 10, 4]);
    let rows = [H0, H1, Z, Z, H2, Z, Z, Z, H0, H1, H2, Z, Z, Z, Z];
    assert_close(&out.permuted, &rows.concat(), 0.0);
}

#[test]
fn permuted_rows_are_exact_copies_in_bf16() {
    // 1 + 2^-7 is a bf16 value; copying must not move it.
    let p = PermuteProblem { tokens: 1, hidden: 1, experts: 2, k: 1, align: 1, dtype: DType::BF16 };
    let hidden = HostTensor::from_f64(DType::BF16, &[1, 1], &[1.0078125]);
    let ids = HostTensor::from_i32(&[1, 1], &[1]);
    let out = permute(&p.validate().unwrap(), &hidden, &ids).unwrap();
    assert_eq!(out.permuted, hidden);
    assert_eq!(out.offsets.as_i32().unwrap(), &[0, 0, 1]);
}

fn combine(add: bool) -> HostTensor {
    // y rows r0 = [1, 2], r1 = [3, 4], r2 = [5, 6]; t0 takes rows [2, 0] with weights
    // [0.5, 0.25], t1 takes rows [1, 0] with weights [1, -1].
    let p = CombineProblem { tokens: 2, hidden: 2, k: 2, rows: 3, add, dtype: DType::F32 };
    let y = f32s(&[3, 2], &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
    let weights = f32s(&[2, 2], &[0.5, 0.25, 1.0, -1.0]);
    let tsr = HostTensor::from_i32(&[2, 2], &[2, 0, 1, 0]);
    let extra = f32s(&[2, 2], &[10.0, 20.0, 0.5, 0.5]);
    let extra = if add { Some(&extra) } else { None };
    unpermute_combine(&p.validate().unwrap(), &y, &weights, &tsr, extra).unwrap()
}

#[test]
fn combine_weighted_sum() {
    // t0 = 0.5·[5, 6] + 0.25·[1, 2] = [2.75, 3.5]; t1 = [3, 4] - [1, 2] = [2, 2].
    assert_close(&combine(false), &[2.75, 3.5, 2.0, 2.0], 0.0);
}

#[test]
fn combine_with_add() {
    assert_close(&combine(true), &[12.75, 23.5, 2.5, 2.5], 0.0);
}
