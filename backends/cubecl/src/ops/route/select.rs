//! Which routing kernels run: a small heuristic over what the runtime offers and the problem,
//! kept apart from the launches, with an environment override.

use crate::kernels::route::gate_cmma::{gate_cmma_shared_bytes, GC_BM, GC_BN, GC_PLANES};
use crate::kernels::route::gate_mma::{gate_mma_shared_bytes, LANES, MB, NB, VEC};
use moekit_ops::{DType, RouteProblem};

/// Environment override: `simple` forces the one-unit-per-token kernels (with the gate GEMM
/// fused into them), `shared` the plane algorithm with shared-memory reductions even where
/// the runtime has plane operations. Anything else (or unset): the heuristic.
pub(crate) const ROUTE_ENV: &str = "MOEKIT_CUBECL_ROUTE";

/// Environment override of the fused gate's GEMM on the plane path: `cmma` picks the
/// matrix-instruction kernel where the runtime has it for the dtype (the manual-MMA one where
/// [`refine_gate`] allows, else the `wmma` one), `simt` the register-blocked one. Anything
/// else (or unset): the manual-MMA kernel where [`refine_gate`] allows, else the
/// register-blocked one (H200, bf16, T = 16384, E = 128, H = 2048: the whole routing op
/// takes 138 µs with the manual-MMA gate, 452 µs with the `wmma` one, 937 µs with the
/// register-blocked one; the `wmma` gate has not run through the suite on Vulkan, so it is
/// not a default anywhere).
pub(crate) const GATE_ENV: &str = "MOEKIT_CUBECL_ROUTE_GATE";

/// Whether [`GATE_ENV`]'s value forces a gate: `Some(true)` for `cmma`, `Some(false)` for
/// `simt`, `None` otherwise.
pub(crate) fn gate_forced(env: Option<&str>) -> Option<bool> {
    match env.map(str::trim) {
        Some(v) if v.eq_ignore_ascii_case("cmma") => Some(true),
        Some(v) if v.eq_ignore_ascii_case("simt") => Some(false),
        _ => None,
    }
}

/// Most experts one lane holds in registers.
const MAX_PER: usize = 32;
/// Lanes of the emulated plane, tried in order when the runtime has no plane operations.
const EMULATED_PLANES: [usize; 4] = [8, 16, 32, 64];
/// Shared memory the per-cube statistics may use (bytes), well inside lavapipe's 32 KB.
const STATS_BYTES: usize = 16 * 1024;

/// What the runtime offers the choice.
#[derive(Clone, Copy, Debug)]
pub(crate) struct RouteCaps {
    /// Plane operations (`Plane::Ops`).
    pub(crate) plane_ops: bool,
    /// `(plane_size_min, plane_size_max)`.
    pub(crate) plane_size: (u32, u32),
    /// Most units in one cube.
    pub(crate) max_units: u32,
    /// 16×16×16 matrix instructions with f32 accumulators for (f16, bf16).
    pub(crate) cmma: (bool, bool),
    /// Shared memory per cube, bytes.
    pub(crate) max_shared: usize,
    /// Most cubes along `(x, y)`.
    pub(crate) max_cubes: (u32, u32),
}

/// The kernel of the fused gate's GEMM on the plane path.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum GateKernel {
    /// The register-blocked f32 kernel (`crate::kernels::route::gate::gate_logits`).
    Simt,
    /// Matrix instructions (`crate::kernels::route::gate_cmma::gate_logits_cmma`) with planes
    /// of this many lanes.
    Cmma(usize),
    /// Manual MMA (`crate::kernels::route::gate_mma::gate_logits_mma`): planes of 32,
    /// 16-byte staged vectors.
    Mma,
}

/// What the runtime offers the manual-MMA gate.
#[derive(Clone, Copy, Debug)]
pub(crate) struct MmaCaps {
    /// m16n8k16 manual MMA with f32 accumulators for the problem's dtype.
    pub(crate) mma: bool,
    /// Shared memory per cube, bytes.
    pub(crate) max_shared: usize,
    /// Most cubes along `(x, y)`.
    pub(crate) max_cubes: (u32, u32),
}

