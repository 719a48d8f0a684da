//! RouteOps on CUDA (`kernels/route.cu`, `kernels/route_sm90.cu`). With the fused gate:
//! - by default the gate GEMM into f32 logits (cuBLASLt, or a SIMT split-K kernel), then the
//!   routing kernel (one warp per token: the register path `route_r*` for E <= 1024 and k <= 32,
//!   else the generic `route_*`);
//! - opt-in (`MOEKIT_CUDA_ROUTE_GATE=fused`), on Hopper, f16/bf16, E <= 256 and E, H multiples
//!   of 8: one kernel, `route_fused_r*`, the gate GEMM on wgmma with the routing in its epilogue
//!   (the logits stay in shared memory; with few token tiles the hidden dimension is split over
//!   blocks whose f32 partials the last block of each tile adds, see [`FusedPlan`]). Run 19
//!   measured it slower than the two kernels (qwen3 56.8 µs against 21.3 + 26.0), so it is not
//!   the default.
//!
//! The one-block bias update is apart. Logits and partials live in a grow-only scratch buffer
//! of the backend, and cuBLASLt's plans are cached per shape (`gemm_f32_out`), so a repeated
//! call queues its work with no host setup.
//!
//! Overrides: `MOEKIT_CUDA_ROUTE_GATE=fused` (the one-kernel path where it applies),
//! `MOEKIT_CUDA_ROUTE_GATE=simt` (SIMT gate, then routing), `MOEKIT_CUDA_ROUTE=generic`
//! (generic routing kernel, after either gate).

use crate::backend::{device_err, grown, lock};
use crate::launch::{blocks, i32_of, kernel_name, launch_err};
use crate::ops::gemm::gemm_f32_out;
use crate::runtime::sources::ROUTE;
use crate::{CudaBackend, CudaBuffer};
use cudarc::driver::sys::CUfunction_attribute_enum;
use cudarc::driver::{CudaFunction, CudaSlice, LaunchArgs, LaunchConfig, PushKernelArg};
use moekit_ops::{BiasUpdateProblem, DType, Result, RouteIo, RouteOps, RouteProblem, ScoreFn, Validated};

/// A null device pointer for an absent optional argument.
const NULL: u64 = 0;
/// Dynamic shared memory the routing kernel may use without an opt-in, in 4-byte words.
const SMEM_WORDS: usize = 48 * 1024 / 4;
/// Most warps (tokens in flight) per routing block.
const MAX_WARPS: usize = 8;
/// Most routing blocks; tokens are grid-strided over them so each block flushes its per-expert
/// counts and load once.
const MAX_BLOCKS: usize = 1024;
/// Output tile of the gate kernel (`GATE_BM`, `GATE_BN` in route.cu).
const GATE_TILE: usize = 64;
/// Gate blocks to aim for (two per SM on an H200) before splitting the hidden dimension.
const GATE_TARGET_BLOCKS: usize = 264;
/// Fewest hidden elements per gate split, and the most splits.
const GATE_MIN_SPLIT: usize = 256;
const GATE_MAX_SPLITS: usize = 32;

/// How the routing kernel lays out its memory for one problem.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct RoutePlan {
    /// Warps (tokens in flight) per block.
    warps: usize,
    /// Words of each warp's work area: `2E + 2G + k`.
    per_warp: usize,
    /// Whether counts and load are accumulated per block in shared memory first.
    block_acc: bool,
    /// Whether the work areas live in a global scratch buffer (too large for shared memory).
    global_work: bool,
    /// Dynamic shared memory in words.
    smem_words: usize,
}

/// The layout for `e` experts, `g` groups (0: no group limit) and top-`k`.
fn plan(e: usize, g: usize, k: usize) -> RoutePlan {
    let per_warp = 2 * e + 2 * g + k;
    let acc = 2 * e;
    let fit = SMEM_WORDS.saturating_sub(acc) / per_warp;
    if acc < SMEM_WORDS && fit >= 1 {
        let warps = fit.min(MAX_WARPS);
        return RoutePlan { warps, per_warp, block_acc: true, global_work: false, smem_words: acc + warps * per_warp };
    }
    let block_acc = acc <= SMEM_WORDS;
    RoutePlan { warps: MAX_WARPS, per_warp, block_acc, global_work: true, smem_words: if block_acc { acc } else { 0 } }
}

/// Split-K of the gate for `t` tokens, `e` experts, hidden `h`: `(splits, kchunk)` with
/// `kchunk` a multiple of 16 and `splits · kchunk >= h`, every split non-empty.
fn gate_split(t: usize, e: usize, h: usize) -> (usize, usize) {
    let tiles = t.div_ceil(GATE_TILE) * e.div_ceil(GATE_TILE);
    let want = (GATE_TARGET_BLOCKS / tiles).clamp(1, GATE_MAX_SPLITS).min(h.div_ceil(GATE_MIN_SPLIT)).max(1);
    let kchunk = h.div_ceil(want).div_ceil(16) * 16;
    (h.div_ceil(kchunk), kchunk)
}

/// How the gate logits are computed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum GatePath {
    /// The fused Hopper kernel where it applies ([`fused_plan_for`]), else cuBLASLt
    /// (`MOEKIT_CUDA_ROUTE_GATE=fused`; opt-in: slower than the two kernels in run 19, see
    /// benches/NOTES.md).
    Fused,
    /// cuBLASLt, f32 output (the SIMT kernel where cuBLASLt is missing or declines the shape).
    CublasLt,
    /// The SIMT split-K kernel (`MOEKIT_CUDA_ROUTE_GATE=simt`).
    Simt,
}

