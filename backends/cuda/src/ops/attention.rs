//! AttentionOps on CUDA: a FlashAttention-2 style forward over packed varlen batches
//! (`kernels/attention.cu`).
//!
//! The host turns `cu_seqlens` (host data, so no synchronisation) into a list of work items,
//! one per query-row block of a sequence, heaviest first; one CTA runs per (item, query head).
//! f16/bf16 run on tensor cores: on Hopper (`sm_90a`), every D on
//! `attention_sm90ws_d{D}_{dtype}` (`kernels/attention_sm90_ws.cu`: warp-specialised, TMA loads
//! of K/V through tensor maps, two consumer warpgroups in ping-pong over wgmma; key tiles of 128,
//! of 64 at D 256; at D 64 its three-consumer form `attention_sm90ws3_d64_{dtype}`, 192-row
//! blocks, on causal or windowed problems in its banded form `attention_sm90ws3s_d64_{dtype}`,
//! or the two-consumer one with `MOEKIT_CUDA_ATTN=ws2`; FlashMask plans with causal blocks on
//! `attention_sm90wsc_d{128,256}_{dtype}` and `attention_sm90ws3sc_d64_{dtype}`, a module of
//! their own), or with `MOEKIT_CUDA_ATTN=sm90`
//! (D <= 128) on `attention_sm90_d{D}_{dtype}` (`kernels/attention_sm90.cu`: wgmma, cp.async,
//! the two warpgroups in step); elsewhere (sm_80+, or `MOEKIT_CUDA_ATTN=fa2`) D <= 128 on
//! `attention_fa2_d{D}_{dtype}` (128-row blocks, 32 rows per warp, double-buffered K/V); D = 256
//! off Hopper on `attention_mma_d{D}_{dtype}` (64-row blocks; also forced by
//! `MOEKIT_CUDA_ATTN=v1`, and by `fa2` or `sm90` at D 256); f32 (and f16/bf16 on older GPUs) on
//! the exact warp-per-row kernel (`attention_rows_d{D}_{dtype}`). Batches of few query rows per
//! sequence (decode: `Lq · Hq / Hkv <= 16`, D 64 or 128, f16/bf16, sm_80+) take the split-KV
//! decode kernels instead (`attention_decode.rs`) unless `MOEKIT_CUDA_ATTN` forces a kernel.
//! The kernels' build switches (`#define`s with defaults, for measurements) can be set at run time
//! with `MOEKIT_CUDA_DEFINES` (see `runtime::compile::env_defines`).

use super::attention_decode as decode;
use super::flashmask::{Forms, PlanCache};
use super::grouped_gemm_tma::{encode_map_for, MapGeometry, TensorMap};
use crate::backend::{device_err, lock};
use crate::launch::{i32_of, kernel_name, launch_err};
use crate::runtime::sources::{ATTENTION, ATTENTION_SM90WS, ATTENTION_SM90WS_CB};
use crate::runtime::{define_usize, Source};
use crate::{CudaBackend, CudaBuffer};
use cudarc::driver::sys::CUfunction_attribute_enum;
use cudarc::driver::{CudaFunction, CudaSlice, DevicePtr, LaunchConfig, PushKernelArg};
use moekit_ops::{AttentionIo, AttentionOps, AttentionProblem, DType, Error, Result, Validated};

