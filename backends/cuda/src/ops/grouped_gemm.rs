//! GroupedGemmOps on CUDA (`kernels/grouped_gemm.cu`): three kernels on the stream, no host
//! synchronisation.
//!
//! 1. `grouped_gemm_plan` (one block) checks the offsets (or counts) on the device and writes a
//!    tile plan `[3E+2] i32`: each expert's first m-tile, first output row and row count.
//! 2. The GEMM kernel runs one block per (m-tile, n-tile) over an upper bound of the m-tiles
//!    (`ceil(R / BM) + min(E, R)` contiguous, `E · ceil(C / BM)` masked); a block finds its expert
//!    in the plan or exits. f16/bf16 on Hopper (`sm_90a`): `wgmma.mma_async` from 128-byte-swizzled
//!    shared memory fed by a 4-stage `cp.async` pipeline, 128 × 256 × 64 tiles
//!    (`kernels/grouped_gemm_sm90.cu`); elsewhere, or for sizes it cannot take, tensor cores through
//!    `mma.sync` m16n8k16, 128 × 128 × 32 tiles; f32 with plain FMAs (64 × 64 × 16 tiles).
//!    `MOEKIT_CUDA_GEMM=mma` forces the `mma.sync` kernel on Hopper too; `MOEKIT_CUDA_GEMM=wgmma-fence`
//!    keeps wgmma and adds `fence.proxy.async` between the copies and the tensor cores (see the NOTE
//!    in the kernel file). `MOEKIT_CUDA_GEMM=wgmma-ws` (opt-in) runs the warp-specialised,
//!    persistent wgmma kernel instead (`kernels/grouped_gemm_sm90_ws.cu`: one 384-thread block per
//!    SM walking the plan's tiles, a producer warpgroup feeding two consumer warpgroups through
//!    mbarriers); `wgmma-ws-fence` adds its consumer-side proxy fence. It passed the suite on the
//!    H200 but is 6–9% slower than the default there (run 15 in `benches/results/h200/`; see
//!    `benches/NOTES.md`), so it stays opt-in: it is the base for TMA loads in the producer.
//! 3. `grouped_gemm_zero_*` writes the rows outside every expert.

use crate::backend::device_err;
use crate::launch::{blocks, i32_of, launch_err};
use crate::runtime::sources::GROUPED_GEMM;
use crate::{CudaBackend, CudaBuffer};
use cudarc::driver::sys::{CUdevice_attribute, CUfunction_attribute_enum};
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

/// Threads of the warp-specialised wgmma kernel: a producer and two consumer warpgroups.
const WGMMA_WS_THREADS: u32 = 384;

/// Environment variable that picks the f16/bf16 kernel family: `mma` forces the `mma.sync`
/// kernel, `wgmma-fence` adds the proxy fence to the wgmma kernel, `wgmma-ws` picks the
/// warp-specialised persistent wgmma kernel and `wgmma-ws-fence` that one with its proxy fence;
/// anything else (or unset) lets [`family`] choose.
const GEMM_ENV: &str = "MOEKIT_CUDA_GEMM";

/// What `MOEKIT_CUDA_GEMM` asks for.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct GemmEnv {
    /// `mma`: never the wgmma kernel.
    forced_mma: bool,
    /// `wgmma-fence`, `wgmma-ws-fence`: `fence.proxy.async` between the copies and the wgmma
    /// reads of each k-tile.
    proxy_fence: bool,
    /// `wgmma-ws`, `wgmma-ws-fence`: the warp-specialised persistent kernel wherever the wgmma
    /// kernel would run.
    warp_specialised: bool,
}

impl GemmEnv {
    fn parse(v: Option<&str>) -> Self {
        let d = GemmEnv::default();
        match v.map(str::to_ascii_lowercase).as_deref() {
            Some("mma") => GemmEnv { forced_mma: true, ..d },
            Some("wgmma-fence") => GemmEnv { proxy_fence: true, ..d },
            Some("wgmma-ws") => GemmEnv { warp_specialised: true, ..d },
            Some("wgmma-ws-fence") => GemmEnv { warp_specialised: true, proxy_fence: true, ..d },
            _ => d,
        }
    }

