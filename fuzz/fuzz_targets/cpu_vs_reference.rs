//! Tiny random valid problems on the CPU backend and on the reference: integer outputs equal
//! exactly, float outputs within the tolerance of `moekit_ops::tolerance`.

#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use moekit_cpu::CpuBackend;
use moekit_ops::tolerance::{compare, rms, Tolerance};
use moekit_ops::{
    api, AttentionIo, AttentionMask, AttentionProblem, Backend, CombineIo, CombineProblem, DType, GroupedGemmIo,
    GroupedGemmProblem, HostTensor, PermuteIo, PermuteProblem, RouteIo, RouteProblem, ScoreFn, TensorMeta,
};
use moekit_reference::ReferenceBackend;

fn small(x: u8, lo: usize, hi: usize) -> usize {
    lo + x as usize % (hi - lo + 1)
}

fn dtype(x: u8) -> DType {
    DType::FLOATS[x as usize % 3]
}

/// Values on a grid of 1/4 in [-4, 4): exactly representable in every dtype, and far enough
/// apart that the f32 and f64 paths order them the same (no near-ties in routing).
fn grid(dt: DType, shape: &[usize], seed: &[u8]) -> HostTensor {
    let n: usize = shape.iter().product();
    let v: Vec<f32> =
        (0..n).map(|i| (seed.get(i % seed.len().max(1)).copied().unwrap_or(0) as f32 % 32.0 - 16.0) / 4.0).collect();
    HostTensor::from_f32(dt, shape, &v)
}

#[derive(Arbitrary, Debug)]
enum Case {
    Route { t: u8, e: u8, k: u8, dt: u8, sigmoid: bool, renorm: bool, mask: u8 },
    PermuteCombine { t: u8, h: u8, e: u8, k: u8, align: u8, dt: u8 },
    GroupedGemm { counts: Vec<u8>, kd: u8, nd: u8, swiglu: bool, dt: u8 },
    Attention { lq: u8, lk: u8, hkv: u8, group: u8, causal: bool, dt: u8 },
}

#[derive(Arbitrary, Debug)]
struct Input {
    case: Case,
    seed: Vec<u8>,
}