const OP: &str = "attention";
/// Query rows per work item (CTA) of the v1 and row kernels; matches `ATT_BM`.
const BLOCK_M: usize = 64;
/// Query rows per work item of the v2 (`fa2`) and Hopper kernels; matches `ATT2_BM`, `a90::BM`
/// and `aws::Cfg<2>::BM`.
const BLOCK_M2: usize = 128;
/// Rows of one box of the query tensor map (`aws_produce` copies BM / 64 of them per half).
const Q_BOX_ROWS: usize = 64;
/// Keys per block of the tensor-core kernels; matches `ATT_BN` and `ATT2_BN`.
const BLOCK_N: usize = 64;
/// Keys per tile of the Hopper kernels; matches `a90::BN` and `aws::BN_OF<D>` for D <= 128.
const BLOCK_N2: usize = 128;
/// Keys per tile of the warp-specialised kernels at D 64: `WS_D64_BN`, a build switch for
/// measurements (128, or 192), read from `MOEKIT_CUDA_DEFINES` as the kernels are built.
fn sm90ws_d64_bn() -> usize {
    define_usize("WS_D64_BN", 128)
}
/// Keys per tile of the warp-specialised kernel at D 256; matches `aws::BN_OF<256>`.
const BLOCK_N2_D256: usize = 64;
/// Threads per CTA of the sm_80 kernels; matches `ATT_THREADS` and `ATT2_THREADS`.
const THREADS: u32 = 128;
/// Threads per CTA of the Hopper kernel (two warpgroups); matches `a90::THREADS`.
const THREADS_SM90: u32 = 256;
/// Key and value stages of the Hopper kernel; match `a90::K_STAGES` and `a90::V_STAGES`.
const SM90_STAGES: usize = 2 + 3;
/// Threads per CTA of the warp-specialised Hopper kernel (a producer and two consumer
/// warpgroups); matches `aws::Cfg<2>::THREADS`.
const THREADS_SM90WS: u32 = 384;
/// Query rows and threads of its three-consumer form at D 64 (`aws::Cfg<3>`).
const BLOCK_M3: usize = 192;
const THREADS_SM90WS3: u32 = 512;
/// Key and value stages of the warp-specialised kernel at D 128 and 256; match `2 * aws::STAGES_OF<D>`.
const SM90WS_STAGES: usize = 2 + 2;
/// K and V stages each of the warp-specialised kernel at D 64: `WS_D64_STAGES`, a build switch
/// (2; 3 or 4 for measurements), read as `sm90ws_d64_bn`.
fn sm90ws_d64_stages() -> usize {
    define_usize("WS_D64_STAGES", 2)
}
/// Bytes reserved for its mbarriers and unit slots; matches `aws::BAR_BYTES`.
fn sm90ws_bars() -> usize {
    if sm90ws_d64_stages() > 3 {
        256
    } else {
        128
    }
}
/// Environment override: `v1` forces the 64-row tensor-core kernel, `fa2` the 128-row mma.sync
/// kernel (instead of the Hopper ones), `sm90` the Hopper kernel without warp specialisation.
const ENV_PATH: &str = "MOEKIT_CUDA_ATTN";
/// i32 fields of one work item: `q0, Lq, k0, Lk, m0`.
const ITEM: usize = 5;
/// Dynamic shared memory a kernel gets without opting in.
const DEFAULT_SHARED: u32 = 48 * 1024;
/// The warp-specialised kernel's ticket buffer, in i32: the counter padded to 16 bytes, then per
/// CTA (at most `TICKET_CTAS`) two 16-byte unit slots, one per Q buffer, where its producer hands
/// each unit's index to its consumers (`aws_slot`, `aws_produce`).
const TICKET_HEAD: usize = 4;
const TICKET_SLOTS: usize = 2 * 4;
const TICKET_CTAS: usize = 1024;
/// Environment probe of the warp-specialised kernel (timing experiments; results stay exact): a
/// comma-separated list of `no-pingpong` (the consumer warpgroups issue their wgmma without
/// taking turns), `eager-rescale` (O is rescaled whenever a row maximum grows), `no-fold` (the
/// scores are scaled one by one, not in the exponent's fma), `no-persist` (one CTA per unit
/// instead of a persistent wave), `static` (the persistent CTAs take their units in fixed
/// rounds, not by ticket), `grid=N` (at most N CTAs: many units per CTA in tests),
/// `ranges-as-given` (column ranges whose upper intervals are causal are not turned into the
/// causal flag) and `whole-tiles` (at D 64, causal and windowed problems on the three-consumer
/// kernel without the banded form's skips and split).
const ENV_PROBE: &str = "MOEKIT_CUDA_ATTN_PROBE";
/// A null device pointer for an absent optional argument.
const NULL: u64 = 0;
/// Window sides past this are no constraint for any i32 sequence; the clamp keeps the
/// kernel's i64 bound arithmetic far from overflow.
const WINDOW_CAP: usize = 1 << 40;