/// The gate path: cuBLASLt unless `MOEKIT_CUDA_ROUTE_GATE` is `fused` or `simt`.
fn gate_path() -> GatePath {
    match std::env::var("MOEKIT_CUDA_ROUTE_GATE").as_deref() {
        Ok("simt") => GatePath::Simt,
        Ok("fused") => GatePath::Fused,
        _ => GatePath::CublasLt,
    }
}

/// Whether a new backend routes through the fused kernel (`MOEKIT_CUDA_ROUTE_GATE=fused`).
pub(crate) fn fused_route_from_env() -> bool {
    gate_path() == GatePath::Fused
}

/// Token rows per block of the fused kernel (`rf::BM` in route_sm90.cu).
const FUSED_BM: usize = 128;
/// Hidden elements per pipeline stage (`rf::BK`).
const FUSED_BK: usize = 64;
/// Warps per block (`rf::WARPS`).
const FUSED_WARPS: usize = 8;
/// Most experts (two m64n128 halves).
const FUSED_MAX_EXPERTS: usize = 256;
/// Most blocks one token tile's hidden dimension is split over, and the fewest stages each
/// split keeps.
const FUSED_MAX_SPLITS: usize = 32;
const FUSED_MIN_SPLIT_TILES: usize = 2;
/// Dynamic shared memory a Hopper block may opt into.
const HOPPER_SHARED: usize = 227 * 1024;

/// The fused kernel's launch for one problem (route_sm90.cu's header has the design).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct FusedPlan {
    /// Experts per lane of the routing (`route_fused_r<epl>`): 1, 2, 4 or 8.
    epl: usize,
    /// Expert columns of the GEMM tile: 128 or 256.
    bn: usize,
    /// Token tiles (grid x) and hidden splits per tile (grid y).
    m_tiles: usize,
    splits: usize,
    /// Hidden elements per split, a multiple of `FUSED_BK`.
    kchunk: usize,
    /// Dynamic shared memory in bytes.
    shared: usize,
}

impl FusedPlan {
    /// Bytes of the per-tile arrival counters, rounded up so the partials start 256-aligned.
    fn sem_bytes(&self) -> usize {
        (self.m_tiles * 4).next_multiple_of(256)
    }

    /// Bytes of the f32 partial tiles (none without a split).
    fn part_bytes(&self) -> usize {
        if self.splits > 1 {
            self.m_tiles * self.splits * FUSED_BM * self.bn * 4
        } else {
            0
        }
    }
}

/// The fused kernel's plan for `t` tokens, hidden `h`, `e` experts, `g` groups (0: none),
/// top-`k`, on `sms` multiprocessors of architecture `arch`; `None` where it does not apply.
/// Splits the hidden dimension when the token tiles alone leave multiprocessors idle.
fn fused_plan_for(
    arch: &str,
    dtype: DType,
    (t, h, e, g, k): (usize, usize, usize, usize, usize),
    sms: usize,
) -> Option<FusedPlan> {
    let half = matches!(dtype, DType::BF16 | DType::F16);
    if arch != "sm_90a"
        || !half
        || t == 0
        || e == 0
        || e > FUSED_MAX_EXPERTS
        || e % 8 != 0
        || h % 8 != 0
        || k > REG_MAX_K
    {
        return None;
    }
    let epl = e.div_ceil(32).next_power_of_two();
    let nh = if epl > 4 { 2 } else { 1 };
    let bn = 128 * nh;
    let m_tiles = t.div_ceil(FUSED_BM);
    let k_tiles = h.div_ceil(FUSED_BK);
    let want = (sms / m_tiles).clamp(1, FUSED_MAX_SPLITS).min((k_tiles / FUSED_MIN_SPLIT_TILES).max(1));
    let kchunk = k_tiles.div_ceil(want) * FUSED_BK;
    let splits = h.div_ceil(kchunk);
    // RfTile<NH> in route_sm90.cu: the pipeline stages or the staged logits, whichever is larger.
    let stages = if nh == 1 { 5 } else { 4 };
    let pipe = stages * (FUSED_BM * FUSED_BK * 2 + bn * FUSED_BK * 2);
    let logits = FUSED_BM * (bn + 4) * 4;
    let words = 2 * e + if g > 0 { FUSED_WARPS * (e + 2 * g) } else { 0 };
    let shared = 1024 + pipe.max(logits) + 4 * words;
    (shared <= HOPPER_SHARED).then_some(FusedPlan { epl, bn, m_tiles, splits, kchunk, shared })
}

/// Tokens per block of the thread routing path (`ROUTE_TPB` in route.cu).
const THREAD_TPB: usize = 64;
/// Most experts and groups of the thread path (its group choice is a 64-bit mask).
const THREAD_MAX_EXPERTS: usize = 256;
const THREAD_MAX_GROUPS: usize = 64;
/// Dynamic shared memory a block may use on any CUDA GPU from sm_80 after opting in.
const OPT_IN_SHARED: usize = 163 * 1024;

/// Dynamic shared memory (words) of the thread routing path `route_t_*` for `e` experts, `g`
/// groups (0: none) and top-`k`, where `MOEKIT_CUDA_ROUTE=thread` asks for it and it applies.
/// Opt-in: run 19 measured it 1.7–2.1× slower than the register path at prefill sizes (one
/// thread per token leaves ~4 warps per SM for 16384 tokens, and each runs thousands of
/// dependent shared-memory steps).
fn thread_plan(e: usize, g: usize, k: usize) -> Option<usize> {
    match std::env::var("MOEKIT_CUDA_ROUTE").as_deref() {
        Ok("thread") => thread_plan_for(e, g, k),
        _ => None,
    }
}

