//! Split-KV decode attention on CUDA (`kernels/attention_decode.cu`): for batches whose sequences
//! have few query rows against long keys (every `Lq · G <= 16`, `G = Hq / Hkv`), one CTA per
//! (key split, kv head) runs the whole GQA group's query rows against the split's keys, so each
//! K/V byte is read once; the splits are merged after. Splits are sized so that the grid
//! is one full wave of the CTAs the SMs hold at once (whatever the batch): two waves, the second
//! a quarter full, cost 1.5× (run 27 call F).
//!
//! Three decode kernels, picked by `MOEKIT_CUDA_DECODE` ([`Variant`]): `v1` (`attention_decode_*`:
//! 64-key blocks through 2 stages shared by the CTA's 4 warps, a CTA barrier a block), `v2` (the
//! default; `attention_decode2_*`: each warp its own 3-stage pipeline of 16-key sub-blocks, no
//! barrier in the loop; the kernel header says why; `attention_decode2s2_*` with 2 stages where
//! only its extra CTA per SM holds the batch in one wave, [`Stages`]) and `v3` (sm_90a: 64-key
//! tiles by TMA, as fast as v2). All write the same partial results for the same splits. The
//! last CTA of each (sequence, kv head) merges them where every sequence's splits' row statistics
//! fit in its shared memory (the work items then travel by value in the kernel's arguments, no
//! copy to the device); else the combine kernel does, over uploaded items.

use super::attention::{allow_shared, column_ranges, mask_args, token_map};
use crate::backend::{device_err, lock};
use crate::launch::{i32_of, kernel_name, launch_err};
use crate::runtime::sources::ATTENTION_DECODE;
use crate::{CudaBackend, CudaBuffer};
use cudarc::driver::{DevicePtr, LaunchConfig, PushKernelArg};
use moekit_ops::{AttentionIo, AttentionProblem, DType, Result, Validated};

const OP: &str = "attention";
/// Query rows of a CTA (the group's rows of one sequence); matches `DEC_ROWS`.
const ROWS: usize = 16;
/// Keys per block; matches `DEC_BN`. Splits start on a multiple of it.
const BLOCK: usize = 64;
/// K/V stages; matches `DEC_STAGES`.
const STAGES: usize = 2;
/// v2: keys per sub-block (`DEC2_KB`), warps (`DEC2_WARPS`); its stages a warp are [`Stages`].
const V2_KEYS: usize = 16;
const V2_WARPS: usize = 4;
/// v3: K/V stages of 64-key tiles (`DEC3_STAGES`).
const V3_STAGES: usize = 3;
/// Environment switch of the decode kernel: `v1`, `v2`, `v2s2`, `v2s3` or `v3` (see [`Variant`]).
const ENV_VARIANT: &str = "MOEKIT_CUDA_DECODE";
/// Threads of the decode kernel; matches `DEC_THREADS`.
const THREADS: u32 = 128;
/// i32 fields of one work item: `q0, Lq, k0, Lk, ks0, ks1, first, splits`; matches `DEC_ITEM`.
const ITEM: usize = 8;
/// Work items passed by value in the kernel argument [`Table`]; matches `DEC_TABLE_ITEMS`.
const TABLE_ITEMS: usize = 112;
/// The fused combine's counters (one per (sequence, kv head) of a call: the first item's index ·
/// Hkv + kv head): calls with more items · Hkv take the combine kernel.
const COUNTERS: usize = 1 << 16;
/// Bytes of shared memory the fused combine takes per split of a sequence: each row's m and l
/// (f32). Run 28 call B measured the first fused merge (row by row, split by split, each load
/// waited for) slower than the combine kernel from 6 splits on (B8 S8192 94.5 against 91.9 us,
/// 1 × 65536's 49 splits 110.6 / 94.1), and took it only up to 4; `dec_finish` now issues its
/// loads together and takes every split count that fits.
const FUSE_BYTES_PER_SPLIT: usize = ROWS * 2 * 4;
/// Environment probe (timing experiments; results stay exact): `combine-kernel` merges the
/// splits in the combine kernel instead of the last CTA of each sequence, `upload-items` copies
/// the work items to the device instead of passing them by value.
const ENV_PROBE: &str = "MOEKIT_CUDA_DECODE_PROBE";

/// The work items by value (`DecTable`): 3.5 KiB, inside the 4 KiB of kernel arguments every
/// driver takes.
#[repr(C)]
#[derive(Clone, Copy)]
struct Table([i32; TABLE_ITEMS * ITEM]);

// SAFETY: plain i32 data in the layout of the kernel's `DecTable`.
unsafe impl cudarc::driver::DeviceRepr for Table {}
/// The shortest split: below it the combine's reads outweigh the parallelism.
const MIN_SPLIT: usize = 256;
/// The most waves of CTAs a split plan is sized for ([`Splits::of`]).
const MAX_WAVES: usize = 4;

/// Whether the decode kernels run `p` on `arch` (with the `MOEKIT_CUDA_ATTN` override, which
/// forces another kernel when set): f16/bf16, D 64 or 128, sm_80 or later, and every
/// sequence's query rows times the GQA group at most 16.
pub(super) fn eligible(p: &AttentionProblem, arch: &str, env: Option<&str>) -> bool {
    let group = p.heads_q / p.heads_kv.max(1);
    env.is_none()
        && matches!(p.dtype, DType::F16 | DType::BF16)
        && matches!(p.head_dim, 64 | 128)
        && !matches!(arch, "sm_70" | "sm_75")
        && p.total_q() > 0
        && (0..p.batch()).all(|b| p.seq_lens(b).0 * group <= ROWS)
}