/// Upgrades [`select_gate`]'s `Cmma` choice to the manual-MMA kernel where it applies: planes
/// of 32, manual MMA for the dtype, `H` and `E` multiples of [`VEC`] (every staged 16-byte
/// vector wholly inside or outside the data, rows 16-byte aligned) and positive, room for its
/// shared memory and grid. Where it does not, the `wmma` kernel stays only when `forced`
/// (the override asked for `cmma`), else the register-blocked kernel runs. Any other choice
/// stays as it is.
pub(crate) fn refine_gate(kernel: GateKernel, caps: MmaCaps, p: &RouteProblem, forced: bool) -> GateKernel {
    let kernel = upgrade(kernel, caps, p);
    match kernel {
        GateKernel::Cmma(_) if !forced => GateKernel::Simt,
        k => k,
    }
}

/// [`refine_gate`]'s upgrade to the manual-MMA kernel.
fn upgrade(kernel: GateKernel, caps: MmaCaps, p: &RouteProblem) -> GateKernel {
    let Some(h) = p.hidden else { return kernel };
    // NOTE: `H` and `E` positive: the kernel stages its first step before looking at `H`.
    let fits = caps.mma
        && h > 0
        && p.experts > 0
        && h % VEC == 0
        && p.experts % VEC == 0
        && gate_mma_shared_bytes() <= caps.max_shared
        && p.tokens.div_ceil(MB) <= caps.max_cubes.0 as usize
        && p.experts.div_ceil(NB) <= caps.max_cubes.1 as usize;
    if kernel == GateKernel::Cmma(LANES) && fits {
        GateKernel::Mma
    } else {
        kernel
    }
}

/// The gate kernel for `p` on a runtime with `caps`; `env` is [`GATE_ENV`]'s value (`simt`:
/// always the register-blocked kernel; [`refine_gate`] then decides between the matrix
/// kernels). The matrix-instruction kernel needs f16 or bf16 inputs (f32 inputs keep their f32 products:
/// no tf32), the instructions for that dtype, a fixed plane size, and room for its cube, its
/// shared memory and its grid.
pub(crate) fn select_gate(caps: RouteCaps, p: &RouteProblem, env: Option<&str>) -> GateKernel {
    let want = gate_forced(env) != Some(false);
    let has = match p.dtype {
        DType::F16 => caps.cmma.0,
        DType::BF16 => caps.cmma.1,
        _ => false,
    };
    let (lo, plane) = caps.plane_size;
    let fits = plane > 0
        && lo == plane
        && plane as usize * GC_PLANES <= caps.max_units as usize
        && gate_cmma_shared_bytes() <= caps.max_shared
        && p.experts.div_ceil(GC_BN) <= caps.max_cubes.0 as usize
        && p.tokens.div_ceil(GC_BM) <= caps.max_cubes.1 as usize;
    if want && has && fits && p.hidden.is_some() {
        GateKernel::Cmma(plane as usize)
    } else {
        GateKernel::Simt
    }
}

/// Launch shape of [`crate::kernels::route::plane::route_plane`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct PlaneCfg {
    /// Lanes per plane.
    pub(crate) plane: usize,
    /// Planes per cube.
    pub(crate) planes: usize,
    /// Experts per lane (a power of two, `plane · per >= E`).
    pub(crate) per: usize,
    /// Reductions through shared memory instead of plane operations.
    pub(crate) emulate: bool,
}

/// The routing path.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum RoutePath {
    /// One unit per token (`crate::kernels::route::route_tokens`), gate fused in.
    Simple,
    /// One plane per token; the fused gate first runs as its own GEMM.
    Plane(PlaneCfg),
}

/// Chooses the path for `p` on a runtime with `caps`; `env` is [`ROUTE_ENV`]'s value.
pub(crate) fn select(caps: RouteCaps, p: &RouteProblem, env: Option<&str>) -> RoutePath {
    if env == Some("simple") {
        return RoutePath::Simple;
    }
    let (lo, hi) = caps.plane_size;
    let native = caps.plane_ops && lo == hi && lo > 0 && env != Some("shared");
    if native {
        if let Some(cfg) = plane_cfg(caps, p, lo as usize, false) {
            return RoutePath::Plane(cfg);
        }
    }
    EMULATED_PLANES
        .iter()
        .find_map(|&plane| plane_cfg(caps, p, plane, true))
        .map_or(RoutePath::Simple, RoutePath::Plane)
}