impl AttentionOps for CudaBackend {
    fn attention(&self, p: &Validated<AttentionProblem>, io: AttentionIo<'_, CudaBuffer>) -> Result<()> {
        let env = std::env::var(ENV_PATH).ok();
        if decode::eligible(p, self.arch(), env.as_deref()) {
            return decode::run(self, p, io);
        }
        let path = choose_path(p, self.arch(), env.as_deref());
        // Work items and mask tables on the device. With column ranges, the warp-specialised
        // kernel takes the FlashMask plan's blocks and tables, kept from the last call while the
        // same mask and lengths come again (every layer of a forward pass shares its mask);
        // otherwise the schedule's items and the ranges as they are.
        // NOTE: these small uploads are freed when they drop, right after the launch; cudarc
        // frees stream-ordered, after the kernel. A workspace cache would save the allocations.
        let (own_items, own_ranges);
        let mut plan_slot: Option<std::sync::MutexGuard<'_, Option<PlanCache>>> = None;
        let (block_m, block_n) = (path.block_m(), path.block_n(p.head_dim));
        let probe = Probe::parse(std::env::var(ENV_PROBE).ok().as_deref());
        let (softcap, mut causal, wl, wr) = mask_args(p);
        let mut causal_blocks = false;
        let (items, ranges, n_items) = if path.warp_specialised() && p.mask.column_ranges.is_some() {
            let slot = plan_slot.insert(lock(&self.flash_plan, OP, "FlashMask plan")?);
            // Causal blocks only where the kernel has a form that takes them.
            let cb = !probe.no_causal_blocks && path.takes_causal_blocks(p.head_dim, probe.whole_tiles);
            let forms = Forms { as_causal: !probe.ranges_as_given, causal_blocks: cb };
            if !slot.as_ref().is_some_and(|c| c.key.matches(p, block_m, block_n, forms)) {
                **slot = PlanCache::new(&self.stream, p, block_m, block_n, forms).map_err(device_err(OP))?;
            }
            match slot.as_ref() {
                Some(c) => {
                    causal = i32::from(c.causal);
                    causal_blocks = c.causal_blocks;
                    (&c.items, Some(&c.tables), c.n_items)
                }
                None => return Ok(()),
            }
        } else {
            let host = schedule(p, block_m);
            if host.is_empty() {
                return Ok(());
            }
            own_items = self.stream.clone_htod(&host).map_err(device_err(OP))?;
            own_ranges = if path.warp_specialised() { None } else { column_ranges(self, p)? };
            (&own_items, own_ranges.as_ref(), host.len() / ITEM)
        };
        let ctas = n_items * p.heads_q;
        if ctas > i32::MAX as usize {
            return Err(Error::unsupported(OP, format!("{ctas} blocks exceed the grid limit")));
        }
        let src = path.source(causal_blocks);
        // Causal or windowed rows (or the FlashMask plan's causal blocks) see a band of keys:
        // there the three consumers take the kernel that skips each consumer's tiles outside its
        // rows' band (`whole-tiles` in the probe: the one that runs them).
        let banded = (causal != 0 || wl >= 0 || causal_blocks) && !probe.whole_tiles;
        let base = path.kernel_base(p.head_dim, banded, causal_blocks);
        let f = self.kernels.function(OP, src, &kernel_name(&base, p.dtype))?;
        let shared = path.shared_bytes(p.head_dim, p.dtype.size());
        allow_shared(&f, shared)?;

        let (tq, tk, hq, hkv) = (i32_of(p.total_q()), i32_of(p.total_k()), i32_of(p.heads_q), i32_of(p.heads_kv));

        // The warp-specialised kernel reads q, k and v through tensor maps, and takes its probe
        // flags, the number of units (item, query head), its ticket counter and the maps (by
        // value) last; only it reads the probe variable. It is persistent: a grid of one wave of
        // CTAs takes the units as SMs free up (the ticket; without one, or `static` in the probe,
        // in fixed rounds), each CTA loading its next unit's Q and K/V while it finishes the last
        // one (`no-persist` in the probe: one CTA per unit).
        let mut grid = ctas;
        let mut tickets = NULL;
        let extra = match path {
            Path::Sm90Ws | Path::Sm90Ws3 => {
                let map = |data: &CudaSlice<u8>, heads: usize, tokens: usize, rows: usize, tile_rows: usize| {
                    token_map(self, data, p, tokens, heads, rows, tile_rows)
                };
                if !probe.no_persist {
                    let per_sm = self.resident_blocks(OP, &f, &base, path.threads(), shared as usize)?;
                    grid = ctas.min(self.sms * per_sm);
                }
                // `grid=N` caps the wave (tests: many rounds per CTA on small problems).
                if let Some(cap) = probe.grid_cap {
                    grid = grid.min(cap.max(1));
                }
                // Tickets need a CTA's unit slots in the buffer: past TICKET_CTAS, static rounds.
                if !probe.fixed_rounds && grid <= TICKET_CTAS {
                    let mut slot = lock(&self.attention_tickets, OP, "attention tickets")?;
                    if slot.is_none() && !self.capturing() {
                        let len = TICKET_HEAD + TICKET_CTAS * TICKET_SLOTS;
                        *slot = Some(self.stream.alloc_zeros::<i32>(len).map_err(device_err(OP))?);
                    }
                    if let Some(t) = slot.as_ref() {
                        let (ptr, _sync) = t.device_ptr(&self.stream);
                        tickets = ptr;
                    }
                }
                Some((
                    probe.flags,
                    [
                        map(&io.q.data, p.heads_q, p.total_q(), Q_BOX_ROWS, block_m)?,
                        map(&io.k.data, p.heads_kv, p.total_k(), block_n, block_n)?,
                        map(&io.v.data, p.heads_kv, p.total_k(), block_n, block_n)?,
                    ],
                ))
            }
            _ => None,
        };
        let mut b = self.stream.launch_builder(&f);
        b.arg(&io.q.data).arg(&io.k.data).arg(&io.v.data).arg(&mut io.o.data).arg(&mut io.lse.data);
        b.arg(items);
        match ranges {
            Some(r) => b.arg(r),
            None => b.arg(&NULL),
        };
        b.arg(&tq).arg(&tk).arg(&hq).arg(&hkv).arg(&p.scale).arg(&softcap).arg(&causal).arg(&wl).arg(&wr);
        let units = ctas as i32;
        if let Some((flags, m)) = &extra {
            b.arg(flags).arg(&units).arg(&tickets).arg(&m[0]).arg(&m[1]).arg(&m[2]);
        }
        let cfg =
            LaunchConfig { grid_dim: (grid as u32, 1, 1), block_dim: (path.threads(), 1, 1), shared_mem_bytes: shared };
        // SAFETY: the arguments match `attention_rows_impl` / `attention_mma_impl` /
        // `attention_fa2_impl` / `a90_impl` / `aws_impl` (plus the flags and the three tensor
        // maps, over q, k and v as [T, H, D], which live through the launch), whose rows per CTA
        // and threads the schedule and config used; check_io proved q, o hold Tq × Hq × D and
        // k, v Tk × Hkv × D elements of the dtype and lse Hq × Tq f32;
        // every item row is inside its sequence (rows and keys past it are zero-filled or skipped),
        // column ranges hold 4 × Tk i32 (the FlashMask tables of the warp-specialised kernel: a
        // block per item, 4 × Tk, then 8 per key tile, `Plan::tables`; its items are the plan's
        // blocks, whose rows and key tiles lie inside their sequences), and
        // the shared size was raised above for this function.
        unsafe { b.launch(cfg) }.map(drop).map_err(launch_err(OP))
    }
}

