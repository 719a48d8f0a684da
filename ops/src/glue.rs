//! Model glue: RMSNorm (with fused residual add), rotary embedding (1-D and 3-D Uni-RoPE),
//! SwiGLU, embedding gather, dense GEMM.

use crate::validated::{expect, expect_float, fits_i32};
use crate::{DType, Error, Result, TensorMeta, Validated};

/// RMSNorm over the last dim: `y = x / sqrt(mean(x²) + eps) * weight`.
///
/// With `residual`, the op first forms `s = x + residual` (rounded to the dtype), writes it to
/// `residual_out`, and normalises `s`. Inputs `x [rows, H]`, `weight [H]`, optional
/// `residual [rows, H]`; outputs `y [rows, H]`, `residual_out [rows, H]` with residual.
#[derive(Clone, Debug, PartialEq)]
pub struct RmsNormProblem {
    /// Rows.
    pub rows: usize,
    /// Hidden size `H`.
    pub hidden: usize,
    /// Epsilon (> 0).
    pub eps: f32,
    /// Fused residual add.
    pub residual: bool,
    /// Float dtype of every tensor.
    pub dtype: DType,
}

impl RmsNormProblem {
    /// Check the problem.
    ///
    /// # Errors
    /// [`Error::Invalid`] for `H = 0`, `eps` not finite and positive, or a size past
    /// `i32::MAX`; [`Error::Unsupported`] for a non-float dtype.
    pub fn validate(&self) -> Result<Validated<RmsNormProblem>> {
        const OP: &str = "rms_norm";
        expect_float(OP, self.dtype)?;
        if self.hidden == 0 {
            return Err(Error::invalid(OP, "hidden = 0"));
        }
        if !(self.eps.is_finite() && self.eps > 0.0) {
            return Err(Error::invalid(OP, format!("eps {} must be finite and > 0", self.eps)));
        }
        fits_i32(OP, &[("rows", self.rows), ("hidden", self.hidden)])?;
        Ok(Validated::new(self.clone()))
    }
}

/// Buffers of one RMSNorm.
#[derive(Debug)]
pub struct RmsNormIo<'a, B> {
    /// `[rows, H]`.
    pub x: &'a B,
    /// `[H]`.
    pub weight: &'a B,
    /// `[rows, H]` with the fused residual.
    pub residual: Option<&'a B>,
    /// Out: `[rows, H]`.
    pub y: &'a mut B,
    /// Out: `[rows, H]` = `x + residual`, with the fused residual.
    pub residual_out: Option<&'a mut B>,
}

impl Validated<RmsNormProblem> {
    /// Check every buffer.
    ///
    /// # Errors
    /// [`Error::Shape`], [`Error::DType`], [`Error::Invalid`].
    pub fn check_io<B: TensorMeta>(&self, io: &RmsNormIo<'_, B>) -> Result<()> {
        const OP: &str = "rms_norm";
        let s = [self.rows, self.hidden];
        expect(OP, "x", io.x, self.dtype, &s)?;
        expect(OP, "weight", io.weight, self.dtype, &[self.hidden])?;
        expect(OP, "y", io.y, self.dtype, &s)?;
        match (self.residual, io.residual, io.residual_out.as_deref()) {
            (true, Some(r), Some(ro)) => {
                expect(OP, "residual", r, self.dtype, &s)?;
                expect(OP, "residual_out", ro, self.dtype, &s)
            }
            (false, None, None) => Ok(()),
            _ => Err(Error::invalid(OP, "`residual`/`residual_out` present/absent against problem.residual")),
        }
    }
}

/// Which positions drive the rotation. Any `i32` is a position (negative ones included):
/// positions are not range-checked, the angle is just `pos · inv_freq`. The reference, cpu
/// and cuda compute the angle in f64; cubecl computes it in f32, so its phase loses precision
/// as `|pos|` grows.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RotaryPositions {
    /// 1-D: `positions [T] i32`.
    OneD,
    /// 3-D Uni-RoPE: `positions [3, T] i32` (t, h, w); frequency pair `f` (of `D/2`) uses
    /// the t position for `f < sections[0]`, h for the next `sections[1]`, w for the rest.
    ThreeD {
        /// Frequency pairs per axis, summing to `D/2`.
        sections: [usize; 3],
    },
}

