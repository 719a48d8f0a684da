//! Arbitrary problem fields and buffer shapes, dtypes and contents through `moekit_ops::api`
//! on the reference backend, with tiny sizes: every call returns `Ok` or a typed error, and
//! nothing panics.

#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use moekit_ops::{
    api, AttentionIo, AttentionMask, AttentionProblem, ColumnRanges, CombineIo, CombineProblem, DType, GemmLayout,
    GroupLimit, GroupedGemmIo, GroupedGemmProblem, HostTensor, PermuteIo, PermuteProblem, RouteIo, RouteProblem,
    ScoreFn, WeightLayout, Window,
};
use moekit_reference::ReferenceBackend;

/// A size in `0..=max`.
fn small(x: u8, max: usize) -> usize {
    x as usize % (max + 1)
}

fn dtype(x: u8) -> DType {
    [DType::F32, DType::F16, DType::BF16, DType::I32][x as usize % 4]
}

/// One buffer: the shape and dtype the problem implies, or (when set) arbitrary ones.
#[derive(Arbitrary, Debug)]
struct Buf {
    shape: Option<Vec<u8>>,
    dtype: Option<u8>,
}

impl Buf {
    /// The tensor, filled from `fill` (ints as they are, floats scaled, `i32::MIN` as NaN).
    fn make(&self, dt: DType, shape: &[usize], fill: &[i32]) -> HostTensor {
        let dt = self.dtype.map_or(dt, dtype);
        let shape: Vec<usize> = match &self.shape {
            Some(s) => s.iter().take(4).map(|&d| small(d, 6)).collect(),
            None => shape.to_vec(),
        };
        let n: usize = shape.iter().product();
        let at = |i: usize| if fill.is_empty() { 0 } else { fill[i % fill.len()] };
        if dt == DType::I32 {
            HostTensor::from_i32(&shape, &(0..n).map(at).collect::<Vec<_>>())
        } else {
            let v: Vec<f32> = (0..n).map(|i| if at(i) == i32::MIN { f32::NAN } else { at(i) as f32 / 16.0 }).collect();
            HostTensor::from_f32(dt, &shape, &v)
        }
    }
}

#[derive(Arbitrary, Debug)]
enum Case {
    Route {
        t: u8,
        e: u8,
        k: u8,
        h: Option<u8>,
        dt: u8,
        sigmoid: bool,
        bias: bool,
        mask: Option<Vec<bool>>,
        groups: Option<(u8, u8)>,
        renorm: bool,
        scaling: f32,
        bufs: [Buf; 7],
    },
    Permute {
        t: u8,
        h: u8,
        e: u8,
        k: u8,
        align: u8,
        dt: u8,
        bufs: [Buf; 6],
    },
    Combine {
        t: u8,
        h: u8,
        k: u8,
        rows: u8,
        add: bool,
        dt: u8,
        bufs: [Buf; 5],
    },
    GroupedGemm {
        rows: u8,
        masked: bool,
        e: u8,
        kd: u8,
        nd: u8,
        nk: bool,
        swiglu: bool,
        scale: bool,
        gather: Option<u8>,
        dt: u8,
        bufs: [Buf; 6],
    },
    Attention {
        seqs_q: Vec<u8>,
        seqs_k: Vec<u8>,
        hq: u8,
        hkv: u8,
        d: u8,
        causal: bool,
        window: Option<(u8, u8)>,
        ranges: Option<Vec<i8>>,
        softcap: Option<f32>,
        dt: u8,
        bufs: [Buf; 5],
    },
}

#[derive(Arbitrary, Debug)]
struct Input {
    case: Case,
    fill: Vec<i32>,
}

fn cumulative(lens: &[u8]) -> Vec<usize> {
    let mut cu = vec![0];
    for &l in lens.iter().take(3) {
        cu.push(cu.last().unwrap() + small(l, 4));
    }
    cu
}

