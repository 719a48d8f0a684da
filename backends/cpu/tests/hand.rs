//! Small hand-computed cases for every op family of the CPU backend.

use moekit_cpu::CpuBackend;
use moekit_ops::{
    api, AttentionIo, AttentionMask, AttentionProblem, BiasUpdateProblem, CombineIo, CombineProblem, DType, Device,
    EmbeddingProblem, Error, GemmLayout, GemmProblem, GroupLimit, GroupedGemmIo, GroupedGemmProblem, HostTensor,
    PermuteIo, PermuteProblem, RmsNormIo, RmsNormProblem, RotaryIo, RotaryPositions, RotaryProblem, RouteIo,
    RouteProblem, ScoreFn, SwigluProblem, WeightLayout,
};

fn close(actual: &[f32], expected: &[f32], tol: f32) {
    assert_eq!(actual.len(), expected.len());
    for (i, (a, e)) in actual.iter().zip(expected).enumerate() {
        assert!((a - e).abs() <= tol * (1.0 + e.abs()), "[{i}] expected {e}, got {a}");
    }
}

struct Routed {
    ids: Vec<i32>,
    weights: Vec<f32>,
    counts: Vec<i32>,
    load: Vec<f32>,
}

fn route(p: &RouteProblem, logits: &[f32], bias: Option<&[f32]>) -> Result<Routed, Error> {
    let cpu = CpuBackend::new();
    let (t, e, k) = (p.tokens, p.experts, p.k);
    let logits = HostTensor::from_f32(p.dtype, &[t, e], logits);
    let bias = bias.map(|b| HostTensor::from_f32(DType::F32, &[e], b));
    let (mut ids, mut weights) = (cpu.alloc(DType::I32, &[t, k])?, cpu.alloc(DType::F32, &[t, k])?);
    let (mut counts, mut load) = (cpu.alloc(DType::I32, &[e])?, cpu.alloc(DType::F32, &[e])?);
    let io = RouteIo {
        logits: &logits,
        gate: None,
        bias: bias.as_ref(),
        ids: &mut ids,
        weights: &mut weights,
        counts: &mut counts,
        load: &mut load,
    };
    api::route(&cpu, p, io)?;
    Ok(Routed {
        ids: ids.as_i32()?.to_vec(),
        weights: weights.to_f32_vec(),
        counts: counts.as_i32()?.to_vec(),
        load: load.to_f32_vec(),
    })
}

#[test]
fn route_softmax_ties_mask_and_renormalise() {
    // Token 0: logits ln(1), ln(2), ln(2), ln(4) (experts 1 and 2 tie); token 1 masks expert 3.
    let l = [0.0, 2f32.ln(), 2f32.ln(), 4f32.ln()];
    let mut p = RouteProblem::new(1, 4, 2, DType::F32);
    let r = route(&p, &l, None).unwrap();
    assert_eq!(r.ids, [3, 1]);
    close(&r.weights, &[4.0 / 9.0, 2.0 / 9.0], 1e-6);
    assert_eq!(r.counts, [0, 1, 0, 1]);
    close(&r.load, &[1.0 / 9.0, 2.0 / 9.0, 2.0 / 9.0, 4.0 / 9.0], 1e-6);

    p.expert_mask = Some(vec![true, true, true, false]);
    p.renormalize = true;
    p.scaling = 2.0;
    let r = route(&p, &l, None).unwrap();
    assert_eq!(r.ids, [1, 2]);
    close(&r.weights, &[1.0, 1.0], 1e-6);
    close(&r.load, &[0.2, 0.4, 0.4, 0.0], 1e-6);
}

#[test]
fn route_sigmoid_bias_selects_but_does_not_weigh() {
    let mut p = RouteProblem::new(1, 3, 1, DType::BF16);
    p.score = ScoreFn::Sigmoid;
    p.use_bias = true;
    let r = route(&p, &[0.0, 1.0, 0.0], Some(&[0.0, 0.0, 1.0])).unwrap();
    assert_eq!(r.ids, [2]);
    close(&r.weights, &[0.5], 1e-6);
    assert_eq!(r.counts, [0, 0, 1]);
}

#[test]
fn route_group_limited_keeps_best_groups() {
    // Groups {0,1} {2,3} {4,5}; sums of the two best: 0.9+0.0, 0.5+0.5, 0.8+0.0 -> keep {2,3}.
    let mut p = RouteProblem::new(1, 6, 2, DType::F32);
    p.score = ScoreFn::Sigmoid;
    p.groups = Some(GroupLimit { n_group: 3, topk_group: 1 });
    let logit = |s: f32| (s / (1.0 - s)).ln();
    let l: Vec<f32> = [0.9, 0.01, 0.5, 0.5, 0.8, 0.01].iter().map(|&s| logit(s)).collect();
    let r = route(&p, &l, None).unwrap();
    assert_eq!(r.ids, [2, 3]);
}