/// Which kernel runs an attention problem.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Path {
    /// Exact f32 warp-per-row kernel.
    Rows,
    /// 64-row tensor-core kernel (the first one; D = 256 and the `v1` override).
    MmaV1,
    /// 128-row tensor-core kernel, double-buffered K/V (f16/bf16, D <= 128).
    Fa2,
    /// 128-row wgmma kernel, two warpgroups (Hopper, f16/bf16, D <= 128).
    Sm90,
    /// 128-row wgmma kernel, warp-specialised: a TMA producer and two consumer warpgroups in
    /// ping-pong (Hopper, f16/bf16, D 64, 128 and 256).
    Sm90Ws,
    /// Its 192-row form, the default at D 64: three consumer warpgroups in turn, each without
    /// the intra-warpgroup overlap (`MOEKIT_CUDA_ATTN=ws2` takes the two-consumer one).
    Sm90Ws3,
}

impl Path {
    /// The warp-specialised kernels (TMA through tensor maps, the FlashMask plan).
    fn warp_specialised(self) -> bool {
        matches!(self, Path::Sm90Ws | Path::Sm90Ws3)
    }

    fn block_m(self) -> usize {
        match self {
            Path::Sm90Ws3 => BLOCK_M3,
            Path::Fa2 | Path::Sm90 | Path::Sm90Ws => BLOCK_M2,
            Path::Rows | Path::MmaV1 => BLOCK_M,
        }
    }

    /// Keys per K/V tile of the Hopper kernels (the warp-specialised one takes 64 at D 256:
    /// `aws::BN_OF`); 0 for the others (whose blocks are `BLOCK_N`, not a tile of the plan).
    fn block_n(self, d: usize) -> usize {
        match self {
            Path::Sm90Ws if d > 128 => BLOCK_N2_D256,
            Path::Sm90Ws | Path::Sm90Ws3 if d == 64 => sm90ws_d64_bn(),
            Path::Sm90 | Path::Sm90Ws | Path::Sm90Ws3 => BLOCK_N2,
            _ => 0,
        }
    }

    fn threads(self) -> u32 {
        match self {
            Path::Sm90 => THREADS_SM90,
            Path::Sm90Ws => THREADS_SM90WS,
            Path::Sm90Ws3 => THREADS_SM90WS3,
            _ => THREADS,
        }
    }

