//! The scalable routing launches: the gate GEMM (fused gate only), one plane per token, then
//! the per-expert reduction of the per-cube statistics.

use super::super::gemm::{cubes, float_elem, scalar};
use super::super::{array, cubes_1d, placeholder};
use super::mask_arg;
use super::select::{refine_gate, GateKernel, MmaCaps, PlaneCfg};
use crate::flag::BadIndex;
use crate::kernels::route::gate::{gate_logits, GATE_UNITS};
use crate::kernels::route::gate_cmma::{gate_logits_cmma, GC_BM, GC_BN, GC_PLANES};
use crate::kernels::route::gate_mma::{gate_logits_mma, LANES, MB, NB, PLANES, VEC};
use crate::kernels::route::plane::{route_plane, route_stats_reduce};
use crate::{CubeBackend, CubeBuffer};
use cubecl::features::MmaConfig;
use cubecl::ir::{ElemType, FloatKind};
use cubecl::prelude::*;
use moekit_ops::{Result, RouteIo, RouteProblem, ScoreFn, TensorMeta, Validated};

const OP: &str = "route";

/// Cubes the plane kernel aims for (tokens per plane grow past it).
const TARGET_CUBES: usize = 1024;
/// Units per cube of the statistics reduction (a power of two).
const REDUCE_BLOCK: usize = 128;

/// What the runtime of `b` offers the manual-MMA gate for inputs of `elem`.
fn mma_caps<R: Runtime>(b: &CubeBackend<R>, elem: ElemType) -> MmaCaps {
    let props = b.client.properties();
    let config = MmaConfig {
        a_type: elem.into(),
        b_type: elem.into(),
        cd_type: ElemType::Float(FloatKind::F32).into(),
        m: 16,
        n: 8,
        k: 16,
    };
    let hw = &props.hardware;
    MmaCaps {
        mma: props.features.matmul.mma.contains(&config),
        max_shared: hw.max_shared_memory_size,
        max_cubes: (hw.max_cube_count.0, hw.max_cube_count.1),
    }
}