/// The decode kernel: all take the same work items and write the same partial results.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Variant {
    /// `attention_decode_*`: 64-key blocks through 2 cp.async stages shared by the CTA's warps.
    V1,
    /// `attention_decode2_*` (3 stages) and `attention_decode2s2_*` (2): per-warp pipelines of
    /// 16-key sub-blocks, no CTA barrier a block.
    V2(Stages),
    /// `attention_decode3_*` (sm_90a): v1's split of 64-key tiles among the warps, the tiles by
    /// TMA through 3 stages with mbarriers, one thread issuing. Within 2% of v2 (run 31).
    V3,
}

/// v2's stages a warp. Three (2 CTAs per SM at D 128, 3 at D 64) read 2-4% faster than two
/// (3 and 5) within one wave (run 30 call C: B8 S8192 84.7 / 86.4 us, 1 × 65536 87.7 / 90.8), but
/// where the batch's (sequence, kv head) pairs overflow one wave of 3-stage CTAs and fit one of
/// 2-stage ones, the extra CTA per SM saves the second wave ([`pick_stages`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Stages {
    /// [`pick_stages`] for the batch (`v2`).
    Auto,
    /// `attention_decode2s2_*` (`v2s2`).
    Two,
    /// `attention_decode2_*` (`v2s3`).
    Three,
}

/// v2's stage count for `pairs` (sequence with query rows, kv head) pairs on `slots3` resident
/// 3-stage or `slots2` 2-stage CTAs: two only where the pairs fit one wave of those and not of
/// the others (run 31 call B, v3 with the same CTAs per SM: B48 S2048, 384 pairs, 116.6 us in one
/// wave of 396 slots against 127.5 in the plan over 264).
pub(super) fn pick_stages(pairs: usize, slots3: usize, slots2: usize) -> Stages {
    if pairs > slots3 && pairs <= slots2 {
        Stages::Two
    } else {
        Stages::Three
    }
}

impl Variant {
    /// The variant `MOEKIT_CUDA_DECODE` names (`v1`, `v2`, `v2s2`, `v2s3`, `v3`), or the default
    /// without it.
    pub(super) fn from_env(env: Option<&str>) -> Result<Variant> {
        match env.map(str::trim) {
            None | Some("") => Ok(Variant::DEFAULT),
            Some("v1") => Ok(Variant::V1),
            Some("v2") => Ok(Variant::V2(Stages::Auto)),
            Some("v2s2") => Ok(Variant::V2(Stages::Two)),
            Some("v2s3") => Ok(Variant::V2(Stages::Three)),
            Some("v3") => Ok(Variant::V3),
            Some(other) => Err(moekit_ops::Error::invalid(
                OP,
                format!("{ENV_VARIANT}={other}: expected v1, v2, v2s2, v2s3 or v3 (the split-KV decode kernel)"),
            )),
        }
    }

    /// v2: on the H200 it passed the decode test, the v1 comparison and racecheck, and its kernel
    /// took 76.9 against 78.7 us (B8 Hq32 Hkv8 S8192 D128, ncu at free clocks), 77.4 against
    /// 79.6 (D 64), the same at S 16384 and 158 against 177 us a call on B32 S4096 (2 CTAs per
    /// SM); 1 × 65536 keys ran 1% slower (96 against 95 us a call).
    const DEFAULT: Variant = Variant::V2(Stages::Auto);

    /// The key granule of its splits: v1's blocks (and v3's tiles) of 64 keys start on a multiple
    /// of 64; v2 takes any start, and splits in multiples of its 16-key sub-blocks leave the
    /// longest split of a sequence at most 15 keys over the others (64-key splits of B8 S8192:
    /// 1408 keys against a mean of 1365).
    pub(super) fn granule(self) -> usize {
        match self {
            Variant::V1 | Variant::V3 => BLOCK,
            Variant::V2(_) => V2_KEYS,
        }
    }

    /// The kernel's name stem.
    fn stem(self) -> &'static str {
        match self {
            Variant::V1 => "attention_decode",
            Variant::V2(Stages::Two) => "attention_decode2s2",
            Variant::V2(_) => "attention_decode2",
            Variant::V3 => "attention_decode3",
        }
    }

    /// Dynamic shared memory at head dim `d`: Q [16][D + 8] and the K/V stages ([64][D + 8] each
    /// of K and V, 2 stages; v2: [16][D] each, swizzled, 3 (or 2) stages a warp; v3: 64 × D each,
    /// swizzled, 1024-aligned, 3 stages, then 6 mbarriers), the merge reusing them.
    pub(super) fn shared_bytes(self, d: usize) -> u32 {
        let q = q_bytes(d);
        let bytes = match self {
            Variant::V1 => q + 2 * STAGES * BLOCK * (d + 8) * 2,
            Variant::V2(stages) => {
                let n = if stages == Stages::Two { 2 } else { 3 };
                q + 2 * V2_WARPS * n * V2_KEYS * d * 2
            }
            Variant::V3 => q + 1023 + V3_STAGES * 2 * BLOCK * d * 2 + 2 * V3_STAGES * 8,
        };
        // The merge over the stages: m and l [2][4][16], O [4][16][D] f32.
        debug_assert!(bytes - q >= (2 * 4 * ROWS + 4 * ROWS * d) * 4);
        u32::try_from(bytes).unwrap_or(u32::MAX)
    }
}