    /// The module of its kernels: the warp-specialised ones live in a module of their own (the
    /// first call compiles 10 kernels, not all of them), their causal-block forms in another.
    fn source(self, causal_blocks: bool) -> &'static Source {
        match (self.warp_specialised(), causal_blocks) {
            (true, true) => &ATTENTION_SM90WS_CB,
            (true, false) => &ATTENTION_SM90WS,
            _ => &ATTENTION,
        }
    }

    /// Whether the kernel that runs head dim `d` has a form for FlashMask plans with causal
    /// blocks (`flashmask::Block::causal`): the two-consumer kernel at D 128 and 256, the
    /// three-consumer one's banded form at D 64 (not with `whole-tiles`).
    fn takes_causal_blocks(self, d: usize, whole_tiles: bool) -> bool {
        match self {
            Path::Sm90Ws => d != 64,
            Path::Sm90Ws3 => !whole_tiles,
            _ => false,
        }
    }

    /// The kernel's name without its dtype; `causal_blocks` (a FlashMask plan with
    /// `flashmask::Block::causal` ones; [`Path::takes_causal_blocks`]) the forms that read them,
    /// in `ATTENTION_SM90WS_CB`; `banded` (causal or windowed rows, or causal blocks) takes the
    /// three-consumer kernel's banded form, `attention_sm90ws3s_*`: each consumer skips the key
    /// tiles outside its own rows' band and splits a tile's exponents and P·V into 8 parts (run
    /// 35 call C: causal D 64 345.8 -> 329.7 us, docs 158.3 -> 144.3; on problems without a band
    /// the split alone is slower: non-causal 1.15 -> 1.22 ms, the image mask 432.1 -> 442.0).
    fn kernel_base(self, d: usize, banded: bool, causal_blocks: bool) -> String {
        match self {
            Path::Rows => format!("attention_rows_d{d}"),
            Path::MmaV1 => format!("attention_mma_d{d}"),
            Path::Fa2 => format!("attention_fa2_d{d}"),
            Path::Sm90 => format!("attention_sm90_d{d}"),
            Path::Sm90Ws if causal_blocks => format!("attention_sm90wsc_d{d}"),
            Path::Sm90Ws => format!("attention_sm90ws_d{d}"),
            Path::Sm90Ws3 if banded && causal_blocks => format!("attention_sm90ws3sc_d{d}"),
            Path::Sm90Ws3 if banded => format!("attention_sm90ws3s_d{d}"),
            Path::Sm90Ws3 => format!("attention_sm90ws3_d{d}"),
        }
    }

    /// Dynamic shared memory: Q tile and one (v1) or two (v2) stages of K and V, rows padded
    /// to D + 8 elements; Hopper: unpadded 128-row tiles of Q, 2 K and 3 V stages, and 1 KiB
    /// to align the base (`a90::Smem`); warp-specialised: two 128-row Q tiles (one at D 256:
    /// `aws::QBUF_OF`), 2 K and 2 V stages
    /// of `block_n` rows, the barriers, the two consumers' column ranges of a key tile and 1 KiB
    /// (`aws::Smem`).
    fn shared_bytes(self, d: usize, elem: usize) -> u32 {
        let rows = match self {
            Path::Rows => return 0,
            Path::MmaV1 => BLOCK_M + 2 * BLOCK_N,
            Path::Fa2 => BLOCK_M2 + 4 * BLOCK_N,
            Path::Sm90 => return ((1 + SM90_STAGES) * BLOCK_M2 * d * elem + 1024) as u32,
            Path::Sm90Ws | Path::Sm90Ws3 => {
                let (bn, consumers) = (self.block_n(d), self.block_m() / 64);
                let q_buffers = if d > 128 { 1 } else { 2 };
                let stages = if d == 64 { 2 * sm90ws_d64_stages() } else { SM90WS_STAGES };
                let tiles = (q_buffers * self.block_m() + stages * bn) * d * elem;
                return (tiles + sm90ws_bars() + consumers * bn * 16 + 1024) as u32;
            }
        };
        (rows * (d + 8) * elem) as u32
    }
}

/// The kernel for `p` on `arch`, given the `MOEKIT_CUDA_ATTN` override (`v1`: the 64-row
/// kernel; `fa2`: never a Hopper kernel; `sm90`: the Hopper kernel without warp specialisation,
/// D <= 128; the 64-row kernel takes D 256 under either; `ws2`: the two-consumer warp-specialised
/// kernel at D 64 too, where three consumers are the default; `ws3`: the default). At D 64 three
/// consumers (192 rows, no intra-warpgroup overlap) beat two since the causal diagonal's mask loop
/// is cheap (run 33 call B: causal 376 -> 342 us, non-causal 1.33 -> 1.15 ms, image 507 -> 482,
/// docs-varlen 164 -> 157; call D: ranges +5%), and since the ranged tiles' interval loop and
/// causal ranges as the flag (run 34 call B) on the docs mask too (164.7 against 173.6 us; run 33
/// call D had it 6.5% slower).
fn choose_path(p: &AttentionProblem, arch: &str, env: Option<&str>) -> Path {
    if p.dtype == DType::F32 || matches!(arch, "sm_70" | "sm_75") {
        Path::Rows
    } else if env == Some("v1") {
        Path::MmaV1
    } else if arch == "sm_90a" && env == Some("sm90") && p.head_dim <= 128 {
        Path::Sm90
    } else if arch == "sm_90a" && p.head_dim == 64 && !matches!(env, Some("fa2" | "sm90" | "ws2")) {
        Path::Sm90Ws3
    } else if arch == "sm_90a" && !matches!(env, Some("fa2" | "sm90")) {
        Path::Sm90Ws
    } else if p.head_dim > 128 {
        Path::MmaV1
    } else {
        Path::Fa2
    }
}

/// The warp-specialised kernel's `MOEKIT_CUDA_ATTN_PROBE` list, parsed once; unknown words are
/// ignored.
#[derive(Debug, Default, PartialEq, Eq)]
struct Probe {
    /// The kernel's `flags` argument (`aws::NO_PINGPONG`, `aws::EAGER_RESCALE`, `aws::NO_FOLD`).
    flags: i32,
    /// `no-persist`: one CTA per unit instead of a persistent wave.
    no_persist: bool,
    /// `static`: the persistent CTAs take their units in fixed rounds, not by ticket.
    fixed_rounds: bool,
    /// `grid=N` (the first such word): at most N CTAs.
    grid_cap: Option<usize>,
    /// `ranges-as-given`: column ranges whose upper intervals are causal stay ranges instead of
    /// the causal flag (`flashmask::causal_from_ranges`).
    ranges_as_given: bool,
    /// `whole-tiles`: the three-consumer kernel runs every key tile of its rows' span on causal
    /// or windowed problems too (`attention_sm90ws3_*`, not the banded form).
    whole_tiles: bool,
    /// `no-causal-blocks`: FlashMask blocks whose ranges are causal over their span keep the
    /// ranges (not the causal flag; `flashmask::Block::causal`).
    no_causal_blocks: bool,
}