    fn from_env() -> Self {
        GemmEnv::parse(std::env::var(GEMM_ENV).ok().as_deref())
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
}

/// The heuristic: wgmma on Hopper whenever the kernel's 16-byte copies fit the sizes (K and the
/// weight columns it reads in whole chunks of 8), unless `env.forced_mma`; its warp-specialised
/// variant when `env.warp_specialised`.
fn family(p: &GroupedGemmProblem, arch: &str, env: GemmEnv) -> Family {
    let chunked = p.k_dim % 8 == 0 && p.n_dim % 8 == 0 && (!p.swiglu || (p.n_dim / 2) % 8 == 0);
    if arch != "sm_90a" || !chunked || env.forced_mma {
        Family::Mma
    } else if env.warp_specialised {
        Family::WgmmaWs
    } else {
        Family::Wgmma
    }
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
}

fn tiling(p: &GroupedGemmProblem, arch: &str, env: GemmEnv) -> Tiling {
    let nk = match p.weight_layout {
        WeightLayout::KN => "kn",
        WeightLayout::NK => "nk",
    };
    // NOTE: with SwiGLU a block computes matching gate and up column tiles, so it covers half
    // as many output columns (keep in step with the kernels' BN). The plan kernel's m-tile is
    // `bm`, so every family here must agree with its kernel's BM.
    let (family, bm, bn, shared, threads, persistent) = match (p.dtype, family(p, arch, env)) {
        (DType::F32, _) => ("fma", 64, 64, 0, 256, false),
        (_, Family::Mma) => ("mma", 128, 128, 0, 256, false),
        (_, Family::Wgmma) => ("wgmma", 128, 256, WGMMA_SHARED, 256, false),
        (_, Family::WgmmaWs) => ("wgmma_ws", 128, 256, WGMMA_WS_SHARED, WGMMA_WS_THREADS, true),
    };
    let bn_out = if p.swiglu { bn / 2 } else { bn };
    let kernel = format!("grouped_gemm_{family}_{nk}_{}", p.dtype.name());
    Tiling { kernel, bm, bn_out, threads, shared, persistent }
}

/// Blocks of a persistent kernel: one per SM, at most one per tile.
fn persistent_blocks(tiles: usize, sms: usize) -> usize {
    tiles.min(sms.max(1))
}

/// Multiprocessor counts by device ordinal, read once per device.
static SM_COUNTS: std::sync::Mutex<Vec<(usize, usize)>> = std::sync::Mutex::new(Vec::new());

impl CudaBackend {
    /// The device's multiprocessor count (cached per ordinal).
    fn sm_count(&self) -> Result<usize> {
        let ordinal = self.ordinal();
        let mut cache = crate::backend::lock(&SM_COUNTS, OP, "SM count cache")?;
        if let Some(&(_, n)) = cache.iter().find(|(o, _)| *o == ordinal) {
            return Ok(n);
        }
        let n = self
            .context()
            .attribute(CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT)
            .map_err(device_err(OP))?;
        let n = usize::try_from(n).unwrap_or(1).max(1);
        cache.push((ordinal, n));
        Ok(n)
    }
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
        let env = GemmEnv::from_env();
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
        let grid = if t.persistent { persistent_blocks(tiles, self.sm_count()?) } else { tiles };
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
            let proxy_fence = i32::from(env.proxy_fence);
            if t.shared > 0 {
                // The wgmma kernels' extra argument.
                b.arg(&proxy_fence);
            }
            b.arg(&flag.record);
            // SAFETY: arguments match the GEMM kernel; check_io proved x, w, y, row_to_token and
            // row_scale hold their shapes; every block reads rows and columns only inside them
            // (loads are predicated on K, N and the plan's row counts, which the plan kernel
            // clamped), and gather rows outside -1..T read nothing; the wgmma kernel's 16-byte
            // copies need K and the column chunks multiples of 8, which `family` checked, and
            // its shared size was raised above. The persistent kernel reads the plan's tile count
            // on the device and runs any grid size.
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

