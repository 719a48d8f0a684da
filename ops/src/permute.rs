//! Token permutation: dispatch to expert-contiguous rows, and the weighted combine back.

use crate::validated::{expect, expect_float, fits_i32};
use crate::{DType, Error, Result, TensorMeta, Validated};

const OP_PERMUTE: &str = "permute";
const OP_COMBINE: &str = "unpermute_combine";

/// Dispatch: hidden `[T, H]` + `ids [T, k] i32` → expert-contiguous rows.
///
/// Outputs: `permuted [R, H]`, `offsets [E+1] i32`, `row_to_token [R] i32`,
/// `token_slot_to_row [T, k] i32`, where `R = max_rows()`. Rows of expert `e` are
/// `offsets[e]..offsets[e+1]`, ordered by token, then slot (stable). With `align = m > 1`
/// each segment is padded to a multiple of `m` rows. Padding rows, and every row from
/// `offsets[E]` up to `R`, are zero with `row_to_token = -1`.
#[derive(Clone, Debug, PartialEq)]
pub struct PermuteProblem {
    /// Tokens `T`.
    pub tokens: usize,
    /// Hidden size `H`.
    pub hidden: usize,
    /// Experts `E`.
    pub experts: usize,
    /// Slots per token `k`.
    pub k: usize,
    /// Segment alignment `m >= 1` (1: no padding).
    pub align: usize,
    /// Float dtype of hidden and permuted.
    pub dtype: DType,
}

impl PermuteProblem {
    /// Rows of the permuted output: `T*k` without alignment, else the worst case
    /// `T*k + E*(m-1)` (each segment padded by at most `m-1` rows). Saturates at `usize::MAX`
    /// (which [`PermuteProblem::validate`] refuses) instead of overflowing.
    pub fn max_rows(&self) -> usize {
        let pad = if self.align > 1 { self.experts.saturating_mul(self.align - 1) } else { 0 };
        self.tokens.saturating_mul(self.k).saturating_add(pad)
    }

    /// Check the problem.
    ///
    /// # Errors
    /// [`Error::Invalid`] for `E = 0`, `k = 0`, `H = 0`, `align = 0`, sizes past i32;
    /// [`Error::Unsupported`] for a non-float dtype.
    pub fn validate(&self) -> Result<Validated<PermuteProblem>> {
        expect_float(OP_PERMUTE, self.dtype)?;
        if self.experts == 0 || self.k == 0 || self.hidden == 0 || self.align == 0 {
            return Err(Error::invalid(
                OP_PERMUTE,
                format!(
                    "experts={}, k={}, hidden={}, align={} must all be > 0",
                    self.experts, self.k, self.hidden, self.align
                ),
            ));
        }
        if self.max_rows() > i32::MAX as usize || self.experts > i32::MAX as usize {
            return Err(Error::invalid(OP_PERMUTE, "rows exceed i32 range"));
        }
        fits_i32(OP_PERMUTE, &[("hidden", self.hidden), ("tokens·k", self.tokens.saturating_mul(self.k))])?;
        Ok(Validated::new(self.clone()))
    }
}

/// Buffers of one dispatch.
#[derive(Debug)]
pub struct PermuteIo<'a, B> {
    /// `[T, H]`.
    pub hidden: &'a B,
    /// `[T, k] i32`, each in `0..E`.
    pub ids: &'a B,
    /// Out: `[R, H]`.
    pub permuted: &'a mut B,
    /// Out: `[E+1] i32`.
    pub offsets: &'a mut B,
    /// Out: `[R] i32`, −1 on padding.
    pub row_to_token: &'a mut B,
    /// Out: `[T, k] i32`.
    pub token_slot_to_row: &'a mut B,
}