#[test]
fn route_rejects_non_finite_logits() {
    let p = RouteProblem::new(1, 2, 1, DType::F32);
    let err = route(&p, &[0.0, f32::NAN], None).err();
    assert_eq!(err, Some(Error::NonFinite { op: "route", what: "logits", index: 1 }));
}

#[test]
fn route_non_finite_bias_and_empty_batch() {
    let mut p = RouteProblem::new(2, 3, 1, DType::F32);
    p.use_bias = true;
    let bias = [0.5, f32::NAN, f32::INFINITY];
    let err = route(&p, &[0.0, 1.0, 2.0, 1.0, 0.0, 1.0], Some(&bias)).err();
    assert_eq!(err, Some(Error::NonFinite { op: "route", what: "bias", index: 1 }));
    let err = route(&p, &[0.0, 1.0, 2.0, 1.0, f32::NEG_INFINITY, 1.0], Some(&bias)).err();
    assert_eq!(err, Some(Error::NonFinite { op: "route", what: "logits", index: 4 }));
    // T = 0: the bias is not read; counts and load are zeros.
    p.tokens = 0;
    let r = route(&p, &[], Some(&bias)).unwrap();
    assert_eq!(r.counts, [0, 0, 0]);
    assert_eq!(r.load, [0.0; 3]);
}

#[test]
fn route_non_finite_fused_gate_names_the_logit() {
    // hidden [2, 2], gate [2, 3]: NaN in gate column 1 spoils logits 1 and 4.
    let cpu = CpuBackend::new();
    let mut p = RouteProblem::new(2, 3, 2, DType::F32);
    p.hidden = Some(2);
    let hidden = HostTensor::from_f32(DType::F32, &[2, 2], &[1.0, 2.0, -1.0, 0.5]);
    let gate = HostTensor::from_f32(DType::F32, &[2, 3], &[0.5, f32::NAN, 0.25, 1.0, 0.0, -1.0]);
    let (mut ids, mut weights) = (cpu.alloc(DType::I32, &[2, 2]).unwrap(), cpu.alloc(DType::F32, &[2, 2]).unwrap());
    let (mut counts, mut load) = (cpu.alloc(DType::I32, &[3]).unwrap(), cpu.alloc(DType::F32, &[3]).unwrap());
    let io = RouteIo {
        logits: &hidden,
        gate: Some(&gate),
        bias: None,
        ids: &mut ids,
        weights: &mut weights,
        counts: &mut counts,
        load: &mut load,
    };
    let err = api::route(&cpu, &p, io).err();
    assert_eq!(err, Some(Error::NonFinite { op: "route", what: "logits", index: 1 }));
}

#[test]
fn update_bias_moves_towards_the_mean() {
    let cpu = CpuBackend::new();
    let mut bias = HostTensor::from_f32(DType::F32, &[5], &[0.0; 5]);
    let counts = HostTensor::from_i32(&[5], &[3, 1, 2, 2, 9]);
    let p = BiasUpdateProblem { experts: 5, speed: 0.5, expert_mask: Some(vec![true, true, true, true, false]) };
    api::update_bias(&cpu, &p, &mut bias, &counts).unwrap();
    assert_eq!(bias.to_f32_vec(), [-0.5, 0.5, 0.0, 0.0, 0.0]);
}

