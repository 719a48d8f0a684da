//! GroupedGemmOps on CUDA (`kernels/grouped_gemm.cu`): three kernels on the stream, no host
//! synchronisation.
//!
//! 1. `grouped_gemm_plan` (one block) checks the offsets (or counts) on the device and writes a
//!    tile plan `[3E+2] i32`: each expert's first m-tile, first output row and row count.
//! 2. The GEMM kernel. f16/bf16 on Hopper (`sm_90a`), by default: the warp-specialised,
//!    persistent `wgmma` kernel (`kernels/grouped_gemm_sm90_ws.cu`): one 384-thread block per SM
//!    walks the plan's (m-tile, n-tile) tiles of 128 × 256 × 64; a producer warpgroup loads the
//!    weight tile with TMA from a tensor map encoded per call (`grouped_gemm_tma.rs`) and the
//!    (gathered) activation rows with `cp.async`, into a 4-stage 128-byte-swizzled pipeline on
//!    mbarriers; two consumer warpgroups run `wgmma.mma_async` and the epilogue of one tile
//!    while the producer loads the next. Measured on the H200 (run 16): 1.43 ms on the qwen3 up
//!    GEMM against 1.81 ms for the plain wgmma kernel and 1.44 ms for `torch._grouped_mm`.
//!    The other kernels stay, chosen by `MOEKIT_CUDA_GEMM`: `wgmma` the plain kernel (one block
//!    per tile over an upper bound of the m-tiles, `cp.async` by every thread, a block barrier
//!    per k-tile; `kernels/grouped_gemm_sm90.cu`), `wgmma-ws` the warp-specialised kernel with
//!    `cp.async` weights (6–9% slower than the plain one: its producer issues every copy),
//!    `-fence` on any of the wgmma values adds `fence.proxy.async` between the `cp.async` copies
//!    and the tensor cores (see the NOTE in the kernel files), `mma` forces the `mma.sync`
//!    m16n8k16 kernel (128 × 128 × 32 tiles) that runs elsewhere or for sizes the wgmma kernels
//!    cannot take; `MOEKIT_CUDA_WGMMA_WIDE=1` makes any wgmma kernel issue one m64n256k16 per
//!    k16 step instead of two m64n128k16 (+5% on the plain kernel, ±0 on the default, run 16).
//!    f32 runs plain FMAs (64 × 64 × 16 tiles).
//! 3. `grouped_gemm_zero_*` writes the rows outside every expert.
//!
//! Which kernel runs: `MOEKIT_CUDA_GEMM` / `MOEKIT_CUDA_WGMMA_WIDE` when set, else the
//! autotuner's choice when `MOEKIT_CUDA_AUTOTUNE` (or [`CudaBackend::set_autotune`]) turns it on
//! (`autotune.rs`), else the default above.

use crate::backend::device_err;
use crate::launch::{blocks, i32_of, launch_err};
use crate::ops::grouped_gemm_tma::{
    act_map_geometry, check_geometry, encode_map, weight_map_geometry, weight_map_geometry_pp,
};
use crate::runtime::sources::GROUPED_GEMM;
use crate::{CudaBackend, CudaBuffer};
use cudarc::driver::sys::CUfunction_attribute_enum;
use cudarc::driver::{LaunchConfig, PushKernelArg};
use moekit_ops::{
    DType, Error, GemmLayout, GroupedGemmIo, GroupedGemmOps, GroupedGemmProblem, Result, Validated, WeightLayout,
};

const OP: &str = "grouped_gemm";

/// A null device pointer for an absent optional argument.
const NULL: u64 = 0;

/// Threads of the plan kernel (`GG_PLAN_THREADS`).
const PLAN_THREADS: u32 = 256;

/// Most blocks the zero kernel launches (it loops grid-stride).
const ZERO_BLOCKS: usize = 1024;

/// Dynamic shared memory of the wgmma kernel (`gw::SMEM_BYTES`: 4 stages of 48 KiB, plus 1 KiB
/// to align the base).
const WGMMA_SHARED: u32 = 4 * (128 * 64 + 256 * 64) * 2 + 1024;

/// Dynamic shared memory of the warp-specialised wgmma kernel (`gws::SMEM_BYTES`: 4 stages of
/// 48 KiB, 8 mbarriers of 8 bytes, plus 1 KiB to align the base).
const WGMMA_WS_SHARED: u32 = 4 * (128 * 64 + 256 * 64) * 2 + 2 * 4 * 8 + 1024;
// Inside Hopper's 227 KiB of shared memory per block.
const _: () = assert!(WGMMA_WS_SHARED <= 227 * 1024);

/// Dynamic shared memory of the TMA2 kernel with storer warps (`gws::EPI_SMEM_BYTES`): 3 stages,
/// the output tile buffer (128 rows of 256 2-byte columns, 16 bytes of padding per row), the
/// stage barriers and the two buffer barriers, and slack to align the base.
const WGMMA_WS_EPI_SHARED: u32 = 3 * (128 * 64 + 256 * 64) * 2 + 128 * (2 * 256 + 16) + (2 * 3 + 2) * 8 + 1024;
const _: () = assert!(WGMMA_WS_EPI_SHARED <= 227 * 1024);

/// Dynamic shared memory of the ping-pong kernel (`gpp::SMEM_BYTES`): 6 stages of A 128 × 64 and
/// B 128 × 64 (32 KiB), FULL and EMPTY per stage and `ORDER[2]` (8 bytes each), and slack to align
/// the base.
const WGMMA_PP_SHARED: u32 = 6 * (128 * 64 + 128 * 64) * 2 + (2 * 6 + 2) * 8 + 1024;
const _: () = assert!(WGMMA_PP_SHARED <= 227 * 1024);