fn thread_plan_for(e: usize, g: usize, k: usize) -> Option<usize> {
    if e > THREAD_MAX_EXPERTS || g > THREAD_MAX_GROUPS || k > REG_MAX_K {
        return None;
    }
    let words = 4 * e + THREAD_TPB * (e + 1) + if g > 0 { THREAD_TPB * (g + 1) } else { 0 };
    (4 * words <= OPT_IN_SHARED).then_some(words)
}

/// Most experts of the register routing path (32 lanes × `EPL` <= 32 each).
const REG_MAX_EXPERTS: usize = 1024;
/// Most picks of the register routing path (lane j keeps pick j).
const REG_MAX_K: usize = 32;

/// Layout of the register routing kernel `route_r<epl>`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct RegPlan {
    /// Experts per lane: a power of two with `32 · epl >= E`.
    epl: usize,
    /// Warps (tokens in flight) per block.
    warps: usize,
    /// Dynamic shared memory in words: `2E` accumulators, plus `E + 2G` per warp with groups
    /// that are not limited in registers ([`groups_in_registers`]).
    smem_words: usize,
}

/// The register path for `e` experts, `g` groups (0: none) and top-`k`, unless it does not
/// apply or `MOEKIT_CUDA_ROUTE=generic` forces the generic kernel.
fn reg_plan(e: usize, g: usize, k: usize) -> Option<RegPlan> {
    if std::env::var("MOEKIT_CUDA_ROUTE").as_deref() == Ok("generic") {
        return None;
    }
    reg_plan_for(e, g, k)
}

fn reg_plan_for(e: usize, g: usize, k: usize) -> Option<RegPlan> {
    if e > REG_MAX_EXPERTS || k > REG_MAX_K {
        return None;
    }
    let epl = e.div_ceil(32).next_power_of_two();
    let acc = 2 * e;
    let per_warp = if g > 0 && !groups_in_registers(e, g, epl) { e + 2 * g } else { 0 };
    let warps = SMEM_WORDS.checked_sub(acc)?.checked_div(per_warp).map_or(MAX_WARPS, |w| w.min(MAX_WARPS));
    (warps >= 1).then_some(RegPlan { epl, warps, smem_words: acc + warps * per_warp })
}

/// Environment variable of the routing op's timing probes (the fused-gate path, two kernels):
/// `gate-only` queues the gate GEMM and the zeroing but no routing kernel; `no-gate` leaves the
/// gate GEMM out, so the routing kernel reads the logits of the call before. Each leaves one stage
/// out, so the time it saves is what that stage costs in the op; the outputs are then wrong
/// (experiments only, never set it for real work).
const ROUTE_PROBE_ENV: &str = "MOEKIT_CUDA_ROUTE_PROBE";

/// A stage the routing op leaves out ([`ROUTE_PROBE_ENV`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum RouteProbe {
    None,
    GateOnly,
    NoGate,
}

fn route_probe() -> RouteProbe {
    parse_route_probe(std::env::var(ROUTE_PROBE_ENV).ok().as_deref())
}

fn parse_route_probe(v: Option<&str>) -> RouteProbe {
    match v.map(str::trim) {
        Some("gate-only") => RouteProbe::GateOnly,
        Some("no-gate") => RouteProbe::NoGate,
        _ => RouteProbe::None,
    }
}

/// Whether the register kernel applies the group limit in registers (`route_groups_in_registers`
/// in route.cu): every register slot holds experts of one group, i.e. E = 32 · EPL and the `g`
/// groups are a power of two no larger than EPL. The warps then need no shared group area.
fn groups_in_registers(e: usize, g: usize, epl: usize) -> bool {
    g > 0 && e == 32 * epl && g <= epl && g.is_power_of_two()
}

/// Whether the register kernel keeps the fixed grid of [`MAX_BLOCKS`] blocks
/// (`MOEKIT_CUDA_ROUTE_GRID=fixed`, the grid before run 24) instead of one wave.
fn reg_grid_fixed() -> bool {
    std::env::var("MOEKIT_CUDA_ROUTE_GRID").as_deref() == Ok("fixed")
}

/// Blocks of the register routing kernel: one wave of the `resident` blocks the device holds at
/// once, fewer when the tokens need fewer (`warps` tokens per block), at least one. Each block
/// zeroes and flushes its per-expert accumulators once, so a grid beyond one wave only repeats
/// that work and its global atomics (1,024 blocks gave deepseek-v3's 8,192 tokens one token per
/// warp and 2.6 waves).
fn reg_grid(tokens: usize, warps: usize, resident: usize) -> usize {
    tokens.div_ceil(warps.max(1)).min(resident).max(1)
}

impl CudaBackend {
    /// Route with the fused gate through the one-kernel Hopper path where it applies (`true`),
    /// or through the gate GEMM and the routing kernel (`false`, the default unless
    /// `MOEKIT_CUDA_ROUTE_GATE=fused`). Takes effect from the next call.
    pub fn set_fused_routing(&self, on: bool) {
        self.fused_route.store(on, std::sync::atomic::Ordering::Relaxed);
    }

    /// The fused kernel's plan for `p` (hidden `h`) on this device, when this backend takes it.
    fn fused_plan(&self, p: &RouteProblem, h: usize, a: &RouteArgs) -> Option<FusedPlan> {
        if !self.fused_route.load(std::sync::atomic::Ordering::Relaxed) {
            return None;
        }
        fused_plan_for(self.arch(), p.dtype, (p.tokens, h, p.experts, a.groups, p.k), self.sms)
    }