/// Rotary embedding, half-split (NeoX) style: for pair `f < D/2` with
/// `inv_freq = theta^(-2f/D)` and angle `a = pos · inv_freq`,
/// `out[f] = x[f]·cos a − x[f + D/2]·sin a`, `out[f + D/2] = x[f + D/2]·cos a + x[f]·sin a`.
///
/// Input `x [T, heads, D]`, positions as [`RotaryPositions`]; output `out [T, heads, D]`.
#[derive(Clone, Debug, PartialEq)]
pub struct RotaryProblem {
    /// Tokens `T`.
    pub tokens: usize,
    /// Heads.
    pub heads: usize,
    /// Head dim `D` (even).
    pub head_dim: usize,
    /// Base `theta` (> 0).
    pub theta: f32,
    /// 1-D or 3-D positions.
    pub positions: RotaryPositions,
    /// Float dtype of x and out.
    pub dtype: DType,
}

impl RotaryProblem {
    /// Shape of the positions buffer.
    pub fn positions_shape(&self) -> Vec<usize> {
        match self.positions {
            RotaryPositions::OneD => vec![self.tokens],
            RotaryPositions::ThreeD { .. } => vec![3, self.tokens],
        }
    }

    /// Which of the position rows (0 for 1-D; 0, 1, 2 for t, h, w) drives frequency pair `f`.
    pub fn axis_of(&self, f: usize) -> usize {
        match self.positions {
            RotaryPositions::OneD => 0,
            RotaryPositions::ThreeD { sections } => {
                if f < sections[0] {
                    0
                } else if f < sections[0] + sections[1] {
                    1
                } else {
                    2
                }
            }
        }
    }

    /// Check the problem.
    ///
    /// # Errors
    /// [`Error::Invalid`] for an odd or zero head dim, zero heads, `theta` not finite and
    /// positive, 3-D sections not summing to `D/2`, a size past `i32::MAX`;
    /// [`Error::Unsupported`] for a non-float dtype.
    pub fn validate(&self) -> Result<Validated<RotaryProblem>> {
        const OP: &str = "rotary";
        expect_float(OP, self.dtype)?;
        if self.head_dim == 0 || self.head_dim % 2 != 0 || self.heads == 0 {
            return Err(Error::invalid(
                OP,
                format!("head_dim {} must be even and > 0, heads {} > 0", self.head_dim, self.heads),
            ));
        }
        if !(self.theta.is_finite() && self.theta > 0.0) {
            return Err(Error::invalid(OP, format!("theta {} must be finite and > 0", self.theta)));
        }
        fits_i32(OP, &[("tokens", self.tokens), ("heads", self.heads), ("head_dim", self.head_dim)])?;
        if let RotaryPositions::ThreeD { sections } = self.positions {
            if sections.iter().sum::<usize>() != self.head_dim / 2 {
                return Err(Error::invalid(
                    OP,
                    format!("sections {sections:?} must sum to head_dim/2 = {}", self.head_dim / 2),
                ));
            }
        }
        Ok(Validated::new(self.clone()))
    }
}

/// Buffers of one rotary call.
#[derive(Debug)]
pub struct RotaryIo<'a, B> {
    /// `[T, heads, D]`.
    pub x: &'a B,
    /// `[T] i32` or `[3, T] i32`.
    pub positions: &'a B,
    /// Out: `[T, heads, D]`.
    pub out: &'a mut B,
}

impl Validated<RotaryProblem> {
    /// Check every buffer.
    ///
    /// # Errors
    /// [`Error::Shape`], [`Error::DType`].
    pub fn check_io<B: TensorMeta>(&self, io: &RotaryIo<'_, B>) -> Result<()> {
        const OP: &str = "rotary";
        let s = [self.tokens, self.heads, self.head_dim];
        expect(OP, "x", io.x, self.dtype, &s)?;
        expect(OP, "positions", io.positions, DType::I32, &self.positions_shape())?;
        expect(OP, "out", io.out, self.dtype, &s)
    }
}

/// SwiGLU: `x [rows, 2I]` → `y [rows, I]`, `y = silu(x[:, :I]) * x[:, I:]`.
#[derive(Clone, Debug, PartialEq)]
pub struct SwigluProblem {
    /// Rows.
    pub rows: usize,
    /// Output width `I`.
    pub inter: usize,
    /// Float dtype.
    pub dtype: DType,
}

impl SwigluProblem {
    /// Check the problem.
    ///
    /// # Errors
    /// [`Error::Invalid`] for `I = 0` or a size past `i32::MAX`; [`Error::Unsupported`] for a
    /// non-float dtype.
    pub fn validate(&self) -> Result<Validated<SwigluProblem>> {
        expect_float("swiglu", self.dtype)?;
        if self.inter == 0 {
            return Err(Error::invalid("swiglu", "inter = 0"));
        }
        fits_i32("swiglu", &[("rows", self.rows), ("2·inter", self.inter.saturating_mul(2))])?;
        Ok(Validated::new(self.clone()))
    }
}

