//! Valid base calls and their corruptions for routing, dispatch, combine and grouped GEMM.

use super::invalid::{all_set, expect_rejected, filled, other_float, with_value, Corruption, Corruptions};
use crate::compare::Check;
use crate::exec::{self, CombineBufs, GroupedGemmBufs, PermuteBufs, RouteBufs};
use crate::gen;
use moekit_ops::{
    Backend, BiasUpdateProblem, CombineProblem, DType, GemmLayout, GroupLimit, GroupedGemmProblem, HostTensor,
    PermuteProblem, RouteProblem, TensorMeta,
};
use moekit_reference::ReferenceBackend as Ref;
use rand::Rng;

/// Routing.
///
/// # Errors
/// See [`expect_rejected`].
pub fn route<B: Backend>(b: &B, dtype: DType, seed: u64) -> Check {
    let mut rng = gen::rng(seed);
    let (t, e) = (rng.gen_range(1..=5), [4usize, 8, 16][rng.gen_range(0..3)]);
    let p = RouteProblem::new(t, e, 2, dtype);
    let logits = gen::tensor(dtype, &[t, e], &gen::routing_logits(&mut rng, t, e, 1.0));
    let x = RouteBufs::new(&p, logits, None, None);
    let c: &[Corruption<RouteProblem, RouteBufs>] = &[
        ("k = 0", |p, _| p.k = 0),
        ("k > experts", |p, _| p.k = p.experts + 1),
        ("k > experts the mask allows", |p, _| p.expert_mask = Some((0..p.experts).map(|e| e == 0).collect())),
        ("mask of the wrong length", |p, _| p.expert_mask = Some(vec![true; p.experts - 1])),
        ("n_group not dividing E", |p, _| p.groups = Some(GroupLimit { n_group: 3, topk_group: 1 })),
        ("topk_group = 0", |p, _| p.groups = Some(GroupLimit { n_group: 2, topk_group: 0 })),
        ("topk_group > n_group", |p, _| p.groups = Some(GroupLimit { n_group: 2, topk_group: 3 })),
        ("k > experts the groups reach", |p, _| p.groups = Some(GroupLimit { n_group: p.experts, topk_group: 1 })),
        ("logits of the wrong shape", |p, x| x.logits = filled(p.dtype, &[p.tokens + 1, p.experts])),
        ("logits of another float dtype", |p, x| x.logits = filled(other_float(p.dtype), &[p.tokens, p.experts])),
        ("i32 logits", |p, x| x.logits = filled(DType::I32, &[p.tokens, p.experts])),
        ("f32 ids", |p, x| x.ids = filled(DType::F32, &[p.tokens, p.k])),
        ("weights of the wrong shape", |p, x| x.weights = filled(DType::F32, &[p.tokens, p.k + 1])),
        ("counts of the wrong shape", |p, x| x.counts = filled(DType::I32, &[p.experts + 1])),
        ("i32 load", |p, x| x.load = filled(DType::I32, &[p.experts])),
        ("use_bias without a bias", |p, _| p.use_bias = true),
        ("a bias without use_bias", |p, x| x.bias = Some(filled(DType::F32, &[p.experts]))),
        ("bf16 bias", |p, x| {
            p.use_bias = true;
            x.bias = Some(filled(DType::BF16, &[p.experts]));
        }),
        ("a gate without hidden", |p, x| x.gate = Some(filled(p.dtype, &[3, p.experts]))),
        ("hidden without a gate", |p, _| p.hidden = Some(p.experts)),
        ("fused gate with hidden = 0", |p, x| {
            p.hidden = Some(0);
            x.logits = filled(p.dtype, &[p.tokens, 0]);
            x.gate = Some(filled(p.dtype, &[0, p.experts]));
        }),
        ("a NaN logit", |_, x| x.logits = with_value(&x.logits, 0, f64::NAN)),
        ("an infinite logit", |_, x| x.logits = with_value(&x.logits, 1, f64::INFINITY)),
        ("NaN scaling", |p, _| p.scaling = f32::NAN),
        ("experts = 0", |p, _| p.experts = 0),
        ("i32 problem dtype", |p, x| {
            p.dtype = DType::I32;
            x.logits = filled(DType::I32, &[p.tokens, p.experts]);
        }),
    ];
    let (run, oracle) = (|p: &_, x: &_| exec::route(b, p, x), |p: &_, x: &_| exec::route(&Ref, p, x));
    expect_rejected("route", b, (p, x), run, oracle, Corruptions { one: c, many: &[] })
}