fuzz_target!(|input: Input| {
    let b = ReferenceBackend;
    let f = &input.fill;
    // Every outcome is fine except a panic; the results are dropped on purpose.
    match input.case {
        Case::Route { t, e, k, h, dt, sigmoid, bias, mask, groups, renorm, scaling, bufs } => {
            let (t, e, k) = (small(t, 6), small(e, 8), small(k, 9));
            let mut p = RouteProblem::new(t, e, k, dtype(dt));
            p.hidden = h.map(|h| small(h, 4));
            p.score = if sigmoid { ScoreFn::Sigmoid } else { ScoreFn::Softmax };
            p.use_bias = bias;
            p.expert_mask = mask.map(|m| m.into_iter().take(10).collect());
            p.groups = groups.map(|(n, g)| GroupLimit { n_group: small(n, 4), topk_group: small(g, 4) });
            p.renormalize = renorm;
            p.scaling = scaling;
            let hd = p.hidden.unwrap_or(0);
            let logits = bufs[0].make(p.dtype, &[t, if p.hidden.is_some() { hd } else { e }], f);
            let gate = bufs[1].make(p.dtype, &[hd, e], f);
            let bias_t = bufs[2].make(DType::F32, &[e], f);
            let mut ids = bufs[3].make(DType::I32, &[t, k], f);
            let mut weights = bufs[4].make(DType::F32, &[t, k], f);
            let mut counts = bufs[5].make(DType::I32, &[e], f);
            let mut load = bufs[6].make(DType::F32, &[e], f);
            let io = RouteIo {
                logits: &logits,
                gate: p.hidden.map(|_| &gate),
                bias: bias.then_some(&bias_t),
                ids: &mut ids,
                weights: &mut weights,
                counts: &mut counts,
                load: &mut load,
            };
            let _ = api::route(&b, &p, io);
        }
        Case::Permute { t, h, e, k, align, dt, bufs } => {
            let p = PermuteProblem {
                tokens: small(t, 6),
                hidden: small(h, 5),
                experts: small(e, 6),
                k: small(k, 4),
                align: small(align, 4),
                dtype: dtype(dt),
            };
            let (t, h, e, k, r) = (p.tokens, p.hidden, p.experts, p.k, p.max_rows());
            let hidden = bufs[0].make(p.dtype, &[t, h], f);
            let ids = bufs[1].make(DType::I32, &[t, k], f);
            let mut permuted = bufs[2].make(p.dtype, &[r, h], f);
            let mut offsets = bufs[3].make(DType::I32, &[e + 1], f);
            let mut row_to_token = bufs[4].make(DType::I32, &[r], f);
            let mut tsr = bufs[5].make(DType::I32, &[t, k], f);
            let io = PermuteIo {
                hidden: &hidden,
                ids: &ids,
                permuted: &mut permuted,
                offsets: &mut offsets,
                row_to_token: &mut row_to_token,
                token_slot_to_row: &mut tsr,
            };
            let _ = api::permute(&b, &p, io);
        }
        Case::Combine { t, h, k, rows, add, dt, bufs } => {
            let p = CombineProblem {
                tokens: small(t, 6),
                hidden: small(h, 5),
                k: small(k, 4),
                rows: small(rows, 12),
                add,
                dtype: dtype(dt),
            };
            let (t, h, k, r) = (p.tokens, p.hidden, p.k, p.rows);
            let y = bufs[0].make(p.dtype, &[r, h], f);
            let weights = bufs[1].make(DType::F32, &[t, k], f);
            let tsr = bufs[2].make(DType::I32, &[t, k], f);
            let add_t = bufs[3].make(p.dtype, &[t, h], f);
            let mut out = bufs[4].make(p.dtype, &[t, h], f);
            let io = CombineIo {
                y: &y,
                weights: &weights,
                token_slot_to_row: &tsr,
                add: add.then_some(&add_t),
                out: &mut out,
            };
            let _ = api::unpermute_combine(&b, &p, io);
        }
        Case::GroupedGemm { rows, masked, e, kd, nd, nk, swiglu, scale, gather, dt, bufs } => {
            let layout = if masked {
                GemmLayout::Masked { capacity: small(rows, 4) }
            } else {
                GemmLayout::Contiguous { rows: small(rows, 8) }
            };
            let p = GroupedGemmProblem {
                layout,
                experts: small(e, 4),
                k_dim: small(kd, 5),
                n_dim: small(nd, 6),
                weight_layout: if nk { WeightLayout::NK } else { WeightLayout::KN },
                swiglu,
                row_scale: scale,
                gather_tokens: gather.map(|g| small(g, 6)),
                dtype: dtype(dt),
            };
            let e = p.experts;
            let x = bufs[0].make(p.dtype, &p.x_shape(), f);
            let w = bufs[1].make(p.dtype, &p.w_shape(), f);
            let group_len = if masked { e } else { e + 1 };
            let group = bufs[2].make(DType::I32, &[group_len], f);
            let rtt = bufs[3].make(DType::I32, &[p.out_rows()], f);
            let rs = bufs[4].make(DType::F32, &p.row_scale_shape(), f);
            let mut y = bufs[5].make(p.dtype, &p.y_shape(), f);
            let io = GroupedGemmIo {
                x: &x,
                w: &w,
                group: &group,
                row_to_token: p.gather_tokens.map(|_| &rtt),
                row_scale: scale.then_some(&rs),
                y: &mut y,
            };
            let _ = api::grouped_gemm(&b, &p, io);
        }
        Case::Attention { seqs_q, seqs_k, hq, hkv, d, causal, window, ranges, softcap, dt, bufs } => {
            let cu_q = cumulative(&seqs_q);
            let cu_k = cumulative(&seqs_k);
            let tk = *cu_k.last().unwrap();
            let column_ranges = ranges.map(|r| {
                let v =
                    |o: usize| (0..tk).map(|j| r.get((j * 4 + o) % r.len().max(1)).map_or(0, |&x| x as i32)).collect();
                ColumnRanges { lts: v(0), lte: v(1), uts: v(2), ute: v(3) }
            });
            let p = AttentionProblem {
                cu_seqlens_q: cu_q,
                cu_seqlens_k: cu_k,
                heads_q: small(hq, 4),
                heads_kv: small(hkv, 4),
                head_dim: [0, 32, 64, 128][d as usize % 4],
                scale: 0.125,
                softcap,
                mask: AttentionMask {
                    causal,
                    window: window.map(|(l, r)| Window { left: small(l, 4), right: small(r, 4) }),
                    column_ranges,
                },
                dtype: dtype(dt),
            };
            let (tq, hq, hkv, d) = (p.total_q(), p.heads_q, p.heads_kv, p.head_dim);
            let q = bufs[0].make(p.dtype, &[tq, hq, d], f);
            let k = bufs[1].make(p.dtype, &[tk, hkv, d], f);
            let v = bufs[2].make(p.dtype, &[tk, hkv, d], f);
            let mut o = bufs[3].make(p.dtype, &[tq, hq, d], f);
            let mut lse = bufs[4].make(DType::F32, &[hq, tq], f);
            let _ = api::attention(&b, &p, AttentionIo { q: &q, k: &k, v: &v, o: &mut o, lse: &mut lse });
        }
    }
});