/// Bytes of every decode kernel's Q tile in shared memory at head dim `d`: [16][D + 8] bf16 / f16.
fn q_bytes(d: usize) -> usize {
    ROWS * (d + 8) * 2
}

/// The splits: work items `[n][8] = {q0, Lq, k0, Lk, ks0, ks1, first, splits}`, a sequence's
/// consecutive (items `first..first + splits`), and per sequence with query rows `[s][2] =
/// {first item, splits}` (for the combine kernel).
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Splits {
    pub(super) items: Vec<i32>,
    pub(super) seqs: Vec<i32>,
}

impl Splits {
    /// Splits of the keys every sequence's rows may see (causal and window bounds; column
    /// ranges are masked in the kernel), for `slots` CTAs resident at once on the device: the
    /// plan of [`Splits::with_target`] for a CTA's share of `keys · Hkv / slots` keys, one wave,
    /// whenever its CTAs fit in that wave. Past one wave (more pairs of sequence and kv head than
    /// slots), of the plans sized for 1..=[`MAX_WAVES`] waves the one whose waves are fullest
    /// (CTAs over waves · slots), the fewest CTAs on a tie: a last wave a quarter full leaves the
    /// DRAM idle while it runs (B48 Hkv 8 S2048 on 264 slots: 384 CTAs in two waves, 135 us a
    /// call, or 768 in three, 125 us; run 30 call D). Within one wave the CTAs share the DRAM, so
    /// more, shorter splits do not help: 1 × 65536 keys in 784 CTAs (three waves) took 104.7 us,
    /// in 264 (one) 87.7 us; B16 D64 S4096 in 768 (two) 92.2 us, in 256 (one) 87.0 (calls C, D).
    pub(super) fn of(p: &AttentionProblem, slots: usize, granule: usize) -> Splits {
        let spans: Vec<(usize, usize)> = (0..p.batch())
            .map(|b| {
                let (lq, _) = p.seq_lens(b);
                if lq == 0 {
                    return (0, 0);
                }
                let (lo, _) = p.key_range(b, 0);
                let (_, hi) = p.key_range(b, lq - 1);
                (lo / granule * granule, hi.max(lo))
            })
            .collect();
        let keys: usize = spans.iter().map(|&(lo, hi)| hi - lo).sum();
        let slots = slots.max(1);
        let plan = |waves: usize| {
            let per_cta = (keys * p.heads_kv).div_ceil(waves * slots).max(MIN_SPLIT);
            Splits::with_target(p, &spans, per_cta, granule)
        };
        let ctas = |s: &Splits| s.items.len() / ITEM * p.heads_kv;
        let one = plan(1);
        if ctas(&one) <= slots {
            return one;
        }
        // Fill n / (ceil(n / slots) · slots), compared as cross products.
        let cap = |n: usize| n.div_ceil(slots) * slots;
        let mut best = one;
        for waves in 2..=MAX_WAVES {
            let cand = plan(waves);
            let (n, b) = (ctas(&cand), ctas(&best));
            if n * cap(b) > b * cap(n) {
                best = cand;
            }
        }
        best
    }

    /// The plan for CTAs of about `per_cta` keys: each sequence (key span `lo..hi` of `spans`)
    /// gets `(hi - lo) / per_cta` splits, rounded down (at least one), of equal length rounded
    /// up to `granule` keys (the kernel's block: [`Variant::granule`]).
    fn with_target(p: &AttentionProblem, spans: &[(usize, usize)], per_cta: usize, granule: usize) -> Splits {
        let (mut items, mut seqs) = (Vec::new(), Vec::new());
        for (b, &(lo, hi)) in spans.iter().enumerate() {
            let (lq, lk) = p.seq_lens(b);
            if lq == 0 {
                continue;
            }
            let first = items.len() / ITEM;
            // A sequence whose rows see no key still gets one (empty) split: its rows come out
            // NaN, as on every backend.
            let count = ((hi - lo) / per_cta).max(1);
            let split = (hi - lo).div_ceil(count).next_multiple_of(granule).max(granule);
            let starts: Vec<usize> = if hi > lo { (lo..hi).step_by(split).collect() } else { vec![lo] };
            for &ks0 in &starts {
                let ks1 = (ks0 + split).min(hi).max(ks0);
                let item = [p.cu_seqlens_q[b], lq, p.cu_seqlens_k[b], lk, ks0, ks1, first, starts.len()];
                items.extend(item.map(i32_of));
            }
            seqs.extend([first, starts.len()].map(i32_of));
        }
        Splits { items, seqs }
    }
}

/// Whether the last CTA of each sequence merges its splits (the fused combine): every
/// sequence's splits' row statistics fit in the `shared` bytes past the kernel's Q tile
/// ([`FUSE_BYTES_PER_SPLIT`] each), and the counters cover the items of every kv head.
fn fuse_combine(splits: &Splits, heads_kv: usize, shared: usize) -> bool {
    splits.items.len() / ITEM * heads_kv <= COUNTERS
        && splits.seqs.chunks(2).all(|s| s[1] as usize * FUSE_BYTES_PER_SPLIT <= shared)
}

