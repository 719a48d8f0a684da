//! Bad content in index data and logits gets a typed error.

use crate::f32s;
use moekit_ops::{
    CombineProblem, DType, EmbeddingProblem, Error, GemmLayout, GroupedGemmProblem, HostTensor, PermuteProblem,
    RouteProblem,
};
use moekit_reference::{embedding, grouped_gemm, permute, route, unpermute_combine};

#[test]
fn nan_logit_is_non_finite() {
    let p = RouteProblem::new(2, 3, 1, DType::F32).validate().unwrap();
    let logits = f32s(&[2, 3], &[0.0, 1.0, 2.0, 0.0, f64::NAN, 1.0]);
    let err = route(&p, &logits, None, None).unwrap_err();
    assert_eq!(err, Error::NonFinite { op: "route", what: "logits", index: 4 });
}

#[test]
fn non_finite_fused_gate_is_reported_as_the_logit_it_reaches() {
    // T = 2, H = 2, E = 3: NaN in hidden row 1 spoils logits 3, 4, 5; +inf in gate column 2
    // (times a hidden value of either sign) spoils logits 2 and 5. The lowest is 2.
    let mut p = RouteProblem::new(2, 3, 1, DType::F32);
    p.hidden = Some(2);
    let p = p.validate().unwrap();
    let hidden = f32s(&[2, 2], &[1.0, -0.5, f64::NAN, 1.0]);
    let gate = f32s(&[2, 3], &[0.5, 0.25, f64::INFINITY, -0.5, 1.0, 0.0]);
    assert_eq!(
        route(&p, &hidden, Some(&gate), None).unwrap_err(),
        Error::NonFinite { op: "route", what: "logits", index: 2 }
    );
    let gate = f32s(&[2, 3], &[0.5, 0.25, 1.0, -0.5, 1.0, 0.0]);
    assert_eq!(
        route(&p, &hidden, Some(&gate), None).unwrap_err(),
        Error::NonFinite { op: "route", what: "logits", index: 3 }
    );
}

#[test]
fn non_finite_bias_is_reported_unless_there_is_no_token() {
    let bias = f32s(&[3], &[0.0, f64::NEG_INFINITY, f64::NAN]);
    let mut p = RouteProblem::new(1, 3, 1, DType::F32);
    p.use_bias = true;
    let v = p.clone().validate().unwrap();
    let err = route(&v, &f32s(&[1, 3], &[0.0, 1.0, 2.0]), None, Some(&bias)).unwrap_err();
    assert_eq!(err, Error::NonFinite { op: "route", what: "bias", index: 1 });
    // A bad logit is reported before a bad bias.
    let err = route(&v, &f32s(&[1, 3], &[0.0, 1.0, f64::NAN]), None, Some(&bias)).unwrap_err();
    assert_eq!(err, Error::NonFinite { op: "route", what: "logits", index: 2 });
    // T = 0: nothing is read, nothing is reported; counts and load are zeros.
    p.tokens = 0;
    let out = route(&p.validate().unwrap(), &f32s(&[0, 3], &[]), None, Some(&bias)).unwrap();
    assert_eq!(out.counts.as_i32().unwrap(), &[0, 0, 0]);
    assert_eq!(out.load.to_f32_vec(), vec![0.0; 3]);
}

#[test]
fn permute_id_out_of_range() {
    let p = PermuteProblem { tokens: 2, hidden: 1, experts: 3, k: 1, align: 1, dtype: DType::F32 };
    let err = permute(&p.validate().unwrap(), &f32s(&[2, 1], &[1.0, 2.0]), &HostTensor::from_i32(&[2, 1], &[0, 3]))
        .unwrap_err();
    assert_eq!(err, Error::IndexOutOfRange { op: "permute", what: "ids", index: 1, value: 3, lo: 0, hi: 3 });
}

#[test]
fn combine_row_out_of_range() {
    let p = CombineProblem { tokens: 1, hidden: 1, k: 1, rows: 2, add: false, dtype: DType::F32 };
    let tsr = HostTensor::from_i32(&[1, 1], &[-1]);
    let err =
        unpermute_combine(&p.validate().unwrap(), &f32s(&[2, 1], &[1.0, 2.0]), &f32s(&[1, 1], &[1.0]), &tsr, None)
            .unwrap_err();
    assert!(matches!(err, Error::IndexOutOfRange { what: "token_slot_to_row", value: -1, .. }), "{err:?}");
}

fn gemm_inputs() -> (HostTensor, HostTensor) {
    (f32s(&[3, 1], &[1.0, 2.0, 3.0]), f32s(&[2, 1, 1], &[1.0, 1.0]))
}

#[test]
fn bad_offsets() {
    let p = GroupedGemmProblem::contiguous(3, 2, 1, 1, DType::F32).validate().unwrap();
    let (x, w) = gemm_inputs();
    for bad in [[1, 2, 3], [0, 2, 1], [0, 1, 4]] {
        let err = grouped_gemm(&p, &x, &w, &HostTensor::from_i32(&[3], &bad), None, None).unwrap_err();
        assert!(matches!(err, Error::BadOffsets { what: "offsets", .. }), "{bad:?}: {err:?}");
    }
}

#[test]
fn masked_count_past_capacity() {
    let p = GroupedGemmProblem {
        layout: GemmLayout::Masked { capacity: 1 },
        ..GroupedGemmProblem::contiguous(0, 2, 1, 1, DType::F32)
    };
    let x = f32s(&[2, 1, 1], &[1.0, 2.0]);
    let w = f32s(&[2, 1, 1], &[1.0, 1.0]);
    let err =
        grouped_gemm(&p.validate().unwrap(), &x, &w, &HostTensor::from_i32(&[2], &[1, 2]), None, None).unwrap_err();
    assert_eq!(err, Error::IndexOutOfRange { op: "grouped_gemm", what: "counts", index: 1, value: 2, lo: 0, hi: 2 });
}

