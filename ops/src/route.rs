//! Routing: scores, top-k selection, weights, counts and load statistics.

use crate::validated::{expect, expect_float, fits_i32};
use crate::{DType, Error, Result, TensorMeta, Validated};

const OP: &str = "route";

/// How router logits become scores.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ScoreFn {
    /// Softmax over the experts that are not masked out.
    Softmax,
    /// Elementwise sigmoid.
    Sigmoid,
}

/// Group-limited routing: experts form `n_group` equal contiguous groups; each token keeps the
/// `topk_group` groups with the best group score and picks its top-k inside them.
///
/// The group score is the sum of the two best selection scores (score + bias) of the group's
/// unmasked experts (the one best when only one is unmasked, `-inf` when none is); ties go to
/// the lower group index.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GroupLimit {
    /// Number of groups; divides the expert count.
    pub n_group: usize,
    /// Groups kept per token, `1..=n_group`.
    pub topk_group: usize,
}

/// A routing problem.
///
/// Inputs: `logits [tokens, experts]` of `dtype`, or, when `hidden` is `Some(h)`, the hidden
/// states `[tokens, h]` and the gate weight `[h, experts]` (the logits GEMM fused in);
/// optional correction `bias [experts] f32` (added for selection only).
///
/// Outputs: `ids [tokens, k] i32` (ordered by selection score descending, ties to the lower
/// expert index), `weights [tokens, k] f32` (scores *without* bias; renormalised over the k
/// chosen when `renormalize`, then multiplied by `scaling`), `counts [experts] i32` (tokens
/// per expert), `load [experts] f32` (per-expert sum over tokens of the score; 0 for masked
/// experts).
#[derive(Clone, Debug, PartialEq)]
pub struct RouteProblem {
    /// Tokens `T` (0 is valid).
    pub tokens: usize,
    /// Experts `E`.
    pub experts: usize,
    /// Experts chosen per token, `1..=` the experts allowed.
    pub k: usize,
    /// `Some(H)`: the logits are computed from `hidden [T, H]` and `gate [H, E]`.
    pub hidden: Option<usize>,
    /// Float dtype of the logits (or hidden and gate).
    pub dtype: DType,
    /// Softmax or sigmoid.
    pub score: ScoreFn,
    /// Whether a correction bias `[E] f32` is passed.
    pub use_bias: bool,
    /// Elastic width: `mask[e] == false` removes expert `e` (never chosen; under softmax it
    /// takes no probability mass). `None` allows all.
    pub expert_mask: Option<Vec<bool>>,
    /// Group-limited routing.
    pub groups: Option<GroupLimit>,
    /// Divide the k weights by their sum.
    pub renormalize: bool,
    /// Multiply the final weights by this factor.
    pub scaling: f32,
}

impl RouteProblem {
    /// A plain softmax top-k problem over logits: no bias, no mask, no groups, no
    /// renormalisation, scaling 1.
    pub fn new(tokens: usize, experts: usize, k: usize, dtype: DType) -> Self {
        RouteProblem {
            tokens,
            experts,
            k,
            hidden: None,
            dtype,
            score: ScoreFn::Softmax,
            use_bias: false,
            expert_mask: None,
            groups: None,
            renormalize: false,
            scaling: 1.0,
        }
    }

    /// Whether expert `e` may be chosen.
    pub fn allowed(&self, e: usize) -> bool {
        self.expert_mask.as_ref().is_none_or(|m| m[e])
    }

    /// Number of experts the mask allows.
    pub fn allowed_count(&self) -> usize {
        match &self.expert_mask {
            None => self.experts,
            Some(m) => m.iter().filter(|&&a| a).count(),
        }
    }