impl Validated<PermuteProblem> {
    /// Check every buffer against the problem.
    ///
    /// # Errors
    /// [`Error::Shape`] or [`Error::DType`] naming the first bad buffer.
    pub fn check_io<B: TensorMeta>(&self, io: &PermuteIo<'_, B>) -> Result<()> {
        let (t, h, e, k, r) = (self.tokens, self.hidden, self.experts, self.k, self.max_rows());
        expect(OP_PERMUTE, "hidden", io.hidden, self.dtype, &[t, h])?;
        expect(OP_PERMUTE, "ids", io.ids, DType::I32, &[t, k])?;
        expect(OP_PERMUTE, "permuted", io.permuted, self.dtype, &[r, h])?;
        expect(OP_PERMUTE, "offsets", io.offsets, DType::I32, &[e + 1])?;
        expect(OP_PERMUTE, "row_to_token", io.row_to_token, DType::I32, &[r])?;
        expect(OP_PERMUTE, "token_slot_to_row", io.token_slot_to_row, DType::I32, &[t, k])
    }
}

/// Weighted combine: `out[t] = add[t] + Σ_j weights[t, j] · y[token_slot_to_row[t, j]]`,
/// accumulated in f32, rounded once to the dtype.
///
/// Inputs: `y [R, H]`, `weights [T, k] f32`, `token_slot_to_row [T, k] i32` (each in
/// `0..R`), optional `add [T, H]` (a residual or the shared-expert output). Output:
/// `out [T, H]`.
#[derive(Clone, Debug, PartialEq)]
pub struct CombineProblem {
    /// Tokens `T`.
    pub tokens: usize,
    /// Hidden size `H`.
    pub hidden: usize,
    /// Slots per token `k`.
    pub k: usize,
    /// Rows `R` of `y`.
    pub rows: usize,
    /// Whether an additive `add [T, H]` is passed.
    pub add: bool,
    /// Float dtype of `y`, `add` and `out`.
    pub dtype: DType,
}

impl CombineProblem {
    /// Check the problem.
    ///
    /// # Errors
    /// [`Error::Invalid`] for `k = 0`, `H = 0`, `R = 0` with `T > 0`;
    /// [`Error::Unsupported`] for a non-float dtype.
    pub fn validate(&self) -> Result<Validated<CombineProblem>> {
        expect_float(OP_COMBINE, self.dtype)?;
        if self.k == 0 || self.hidden == 0 {
            return Err(Error::invalid(OP_COMBINE, format!("k={}, hidden={} must be > 0", self.k, self.hidden)));
        }
        if self.rows == 0 && self.tokens > 0 {
            return Err(Error::invalid(OP_COMBINE, "rows = 0 but tokens > 0: nothing to gather"));
        }
        if self.rows > i32::MAX as usize {
            return Err(Error::invalid(OP_COMBINE, "rows exceed i32 range"));
        }
        fits_i32(OP_COMBINE, &[("hidden", self.hidden), ("tokens·k", self.tokens.saturating_mul(self.k))])?;
        Ok(Validated::new(self.clone()))
    }
}

/// Buffers of one combine.
#[derive(Debug)]
pub struct CombineIo<'a, B> {
    /// `[R, H]`.
    pub y: &'a B,
    /// `[T, k] f32`.
    pub weights: &'a B,
    /// `[T, k] i32`.
    pub token_slot_to_row: &'a B,
    /// `[T, H]`, `Some` exactly when the problem has `add`.
    pub add: Option<&'a B>,
    /// Out: `[T, H]`.
    pub out: &'a mut B,
}

impl Validated<CombineProblem> {
    /// Check every buffer against the problem.
    ///
    /// # Errors
    /// [`Error::Shape`], [`Error::DType`], or [`Error::Invalid`] for an `add` against the
    /// problem.
    pub fn check_io<B: TensorMeta>(&self, io: &CombineIo<'_, B>) -> Result<()> {
        let (t, h, k, r) = (self.tokens, self.hidden, self.k, self.rows);
        expect(OP_COMBINE, "y", io.y, self.dtype, &[r, h])?;
        expect(OP_COMBINE, "weights", io.weights, DType::F32, &[t, k])?;
        expect(OP_COMBINE, "token_slot_to_row", io.token_slot_to_row, DType::I32, &[t, k])?;
        match (self.add, io.add) {
            (true, Some(a)) => expect(OP_COMBINE, "add", a, self.dtype, &[t, h])?,
            (false, None) => {}
            _ => return Err(Error::invalid(OP_COMBINE, "`add` buffer present/absent against problem.add")),
        }
        expect(OP_COMBINE, "out", io.out, self.dtype, &[t, h])
    }
}