impl Probe {
    fn parse(env: Option<&str>) -> Self {
        let mut probe = Probe::default();
        for w in env.unwrap_or("").split(',').map(str::trim) {
            match w {
                "no-pingpong" => probe.flags |= 1,
                "eager-rescale" => probe.flags |= 2,
                "no-fold" => probe.flags |= 4,
                "no-persist" => probe.no_persist = true,
                "static" => probe.fixed_rounds = true,
                "ranges-as-given" => probe.ranges_as_given = true,
                "whole-tiles" => probe.whole_tiles = true,
                "no-causal-blocks" => probe.no_causal_blocks = true,
                _ => {
                    if probe.grid_cap.is_none() {
                        probe.grid_cap = w.strip_prefix("grid=").and_then(|n| n.parse().ok());
                    }
                }
            }
        }
        probe
    }
}

/// The tensor map of q, k or v (`data`, `[tokens, heads, D]` of `p`'s dtype and head dim) in
/// boxes of `rows` token rows, for tiles of `tile_rows` ([`token_map_geometry`]).
pub(super) fn token_map(
    gpu: &CudaBackend,
    data: &CudaSlice<u8>,
    p: &AttentionProblem,
    tokens: usize,
    heads: usize,
    rows: usize,
    tile_rows: usize,
) -> Result<TensorMap> {
    let (ptr, _read) = data.device_ptr(&gpu.stream);
    encode_map_for(OP, ptr, p.dtype, &token_map_geometry(tokens, heads, p.head_dim, rows, tile_rows))
}

/// The tensor map geometry of q, k or v (`[tokens, heads, D]`, 2-byte elements) for the
/// warp-specialised kernel: dims (D, H, T, 1), box (64, 1, rows, 1) = `rows` token rows of one
/// head's 64 columns (one 128-byte swizzle atom wide: a half of the kernel's tile, or a part of
/// one), so a tile of `tile_rows` rows takes D / 64 · tile_rows / rows boxes.
fn token_map_geometry(tokens: usize, heads: usize, d: usize, rows: usize, tile_rows: usize) -> MapGeometry {
    let (t, h, d) = (tokens as u64, heads as u64, d as u64);
    MapGeometry {
        dims: [d, h, t, 1],
        strides: [d * 2, h * d * 2, t * h * d * 2],
        boxes: [64, 1, rows as u32, 1],
        copies: d / 64 * (tile_rows / rows) as u64,
        tile: tile_rows as u64 * d * 2,
    }
}

/// Work items `[n][5] = {q0, Lq, k0, Lk, m0}` for every `block_m`-row query block of every
/// non-empty sequence, heaviest (most key blocks) first so that the long causal rows do not
/// trail. (With column ranges, the warp-specialised kernel takes `Plan::items` of
/// `flashmask.rs` instead.)
fn schedule(p: &AttentionProblem, block_m: usize) -> Vec<i32> {
    let mut items: Vec<(usize, [i32; ITEM])> = Vec::new();
    for b in 0..p.batch() {
        let (lq, _) = p.seq_lens(b);
        for m0 in (0..lq).step_by(block_m) {
            let last = (m0 + block_m).min(lq) - 1;
            let (lo, _) = p.key_range(b, m0);
            let (_, hi) = p.key_range(b, last);
            let work = hi.saturating_sub(lo / BLOCK_N * BLOCK_N).div_ceil(BLOCK_N);
            items.push((work, work_item(p, b, m0)));
        }
    }
    items.sort_by_key(|it| std::cmp::Reverse(it.0));
    items.into_iter().flat_map(|(_, item)| item).collect()
}

/// The work item `{q0, Lq, k0, Lk, m0}` of the query block at row `m0` of sequence `b`.
pub(super) fn work_item(p: &AttentionProblem, b: usize, m0: usize) -> [i32; ITEM] {
    let (lq, lk) = p.seq_lens(b);
    [p.cu_seqlens_q[b], lq, p.cu_seqlens_k[b], lk, m0].map(i32_of)
}

/// The mask arguments every attention kernel takes: softcap (0: none), causal (0 / 1) and the
/// window's sides (`wl < 0`: no window), clamped to `WINDOW_CAP`.
pub(super) fn mask_args(p: &AttentionProblem) -> (f32, i32, i64, i64) {
    let clamp = |x: usize| x.min(WINDOW_CAP) as i64;
    let (wl, wr) = p.mask.window.map_or((-1, 0), |w| (clamp(w.left), clamp(w.right)));
    (p.softcap.unwrap_or(0.0), i32::from(p.mask.causal), wl, wr)
}