/// Bias update (f32 and i32 only, so no dtype).
///
/// # Errors
/// See [`expect_rejected`].
pub fn update_bias<B: Backend>(b: &B, seed: u64) -> Check {
    let mut rng = gen::rng(seed);
    let e = rng.gen_range(1..=16);
    let p = BiasUpdateProblem { experts: e, speed: 0.01, expert_mask: None };
    let counts: Vec<i32> = (0..e).map(|_| rng.gen_range(0..10)).collect();
    let x =
        (HostTensor::from_f32(DType::F32, &[e], &gen::normal(&mut rng, e, 0.1)), HostTensor::from_i32(&[e], &counts));
    type X = (HostTensor, HostTensor);
    let c: &[Corruption<BiasUpdateProblem, X>] = &[
        ("negative speed", |p, _| p.speed = -0.5),
        ("NaN speed", |p, _| p.speed = f32::NAN),
        ("mask allowing no expert", |p, _| p.expert_mask = Some(vec![false; p.experts])),
        ("mask of the wrong length", |p, _| p.expert_mask = Some(vec![true; p.experts + 1])),
        ("f16 bias", |p, x| x.0 = filled(DType::F16, &[p.experts])),
        ("counts of the wrong shape", |p, x| x.1 = filled(DType::I32, &[p.experts + 1])),
        ("f32 counts", |p, x| x.1 = filled(DType::F32, &[p.experts])),
        ("experts = 0", |p, _| p.experts = 0),
        ("bias of the wrong shape", |p, x| x.0 = filled(DType::F32, &[p.experts + 1])),
        ("bias [E, 1]", |p, x| x.0 = filled(DType::F32, &[p.experts, 1])),
        ("i32 bias", |p, x| x.0 = filled(DType::I32, &[p.experts])),
        ("counts [1, E]", |p, x| x.1 = filled(DType::I32, &[1, p.experts])),
        ("0-d counts", |_, x| x.1 = filled(DType::I32, &[])),
        ("experts one more than the buffers", |p, _| p.experts += 1),
    ];
    let run = |p: &_, x: &X| exec::update_bias(b, p, &x.0, &x.1);
    let oracle = |p: &_, x: &X| exec::update_bias(&Ref, p, &x.0, &x.1);
    expect_rejected("update_bias", b, (p, x), run, oracle, Corruptions { one: c, many: &[] })
}

/// Dispatch.
///
/// # Errors
/// See [`expect_rejected`].
pub fn permute<B: Backend>(b: &B, dtype: DType, seed: u64) -> Check {
    let mut rng = gen::rng(seed);
    let (t, h, e) = (rng.gen_range(1..=6), rng.gen_range(1..=20), rng.gen_range(2..=8));
    let k = rng.gen_range(1..=e.min(3));
    let p = PermuteProblem { tokens: t, hidden: h, experts: e, k, align: [1, 4][rng.gen_range(0..2)], dtype };
    let experts: Vec<usize> = (0..e).collect();
    let ids = HostTensor::from_i32(&[t, k], &gen::zipf_ids(&mut rng, t, k, &experts, 1.0));
    let x = PermuteBufs::new(&p, gen::normal_tensor(&mut rng, dtype, &[t, h], 1.0), ids);
    let c: &[Corruption<PermuteProblem, PermuteBufs>] = &[
        ("k = 0", |p, _| p.k = 0),
        ("align = 0", |p, _| p.align = 0),
        ("hidden = 0", |p, _| p.hidden = 0),
        ("experts = 0", |p, _| p.experts = 0),
        ("an id = E", |p, x| x.ids = with_value(&x.ids, 0, p.experts as f64)),
        ("an id = -1", |_, x| x.ids = with_value(&x.ids, 0, -1.0)),
        ("f32 ids", |p, x| x.ids = filled(DType::F32, &[p.tokens, p.k])),
        ("permuted with too many rows", |p, x| x.permuted = filled(p.dtype, &[p.max_rows() + 1, p.hidden])),
        ("offsets [E]", |p, x| x.offsets = filled(DType::I32, &[p.experts])),
        ("hidden of another dtype", |p, x| x.hidden = filled(other_float(p.dtype), &[p.tokens, p.hidden])),
        ("token_slot_to_row of the wrong shape", |p, x| {
            x.token_slot_to_row = filled(DType::I32, &[p.tokens, p.k + 1]);
        }),
        ("f32 row_to_token", |p, x| x.row_to_token = filled(DType::F32, &[p.max_rows()])),
        ("i32 problem dtype", |p, x| {
            p.dtype = DType::I32;
            x.hidden = filled(DType::I32, &[p.tokens, p.hidden]);
        }),
    ];
    let many: &[Corruption<PermuteProblem, PermuteBufs>] = &[
        ("every id = E", |p, x| x.ids = all_set(&x.ids, p.experts as f64)),
        ("every id = -1", |_, x| x.ids = all_set(&x.ids, -1.0)),
    ];
    let (run, oracle) = (|p: &_, x: &_| exec::permute(b, p, x), |p: &_, x: &_| exec::permute(&Ref, p, x));
    expect_rejected("permute", b, (p, x), run, oracle, Corruptions { one: c, many })
}