/// Mean rows per expert from which the default stores without SwiGLU through the storer warps
/// ([`GemmEnv::epi_plain`]): one whole m-tile.
const EPI_MIN_ROWS: usize = 128;

/// Threads of the warp-specialised wgmma kernel: a producer and two consumer warpgroups.
const WGMMA_WS_THREADS: u32 = 384;

/// Environment variable that picks the f16/bf16 kernel family: `mma` forces the `mma.sync`
/// kernel, `wgmma-fence` adds the proxy fence to the wgmma kernel, `wgmma-ws` picks the
/// warp-specialised persistent wgmma kernel and `wgmma-ws-fence` that one with its proxy fence,
/// `wgmma-ws-tma-b` that one with the weight tile loaded by TMA, `wgmma-ws-tma`
/// (`wgmma-ws-tma-fence`) with the activation tile too where its rows are not gathered;
/// `wgmma-ws-tma2` that one without storer warps (run 18's default), `wgmma-ws-tma-epi` that one
/// with the output tiles stored by the producer's idle warps everywhere; `wgmma` the plain
/// (non-specialised) wgmma kernel; anything else (or unset) is [`GemmEnv::DEFAULT`]
/// (= `wgmma-ws-tma`: the storer warps where there is no SwiGLU), where [`family`] can run it.
const GEMM_ENV: &str = "MOEKIT_CUDA_GEMM";

/// What `MOEKIT_CUDA_GEMM` asks for (or an autotune candidate, `autotune.rs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct GemmEnv {
    /// `mma`: never the wgmma kernel.
    forced_mma: bool,
    /// `wgmma-fence`, `wgmma-ws-fence`: `fence.proxy.async` between the copies and the wgmma
    /// reads of each k-tile.
    proxy_fence: bool,
    /// `wgmma-ws`, `wgmma-ws-fence`: the warp-specialised persistent kernel wherever the wgmma
    /// kernel would run.
    warp_specialised: bool,
    /// `wgmma-ws-tma-b`, `wgmma-ws-tma`, `wgmma-ws-tma-fence`: the warp-specialised kernel with
    /// the weight tile B loaded through TMA (`cp.async.bulk.tensor`) instead of cp.async.
    tma_b: bool,
    /// `wgmma-ws-tma`, `wgmma-ws-tma-fence` (with `tma_b`): the activation tile A through TMA
    /// as well, where the rows are not gathered (`row_to_token` absent).
    tma_a: bool,
    /// `wgmma-ws-tma-epi` (with `tma_a`): the consumers hand each output tile to the producer
    /// warpgroup's three idle warps through shared memory and go on to the next tile (3 stages
    /// instead of 4 to make room).
    epi: bool,
    /// The same storer-warp kernel for problems without SwiGLU whose experts hold at least
    /// [`EPI_MIN_ROWS`] rows on average (the default since run 19: the prefill down GEMM gained
    /// 16–29% with it; the SwiGLU up GEMM lost 1–3%, and the decode layer 3–20%, where its
    /// third stage given up matters more than the stores it hides).
    epi_plain: bool,
    /// `MOEKIT_CUDA_WGMMA_WIDE=1`: the wgmma kernels (either) with one m64n256k16 per k16 step
    /// instead of two m64n128k16.
    wide: bool,
    /// `wgmma-pp` (with `tma_b`, `tma_a`): the ping-pong kernel wherever the TMA kernels would
    /// run: each consumer warpgroup owns 128 × 128 tiles and the two take turns, one's
    /// epilogue under the other's main loop (`kernels/grouped_gemm_sm90_pp.cu`).
    pingpong: bool,
}

/// Environment variable that picks the wide form of the wgmma kernels (`1`); see
/// [`GemmEnv::wide`].
const WIDE_ENV: &str = "MOEKIT_CUDA_WGMMA_WIDE";

impl GemmEnv {
    /// The plain wgmma kernel (`MOEKIT_CUDA_GEMM=wgmma`; the default until run 16): nothing set.
    pub(super) const WGMMA: GemmEnv = GemmEnv {
        forced_mma: false,
        proxy_fence: false,
        warp_specialised: false,
        tma_b: false,
        tma_a: false,
        epi: false,
        epi_plain: false,
        wide: false,
        pingpong: false,
    };

    /// The warp-specialised kernel with TMA weight loads and cp.async activation rows
    /// (`MOEKIT_CUDA_GEMM=wgmma-ws-tma-b`; 1.27× the plain wgmma kernel on the H200's qwen3 up
    /// GEMM, run 16; the default from run 16 to run 17).
    pub(super) const TMA_B: GemmEnv = GemmEnv { warp_specialised: true, tma_b: true, ..GemmEnv::WGMMA };

    /// [`GemmEnv::TMA_B`] with the activation tile through TMA too where its rows are not
    /// gathered (`MOEKIT_CUDA_GEMM=wgmma-ws-tma2`; the default of run 18).
    pub(super) const TMA2: GemmEnv = GemmEnv { tma_a: true, ..GemmEnv::TMA_B };

    /// What runs when `MOEKIT_CUDA_GEMM` is unset: [`GemmEnv::TMA2`], with the output tiles
    /// stored by the producer's idle warps where there is no SwiGLU.
    pub(super) const DEFAULT: GemmEnv = GemmEnv { epi_plain: true, ..GemmEnv::TMA2 };

    /// [`GemmEnv::TMA2`] with the storer warps everywhere (`MOEKIT_CUDA_GEMM=wgmma-ws-tma-epi`).
    pub(super) const EPI: GemmEnv = GemmEnv { epi: true, ..GemmEnv::TMA2 };

