//! Split-KV decode attention on CUDA (`kernels/attention_decode.cu`): for batches whose sequences
//! have few query rows against long keys (every `Lq · G <= 16`, `G = Hq / Hkv`), one CTA per
//! (key split, kv head) runs the whole GQA group's query rows against the split's keys, so each
//! K/V byte is read once; a combine kernel merges the splits. Splits are sized so that the grid
//! is one full wave of the CTAs the SMs hold at once (whatever the batch): two waves, the second
//! a quarter full, cost 1.5× (run 27 call F).

use super::attention::{allow_shared, column_ranges, mask_args};
use crate::backend::device_err;
use crate::launch::{i32_of, kernel_name, launch_err};
use crate::runtime::sources::ATTENTION_DECODE;
use crate::{CudaBackend, CudaBuffer};
use cudarc::driver::{LaunchConfig, PushKernelArg};
use moekit_ops::{AttentionIo, AttentionProblem, DType, Result, Validated};

const OP: &str = "attention";
/// Query rows of a CTA (the group's rows of one sequence); matches `DEC_ROWS`.
const ROWS: usize = 16;
/// Keys per block; matches `DEC_BN`. Splits start on a multiple of it.
const BLOCK: usize = 64;
/// K/V stages; matches `DEC_STAGES`.
const STAGES: usize = 2;
/// Threads of the decode kernel; matches `DEC_THREADS`.
const THREADS: u32 = 128;
/// i32 fields of one work item: `q0, Lq, k0, Lk, ks0, ks1`.
const ITEM: usize = 6;
/// The shortest split: below it the combine's reads outweigh the parallelism.
const MIN_SPLIT: usize = 256;

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

/// The splits: work items `[n][6] = {q0, Lq, k0, Lk, ks0, ks1}`, a sequence's consecutive, and
/// per sequence with query rows `[s][2] = {first item, splits}`.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Splits {
    pub(super) items: Vec<i32>,
    pub(super) seqs: Vec<i32>,
}

impl Splits {
    /// Splits of the keys every sequence's rows may see (causal and window bounds; column
    /// ranges are masked in the kernel). With `slots` CTAs resident at once on the device, a
    /// CTA should take `keys · Hkv / slots` keys (at least 256); a sequence gets that many
    /// splits, rounded down (at least one), of equal length rounded up to 64 keys, so the grid
    /// is at most one wave but for sequences shorter than a split.
    pub(super) fn of(p: &AttentionProblem, slots: usize) -> Splits {
        let spans: Vec<(usize, usize)> = (0..p.batch())
            .map(|b| {
                let (lq, _) = p.seq_lens(b);
                if lq == 0 {
                    return (0, 0);
                }
                let (lo, _) = p.key_range(b, 0);
                let (_, hi) = p.key_range(b, lq - 1);
                (lo / BLOCK * BLOCK, hi.max(lo))
            })
            .collect();
        let keys: usize = spans.iter().map(|&(lo, hi)| hi - lo).sum();
        let per_cta = (keys * p.heads_kv).div_ceil(slots.max(1)).max(MIN_SPLIT);
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
            let split = (hi - lo).div_ceil(count).next_multiple_of(BLOCK).max(BLOCK);
            let starts: Vec<usize> = if hi > lo { (lo..hi).step_by(split).collect() } else { vec![lo] };
            for &ks0 in &starts {
                let ks1 = (ks0 + split).min(hi).max(ks0);
                items.extend([p.cu_seqlens_q[b], lq, p.cu_seqlens_k[b], lk, ks0, ks1].map(i32_of));
            }
            seqs.extend([first, starts.len()].map(i32_of));
        }
        Splits { items, seqs }
    }
}