    /// The kernels one `route` call queues for `p`, in order (memsets left out): what the
    /// tests and the benchmark's notes use to see which path ran.
    pub fn route_kernels(&self, p: &Validated<RouteProblem>) -> Vec<String> {
        let a = RouteArgs::new(p, None, 1);
        let routing = |dtype| match (thread_plan(a.experts, a.groups, a.picks), reg_plan(a.experts, a.groups, a.picks))
        {
            (Some(_), _) => kernel_name("route_t", dtype),
            (None, Some(rp)) => kernel_name(&format!("route_r{}", rp.epl), dtype),
            (None, None) => kernel_name("route", dtype),
        };
        match p.hidden {
            _ if p.tokens == 0 => Vec::new(),
            Some(h) => match self.fused_plan(p, h, &a) {
                Some(fp) => vec![kernel_name(&format!("route_fused_r{}", fp.epl), p.dtype)],
                None if gate_path() == GatePath::Simt => vec![kernel_name("route_gate", p.dtype), routing(DType::F32)],
                None => vec!["cublaslt-gate".to_string(), routing(DType::F32)],
            },
            None => vec![routing(p.dtype)],
        }
    }

    /// Queue the fused gate + routing kernel `route_fused_r<epl>` (route_sm90.cu) for `p`:
    /// `hidden [T, H] · gate [H, E]` on wgmma, routed in the epilogue; the counts and load
    /// must be zeroed before.
    #[allow(clippy::too_many_arguments)]
    fn launch_fused(
        &self,
        fp: FusedPlan,
        p: &RouteProblem,
        h: usize,
        hidden: &CudaBuffer,
        gate: &CudaBuffer,
        io: &mut RouteIo<'_, CudaBuffer>,
        a: &RouteArgs,
    ) -> Result<()> {
        const OP: &str = "route";
        let f = self.kernels.function(OP, &ROUTE, &kernel_name(&format!("route_fused_r{}", fp.epl), p.dtype))?;
        f.set_attribute(CUfunction_attribute_enum::CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES, fp.shared as i32)
            .map_err(device_err(OP))?;
        let mut slot = lock(&self.route_logits, OP, "route logits")?;
        let sem_bytes = fp.sem_bytes();
        let scratch = grown(&mut slot, self, sem_bytes + fp.part_bytes()).map_err(device_err(OP))?;
        let (mut sem, mut part) = scratch.split_at_mut(sem_bytes);
        if fp.splits > 1 {
            // NOTE: the last block of each tile is the one that finds splits − 1 arrivals before
            // its own, so the counters start at zero on every call (and every graph replay).
            self.stream.memset_zeros(&mut sem).map_err(device_err(OP))?;
        }
        let (t, hh, kc) = (i32_of(p.tokens), i32_of(h), i32_of(fp.kchunk));
        let flag = self.flag()?;
        let mut b = self.stream.launch_builder(&f);
        b.arg(&hidden.data).arg(&gate.data);
        match io.bias {
            Some(bias) => b.arg(&bias.data),
            None => b.arg(&NULL),
        };
        match &a.mask {
            Some(m) => b.arg(m),
            None => b.arg(&NULL),
        };
        b.arg(&mut io.ids.data).arg(&mut io.weights.data).arg(&mut io.counts.data).arg(&mut io.load.data);
        b.arg(&t).arg(&hh).arg(&a.e).arg(&a.k).arg(&a.softmax).arg(&a.groups_arg).arg(&a.topk_group).arg(&a.renorm);
        b.arg(&a.scaling).arg(&kc).arg(&mut part).arg(&mut sem).arg(&flag.record);
        let cfg = LaunchConfig {
            grid_dim: (fp.m_tiles as u32, fp.splits as u32, 1),
            block_dim: ((FUSED_WARPS * 32) as u32, 1, 1),
            shared_mem_bytes: fp.shared as u32,
        };
        // SAFETY: arguments match `rf_impl`; hidden holds T × H and gate H × E elements of the
        // dtype (check_io), 16-byte aligned allocations with H and E multiples of 8 (fused_plan),
        // so every 16-byte copy is whole and in bounds (rows past T, columns past E and hidden
        // past each split are zero-filled, nothing read); bias and mask hold E, ids and weights
        // T × k, counts and load E elements; the partials hold m_tiles × splits × 128 × bn f32 and
        // the counters m_tiles i32 (sem_bytes, part_bytes); the shared memory is what
        // fused_plan sized after RfTile.
        unsafe { b.launch(cfg) }.map(drop).map_err(launch_err(OP))
    }

    /// The expert mask as `[E] i32` on the device (`None` when every expert is allowed).
    ///
    /// NOTE: uploaded per call (a few hundred bytes, no stream sync); a per-mask cache would
    /// save the copy when the model reuses one elastic width.
    fn upload_mask(&self, mask: Option<&[bool]>, op: &'static str) -> Result<Option<CudaSlice<i32>>> {
        mask.map(|m| {
            let host: Vec<i32> = m.iter().map(|&a| i32::from(a)).collect();
            self.stream.clone_htod(&host).map_err(device_err(op))
        })
        .transpose()
    }