    /// The ping-pong kernel where the TMA kernels run (`MOEKIT_CUDA_GEMM=wgmma-pp`).
    pub(super) const PINGPONG: GemmEnv = GemmEnv { pingpong: true, ..GemmEnv::TMA2 };

    /// The warp-specialised kernel with `cp.async` weights (`MOEKIT_CUDA_GEMM=wgmma-ws`).
    pub(super) const WS: GemmEnv = GemmEnv { warp_specialised: true, ..GemmEnv::WGMMA };

    /// The `mma.sync` kernel (`MOEKIT_CUDA_GEMM=mma`).
    pub(super) const MMA: GemmEnv = GemmEnv { forced_mma: true, ..GemmEnv::WGMMA };

    /// The same kernel in its wide form (see [`GemmEnv::wide`]).
    pub(super) const fn widened(self) -> Self {
        GemmEnv { wide: true, ..self }
    }

    fn parse(v: Option<&str>) -> Self {
        let d = GemmEnv::WGMMA;
        match v.map(str::to_ascii_lowercase).as_deref() {
            Some("wgmma") => d,
            Some("mma") => GemmEnv { forced_mma: true, ..d },
            Some("wgmma-fence") => GemmEnv { proxy_fence: true, ..d },
            Some("wgmma-ws") => GemmEnv { warp_specialised: true, ..d },
            Some("wgmma-ws-fence") => GemmEnv { warp_specialised: true, proxy_fence: true, ..d },
            Some("wgmma-ws-tma-b") => GemmEnv::TMA_B,
            Some("wgmma-ws-tma") => GemmEnv::DEFAULT,
            Some("wgmma-ws-tma-fence") => GemmEnv { proxy_fence: true, ..GemmEnv::DEFAULT },
            Some("wgmma-ws-tma2") => GemmEnv::TMA2,
            Some("wgmma-ws-tma-epi") => GemmEnv::EPI,
            Some("wgmma-pp") => GemmEnv::PINGPONG,
            _ => GemmEnv::DEFAULT,
        }
    }

    /// What the environment asks for; [`GemmEnv::DEFAULT`] when it asks for nothing.
    pub(super) fn from_env() -> Self {
        let wide = std::env::var(WIDE_ENV).is_ok_and(|v| v.trim() == "1");
        GemmEnv { wide, ..GemmEnv::parse(std::env::var(GEMM_ENV).ok().as_deref()) }
    }

    /// Whether the environment forces a kernel: `MOEKIT_CUDA_GEMM` set to anything non-empty,
    /// or `MOEKIT_CUDA_WGMMA_WIDE=1`. Such a choice wins over autotuning.
    pub(super) fn forced_by_env() -> bool {
        std::env::var(GEMM_ENV).is_ok_and(|v| !v.trim().is_empty())
            || std::env::var(WIDE_ENV).is_ok_and(|v| v.trim() == "1")
    }
}

/// The GEMM kernel family for f16/bf16 (f32 always runs `fma`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Family {
    /// `mma.sync` m16n8k16, any architecture from sm_80, any sizes.
    Mma,
    /// `wgmma.mma_async`, sm_90a only, 8-element-aligned K and column chunks.
    Wgmma,
    /// The same tiles and sizes as [`Family::Wgmma`], warp-specialised and persistent.
    WgmmaWs,
    /// [`Family::WgmmaWs`] with the weight tile loaded through a tensor map.
    WgmmaWsTma,
    /// [`Family::WgmmaWsTma`] with the activation tile through a tensor map too (no gather).
    WgmmaWsTma2,
}

/// The heuristic: wgmma on Hopper whenever the kernel's 16-byte copies fit the sizes (K and the
/// weight columns it reads in whole chunks of 8), unless `env.forced_mma`; its warp-specialised
/// variant when `env.warp_specialised`, with TMA weight loads when `env.tma_b` too (and the
/// tensor map has no empty dimension), and TMA activation loads when `env.tma_a` too and the
/// rows are not gathered (nor its map empty).
fn family(p: &GroupedGemmProblem, arch: &str, env: GemmEnv) -> Family {
    let chunked = p.k_dim % 8 == 0 && p.n_dim % 8 == 0 && (!p.swiglu || (p.n_dim / 2) % 8 == 0);
    if arch != "sm_90a" || !chunked || env.forced_mma {
        Family::Mma
    } else if env.warp_specialised && env.tma_b && tma_geometry_ok(p) {
        if env.tma_a && p.gather_tokens.is_none() && check_geometry(&act_map_geometry(p.out_rows(), p.k_dim)).is_ok() {
            return Family::WgmmaWsTma2;
        }
        Family::WgmmaWsTma
    } else if env.warp_specialised {
        Family::WgmmaWs
    } else {
        Family::Wgmma
    }
}

/// Whether the weights' tensor map meets the driver's rules: no empty dimension (K, N or E of
/// 0), none past 2^32.
fn tma_geometry_ok(p: &GroupedGemmProblem) -> bool {
    check_geometry(&weight_map_geometry(p.weight_layout, p.experts, p.k_dim, p.n_dim, p.swiglu)).is_ok()
}

/// The GEMM kernel for a problem and its tiling.
struct Tiling {
    /// Kernel name.
    kernel: String,
    /// Rows per m-tile.
    bm: usize,
    /// Output columns per n-tile.
    bn_out: usize,
    /// Threads per block.
    threads: u32,
    /// Dynamic shared memory in bytes.
    shared: u32,
    /// One block per SM walking the tiles (`min(#SMs, tiles)` blocks), not one block per tile.
    persistent: bool,
    /// The kernel takes the weight tensor map (`grouped_gemm_tma`) after the error record.
    b_map: bool,
    /// The kernel takes the activation tensor map after the weight map.
    a_map: bool,
    /// The ping-pong kernel: its weight map has the boxes of `weight_map_geometry_pp`.
    pingpong: bool,
}