#[test]
fn gather_row_out_of_range() {
    let mut p = GroupedGemmProblem::contiguous(3, 2, 1, 1, DType::F32);
    p.gather_tokens = Some(3);
    let (x, w) = gemm_inputs();
    let offsets = HostTensor::from_i32(&[3], &[0, 1, 3]);
    let map = HostTensor::from_i32(&[3], &[0, 3, -1]);
    let err = grouped_gemm(&p.validate().unwrap(), &x, &w, &offsets, Some(&map), None).unwrap_err();
    assert_eq!(
        err,
        Error::IndexOutOfRange { op: "grouped_gemm", what: "row_to_token", index: 1, value: 3, lo: -1, hi: 3 }
    );
}

#[test]
fn embedding_id_out_of_range() {
    let p = EmbeddingProblem { tokens: 1, vocab: 2, hidden: 1, dtype: DType::F32 };
    let err =
        embedding(&p.validate().unwrap(), &f32s(&[2, 1], &[1.0, 2.0]), &HostTensor::from_i32(&[1], &[2])).unwrap_err();
    assert!(matches!(err, Error::IndexOutOfRange { op: "embedding", what: "ids", value: 2, .. }), "{err:?}");
}

#[test]
fn wrong_input_shape_is_a_shape_error() {
    let p = RouteProblem::new(2, 3, 1, DType::F32).validate().unwrap();
    let err = route(&p, &f32s(&[3, 2], &[0.0; 6]), None, None).unwrap_err();
    assert!(matches!(err, Error::Shape { what: "logits", .. }), "{err:?}");
}

#[test]
fn glue_sizes_past_i32_are_invalid_naming_the_size() {
    use moekit_ops::{GemmProblem, RmsNormProblem, RotaryPositions, RotaryProblem, SwigluProblem};
    let big = i32::MAX as usize + 1;
    let msg = |e: Error| match e {
        Error::Invalid { op, msg } => format!("{op}: {msg}"),
        other => panic!("expected Invalid, got {other:?}"),
    };
    let rms = RmsNormProblem { rows: big, hidden: 8, eps: 1e-6, residual: false, dtype: DType::F32 };
    assert_eq!(msg(rms.validate().unwrap_err()), format!("rms_norm: rows = {big} exceeds i32::MAX"));
    let rot = RotaryProblem {
        tokens: 4,
        heads: big,
        head_dim: 8,
        theta: 1e4,
        positions: RotaryPositions::OneD,
        dtype: DType::F32,
    };
    assert_eq!(msg(rot.validate().unwrap_err()), format!("rotary: heads = {big} exceeds i32::MAX"));
    let sw = SwigluProblem { rows: 2, inter: big / 2 + 1, dtype: DType::F32 };
    assert!(msg(sw.validate().unwrap_err()).starts_with("swiglu: 2·inter = "));
    let emb = EmbeddingProblem { tokens: big, vocab: 4, hidden: 4, dtype: DType::F32 };
    assert_eq!(msg(emb.validate().unwrap_err()), format!("embedding: tokens = {big} exceeds i32::MAX"));
    let g = GemmProblem { m: 1, k: big, n: 1, b_transposed: false, dtype: DType::F32 };
    assert_eq!(msg(g.validate().unwrap_err()), format!("gemm: k = {big} exceeds i32::MAX"));
    // At the limit all are fine.
    let ok = GemmProblem { m: 1, k: i32::MAX as usize, n: 1, b_transposed: false, dtype: DType::F32 };
    assert!(ok.validate().is_ok());
}

#[test]
fn op_sizes_past_i32_are_invalid_naming_the_size() {
    let big = i32::MAX as usize + 1;
    let msg = |e: Error| match e {
        Error::Invalid { op, msg } => format!("{op}: {msg}"),
        other => panic!("expected Invalid, got {other:?}"),
    };
    let mut r = RouteProblem::new(4, 8, 2, DType::F32);
    r.hidden = Some(big);
    assert_eq!(msg(r.validate().unwrap_err()), format!("route: hidden = {big} exceeds i32::MAX"));
    let r = RouteProblem::new(1 << 28, 16, 2, DType::F32);
    assert_eq!(msg(r.validate().unwrap_err()), format!("route: tokens·experts = {} exceeds i32::MAX", 1usize << 32));
    let p = PermuteProblem { tokens: 4, hidden: big, experts: 2, k: 1, align: 1, dtype: DType::F32 };
    assert_eq!(msg(p.validate().unwrap_err()), format!("permute: hidden = {big} exceeds i32::MAX"));
    let c = CombineProblem { tokens: 1 << 30, k: 4, hidden: 8, rows: 64, add: false, dtype: DType::F32 };
    assert_eq!(
        msg(c.validate().unwrap_err()),
        format!("unpermute_combine: tokens·k = {} exceeds i32::MAX", 1usize << 32)
    );
    let mut g = GroupedGemmProblem::contiguous(8, 2, 16, big, DType::F32);
    assert_eq!(msg(g.validate().unwrap_err()), format!("grouped_gemm: N = {big} exceeds i32::MAX"));
    g.n_dim = 16;
    g.k_dim = big;
    assert_eq!(msg(g.validate().unwrap_err()), format!("grouped_gemm: K = {big} exceeds i32::MAX"));
}