    /// The gate logits in `slot` (grown as needed): `splits` slices `[T, E] f32` whose sum is
    /// `hidden [T, H] · gate [H, E]` (f32 accumulation), and `splits`: one slice from cuBLASLt
    /// where it runs, else the SIMT kernel's split-K partials.
    fn gate_logits<'s>(
        &self,
        p: &RouteProblem,
        h: usize,
        hidden: &CudaBuffer,
        gate: &CudaBuffer,
        slot: &'s mut Option<CudaSlice<u8>>,
    ) -> Result<(&'s CudaSlice<u8>, usize)> {
        const OP: &str = "route";
        let (splits, kchunk) = gate_split(p.tokens, p.experts, h);
        // NOTE: sized for the SIMT kernel's partials, which also covers cuBLASLt's one slice.
        // Uninitialised: both write every element the routing kernel reads.
        let logits = grown(slot, self, splits * p.tokens * p.experts * 4).map_err(device_err(OP))?;
        if gate_path() == GatePath::CublasLt
            && gemm_f32_out(self, OP, p.dtype, (p.tokens, p.experts, h), hidden, gate, logits)?
        {
            return Ok((logits, 1));
        }
        let f = self.kernels.function(OP, &ROUTE, &kernel_name("route_gate", p.dtype))?;
        let (t, hh, e, kc) = (i32_of(p.tokens), i32_of(h), i32_of(p.experts), i32_of(kchunk));
        let cfg = LaunchConfig {
            grid_dim: (p.tokens.div_ceil(GATE_TILE) as u32, p.experts.div_ceil(GATE_TILE) as u32, splits as u32),
            block_dim: (256, 1, 1),
            shared_mem_bytes: 0,
        };
        let mut b = self.stream.launch_builder(&f);
        b.arg(&hidden.data).arg(&gate.data).arg(&mut *logits).arg(&t).arg(&hh).arg(&e).arg(&kc);
        // SAFETY: arguments match `route_gate_impl`; hidden holds T × H and gate H × E elements of
        // the dtype (check_io), logits at least splits × T × E f32; every access is bounds-checked.
        unsafe { b.launch(cfg) }.map_err(launch_err(OP))?;
        Ok((logits, splits))
    }

    /// Zero the op's counts and load (the routing kernels add into them).
    fn zero_totals(&self, io: &mut RouteIo<'_, CudaBuffer>) -> Result<()> {
        self.stream.memset_zeros(&mut io.counts.data).map_err(device_err("route"))?;
        self.stream.memset_zeros(&mut io.load.data).map_err(device_err("route"))
    }

    /// Queue the routing kernel over `logits` of `dtype` (f32 from the fused gate, else the
    /// problem's dtype): the register path where it applies, else the generic kernel.
    fn launch_routing(
        &self,
        dtype: DType,
        logits: &CudaSlice<u8>,
        io: &mut RouteIo<'_, CudaBuffer>,
        a: &RouteArgs,
    ) -> Result<()> {
        if let Some(words) = thread_plan(a.experts, a.groups, a.picks) {
            return self.launch_thread(words, dtype, logits, io, a);
        }
        match reg_plan(a.experts, a.groups, a.picks) {
            Some(rp) => self.launch_reg(rp, dtype, logits, io, a),
            None => self.launch_generic(dtype, logits, io, a),
        }
    }

    /// Queue the thread routing kernel `route_t_*` over `logits` of `dtype` (`words` of
    /// dynamic shared memory, from [`thread_plan`]).
    fn launch_thread(
        &self,
        words: usize,
        dtype: DType,
        logits: &CudaSlice<u8>,
        io: &mut RouteIo<'_, CudaBuffer>,
        a: &RouteArgs,
    ) -> Result<()> {
        const OP: &str = "route";
        let f = self.kernels.function(OP, &ROUTE, &kernel_name("route_t", dtype))?;
        let shared = 4 * words;
        if shared > SMEM_WORDS * 4 {
            f.set_attribute(CUfunction_attribute_enum::CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES, shared as i32)
                .map_err(device_err(OP))?;
        }
        let grid = a.tokens.div_ceil(THREAD_TPB).min(MAX_BLOCKS);
        let flag = self.flag()?;
        let mut b = self.stream.launch_builder(&f);
        push_route_prefix(&mut b, logits, io, a);
        b.arg(&flag.record);
        let cfg = LaunchConfig {
            grid_dim: (grid as u32, 1, 1),
            block_dim: (THREAD_TPB as u32, 1, 1),
            shared_mem_bytes: shared as u32,
        };
        // SAFETY: arguments match `route_t_impl`; logits hold (splits ×) T × E elements, bias
        // and mask E, ids and weights T × k, counts and load E (check_io); E <= 256, G <= 64 and
        // k <= 32 (thread_plan); the shared memory holds the four per-expert arrays, the block's
        // THREAD_TPB rows of E + 1 words and, with groups, THREAD_TPB × (G + 1) words; indices
        // come from loop bounds, never data.
        unsafe { b.launch(cfg) }.map(drop).map_err(launch_err(OP))
    }

    /// Queue the register routing kernel `route_r<epl>` over `logits` of `dtype`.
    fn launch_reg(
        &self,
        rp: RegPlan,
        dtype: DType,
        logits: &CudaSlice<u8>,
        io: &mut RouteIo<'_, CudaBuffer>,
        a: &RouteArgs,
    ) -> Result<()> {
        const OP: &str = "route";
        let name = kernel_name(&format!("route_r{}", rp.epl), dtype);
        let f = self.kernels.function(OP, &ROUTE, &name)?;
        let resident = if reg_grid_fixed() { MAX_BLOCKS } else { self.resident_per_sm(&f, &name, &rp)? * self.sms };
        let grid = reg_grid(a.tokens, rp.warps, resident);
        let flag = self.flag()?;
        let mut b = self.stream.launch_builder(&f);
        push_route_prefix(&mut b, logits, io, a);
        b.arg(&flag.record);
        let cfg = LaunchConfig {
            grid_dim: (grid as u32, 1, 1),
            block_dim: ((rp.warps * 32) as u32, 1, 1),
            shared_mem_bytes: (rp.smem_words * 4) as u32,
        };
        // SAFETY: arguments match `route_reg_impl`; logits hold (splits ×) T × E elements,
        // bias and mask E, ids and weights T × k, counts and load E (check_io); E <= 32 · EPL
        // and k <= 32 (reg_plan); the shared memory holds the accumulators and every warp's
        // group area as reg_plan laid them out; indices come from loop bounds, never data.
        unsafe { b.launch(cfg) }.map(drop).map_err(launch_err(OP))
    }

    /// Blocks of the register routing kernel `name` (`f`) one multiprocessor holds at once at
    /// `rp`'s block size and shared memory (at least one): the driver's occupancy answer, asked
    /// once per kernel and kept. NOTE: `rp` is the same for a kernel on every call that reaches
    /// it except for the shared memory of a group limit (E + 2G words per warp), which grows
    /// with E; the key holds it.
    fn resident_per_sm(&self, f: &CudaFunction, name: &str, rp: &RegPlan) -> Result<usize> {
        self.resident_blocks("route", f, name, (rp.warps * 32) as u32, rp.smem_words * 4)
    }

    /// Queue the generic routing kernel `route_*` over `logits` of `dtype`.
    fn launch_generic(
        &self,
        dtype: DType,
        logits: &CudaSlice<u8>,
        io: &mut RouteIo<'_, CudaBuffer>,
        a: &RouteArgs,
    ) -> Result<()> {
        const OP: &str = "route";
        let f = self.kernels.function(OP, &ROUTE, &kernel_name(OP, dtype))?;
        let pl = plan(a.experts, a.groups, a.picks);
        let grid = a.tokens.div_ceil(pl.warps).min(MAX_BLOCKS);
        let gwork = if pl.global_work {
            Some(self.stream.alloc_zeros::<f32>(grid * pl.warps * pl.per_warp).map_err(device_err(OP))?)
        } else {
            None
        };
        let block_acc = i32::from(pl.block_acc);
        let flag = self.flag()?;
        let mut b = self.stream.launch_builder(&f);
        push_route_prefix(&mut b, logits, io, a);
        match &gwork {
            Some(w) => b.arg(w),
            None => b.arg(&NULL),
        };
        b.arg(&block_acc).arg(&flag.record);
        let cfg = LaunchConfig {
            grid_dim: (grid as u32, 1, 1),
            block_dim: ((pl.warps * 32) as u32, 1, 1),
            shared_mem_bytes: (pl.smem_words * 4) as u32,
        };
        // SAFETY: arguments match `route_impl`; logits hold (splits ×) T × E elements, bias
        // and mask E, ids and weights T × k, counts and load E (check_io); the shared memory (or
        // the global work buffer) holds the per-block accumulators and every warp's work area as
        // `plan` laid them out; indices come from loop bounds, never from data.
        unsafe { b.launch(cfg) }.map(drop).map_err(launch_err(OP))
    }
}