fn tiling(p: &GroupedGemmProblem, arch: &str, env: GemmEnv) -> Tiling {
    let nk = match p.weight_layout {
        WeightLayout::KN => "kn",
        WeightLayout::NK => "nk",
    };
    // NOTE: with SwiGLU a block computes matching gate and up column tiles, so it covers half
    // as many output columns (keep in step with the kernels' BN). The plan kernel's m-tile is
    // `bm`, so every family here must agree with its kernel's BM.
    let fam = family(p, arch, env);
    let pingpong = env.pingpong && p.dtype != DType::F32 && matches!(fam, Family::WgmmaWsTma | Family::WgmmaWsTma2);
    let (family, bm, bn, shared, threads, persistent) = match (p.dtype, fam) {
        (DType::F32, _) => ("fma", 64, 64, 0, 256, false),
        (_, Family::WgmmaWsTma) if pingpong => ("wgmma_pp", 128, 128, WGMMA_PP_SHARED, WGMMA_WS_THREADS, true),
        (_, Family::WgmmaWsTma2) if pingpong => ("wgmma_pp2", 128, 128, WGMMA_PP_SHARED, WGMMA_WS_THREADS, true),
        (_, Family::Mma) => ("mma", 128, 128, 0, 256, false),
        (_, Family::Wgmma) => ("wgmma", 128, 256, WGMMA_SHARED, 256, false),
        (_, Family::WgmmaWs) => ("wgmma_ws", 128, 256, WGMMA_WS_SHARED, WGMMA_WS_THREADS, true),
        (_, Family::WgmmaWsTma) => ("wgmma_ws_tma", 128, 256, WGMMA_WS_SHARED, WGMMA_WS_THREADS, true),
        (_, Family::WgmmaWsTma2)
            if env.epi || (env.epi_plain && !p.swiglu && p.out_rows() >= EPI_MIN_ROWS * p.experts.max(1)) =>
        {
            ("wgmma_ws_tma2_epi", 128, 256, WGMMA_WS_EPI_SHARED, WGMMA_WS_THREADS, true)
        }
        (_, Family::WgmmaWsTma2) => ("wgmma_ws_tma2", 128, 256, WGMMA_WS_SHARED, WGMMA_WS_THREADS, true),
    };
    let tma = p.dtype != DType::F32;
    let b_map = tma && matches!(fam, Family::WgmmaWsTma | Family::WgmmaWsTma2);
    let a_map = tma && fam == Family::WgmmaWsTma2;
    let bn_out = if p.swiglu { bn / 2 } else { bn };
    // NOTE: the TMA2 and ping-pong kernels come in the narrow form only.
    let wide = if env.wide && family.starts_with("wgmma") && !a_map && !pingpong { "_wide" } else { "" };
    let kernel = format!("grouped_gemm_{family}{wide}_{nk}_{}", p.dtype.name());
    Tiling { kernel, bm, bn_out, threads, shared, persistent, b_map, a_map, pingpong }
}

/// The name of the GEMM kernel `env` runs for `p` on `arch` (two envs that name the same kernel
/// run the same code).
pub(super) fn kernel_name(p: &GroupedGemmProblem, arch: &str, env: GemmEnv) -> String {
    tiling(p, arch, env).kernel
}

/// Environment variable of the timing probes of the warp-specialised kernels: a comma list of
/// `no-a` (the producer copies no activation rows), `no-epilogue` (nothing is stored). Each leaves one stage of the kernel out, so the time it
/// saves is what that stage costs; the output is then wrong (experiments only, never set it
/// for real work).
const PROBE_ENV: &str = "MOEKIT_CUDA_GEMM_PROBE";

/// The kernel's probe bits (`GWS_PROBE_*` in grouped_gemm_sm90_ws.cu) of `MOEKIT_CUDA_GEMM_PROBE`.
fn probe_bits() -> i32 {
    std::env::var(PROBE_ENV).map_or(0, |v| parse_probe(&v))
}

/// Environment variable of the persistent kernels' tile order. By default they walk each
/// expert's tiles n-tile by n-tile, so that its m-tiles sharing a weight tile run side by side
/// (flag `GWS_ORDER_EXPERT` in grouped_gemm_sm90_ws.cu; run 21: deepseek-v3 layer 13.29 →
/// 12.46 ms, the others unchanged or faster); `mtile` keeps the m-tile-major walk of runs 15–20.
const ORDER_ENV: &str = "MOEKIT_CUDA_GEMM_ORDER";

/// The persistent kernels' order flag: expert-major unless `MOEKIT_CUDA_GEMM_ORDER=mtile`.
fn order_bits() -> i32 {
    if std::env::var(ORDER_ENV).is_ok_and(|v| v.trim() == "mtile") {
        0
    } else {
        16
    }
}

fn parse_probe(v: &str) -> i32 {
    v.split(',').fold(0, |bits, w| {
        bits | match w.trim() {
            "no-a" => 2,
            "no-epilogue" => 8,
            _ => 0,
        }
    })
}

/// Blocks of a persistent kernel: one per SM, at most one per tile.
fn persistent_blocks(tiles: usize, sms: usize) -> usize {
    tiles.min(sms.max(1))
}

/// Upper bound of the m-tiles over all experts.
fn m_tiles_bound(p: &GroupedGemmProblem, bm: usize) -> usize {
    match p.layout {
        // sum_e ceil(rows_e / BM) <= R / BM + (non-empty experts).
        GemmLayout::Contiguous { rows } => rows.div_ceil(bm) + p.experts.min(rows),
        GemmLayout::Masked { capacity } => p.experts * capacity.div_ceil(bm),
    }
}

