//! Grouped expert GEMM: contiguous and masked layouts, SwiGLU and row-scale epilogues,
//! gather prologue.

use crate::validated::{expect, expect_float, fits_i32};
use crate::{DType, Error, Result, TensorMeta, Validated};

const OP: &str = "grouped_gemm";

/// How the rows of `x` are grouped by expert.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GemmLayout {
    /// `x [R, K]` (or gathered, see [`GroupedGemmProblem::gather_tokens`]); rows of expert
    /// `e` are `offsets[e]..offsets[e+1]` (`offsets [E+1] i32`, `offsets[0] = 0`,
    /// non-decreasing, `offsets[E] <= R`); output `[R, N_out]`, rows from `offsets[E]` to
    /// `R` are zero.
    Contiguous {
        /// Rows `R`.
        rows: usize,
    },
    /// `x [E, C, K]` with device-side `counts [E] i32` (each in `0..=C`), for decode under CUDA
    /// graphs; output `[E, C, N_out]`, rows at or past `counts[e]` are zero.
    Masked {
        /// Capacity `C` per expert.
        capacity: usize,
    },
}

/// Layout of the expert weights.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WeightLayout {
    /// `w [E, K, N]`.
    KN,
    /// `w [E, N, K]` (each expert's weight transposed, as PyTorch `Linear` stores it).
    NK,
}

/// A grouped GEMM: for every row `r` of expert `e`, `y[r] = epilogue(x[r] · W_e)`.
///
/// Epilogues apply in order: SwiGLU (`N = 2I`, output `[.., I]` =
/// `silu(acc[:, :I]) * acc[:, I:]`), then the per-row scale (`row_scale [R] f32` or
/// `[E, C] f32`). Accumulation in f32, one rounding at the end.
#[derive(Clone, Debug, PartialEq)]
pub struct GroupedGemmProblem {
    /// Row grouping.
    pub layout: GemmLayout,
    /// Experts `E`.
    pub experts: usize,
    /// Reduction size `K`.
    pub k_dim: usize,
    /// Weight output columns `N` (`2I` with SwiGLU).
    pub n_dim: usize,
    /// Weight layout.
    pub weight_layout: WeightLayout,
    /// SwiGLU epilogue over the gate/up halves.
    pub swiglu: bool,
    /// Per-row scale epilogue.
    pub row_scale: bool,
    /// Gather prologue (contiguous only): `Some(T)` means `x` is `[T, K]` and row `r` reads
    /// `x[row_to_token[r]]` (`row_to_token [R] i32`, −1 reads a zero row).
    pub gather_tokens: Option<usize>,
    /// Float dtype of `x`, `w` and `y`.
    pub dtype: DType,
}

impl GroupedGemmProblem {
    /// Contiguous layout, `[E, K, N]` weights, no epilogue, no gather.
    pub fn contiguous(rows: usize, experts: usize, k_dim: usize, n_dim: usize, dtype: DType) -> Self {
        GroupedGemmProblem {
            layout: GemmLayout::Contiguous { rows },
            experts,
            k_dim,
            n_dim,
            weight_layout: WeightLayout::KN,
            swiglu: false,
            row_scale: false,
            gather_tokens: None,
            dtype,
        }
    }

    /// Output columns: `N/2` with SwiGLU, else `N`.
    pub fn n_out(&self) -> usize {
        if self.swiglu {
            self.n_dim / 2
        } else {
            self.n_dim
        }
    }

    /// Output rows: `R` (contiguous) or `E*C` (masked), saturating at `usize::MAX` (which
    /// [`GroupedGemmProblem::validate`] refuses) instead of overflowing.
    pub fn out_rows(&self) -> usize {
        match self.layout {
            GemmLayout::Contiguous { rows } => rows,
            GemmLayout::Masked { capacity } => self.experts.saturating_mul(capacity),
        }
    }

    /// Shape of `x`.
    pub fn x_shape(&self) -> Vec<usize> {
        match (self.layout, self.gather_tokens) {
            (GemmLayout::Contiguous { .. }, Some(t)) => vec![t, self.k_dim],
            (GemmLayout::Contiguous { rows }, None) => vec![rows, self.k_dim],
            (GemmLayout::Masked { capacity }, _) => vec![self.experts, capacity, self.k_dim],
        }
    }

    /// Shape of `w`.
    pub fn w_shape(&self) -> Vec<usize> {
        match self.weight_layout {
            WeightLayout::KN => vec![self.experts, self.k_dim, self.n_dim],
            WeightLayout::NK => vec![self.experts, self.n_dim, self.k_dim],
        }
    }

