//! Grouped expert GEMM against the reference: contiguous and masked layouts, both weight
//! layouts, SwiGLU and row-scale epilogues, gather prologue, empty experts, `R = 0`.

use crate::compare::{close_floor, ctx, dot_scale, Check};
use crate::exec::{self, GroupedGemmBufs};
use crate::gen;
use crate::strategies::{dim, few_experts, seed, skew};
use moekit_ops::tolerance::Tolerance;
use moekit_ops::{Backend, DType, GemmLayout, GroupedGemmProblem, HostTensor, WeightLayout};
use moekit_reference::ReferenceBackend;
use proptest::prelude::*;
use rand::Rng;

/// One grouped GEMM case (the dtype is replaced by the test's).
#[derive(Clone, Debug)]
pub struct GroupedGemmCase {
    /// The problem.
    pub problem: GroupedGemmProblem,
    /// Contiguous: valid rows `offsets[E]` (the rest up to `R` is tail); masked: unused.
    pub valid_rows: usize,
    /// Segment alignment used to build the offsets.
    pub align: usize,
    /// Zipf exponent of the rows per expert.
    pub skew: f64,
    /// Data seed.
    pub seed: u64,
}

/// Grouped GEMM cases over layouts, epilogues, prologue and sizes that are not multiples of 8.
pub fn grouped_gemm_cases() -> impl Strategy<Value = GroupedGemmCase> {
    let flags = (any::<bool>(), any::<bool>(), any::<bool>(), any::<bool>(), any::<bool>());
    let rows = prop_oneof![1 => Just(0usize), 6 => 1..=80usize];
    (few_experts(), dim(64), dim(48), flags, rows, 0..=4usize, 0..=12usize, 0..=24usize, skew(), seed()).prop_map(
        |(e, k, n, (masked, nk, swiglu, row_scale, gather), valid, tail, cap, tokens, skew, seed)| {
            let align = if seed % 3 == 0 { 4 } else { 1 };
            let layout = if masked {
                GemmLayout::Masked { capacity: cap }
            } else {
                GemmLayout::Contiguous { rows: valid.div_ceil(align) * align + e * (align - 1) + tail }
            };
            let problem = GroupedGemmProblem {
                layout,
                experts: e,
                k_dim: k,
                n_dim: if swiglu { 2 * n } else { n },
                weight_layout: if nk { WeightLayout::NK } else { WeightLayout::KN },
                swiglu,
                row_scale,
                gather_tokens: (gather && !masked).then_some(tokens),
                dtype: DType::F32,
            };
            GroupedGemmCase { problem, valid_rows: valid, align, skew, seed }
        },
    )
}

/// The buffers of a case in the problem's dtype.
pub fn grouped_gemm_inputs(p: &GroupedGemmProblem, c: &GroupedGemmCase) -> GroupedGemmBufs {
    let mut rng = gen::rng(c.seed);
    let e = p.experts;
    let group = match p.layout {
        GemmLayout::Contiguous { .. } => {
            let counts = gen::skewed_counts(&mut rng, e, c.valid_rows, c.skew);
            HostTensor::from_i32(&[e + 1], &gen::offsets_from_counts(&counts, c.align))
        }
        GemmLayout::Masked { capacity } => {
            let counts: Vec<i32> =
                (0..e).map(|_| if rng.gen_bool(0.2) { 0 } else { rng.gen_range(0..=capacity) as i32 }).collect();
            HostTensor::from_i32(&[e], &counts)
        }
    };
    let rows = p.out_rows();
    let row_to_token = p.gather_tokens.map(|t| {
        let ids: Vec<i32> =
            (0..rows).map(|_| if t == 0 || rng.gen_bool(0.1) { -1 } else { rng.gen_range(0..t) as i32 }).collect();
        HostTensor::from_i32(&[rows], &ids)
    });
    let wscale = 1.0 / (p.k_dim as f32).sqrt();
    GroupedGemmBufs {
        x: gen::normal_tensor(&mut rng, p.dtype, &p.x_shape(), 1.0),
        w: gen::normal_tensor(&mut rng, p.dtype, &p.w_shape(), wscale),
        group,
        row_to_token,
        row_scale: p.row_scale.then(|| {
            let shape = p.row_scale_shape();
            HostTensor::from_f32(DType::F32, &shape, &gen::uniform(&mut rng, shape.iter().product(), 0.25, 2.0))
        }),
        y: gen::poison(p.dtype, &p.y_shape()),
    }
}

/// Grouped GEMM on `b` equals the reference within the tolerance of a `K`-term reduction
/// (doubled with SwiGLU, whose output multiplies two accumulations).
///
/// # Errors
/// A mismatch report.
pub fn grouped_gemm_matches_reference<B: Backend>(b: &B, dtype: DType, c: &GroupedGemmCase) -> Check {
    let p = GroupedGemmProblem { dtype, ..c.problem.clone() };
    let x = grouped_gemm_inputs(&p, c);
    let want = exec::grouped_gemm(&ReferenceBackend, &p, &x).map_err(ctx("reference grouped_gemm"))?;
    let got = exec::grouped_gemm(b, &p, &x).map_err(ctx("grouped_gemm"))?;
    let tol = Tolerance::for_dtype(dtype, p.k_dim).times(if p.swiglu { 2.0 } else { 1.0 });
    close_floor("y", &want, &got, tol, dtype, dot_scale(&x.x, &x.w, p.k_dim))
}
