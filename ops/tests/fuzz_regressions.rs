//! Inputs the cargo-fuzz targets (`fuzz/`) found to panic, abort or exhaust memory in
//! validation, kept as regression tests: each must now be refused (or accepted) with a typed
//! result, quickly, and without allocating in proportion to a size field.

use moekit_ops::{DType, Error, GroupLimit, RouteProblem};

/// `fuzz/route`: a group limit with `n_group` close to `E = i32::MAX` made validation build
/// a per-group table of `n_group` entries (16 GiB) and abort on the allocation.
#[test]
fn route_validation_does_not_allocate_per_group() {
    let e = i32::MAX as usize;
    let mut p = RouteProblem::new(1, e, 2, DType::F32);
    p.groups = Some(GroupLimit { n_group: e, topk_group: 1 });
    // One expert per group, one group kept: only one expert is reachable, so k = 2 is refused.
    let err = p.validate().unwrap_err();
    assert!(matches!(&err, Error::Invalid { op: "route", msg } if msg.contains("only 1 experts")), "{err}");
    p.k = 1;
    assert!(p.validate().is_ok());
    p.groups = Some(GroupLimit { n_group: e, topk_group: e });
    p.k = e;
    assert!(p.validate().is_ok(), "every group kept: all E experts reachable");
}

/// `fuzz/permute`: `max_rows()` computed `T·k + E·(m−1)` unchecked, so validating huge sizes
/// overflowed (a panic with overflow checks on) instead of answering `Invalid`.
#[test]
fn permute_huge_sizes_are_invalid_not_an_overflow() {
    use moekit_ops::PermuteProblem;
    for (tokens, k, experts, align) in
        [(usize::MAX, 2, 1, 1), (1, 1, usize::MAX, 3), (usize::MAX / 2 + 1, 2, 4, 2), (i32::MAX as usize, 1, 1, 2)]
    {
        let p = PermuteProblem { tokens, hidden: 1, experts, k, align, dtype: DType::F32 };
        assert!(p.max_rows() > i32::MAX as usize, "{p:?}: max_rows {}", p.max_rows());
        let err = p.validate().unwrap_err();
        assert!(matches!(err, Error::Invalid { op: "permute", .. }), "{p:?}: {err}");
    }
}

/// `fuzz/grouped_gemm`: the masked layout's `out_rows()` computed `E·C` unchecked, so
/// validating huge sizes overflowed instead of answering `Invalid`.
#[test]
fn grouped_gemm_huge_masked_sizes_are_invalid_not_an_overflow() {
    use moekit_ops::{GemmLayout, GroupedGemmProblem};
    let mut p = GroupedGemmProblem::contiguous(0, usize::MAX / 2, 4, 4, DType::F32);
    p.layout = GemmLayout::Masked { capacity: 3 };
    assert_eq!(p.out_rows(), usize::MAX);
    let err = p.validate().unwrap_err();
    assert!(matches!(err, Error::Invalid { op: "grouped_gemm", .. }), "{err}");
}

/// `fuzz/moe_layer`: the layer's up-projection width `2·I` was computed unchecked.
#[test]
fn moe_layer_huge_inter_is_invalid_not_an_overflow() {
    use moekit_ops::MoeLayerProblem;
    let mut route = RouteProblem::new(1, 4, 2, DType::F32);
    route.hidden = Some(8);
    for inter in [usize::MAX, usize::MAX / 2 + 1] {
        let p = MoeLayerProblem { route: route.clone(), inter, add: false };
        let err = p.validate().unwrap_err();
        assert!(matches!(err, Error::Invalid { op: "grouped_gemm", .. }), "inter {inter}: {err}");
    }
}

/// `fuzz/tensor`: `HostTensor::from_bytes` and `HostTensor::new` multiplied the shape out
/// unchecked, and `check_copy_rows` the width of a row: a shape whose element count
/// overflows panicked instead of answering an error.
#[test]
fn tensor_shapes_that_overflow_are_errors_not_panics() {
    use moekit_ops::{check_copy_rows, HostData, HostTensor};
    let huge = [usize::MAX / 2, 3, 1];
    let err = HostTensor::from_bytes(DType::F32, &huge, &[0u8; 8]).unwrap_err();
    assert!(matches!(err, Error::Shape { op: "from_bytes", .. }), "{err}");
    let err = HostTensor::from_bytes(DType::F16, &[usize::MAX / 2 + 1], &[]).unwrap_err();
    assert!(matches!(err, Error::Shape { op: "from_bytes", .. }), "{err}");
    let err = HostTensor::new(&huge, HostData::F32(vec![0.0; 3])).unwrap_err();
    assert!(matches!(err, Error::Shape { op: "host_tensor", .. }), "{err}");
    // No rows, but rows wider than usize counts: a refusal, in either role.
    let wide = HostTensor::new(&[0, usize::MAX, 2], HostData::F32(vec![])).unwrap();
    let dst = HostTensor::zeros(DType::F32, &[2, 3]);
    let err = check_copy_rows(&wide, 0, &dst, 0, 0).unwrap_err();
    assert!(matches!(err, Error::Invalid { op: "copy_rows", .. }), "{err}");
    let err = check_copy_rows(&dst, 0, &wide, 0, 0).unwrap_err();
    assert!(matches!(err, Error::Invalid { op: "copy_rows", .. }), "{err}");
}

/// `fuzz/attention`: a sliding window side near `usize::MAX` overflowed (`diag + right + 1`)
/// in `key_range` during validation, and sides past `i64::MAX` wrapped negative. A side wider
/// than every sequence now means "no limit on that side".
#[test]
fn attention_huge_window_sides_saturate() {
    use moekit_ops::{AttentionMask, AttentionProblem, Window};
    for (left, right) in
        [(0, usize::MAX), (usize::MAX, 0), (i64::MAX as usize, i64::MAX as usize), (usize::MAX, usize::MAX)]
    {
        let p = AttentionProblem {
            cu_seqlens_q: vec![0, 3],
            cu_seqlens_k: vec![0, 5],
            heads_q: 1,
            heads_kv: 1,
            head_dim: 64,
            scale: 0.125,
            softcap: None,
            mask: AttentionMask { causal: false, window: Some(Window { left, right }), column_ranges: None },
            dtype: DType::F32,
        };
        p.validate().unwrap();
        // Row i of 3 queries over 5 keys sits on diagonal i + 2.
        for i in 0..3 {
            let (lo, hi) = p.key_range(0, i);
            let want_lo = if left >= 5 { 0 } else { (i + 2).saturating_sub(left) };
            let want_hi = if right >= 5 { 5 } else { (i + 3 + right).min(5) };
            assert_eq!((lo, hi), (want_lo, want_hi), "window ({left}, {right}), row {i}");
            assert_eq!((0..5).filter(|&j| p.allowed(0, i, j)).count(), hi - lo);
        }
    }
}