/// What both routing kernels take besides the logits and the buffers of [`RouteIo`].
struct RouteArgs {
    /// `[E] i32` expert mask on the device, `None` when every expert is allowed.
    mask: Option<CudaSlice<i32>>,
    /// T, E, k and the group count (0: no group limit) as sizes.
    tokens: usize,
    experts: usize,
    picks: usize,
    groups: usize,
    /// The kernels' scalar arguments, in their order.
    t: i32,
    e: i32,
    k: i32,
    softmax: i32,
    groups_arg: i32,
    topk_group: i32,
    renorm: i32,
    scaling: f32,
    splits: i32,
}

impl RouteArgs {
    fn new(p: &RouteProblem, mask: Option<CudaSlice<i32>>, splits: usize) -> Self {
        // NOTE: when every group is kept the group limit changes nothing; the kernels skip it.
        let (groups, topk_group) = match p.groups {
            Some(g) if g.topk_group < g.n_group => (g.n_group, g.topk_group),
            _ => (0, 0),
        };
        RouteArgs {
            mask,
            tokens: p.tokens,
            experts: p.experts,
            picks: p.k,
            groups,
            t: i32_of(p.tokens),
            e: i32_of(p.experts),
            k: i32_of(p.k),
            softmax: i32::from(p.score == ScoreFn::Softmax),
            groups_arg: i32_of(groups),
            topk_group: i32_of(topk_group),
            renorm: i32::from(p.renormalize),
            scaling: p.scaling,
            splits: i32_of(splits),
        }
    }
}

/// The argument prefix both routing kernels share: `logits, bias, mask, ids, weights, counts,
/// load, tokens, experts, k, softmax, groups, topk_group, renorm, scaling, splits`.
fn push_route_prefix<'a>(
    b: &mut LaunchArgs<'a>,
    logits: &'a CudaSlice<u8>,
    io: &'a mut RouteIo<'_, CudaBuffer>,
    a: &'a RouteArgs,
) {
    b.arg(logits);
    match io.bias {
        Some(bias) => b.arg(&bias.data),
        None => b.arg(&NULL),
    };
    match &a.mask {
        Some(m) => b.arg(m),
        None => b.arg(&NULL),
    };
    b.arg(&mut io.ids.data).arg(&mut io.weights.data).arg(&mut io.counts.data).arg(&mut io.load.data);
    b.arg(&a.t).arg(&a.e).arg(&a.k).arg(&a.softmax).arg(&a.groups_arg).arg(&a.topk_group).arg(&a.renorm);
    b.arg(&a.scaling).arg(&a.splits);
}