/// The launch shape for planes of `plane` lanes, or `None` when the problem does not fit
/// (`k` above the lanes, more than [`MAX_PER`] experts a lane, more groups than lanes or 32).
fn plane_cfg(caps: RouteCaps, p: &RouteProblem, plane: usize, emulate: bool) -> Option<PlaneCfg> {
    let per = p.experts.div_ceil(plane).next_power_of_two();
    let groups_fit = p.groups.is_none_or(|g| g.n_group <= plane.min(32));
    let max_units = caps.max_units as usize;
    if per > MAX_PER || p.k > plane || !groups_fit || plane > max_units {
        return None;
    }
    // NOTE: about 256 units a cube, fewer when the per-cube statistics (8 bytes an expert
    // slot) would not fit in `STATS_BYTES`.
    let mut planes = (256 / plane).clamp(1, max_units / plane);
    while planes > 1 && planes * plane * per * 8 > STATS_BYTES {
        planes /= 2;
    }
    Some(PlaneCfg { plane, planes, per, emulate })
}

#[cfg(test)]
mod tests {
    use super::*;
    use moekit_ops::{DType, GroupLimit};

    const CUDA: RouteCaps = RouteCaps {
        plane_ops: true,
        plane_size: (32, 32),
        max_units: 1024,
        cmma: (true, true),
        max_shared: 227 * 1024,
        max_cubes: (u32::MAX, 65_535),
    };
    const LAVAPIPE: RouteCaps = RouteCaps {
        plane_ops: false,
        plane_size: (8, 8),
        max_units: 1024,
        cmma: (false, false),
        max_shared: 32 * 1024,
        max_cubes: (65_535, 65_535),
    };

    #[test]
    fn plane_ops_give_native_planes() {
        let p = RouteProblem::new(16384, 128, 8, DType::BF16);
        assert_eq!(select(CUDA, &p, None), RoutePath::Plane(PlaneCfg { plane: 32, planes: 8, per: 4, emulate: false }));
        assert_eq!(select(CUDA, &p, Some("simple")), RoutePath::Simple);
        assert!(matches!(select(CUDA, &p, Some("shared")), RoutePath::Plane(PlaneCfg { emulate: true, .. })));
    }

    #[test]
    fn no_plane_ops_emulate_or_fall_back() {
        let mut p = RouteProblem::new(40, 256, 8, DType::F32);
        assert_eq!(
            select(LAVAPIPE, &p, None),
            RoutePath::Plane(PlaneCfg { plane: 8, planes: 8, per: 32, emulate: true })
        );
        p.groups = Some(GroupLimit { n_group: 16, topk_group: 4 });
        assert!(matches!(select(LAVAPIPE, &p, None), RoutePath::Plane(PlaneCfg { plane: 16, .. })));
        p.experts = 1 << 12;
        p.groups = None;
        assert_eq!(select(LAVAPIPE, &p, None), RoutePath::Simple);
    }