/// Runs `p` on the decode kernels (see [`eligible`]).
pub(super) fn run(gpu: &CudaBackend, p: &Validated<AttentionProblem>, io: AttentionIo<'_, CudaBuffer>) -> Result<()> {
    let d = p.head_dim;
    let f = gpu.kernels.function(OP, &ATTENTION_DECODE, &kernel_name(&format!("attention_decode_d{d}"), p.dtype))?;
    let fc = gpu.kernels.function(
        OP,
        &ATTENTION_DECODE,
        &kernel_name(&format!("attention_decode_combine_d{d}"), p.dtype),
    )?;
    // Q [16][D + 8] and the stages of K and V [64][D + 8].
    let shared = ((ROWS + 2 * STAGES * BLOCK) * (d + 8) * 2) as u32;
    allow_shared(&f, shared)?;
    // CTAs resident per SM (H200: 3 at D 128, 5 at D 64).
    let per_sm =
        f.occupancy_max_active_blocks_per_multiprocessor(THREADS, shared as usize, None).map_err(device_err(OP))?;
    let splits = Splits::of(p, gpu.sms * (per_sm as usize).max(1));
    let (n, nseq) = (splits.items.len() / ITEM, splits.seqs.len() / 2);
    if n == 0 {
        return Ok(());
    }
    let items = gpu.stream.clone_htod(&splits.items).map_err(device_err(OP))?;
    let seqs = gpu.stream.clone_htod(&splits.seqs).map_err(device_err(OP))?;
    let ranges = column_ranges(gpu, p)?;
    let parts = n * p.heads_kv * ROWS;
    // SAFETY: the decode kernel writes every element of both (all 16 rows of every (item, kv
    // head)) before the combine reads them, in stream order.
    let mut part_o = unsafe { gpu.stream.alloc::<f32>(parts * d) }.map_err(device_err(OP))?;
    let mut part_ml = unsafe { gpu.stream.alloc::<f32>(parts * 2) }.map_err(device_err(OP))?;

    let (tq, tk, hq, hkv) = (i32_of(p.total_q()), i32_of(p.total_k()), i32_of(p.heads_q), i32_of(p.heads_kv));
    let (softcap, causal, wl, wr) = mask_args(p);
    let null = 0u64;

    let mut b = gpu.stream.launch_builder(&f);
    b.arg(&io.q.data).arg(&io.k.data).arg(&io.v.data).arg(&mut part_o).arg(&mut part_ml).arg(&items);
    match &ranges {
        Some(r) => b.arg(r),
        None => b.arg(&null),
    };
    b.arg(&tk).arg(&hq).arg(&hkv).arg(&p.scale).arg(&softcap).arg(&causal).arg(&wl).arg(&wr);
    let grid = u32::try_from(n * p.heads_kv).unwrap_or(u32::MAX);
    let cfg = LaunchConfig { grid_dim: (grid, 1, 1), block_dim: (THREADS, 1, 1), shared_mem_bytes: shared };
    // SAFETY: the arguments match `attention_decode_impl`; check_io proved q holds Tq × Hq × D,
    // k and v Tk × Hkv × D elements of the dtype; every item's rows (Lq · G <= 16) and keys
    // (ks0..ks1 within 0..Lk) are inside its sequence; part_o and part_ml hold n × Hkv × 16 × D
    // and × 2 f32; column ranges hold 4 × Tk i32; the shared size was raised above.
    unsafe { b.launch(cfg) }.map(drop).map_err(launch_err(OP))?;

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
        let s = Splits::of(&p, 528);
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
            assert_eq!(its[0][4] as usize, lo / BLOCK * BLOCK);
            assert_eq!(its[count - 1][5] as usize, hi);
            for w in its.windows(2) {
                assert_eq!(w[0][5], w[1][4]);
            }
            // Splits of at least 256 keys (the minimum) but for a sequence's last, under 2 · 256.
            assert!(its.iter().all(|it| it[4] % BLOCK as i32 == 0 && it[4] < it[5] && it[5] - it[4] < 512));
            assert!(its[..count - 1].iter().all(|it| it[5] - it[4] >= 256));
            assert!(its.iter().all(|it| it[0] == q0 && it[3] as usize == lk));
        }
        // At most one wave: 8 kv heads × the splits <= 528 slots.
        assert!(8 * s.items.len() / ITEM <= 528);
        // One wave: 8 × 8192 keys, 8 kv heads, 396 slots (3 CTAs on 132 SMs): 6 splits a
        // sequence (384 CTAs), not 7 (448: a second wave).
        let s = Splits::of(&problem(&[1; 8], &[8192; 8], 32, 8), 396);
        assert_eq!((s.items.len() / ITEM, s.items[5] - s.items[4]), (48, 1408));
        // 1 × 65536 keys: 49 splits (392 CTAs) of 1344 keys, the last shorter.
        let s = Splits::of(&problem(&[1], &[65536], 32, 8), 396);
        assert_eq!((s.items.len() / ITEM, s.items[5] - s.items[4]), (49, 1344));
        assert_eq!(s.items[s.items.len() - 1], 65536);
    }
}