impl RouteOps for CudaBackend {
    fn route(&self, p: &Validated<RouteProblem>, mut io: RouteIo<'_, CudaBuffer>) -> Result<()> {
        const OP: &str = "route";
        if p.tokens == 0 {
            return self.zero_totals(&mut io);
        }
        let mask = self.upload_mask(p.expert_mask.as_deref(), OP)?;
        let input: &CudaBuffer = io.logits;
        match (p.hidden, io.gate) {
            (Some(h), Some(gate)) => {
                let a = RouteArgs::new(p, mask, 1);
                if let Some(fp) = self.fused_plan(p, h, &a) {
                    self.zero_totals(&mut io)?;
                    return self.launch_fused(fp, p, h, input, gate, &mut io, &a);
                }
                let mask = a.mask;
                // NOTE: the scratch stays locked until the routing kernel that reads it is queued.
                let mut slot = lock(&self.route_logits, OP, "route logits")?;
                let probe = route_probe();
                // The no-gate probe reuses the logits of the call before: the slices the gate
                // wrote (cuBLASLt one, where it is chosen). NOTE: the gate still runs when the
                // scratch is new (the first call), so the kernel never reads uninitialised logits.
                let reuse = (probe == RouteProbe::NoGate)
                    .then(|| if gate_path() == GatePath::CublasLt { 1 } else { gate_split(p.tokens, p.experts, h).0 })
                    .filter(|s| slot.as_ref().is_some_and(|b| b.len() >= s * p.tokens * p.experts * 4));
                let (logits, splits) = match reuse {
                    Some(splits) => {
                        let bytes = splits * p.tokens * p.experts * 4;
                        (&*grown(&mut slot, self, bytes).map_err(device_err(OP))?, splits)
                    }
                    None => self.gate_logits(p, h, input, gate, &mut slot)?,
                };
                // NOTE: zeroed after the gate is queued, so the GEMM starts sooner; stream order
                // still runs the memsets before the routing kernel.
                self.zero_totals(&mut io)?;
                if probe == RouteProbe::GateOnly {
                    return Ok(());
                }
                self.launch_routing(DType::F32, logits, &mut io, &RouteArgs::new(p, mask, splits))
            }
            _ => {
                self.zero_totals(&mut io)?;
                self.launch_routing(p.dtype, &input.data, &mut io, &RouteArgs::new(p, mask, 1))
            }
        }
    }

