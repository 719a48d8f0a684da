//! [`RouteOps`] on cubecl. [`select`] picks the path: one plane per token (the gate GEMM
//! first when fused, statistics reduced per cube; [`fast`]), or the portable one unit per
//! token with the gate fused in, then per-expert counts and load (kernels in
//! [`crate::kernels::route`]).

mod fast;
mod select;

use super::gemm::{float_elem, scalar};
use super::{array, grid, placeholder, BLOCK};
use crate::flag::BadIndex;
use crate::kernels::route;
use crate::{CubeBackend, CubeBuffer};
use cubecl::features::MmaConfig;
use cubecl::ir::features::Plane;
use cubecl::ir::{ElemType, FloatKind};
use cubecl::prelude::*;
use moekit_ops::{BiasUpdateProblem, Result, RouteIo, RouteOps, RouteProblem, ScoreFn, Validated};
use select::{RouteCaps, RoutePath, GATE_ENV, ROUTE_ENV};

/// A mask `[E] i32` (1 = allowed) on the device, or a placeholder without one.
fn mask_arg<R: Runtime>(b: &CubeBackend<R>, mask: Option<&[bool]>) -> ArrayArg<R> {
    match mask {
        Some(m) => {
            let words: Vec<u8> = m.iter().flat_map(|&a| i32::from(a).to_le_bytes()).collect();
            let handle = b.client.create_from_slice(&words);
            // SAFETY: the handle holds `m.len()` i32.
            unsafe { ArrayArg::from_raw_parts(handle, m.len().max(1)) }
        }
        None => placeholder(b),
    }
}

/// Uninitialised f32 scratch of `n` elements (every launch writes before it reads).
///
/// # Errors
/// [`moekit_ops::Error::OutOfMemory`] when the device cannot hold it.
fn scratch<R: Runtime>(b: &CubeBackend<R>, n: usize) -> Result<ArrayArg<R>> {
    let handle = b.scratch("route", 4 * n.max(1))?;
    // SAFETY: the handle holds `n` f32 (at least one).
    Ok(unsafe { ArrayArg::from_raw_parts(handle, n.max(1)) })
}

/// What the runtime of `b` offers [`select::select`].
fn caps<R: Runtime>(b: &CubeBackend<R>) -> RouteCaps {
    let props = b.client.properties();
    let f32_ty = ElemType::Float(FloatKind::F32).into();
    let cmma = |kind: FloatKind| {
        let ty = ElemType::Float(kind).into();
        let config = MmaConfig { a_type: ty, b_type: ty, cd_type: f32_ty, m: 16, n: 16, k: 16 };
        props.features.matmul.cmma.contains(&config)
    };
    let hw = &props.hardware;
    RouteCaps {
        plane_ops: props.features.plane.contains(Plane::Ops),
        plane_size: (hw.plane_size_min, hw.plane_size_max),
        max_units: hw.max_units_per_cube,
        cmma: (cmma(FloatKind::F16), cmma(FloatKind::BF16)),
        max_shared: hw.max_shared_memory_size,
        max_cubes: (hw.max_cube_count.0, hw.max_cube_count.1),
    }
}

impl<R: Runtime> CubeBackend<R> {
    /// Routing on the portable path: one unit per token, then one unit per expert.
    ///
    /// # Errors
    /// [`moekit_ops::Error::Unsupported`] for sizes past the launch limits.
    fn route_simple(&self, p: &Validated<RouteProblem>, io: RouteIo<'_, CubeBuffer>) -> Result<()> {
        const OP: &str = "route";
        let elem = float_elem(OP, p.dtype)?;
        let (t, e) = (p.tokens, p.experts);
        // NOTE: the scores stay on the device for the per-expert load; with no token the
        // load and counts are still written (zeros) by the stats launch.
        let scores_handle = self.scratch(OP, 4 * (t * e).max(1))?;
        // SAFETY: `scores_handle` holds `T·E` f32 (at least one).
        let scores = |h: &cubecl::server::Handle| unsafe { ArrayArg::<R>::from_raw_parts(h.clone(), (t * e).max(1)) };
        if let Some(count) = grid(OP, t)? {
            let (n_group, topk_group) = p.groups.map_or((1, 1), |g| (g.n_group, g.topk_group));
            route::route_tokens::launch::<R>(
                &self.client,
                count,
                CubeDim::new_1d(BLOCK as u32),
                array(io.logits),
                io.gate.map_or_else(|| placeholder(self), array),
                io.bias.map_or_else(|| placeholder(self), array),
                mask_arg(self, p.expert_mask.as_deref()),
                scores(&scores_handle),
                scratch(self, t * e)?,
                scratch(self, t * n_group)?,
                array(io.ids),
                array(io.weights),
                self.flag_arg(),
                scalar(OP, t)?,
                scalar(OP, e)?,
                scalar(OP, p.k)?,
                scalar(OP, p.hidden.unwrap_or(0))?,
                scalar(OP, n_group)?,
                scalar(OP, topk_group)?,
                p.scaling,
                BadIndex::RouteNonFinite.code(),
                p.hidden.is_some(),
                p.score == ScoreFn::Sigmoid,
                p.use_bias,
                p.expert_mask.is_some(),
                p.groups.is_some(),
                p.renormalize,
                elem,
            );
        }
        if let Some(count) = grid(OP, e)? {
            route::route_stats::launch::<R>(
                &self.client,
                count,
                CubeDim::new_1d(BLOCK as u32),
                array(io.ids),
                scores(&scores_handle),
                array(io.counts),
                array(io.load),
                scalar(OP, t)?,
                scalar(OP, e)?,
                scalar(OP, p.k)?,
            );
        }
        Ok(())
    }
}

/// [`RouteOps::route`], the fused gate's f32 logits (plane path) in `logits` when given (a
/// handle of at least `4·T·E` bytes the caller keeps, e.g. the MoE layer's scratch).
///
/// # Errors
/// [`moekit_ops::Error::Unsupported`] for sizes past the launch limits.
pub(crate) fn route_into<R: Runtime>(
    b: &CubeBackend<R>,
    p: &Validated<RouteProblem>,
    io: RouteIo<'_, CubeBuffer>,
    logits: Option<cubecl::server::Handle>,
) -> Result<()> {
    let env = std::env::var(ROUTE_ENV).ok();
    match select::select(caps(b), p, env.as_deref()) {
        RoutePath::Simple => b.route_simple(p, io),
        RoutePath::Plane(cfg) => {
            let gate_env = std::env::var(GATE_ENV).ok();
            let gate = select::select_gate(caps(b), p, gate_env.as_deref());
            let forced = select::gate_forced(gate_env.as_deref()) == Some(true);
            fast::route_fast(b, p, io, cfg, gate, forced, logits)
        }
    }
}

impl<R: Runtime> RouteOps for CubeBackend<R> {
    fn route(&self, p: &Validated<RouteProblem>, io: RouteIo<'_, CubeBuffer>) -> Result<()> {
        route_into(self, p, io, None)
    }

    fn update_bias(&self, p: &Validated<BiasUpdateProblem>, bias: &mut CubeBuffer, counts: &CubeBuffer) -> Result<()> {
        const OP: &str = "update_bias";
        let Some(count) = grid(OP, p.experts)? else { return Ok(()) };
        route::update_bias::launch::<R>(
            &self.client,
            count,
            CubeDim::new_1d(BLOCK as u32),
            array(bias),
            array(counts),
            mask_arg(self, p.expert_mask.as_deref()),
            scalar(OP, p.experts)?,
            p.speed,
            p.expert_mask.is_some(),
        );
        Ok(())
    }
}