/// Routing through [`route_plane`] with launch shape `cfg`, the fused gate's GEMM (if any) on
/// `gate_kernel` (after [`refine_gate`]; `gate_forced`: the override asked for `cmma`), its
/// f32 logits `[T, E]` in `logits_scratch` when given (a handle of at least `4·T·E` bytes the
/// caller keeps; a fresh one otherwise).
///
/// # Errors
/// [`moekit_ops::Error::Unsupported`] for sizes past the launch limits.
pub(super) fn route_fast<R: Runtime>(
    b: &CubeBackend<R>,
    p: &Validated<RouteProblem>,
    io: RouteIo<'_, CubeBuffer>,
    cfg: PlaneCfg,
    gate_kernel: GateKernel,
    gate_forced: bool,
    logits_scratch: Option<cubecl::server::Handle>,
) -> Result<()> {
    let (t, e) = (p.tokens, p.experts);
    let mut elem = float_elem(OP, p.dtype)?;
    let gate_kernel = refine_gate(gate_kernel, mma_caps(b, elem), p, gate_forced);
    // The logits: the input, or the gate GEMM's f32 output.
    let logits = match (p.hidden, io.gate) {
        (Some(h), Some(gate)) => {
            let out = match logits_scratch {
                Some(h) => h,
                None => b.scratch(OP, 4 * (t * e).max(1))?,
            };
            if let (true, GateKernel::Mma) = (t > 0, gate_kernel) {
                let (x, g) = (io.logits, gate);
                // SAFETY: `x` holds `T·H` and `gate` `H·E` elements (checked by `check_io`),
                // whole numbers of 16-byte vectors (`refine_gate`: `H` and `E` multiples of
                // `VEC`), non-empty (`T > 0`, `H` and `E` positive); `out` holds `T·E` f32. The
                // kernel keeps every access inside those (see its module doc).
                unsafe {
                    gate_logits_mma::launch_unchecked::<R>(
                        &b.client,
                        CubeCount::Static(cubes(OP, t.div_ceil(MB))?, cubes(OP, e.div_ceil(NB))?, 1),
                        CubeDim::new_2d(LANES as u32, PLANES as u32),
                        VEC,
                        ArrayArg::from_raw_parts(x.handle.clone(), (x.numel() / VEC).max(1)),
                        ArrayArg::from_raw_parts(g.handle.clone(), (g.numel() / VEC).max(1)),
                        ArrayArg::from_raw_parts(out.clone(), (t * e).max(1)),
                        scalar(OP, t)?,
                        scalar(OP, h)?,
                        scalar(OP, e)?,
                        elem,
                    );
                }
            } else if let (true, GateKernel::Cmma(plane)) = (t > 0, gate_kernel) {
                // SAFETY: `x` holds `T·H` and `gate` `H·E` elements (checked by `check_io`), `out`
                // `T·E` f32; the kernel keeps every access inside those (see its module doc).
                unsafe {
                    gate_logits_cmma::launch_unchecked::<R>(
                        &b.client,
                        CubeCount::Static(cubes(OP, e.div_ceil(GC_BN))?, cubes(OP, t.div_ceil(GC_BM))?, 1),
                        CubeDim::new_2d(plane as u32, GC_PLANES as u32),
                        array(io.logits),
                        array(gate),
                        ArrayArg::from_raw_parts(out.clone(), (t * e).max(1)),
                        scalar(OP, t)?,
                        scalar(OP, h)?,
                        scalar(OP, e)?,
                        plane,
                        elem,
                    );
                }
            } else if t > 0 {
                let tn = if e >= 128 { 8 } else { 4 };
                let tm = 4;
                gate_logits::launch::<R>(
                    &b.client,
                    CubeCount::Static(
                        cubes(OP, t.div_ceil(GATE_UNITS * tm))?,
                        cubes(OP, e.div_ceil(GATE_UNITS * tn))?,
                        1,
                    ),
                    CubeDim::new_2d(GATE_UNITS as u32, GATE_UNITS as u32),
                    array(io.logits),
                    array(gate),
                    // SAFETY: `out` holds `T·E` f32 (at least one).
                    unsafe { ArrayArg::from_raw_parts(out.clone(), (t * e).max(1)) },
                    scalar(OP, t)?,
                    scalar(OP, h)?,
                    scalar(OP, e)?,
                    tm,
                    tn,
                    elem,
                );
            }
            elem = ElemType::Float(FloatKind::F32);
            // SAFETY: `out` holds `T·E` f32 (at least one).
            unsafe { ArrayArg::<R>::from_raw_parts(out, (t * e).max(1)) }
        }
        _ => array(io.logits),
    };

    let per_cube = cfg.planes;
    let tpp = t.div_ceil(per_cube * TARGET_CUBES).max(1);
    let n_cubes = t.div_ceil(per_cube * tpp);
    let part_counts = b.scratch(OP, 4 * (n_cubes * e).max(1))?;
    let part_load = b.scratch(OP, 4 * (n_cubes * e).max(1))?;
    // SAFETY: each partial holds `cubes·E` 4-byte elements (at least one).
    let part = |h: &cubecl::server::Handle| unsafe { ArrayArg::<R>::from_raw_parts(h.clone(), (n_cubes * e).max(1)) };
    if n_cubes > 0 {
        let (n_group, topk_group) = p.groups.map_or((1, 1), |g| (g.n_group, g.topk_group));
        route_plane::launch::<R>(
            &b.client,
            CubeCount::Static(cubes(OP, n_cubes)?, 1, 1),
            CubeDim::new_2d(cfg.plane as u32, cfg.planes as u32),
            logits,
            io.bias.map_or_else(|| placeholder(b), array),
            mask_arg(b, p.expert_mask.as_deref()),
            array(io.ids),
            array(io.weights),
            part(&part_counts),
            part(&part_load),
            b.flag_arg(),
            scalar(OP, t)?,
            scalar(OP, e)?,
            scalar(OP, p.k)?,
            scalar(OP, n_group)?,
            scalar(OP, topk_group)?,
            scalar(OP, tpp)?,
            p.scaling,
            BadIndex::RouteNonFinite.code(),
            cfg.plane,
            cfg.planes,
            cfg.per,
            cfg.emulate,
            p.score == ScoreFn::Sigmoid,
            p.use_bias,
            p.expert_mask.is_some(),
            p.groups.is_some(),
            p.renormalize,
            elem,
        );
    }
    if let Some(count) = cubes_1d(OP, e)? {
        route_stats_reduce::launch::<R>(
            &b.client,
            count,
            CubeDim::new_1d(REDUCE_BLOCK as u32),
            part(&part_counts),
            part(&part_load),
            array(io.counts),
            array(io.load),
            scalar(OP, n_cubes)?,
            scalar(OP, e)?,
            REDUCE_BLOCK,
        );
    }
    Ok(())
}