/// Runs `p` on the decode kernels (see [`eligible`]).
pub(super) fn run(gpu: &CudaBackend, p: &Validated<AttentionProblem>, io: AttentionIo<'_, CudaBuffer>) -> Result<()> {
    let variant = Variant::from_env(std::env::var(ENV_VARIANT).ok().as_deref())?;
    run_variant(gpu, p, io, variant)
}

/// [`run`] on the given kernel.
pub(super) fn run_variant(
    gpu: &CudaBackend,
    p: &Validated<AttentionProblem>,
    io: AttentionIo<'_, CudaBuffer>,
    variant: Variant,
) -> Result<()> {
    let d = p.head_dim;
    if variant == Variant::V3 && gpu.arch() != "sm_90a" {
        return Err(moekit_ops::Error::unsupported(
            OP,
            format!("{ENV_VARIANT}=v3 needs Hopper (sm_90a) for its TMA copies, not {}", gpu.arch()),
        ));
    }
    // The kernel, its shared bytes and CTAs resident per SM (H200, by shared memory: v1 3 at D 128,
    // 5 at D 64; v2 2 and 4, with 2 stages 3 and 6; v3 2 and 4; the registers may allow fewer).
    let kernel = |variant: Variant| -> Result<_> {
        let f =
            gpu.kernels.function(OP, &ATTENTION_DECODE, &kernel_name(&format!("{}_d{d}", variant.stem()), p.dtype))?;
        let shared = variant.shared_bytes(d);
        allow_shared(&f, shared)?;
        let per_sm = gpu.resident_blocks(OP, &f, &format!("{}_d{d}", variant.stem()), THREADS, shared as usize)?;
        Ok((f, shared, per_sm))
    };
    let (variant, (f, shared, per_sm)) = match variant {
        Variant::V2(Stages::Auto) => {
            let three = kernel(Variant::V2(Stages::Three))?;
            let pairs = (0..p.batch()).filter(|&b| p.seq_lens(b).0 > 0).count() * p.heads_kv;
            if pairs > gpu.sms * three.2 {
                let two = kernel(Variant::V2(Stages::Two))?;
                match pick_stages(pairs, gpu.sms * three.2, gpu.sms * two.2) {
                    Stages::Two => (Variant::V2(Stages::Two), two),
                    _ => (Variant::V2(Stages::Three), three),
                }
            } else {
                (Variant::V2(Stages::Three), three)
            }
        }
        v => (v, kernel(v)?),
    };
    let splits = Splits::of(p, gpu.sms * per_sm, variant.granule());
    let (n, nseq) = (splits.items.len() / ITEM, splits.seqs.len() / 2);
    if n == 0 {
        return Ok(());
    }
    let probe = std::env::var(ENV_PROBE).unwrap_or_default();
    let probe = |w: &str| probe.split(',').any(|x| x.trim() == w);
    // The fused combine needs the backend's counters (zeroed once, and back to zero after every
    // call); made outside a graph recording only (a recorded allocation is the graph's own).
    // The merge's statistics go where the K/V stages were, past Q's tile.
    let merge_bytes = (shared as usize).saturating_sub(q_bytes(d));
    let counters = if probe("combine-kernel") || !fuse_combine(&splits, p.heads_kv, merge_bytes) {
        None
    } else {
        let mut slot = lock(&gpu.decode_counters, OP, "decode counters")?;
        if slot.is_none() && !gpu.capturing() {
            *slot = Some(gpu.stream.alloc_zeros::<i32>(COUNTERS).map_err(device_err(OP))?);
        }
        slot.as_ref().map(|c| {
            let (ptr, _sync) = c.device_ptr(&gpu.stream);
            ptr
        })
    };
    // Work items by value when the combine is fused and they fit; else items then seqs in one
    // upload (one copy on the stream, not two).
    // NOTE: from page-locked staging buffers (a ring of 8) these uploads cost 7-8 us more per
    // call than from the Vec (run 28 call A).
    let mut table = Table([0; TABLE_ITEMS * ITEM]);
    let upload = counters.is_none() || n > TABLE_ITEMS || probe("upload-items");
    let uploaded = if upload {
        let all: Vec<i32> = splits.items.iter().chain(&splits.seqs).copied().collect();
        Some(gpu.stream.clone_htod(&all).map_err(device_err(OP))?)
    } else {
        table.0[..splits.items.len()].copy_from_slice(&splits.items);
        None
    };
    let ranges = column_ranges(gpu, p)?;
    let parts = n * p.heads_kv * ROWS;
    // SAFETY: the decode kernel writes every element of both (all 16 rows of every (item, kv
    // head)) before the combine reads them, in stream order (or, fused, before its CTA counts
    // itself in).
    let mut part_o = unsafe { gpu.stream.alloc::<f32>(parts * d) }.map_err(device_err(OP))?;
    let mut part_ml = unsafe { gpu.stream.alloc::<f32>(parts * 2) }.map_err(device_err(OP))?;

    let (tq, tk, hq, hkv) = (i32_of(p.total_q()), i32_of(p.total_k()), i32_of(p.heads_q), i32_of(p.heads_kv));
    let (softcap, causal, wl, wr) = mask_args(p);
    let null = 0u64;

    let mut b = gpu.stream.launch_builder(&f);
    b.arg(&io.q.data).arg(&io.k.data).arg(&io.v.data).arg(&mut part_o).arg(&mut part_ml);
    let items_view = uploaded.as_ref().map(|u| u.slice(..n * ITEM));
    match &items_view {
        Some(v) => b.arg(v),
        None => b.arg(&null),
    };
    match &ranges {
        Some(r) => b.arg(r),
        None => b.arg(&null),
    };
    b.arg(&tk).arg(&hq).arg(&hkv).arg(&p.scale).arg(&softcap).arg(&causal).arg(&wl).arg(&wr);
    let counters_ptr = counters.unwrap_or(0);
    b.arg(&counters_ptr).arg(&mut io.o.data).arg(&mut io.lse.data).arg(&tq).arg(&table);
    // v3 reads K and V through tensor maps over [Tk, Hkv, D], boxes of 64 rows × 64 columns.
    let maps = if variant == Variant::V3 {
        let map = |data| token_map(gpu, data, p, p.total_k(), p.heads_kv, BLOCK, BLOCK);
        Some([map(&io.k.data)?, map(&io.v.data)?])
    } else {
        None
    };
    if let Some(m) = &maps {
        b.arg(&m[0]).arg(&m[1]);
    }
    let grid = u32::try_from(n * p.heads_kv).unwrap_or(u32::MAX);
    let cfg = LaunchConfig { grid_dim: (grid, 1, 1), block_dim: (THREADS, 1, 1), shared_mem_bytes: shared };
    // SAFETY: the arguments match `attention_decode_impl`, `attention_decode2_impl` and (with the
    // two tensor maps, over k and v, which live through the launch) `attention_decode3_impl`; check_io
    // proved q holds Tq × Hq × D, k and v Tk × Hkv × D elements of the dtype, o Tq × Hq × D and lse
    // Hq × Tq f32; every item's rows (Lq · G <= 16) and keys (ks0..ks1 within 0..Lk) are inside its
    // sequence, its `first, splits` name its sequence's items; the items are uploaded (n × 8) or
    // in the table (n <= TABLE_ITEMS); part_o and part_ml hold n × Hkv × 16 × D and × 2 f32; the
    // counters (when given) hold COUNTERS >= n × Hkv zeros; column ranges hold 4 × Tk i32; the
    // shared size was raised above.
    unsafe { b.launch(cfg) }.map(drop).map_err(launch_err(OP))?;
    let Some(uploaded) = uploaded.filter(|_| counters.is_none()) else { return Ok(()) };

    let fc = gpu.kernels.function(
        OP,
        &ATTENTION_DECODE,
        &kernel_name(&format!("attention_decode_combine_d{d}"), p.dtype),
    )?;
    let (items, seqs) = (uploaded.slice(..n * ITEM), uploaded.slice(n * ITEM..n * ITEM + nseq * 2));
    let mut b = gpu.stream.launch_builder(&fc);
    b.arg(&part_o).arg(&part_ml).arg(&items).arg(&seqs).arg(&mut io.o.data).arg(&mut io.lse.data);
    b.arg(&tq).arg(&hq).arg(&hkv);
    let grid = u32::try_from(nseq * p.heads_kv * ROWS).unwrap_or(u32::MAX);
    let cfg = LaunchConfig { grid_dim: (grid, 1, 1), block_dim: (d as u32, 1, 1), shared_mem_bytes: 0 };
    // SAFETY: the arguments match `attention_decode_combine_impl`, one CTA of D threads per
    // (sequence, kv head, row); seqs name consecutive items of each sequence with query rows; o
    // holds Tq × Hq × D of the dtype and lse Hq × Tq f32.
    unsafe { b.launch(cfg) }.map(drop).map_err(launch_err(OP))
}

