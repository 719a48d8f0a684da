//! The fused MoE layer forward, with a default built from the primitive ops so every backend
//! is correct before it is fast. Backends override [`MoeOps::moe_layer`] with fused kernels.

use crate::grouped_gemm::{GemmLayout, GroupedGemmIo, GroupedGemmProblem, WeightLayout};
use crate::permute::{CombineIo, CombineProblem, PermuteIo, PermuteProblem};
use crate::route::{RouteIo, RouteProblem};
use crate::validated::expect;
use crate::{DType, Error, GroupedGemmOps, PermuteOps, Result, RouteOps, TensorMeta, Validated};

const OP: &str = "moe_layer";

/// One routed-expert MoE layer forward:
/// route (logits GEMM fused) → permute → grouped GEMM gate/up with SwiGLU → grouped GEMM down
/// → weighted combine (plus an optional `add`, e.g. the shared-expert output or a residual).
///
/// Inputs: `x [T, H]`, `gate [H, E]`, optional `bias [E] f32`, `w_up [E, H, 2I]`,
/// `w_down [E, I, H]`, optional `add [T, H]`; output `out [T, H]`.
#[derive(Clone, Debug, PartialEq)]
pub struct MoeLayerProblem {
    /// Routing; its `hidden` must be `Some(H)` (the gate GEMM is part of the layer).
    pub route: RouteProblem,
    /// Expert intermediate size `I`.
    pub inter: usize,
    /// Whether an `add [T, H]` is passed.
    pub add: bool,
}

impl MoeLayerProblem {
    /// Hidden size `H`.
    pub fn hidden(&self) -> usize {
        self.route.hidden.unwrap_or(0)
    }

    /// Useful FLOPs: gate GEMM + up (2I) + down, over `T·k` rows.
    pub fn flops(&self) -> f64 {
        let (t, h, e, k, i) = (
            self.route.tokens as f64,
            self.hidden() as f64,
            self.route.experts as f64,
            self.route.k as f64,
            self.inter as f64,
        );
        2.0 * t * h * e + 2.0 * t * k * h * (2.0 * i) + 2.0 * t * k * i * h
    }

    /// The sub-problems, in order: route, permute, up, down, combine.
    pub fn parts(&self) -> (RouteProblem, PermuteProblem, GroupedGemmProblem, GroupedGemmProblem, CombineProblem) {
        let r = &self.route;
        let (t, h, e, k, i, dt) = (r.tokens, self.hidden(), r.experts, r.k, self.inter, r.dtype);
        let permute = PermuteProblem { tokens: t, hidden: h, experts: e, k, align: 1, dtype: dt };
        let rows = permute.max_rows();
        let mut up = GroupedGemmProblem::contiguous(rows, e, h, i.saturating_mul(2), dt);
        up.swiglu = true;
        let down = GroupedGemmProblem {
            layout: GemmLayout::Contiguous { rows },
            experts: e,
            k_dim: i,
            n_dim: h,
            weight_layout: WeightLayout::KN,
            swiglu: false,
            row_scale: false,
            gather_tokens: None,
            dtype: dt,
        };
        let combine = CombineProblem { tokens: t, hidden: h, k, rows, add: self.add, dtype: dt };
        (r.clone(), permute, up, down, combine)
    }

    /// Check the problem: its own fields, then each sub-problem of [`Self::parts`] in order
    /// (route, permute, up, down, combine).
    ///
    /// # Errors
    /// [`Error::Invalid`] (op `moe_layer`) when the routing has no fused `hidden` or `I = 0`.
    /// Otherwise the first sub-problem's error, **carrying the sub-op's name** (`route`,
    /// `permute`, `grouped_gemm`, `unpermute_combine`), because the fields it names belong to
    /// that sub-problem: `k = 0` is `Invalid { op: "route", .. }`, a mask of the wrong length
    /// `Shape { op: "route", what: "expert_mask", .. }`, an integer dtype
    /// `Unsupported { op: "route", .. }`, `T·k` past `i32::MAX` `Invalid { op: "permute", .. }`.
    /// Buffer errors (from `check_io`) name `moe_layer`.
    pub fn validate(&self) -> Result<Validated<MoeLayerProblem>> {
        if self.route.hidden.is_none() {
            return Err(Error::invalid(OP, "route.hidden must be Some(H): the layer fuses the gate GEMM"));
        }
        if self.inter == 0 {
            return Err(Error::invalid(OP, "inter = 0"));
        }
        let (r, p, u, d, c) = self.parts();
        r.validate()?;
        p.validate()?;
        u.validate()?;
        d.validate()?;
        c.validate()?;
        Ok(Validated::new(self.clone()))
    }
}