/// Weighted combine.
///
/// # Errors
/// See [`expect_rejected`].
pub fn combine<B: Backend>(b: &B, dtype: DType, seed: u64) -> Check {
    let mut rng = gen::rng(seed);
    let (t, h, k, r) = (rng.gen_range(1..=6), rng.gen_range(1..=20), rng.gen_range(1..=3), rng.gen_range(1..=10));
    let p = CombineProblem { tokens: t, hidden: h, k, rows: r, add: rng.gen_bool(0.5), dtype };
    let tsr: Vec<i32> = (0..t * k).map(|_| rng.gen_range(0..r) as i32).collect();
    let x = CombineBufs {
        y: gen::normal_tensor(&mut rng, dtype, &[r, h], 1.0),
        weights: gen::normal_tensor(&mut rng, DType::F32, &[t, k], 1.0),
        token_slot_to_row: HostTensor::from_i32(&[t, k], &tsr),
        add: p.add.then(|| gen::normal_tensor(&mut rng, dtype, &[t, h], 1.0)),
        out: gen::poison(dtype, &[t, h]),
    };
    let c: &[Corruption<CombineProblem, CombineBufs>] = &[
        ("a row = R", |p, x| x.token_slot_to_row = with_value(&x.token_slot_to_row, 0, p.rows as f64)),
        ("a row = -1", |_, x| x.token_slot_to_row = with_value(&x.token_slot_to_row, 0, -1.0)),
        ("rows = 0 with tokens", |p, x| {
            p.rows = 0;
            x.y = filled(p.dtype, &[0, p.hidden]);
        }),
        ("add flag against the buffer", |p, _| p.add = !p.add),
        ("bf16 weights", |p, x| x.weights = filled(DType::BF16, &[p.tokens, p.k])),
        ("out of the wrong shape", |p, x| x.out = filled(p.dtype, &[p.tokens + 1, p.hidden])),
        ("k = 0", |p, _| p.k = 0),
        ("hidden = 0", |p, _| p.hidden = 0),
        ("i32 y", |p, x| x.y = filled(DType::I32, &[p.rows, p.hidden])),
    ];
    let many: &[Corruption<CombineProblem, CombineBufs>] = &[
        ("every row = R", |p, x| x.token_slot_to_row = all_set(&x.token_slot_to_row, p.rows as f64)),
        ("every row = -1", |_, x| x.token_slot_to_row = all_set(&x.token_slot_to_row, -1.0)),
    ];
    let (run, oracle) = (|p: &_, x: &_| exec::combine(b, p, x), |p: &_, x: &_| exec::combine(&Ref, p, x));
    expect_rejected("unpermute_combine", b, (p, x), run, oracle, Corruptions { one: c, many })
}