/// Lets `f` take `shared` bytes of dynamic shared memory where that passes the 48 KiB every
/// kernel gets without opting in.
pub(super) fn allow_shared(f: &CudaFunction, shared: u32) -> Result<()> {
    if shared > DEFAULT_SHARED {
        f.set_attribute(CUfunction_attribute_enum::CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES, shared as i32)
            .map_err(device_err(OP))?;
    }
    Ok(())
}

/// The column ranges as one device array `[4][Tk]` (lts, lte, uts, ute), if the mask has them.
pub(super) fn column_ranges(gpu: &CudaBackend, p: &AttentionProblem) -> Result<Option<CudaSlice<i32>>> {
    let Some(c) = &p.mask.column_ranges else { return Ok(None) };
    if p.total_k() == 0 {
        // NOTE: no keys means no non-empty sequence, hence no work item that would read them.
        return Ok(None);
    }
    let all: Vec<i32> = [&c.lts, &c.lte, &c.uts, &c.ute].into_iter().flatten().copied().collect();
    gpu.stream.clone_htod(&all).map(Some).map_err(device_err(OP))
}

#[cfg(test)]
mod tests {
    use super::*;
    use moekit_ops::AttentionMask;

    fn problem(dtype: DType, head_dim: usize) -> AttentionProblem {
        AttentionProblem {
            cu_seqlens_q: vec![0, 300],
            cu_seqlens_k: vec![0, 300],
            heads_q: 4,
            heads_kv: 2,
            head_dim,
            scale: 0.1,
            softcap: None,
            mask: AttentionMask::causal(),
            dtype,
        }
    }

    #[test]
    fn path_choice_and_override() {
        assert_eq!(choose_path(&problem(DType::BF16, 128), "sm_90a", None), Path::Sm90Ws);
        assert_eq!(choose_path(&problem(DType::F16, 64), "sm_90a", None), Path::Sm90Ws3);
        assert_eq!(choose_path(&problem(DType::F16, 64), "sm_90a", Some("ws2")), Path::Sm90Ws);
        assert_eq!(choose_path(&problem(DType::BF16, 128), "sm_90a", Some("ws2")), Path::Sm90Ws);
        assert_eq!(choose_path(&problem(DType::BF16, 128), "sm_90a", Some("sm90")), Path::Sm90);
        assert_eq!(choose_path(&problem(DType::BF16, 128), "sm_80", Some("sm90")), Path::Fa2);
        assert_eq!(choose_path(&problem(DType::BF16, 128), "sm_90a", Some("fa2")), Path::Fa2);
        assert_eq!(choose_path(&problem(DType::F16, 64), "sm_80", None), Path::Fa2);
        assert_eq!(choose_path(&problem(DType::BF16, 64), "sm_89", None), Path::Fa2);
        assert_eq!(choose_path(&problem(DType::BF16, 128), "sm_90a", Some("v1")), Path::MmaV1);
        assert_eq!(choose_path(&problem(DType::BF16, 256), "sm_90a", None), Path::Sm90Ws);
        assert_eq!(choose_path(&problem(DType::BF16, 256), "sm_90a", Some("sm90")), Path::MmaV1);
        assert_eq!(choose_path(&problem(DType::F16, 256), "sm_90a", Some("fa2")), Path::MmaV1);
        assert_eq!(choose_path(&problem(DType::BF16, 256), "sm_80", None), Path::MmaV1);
        assert_eq!(choose_path(&problem(DType::BF16, 64), "sm_90a", Some("ws3")), Path::Sm90Ws3);
        assert_eq!(choose_path(&problem(DType::BF16, 128), "sm_90a", Some("ws3")), Path::Sm90Ws);
        assert_eq!(choose_path(&problem(DType::BF16, 64), "sm_80", Some("ws3")), Path::Fa2);
        assert_eq!(choose_path(&problem(DType::F32, 128), "sm_90a", None), Path::Rows);
        assert_eq!(choose_path(&problem(DType::BF16, 128), "sm_75", None), Path::Rows);
    }

    #[test]
    fn schedule_blocks_heaviest_first() {
        let items = schedule(&problem(DType::BF16, 128), BLOCK_M2);
        // 300 causal rows in 128-row blocks: m0 = 256 (most keys), 128, 0.
        let m0: Vec<i32> = items.chunks(ITEM).map(|it| it[4]).collect();
        assert_eq!(m0, vec![256, 128, 0]);
        assert_eq!(Path::Fa2.shared_bytes(128, 2), (128 + 256) * 136 * 2);
        // Q + 2 K + 3 V tiles of 128 × 128 bf16 and the alignment slack: one CTA per SM.
        assert_eq!(Path::Sm90.shared_bytes(128, 2), 6 * 32768 + 1024);
        assert_eq!(Path::Sm90.shared_bytes(64, 2), 6 * 16384 + 1024);
        assert_eq!((Path::Sm90.block_m(), Path::Sm90.threads()), (128, 256));
        // 2 Q buffers + 2 K + 2 V tiles, the barriers, two tiles' column ranges and the
        // alignment slack: 197 KiB, under 227.
        assert_eq!(Path::Sm90Ws.shared_bytes(128, 2), 6 * 32768 + 128 + 4096 + 1024);
        // D 256: a 64 KiB Q tile, 2 K and 2 V stages of 64 keys (32 KiB each): under 227 KiB.
        assert_eq!(Path::Sm90Ws.shared_bytes(256, 2), (65536 + 4 * 32768) + 128 + 2048 + 1024);
        assert_eq!((Path::Sm90Ws.block_n(64), Path::Sm90Ws.block_n(128), Path::Sm90Ws.block_n(256)), (128, 128, 64));
        // Three consumers at D 64: two 192-row Q tiles, 2 K and 2 V stages, three tiles' ranges.
        assert_eq!(Path::Sm90Ws3.shared_bytes(64, 2), (2 * 192 + 4 * 128) * 128 + 128 + 3 * 2048 + 1024);
        assert_eq!((Path::Sm90Ws3.block_m(), Path::Sm90Ws3.threads()), (192, 512));
        assert_eq!((Path::Sm90Ws.block_m(), Path::Sm90Ws.threads()), (128, 384));
    }

