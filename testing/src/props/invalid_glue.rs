//! Valid base calls and their corruptions for attention, the glue ops and the MoE layer.

use super::invalid::{all_set, expect_rejected, filled, other_float, with_value, Corruption, Corruptions};
use crate::compare::Check;
use crate::exec::{self, AttentionBufs, MoeBufs, RmsNormBufs};
use crate::gen;
use moekit_ops::{
    AttentionMask, AttentionProblem, Backend, ColumnRanges, DType, EmbeddingProblem, GemmProblem, GroupLimit,
    HostTensor, MoeLayerProblem, RmsNormProblem, RotaryPositions, RotaryProblem, RouteProblem, SwigluProblem,
    TensorMeta, Window,
};
use moekit_reference::ReferenceBackend as Ref;
use rand::Rng;

/// Attention.
///
/// # Errors
/// See [`expect_rejected`].
pub fn attention<B: Backend>(b: &B, dtype: DType, seed: u64) -> Check {
    let mut rng = gen::rng(seed);
    let lens: Vec<usize> = (0..rng.gen_range(1..=2)).map(|_| rng.gen_range(2..=6)).collect();
    let cu = gen::cumsum(&lens);
    let hkv = rng.gen_range(1..=2);
    let p = AttentionProblem {
        cu_seqlens_q: cu.clone(),
        cu_seqlens_k: cu,
        heads_q: 2 * hkv,
        heads_kv: hkv,
        head_dim: 64,
        scale: 0.125,
        softcap: None,
        mask: if rng.gen_bool(0.5) { AttentionMask::causal() } else { AttentionMask::none() },
        dtype,
    };
    let x = super::attention::attention_inputs(&p, seed);
    let c: &[Corruption<AttentionProblem, AttentionBufs>] = &[
        ("Hq % Hkv != 0", |p, _| {
            p.heads_q = 3;
            p.heads_kv = 2;
        }),
        ("head dim 96", |p, _| p.head_dim = 96),
        ("head dim 0", |p, _| p.head_dim = 0),
        ("heads_q = 0", |p, _| p.heads_q = 0),
        ("decreasing cu_seqlens_q", |p, _| p.cu_seqlens_q.insert(1, p.cu_seqlens_q[1] + 1)),
        ("cu_seqlens_q not starting at 0", |p, _| p.cu_seqlens_q[0] = 1),
        ("cu_seqlens of different lengths", |p, _| p.cu_seqlens_k.push(*p.cu_seqlens_k.last().unwrap_or(&0))),
        ("causal with fewer keys than queries", |p, _| {
            p.mask = AttentionMask::causal();
            let n = p.cu_seqlens_k.len();
            for v in &mut p.cu_seqlens_k[1..n] {
                *v -= 1;
            }
        }),
        ("queries without keys", |p, _| {
            let n = p.cu_seqlens_k.len();
            p.cu_seqlens_k = vec![0; n];
        }),
        ("column ranges masking every row", |p, _| {
            let tk = p.total_k();
            let lq = p.seq_lens(0).0 as i32;
            p.mask.column_ranges =
                Some(ColumnRanges { lts: vec![0; tk], lte: vec![lq; tk], uts: vec![0; tk], ute: vec![0; tk] });
        }),
        ("column ranges past the sequence", |p, _| {
            let tk = p.total_k();
            let lq = p.seq_lens(0).0 as i32;
            p.mask.column_ranges =
                Some(ColumnRanges { lts: vec![lq + 1; tk], lte: vec![lq + 2; tk], uts: vec![0; tk], ute: vec![0; tk] });
        }),
        ("column ranges of the wrong length", |p, _| {
            let n = p.total_k() + 1;
            p.mask.column_ranges =
                Some(ColumnRanges { lts: vec![0; n], lte: vec![0; n], uts: vec![0; n], ute: vec![0; n] });
        }),
        ("q of the wrong shape", |p, x| x.q = filled(p.dtype, &[p.total_q(), p.heads_q, p.head_dim + 1])),
        ("lse of another dtype", |p, x| x.lse = filled(other_float(DType::F32), &[p.heads_q, p.total_q()])),
        ("o with an extra row", |p, x| x.o = filled(p.dtype, &[p.total_q() + 1, p.heads_q, p.head_dim])),
        ("softcap 0", |p, _| p.softcap = Some(0.0)),
        ("negative softcap", |p, _| p.softcap = Some(-1.0)),
        ("NaN scale", |p, _| p.scale = f32::NAN),
        ("v of another dtype", |p, x| x.v = filled(other_float(p.dtype), &[p.total_k(), p.heads_kv, p.head_dim])),
        ("k with fewer rows than Tk", |p, x| x.k = filled(p.dtype, &[p.total_k() - 1, p.heads_kv, p.head_dim])),
        ("v with another head count", |p, x| x.v = filled(p.dtype, &[p.total_k(), p.heads_kv + 1, p.head_dim])),
        ("a window-only mask leaving the first row empty", |p, _| {
            // One key fewer than queries in every sequence: the diagonal of row 0 is at key
            // -1, and a window of width 1 around it reaches no key.
            p.mask = AttentionMask { causal: false, window: Some(Window { left: 0, right: 0 }), column_ranges: None };
            let n = p.cu_seqlens_k.len();
            for (i, v) in p.cu_seqlens_k[1..n].iter_mut().enumerate() {
                *v -= i + 1;
            }
        }),
        ("a window-only mask leaving a later sequence's row empty", |p, _| {
            // The last sequence gets two keys fewer than queries; the others keep theirs.
            p.mask = AttentionMask { causal: false, window: Some(Window { left: 1, right: 0 }), column_ranges: None };
            let n = p.cu_seqlens_k.len();
            p.cu_seqlens_k[n - 1] -= 2;
        }),
    ];
    let (run, oracle) = (|p: &_, x: &_| exec::attention(b, p, x), |p: &_, x: &_| exec::attention(&Ref, p, x));
    expect_rejected("attention", b, (p, x), run, oracle, Corruptions { one: c, many: &[] })
}