#[test]
fn permute_aligns_and_combine_gathers_back() {
    let cpu = CpuBackend::new();
    let p = PermuteProblem { tokens: 3, hidden: 2, experts: 3, k: 2, align: 2, dtype: DType::F16 };
    let r = p.max_rows(); // 6 + 3
    let hidden = HostTensor::from_f32(DType::F16, &[3, 2], &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
    let ids = HostTensor::from_i32(&[3, 2], &[2, 0, 0, 2, 2, 0]);
    let mut permuted = HostTensor::full(DType::F16, &[r, 2], 9.0);
    let mut offsets = cpu.alloc(DType::I32, &[4]).unwrap();
    let mut row_to_token = cpu.alloc(DType::I32, &[r]).unwrap();
    let mut tsr = cpu.alloc(DType::I32, &[3, 2]).unwrap();
    let io = PermuteIo {
        hidden: &hidden,
        ids: &ids,
        permuted: &mut permuted,
        offsets: &mut offsets,
        row_to_token: &mut row_to_token,
        token_slot_to_row: &mut tsr,
    };
    api::permute(&cpu, &p, io).unwrap();
    assert_eq!(offsets.as_i32().unwrap(), [0, 4, 4, 8]);
    assert_eq!(row_to_token.as_i32().unwrap(), [0, 1, 2, -1, 0, 1, 2, -1, -1]);
    assert_eq!(tsr.as_i32().unwrap(), [4, 0, 1, 5, 6, 2]);
    let rows = permuted.to_f32_vec();
    assert_eq!(&rows[..8], [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 0.0, 0.0]);
    assert_eq!(&rows[14..], [0.0; 4]);

    let cp = CombineProblem { tokens: 3, hidden: 2, k: 2, rows: r, add: true, dtype: DType::F16 };
    let weights = HostTensor::from_f32(DType::F32, &[3, 2], &[0.5, 0.25, 1.0, 1.0, 0.5, 0.5]);
    let add = HostTensor::full(DType::F16, &[3, 2], 1.0);
    let mut out = cpu.alloc(DType::F16, &[3, 2]).unwrap();
    let io = CombineIo { y: &permuted, weights: &weights, token_slot_to_row: &tsr, add: Some(&add), out: &mut out };
    api::unpermute_combine(&cpu, &cp, io).unwrap();
    assert_eq!(out.to_f32_vec(), [1.75, 2.5, 7.0, 9.0, 6.0, 7.0]);

    let bad = HostTensor::from_i32(&[3, 2], &[0, 1, 2, 3, 4, 9]);
    let io = CombineIo { y: &permuted, weights: &weights, token_slot_to_row: &bad, add: Some(&add), out: &mut out };
    let err = api::unpermute_combine(&cpu, &cp, io).err();
    assert!(matches!(err, Some(Error::IndexOutOfRange { index: 5, value: 9, .. })), "{err:?}");
}

/// Expert `e`'s weight `[2, 2]` is `(e + 1) · I`.
fn scaled_identities(e: usize) -> HostTensor {
    let mut w = Vec::new();
    for i in 0..e {
        let s = (i + 1) as f32;
        w.extend([s, 0.0, 0.0, s]);
    }
    HostTensor::from_f32(DType::F32, &[e, 2, 2], &w)
}

#[test]
fn grouped_gemm_contiguous_gather_and_scale() {
    let cpu = CpuBackend::new();
    let mut p = GroupedGemmProblem::contiguous(4, 2, 2, 2, DType::F32);
    p.gather_tokens = Some(2);
    p.row_scale = true;
    p.weight_layout = WeightLayout::NK;
    let x = HostTensor::from_f32(DType::F32, &[2, 2], &[1.0, 2.0, 3.0, 4.0]);
    let w = scaled_identities(2);
    let offsets = HostTensor::from_i32(&[3], &[0, 1, 3]);
    let r2t = HostTensor::from_i32(&[4], &[1, 0, -1, 0]);
    let scale = HostTensor::from_f32(DType::F32, &[4], &[1.0, 0.5, 1.0, 1.0]);
    let mut y = HostTensor::full(DType::F32, &[4, 2], 7.0);
    let io =
        GroupedGemmIo { x: &x, w: &w, group: &offsets, row_to_token: Some(&r2t), row_scale: Some(&scale), y: &mut y };
    api::grouped_gemm(&cpu, &p, io).unwrap();
    assert_eq!(y.to_f32_vec(), [3.0, 4.0, 1.0, 2.0, 0.0, 0.0, 0.0, 0.0]);

    let bad = HostTensor::from_i32(&[3], &[0, 3, 2]);
    let io = GroupedGemmIo { x: &x, w: &w, group: &bad, row_to_token: Some(&r2t), row_scale: Some(&scale), y: &mut y };
    assert!(matches!(api::grouped_gemm(&cpu, &p, io), Err(Error::BadOffsets { .. })));
}

#[test]
fn grouped_gemm_masked_swiglu() {
    let cpu = CpuBackend::new();
    let p = GroupedGemmProblem {
        layout: GemmLayout::Masked { capacity: 2 },
        experts: 2,
        k_dim: 2,
        n_dim: 2,
        weight_layout: WeightLayout::KN,
        swiglu: true,
        row_scale: false,
        gather_tokens: None,
        dtype: DType::BF16,
    };
    let x = HostTensor::from_f32(DType::BF16, &[2, 2, 2], &[1.0, 2.0, 5.0, 5.0, -1.0, 3.0, 5.0, 5.0]);
    let w = HostTensor::from_f32(DType::BF16, &[2, 2, 2], &[1.0, 0.0, 0.0, 1.0, 0.0, 1.0, 1.0, 0.0]);
    let counts = HostTensor::from_i32(&[2], &[1, 1]);
    let mut y = HostTensor::full(DType::BF16, &[2, 2, 1], 7.0);
    let io = GroupedGemmIo { x: &x, w: &w, group: &counts, row_to_token: None, row_scale: None, y: &mut y };
    api::grouped_gemm(&cpu, &p, io).unwrap();
    let silu = |g: f32| g / (1.0 + (-g).exp());
    // Expert 0: acc = [1, 2] -> silu(1)*2; expert 1 swaps columns: acc = [3, -1] -> silu(3)*-1.
    close(&y.to_f32_vec(), &[silu(1.0) * 2.0, 0.0, -silu(3.0), 0.0], 4e-3);

    let over = HostTensor::from_i32(&[2], &[3, 0]);
    let io = GroupedGemmIo { x: &x, w: &w, group: &over, row_to_token: None, row_scale: None, y: &mut y };
    assert!(matches!(api::grouped_gemm(&cpu, &p, io), Err(Error::IndexOutOfRange { .. })));
}

#[test]
fn attention_causal_softcap_and_gqa() {
    let cpu = CpuBackend::new();
    let d = 64;
    // One sequence, 2 queries, 2 keys, 2 query heads sharing 1 kv head.
    let p = AttentionProblem {
        cu_seqlens_q: vec![0, 2],
        cu_seqlens_k: vec![0, 2],
        heads_q: 2,
        heads_kv: 1,
        head_dim: d,
        scale: 1.0,
        softcap: Some(1.0),
        mask: AttentionMask::causal(),
        dtype: DType::F32,
    };
    let mut q = vec![0f32; 2 * 2 * d];
    q[0] = 1.0; // query 0, head 0
    q[2 * d] = 1.0; // query 1, head 0: sees both keys
    q[3 * d] = 2.0; // query 1, head 1
    let mut k = vec![0f32; 2 * d];
    k[0] = 1.0;
    k[d + 1] = 1.0;
    let mut v = vec![0f32; 2 * d];
    v[0] = 10.0;
    v[d] = 20.0;
    let (q, k, v) = (
        HostTensor::from_f32(DType::F32, &[2, 2, d], &q),
        HostTensor::from_f32(DType::F32, &[2, 1, d], &k),
        HostTensor::from_f32(DType::F32, &[2, 1, d], &v),
    );
    let mut o = cpu.alloc(DType::F32, &[2, 2, d]).unwrap();
    let mut lse = cpu.alloc(DType::F32, &[2, 2]).unwrap();
    api::attention(&cpu, &p, AttentionIo { q: &q, k: &k, v: &v, o: &mut o, lse: &mut lse }).unwrap();
    let o = o.to_f32_vec();
    let (t1, t2) = (1f32.tanh(), 2f32.tanh());
    // Query 0 sees key 0 only (head 1 has a zero query: score 0).
    close(&[o[0], o[d], lse.to_f32_vec()[0], lse.to_f32_vec()[2]], &[10.0, 10.0, t1, 0.0], 1e-5);
    // Query 1, head 0: scores tanh(1), 0; head 1: tanh(2), 0.
    let mix = |s: f32| (10.0 * s.exp() + 20.0) / (s.exp() + 1.0);
    let lse = lse.to_f32_vec();
    close(
        &[o[2 * d], o[3 * d], lse[1], lse[3]],
        &[mix(t1), mix(t2), (t1.exp() + 1.0).ln(), (t2.exp() + 1.0).ln()],
        1e-5,
    );
}

#[test]
fn rms_norm_with_residual_rounds_the_sum() {
    let cpu = CpuBackend::new();
    let p = RmsNormProblem { rows: 1, hidden: 2, eps: 1e-6, residual: true, dtype: DType::BF16 };
    let x = HostTensor::from_f32(DType::BF16, &[1, 2], &[3.0, 1.0]);
    let r = HostTensor::from_f32(DType::BF16, &[1, 2], &[0.0, 1.0 / 512.0]);
    let w = HostTensor::from_f32(DType::BF16, &[2], &[1.0, 2.0]);
    let (mut y, mut ro) = (cpu.alloc(DType::BF16, &[1, 2]).unwrap(), cpu.alloc(DType::BF16, &[1, 2]).unwrap());
    let io = RmsNormIo { x: &x, weight: &w, residual: Some(&r), y: &mut y, residual_out: Some(&mut ro) };
    api::rms_norm(&cpu, &p, io).unwrap();
    // 1 + 1/512 rounds to 1 in bf16; the norm sees [3, 1]: rms = sqrt(5).
    assert_eq!(ro.to_f32_vec(), [3.0, 1.0]);
    close(&y.to_f32_vec(), &[3.0 / 5f32.sqrt(), 2.0 / 5f32.sqrt()], 8e-3);
}

#[test]
fn rotary_three_d_turns_each_pair_by_its_axis() {
    let cpu = CpuBackend::new();
    // D = 4: pair 0 (inv_freq 1) uses t, pair 1 (inv_freq 1/theta^(1/2) = 1/2) uses h.
    let p = RotaryProblem {
        tokens: 1,
        heads: 1,
        head_dim: 4,
        theta: 4.0,
        positions: RotaryPositions::ThreeD { sections: [1, 1, 0] },
        dtype: DType::F32,
    };
    let x = HostTensor::from_f32(DType::F32, &[1, 1, 4], &[1.0, 1.0, 0.0, 0.0]);
    let pos = HostTensor::from_i32(&[3, 1], &[0, 0, 0]);
    let mut out = cpu.alloc(DType::F32, &[1, 1, 4]).unwrap();
    api::rotary(&cpu, &p, RotaryIo { x: &x, positions: &pos, out: &mut out }).unwrap();
    close(&out.to_f32_vec(), &[1.0, 1.0, 0.0, 0.0], 0.0);
    // t = 1 turns pair 0 by 1 rad; h = 3 turns pair 1 by 1.5 rad.
    let pos = HostTensor::from_i32(&[3, 1], &[1, 3, 7]);
    api::rotary(&cpu, &p, RotaryIo { x: &x, positions: &pos, out: &mut out }).unwrap();
    close(&out.to_f32_vec(), &[1f32.cos(), 1.5f32.cos(), 1f32.sin(), 1.5f32.sin()], 1e-6);
}

#[test]
fn swiglu_embedding_and_gemm() {
    let cpu = CpuBackend::new();
    let p = SwigluProblem { rows: 1, inter: 2, dtype: DType::F32 };
    let x = HostTensor::from_f32(DType::F32, &[1, 4], &[0.0, 2.0, 5.0, 3.0]);
    let mut y = cpu.alloc(DType::F32, &[1, 2]).unwrap();
    api::swiglu(&cpu, &p, &x, &mut y).unwrap();
    close(&y.to_f32_vec(), &[0.0, 3.0 * 2.0 / (1.0 + (-2f32).exp())], 1e-6);

    let p = EmbeddingProblem { tokens: 2, vocab: 3, hidden: 2, dtype: DType::F16 };
    let table = HostTensor::from_f32(DType::F16, &[3, 2], &[0.0, 1.0, 2.0, 3.0, 4.0, 5.0]);
    let mut out = cpu.alloc(DType::F16, &[2, 2]).unwrap();
    api::embedding(&cpu, &p, &table, &HostTensor::from_i32(&[2], &[2, 0]), &mut out).unwrap();
    assert_eq!(out.to_f32_vec(), [4.0, 5.0, 0.0, 1.0]);
    let err = api::embedding(&cpu, &p, &table, &HostTensor::from_i32(&[2], &[0, 3]), &mut out).err();
    assert!(matches!(err, Some(Error::IndexOutOfRange { index: 1, value: 3, .. })), "{err:?}");

    let p = GemmProblem { m: 2, k: 3, n: 2, b_transposed: true, dtype: DType::BF16 };
    let a = HostTensor::from_f32(DType::BF16, &[2, 3], &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
    let b = HostTensor::from_f32(DType::BF16, &[2, 3], &[1.0, 0.0, 1.0, 0.0, 1.0, 0.0]);
    let mut c = cpu.alloc(DType::BF16, &[2, 2]).unwrap();
    api::gemm(&cpu, &p, &a, &b, &mut c).unwrap();
    assert_eq!(c.to_f32_vec(), [4.0, 2.0, 10.0, 5.0]);
    let p0 = GemmProblem { m: 2, k: 0, n: 2, b_transposed: false, dtype: DType::F32 };
    let mut c = HostTensor::full(DType::F32, &[2, 2], 3.0);
    api::gemm(&cpu, &p0, &cpu.alloc(DType::F32, &[2, 0]).unwrap(), &cpu.alloc(DType::F32, &[0, 2]).unwrap(), &mut c)
        .unwrap();
    assert_eq!(c.to_f32_vec(), [0.0; 4]);
}
