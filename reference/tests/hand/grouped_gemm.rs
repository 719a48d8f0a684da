//! Grouped GEMM by hand: two experts, K = N = 2.
//!
//! W0 = [[1, 2], [3, 4]], W1 = [[0, 1], [1, 0]] (as `[K, N]`). Rows: r0 = [1, 1] (expert 0)
//! → [4, 6]; r1 = [2, 3] (expert 1) → [3, 2]; r2 = [5, -1] (expert 1) → [-1, 5]; r3 = [7, 7]
//! lies past `offsets[E] = 3` → zero.

use crate::{assert_close, f32s};
use moekit_ops::{DType, GemmLayout, GroupedGemmProblem, HostTensor, TensorMeta, WeightLayout};
use moekit_reference::grouped_gemm;

const W_KN: [f64; 8] = [1.0, 2.0, 3.0, 4.0, 0.0, 1.0, 1.0, 0.0];
const W_NK: [f64; 8] = [1.0, 3.0, 2.0, 4.0, 0.0, 1.0, 1.0, 0.0];
const X: [f64; 8] = [1.0, 1.0, 2.0, 3.0, 5.0, -1.0, 7.0, 7.0];

fn silu(g: f64) -> f64 {
    g / (1.0 + (-g).exp())
}

fn contiguous(n_dim: usize, layout: WeightLayout) -> GroupedGemmProblem {
    let mut p = GroupedGemmProblem::contiguous(4, 2, 2, n_dim, DType::F32);
    p.weight_layout = layout;
    p
}

fn offsets() -> HostTensor {
    HostTensor::from_i32(&[3], &[0, 1, 3])
}

#[test]
fn contiguous_kn_and_nk_agree_with_the_hand_product() {
    let expected = [4.0, 6.0, 3.0, 2.0, -1.0, 5.0, 0.0, 0.0];
    for (layout, w) in [(WeightLayout::KN, W_KN), (WeightLayout::NK, W_NK)] {
        let p = contiguous(2, layout).validate().unwrap();
        let y = grouped_gemm(&p, &f32s(&[4, 2], &X), &f32s(&[2, 2, 2], &w), &offsets(), None, None).unwrap();
        assert_close(&y, &expected, 0.0);
    }
}

#[test]
fn swiglu_then_row_scale() {
    // N = 2 → I = 1: y = silu(acc[0]) · acc[1] · scale.
    let mut p = contiguous(2, WeightLayout::KN);
    p.swiglu = true;
    p.row_scale = true;
    let scale = f32s(&[4], &[2.0, 0.5, 1.0, 3.0]);
    let y = grouped_gemm(
        &p.validate().unwrap(),
        &f32s(&[4, 2], &X),
        &f32s(&[2, 2, 2], &W_KN),
        &offsets(),
        None,
        Some(&scale),
    )
    .unwrap();
    assert_eq!(y.shape(), &[4, 1]);
    // silu(4) = 3.928055160151634, silu(3) = 2.857722629260867, silu(-1) = -0.2689414213699951.
    assert!((silu(4.0) - 3.928055160151634).abs() < 1e-12);
    let expected = [2.0 * 3.928055160151634 * 6.0, 0.5 * 2.857722629260867 * 2.0, -0.2689414213699951 * 5.0, 0.0];
    assert_close(&y, &expected, 1e-5);
}

#[test]
fn gather_prologue_reads_tokens() {
    // x [T = 2, K]: t0 = [1, 1], t1 = [2, 3]; row_to_token = [1, 0, -1, 1]:
    // r0 = t1 · W0 = [11, 16]; r1 = t0 · W1 = [1, 1]; r2 reads a zero row; r3 is past offsets[E].
    let mut p = contiguous(2, WeightLayout::KN);
    p.gather_tokens = Some(2);
    let map = HostTensor::from_i32(&[4], &[1, 0, -1, 1]);
    let x = f32s(&[2, 2], &[1.0, 1.0, 2.0, 3.0]);
    let y = grouped_gemm(&p.validate().unwrap(), &x, &f32s(&[2, 2, 2], &W_KN), &offsets(), Some(&map), None).unwrap();
    assert_close(&y, &[11.0, 16.0, 1.0, 1.0, 0.0, 0.0, 0.0, 0.0], 0.0);
}

#[test]
fn masked_layout_zeroes_rows_past_the_count() {
    // x [E = 2, C = 2, K]: expert 0 rows [1, 1], [9, 9]; expert 1 rows [2, 3], [5, -1];
    // counts [1, 2] → expert 0's second row is zero.
    let p = GroupedGemmProblem {
        layout: GemmLayout::Masked { capacity: 2 },
        ..GroupedGemmProblem::contiguous(0, 2, 2, 2, DType::F32)
    };
    let x = f32s(&[2, 2, 2], &[1.0, 1.0, 9.0, 9.0, 2.0, 3.0, 5.0, -1.0]);
    let counts = HostTensor::from_i32(&[2], &[1, 2]);
    let y = grouped_gemm(&p.validate().unwrap(), &x, &f32s(&[2, 2, 2], &W_KN), &counts, None, None).unwrap();
    assert_eq!(y.shape(), &[2, 2, 2]);
    assert_close(&y, &[4.0, 6.0, 0.0, 0.0, 3.0, 2.0, -1.0, 5.0], 0.0);
}

#[test]
fn bf16_output_is_rounded_once() {
    // x = [1, 3·2^-10, 3·2^-10], W = ones: the exact sum 1 + 1.5·2^-8 rounds to bf16
    // 1 + 2^-7 = 1.0078125. Rounding after each addition would give 1 (1 + 3·2^-10 → 1, twice).
    let p = GroupedGemmProblem::contiguous(1, 1, 3, 1, DType::BF16);
    let x = HostTensor::from_f64(DType::BF16, &[1, 3], &[1.0, 0.0029296875, 0.0029296875]);
    let w = HostTensor::from_f64(DType::BF16, &[1, 3, 1], &[1.0, 1.0, 1.0]);
    let y = grouped_gemm(&p.validate().unwrap(), &x, &w, &HostTensor::from_i32(&[2], &[0, 1]), None, None).unwrap();
    assert_eq!(y.to_f64_vec(), vec![1.0078125]);
}