/// RMSNorm.
///
/// # Errors
/// See [`expect_rejected`].
pub fn rms_norm<B: Backend>(b: &B, dtype: DType, seed: u64) -> Check {
    let mut rng = gen::rng(seed);
    let (rows, h) = (rng.gen_range(1..=5), rng.gen_range(1..=20));
    let p = RmsNormProblem { rows, hidden: h, eps: 1e-5, residual: rng.gen_bool(0.5), dtype };
    let s = [rows, h];
    let x = RmsNormBufs {
        x: gen::normal_tensor(&mut rng, dtype, &s, 1.0),
        weight: gen::normal_tensor(&mut rng, dtype, &[h], 1.0),
        residual: p.residual.then(|| gen::normal_tensor(&mut rng, dtype, &s, 1.0)),
        y: gen::poison(dtype, &s),
        residual_out: p.residual.then(|| gen::poison(dtype, &s)),
    };
    let c: &[Corruption<RmsNormProblem, RmsNormBufs>] = &[
        ("eps = 0", |p, _| p.eps = 0.0),
        ("NaN eps", |p, _| p.eps = f32::NAN),
        ("hidden = 0", |p, _| p.hidden = 0),
        ("residual flag against the buffers", |p, _| p.residual = !p.residual),
        ("weight of the wrong shape", |p, x| x.weight = filled(p.dtype, &[p.hidden + 1])),
        ("y of another dtype", |p, x| x.y = filled(other_float(p.dtype), &[p.rows, p.hidden])),
        ("x of the wrong shape", |p, x| x.x = filled(p.dtype, &[p.hidden, p.rows + 1])),
    ];
    let (run, oracle) = (|p: &_, x: &_| exec::rms_norm(b, p, x), |p: &_, x: &_| exec::rms_norm(&Ref, p, x));
    expect_rejected("rms_norm", b, (p, x), run, oracle, Corruptions { one: c, many: &[] })
}

type RotaryX = (HostTensor, HostTensor, HostTensor);