    /// Shape of `y`.
    pub fn y_shape(&self) -> Vec<usize> {
        match self.layout {
            GemmLayout::Contiguous { rows } => vec![rows, self.n_out()],
            GemmLayout::Masked { capacity } => vec![self.experts, capacity, self.n_out()],
        }
    }

    /// Shape of `row_scale`.
    pub fn row_scale_shape(&self) -> Vec<usize> {
        match self.layout {
            GemmLayout::Contiguous { rows } => vec![rows],
            GemmLayout::Masked { capacity } => vec![self.experts, capacity],
        }
    }

    /// Useful FLOPs for `rows` valid rows (2·rows·K·N).
    pub fn flops(&self, rows: usize) -> f64 {
        2.0 * rows as f64 * self.k_dim as f64 * self.n_dim as f64
    }

    /// Check the problem.
    ///
    /// # Errors
    /// [`Error::Invalid`] for `E`, `K` or `N` = 0, an odd `N` with SwiGLU, gather with the
    /// masked layout, sizes past i32; [`Error::Unsupported`] for a non-float dtype.
    pub fn validate(&self) -> Result<Validated<GroupedGemmProblem>> {
        expect_float(OP, self.dtype)?;
        if self.experts == 0 || self.k_dim == 0 || self.n_dim == 0 {
            return Err(Error::invalid(
                OP,
                format!("experts={}, K={}, N={} must all be > 0", self.experts, self.k_dim, self.n_dim),
            ));
        }
        if self.swiglu && self.n_dim % 2 != 0 {
            return Err(Error::invalid(OP, format!("SwiGLU needs an even N, got {}", self.n_dim)));
        }
        if matches!(self.layout, GemmLayout::Masked { .. }) && self.gather_tokens.is_some() {
            return Err(Error::invalid(OP, "the gather prologue needs the contiguous layout"));
        }
        if self.out_rows() > i32::MAX as usize || self.gather_tokens.unwrap_or(0) > i32::MAX as usize {
            return Err(Error::invalid(OP, "rows exceed i32 range"));
        }
        fits_i32(OP, &[("K", self.k_dim), ("N", self.n_dim)])?;
        Ok(Validated::new(self.clone()))
    }
}

/// Buffers of one grouped GEMM.
#[derive(Debug)]
pub struct GroupedGemmIo<'a, B> {
    /// `[R, K]`, `[T, K]` (gather) or `[E, C, K]` (masked).
    pub x: &'a B,
    /// `[E, K, N]` or `[E, N, K]`.
    pub w: &'a B,
    /// Contiguous: `offsets [E+1] i32`; masked: `counts [E] i32`.
    pub group: &'a B,
    /// `[R] i32` when gathering.
    pub row_to_token: Option<&'a B>,
    /// `[R] f32` or `[E, C] f32` with the row-scale epilogue.
    pub row_scale: Option<&'a B>,
    /// Out: `[R, N_out]` or `[E, C, N_out]`.
    pub y: &'a mut B,
}

impl Validated<GroupedGemmProblem> {
    /// Check every buffer against the problem.
    ///
    /// # Errors
    /// [`Error::Shape`], [`Error::DType`], or [`Error::Invalid`] when an optional buffer is
    /// present or absent against the problem.
    pub fn check_io<B: TensorMeta>(&self, io: &GroupedGemmIo<'_, B>) -> Result<()> {
        expect(OP, "x", io.x, self.dtype, &self.x_shape())?;
        expect(OP, "w", io.w, self.dtype, &self.w_shape())?;
        match self.layout {
            GemmLayout::Contiguous { .. } => expect(OP, "offsets", io.group, DType::I32, &[self.experts + 1])?,
            GemmLayout::Masked { .. } => expect(OP, "counts", io.group, DType::I32, &[self.experts])?,
        }
        match (self.gather_tokens, io.row_to_token, self.layout) {
            (Some(_), Some(r), GemmLayout::Contiguous { rows }) => expect(OP, "row_to_token", r, DType::I32, &[rows])?,
            (None, None, _) => {}
            _ => return Err(Error::invalid(OP, "`row_to_token` present/absent against gather_tokens")),
        }
        match (self.row_scale, io.row_scale) {
            (true, Some(s)) => expect(OP, "row_scale", s, DType::F32, &self.row_scale_shape())?,
            (false, None) => {}
            _ => return Err(Error::invalid(OP, "`row_scale` present/absent against the problem")),
        }
        expect(OP, "y", io.y, self.dtype, &self.y_shape())
    }
}