impl GroupedGemmOps for CudaBackend {
    fn grouped_gemm(&self, p: &Validated<GroupedGemmProblem>, io: GroupedGemmIo<'_, CudaBuffer>) -> Result<()> {
        let env = self.gemm_env(p, &io)?;
        self.run_with(p, io, env)
    }
}

impl CudaBackend {
    /// Queue the grouped GEMM's kernels with the kernel `env` picks (the plan, the GEMM, the
    /// zero fill), writing every element of `io.y`.
    ///
    /// # Errors
    /// [`Error::Unsupported`] for more tiles than one launch takes; device and launch errors.
    pub(super) fn run_with(
        &self,
        p: &Validated<GroupedGemmProblem>,
        io: GroupedGemmIo<'_, CudaBuffer>,
        env: GemmEnv,
    ) -> Result<()> {
        let t = tiling(p, self.arch(), env);
        let (masked, limit) = match p.layout {
            GemmLayout::Contiguous { rows } => (0i32, i32_of(rows)),
            GemmLayout::Masked { capacity } => (1i32, i32_of(capacity)),
        };
        let experts = i32_of(p.experts);
        let (k_dim, n_dim, swiglu) = (i32_of(p.k_dim), i32_of(p.n_dim), i32::from(p.swiglu));
        let tokens = i32_of(p.gather_tokens.unwrap_or(0));
        let n_tiles = p.n_out().div_ceil(t.bn_out);
        let tiles = m_tiles_bound(p, t.bm) * n_tiles;
        let grid = if t.persistent { persistent_blocks(tiles, self.sms) } else { tiles };
        // NOTE: the persistent kernel steps its tile index past the last tile by up to `grid`.
        let overshoot = if t.persistent { grid } else { 0 };
        if tiles + overshoot > i32::MAX as usize {
            return Err(Error::unsupported(OP, format!("{tiles} tiles exceed one launch")));
        }
        // NOTE: a fresh plan per call (a few KiB); a per-backend workspace cache would save the
        // allocation.
        let mut plan = self.stream.alloc_zeros::<i32>(3 * p.experts + 2).map_err(device_err(OP))?;
        let flag = self.flag()?;

        let f = self.kernels.function(OP, &GROUPED_GEMM, "grouped_gemm_plan")?;
        let bm = i32_of(t.bm);
        let mut b = self.stream.launch_builder(&f);
        b.arg(&io.group.data).arg(&mut plan).arg(&experts).arg(&limit).arg(&masked).arg(&bm).arg(&flag.record);
        // SAFETY: arguments match `grouped_gemm_plan`; group holds E+1 (contiguous) or E (masked)
        // i32, as check_io proved, and plan 3E+2 i32.
        unsafe { b.launch(blocks(1, PLAN_THREADS)) }.map_err(launch_err(OP))?;

        let out_rows = p.out_rows();
        if out_rows == 0 {
            // Nothing to compute or zero; the plan kernel still checked the offsets / counts.
            return Ok(());
        }

        if grid > 0 {
            let b_map = if t.b_map {
                use cudarc::driver::DevicePtr;
                let g = match t.pingpong {
                    true => weight_map_geometry_pp(p.weight_layout, p.experts, p.k_dim, p.n_dim, p.swiglu),
                    false => weight_map_geometry(p.weight_layout, p.experts, p.k_dim, p.n_dim, p.swiglu),
                };
                let (ptr, _read) = io.w.data.device_ptr(&self.stream);
                Some(encode_map(ptr, p.dtype, &g)?)
            } else {
                None
            };
            let a_map = if t.a_map {
                use cudarc::driver::DevicePtr;
                let (ptr, _read) = io.x.data.device_ptr(&self.stream);
                Some(encode_map(ptr, p.dtype, &act_map_geometry(out_rows, p.k_dim))?)
            } else {
                None
            };
            let f = self.kernels.function(OP, &GROUPED_GEMM, &t.kernel)?;
            if t.shared > 0 {
                f.set_attribute(
                    CUfunction_attribute_enum::CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES,
                    t.shared as i32,
                )
                .map_err(device_err(OP))?;
            }
            let n_tiles = i32_of(n_tiles);
            let mut b = self.stream.launch_builder(&f);
            b.arg(&io.x.data).arg(&io.w.data).arg(&plan);
            match io.row_to_token {
                Some(r) => b.arg(&r.data),
                None => b.arg(&NULL),
            };
            match io.row_scale {
                Some(s) => b.arg(&s.data),
                None => b.arg(&NULL),
            };
            b.arg(&mut io.y.data);
            b.arg(&experts).arg(&k_dim).arg(&n_dim).arg(&swiglu).arg(&n_tiles).arg(&tokens);
            let proxy_fence = i32::from(env.proxy_fence) | if t.persistent { probe_bits() | order_bits() } else { 0 };
            if t.shared > 0 {
                // The wgmma kernels' extra argument.
                b.arg(&proxy_fence);
            }
            b.arg(&flag.record);
            if let Some(m) = &b_map {
                // The TMA kernels' weight tensor map, by value.
                b.arg(m);
            }
            if let Some(m) = &a_map {
                // The TMA2 kernels' activation tensor map, by value.
                b.arg(m);
            }
            // SAFETY: arguments match the GEMM kernel; check_io proved x, w, y, row_to_token and
            // row_scale hold their shapes; every block reads rows and columns only inside them
            // (loads are predicated on K, N and the plan's row counts, which the plan kernel
            // clamped), and gather rows outside -1..T read nothing; the wgmma kernel's 16-byte
            // copies need K and the column chunks multiples of 8, which `family` checked, and
            // its shared size was raised above. The persistent kernel reads the plan's tile count
            // on the device and runs any grid size. The TMA kernel's tensor map describes w
            // [E, N, K] or [E, K, N] exactly (check_io proved its shape), w is also an argument (so
            // the stream orders the launch after its writes), and TMA reads only inside the map;
            // likewise the TMA2 kernel's activation map describes x as out_rows × K rows exactly.
            let cfg = LaunchConfig { shared_mem_bytes: t.shared, ..blocks(grid, t.threads) };
            unsafe { b.launch(cfg) }.map_err(launch_err(OP))?;
        }

        let f = self.kernels.function(OP, &GROUPED_GEMM, &crate::launch::kernel_name("grouped_gemm_zero", p.dtype))?;
        let (rows, n_out) = (i32_of(out_rows), i32_of(p.n_out()));
        let total = out_rows * p.n_out();
        let mut b = self.stream.launch_builder(&f);
        b.arg(&mut io.y.data).arg(&plan);
        match io.row_to_token {
            Some(r) => b.arg(&r.data),
            None => b.arg(&NULL),
        };
        b.arg(&experts).arg(&rows).arg(&n_out).arg(&limit).arg(&masked).arg(&tokens).arg(&flag.record);
        // SAFETY: arguments match `grouped_gemm_zero_impl`; it writes y [rows, n_out] elements
        // in range only, and reads the plan (3E+2 i32) and row_to_token [R].
        unsafe { b.launch(blocks(total.div_ceil(256).min(ZERO_BLOCKS), 256)) }.map(drop).map_err(launch_err(OP))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MMA: GemmEnv = GemmEnv::MMA;
    const WS: GemmEnv = GemmEnv::WS;
    const WS_TMA: GemmEnv = GemmEnv::TMA_B;

    #[test]
    fn pingpong_parses_and_names_its_kernels() {
        assert_eq!(GemmEnv::parse(Some("wgmma-pp")), GemmEnv::PINGPONG);
        let mut up = GroupedGemmProblem::contiguous(128 * 128, 128, 2048, 1536, DType::BF16);
        up.swiglu = true;
        let t = tiling(&up, "sm_90a", GemmEnv::PINGPONG);
        assert_eq!((t.kernel.as_str(), t.bm, t.bn_out), ("grouped_gemm_wgmma_pp2_kn_bf16", 128, 64));
        assert!(t.pingpong && t.a_map && t.b_map && t.persistent && t.shared == WGMMA_PP_SHARED);
        // Gathered rows: A by cp.async, B by TMA; without SwiGLU 128 output columns per tile.
        let mut gathered = GroupedGemmProblem::contiguous(128, 8, 2048, 1536, DType::BF16);
        gathered.gather_tokens = Some(64);
        let t = tiling(&gathered, "sm_90a", GemmEnv::PINGPONG);
        assert_eq!((t.kernel.as_str(), t.bn_out, t.a_map), ("grouped_gemm_wgmma_pp_kn_bf16", 128, false));
        // Never the wide form; off Hopper and for f32 the usual kernels.
        assert_eq!(tiling(&up, "sm_90a", GemmEnv::PINGPONG.widened()).kernel, "grouped_gemm_wgmma_pp2_kn_bf16");
        assert_eq!(tiling(&up, "sm_80", GemmEnv::PINGPONG).kernel, "grouped_gemm_mma_kn_bf16");
        assert!(!tiling(&up, "sm_80", GemmEnv::PINGPONG).pingpong);
    }

    #[test]
    fn ws_tma_parses_and_names_its_kernels() {
        assert_eq!(GemmEnv::parse(Some("wgmma-ws-tma-b")), WS_TMA);
        assert_eq!(GemmEnv::parse(Some("wgmma-ws-tma")), GemmEnv::DEFAULT);
        assert_eq!(GemmEnv::parse(Some("WGMMA-WS-TMA-FENCE")), GemmEnv { proxy_fence: true, ..GemmEnv::DEFAULT });
        // The storer-warp epilogue: TMA2 problems only (gathered rows keep the weights-only
        // kernel, which has no idle warps).
        let epi = GemmEnv::parse(Some("wgmma-ws-tma-epi"));
        assert!(epi.epi && epi.tma_a);
        assert_eq!(GemmEnv::parse(Some("wgmma-ws-tma2")), GemmEnv::TMA2);
        // The default: storer warps without SwiGLU (the down GEMM) from 128 rows per expert on
        // average, run 18's TMA2 with SwiGLU or fewer rows (decode).
        let mut down = GroupedGemmProblem::contiguous(128 * 128, 128, 768, 2048, DType::BF16);
        assert_eq!(tiling(&down, "sm_90a", GemmEnv::DEFAULT).kernel, "grouped_gemm_wgmma_ws_tma2_epi_kn_bf16");
        assert_eq!(tiling(&down, "sm_90a", GemmEnv::TMA2).kernel, "grouped_gemm_wgmma_ws_tma2_kn_bf16");
        let decode = GroupedGemmProblem::contiguous(128 * 127, 128, 768, 2048, DType::BF16);
        assert_eq!(tiling(&decode, "sm_90a", GemmEnv::DEFAULT).kernel, "grouped_gemm_wgmma_ws_tma2_kn_bf16");
        assert_eq!(tiling(&decode, "sm_90a", GemmEnv::EPI).kernel, "grouped_gemm_wgmma_ws_tma2_epi_kn_bf16");
        down.swiglu = true;
        assert_eq!(tiling(&down, "sm_90a", GemmEnv::DEFAULT).kernel, "grouped_gemm_wgmma_ws_tma2_kn_bf16");
        let mut q = GroupedGemmProblem::contiguous(16, 128, 2048, 1536, DType::BF16);
        q.swiglu = true;
        let t = tiling(&q, "sm_90a", epi);
        assert_eq!(
            (t.kernel.as_str(), t.shared, t.a_map),
            ("grouped_gemm_wgmma_ws_tma2_epi_kn_bf16", WGMMA_WS_EPI_SHARED, true)
        );
        q.gather_tokens = Some(16);
        assert_eq!(tiling(&q, "sm_90a", epi).kernel, "grouped_gemm_wgmma_ws_tma_kn_bf16");
        for v in ["wgmma-ws", "wgmma-ws-fence", "wgmma-fence", "mma"] {
            assert!(!GemmEnv::parse(Some(v)).tma_b, "{v}");
        }
        let mut p = GroupedGemmProblem::contiguous(16, 128, 2048, 1536, DType::BF16);
        p.swiglu = true;
        assert_eq!(family(&p, "sm_90a", WS_TMA), Family::WgmmaWsTma);
        let t = tiling(&p, "sm_90a", WS_TMA);
        assert_eq!(
            (t.kernel.as_str(), t.bn_out, t.threads, t.shared, t.persistent, t.b_map),
            ("grouped_gemm_wgmma_ws_tma_kn_bf16", 128, WGMMA_WS_THREADS, WGMMA_WS_SHARED, true, true)
        );
        p.weight_layout = WeightLayout::NK;
        let t = tiling(&p, "sm_90a", GemmEnv { wide: true, ..WS_TMA });
        assert_eq!((t.kernel.as_str(), t.b_map), ("grouped_gemm_wgmma_ws_tma_wide_nk_bf16", true));
        assert!(!tiling(&p, "sm_90a", WS).b_map);
        // Off Hopper, f32, unchunked, or K = 0 (no tensor map): not the TMA kernel.
        assert_eq!(family(&p, "sm_80", WS_TMA), Family::Mma);
        let q = GroupedGemmProblem::contiguous(16, 4, 0, 16, DType::F16);
        assert_eq!(family(&q, "sm_90a", WS_TMA), Family::WgmmaWs);
        p.dtype = DType::F32;
        let t = tiling(&p, "sm_90a", WS_TMA);
        assert_eq!((t.kernel.as_str(), t.b_map), ("grouped_gemm_fma_nk_f32", false));
    }

    #[test]
    fn wide_names_the_wide_wgmma_kernels_only() {
        let mut p = GroupedGemmProblem::contiguous(16, 128, 2048, 1536, DType::BF16);
        p.swiglu = true;
        let wide = GemmEnv { wide: true, ..GemmEnv::WGMMA };
        assert_eq!(tiling(&p, "sm_90a", wide).kernel, "grouped_gemm_wgmma_wide_kn_bf16");
        let ws_wide = GemmEnv { wide: true, ..WS };
        assert_eq!(tiling(&p, "sm_90a", ws_wide).kernel, "grouped_gemm_wgmma_ws_wide_kn_bf16");
        // Not for the mma.sync or f32 kernels.
        assert_eq!(tiling(&p, "sm_80", wide).kernel, "grouped_gemm_mma_kn_bf16");
        p.dtype = DType::F32;
        assert_eq!(tiling(&p, "sm_90a", wide).kernel, "grouped_gemm_fma_kn_f32");
    }

    #[test]
    fn tile_bound_covers_every_split() {
        let mut p = GroupedGemmProblem::contiguous(300, 4, 8, 8, DType::BF16);
        // Worst case: every expert a partial tile.
        let bound = m_tiles_bound(&p, 128);
        let split = [1usize, 1, 1, 297];
        let tiles: usize = split.iter().map(|r| r.div_ceil(128)).sum();
        assert!(tiles <= bound, "{tiles} > {bound}");
        p.layout = GemmLayout::Masked { capacity: 129 };
        assert_eq!(m_tiles_bound(&p, 128), 8);
    }

    #[test]
    fn tiling_names_the_kernel() {
        let mut p = GroupedGemmProblem::contiguous(4, 2, 8, 16, DType::BF16);
        p.weight_layout = WeightLayout::NK;
        p.swiglu = true;
        let t = tiling(&p, "sm_80", GemmEnv::WGMMA);
        assert_eq!((t.kernel.as_str(), t.bm, t.bn_out), ("grouped_gemm_mma_nk_bf16", 128, 64));
        let t = tiling(&p, "sm_90a", GemmEnv::WGMMA);
        assert_eq!(
            (t.kernel.as_str(), t.bm, t.bn_out, t.shared),
            ("grouped_gemm_wgmma_nk_bf16", 128, 128, WGMMA_SHARED)
        );
        let t = tiling(&p, "sm_90a", MMA);
        assert_eq!(t.kernel, "grouped_gemm_mma_nk_bf16");
        p.dtype = DType::F32;
        p.swiglu = false;
        let t = tiling(&p, "sm_90a", GemmEnv::WGMMA);
        assert_eq!((t.kernel.as_str(), t.bm, t.bn_out), ("grouped_gemm_fma_nk_f32", 64, 64));
    }

    #[test]
    fn wgmma_needs_whole_chunks() {
        // qwen3 up and down GEMMs take the fast path.
        let mut p = GroupedGemmProblem::contiguous(16, 128, 2048, 1536, DType::BF16);
        p.swiglu = true;
        assert_eq!(family(&p, "sm_90a", GemmEnv::WGMMA), Family::Wgmma);
        let p = GroupedGemmProblem::contiguous(16, 128, 768, 2048, DType::BF16);
        assert_eq!(family(&p, "sm_90a", GemmEnv::WGMMA), Family::Wgmma);
        // K, N or the SwiGLU half not a multiple of 8: mma.sync.
        let p = GroupedGemmProblem::contiguous(16, 4, 20, 16, DType::F16);
        assert_eq!(family(&p, "sm_90a", GemmEnv::WGMMA), Family::Mma);
        let mut p = GroupedGemmProblem::contiguous(16, 4, 16, 24, DType::F16);
        assert_eq!(family(&p, "sm_90a", GemmEnv::WGMMA), Family::Wgmma);
        p.swiglu = true;
        assert_eq!(family(&p, "sm_90a", GemmEnv::WGMMA), Family::Mma);
        assert_eq!(family(&p, "sm_89", GemmEnv::WGMMA), Family::Mma);
    }

    #[test]
    fn default_is_the_tma_kernel_on_hopper() {
        let mut p = GroupedGemmProblem::contiguous(16, 128, 2048, 1536, DType::BF16);
        p.swiglu = true;
        let t = tiling(&p, "sm_90a", GemmEnv::DEFAULT);
        assert_eq!(
            (t.kernel.as_str(), t.persistent, t.b_map, t.a_map),
            ("grouped_gemm_wgmma_ws_tma2_kn_bf16", true, true, true)
        );
        // Gathered rows (the MoE layer's up GEMM): A stays on cp.async.
        p.gather_tokens = Some(16);
        let t = tiling(&p, "sm_90a", GemmEnv::DEFAULT);
        assert_eq!((t.kernel.as_str(), t.b_map, t.a_map), ("grouped_gemm_wgmma_ws_tma_kn_bf16", true, false));
        // The wide form applies to the weights-only TMA kernel, not to the TMA2 one.
        p.gather_tokens = None;
        assert_eq!(tiling(&p, "sm_90a", GemmEnv::DEFAULT.widened()).kernel, "grouped_gemm_wgmma_ws_tma2_kn_bf16");
        assert_eq!(tiling(&p, "sm_90a", GemmEnv::TMA_B).kernel, "grouped_gemm_wgmma_ws_tma_kn_bf16");
        p.gather_tokens = Some(16);
        // Elsewhere, and for f32, what ran before.
        assert_eq!(tiling(&p, "sm_80", GemmEnv::DEFAULT).kernel, "grouped_gemm_mma_kn_bf16");
        p.dtype = DType::F32;
        assert_eq!(tiling(&p, "sm_90a", GemmEnv::DEFAULT).kernel, "grouped_gemm_fma_kn_f32");
        // No tensor map for an empty dimension: the warp-specialised kernel without TMA.
        let p = GroupedGemmProblem::contiguous(16, 4, 0, 16, DType::F16);
        assert_eq!(family(&p, "sm_90a", GemmEnv::DEFAULT), Family::WgmmaWs);
    }

    #[test]
    fn env_override_parses() {
        assert_eq!(GemmEnv::parse(None), GemmEnv::DEFAULT);
        assert_eq!(GemmEnv::parse(Some("wgmma")), GemmEnv::WGMMA);
        assert_eq!(GemmEnv::parse(Some("wgmma-ws-tma")), GemmEnv::DEFAULT);
        assert!(GemmEnv::parse(Some("MMA")).forced_mma);
        let e = GemmEnv::parse(Some("wgmma-fence"));
        assert!(e.proxy_fence && !e.forced_mma);
        assert_eq!(GemmEnv::parse(Some("other")), GemmEnv::DEFAULT);
        assert_eq!(GemmEnv::parse(Some("wgmma-ws")), WS);
        let e = GemmEnv::parse(Some("WGMMA-WS-FENCE"));
        assert!(e.warp_specialised && e.proxy_fence && !e.forced_mma);
        assert!(!GemmEnv::parse(Some("wgmma")).warp_specialised);
    }

    #[test]
    fn warp_specialised_kernels_are_persistent() {
        let mut p = GroupedGemmProblem::contiguous(16, 128, 2048, 1536, DType::BF16);
        p.swiglu = true;
        assert_eq!(family(&p, "sm_90a", WS), Family::WgmmaWs);
        assert!(!tiling(&p, "sm_90a", GemmEnv::WGMMA).persistent);
        let t = tiling(&p, "sm_90a", WS);
        assert_eq!(
            (t.kernel.as_str(), t.bm, t.bn_out, t.threads, t.shared, t.persistent),
            ("grouped_gemm_wgmma_ws_kn_bf16", 128, 128, WGMMA_WS_THREADS, WGMMA_WS_SHARED, true)
        );
        // Off Hopper, for unchunked sizes, with f32 or with `mma` forced: not the ws kernel.
        assert_eq!(family(&p, "sm_80", WS), Family::Mma);
        let q = GroupedGemmProblem::contiguous(16, 4, 20, 16, DType::F16);
        assert_eq!(family(&q, "sm_90a", WS), Family::Mma);
        assert_eq!(family(&p, "sm_90a", GemmEnv { forced_mma: true, ..WS }), Family::Mma);
        p.dtype = DType::F32;
        p.swiglu = false;
        let t = tiling(&p, "sm_90a", WS);
        assert_eq!((t.kernel.as_str(), t.persistent), ("grouped_gemm_fma_kn_f32", false));
    }

    #[test]
    fn probes_parse_to_the_kernel_bits() {
        assert_eq!(parse_probe("no-a"), 2);
        assert_eq!(parse_probe("no-a, no-epilogue"), 10);
        assert_eq!(parse_probe("no-mma"), 0);
        assert_eq!(parse_probe("other"), 0);
    }

    #[test]
    fn persistent_grid_is_one_block_per_sm_at_most_one_per_tile() {
        assert_eq!(persistent_blocks(6144, 132), 132);
        assert_eq!(persistent_blocks(5, 132), 5);
        assert_eq!(persistent_blocks(0, 132), 0);
        assert_eq!(persistent_blocks(7, 0), 1);
    }
}