/// Rotary embedding.
///
/// # Errors
/// See [`expect_rejected`].
pub fn rotary<B: Backend>(b: &B, dtype: DType, seed: u64) -> Check {
    let mut rng = gen::rng(seed);
    let (t, heads, d) = (rng.gen_range(1..=5), rng.gen_range(1..=3), [8usize, 64][rng.gen_range(0..2)]);
    let positions = if rng.gen_bool(0.5) {
        RotaryPositions::OneD
    } else {
        RotaryPositions::ThreeD { sections: [d / 4, d / 8, d / 8] }
    };
    let p = RotaryProblem { tokens: t, heads, head_dim: d, theta: 10_000.0, positions, dtype };
    let ps = p.positions_shape();
    let pos: Vec<i32> = (0..ps.iter().product()).map(|_| rng.gen_range(0..100)).collect();
    let x: RotaryX = (
        gen::normal_tensor(&mut rng, dtype, &[t, heads, d], 1.0),
        HostTensor::from_i32(&ps, &pos),
        gen::poison(dtype, &[t, heads, d]),
    );
    let c: &[Corruption<RotaryProblem, RotaryX>] = &[
        ("odd head dim", |p, _| p.head_dim += 1),
        ("head dim 0", |p, _| p.head_dim = 0),
        ("heads = 0", |p, _| p.heads = 0),
        ("sections not summing to D/2", |p, _| p.positions = RotaryPositions::ThreeD { sections: [1, 1, 1] }),
        ("theta = 0", |p, _| p.theta = 0.0),
        ("NaN theta", |p, _| p.theta = f32::NAN),
        ("1-D positions against 3-D (or the reverse)", |p, _| {
            p.positions = match p.positions {
                RotaryPositions::OneD => RotaryPositions::ThreeD { sections: [p.head_dim / 2, 0, 0] },
                RotaryPositions::ThreeD { .. } => RotaryPositions::OneD,
            }
        }),
        ("f32 positions", |p, x| x.1 = filled(DType::F32, &p.positions_shape())),
        ("out of the wrong shape", |p, x| x.2 = filled(p.dtype, &[p.tokens, p.heads + 1, p.head_dim])),
    ];
    let run = |p: &_, x: &RotaryX| exec::rotary(b, p, &x.0, &x.1, &x.2);
    let oracle = |p: &_, x: &RotaryX| exec::rotary(&Ref, p, &x.0, &x.1, &x.2);
    expect_rejected("rotary", b, (p, x), run, oracle, Corruptions { one: c, many: &[] })
}

/// SwiGLU.
///
/// # Errors
/// See [`expect_rejected`].
pub fn swiglu<B: Backend>(b: &B, dtype: DType, seed: u64) -> Check {
    let mut rng = gen::rng(seed);
    let (rows, inter) = (rng.gen_range(1..=5), rng.gen_range(1..=10));
    let p = SwigluProblem { rows, inter, dtype };
    let x = (gen::normal_tensor(&mut rng, dtype, &[rows, 2 * inter], 1.0), gen::poison(dtype, &[rows, inter]));
    let c: &[Corruption<SwigluProblem, (HostTensor, HostTensor)>] = &[
        ("inter = 0", |p, _| p.inter = 0),
        ("x without the up half", |p, x| x.0 = filled(p.dtype, &[p.rows, p.inter])),
        ("y of the wrong shape", |p, x| x.1 = filled(p.dtype, &[p.rows + 1, p.inter])),
        ("y of another dtype", |p, x| x.1 = filled(other_float(p.dtype), &[p.rows, p.inter])),
        ("i32 problem dtype", |p, x| {
            p.dtype = DType::I32;
            x.0 = filled(DType::I32, &[p.rows, 2 * p.inter]);
            x.1 = filled(DType::I32, &[p.rows, p.inter]);
        }),
    ];
    let run = |p: &_, x: &(HostTensor, HostTensor)| exec::swiglu(b, p, &x.0, &x.1);
    let oracle = |p: &_, x: &(HostTensor, HostTensor)| exec::swiglu(&Ref, p, &x.0, &x.1);
    expect_rejected("swiglu", b, (p, x), run, oracle, Corruptions { one: c, many: &[] })
}

type Tensors3 = (HostTensor, HostTensor, HostTensor);