    #[test]
    fn banded_problems_take_the_banded_three_consumer_kernel() {
        assert_eq!(Path::Sm90Ws3.kernel_base(64, true, false), "attention_sm90ws3s_d64");
        assert_eq!(Path::Sm90Ws3.kernel_base(64, false, false), "attention_sm90ws3_d64");
        // The other kernels have no banded form.
        assert_eq!(Path::Sm90Ws.kernel_base(128, true, false), "attention_sm90ws_d128");
        assert_eq!(Path::Fa2.kernel_base(64, true, false), "attention_fa2_d64");
    }

    #[test]
    fn plans_with_causal_blocks_take_the_kernels_that_read_them() {
        // The FlashMask plan marks causal blocks only for a kernel with a CB form.
        assert!(Path::Sm90Ws.takes_causal_blocks(128, false) && Path::Sm90Ws.takes_causal_blocks(256, true));
        assert!(!Path::Sm90Ws.takes_causal_blocks(64, false));
        assert!(Path::Sm90Ws3.takes_causal_blocks(64, false) && !Path::Sm90Ws3.takes_causal_blocks(64, true));
        assert!(!Path::Fa2.takes_causal_blocks(128, false) && !Path::Sm90.takes_causal_blocks(128, false));
        // With causal blocks the plan makes the D 64 problem banded.
        assert_eq!(Path::Sm90Ws.kernel_base(128, false, true), "attention_sm90wsc_d128");
        assert_eq!(Path::Sm90Ws.kernel_base(256, false, true), "attention_sm90wsc_d256");
        assert_eq!(Path::Sm90Ws3.kernel_base(64, true, true), "attention_sm90ws3sc_d64");
        // From the module that holds them (kernels_compile checks its contents).
        assert_eq!(Path::Sm90Ws3.source(true).name, "attention_sm90_ws_cb.cu");
        assert_eq!(Path::Sm90Ws.source(false).name, "attention_sm90_ws.cu");
        assert_eq!(Path::Fa2.source(false).name, "attention.cu");
    }

    #[test]
    fn probe_words_set_their_flags() {
        let flags = |env| Probe::parse(env).flags;
        assert_eq!(flags(None), 0);
        assert_eq!(flags(Some("no-pingpong")), 1);
        assert_eq!(flags(Some("eager-rescale, no-pingpong")), 3);
        assert_eq!(flags(Some("no-fold")), 4);
        assert_eq!(flags(Some("bogus")), 0);
        assert_eq!(Probe::parse(None), Probe::default());
        assert_eq!(
            Probe::parse(Some("static, grid=3,grid=5, no-fold")),
            Probe { flags: 4, fixed_rounds: true, grid_cap: Some(3), ..Probe::default() }
        );
        assert_eq!(Probe::parse(Some("no-persist,grid=x")), Probe { no_persist: true, ..Probe::default() });
        assert_eq!(Probe::parse(Some("ranges-as-given")), Probe { ranges_as_given: true, ..Probe::default() });
        assert_eq!(Probe::parse(Some("whole-tiles")), Probe { whole_tiles: true, ..Probe::default() });
        assert_eq!(Probe::parse(Some("no-causal-blocks")), Probe { no_causal_blocks: true, ..Probe::default() });
    }

    #[test]
    fn token_maps_fit_the_driver_rules() {
        use super::super::grouped_gemm_tma::check_geometry;
        for d in [64, 128, 256] {
            let bn = Path::Sm90Ws.block_n(d);
            for (rows, tile_rows) in [(bn, bn), (Q_BOX_ROWS, BLOCK_M2), (Q_BOX_ROWS, 192)] {
                let g = token_map_geometry(4 * 4096, 8, d, rows, tile_rows);
                assert!(check_geometry(&g).is_ok(), "{g:?}");
                assert_eq!(g.box_bytes() * g.copies, (tile_rows * d * 2) as u64);
                assert_eq!(g.strides, [d as u64 * 2, 8 * d as u64 * 2, 4 * 4096 * 8 * d as u64 * 2]);
            }
        }
    }
}