#[cfg(test)]
mod tests {
    use super::*;
    use moekit_ops::{AttentionMask, Window};

    fn problem(lq: &[usize], lk: &[usize], hq: usize, hkv: usize) -> AttentionProblem {
        let cu = |l: &[usize]| {
            let mut v = vec![0];
            for x in l {
                v.push(v.last().unwrap() + x);
            }
            v
        };
        AttentionProblem {
            cu_seqlens_q: cu(lq),
            cu_seqlens_k: cu(lk),
            heads_q: hq,
            heads_kv: hkv,
            head_dim: 128,
            scale: 0.1,
            softcap: None,
            mask: AttentionMask::causal(),
            dtype: DType::BF16,
        }
    }

    #[test]
    fn the_variant_comes_from_the_environment_value() {
        assert_eq!(Variant::from_env(None).unwrap(), Variant::DEFAULT);
        assert_eq!(Variant::from_env(Some("")).unwrap(), Variant::DEFAULT);
        assert_eq!(Variant::from_env(Some("v1")).unwrap(), Variant::V1);
        assert_eq!(Variant::from_env(Some(" v2 ")).unwrap(), Variant::V2(Stages::Auto));
        assert_eq!(Variant::from_env(Some("v2s2")).unwrap(), Variant::V2(Stages::Two));
        assert_eq!(Variant::from_env(Some("v2s3")).unwrap(), Variant::V2(Stages::Three));
        assert_eq!(Variant::from_env(Some("v3")).unwrap(), Variant::V3);
        let e = Variant::from_env(Some("v4")).unwrap_err();
        assert!(e.to_string().contains("MOEKIT_CUDA_DECODE=v4"), "{e}");
        assert_eq!(Variant::V1.stem(), "attention_decode");
        assert_eq!(Variant::V2(Stages::Three).stem(), "attention_decode2");
        assert_eq!(Variant::V2(Stages::Auto).stem(), "attention_decode2");
        assert_eq!(Variant::V2(Stages::Two).stem(), "attention_decode2s2");
        assert_eq!(Variant::V3.stem(), "attention_decode3");
    }

