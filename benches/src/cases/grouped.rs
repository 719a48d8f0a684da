//! Grouped expert GEMM, contiguous layout: gate/up `[R, H] · [E, H, 2I]` with SwiGLU, or
//! down `[R, I] · [E, I, H]`, rows grouped by Zipf-skewed expert counts.

use super::chunked::{reference_grouped, WEIGHT_BUDGET};
use super::scope;
use crate::data::{counts, expert_of_row, offsets, sample_indices, select_rows, uniform, zipf_ids};
use crate::shapes::MoeShape;
use crate::verify::{OutCheck, Verdict};
use crate::workload::{arity, Op, Workload};
use moekit_ops::tolerance::Tolerance;
use moekit_ops::{api, Backend, DType, GroupedGemmIo, GroupedGemmProblem, HostTensor, Result};

/// `x [R, K]`, `w [E, K, N]`, `offsets [E+1]` → `y [R, N_out]`.
#[derive(Debug)]
pub struct GroupedCase {
    problem: GroupedGemmProblem,
    rows: usize,
    offsets: Vec<i32>,
    inputs: Vec<HostTensor>,
}

impl GroupedCase {
    /// The up GEMM (`up = true`: `K = H`, `N = 2I`, SwiGLU) or the down GEMM (`K = I`,
    /// `N = H`) of `shape`, `R = T·k` rows.
    ///
    /// # Errors
    /// Validation errors of the problem.
    pub fn new(shape: &MoeShape, dtype: DType, up: bool, seed: u64) -> Result<Self> {
        let (t, h, e, k, i) = (shape.tokens, shape.hidden, shape.experts, shape.k, shape.inter);
        let rows = t * k;
        let (kd, nd) = if up { (h, 2 * i) } else { (i, h) };
        let mut problem = GroupedGemmProblem::contiguous(rows, e, kd, nd, dtype);
        problem.swiglu = up;
        problem.validate()?;
        let offs = offsets(&counts(&zipf_ids(t, e, k, shape.skew, seed ^ 0x52), e));
        let x = uniform(dtype, &[rows, kd], 1.0, seed ^ 0x71)?;
        // Scale 1/sqrt(K·(1/3)) keeps every output near unit size.
        let w = uniform(dtype, &[e, kd, nd], (3.0 / kd as f32).sqrt(), seed ^ 0x72)?;
        let o = HostTensor::from_i32(&[e + 1], &offs);
        Ok(GroupedCase { problem, rows, offsets: offs, inputs: vec![x, w, o] })
    }

    fn experts_with_rows(&self) -> usize {
        self.offsets.windows(2).filter(|w| w[1] > w[0]).count()
    }

    fn y_tol(&self) -> Tolerance {
        let t = Tolerance::for_dtype(self.problem.dtype, self.problem.k_dim);
        // NOTE: SwiGLU multiplies two accumulated halves: their relative errors add.
        if self.problem.swiglu {
            t.times(2.0)
        } else {
            t
        }
    }
}

impl Workload for GroupedCase {
    fn op(&self) -> Op {
        if self.problem.swiglu {
            Op::GroupedGemmUp
        } else {
            Op::GroupedGemmDown
        }
    }
    fn dims(&self) -> Vec<usize> {
        vec![self.rows, self.problem.k_dim, self.problem.n_dim, self.problem.experts]
    }
    fn flops(&self) -> Option<f64> {
        Some(self.problem.flops(self.rows))
    }
    fn bytes(&self) -> f64 {
        let p = &self.problem;
        let elems = self.rows * p.k_dim + self.experts_with_rows() * p.k_dim * p.n_dim + self.rows * p.n_out();
        (elems * p.dtype.size() + (p.experts + 1) * 4) as f64
    }
    fn inputs(&self) -> &[HostTensor] {
        &self.inputs
    }
    fn input_names(&self) -> &'static [&'static str] {
        &["x", "w", "group"]
    }
    fn outputs(&self) -> Vec<(DType, Vec<usize>)> {
        vec![(self.problem.dtype, self.problem.y_shape())]
    }
    fn output_checks(&self) -> Vec<(&'static str, OutCheck)> {
        vec![("y", OutCheck::Float(self.y_tol()))]
    }
    fn call<B: Backend>(&self, b: &B, ins: &[B::Buffer], outs: &mut [B::Buffer]) -> Result<()> {
        let ([x, w, group], [y]) = (ins, outs) else { return Err(arity("grouped_gemm")) };
        api::grouped_gemm(b, &self.problem, GroupedGemmIo { x, w, group, row_to_token: None, row_scale: None, y })
    }
    fn reference_work(&self) -> f64 {
        self.problem.flops(self.rows) / 2.0
    }
    fn sample_units(&self) -> usize {
        self.rows
    }
    /// The sampled rows against just the experts that own them (a few experts per reference
    /// call).
    fn verify_sample(&self, got: &[HostTensor], samples: usize, seed: u64) -> Result<Verdict> {
        let rows = sample_indices(self.rows, samples, seed);
        let owners: Vec<usize> = rows.iter().map(|&r| expert_of_row(&self.offsets, r)).collect();
        let x = select_rows(&self.inputs[0], &rows)?;
        let y = reference_grouped(&self.problem, &x, &owners, &self.inputs[1], WEIGHT_BUDGET)?;
        let mut v = Verdict::new(scope(self.rows, rows.len(), "rows"));
        v.add("y", &y, &select_rows(&got[0], &rows)?, OutCheck::Float(self.y_tol()))?;
        Ok(v)
    }
    fn ceiling_gemm(&self) -> Option<(usize, usize, usize)> {
        Some((self.rows, self.problem.k_dim, self.problem.n_dim))
    }
}