/// Buffers of one MoE layer forward.
#[derive(Debug)]
pub struct MoeLayerIo<'a, B> {
    /// `[T, H]`.
    pub x: &'a B,
    /// `[H, E]`.
    pub gate: &'a B,
    /// `[E] f32` when the routing uses a bias.
    pub bias: Option<&'a B>,
    /// `[E, H, 2I]`.
    pub w_up: &'a B,
    /// `[E, I, H]`.
    pub w_down: &'a B,
    /// `[T, H]` when the problem has `add`.
    pub add: Option<&'a B>,
    /// Out: `[T, H]`.
    pub out: &'a mut B,
    /// Out, optional: `[T, k] i32`, the experts each token was routed to (the routing's
    /// `ids`), for routing statistics without routing a second time.
    pub routed: Option<&'a mut B>,
}

impl Validated<MoeLayerProblem> {
    /// Check every buffer.
    ///
    /// # Errors
    /// [`Error::Shape`], [`Error::DType`], [`Error::Invalid`].
    pub fn check_io<B: TensorMeta>(&self, io: &MoeLayerIo<'_, B>) -> Result<()> {
        let r = &self.route;
        let (t, h, e, i, dt) = (r.tokens, self.hidden(), r.experts, self.inter, r.dtype);
        expect(OP, "x", io.x, dt, &[t, h])?;
        expect(OP, "gate", io.gate, dt, &[h, e])?;
        expect(OP, "w_up", io.w_up, dt, &[e, h, i.saturating_mul(2)])?;
        expect(OP, "w_down", io.w_down, dt, &[e, i, h])?;
        expect(OP, "out", io.out, dt, &[t, h])?;
        if let Some(ids) = &io.routed {
            expect(OP, "routed", *ids, DType::I32, &[t, r.k])?;
        }
        match (r.use_bias, io.bias) {
            (true, Some(b)) => expect(OP, "bias", b, DType::F32, &[e])?,
            (false, None) => {}
            _ => return Err(Error::invalid(OP, "`bias` present/absent against route.use_bias")),
        }
        match (self.add, io.add) {
            (true, Some(a)) => expect(OP, "add", a, dt, &[t, h]),
            (false, None) => Ok(()),
            _ => Err(Error::invalid(OP, "`add` present/absent against problem.add")),
        }
    }
}

/// The MoE layer forward. The provided method composes the primitive ops.
pub trait MoeOps: RouteOps + PermuteOps + GroupedGemmOps {
    /// See [`MoeLayerProblem`].
    ///
    /// # Errors
    /// Any error of the primitive ops.
    fn moe_layer(&self, p: &Validated<MoeLayerProblem>, io: MoeLayerIo<'_, Self::Buffer>) -> Result<()> {
        moe_layer_from_primitives(self, p, io)
    }
}

/// The MoE layer forward from the primitive ops (allocates its intermediates).
///
/// # Errors
/// Any error of the primitive ops.
pub fn moe_layer_from_primitives<B: RouteOps + PermuteOps + GroupedGemmOps + ?Sized>(
    b: &B,
    p: &Validated<MoeLayerProblem>,
    io: MoeLayerIo<'_, B::Buffer>,
) -> Result<()> {
    let (rp, pp, up, dp, cp) = p.parts();
    let (rp, pp, up, dp, cp) = (rp.validate()?, pp.validate()?, up.validate()?, dp.validate()?, cp.validate()?);
    let (t, h, e, k, i, dt) = (rp.tokens, p.hidden(), rp.experts, rp.k, p.inter, rp.dtype);
    let rows = pp.max_rows();
    let mut ids = b.alloc(DType::I32, &[t, k])?;
    let mut weights = b.alloc(DType::F32, &[t, k])?;
    let mut counts = b.alloc(DType::I32, &[e])?;
    let mut load = b.alloc(DType::F32, &[e])?;
    b.route(
        &rp,
        RouteIo {
            logits: io.x,
            gate: Some(io.gate),
            bias: io.bias,
            ids: &mut ids,
            weights: &mut weights,
            counts: &mut counts,
            load: &mut load,
        },
    )?;
    if let Some(out) = io.routed {
        b.copy_rows(&ids, 0, out, 0, t)?;
    }
    let mut permuted = b.alloc(dt, &[rows, h])?;
    let mut offsets = b.alloc(DType::I32, &[e + 1])?;
    let mut row_to_token = b.alloc(DType::I32, &[rows])?;
    let mut tsr = b.alloc(DType::I32, &[t, k])?;
    b.permute(
        &pp,
        PermuteIo {
            hidden: io.x,
            ids: &ids,
            permuted: &mut permuted,
            offsets: &mut offsets,
            row_to_token: &mut row_to_token,
            token_slot_to_row: &mut tsr,
        },
    )?;
    let mut act = b.alloc(dt, &[rows, i])?;
    b.grouped_gemm(
        &up,
        GroupedGemmIo { x: &permuted, w: io.w_up, group: &offsets, row_to_token: None, row_scale: None, y: &mut act },
    )?;
    let mut y = b.alloc(dt, &[rows, h])?;
    b.grouped_gemm(
        &dp,
        GroupedGemmIo { x: &act, w: io.w_down, group: &offsets, row_to_token: None, row_scale: None, y: &mut y },
    )?;
    b.unpermute_combine(&cp, CombineIo { y: &y, weights: &weights, token_slot_to_row: &tsr, add: io.add, out: io.out })
}