/// Embedding gather.
///
/// # Errors
/// See [`expect_rejected`].
pub fn embedding<B: Backend>(b: &B, dtype: DType, seed: u64) -> Check {
    let mut rng = gen::rng(seed);
    let (t, v, h) = (rng.gen_range(1..=6), rng.gen_range(2..=20), rng.gen_range(1..=10));
    let p = EmbeddingProblem { tokens: t, vocab: v, hidden: h, dtype };
    let ids: Vec<i32> = (0..t).map(|_| rng.gen_range(0..v as i32)).collect();
    let x: Tensors3 = (
        gen::normal_tensor(&mut rng, dtype, &[v, h], 1.0),
        HostTensor::from_i32(&[t], &ids),
        gen::poison(dtype, &[t, h]),
    );
    let c: &[Corruption<EmbeddingProblem, Tensors3>] = &[
        ("an id = V", |p, x| x.1 = with_value(&x.1, 0, p.vocab as f64)),
        ("an id = -1", |_, x| x.1 = with_value(&x.1, 0, -1.0)),
        ("vocab = 0", |p, _| p.vocab = 0),
        ("hidden = 0", |p, _| p.hidden = 0),
        ("table of another dtype", |p, x| x.0 = filled(other_float(p.dtype), &[p.vocab, p.hidden])),
        ("f32 ids", |p, x| x.1 = filled(DType::F32, &[p.tokens])),
        ("out of the wrong shape", |p, x| x.2 = filled(p.dtype, &[p.tokens, p.hidden + 1])),
    ];
    let many: &[Corruption<EmbeddingProblem, Tensors3>] = &[
        ("every id = V", |p, x| x.1 = all_set(&x.1, p.vocab as f64)),
        ("every id = -1", |_, x| x.1 = all_set(&x.1, -1.0)),
    ];
    let run = |p: &_, x: &Tensors3| exec::embedding(b, p, &x.0, &x.1, &x.2);
    let oracle = |p: &_, x: &Tensors3| exec::embedding(&Ref, p, &x.0, &x.1, &x.2);
    expect_rejected("embedding", b, (p, x), run, oracle, Corruptions { one: c, many })
}

/// Dense GEMM.
///
/// # Errors
/// See [`expect_rejected`].
pub fn gemm<B: Backend>(b: &B, dtype: DType, seed: u64) -> Check {
    let mut rng = gen::rng(seed);
    let (m, k) = (rng.gen_range(1..=8), rng.gen_range(1..=8));
    let p = GemmProblem { m, k, n: k + 1, b_transposed: rng.gen_bool(0.5), dtype };
    let bs = if p.b_transposed { [p.n, k] } else { [k, p.n] };
    let x: Tensors3 = (
        gen::normal_tensor(&mut rng, dtype, &[m, k], 1.0),
        gen::normal_tensor(&mut rng, dtype, &bs, 1.0),
        gen::poison(dtype, &[m, p.n]),
    );
    let c: &[Corruption<GemmProblem, Tensors3>] = &[
        ("b_transposed against b", |p, _| p.b_transposed = !p.b_transposed),
        ("c of another dtype", |p, x| x.2 = filled(other_float(p.dtype), &[p.m, p.n])),
        ("a of the wrong shape", |p, x| x.0 = filled(p.dtype, &[p.m + 1, p.k])),
        ("i32 problem dtype", |p, x| {
            p.dtype = DType::I32;
            x.0 = filled(DType::I32, &[p.m, p.k]);
        }),
    ];
    let run = |p: &_, x: &Tensors3| exec::gemm(b, p, &x.0, &x.1, &x.2);
    let oracle = |p: &_, x: &Tensors3| exec::gemm(&Ref, p, &x.0, &x.1, &x.2);
    expect_rejected("gemm", b, (p, x), run, oracle, Corruptions { one: c, many: &[] })
}