    #[test]
    fn shared_memory_and_ctas_per_sm() {
        // v1: Q [16][136] + 2 stages of K, V [64][136] bf16 = 73984 bytes at D 128 (39168 at
        // D 64); v2: Q + 4 warps × 3 stages × K, V [16][128] = 102656 (51456 at D 64), with 2
        // stages 69888 (35072).
        let (v2, v2s2) = (Variant::V2(Stages::Auto), Variant::V2(Stages::Two));
        assert_eq!((Variant::V1.shared_bytes(128), Variant::V1.shared_bytes(64)), (73984, 39168));
        assert_eq!((v2.shared_bytes(128), v2.shared_bytes(64)), (102656, 51456));
        assert_eq!(Variant::V2(Stages::Three).shared_bytes(128), 102656);
        assert_eq!((v2s2.shared_bytes(128), v2s2.shared_bytes(64)), (69888, 35072));
        // v3: Q, 1023 bytes to align the stages to 1024, 3 stages of K, V [64][D] and 6 barriers.
        assert_eq!((Variant::V3.shared_bytes(128), Variant::V3.shared_bytes(64)), (103727, 52527));
        // H200: 228 KiB a SM, 1 KiB reserved a CTA: v1 3 CTAs at D 128, 5 at D 64; v2 2 and 4
        // (with 2 stages 3 and 6; the registers may allow fewer); v3 2 and 4.
        let per_sm = |bytes: u32| (228 * 1024) / (bytes as usize + 1024);
        assert_eq!((per_sm(Variant::V1.shared_bytes(128)), per_sm(Variant::V1.shared_bytes(64))), (3, 5));
        assert_eq!((per_sm(v2.shared_bytes(128)), per_sm(v2.shared_bytes(64))), (2, 4));
        assert_eq!((per_sm(v2s2.shared_bytes(128)), per_sm(v2s2.shared_bytes(64))), (3, 6));
        assert_eq!((per_sm(Variant::V3.shared_bytes(128)), per_sm(Variant::V3.shared_bytes(64))), (2, 4));
    }

    #[test]
    fn two_stages_only_where_they_alone_hold_the_batch_in_one_wave() {
        // H200 at D 128: 264 slots of 3-stage CTAs, 396 of 2-stage ones.
        assert_eq!(pick_stages(384, 264, 396), Stages::Two); // B48 Hkv 8
        assert_eq!(pick_stages(396, 264, 396), Stages::Two);
        assert_eq!(pick_stages(264, 264, 396), Stages::Three); // fits the 3-stage wave
        assert_eq!(pick_stages(64, 264, 396), Stages::Three);
        assert_eq!(pick_stages(397, 264, 396), Stages::Three); // two waves either way
        assert_eq!(pick_stages(512, 264, 396), Stages::Three); // B64: 3 stages measured faster
    }