/// Grouped GEMM, contiguous (with or without gather) or masked.
///
/// # Errors
/// See [`expect_rejected`].
pub fn grouped_gemm<B: Backend>(b: &B, dtype: DType, seed: u64, masked: bool) -> Check {
    let mut rng = gen::rng(seed);
    let (e, k, n) = (rng.gen_range(2..=5), rng.gen_range(1..=10), 2 * rng.gen_range(1..=5));
    let mut p = GroupedGemmProblem::contiguous(0, e, k, n, dtype);
    let group = if masked {
        let cap = rng.gen_range(1..=6);
        p.layout = GemmLayout::Masked { capacity: cap };
        HostTensor::from_i32(&[e], &(0..e).map(|_| rng.gen_range(0..=cap) as i32).collect::<Vec<_>>())
    } else {
        let counts: Vec<usize> = (0..e).map(|_| rng.gen_range(1..=4)).collect();
        let off = gen::offsets_from_counts(&counts, 1);
        p.layout = GemmLayout::Contiguous { rows: off[e] as usize + rng.gen_range(0..=2) };
        p.gather_tokens = rng.gen_bool(0.5).then(|| rng.gen_range(1..=6));
        HostTensor::from_i32(&[e + 1], &off)
    };
    let rows = p.out_rows();
    let x = GroupedGemmBufs {
        x: gen::normal_tensor(&mut rng, dtype, &p.x_shape(), 1.0),
        w: gen::normal_tensor(&mut rng, dtype, &p.w_shape(), 0.3),
        group,
        row_to_token: p.gather_tokens.map(|t| {
            HostTensor::from_i32(&[rows], &(0..rows).map(|_| rng.gen_range(-1..t as i32)).collect::<Vec<_>>())
        }),
        row_scale: None,
        y: gen::poison(dtype, &p.y_shape()),
    };
    let common: &[Corruption<GroupedGemmProblem, GroupedGemmBufs>] = &[
        ("SwiGLU with an odd N", |p, _| {
            p.swiglu = true;
            p.n_dim += 1;
        }),
        ("w of the wrong shape", |p, x| x.w = filled(p.dtype, &[p.experts, p.k_dim, p.n_dim + 1])),
        ("row_scale flag without a buffer", |p, _| p.row_scale = true),
        ("y of another dtype", |p, x| x.y = filled(other_float(p.dtype), &p.y_shape())),
        ("experts = 0", |p, _| p.experts = 0),
        ("K = 0", |p, _| p.k_dim = 0),
        ("f32 group", |_, x| x.group = filled(DType::F32, x.group.shape())),
        ("x of the wrong shape", |p, x| x.x = filled(p.dtype, &[1, p.k_dim + 1])),
    ];
    let contiguous: &[Corruption<GroupedGemmProblem, GroupedGemmBufs>] = &[
        ("decreasing offsets", |_, x| x.group = with_value(&with_value(&x.group, 1, 2.0), 2, 0.0)),
        ("offsets not starting at 0", |_, x| x.group = with_value(&x.group, 0, 1.0)),
        ("offsets past R", |p, x| {
            let last = x.group.numel() - 1;
            x.group = with_value(&x.group, last, p.out_rows() as f64 + 1.0);
        }),
        ("a gather row = T (or gather with a masked layout)", |p, x| match p.gather_tokens {
            Some(t) => {
                x.row_to_token =
                    Some(with_value(&HostTensor::from_i32(&[p.out_rows()], &vec![0; p.out_rows()]), 0, t as f64))
            }
            None => p.layout = GemmLayout::Masked { capacity: 2 },
        }),
        ("a gather row = -2 (or a gather buffer without gather)", |p, x| {
            x.row_to_token = Some(with_value(&HostTensor::from_i32(&[p.out_rows()], &vec![0; p.out_rows()]), 0, -2.0));
        }),
    ];
    let masked_list: &[Corruption<GroupedGemmProblem, GroupedGemmBufs>] = &[
        ("a count > capacity", |p, x| {
            let cap = match p.layout {
                GemmLayout::Masked { capacity } => capacity,
                GemmLayout::Contiguous { .. } => 0,
            };
            x.group = with_value(&x.group, 0, cap as f64 + 1.0);
        }),
        ("a negative count", |_, x| x.group = with_value(&x.group, 1, -1.0)),
        ("gather with the masked layout", |p, _| p.gather_tokens = Some(2)),
    ];
    let many_contiguous: &[Corruption<GroupedGemmProblem, GroupedGemmBufs>] = &[
        ("every gather row = T (or gather without a gather buffer)", |p, x| match p.gather_tokens {
            Some(t) => x.row_to_token = Some(HostTensor::full(DType::I32, &[p.out_rows()], t as f64)),
            None => p.gather_tokens = Some(1),
        }),
        ("every gather row = -2 (or a gather buffer without gather)", |p, x| {
            x.row_to_token = Some(HostTensor::full(DType::I32, &[p.out_rows()], -2.0));
        }),
    ];
    let many_masked: &[Corruption<GroupedGemmProblem, GroupedGemmBufs>] = &[
        ("every count > capacity", |p, x| {
            let cap = match p.layout {
                GemmLayout::Masked { capacity } => capacity,
                GemmLayout::Contiguous { .. } => 0,
            };
            x.group = all_set(&x.group, cap as f64 + 1.0);
        }),
        ("every count negative", |_, x| x.group = all_set(&x.group, -3.0)),
    ];
    let one: Vec<Corruption<GroupedGemmProblem, GroupedGemmBufs>> =
        common.iter().chain(if masked { masked_list } else { contiguous }).copied().collect();
    let many = if masked { many_masked } else { many_contiguous };
    let run = |p: &_, x: &_| exec::grouped_gemm(b, p, x);
    let oracle = |p: &_, x: &_| exec::grouped_gemm(&Ref, p, x);
    expect_rejected("grouped_gemm", b, (p, x), run, oracle, Corruptions { one: &one, many })
}