/// MoE layer.
///
/// # Errors
/// See [`expect_rejected`].
pub fn moe_layer<B: Backend>(b: &B, dtype: DType, seed: u64) -> Check {
    let mut rng = gen::rng(seed);
    let (t, h, e, i) = (rng.gen_range(1..=4), rng.gen_range(2..=8), rng.gen_range(2..=4), rng.gen_range(1..=4));
    let mut route = RouteProblem::new(t, e, 2, dtype);
    route.hidden = Some(h);
    let p = MoeLayerProblem { route, inter: i, add: rng.gen_bool(0.5) };
    let x = MoeBufs {
        x: gen::tensor(dtype, &[t, h], &gen::grid(&mut rng, t * h, 0.125, 1.0)),
        gate: gen::tensor(dtype, &[h, e], &gen::grid(&mut rng, h * e, 0.125, 0.5)),
        bias: None,
        w_up: gen::normal_tensor(&mut rng, dtype, &[e, h, 2 * i], 0.3),
        w_down: gen::normal_tensor(&mut rng, dtype, &[e, i, h], 0.3),
        add: p.add.then(|| gen::normal_tensor(&mut rng, dtype, &[t, h], 1.0)),
        out: gen::poison(dtype, &[t, h]),
    };
    let c: &[Corruption<MoeLayerProblem, MoeBufs>] = &[
        ("route without the fused gate", |p, _| p.route.hidden = None),
        ("inter = 0", |p, _| p.inter = 0),
        ("k = 0", |p, _| p.route.k = 0),
        ("k > experts", |p, _| p.route.k = p.route.experts + 1),
        ("w_up of the wrong shape", |p, x| x.w_up = filled(p.route.dtype, &[p.route.experts, p.hidden(), p.inter])),
        ("w_down of another dtype", |p, x| {
            x.w_down = filled(other_float(p.route.dtype), &[p.route.experts, p.inter, p.hidden()]);
        }),
        ("use_bias without a bias", |p, _| p.route.use_bias = true),
        ("add flag against the buffer", |p, _| p.add = !p.add),
        ("mask leaving one expert for k = 2", |p, _| {
            p.route.expert_mask = Some((0..p.route.experts).map(|e| e == 1).collect());
        }),
        // Errors of the sub-problems name the sub-op (route, permute, ...).
        ("route with hidden = Some(0)", |p, _| p.route.hidden = Some(0)),
        ("route with experts = 0", |p, _| p.route.experts = 0),
        ("route with an i32 dtype", |p, _| p.route.dtype = DType::I32),
        ("route with a mask of the wrong length", |p, _| p.route.expert_mask = Some(vec![true; p.route.experts + 1])),
        ("route with n_group not dividing E", |p, _| {
            p.route.groups = Some(GroupLimit { n_group: p.route.experts + 1, topk_group: 1 });
        }),
        ("route with NaN scaling", |p, _| p.route.scaling = f32::NAN),
        ("permute rows past i32", |p, _| p.route.tokens = i32::MAX as usize / p.route.k + 1),
        ("x of the wrong shape", |p, x| x.x = filled(p.route.dtype, &[p.route.tokens, p.hidden() + 1])),
        ("gate of another dtype", |p, x| x.gate = filled(other_float(p.route.dtype), &[p.hidden(), p.route.experts])),
        ("a bias without use_bias", |p, x| x.bias = Some(filled(DType::F32, &[p.route.experts]))),
        ("out of the wrong shape", |p, x| x.out = filled(p.route.dtype, &[p.route.tokens + 1, p.hidden()])),
    ];
    let (run, oracle) = (|p: &_, x: &_| exec::moe_layer(b, p, x), |p: &_, x: &_| exec::moe_layer(&Ref, p, x));
    expect_rejected("moe_layer", b, (p, x), run, oracle, Corruptions { one: c, many: &[] })
}

/// Rows copied by [`moekit_ops::Device::copy_rows`]: `src_row`, `dst_row`, `rows`.
type RowRange = (usize, usize, usize);

/// Uploads `src` and `dst`, copies, downloads `dst`.
fn run_copy_rows<B: moekit_ops::Device>(
    b: &B,
    r: &RowRange,
    x: &(HostTensor, HostTensor),
) -> moekit_ops::Result<HostTensor> {
    let src = b.upload(&x.0)?;
    let mut dst = b.upload(&x.1)?;
    b.copy_rows(&src, r.0, &mut dst, r.1, r.2)?;
    b.download(&dst)
}

