//! AttentionOps on CUDA: a FlashAttention-2 style forward over packed varlen batches
//! (`kernels/attention.cu`).
//!
//! The host turns `cu_seqlens` (host data, so no synchronisation) into a list of work items,
//! one per 64-query-row block of a sequence, heaviest first; one CTA runs per (item, query
//! head). f16/bf16 run on tensor cores (`attention_mma_d{D}_{dtype}`, sm_80+); f32 (and f16/bf16
//! on older GPUs) on the exact warp-per-row kernel (`attention_rows_d{D}_{dtype}`).

use crate::backend::device_err;
use crate::launch::{i32_of, kernel_name, launch_err};
use crate::runtime::sources::ATTENTION;
use crate::{CudaBackend, CudaBuffer};
use cudarc::driver::sys::CUfunction_attribute_enum;
use cudarc::driver::{CudaSlice, LaunchConfig, PushKernelArg};
use moekit_ops::{AttentionIo, AttentionOps, AttentionProblem, DType, Error, Result, Validated};

const OP: &str = "attention";
/// Query rows per work item (CTA); matches `ATT_BM` in the kernel.
const BLOCK_M: usize = 64;
/// Keys per block of the tensor-core kernel; matches `ATT_BN`.
const BLOCK_N: usize = 64;
/// Threads per CTA; matches `ATT_THREADS`.
const THREADS: u32 = 128;
/// i32 fields of one work item: `q0, Lq, k0, Lk, m0`.
const ITEM: usize = 5;
/// Dynamic shared memory a kernel gets without opting in.
const DEFAULT_SHARED: u32 = 48 * 1024;
/// A null device pointer for an absent optional argument.
const NULL: u64 = 0;
/// Window sides past this are no constraint for any i32 sequence; the clamp keeps the
/// kernel's i64 bound arithmetic far from overflow.
const WINDOW_CAP: usize = 1 << 40;

impl AttentionOps for CudaBackend {
    fn attention(&self, p: &Validated<AttentionProblem>, io: AttentionIo<'_, CudaBuffer>) -> Result<()> {
        let items = schedule(p);
        let n_items = items.len() / ITEM;
        if n_items == 0 {
            return Ok(());
        }
        let ctas = n_items * p.heads_q;
        if ctas > i32::MAX as usize {
            return Err(Error::unsupported(OP, format!("{ctas} blocks exceed the grid limit")));
        }
        let mma = p.dtype != DType::F32 && !matches!(self.arch(), "sm_70" | "sm_75");
        let base =
            if mma { format!("attention_mma_d{}", p.head_dim) } else { format!("attention_rows_d{}", p.head_dim) };
        let f = self.kernels.function(OP, &ATTENTION, &kernel_name(&base, p.dtype))?;
        let shared = if mma { ((BLOCK_M + 2 * BLOCK_N) * (p.head_dim + 8) * p.dtype.size()) as u32 } else { 0 };
        if shared > DEFAULT_SHARED {
            f.set_attribute(CUfunction_attribute_enum::CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES, shared as i32)
                .map_err(device_err(OP))?;
        }

        // NOTE: these small uploads are freed when they drop, right after the launch; cudarc
        // frees stream-ordered, after the kernel. A workspace cache would save the allocations.
        let items = self.stream.clone_htod(&items).map_err(device_err(OP))?;
        let ranges = column_ranges(self, p)?;
        let (tq, tk, hq, hkv) = (i32_of(p.total_q()), i32_of(p.total_k()), i32_of(p.heads_q), i32_of(p.heads_kv));
        let softcap = p.softcap.unwrap_or(0.0);
        let causal = i32::from(p.mask.causal);
        let clamp = |x: usize| x.min(WINDOW_CAP) as i64;
        let (wl, wr) = p.mask.window.map_or((-1i64, 0i64), |w| (clamp(w.left), clamp(w.right)));

        let mut b = self.stream.launch_builder(&f);
        b.arg(&io.q.data).arg(&io.k.data).arg(&io.v.data).arg(&mut io.o.data).arg(&mut io.lse.data);
        b.arg(&items);
        match &ranges {
            Some(r) => b.arg(r),
            None => b.arg(&NULL),
        };
        b.arg(&tq).arg(&tk).arg(&hq).arg(&hkv).arg(&p.scale).arg(&softcap).arg(&causal).arg(&wl).arg(&wr);
        let cfg = LaunchConfig { grid_dim: (ctas as u32, 1, 1), block_dim: (THREADS, 1, 1), shared_mem_bytes: shared };
        // SAFETY: the arguments match `attention_rows_impl` / `attention_mma_impl`; check_io proved
        // q, o hold Tq × Hq × D and k, v Tk × Hkv × D elements of the dtype and lse Hq × Tq f32;
        // every item row is inside its sequence (rows and keys past it are zero-filled or skipped),
        // column ranges hold 4 × Tk i32, and the shared size was raised above for this function.
        unsafe { b.launch(cfg) }.map(drop).map_err(launch_err(OP))
    }
}

/// Work items `[n][5] = {q0, Lq, k0, Lk, m0}` for every 64-row query block of every non-empty
/// sequence, heaviest (most key blocks) first so that the long causal rows do not trail.
fn schedule(p: &AttentionProblem) -> Vec<i32> {
    let mut items: Vec<(usize, [i32; ITEM])> = Vec::new();
    for b in 0..p.batch() {
        let (lq, lk) = p.seq_lens(b);
        for m0 in (0..lq).step_by(BLOCK_M) {
            let last = (m0 + BLOCK_M).min(lq) - 1;
            let (lo, _) = p.key_range(b, m0);
            let (_, hi) = p.key_range(b, last);
            let work = hi.saturating_sub(lo / BLOCK_N * BLOCK_N).div_ceil(BLOCK_N);
            let item = [p.cu_seqlens_q[b], lq, p.cu_seqlens_k[b], lk, m0].map(i32_of);
            items.push((work, item));
        }
    }
    items.sort_by_key(|it| std::cmp::Reverse(it.0));
    items.into_iter().flat_map(|(_, item)| item).collect()
}

/// The column ranges as one device array `[4][Tk]` (lts, lte, uts, ute), if the mask has them.
fn column_ranges(gpu: &CudaBackend, p: &AttentionProblem) -> Result<Option<CudaSlice<i32>>> {
    let Some(c) = &p.mask.column_ranges else { return Ok(None) };
    if p.total_k() == 0 {
        // NOTE: no keys means no non-empty sequence, hence no work item that would read them.
        return Ok(None);
    }
    let all: Vec<i32> = [&c.lts, &c.lte, &c.uts, &c.ute].into_iter().flatten().copied().collect();
    gpu.stream.clone_htod(&all).map(Some).map_err(device_err(OP))
}