    const MMA: GemmEnv = GemmEnv { forced_mma: true, proxy_fence: false, warp_specialised: false };
    const WS: GemmEnv = GemmEnv { forced_mma: false, proxy_fence: false, warp_specialised: true };

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
        let t = tiling(&p, "sm_80", GemmEnv::default());
        assert_eq!((t.kernel.as_str(), t.bm, t.bn_out), ("grouped_gemm_mma_nk_bf16", 128, 64));
        let t = tiling(&p, "sm_90a", GemmEnv::default());
        assert_eq!(
            (t.kernel.as_str(), t.bm, t.bn_out, t.shared),
            ("grouped_gemm_wgmma_nk_bf16", 128, 128, WGMMA_SHARED)
        );
        let t = tiling(&p, "sm_90a", MMA);
        assert_eq!(t.kernel, "grouped_gemm_mma_nk_bf16");
        p.dtype = DType::F32;
        p.swiglu = false;
        let t = tiling(&p, "sm_90a", GemmEnv::default());
        assert_eq!((t.kernel.as_str(), t.bm, t.bn_out), ("grouped_gemm_fma_nk_f32", 64, 64));
    }

    #[test]
    fn wgmma_needs_whole_chunks() {
        // qwen3 up and down GEMMs take the fast path.
        let mut p = GroupedGemmProblem::contiguous(16, 128, 2048, 1536, DType::BF16);
        p.swiglu = true;
        assert_eq!(family(&p, "sm_90a", GemmEnv::default()), Family::Wgmma);
        let p = GroupedGemmProblem::contiguous(16, 128, 768, 2048, DType::BF16);
        assert_eq!(family(&p, "sm_90a", GemmEnv::default()), Family::Wgmma);
        // K, N or the SwiGLU half not a multiple of 8: mma.sync.
        let p = GroupedGemmProblem::contiguous(16, 4, 20, 16, DType::F16);
        assert_eq!(family(&p, "sm_90a", GemmEnv::default()), Family::Mma);
        let mut p = GroupedGemmProblem::contiguous(16, 4, 16, 24, DType::F16);
        assert_eq!(family(&p, "sm_90a", GemmEnv::default()), Family::Wgmma);
        p.swiglu = true;
        assert_eq!(family(&p, "sm_90a", GemmEnv::default()), Family::Mma);
        assert_eq!(family(&p, "sm_89", GemmEnv::default()), Family::Mma);
    }

    #[test]
    fn env_override_parses() {
        assert_eq!(GemmEnv::parse(None), GemmEnv::default());
        assert!(GemmEnv::parse(Some("MMA")).forced_mma);
        let e = GemmEnv::parse(Some("wgmma-fence"));
        assert!(e.proxy_fence && !e.forced_mma);
        assert_eq!(GemmEnv::parse(Some("other")), GemmEnv::default());
        assert_eq!(GemmEnv::parse(Some("wgmma-ws")), WS);
        let e = GemmEnv::parse(Some("WGMMA-WS-FENCE"));
        assert!(e.warp_specialised && e.proxy_fence && !e.forced_mma);
        assert!(!GemmEnv::parse(Some("wgmma")).warp_specialised);
    }

    #[test]
    fn warp_specialised_is_opt_in_and_persistent() {
        let mut p = GroupedGemmProblem::contiguous(16, 128, 2048, 1536, DType::BF16);
        p.swiglu = true;
        assert_eq!(family(&p, "sm_90a", WS), Family::WgmmaWs);
        assert!(!tiling(&p, "sm_90a", GemmEnv::default()).persistent);
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
    fn persistent_grid_is_one_block_per_sm_at_most_one_per_tile() {
        assert_eq!(persistent_blocks(6144, 132), 132);
        assert_eq!(persistent_blocks(5, 132), 5);
        assert_eq!(persistent_blocks(0, 132), 0);
        assert_eq!(persistent_blocks(7, 0), 1);
    }
}