impl Validated<SwigluProblem> {
    /// Check `x [rows, 2I]` and `y [rows, I]`.
    ///
    /// # Errors
    /// [`Error::Shape`], [`Error::DType`].
    pub fn check_io<B: TensorMeta>(&self, x: &B, y: &B) -> Result<()> {
        expect("swiglu", "x", x, self.dtype, &[self.rows, 2 * self.inter])?;
        expect("swiglu", "y", y, self.dtype, &[self.rows, self.inter])
    }
}

/// Embedding gather: `table [V, H]`, `ids [T] i32` (each in `0..V`) → `out [T, H]`.
#[derive(Clone, Debug, PartialEq)]
pub struct EmbeddingProblem {
    /// Tokens `T`.
    pub tokens: usize,
    /// Vocabulary `V`.
    pub vocab: usize,
    /// Hidden `H`.
    pub hidden: usize,
    /// Float dtype of table and out.
    pub dtype: DType,
}

impl EmbeddingProblem {
    /// Check the problem.
    ///
    /// # Errors
    /// [`Error::Invalid`] for `V = 0`, `H = 0` or a size past `i32::MAX`;
    /// [`Error::Unsupported`] for a non-float dtype.
    pub fn validate(&self) -> Result<Validated<EmbeddingProblem>> {
        expect_float("embedding", self.dtype)?;
        if self.vocab == 0 || self.hidden == 0 {
            return Err(Error::invalid(
                "embedding",
                format!("vocab {} and hidden {} must be > 0", self.vocab, self.hidden),
            ));
        }
        fits_i32("embedding", &[("tokens", self.tokens), ("vocab", self.vocab), ("hidden", self.hidden)])?;
        Ok(Validated::new(self.clone()))
    }
}

impl Validated<EmbeddingProblem> {
    /// Check `table [V, H]`, `ids [T] i32`, `out [T, H]`.
    ///
    /// # Errors
    /// [`Error::Shape`], [`Error::DType`].
    pub fn check_io<B: TensorMeta>(&self, table: &B, ids: &B, out: &B) -> Result<()> {
        expect("embedding", "table", table, self.dtype, &[self.vocab, self.hidden])?;
        expect("embedding", "ids", ids, DType::I32, &[self.tokens])?;
        expect("embedding", "out", out, self.dtype, &[self.tokens, self.hidden])
    }
}

/// Dense GEMM: `c [M, N] = a [M, K] · b`, `b` is `[K, N]` or, with `b_transposed`, `[N, K]`.
#[derive(Clone, Debug, PartialEq)]
pub struct GemmProblem {
    /// Rows `M`.
    pub m: usize,
    /// Reduction `K`.
    pub k: usize,
    /// Columns `N`.
    pub n: usize,
    /// `b` stored `[N, K]`.
    pub b_transposed: bool,
    /// Float dtype of a, b, c.
    pub dtype: DType,
}

impl GemmProblem {
    /// Check the problem (`M`, `K`, `N` may be 0).
    ///
    /// # Errors
    /// [`Error::Invalid`] for a size past `i32::MAX`; [`Error::Unsupported`] for a non-float
    /// dtype.
    pub fn validate(&self) -> Result<Validated<GemmProblem>> {
        expect_float("gemm", self.dtype)?;
        fits_i32("gemm", &[("m", self.m), ("k", self.k), ("n", self.n)])?;
        Ok(Validated::new(self.clone()))
    }

    /// `2·M·N·K`.
    pub fn flops(&self) -> f64 {
        2.0 * self.m as f64 * self.n as f64 * self.k as f64
    }
}

impl Validated<GemmProblem> {
    /// Check `a`, `b`, `c`.
    ///
    /// # Errors
    /// [`Error::Shape`], [`Error::DType`].
    pub fn check_io<B: TensorMeta>(&self, a: &B, b: &B, c: &B) -> Result<()> {
        expect("gemm", "a", a, self.dtype, &[self.m, self.k])?;
        let bs = if self.b_transposed { [self.n, self.k] } else { [self.k, self.n] };
        expect("gemm", "b", b, self.dtype, &bs)?;
        expect("gemm", "c", c, self.dtype, &[self.m, self.n])
    }
}