/// The buffers each backend wrote, as f64.
fn outputs<B: Backend<Buffer = HostTensor>>(b: &B, case: &Case, seed: &[u8]) -> Option<Vec<(String, HostTensor)>> {
    match *case {
        Case::Route { t, e, k, dt, sigmoid, renorm, mask } => {
            let (t, e) = (small(t, 0, 6), small(e, 1, 8));
            let mut p = RouteProblem::new(t, e, small(k, 1, e), dtype(dt));
            p.score = if sigmoid { ScoreFn::Sigmoid } else { ScoreFn::Softmax };
            p.renormalize = renorm;
            p.expert_mask = (mask % 2 == 1).then(|| (0..e).map(|i| (mask >> (i % 7)) & 2 == 0 || i == 0).collect());
            p.validate().ok()?;
            let logits = grid(p.dtype, &[t, e], seed);
            let (mut ids, mut w, mut c, mut l) = (
                HostTensor::zeros(DType::I32, &[t, p.k]),
                HostTensor::zeros(DType::F32, &[t, p.k]),
                HostTensor::zeros(DType::I32, &[e]),
                HostTensor::zeros(DType::F32, &[e]),
            );
            let io = RouteIo {
                logits: &logits,
                gate: None,
                bias: None,
                ids: &mut ids,
                weights: &mut w,
                counts: &mut c,
                load: &mut l,
            };
            api::route(b, &p, io).unwrap();
            Some(vec![("ids".into(), ids), ("weights".into(), w), ("counts".into(), c), ("load".into(), l)])
        }
        Case::PermuteCombine { t, h, e, k, align, dt } => {
            let (t, h, e) = (small(t, 0, 6), small(h, 1, 9), small(e, 1, 6));
            let p = PermuteProblem {
                tokens: t,
                hidden: h,
                experts: e,
                k: small(k, 1, 4),
                align: small(align, 1, 4),
                dtype: dtype(dt),
            };
            let (k, r) = (p.k, p.max_rows());
            let hidden = grid(p.dtype, &[t, h], seed);
            let ids: Vec<i32> =
                (0..t * k).map(|i| (seed.get(i).copied().unwrap_or(i as u8) as usize % e) as i32).collect();
            let ids = HostTensor::from_i32(&[t, k], &ids);
            let mut permuted = HostTensor::zeros(p.dtype, &[r, h]);
            let mut offsets = HostTensor::zeros(DType::I32, &[e + 1]);
            let mut rtt = HostTensor::zeros(DType::I32, &[r]);
            let mut tsr = HostTensor::zeros(DType::I32, &[t, k]);
            let io = PermuteIo {
                hidden: &hidden,
                ids: &ids,
                permuted: &mut permuted,
                offsets: &mut offsets,
                row_to_token: &mut rtt,
                token_slot_to_row: &mut tsr,
            };
            api::permute(b, &p, io).unwrap();
            let c = CombineProblem { tokens: t, hidden: h, k, rows: r, add: true, dtype: p.dtype };
            if c.validate().is_err() {
                return Some(vec![("permuted".into(), permuted), ("offsets".into(), offsets)]);
            }
            let weights = grid(DType::F32, &[t, k], &seed[seed.len() / 2..]);
            let mut out = HostTensor::zeros(p.dtype, &[t, h]);
            let io = CombineIo {
                y: &permuted,
                weights: &weights,
                token_slot_to_row: &tsr,
                add: Some(&hidden),
                out: &mut out,
            };
            api::unpermute_combine(b, &c, io).unwrap();
            Some(vec![
                ("permuted".into(), permuted),
                ("offsets".into(), offsets),
                ("row_to_token".into(), rtt),
                ("token_slot_to_row".into(), tsr),
                ("combined".into(), out),
            ])
        }
        Case::GroupedGemm { ref counts, kd, nd, swiglu, dt } => {
            let counts: Vec<usize> = counts.iter().take(5).map(|&c| c as usize % 4).collect();
            let e = counts.len().max(1);
            let mut offsets = vec![0i32];
            for i in 0..e {
                offsets.push(offsets[i] + counts.get(i).copied().unwrap_or(0) as i32);
            }
            let rows = *offsets.last().unwrap() as usize;
            let n = small(nd, 1, 6) * if swiglu { 2 } else { 1 };
            let mut p = GroupedGemmProblem::contiguous(rows, e, small(kd, 1, 9), n, dtype(dt));
            p.swiglu = swiglu;
            let x = grid(p.dtype, &p.x_shape(), seed);
            let w = grid(p.dtype, &p.w_shape(), &seed[seed.len() / 3..]);
            let group = HostTensor::from_i32(&[e + 1], &offsets);
            let mut y = HostTensor::zeros(p.dtype, &p.y_shape());
            let io = GroupedGemmIo { x: &x, w: &w, group: &group, row_to_token: None, row_scale: None, y: &mut y };
            api::grouped_gemm(b, &p, io).unwrap();
            Some(vec![("y".into(), y)])
        }
        Case::Attention { lq, lk, hkv, group, causal, dt } => {
            let (lq, lk) = (small(lq, 1, 5), small(lk, 1, 5));
            let (hkv, hq) = (small(hkv, 1, 2), small(hkv, 1, 2) * small(group, 1, 2));
            let p = AttentionProblem {
                cu_seqlens_q: vec![0, lq],
                cu_seqlens_k: vec![0, lk],
                heads_q: hq,
                heads_kv: hkv,
                head_dim: 64,
                scale: 0.125,
                softcap: None,
                mask: if causal { AttentionMask::causal() } else { AttentionMask::none() },
                dtype: dtype(dt),
            };
            p.validate().ok()?;
            let q = grid(p.dtype, &[lq, hq, 64], seed);
            let k = grid(p.dtype, &[lk, hkv, 64], &seed[seed.len() / 3..]);
            let v = grid(p.dtype, &[lk, hkv, 64], &seed[seed.len() / 2..]);
            let mut o = HostTensor::zeros(p.dtype, &[lq, hq, 64]);
            let mut lse = HostTensor::zeros(DType::F32, &[hq, lq]);
            api::attention(b, &p, AttentionIo { q: &q, k: &k, v: &v, o: &mut o, lse: &mut lse }).unwrap();
            Some(vec![("o".into(), o), ("lse".into(), lse)])
        }
    }
}

/// Reduction length behind each case's floats (for the tolerance).
fn reduction(case: &Case) -> usize {
    match case {
        Case::Route { e, .. } => *e as usize + 1,
        Case::PermuteCombine { k, .. } => *k as usize + 2,
        Case::GroupedGemm { kd, .. } => *kd as usize + 1,
        Case::Attention { lk, .. } => 64 * (*lk as usize + 1),
    }
}

fuzz_target!(|input: Input| {
    let Some(want) = outputs(&ReferenceBackend, &input.case, &input.seed) else { return };
    let got =
        outputs(&CpuBackend::new(), &input.case, &input.seed).expect("the CPU refused a problem the reference took");
    for ((name, w), (_, g)) in want.iter().zip(&got) {
        assert_eq!((w.dtype(), w.shape()), (g.dtype(), g.shape()), "{name}");
        if w.dtype() == DType::I32 {
            assert_eq!(w, g, "{name}");
        } else {
            let out_dtype = w.dtype();
            let tol = Tolerance::for_dtype(out_dtype, reduction(&input.case)).times(4.0);
            let (w, g) = (w.to_f64_vec(), g.to_f64_vec());
            // NOTE: inputs are O(1) grid values, so an output whose RMS is near 0 is a
            // cancellation (exactly 0 in exact arithmetic, roundoff in either backend); the
            // relative check is ill-conditioned there, so it is checked in absolute terms.
            if rms(&w) < 1e-3 {
                let worst = w.iter().zip(&g).map(|(a, b)| (a - b).abs()).fold(0.0, f64::max);
                assert!(worst <= tol.rel, "{name}: max abs err {worst:e} on a near-zero output (tol {:e})", tol.rel);
            } else {
                let report = compare(name, &w, &g, tol);
                assert!(report.ok(), "{report}");
            }
        }
    }
});