    /// Check the problem.
    ///
    /// # Errors
    /// [`Error::Invalid`] for `E = 0`, `k = 0`, `k` above the experts that can be reached
    /// (after the mask and the group limit), groups that do not divide `E`, `topk_group`
    /// outside `1..=n_group`, a non-finite scaling, `H = 0`; [`Error::Shape`] (argument
    /// `expert_mask`) for a mask of the wrong length; [`Error::Unsupported`] for a non-float
    /// dtype.
    pub fn validate(&self) -> Result<Validated<RouteProblem>> {
        expect_float(OP, self.dtype)?;
        if self.experts == 0 {
            return Err(Error::invalid(OP, "experts = 0"));
        }
        if self.experts > i32::MAX as usize || self.tokens > i32::MAX as usize {
            return Err(Error::invalid(OP, "tokens or experts exceed i32 range"));
        }
        fits_i32(
            OP,
            &[
                ("hidden", self.hidden.unwrap_or(0)),
                ("tokens·experts", self.tokens.saturating_mul(self.experts)),
                ("tokens·k", self.tokens.saturating_mul(self.k)),
            ],
        )?;
        if self.hidden == Some(0) {
            return Err(Error::invalid(OP, "fused gate with hidden = 0"));
        }
        if let Some(m) = &self.expert_mask {
            if m.len() != self.experts {
                return Err(Error::Shape {
                    op: OP,
                    what: "expert_mask",
                    expected: vec![self.experts],
                    got: vec![m.len()],
                });
            }
        }
        if !self.scaling.is_finite() {
            return Err(Error::invalid(OP, format!("scaling {} is not finite", self.scaling)));
        }
        if self.k == 0 {
            return Err(Error::invalid(OP, "k = 0"));
        }
        let reachable = match self.groups {
            None => self.allowed_count(),
            Some(g) => self.reachable_with_groups(g)?,
        };
        if self.k > reachable {
            return Err(Error::invalid(OP, format!("k = {} but only {reachable} experts can be chosen", self.k)));
        }
        Ok(Validated::new(self.clone()))
    }

    /// Worst case of experts reachable under the group limit: the `topk_group` groups with
    /// the fewest allowed experts.
    fn reachable_with_groups(&self, g: GroupLimit) -> Result<usize> {
        if g.n_group == 0 || self.experts % g.n_group != 0 {
            return Err(Error::invalid(
                OP,
                format!("n_group = {} does not divide experts = {}", g.n_group, self.experts),
            ));
        }
        if g.topk_group == 0 || g.topk_group > g.n_group {
            return Err(Error::invalid(OP, format!("topk_group = {} outside 1..={}", g.topk_group, g.n_group)));
        }
        let size = self.experts / g.n_group;
        // NOTE: without a mask every group is full; computed directly, since `n_group` may be
        // as large as `E` (a per-group table would take memory in proportion to it).
        if self.expert_mask.is_none() {
            return Ok(g.topk_group * size);
        }
        let mut per_group: Vec<usize> =
            (0..g.n_group).map(|gi| (gi * size..(gi + 1) * size).filter(|&e| self.allowed(e)).count()).collect();
        per_group.sort_unstable();
        Ok(per_group[..g.topk_group].iter().sum())
    }
}

/// Buffers of one routing call.
#[derive(Debug)]
pub struct RouteIo<'a, B> {
    /// `[T, E]` logits, or `[T, H]` hidden states when the problem has `hidden`.
    pub logits: &'a B,
    /// `[H, E]` gate weight; `Some` exactly when the problem has `hidden`.
    pub gate: Option<&'a B>,
    /// `[E] f32` correction bias; `Some` exactly when `use_bias`.
    pub bias: Option<&'a B>,
    /// Out: `[T, k] i32`.
    pub ids: &'a mut B,
    /// Out: `[T, k] f32`.
    pub weights: &'a mut B,
    /// Out: `[E] i32`.
    pub counts: &'a mut B,
    /// Out: `[E] f32`.
    pub load: &'a mut B,
}