/// Row copy (a [`moekit_ops::Device`] method, no `api::` wrapper).
///
/// # Errors
/// See [`expect_rejected`].
pub fn copy_rows<B: Backend>(b: &B, dtype: DType, seed: u64) -> Check {
    let mut rng = gen::rng(seed);
    let (sr, dr, h, d) = (rng.gen_range(1..=6), rng.gen_range(1..=6), rng.gen_range(1..=3), rng.gen_range(1..=8));
    let rows = rng.gen_range(0..=sr.min(dr));
    let r: RowRange = (rng.gen_range(0..=sr - rows), rng.gen_range(0..=dr - rows), rows);
    let x =
        (gen::normal_tensor(&mut rng, dtype, &[sr, h, d], 1.0), gen::normal_tensor(&mut rng, dtype, &[dr, h * d], 1.0));
    type X = (HostTensor, HostTensor);
    let c: &[Corruption<RowRange, X>] = &[
        ("dst rows one element wider", |_, x| {
            x.1 = filled(x.1.dtype(), &[x.1.shape()[0], x.1.numel() / x.1.shape()[0] + 1])
        }),
        ("src rows of another width", |_, x| {
            let s = x.0.shape().to_vec();
            let width = if s[1] * s[2] > 1 { s[1] * s[2] - 1 } else { 2 };
            x.0 = filled(x.0.dtype(), &[s[0], width]);
        }),
        ("a 0-d src", |_, x| x.0 = filled(x.0.dtype(), &[])),
        ("a 0-d dst", |_, x| x.1 = filled(x.1.dtype(), &[])),
        ("dst of another dtype", |_, x| x.1 = filled(other_float(x.1.dtype()), x.1.shape())),
        ("an i32 src", |_, x| x.0 = filled(DType::I32, x.0.shape())),
        ("one row past the end of src", |r, x| {
            r.2 = x.0.shape()[0].min(x.1.shape()[0]);
            r.0 = x.0.shape()[0] - r.2 + 1;
            r.1 = 0;
        }),
        ("one row past the end of dst", |r, x| {
            r.2 = x.0.shape()[0].min(x.1.shape()[0]);
            r.0 = 0;
            r.1 = x.1.shape()[0] - r.2 + 1;
        }),
        ("a range that overflows usize", |r, _| {
            r.0 = usize::MAX;
            r.2 = 2;
        }),
    ];
    let run = |r: &RowRange, x: &X| run_copy_rows(b, r, x);
    let oracle = |r: &RowRange, x: &X| run_copy_rows(&Ref, r, x);
    expect_rejected("copy_rows", b, (r, x), run, oracle, Corruptions { one: c, many: &[] })
}

/// Uploads `x`, reshapes it to `shape`, downloads it.
fn run_reshape<B: moekit_ops::Device>(b: &B, shape: &[usize], x: &HostTensor) -> moekit_ops::Result<HostTensor> {
    let mut buf = b.upload(x)?;
    b.reshape(&mut buf, shape)?;
    b.download(&buf)
}

/// Reshape (a [`moekit_ops::Device`] method, no `api::` wrapper).
///
/// # Errors
/// See [`expect_rejected`].
pub fn reshape<B: Backend>(b: &B, dtype: DType, seed: u64) -> Check {
    let mut rng = gen::rng(seed);
    let (t, h, d) = (rng.gen_range(1..=6), rng.gen_range(1..=4), rng.gen_range(1..=8));
    let x = gen::normal_tensor(&mut rng, dtype, &[t, h * d], 1.0);
    let shape = vec![t, h, d];
    let c: &[Corruption<Vec<usize>, HostTensor>] = &[
        ("one element too many", |s, _| s[0] += 1),
        ("two axes, one element too many", |s, _| *s = vec![s[0], s[1] * s[2] + 1]),
        ("a zero axis", |s, _| s.push(0)),
        ("a 0-d shape for more than one element", |s, x| {
            s.clear();
            *x = filled(x.dtype(), &[x.shape()[0] + 1, x.shape()[1]]);
        }),
        ("a count that overflows usize", |s, _| *s = vec![usize::MAX, 2, 1]),
        ("an i32 buffer of another count", |s, x| {
            *x = filled(DType::I32, &[s.iter().product::<usize>() + 1]);
        }),
    ];
    let run = |s: &Vec<usize>, x: &HostTensor| run_reshape(b, s, x);
    let oracle = |s: &Vec<usize>, x: &HostTensor| run_reshape(&Ref, s, x);
    expect_rejected("reshape", b, (shape, x), run, oracle, Corruptions { one: c, many: &[] })
}