    #[test]
    fn gate_on_matrix_instructions_only_when_asked_and_possible() {
        let mut p = RouteProblem::new(16384, 128, 8, DType::BF16);
        p.hidden = Some(2048);
        assert_eq!(select_gate(CUDA, &p, Some("cmma")), GateKernel::Cmma(32));
        assert_eq!(select_gate(CUDA, &p, Some(" CMMA ")), GateKernel::Cmma(32));
        assert_eq!(select_gate(CUDA, &p, Some("simt")), GateKernel::Simt);
        assert_eq!(select_gate(CUDA, &p, None), GateKernel::Cmma(32));
        // No matrix instructions (lavapipe), f32 inputs, an unfixed plane size, too many
        // token blocks for the grid, or no fused gate: the SIMT kernel.
        assert_eq!(select_gate(LAVAPIPE, &p, Some("cmma")), GateKernel::Simt);
        assert_eq!(select_gate(RouteCaps { cmma: (true, false), ..CUDA }, &p, Some("cmma")), GateKernel::Simt);
        assert_eq!(select_gate(RouteCaps { plane_size: (16, 32), ..CUDA }, &p, Some("cmma")), GateKernel::Simt);
        assert_eq!(select_gate(RouteCaps { max_shared: 16 * 1024, ..CUDA }, &p, Some("cmma")), GateKernel::Simt);
        p.dtype = DType::F16;
        assert_eq!(select_gate(RouteCaps { cmma: (true, false), ..CUDA }, &p, Some("cmma")), GateKernel::Cmma(32));
        p.tokens = 65_536 * GC_BM;
        assert_eq!(select_gate(CUDA, &p, Some("cmma")), GateKernel::Simt);
        p.tokens = 16;
        p.dtype = DType::F32;
        assert_eq!(select_gate(CUDA, &p, Some("cmma")), GateKernel::Simt);
        p.dtype = DType::BF16;
        p.hidden = None;
        assert_eq!(select_gate(CUDA, &p, Some("cmma")), GateKernel::Simt);
    }

    #[test]
    fn manual_mma_gate_for_vector_shapes_else_the_first_kernel() {
        const MMA: MmaCaps = MmaCaps { mma: true, max_shared: 227 * 1024, max_cubes: (u32::MAX, 65_535) };
        let mut p = RouteProblem::new(16384, 128, 8, DType::BF16);
        p.hidden = Some(2048);
        let cmma = select_gate(CUDA, &p, Some("cmma"));
        assert_eq!(refine_gate(cmma, MMA, &p, true), GateKernel::Mma);
        // Not asked for, or not possible: unchanged.
        assert_eq!(refine_gate(GateKernel::Simt, MMA, &p, true), GateKernel::Simt);
        assert_eq!(refine_gate(GateKernel::Cmma(64), MMA, &p, true), GateKernel::Cmma(64));
        assert_eq!(refine_gate(cmma, MmaCaps { mma: false, ..MMA }, &p, true), cmma);
        assert_eq!(refine_gate(cmma, MmaCaps { max_shared: 48 * 1024, ..MMA }, &p, true), cmma);
        // More experts than one block: several expert blocks, still the manual kernel.
        p.experts = 264;
        assert_eq!(refine_gate(cmma, MMA, &p, true), GateKernel::Mma);
        // Shapes the 16-byte staging cannot take keep the first kernel.
        p.experts = 60;
        assert_eq!(refine_gate(cmma, MMA, &p, true), cmma);
        p.experts = 64;
        p.hidden = Some(2044);
        assert_eq!(refine_gate(cmma, MMA, &p, true), cmma);
        p.hidden = Some(8);
        p.tokens = 1;
        assert_eq!(refine_gate(cmma, MMA, &p, true), GateKernel::Mma);
        p.hidden = Some(0);
        assert_eq!(refine_gate(cmma, MMA, &p, true), cmma);
        p.hidden = None;
        assert_eq!(refine_gate(cmma, MMA, &p, true), cmma);
        // Without the override: the manual-MMA kernel where it applies, else the
        // register-blocked one (never the `wmma` one).
        p.hidden = Some(2048);
        let auto = select_gate(CUDA, &p, None);
        assert_eq!(refine_gate(auto, MMA, &p, false), GateKernel::Mma);
        assert_eq!(refine_gate(auto, MmaCaps { mma: false, ..MMA }, &p, false), GateKernel::Simt);
        p.experts = 60;
        assert_eq!(refine_gate(auto, MMA, &p, false), GateKernel::Simt);
        assert_eq!(refine_gate(select_gate(CUDA, &p, Some("simt")), MMA, &p, false), GateKernel::Simt);
        assert_eq!(gate_forced(Some(" Cmma ")), Some(true));
        assert_eq!(gate_forced(Some("simt")), Some(false));
        assert_eq!(gate_forced(Some("other")), None);
    }
}