    fn update_bias(&self, p: &Validated<BiasUpdateProblem>, bias: &mut CudaBuffer, counts: &CudaBuffer) -> Result<()> {
        const OP: &str = "update_bias";
        let mask = self.upload_mask(p.expert_mask.as_deref(), OP)?;
        let f = self.kernels.function(OP, &ROUTE, "route_update_bias")?;
        let e = i32_of(p.experts);
        let mut b = self.stream.launch_builder(&f);
        b.arg(&mut bias.data).arg(&counts.data);
        match &mask {
            Some(m) => b.arg(m),
            None => b.arg(&NULL),
        };
        b.arg(&e).arg(&p.speed);
        // SAFETY: arguments match `route_update_bias`; bias, counts and mask hold E elements
        // (check_io); one block strides over them.
        unsafe { b.launch(blocks(1, 1024)) }.map(drop).map_err(launch_err(OP))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn route_probes_parse_and_default_to_none() {
        assert_eq!(parse_route_probe(Some("gate-only")), RouteProbe::GateOnly);
        assert_eq!(parse_route_probe(Some(" no-gate ")), RouteProbe::NoGate);
        assert_eq!(parse_route_probe(Some("gate")), RouteProbe::None);
        assert_eq!(parse_route_probe(None), RouteProbe::None);
    }

    #[test]
    fn register_path_covers_up_to_1024_experts_and_32_picks() {
        let pl = reg_plan_for(128, 0, 8).unwrap();
        assert_eq!((pl.epl, pl.warps, pl.smem_words), (4, MAX_WARPS, 256));
        assert_eq!(reg_plan_for(1, 0, 1).unwrap().epl, 1);
        assert_eq!(reg_plan_for(33, 0, 1).unwrap().epl, 2);
        assert_eq!(reg_plan_for(257, 0, 8).unwrap().epl, 16);
        assert_eq!(reg_plan_for(1024, 0, 8).unwrap().epl, 32);
        assert!(reg_plan_for(1025, 0, 8).is_none());
        assert!(reg_plan_for(64, 0, 33).is_none());
        // deepseek-v3's 8 groups of 32: one register slot per group, no shared group area.
        let in_regs = reg_plan_for(256, 8, 8).unwrap();
        assert_eq!((in_regs.warps, in_regs.smem_words), (MAX_WARPS, 512));
        // 6 groups (not a power of two) and 200 experts (not 32 · EPL) need the shared area.
        let grouped = reg_plan_for(192, 6, 8).unwrap();
        assert_eq!(grouped.smem_words, 384 + grouped.warps * (192 + 12));
        assert!(grouped.smem_words <= SMEM_WORDS);
        let uneven = reg_plan_for(200, 8, 8).unwrap();
        assert_eq!(uneven.smem_words, 400 + uneven.warps * (200 + 16));
        assert!(groups_in_registers(64, 2, 2) && !groups_in_registers(64, 4, 2) && !groups_in_registers(64, 0, 2));
        let wide = reg_plan_for(1024, 1024, 8).unwrap();
        assert!(wide.warps >= 1 && wide.smem_words <= SMEM_WORDS);
    }

    #[test]
    fn register_grid_is_one_wave_at_most_and_covers_small_problems() {
        // deepseek-v3 prefill: 8,192 tokens, 8 warps per block, 3 blocks per SM on 132 SMs.
        assert_eq!(reg_grid(8192, 8, 3 * 132), 396);
        assert_eq!(reg_grid(16384, 8, 5 * 132), 660);
        // Few tokens: one block per 8, at least one.
        assert_eq!(reg_grid(1, 8, 396), 1);
        assert_eq!(reg_grid(17, 8, 396), 3);
        assert_eq!(reg_grid(0, 8, 396), 1);
        assert_eq!(reg_grid(100, 0, 396), 100);
    }

    #[test]
    fn gate_splits_cover_the_hidden_size_and_only_when_tiles_are_few() {
        for (t, e, h) in [(1, 64, 7168), (16384, 128, 2048), (3, 256, 100), (1, 8, 1), (64, 1024, 4096)] {
            let (splits, kchunk) = gate_split(t, e, h);
            assert!((1..=GATE_MAX_SPLITS).contains(&splits) && kchunk % 16 == 0, "{t} {e} {h}");
            assert!(splits * kchunk >= h && (splits - 1) * kchunk < h, "{t} {e} {h}");
        }
        assert_eq!(gate_split(16384, 128, 2048).0, 1);
        assert!(gate_split(1, 64, 7168).0 > 1);
    }

    #[test]
    fn fused_plan_splits_the_hidden_size_only_when_token_tiles_are_few() {
        let qwen = fused_plan_for("sm_90a", DType::BF16, (16384, 2048, 128, 0, 8), 132).unwrap();
        assert_eq!((qwen.epl, qwen.bn, qwen.m_tiles, qwen.splits, qwen.kchunk), (4, 128, 128, 1, 2048));
        let ernie = fused_plan_for("sm_90a", DType::F16, (16384, 2560, 64, 0, 6), 132).unwrap();
        assert_eq!((ernie.epl, ernie.bn, ernie.splits), (2, 128, 1));
        let ds = fused_plan_for("sm_90a", DType::BF16, (8192, 7168, 256, 8, 8), 132).unwrap();
        assert_eq!((ds.epl, ds.bn, ds.m_tiles, ds.splits), (8, 256, 64, 2));
        let one = fused_plan_for("sm_90a", DType::BF16, (1, 7168, 256, 8, 8), 132).unwrap();
        assert_eq!((one.m_tiles, one.splits, one.kchunk), (1, 28, 256));
        for (t, h, e, g, k) in [(1, 8, 8, 0, 1), (5, 200, 160, 0, 5), (300, 7168, 256, 8, 8), (3000, 4096, 64, 8, 8)] {
            let pl = fused_plan_for("sm_90a", DType::BF16, (t, h, e, g, k), 132).unwrap();
            assert!(pl.shared <= HOPPER_SHARED, "{t} {h} {e}");
            assert!(pl.kchunk % FUSED_BK == 0 && pl.splits * pl.kchunk >= h && (pl.splits - 1) * pl.kchunk < h);
            assert!(pl.splits <= FUSED_MAX_SPLITS && pl.sem_bytes() % 256 == 0);
            assert_eq!(pl.part_bytes() > 0, pl.splits > 1);
        }
        let no = |arch, dtype, shape| fused_plan_for(arch, dtype, shape, 132).is_none();
        assert!(no("sm_80", DType::BF16, (64, 64, 64, 0, 4)), "Hopper only");
        assert!(no("sm_90a", DType::F32, (64, 64, 64, 0, 4)), "half types only");
        assert!(no("sm_90a", DType::BF16, (64, 64, 264, 0, 4)), "at most 256 experts");
        assert!(no("sm_90a", DType::BF16, (64, 64, 60, 0, 4)), "experts in chunks of 8");
        assert!(no("sm_90a", DType::BF16, (64, 100, 64, 0, 4)), "hidden in chunks of 8");
        assert!(no("sm_90a", DType::BF16, (0, 64, 64, 0, 4)), "no tokens");
    }

    #[test]
    fn thread_path_takes_up_to_256_experts_and_64_groups() {
        assert_eq!(thread_plan_for(128, 0, 8), Some(4 * 128 + THREAD_TPB * 129));
        assert_eq!(thread_plan_for(256, 8, 8), Some(4 * 256 + THREAD_TPB * 257 + THREAD_TPB * 9));
        assert!(4 * thread_plan_for(256, 64, 32).unwrap() <= OPT_IN_SHARED);
        assert!(thread_plan_for(1, 0, 1).is_some());
        assert!(thread_plan_for(257, 0, 8).is_none());
        assert!(thread_plan_for(256, 128, 8).is_none());
        assert!(thread_plan_for(64, 0, 33).is_none());
    }

    #[test]
    fn small_problems_keep_everything_in_shared_memory() {
        let pl = plan(256, 8, 8);
        assert_eq!(pl.per_warp, 2 * 256 + 2 * 8 + 8);
        assert!(pl.block_acc && !pl.global_work);
        assert_eq!(pl.warps, MAX_WARPS);
        assert!(pl.smem_words <= SMEM_WORDS);
    }

    #[test]
    fn large_expert_counts_fall_back_to_global_work() {
        let pl = plan(8192, 0, 8);
        assert!(pl.global_work);
        assert!(pl.smem_words <= SMEM_WORDS);
        let huge = plan(1 << 20, 0, 8);
        assert!(huge.global_work && !huge.block_acc);
        assert_eq!(huge.smem_words, 0);
    }

    #[test]
    fn mid_sized_problems_shrink_the_block() {
        let pl = plan(2048, 0, 1024);
        assert!(!pl.global_work && pl.block_acc);
        assert!(pl.warps >= 1 && pl.warps < MAX_WARPS);
        assert!(pl.smem_words <= SMEM_WORDS);
    }
}