impl Validated<RouteProblem> {
    /// Check every buffer against the problem.
    ///
    /// # Errors
    /// [`Error::Shape`] or [`Error::DType`] naming the first bad buffer; [`Error::Invalid`]
    /// when an optional buffer is present or absent against the problem.
    pub fn check_io<B: TensorMeta>(&self, io: &RouteIo<'_, B>) -> Result<()> {
        let (t, e, k) = (self.tokens, self.experts, self.k);
        match (self.hidden, io.gate) {
            (None, None) => expect(OP, "logits", io.logits, self.dtype, &[t, e])?,
            (Some(h), Some(gate)) => {
                expect(OP, "hidden", io.logits, self.dtype, &[t, h])?;
                expect(OP, "gate", gate, self.dtype, &[h, e])?;
            }
            (None, Some(_)) => return Err(Error::invalid(OP, "gate passed but problem has no hidden")),
            (Some(_), None) => return Err(Error::invalid(OP, "problem has hidden but no gate passed")),
        }
        match (self.use_bias, io.bias) {
            (true, Some(b)) => expect(OP, "bias", b, DType::F32, &[e])?,
            (false, None) => {}
            (true, None) => return Err(Error::invalid(OP, "use_bias but no bias passed")),
            (false, Some(_)) => return Err(Error::invalid(OP, "bias passed but use_bias is false")),
        }
        expect(OP, "ids", io.ids, DType::I32, &[t, k])?;
        expect(OP, "weights", io.weights, DType::F32, &[t, k])?;
        expect(OP, "counts", io.counts, DType::I32, &[e])?;
        expect(OP, "load", io.load, DType::F32, &[e])
    }
}

/// Auxiliary-loss-free load balancing: one bias update from the counts of a step.
///
/// `bias[e] += speed * sign(mean - counts[e])` for every allowed expert, where `mean` is the
/// mean count over the allowed experts; masked experts keep their bias.
///
/// The counts are used as given: nothing checks that they are non-negative or that they sum
/// to `T·k` (a negative count enters the mean and the sign like any other).
#[derive(Clone, Debug, PartialEq)]
pub struct BiasUpdateProblem {
    /// Experts `E`.
    pub experts: usize,
    /// Step size (`u` in the aux-loss-free papers).
    pub speed: f32,
    /// Experts to update (`None`: all).
    pub expert_mask: Option<Vec<bool>>,
}

impl BiasUpdateProblem {
    /// Check the problem.
    ///
    /// # Errors
    /// [`Error::Invalid`] for `E = 0`, a non-finite or negative speed, or a mask that allows
    /// no expert; [`Error::Shape`] (argument `expert_mask`) for a mask of the wrong length.
    pub fn validate(&self) -> Result<Validated<BiasUpdateProblem>> {
        const OP: &str = "update_bias";
        if self.experts == 0 {
            return Err(Error::invalid(OP, "experts = 0"));
        }
        if !self.speed.is_finite() || self.speed < 0.0 {
            return Err(Error::invalid(OP, format!("speed {} must be finite and >= 0", self.speed)));
        }
        if let Some(m) = &self.expert_mask {
            if m.len() != self.experts {
                return Err(Error::Shape {
                    op: OP,
                    what: "expert_mask",
                    expected: vec![self.experts],
                    got: vec![m.len()],
                });
            }
            if !m.iter().any(|&a| a) {
                return Err(Error::invalid(OP, "mask allows no expert"));
            }
        }
        Ok(Validated::new(self.clone()))
    }
}

impl Validated<BiasUpdateProblem> {
    /// Check `bias [E] f32` (updated in place) and `counts [E] i32`.
    ///
    /// # Errors
    /// [`Error::Shape`] or [`Error::DType`].
    pub fn check_io<B: TensorMeta>(&self, bias: &B, counts: &B) -> Result<()> {
        expect("update_bias", "bias", bias, DType::F32, &[self.experts])?;
        expect("update_bias", "counts", counts, DType::I32, &[self.experts])
    }
}
