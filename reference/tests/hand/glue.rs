//! Model glue by hand.

use crate::{assert_close, f32s};
use moekit_ops::{
    DType, EmbeddingProblem, GemmProblem, HostTensor, RmsNormProblem, RotaryPositions, RotaryProblem, SwigluProblem,
};
use moekit_reference::{embedding, gemm, rms_norm, rotary, swiglu};

#[test]
fn rms_norm_values() {
    // x = [3, 4]: mean(x²) = 12.5, rms ≈ 3.5355339; weight [2, 0.5].
    let p = RmsNormProblem { rows: 1, hidden: 2, eps: 1e-6, residual: false, dtype: DType::F32 };
    let out = rms_norm(&p.validate().unwrap(), &f32s(&[1, 2], &[3.0, 4.0]), &f32s(&[2], &[2.0, 0.5]), None).unwrap();
    assert_close(&out.y, &[1.6970563, 0.5656854], 1e-6);
    assert!(out.residual_out.is_none());
}

#[test]
fn rms_norm_with_residual() {
    // x + residual = [1, 2] + [2, 2] = [3, 4]: the same row as above.
    let p = RmsNormProblem { rows: 1, hidden: 2, eps: 1e-6, residual: true, dtype: DType::F32 };
    let (x, r, w) = (f32s(&[1, 2], &[1.0, 2.0]), f32s(&[1, 2], &[2.0, 2.0]), f32s(&[2], &[2.0, 0.5]));
    let out = rms_norm(&p.validate().unwrap(), &x, &w, Some(&r)).unwrap();
    assert_close(&out.y, &[1.6970563, 0.5656854], 1e-6);
    assert_close(&out.residual_out.unwrap(), &[3.0, 4.0], 0.0);
}

#[test]
fn rms_norm_residual_sum_is_rounded_to_the_dtype() {
    // f16: 1 + 2^-12 is below half an ulp of 1 (2^-11), so the written sum is exactly 1.
    let p = RmsNormProblem { rows: 1, hidden: 1, eps: 1e-6, residual: true, dtype: DType::F16 };
    let x = HostTensor::from_f64(DType::F16, &[1, 1], &[1.0]);
    let r = HostTensor::from_f64(DType::F16, &[1, 1], &[2f64.powi(-12)]);
    let w = HostTensor::from_f64(DType::F16, &[1], &[1.0]);
    let out = rms_norm(&p.validate().unwrap(), &x, &w, Some(&r)).unwrap();
    assert_eq!(out.residual_out.unwrap().to_f64_vec(), vec![1.0]);
}

fn rotary_problem(positions: RotaryPositions, theta: f32) -> RotaryProblem {
    RotaryProblem { tokens: 1, heads: 1, head_dim: 4, theta, positions, dtype: DType::F32 }
}

#[test]
fn rotary_at_position_zero_is_the_identity() {
    let p = rotary_problem(RotaryPositions::OneD, 10000.0);
    let x = f32s(&[1, 1, 4], &[1.0, 2.0, 3.0, 4.0]);
    let out = rotary(&p.validate().unwrap(), &x, &HostTensor::from_i32(&[1], &[0])).unwrap();
    assert_close(&out, &[1.0, 2.0, 3.0, 4.0], 0.0);
}

#[test]
fn rotary_quarter_turn() {
    // D = 4, theta = 4/π²: pair 0 has inv_freq 1 (angle 1 rad at position 1), pair 1 has
    // inv_freq theta^(-1/2) = π/2 (a quarter turn). Pairs are (x0, x2) and (x1, x3).
    // Pair 1: (2, 4) → (2·0 - 4·1, 4·0 + 2·1) = (-4, 2).
    // Pair 0: (1, 3) → (cos 1 - 3 sin 1, 3 cos 1 + sin 1) = (-1.9841106, 2.4623779).
    let theta = (4.0 / (std::f64::consts::PI * std::f64::consts::PI)) as f32;
    let p = rotary_problem(RotaryPositions::OneD, theta);
    let x = f32s(&[1, 1, 4], &[1.0, 2.0, 3.0, 4.0]);
    let out = rotary(&p.validate().unwrap(), &x, &HostTensor::from_i32(&[1], &[1])).unwrap();
    assert_close(&out, &[-1.9841106, -4.0, 2.4623779, 2.0], 1e-6);
}

#[test]
fn rotary_3d_takes_each_pair_from_its_axis() {
    // Sections [1, 0, 1]: pair 0 uses t = 0 (no turn), pair 1 uses w = 1 (a quarter turn);
    // h = 5 drives no pair.
    let theta = (4.0 / (std::f64::consts::PI * std::f64::consts::PI)) as f32;
    let p = rotary_problem(RotaryPositions::ThreeD { sections: [1, 0, 1] }, theta);
    let x = f32s(&[1, 1, 4], &[1.0, 2.0, 3.0, 4.0]);
    let out = rotary(&p.validate().unwrap(), &x, &HostTensor::from_i32(&[3, 1], &[0, 5, 1])).unwrap();
    assert_close(&out, &[1.0, -4.0, 3.0, 2.0], 1e-6);
}

#[test]
fn swiglu_values() {
    // silu(1)·2 = 2·0.7310585786 = 1.4621171573; silu(-2)·0.5 = -2·0.1192029220·0.5.
    let p = SwigluProblem { rows: 2, inter: 1, dtype: DType::F32 };
    let y = swiglu(&p.validate().unwrap(), &f32s(&[2, 2], &[1.0, 2.0, -2.0, 0.5])).unwrap();
    assert_close(&y, &[1.4621171573, -0.1192029220], 1e-7);
}

#[test]
fn embedding_gathers_rows() {
    let p = EmbeddingProblem { tokens: 3, vocab: 3, hidden: 2, dtype: DType::F32 };
    let table = f32s(&[3, 2], &[0.0, 0.5, 1.0, 1.5, 2.0, 2.5]);
    let out = embedding(&p.validate().unwrap(), &table, &HostTensor::from_i32(&[3], &[2, 0, 2])).unwrap();
    assert_close(&out, &[2.0, 2.5, 0.0, 0.5, 2.0, 2.5], 0.0);
}

#[test]
fn gemm_plain_and_transposed() {
    // a = [[1, 2, 3], [4, 5, 6]], b = [[1, 0], [0, 1], [1, 1]] → [[4, 5], [10, 11]].
    let a = f32s(&[2, 3], &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
    let b = f32s(&[3, 2], &[1.0, 0.0, 0.0, 1.0, 1.0, 1.0]);
    let bt = f32s(&[2, 3], &[1.0, 0.0, 1.0, 0.0, 1.0, 1.0]);
    let mut p = GemmProblem { m: 2, k: 3, n: 2, b_transposed: false, dtype: DType::F32 };
    assert_close(&gemm(&p.validate().unwrap(), &a, &b).unwrap(), &[4.0, 5.0, 10.0, 11.0], 0.0);
    p.b_transposed = true;
    assert_close(&gemm(&p.validate().unwrap(), &a, &bt).unwrap(), &[4.0, 5.0, 10.0, 11.0], 0.0);
}