    /// v2 (3 and 2 stages; and on Hopper v3) against v1 on the GPU (skipped without one, a failure under
    /// `MOEKIT_NO_SKIP`): the decode test's kinds of shapes (one split and many, ragged last sub-blocks, empty
    /// sequences, GQA 1-8, causal, window, softcap, column ranges, D 64 and 128, bf16 and f16);
    /// outputs within rounding of each other (both accumulate in f32, in another order), NaN
    /// where the other has NaN.
    #[test]
    fn v2_gives_the_v1_output_on_the_gpu() {
        use moekit_ops::{Device, HostTensor};
        let gpu = match CudaBackend::new(0) {
            Ok(g) => g,
            Err(e) if std::env::var_os("MOEKIT_NO_SKIP").is_none() => {
                eprintln!("SKIPPED v2_gives_the_v1_output_on_the_gpu: {e}");
                return;
            }
            Err(e) => panic!("no CUDA backend under MOEKIT_NO_SKIP: {e}"),
        };
        if !eligible(&problem(&[1], &[64], 8, 8), gpu.arch(), None) {
            eprintln!("SKIPPED v2_gives_the_v1_output_on_the_gpu: arch {}", gpu.arch());
            return;
        }
        // (q lengths, k lengths, Hq, Hkv, D, causal, window, softcap, column ranges)
        type Shape = (&'static [usize], &'static [usize], usize, usize, usize, bool, Option<Window>, Option<f32>, bool);
        let shapes: [Shape; 9] = [
            (&[1, 1, 1], &[1, 63, 5000], 32, 8, 128, true, None, None, false),
            (&[1, 1], &[9000, 65], 32, 4, 64, true, None, None, false),
            (&[2, 4, 1], &[700, 3003, 129], 16, 4, 128, true, None, None, false),
            (&[16, 3], &[2048, 4001], 8, 8, 64, true, None, None, false),
            (&[1, 2], &[6000, 1500], 16, 2, 128, false, Some(Window { left: 1000, right: 0 }), None, false),
            (&[1, 1], &[3000, 777], 32, 8, 128, true, None, Some(25.0), false),
            (&[4, 1], &[2500, 901], 8, 2, 64, false, None, None, true),
            (&[1, 0, 1], &[4096, 10, 4096], 32, 8, 128, false, None, None, false),
            (&[1; 8], &[8192; 8], 32, 8, 128, true, None, None, false),
        ];
        for (i, &(lq, lk, hq, hkv, d, causal, window, softcap, ranges)) in shapes.iter().enumerate() {
            let mut p = problem(lq, lk, hq, hkv);
            p.head_dim = d;
            p.scale = 1.1 / (d as f32).sqrt();
            p.softcap = softcap;
            p.mask.causal = causal;
            p.mask.window = window;
            let (tq, tk) = (p.total_q(), p.total_k());
            if ranges {
                // Causal as column ranges, as the decode test (the kernels mask them key by key).
                use moekit_testing::gen;
                let mut rng = gen::rng(90 + i as u64);
                let (cu_q, cu_k) = (p.cu_seqlens_q.clone(), p.cu_seqlens_k.clone());
                p.mask.column_ranges = Some(gen::column_ranges(&mut rng, gen::MaskPattern::Causal, &cu_q, &cu_k));
            }
            let mut seed = 0x9e37_79b9_u32.wrapping_mul(i as u32 + 1);
            let mut rand = |n: usize| -> Vec<f32> {
                (0..n)
                    .map(|_| {
                        seed ^= seed << 13;
                        seed ^= seed >> 17;
                        seed ^= seed << 5;
                        (seed % 20001) as f32 / 10000.0 - 1.0
                    })
                    .collect()
            };
            let (qv, kv, vv) = (rand(tq * hq * d), rand(tk * hkv * d), rand(tk * hkv * d));
            for dtype in [DType::BF16, DType::F16] {
                p.dtype = dtype;
                let Ok(v) = p.validate() else { panic!("shape {i}: invalid") };
                let up = |x: &[f32], rows: usize, heads: usize| {
                    gpu.upload(&HostTensor::from_f32(dtype, &[rows, heads, d], x))
                };
                let (q, k, vb) = (up(&qv, tq, hq).unwrap(), up(&kv, tk, hkv).unwrap(), up(&vv, tk, hkv).unwrap());
                let mut outs = Vec::new();
                let variants: &[Variant] = if gpu.arch() == "sm_90a" {
                    &[Variant::V1, Variant::V2(Stages::Three), Variant::V2(Stages::Two), Variant::V3]
                } else {
                    &[Variant::V1, Variant::V2(Stages::Three), Variant::V2(Stages::Two)]
                };
                for &variant in variants {
                    let mut o = gpu.alloc(dtype, &[tq, hq, d]).unwrap();
                    let mut lse = gpu.alloc(DType::F32, &[hq, tq]).unwrap();
                    let io = AttentionIo { q: &q, k: &k, v: &vb, o: &mut o, lse: &mut lse };
                    run_variant(&gpu, &v, io, variant).unwrap_or_else(|e| panic!("shape {i} {dtype} {variant:?}: {e}"));
                    outs.push((gpu.download(&o).unwrap().to_f32_vec(), gpu.download(&lse).unwrap().to_f32_vec()));
                }
                let tol = if dtype == DType::BF16 { 1.6e-2 } else { 2e-3 };
                for (n, other) in outs.iter().enumerate().skip(1) {
                    for (what, a, b, tol) in [("o", &outs[0].0, &other.0, tol), ("lse", &outs[0].1, &other.1, 1e-4)] {
                        for (j, (x, y)) in a.iter().zip(b.iter()).enumerate() {
                            let ok = (x.is_nan() && y.is_nan()) || (x - y).abs() <= tol * (1.0 + x.abs());
                            assert!(ok, "shape {i} {dtype} {what}[{j}]: v1 {x} {:?} {y}", variants[n]);
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn decode_takes_few_rows_per_group() {
        let p = problem(&[1, 1, 2], &[5000, 300, 9000], 32, 8);
        assert!(eligible(&p, "sm_90a", None));
        assert!(eligible(&p, "sm_80", None));
        assert!(!eligible(&p, "sm_90a", Some("fa2")));
        assert!(!eligible(&p, "sm_75", None));
        // 5 rows × group 4 > 16.
        assert!(!eligible(&problem(&[1, 5], &[100, 100], 32, 8), "sm_90a", None));
        // 16 rows of MHA; 1 row of a group of 32 (> 16).
        assert!(eligible(&problem(&[16], &[100], 8, 8), "sm_90a", None));
        assert!(!eligible(&problem(&[1], &[100], 32, 1), "sm_90a", None));
        let mut f32p = p.clone();
        f32p.dtype = DType::F32;
        assert!(!eligible(&f32p, "sm_90a", None));
        let mut d256 = p.clone();
        d256.head_dim = 256;
        assert!(!eligible(&d256, "sm_90a", None));
    }

    #[test]
    fn splits_cover_each_sequence_once() {
        // 528 slots, 8 kv heads: 66 CTAs a head over ~8300 keys -> 256 keys each (the minimum).
        let mut p = problem(&[1, 0, 1, 3], &[5000, 40, 300, 9000], 32, 8);
        p.mask.window = Some(Window { left: 4000, right: 0 });
        for granule in [Variant::V1.granule(), Variant::V2(Stages::Auto).granule()] {
            let s = Splits::of(&p, 528, granule);
            assert_eq!(s.seqs.len(), 3 * 2, "the empty sequence has no split");
            for pair in s.seqs.chunks(2) {
                let (first, count) = (pair[0] as usize, pair[1] as usize);
                let its: Vec<&[i32]> = s.items.chunks(ITEM).skip(first).take(count).collect();
                let (q0, lq, lk) = (its[0][0], its[0][1] as usize, its[0][3] as usize);
                // Sequences are named by their first key (each has keys here).
                let b = p.cu_seqlens_k.iter().position(|&x| x == its[0][2] as usize).unwrap();
                let (lo, _) = p.key_range(b, 0);
                let (_, hi) = p.key_range(b, lq - 1);
                // Consecutive splits from the block holding lo to hi, each at most 256 keys.
                assert_eq!(its[0][4] as usize, lo / granule * granule);
                assert_eq!(its[count - 1][5] as usize, hi);
                for w in its.windows(2) {
                    assert_eq!(w[0][5], w[1][4]);
                }
                // Splits of at least 256 keys (the minimum) but for a sequence's last, under 2 · 256.
                assert!(its.iter().all(|it| it[4] % granule as i32 == 0 && it[4] < it[5] && it[5] - it[4] < 512));
                assert!(its[..count - 1].iter().all(|it| it[5] - it[4] >= 256));
                assert!(its.iter().all(|it| it[0] == q0 && it[3] as usize == lk));
            }
            // At most one wave: 8 kv heads × the splits <= 528 slots.
            assert!(8 * s.items.len() / ITEM <= 528);
        }
        // One wave: 8 × 8192 keys, 8 kv heads, 396 slots (3 CTAs on 132 SMs): 6 splits a
        // sequence (384 CTAs), not 7 (448: a second wave).
        let s = Splits::of(&problem(&[1; 8], &[8192; 8], 32, 8), 396, BLOCK);
        assert_eq!((s.items.len() / ITEM, s.items[5] - s.items[4]), (48, 1408));
        // v2's granule: 5 splits of 1376 keys and one of 1312.
        let s = Splits::of(&problem(&[1; 8], &[8192; 8], 32, 8), 396, Variant::V2(Stages::Auto).granule());
        assert_eq!(
            (s.items.len() / ITEM, s.items[5] - s.items[4], s.items[5 * ITEM + 5] - s.items[5 * ITEM + 4]),
            (48, 1376, 1312)
        );
        // Past one wave: B48 × 8 kv heads = 384 pairs on 264 slots (2 CTAs on 132 SMs). One
        // split a sequence is two waves of 2048 keys; two splits, three waves of 1024.
        let s = Splits::of(&problem(&[1; 48], &[2048; 48], 32, 8), 264, Variant::V2(Stages::Auto).granule());
        assert_eq!((s.items.len() / ITEM, s.items[5] - s.items[4]), (96, 1024));
        // B64 (512 pairs): 1.94 waves of 2048 keys, already as full as splitting makes them.
        let s = Splits::of(&problem(&[1; 64], &[2048; 64], 32, 8), 264, Variant::V2(Stages::Auto).granule());
        assert_eq!((s.items.len() / ITEM, s.items[5] - s.items[4]), (64, 2048));
        // One wave whenever it holds the plan: 1 × 65536 keys on 264 slots in 32 splits of 2048
        // keys (256 CTAs), not 98 of 672 (784 CTAs in three waves); B16 Hkv 16 S4096 on 396
        // slots one split a sequence (256 CTAs), not three (768 in two waves).
        let s = Splits::of(&problem(&[1], &[65536], 32, 8), 264, Variant::V2(Stages::Auto).granule());
        assert_eq!((s.items.len() / ITEM, s.items[5] - s.items[4]), (32, 2048));
        let s = Splits::of(&problem(&[1; 16], &[4096; 16], 16, 16), 396, Variant::V2(Stages::Auto).granule());
        assert_eq!((s.items.len() / ITEM, s.items[5] - s.items[4]), (16, 4096));
        // B8 S8192 on 264 slots: one wave of 4 splits a sequence (256 CTAs).
        let s = Splits::of(&problem(&[1; 8], &[8192; 8], 32, 8), 264, Variant::V2(Stages::Auto).granule());
        assert_eq!((s.items.len() / ITEM, s.items[5] - s.items[4]), (32, 2048));
        // 1 × 65536 keys: 49 splits (392 CTAs) of 1344 keys, the last shorter.
        let s = Splits::of(&problem(&[1], &[65536], 32, 8), 396, BLOCK);
        assert_eq!((s.items.len() / ITEM, s.items[5] - s.items[4]), (49, 1344));
        assert_eq!(s.items[s.items.len() - 3], 65536);
        // 49 splits of one sequence: fused where 49 · 128 bytes of statistics fit.
        let shared = Variant::V2(Stages::Auto).shared_bytes(128) as usize;
        assert!(fuse_combine(&s, 8, shared));
        assert!(!fuse_combine(&s, 8, 48 * FUSE_BYTES_PER_SPLIT), "49 splits' statistics past the shared memory");
        let s = Splits::of(&problem(&[1; 32], &[4096; 32], 32, 8), 396, BLOCK);
        assert!(fuse_combine(&s, 8, shared), "one split a sequence: fused");
        assert!(!fuse_combine(&s, COUNTERS, shared), "more items × kv heads than counters");
        // Every item names its sequence's first item and split count.
        for pair in s.seqs.chunks(2) {
            let its = s.items.chunks(ITEM).skip(pair[0] as usize).take(pair[1] as usize);
            assert!(its.into_iter().all(|it| it[6] == pair[0] && it[7] == pair[1]));
        }
    }
}
