//! PermuteOps on CUDA (`kernels/permute.cu`): a deterministic, stable dispatch with no host
//! sync in three kernels (shared-memory histogram per chunk of slots, one fused scan, then one
//! block per token that ranks its slots within their chunks and copies its row to them with
//! streaming stores), and the combine, one block per token, or per token and slice of the row
//! when the tokens are fewer than two per multiprocessor (decode). The MoE layer's index
//! ([`CudaBackend::permute_index`]), `align > 1` and `MOEKIT_CUDA_PERMUTE_COPY=tokcs|tok` keep
//! a separate scatter kernel (the chunk's running bases in shared memory) after the scan.
//!
//! `MOEKIT_CUDA_PERMUTE=legacy` forces the first version (global-atomic histogram, two scans,
//! row-major copy); E above 8192 takes its histogram, and `align > 1` its row-major copy (which
//! also writes the padding zeros).

use crate::backend::device_err;
use crate::launch::{blocks, cover, i32_of, kernel_name, launch_err};
use crate::runtime::sources::PERMUTE;
use crate::{CudaBackend, CudaBuffer};
use cudarc::driver::{CudaSlice, LaunchConfig, PushKernelArg};
use moekit_ops::{CombineIo, CombineProblem, PermuteIo, PermuteOps, PermuteProblem, Result, Validated};

/// A null device pointer for an absent optional argument.
const NULL: u64 = 0;
/// Consecutive `(t, j)` slots per chunk (`PERMUTE_CHUNK` in permute.cu; the scatter block size).
const CHUNK: usize = 256;

/// The widest word (16, 8, 4 or 2 bytes) that divides a row of `row_bytes`, and its kernel.
fn copy_word(row_bytes: usize) -> (usize, &'static str) {
    [(16, "permute_copy_w16"), (8, "permute_copy_w8"), (4, "permute_copy_w4")]
        .into_iter()
        .find(|(w, _)| row_bytes % w == 0)
        .unwrap_or((2, "permute_copy_w2"))
}

/// Threads for a loop over `n` items per block: a multiple of 32 from 32 to 256.
fn threads_for(n: usize) -> u32 {
    (n.div_ceil(32) * 32).clamp(32, 256) as u32
}

/// Slices of a row's `packs` for the combine over `tokens` tokens on `sms` multiprocessors: one
/// per token at prefill sizes; below two blocks per multiprocessor the row is cut into slices of
/// at least 32 packs so a decode step spreads over the GPU (one token of deepseek-v3's 7168
/// columns took 16 µs in one block; run 20).
fn combine_slices(tokens: usize, packs: usize, sms: usize) -> usize {
    let want = (2 * sms).div_ceil(tokens.max(1));
    want.clamp(1, packs.div_ceil(32).max(1))
}

/// Which dispatch kernels run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Path {
    /// Shared-memory histogram, one fused scan, token-major copy (where the problem allows).
    Fast,
    /// The first version: global-atomic histogram, two scans, row-major copy
    /// (`MOEKIT_CUDA_PERMUTE=legacy`).
    Legacy,
    /// As `Fast`, with the three index kernels as phases of one cooperative launch
    /// (`MOEKIT_CUDA_PERMUTE=coop`, up to [`COOP_MAX_EXPERTS`] experts).
    Coop,
}

fn path() -> Path {
    match std::env::var("MOEKIT_CUDA_PERMUTE").as_deref() {
        Ok("legacy") => Path::Legacy,
        Ok("coop") => Path::Coop,
        _ => Path::Fast,
    }
}

/// Most experts of the cooperative index kernel (2E + 1 i32 of dynamic shared memory, within
/// the 48 KiB a launch gets without opting in).
const COOP_MAX_EXPERTS: usize = 4096;

/// Blocks of the cooperative index kernel: enough for the larger of its chunk and expert loops,
/// at most what the device keeps resident at once (`resident` blocks), at least one.
fn coop_grid(chunks: usize, experts: usize, resident: usize) -> usize {
    chunks.max(experts).min(resident).max(1)
}

/// The token-major row copy's kernel (`MOEKIT_CUDA_PERMUTE_COPY`), one block per token:
/// `rank` (the default) runs in place of the scatter, each block finding its k slots' rows
/// itself, then copies with streaming stores (`permute_copy_rank_*`); `tokcs` (the default of
/// runs 20-23: permute 187.6 → 183.0 µs on qwen3, 177.1 → 175.7 on ernie) copies after the
/// scatter with streaming, evict-first stores, `tok` with plain stores. `rank` needs the fast
/// path (not `MOEKIT_CUDA_PERMUTE=coop`, whose kernel scatters itself) and k up to
/// [`RANK_MAX_K`]; elsewhere it copies as `tokcs`. A persistent two-token variant measured 4-6%
/// slower (run 20) and was dropped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum CopyVariant {
    Tok,
    TokCs,
    Rank,
}

impl CopyVariant {
    fn parse(v: &str) -> Option<Self> {
        match v {
            "tok" => Some(Self::Tok),
            "tokcs" => Some(Self::TokCs),
            "rank" => Some(Self::Rank),
            _ => None,
        }
    }

    /// The kernel name's prefix (`<prefix>_w16` and the other words).
    fn prefix(self) -> &'static str {
        match self {
            Self::Tok => "permute_copy_tok",
            Self::TokCs => "permute_copy_tokcs",
            Self::Rank => "permute_copy_rank",
        }
    }
}

fn copy_variant() -> CopyVariant {
    std::env::var("MOEKIT_CUDA_PERMUTE_COPY").ok().and_then(|v| CopyVariant::parse(&v)).unwrap_or(CopyVariant::Rank)
}

/// Most slots per token of `permute_copy_rank_*` (k i32 of dynamic shared memory, within the
/// 48 KiB a launch gets without opting in); a larger k takes the scatter and `tokcs`.
const RANK_MAX_K: usize = 4096;

/// Most experts of the shared-memory histogram (`E` i32 of dynamic shared memory).
const HIST_MAX_EXPERTS: usize = 8192;

impl CudaBackend {
    /// The index part of [`PermuteOps::permute`]: `offsets [E+1]`, `row_to_token [R]` (−1 on
    /// padding) and `token_slot_to_row [T, k]` from `ids [T, k]`, without touching any rows.
    ///
    /// # Errors
    /// [`moekit_ops::Error::Device`] when a launch fails.
    pub(crate) fn permute_index(
        &self,
        p: &PermuteProblem,
        ids: &CudaBuffer,
        offsets: &mut CudaBuffer,
        row_to_token: &mut CudaBuffer,
        token_slot_to_row: &mut CudaBuffer,
    ) -> Result<()> {
        const OP: &str = "permute";
        if path() == Path::Coop && p.experts <= COOP_MAX_EXPERTS {
            return self.permute_index_coop(p, ids, offsets, row_to_token, token_slot_to_row);
        }
        let mut cc = self.permute_index_counts(p, ids, offsets, row_to_token)?;
        let fast = path() != Path::Legacy;
        let slots = p.tokens * p.k;
        let chunks = slots.div_ceil(CHUNK);
        let (n, e, k, c) = (i32_of(slots), i32_of(p.experts), i32_of(p.k), i32_of(chunks));
        if slots > 0 {
            let flag = self.flag()?;
            // The shared-memory scatter keeps the chunk's running bases in E i32 of shared memory.
            let smem = fast && p.experts <= HIST_MAX_EXPERTS;
            let name = if smem { "permute_scatter_smem" } else { "permute_scatter" };
            let f = self.kernels.function(OP, &PERMUTE, name)?;
            let mut b = self.stream.launch_builder(&f);
            b.arg(&ids.data).arg(&mut cc).arg(&offsets.data);
            b.arg(&mut token_slot_to_row.data).arg(&mut row_to_token.data);
            b.arg(&n).arg(&e).arg(&k).arg(&c).arg(&flag.record);
            let mut cfg = blocks(chunks, CHUNK as u32);
            if smem {
                cfg.shared_mem_bytes = (p.experts * 4) as u32;
            }
            // SAFETY: arguments match `permute_scatter` / `permute_scatter_smem`; one block of
            // CHUNK threads per chunk, one slot each; ids outside 0..E are recorded and skipped,
            // and a valid slot's row is below offsets[E] <= R, so every write is in bounds; the
            // shared-memory kernel's bases are E i32 (E <= HIST_MAX_EXPERTS) indexed by valid ids.
            unsafe { b.launch(cfg) }.map_err(launch_err(OP))?;
        }
        Ok(())
    }

    /// The index up to the scatter (not the cooperative kernel): the histogram and the scans.
    /// Writes `offsets [E+1]` and `row_to_token [R] = −1`, and returns cc, `[E, chunks]` i32 of
    /// per-chunk exclusive prefixes (`cc[e·chunks + c]`: the slots of chunks before c that chose
    /// e) followed by the fused scan's arrival counter.
    fn permute_index_counts(
        &self,
        p: &PermuteProblem,
        ids: &CudaBuffer,
        offsets: &mut CudaBuffer,
        row_to_token: &mut CudaBuffer,
    ) -> Result<CudaSlice<i32>> {
        const OP: &str = "permute";
        let fast = path() != Path::Legacy;
        let (slots, rows) = (p.tokens * p.k, p.max_rows());
        let chunks = slots.div_ceil(CHUNK);
        let (n, r, e, c) = (i32_of(slots), i32_of(rows), i32_of(p.experts), i32_of(chunks));
        // Layout: cc [E, chunks] (slot counts, then their prefix, then running bases), then the
        // fused scan's arrival counter.
        // NOTE: a fresh temporary per call (stream-ordered); a workspace cache would save the
        // allocation.
        let cc_len = p.experts * chunks + 1;
        let mut cc = if fast && p.experts <= HIST_MAX_EXPERTS {
            // SAFETY: permute_hist writes every entry of cc before anything reads it.
            let mut cc = unsafe { self.stream.alloc::<i32>(cc_len) }.map_err(device_err(OP))?;
            let f = self.kernels.function(OP, &PERMUTE, "permute_hist")?;
            let mut b = self.stream.launch_builder(&f);
            b.arg(&ids.data).arg(&mut cc).arg(&mut row_to_token.data).arg(&n).arg(&r).arg(&e).arg(&c);
            let mut cfg = blocks(chunks, CHUNK as u32);
            cfg.shared_mem_bytes = (p.experts * 4) as u32;
            // SAFETY: arguments match `permute_hist`; block c counts slots [c·CHUNK, (c+1)·CHUNK)
            // below N into E i32 of shared memory (E <= HIST_MAX_EXPERTS) and writes column c of
            // cc (E × chunks i32) and, block 0, the counter after it; ids outside 0..E are
            // skipped; row_to_token (R i32) is filled grid-stride below R.
            unsafe { b.launch(cfg) }.map_err(launch_err(OP))?;
            cc
        } else {
            let mut cc = self.stream.alloc_zeros::<i32>(cc_len).map_err(device_err(OP))?;
            if slots.max(rows) > 0 {
                let f = self.kernels.function(OP, &PERMUTE, "permute_init")?;
                let mut b = self.stream.launch_builder(&f);
                b.arg(&ids.data).arg(&mut cc).arg(&mut row_to_token.data).arg(&n).arg(&r).arg(&e).arg(&c);
                // SAFETY: arguments match `permute_init`; one thread per index below max(N, R),
                // each bounds-checked; ids outside 0..E are skipped; cc holds E × chunks i32.
                unsafe { b.launch(cover(slots.max(rows), 256)) }.map_err(launch_err(OP))?;
            }
            cc
        };

        let align = i32_of(p.align);
        if fast {
            let f = self.kernels.function(OP, &PERMUTE, "permute_scan")?;
            let mut b = self.stream.launch_builder(&f);
            b.arg(&mut cc).arg(&mut offsets.data).arg(&c).arg(&e).arg(&align);
            // SAFETY: arguments match `permute_scan`; block e scans row e of cc (chunks i32) and
            // writes offsets[e + 1]; the last block to bump the counter (zeroed above, after the
            // E × chunks entries) scans offsets, which holds E + 1 i32.
            unsafe { b.launch(blocks(p.experts, 256)) }.map_err(launch_err(OP))?;
        } else {
            let f = self.kernels.function(OP, &PERMUTE, "permute_scan_chunks")?;
            let mut b = self.stream.launch_builder(&f);
            b.arg(&mut cc).arg(&mut offsets.data).arg(&c).arg(&align);
            // SAFETY: arguments match `permute_scan_chunks`; block e scans row e of cc (chunks
            // i32) and writes offsets[e + 1]; offsets holds E + 1 i32.
            unsafe { b.launch(blocks(p.experts, 256)) }.map_err(launch_err(OP))?;

            let f = self.kernels.function(OP, &PERMUTE, "permute_scan_offsets")?;
            let mut b = self.stream.launch_builder(&f);
            b.arg(&mut offsets.data).arg(&e);
            // SAFETY: arguments match `permute_scan_offsets`; one block scans offsets[1..=E].
            unsafe { b.launch(blocks(1, 1024)) }.map_err(launch_err(OP))?;
        }
        Ok(cc)
    }
}

impl CudaBackend {
    /// [`CudaBackend::permute_index`] in one cooperative launch (`permute_index_coop`): the
    /// histogram, the scans and the scatter as phases separated by grid barriers.
    fn permute_index_coop(
        &self,
        p: &PermuteProblem,
        ids: &CudaBuffer,
        offsets: &mut CudaBuffer,
        row_to_token: &mut CudaBuffer,
        token_slot_to_row: &mut CudaBuffer,
    ) -> Result<()> {
        const OP: &str = "permute";
        let (slots, rows) = (p.tokens * p.k, p.max_rows());
        let chunks = slots.div_ceil(CHUNK);
        let f = self.kernels.function(OP, &PERMUTE, "permute_index_coop")?;
        let shared = (2 * p.experts + 1) * 4;
        let per_sm = f
            .occupancy_max_active_blocks_per_multiprocessor(CHUNK as u32, shared, None)
            .map_err(device_err(OP))? as usize;
        let grid = coop_grid(chunks, p.experts, per_sm * self.sms);
        // SAFETY: the kernel writes every entry of cc (E × chunks counts, then E sizes) before
        // it reads any, with a grid barrier between.
        let mut cc = unsafe { self.stream.alloc::<i32>(p.experts * chunks + p.experts) }.map_err(device_err(OP))?;
        let mut bar = crate::backend::lock(&self.permute_bar, OP, "permute barrier")?;
        let flag = self.flag()?;
        let (n, r, e, k, c, a) =
            (i32_of(slots), i32_of(rows), i32_of(p.experts), i32_of(p.k), i32_of(chunks), i32_of(p.align));
        let mut b = self.stream.launch_builder(&f);
        b.arg(&ids.data).arg(&mut cc).arg(&mut offsets.data).arg(&mut token_slot_to_row.data);
        b.arg(&mut row_to_token.data).arg(&n).arg(&r).arg(&e).arg(&k).arg(&c).arg(&a);
        b.arg(&mut *bar).arg(&flag.record);
        let cfg = LaunchConfig {
            grid_dim: (grid as u32, 1, 1),
            block_dim: (CHUNK as u32, 1, 1),
            shared_mem_bytes: shared as u32,
        };
        // SAFETY: arguments match `permute_index_coop`; CHUNK threads per block (one slot each
        // in the scatter phase); a cooperative launch of at most the resident block count, so
        // the grid barriers cannot wait on a block that never runs (the driver refuses a larger
        // grid); ids outside 0..E are recorded and skipped; cc holds E × chunks + E i32, offsets
        // E + 1, row_to_token R and token_slot_to_row T × k; the shared memory holds 2E + 1 i32
        // (E <= COOP_MAX_EXPERTS); the barrier's two u32 start each call at zero arrivals.
        unsafe { b.launch_cooperative(cfg) }.map(drop).map_err(launch_err(OP))
    }
}

impl CudaBackend {
    /// [`PermuteOps::permute`] on the fast path with `align == 1` and `MOEKIT_CUDA_PERMUTE_COPY`
    /// `rank`: the histogram and the scans, then `permute_copy_rank_*` (one block per token
    /// ranks its k slots within their chunks, writes token_slot_to_row and row_to_token, and
    /// copies its row to its k rows) instead of the scatter and the copy.
    fn permute_rank(&self, p: &PermuteProblem, io: PermuteIo<'_, CudaBuffer>) -> Result<()> {
        const OP: &str = "permute";
        let cc = self.permute_index_counts(p, io.ids, io.offsets, io.row_to_token)?;
        if p.tokens == 0 {
            return Ok(());
        }
        let (slots, rows) = (p.tokens * p.k, p.max_rows());
        let chunks = slots.div_ceil(CHUNK);
        let row_bytes = p.hidden * p.dtype.size();
        let (word, name) = copy_word(row_bytes);
        let words = row_bytes / word;
        let kernel = name.replace("permute_copy_", &format!("{}_", CopyVariant::Rank.prefix()));
        let f = self.kernels.function(OP, &PERMUTE, &kernel)?;
        let (wi, k, e, c, r) = (i32_of(words), i32_of(p.k), i32_of(p.experts), i32_of(chunks), i32_of(rows));
        let flag = self.flag()?;
        let mut b = self.stream.launch_builder(&f);
        b.arg(&io.hidden.data).arg(&io.ids.data).arg(&cc).arg(&io.offsets.data);
        b.arg(&mut io.token_slot_to_row.data).arg(&mut io.row_to_token.data).arg(&mut io.permuted.data);
        b.arg(&wi).arg(&k).arg(&e).arg(&c).arg(&r).arg(&flag.record);
        let mut cfg = blocks(p.tokens, threads_for(words));
        // NOTE: rounded up to 16 bytes: the copy loop reads the rows as 16-byte vectors, the
        // last one past k when k is not a multiple of 4 (memcheck flagged it, run 24).
        cfg.shared_mem_bytes = (p.k.next_multiple_of(4) * 4) as u32;
        // SAFETY: arguments match `permute_copy_rank_*`; one block per token of T, a whole
        // number of warps (threads_for); block t reads ids[t·k .. t·k + k) and the ids of their
        // chunks below them (all below N = T × k); ids outside 0..E are recorded and their slots
        // get row -1; a valid slot's row offsets[e] + cc[e·chunks + c] + rank (cc from
        // permute_scan, E × chunks i32, indexed by a valid e and the slot's chunk c) is below
        // offsets[E] = R, so the token_slot_to_row (T × k i32) and row_to_token (R i32) writes are
        // in bounds; the k rows sit in k i32 of dynamic shared memory (k <= RANK_MAX_K); hidden
        // holds T and permuted R rows of `words` words (check_io), rows outside 0..R are
        // skipped, and allocations are 256-byte aligned with the word dividing a row, so every
        // access is word-aligned.
        unsafe { b.launch(cfg) }.map(drop).map_err(launch_err(OP))
    }
}

impl PermuteOps for CudaBackend {
    fn permute(&self, p: &Validated<PermuteProblem>, io: PermuteIo<'_, CudaBuffer>) -> Result<()> {
        const OP: &str = "permute";
        let variant = copy_variant();
        if path() == Path::Fast && p.align == 1 && variant == CopyVariant::Rank && p.k <= RANK_MAX_K {
            return self.permute_rank(p, io);
        }
        self.permute_index(p, io.ids, io.offsets, io.row_to_token, io.token_slot_to_row)?;
        let rows = p.max_rows();
        if rows == 0 {
            return Ok(());
        }
        let row_bytes = p.hidden * p.dtype.size();
        let (word, name) = copy_word(row_bytes);
        let words = row_bytes / word;
        let wi = i32_of(words);
        if path() != Path::Legacy && p.align == 1 {
            // Every row of R = T·k is some slot's: one block per token writes its k rows.
            if p.tokens == 0 {
                return Ok(());
            }
            let variant = if variant == CopyVariant::Rank { CopyVariant::TokCs } else { variant };
            let kernel = name.replace("permute_copy_", &format!("{}_", variant.prefix()));
            let f = self.kernels.function(OP, &PERMUTE, &kernel)?;
            let (k, r) = (i32_of(p.k), i32_of(rows));
            let mut b = self.stream.launch_builder(&f);
            b.arg(&io.hidden.data).arg(&io.token_slot_to_row.data).arg(&mut io.permuted.data);
            b.arg(&wi).arg(&k).arg(&r);
            // SAFETY: arguments match `permute_copy_tok_*` and `permute_copy_tokcs_*` (one
            // block per token of T); hidden holds T and
            // permuted R rows of `words` words (check_io), token_slot_to_row T × k i32 whose rows
            // outside 0..R are skipped; allocations are 256-byte aligned and the word divides a
            // row, so every access is word-aligned.
            return unsafe { b.launch(blocks(p.tokens, threads_for(words))) }.map(drop).map_err(launch_err(OP));
        }
        let f = self.kernels.function(OP, &PERMUTE, name)?;
        let mut b = self.stream.launch_builder(&f);
        b.arg(&io.hidden.data).arg(&io.row_to_token.data).arg(&mut io.permuted.data).arg(&wi);
        // SAFETY: arguments match `permute_copy_*`; one block per row of R; row_to_token is -1
        // or a token below T (written above); hidden holds T and permuted R rows of `words`
        // words, and device allocations are 256-byte aligned, so every row is word-aligned.
        unsafe { b.launch(blocks(rows, threads_for(words))) }.map(drop).map_err(launch_err(OP))
    }

    fn unpermute_combine(&self, p: &Validated<CombineProblem>, io: CombineIo<'_, CudaBuffer>) -> Result<()> {
        const OP: &str = "unpermute_combine";
        if p.tokens == 0 {
            return Ok(());
        }
        let lanes = 16 / p.dtype.size();
        let vec = p.hidden % lanes == 0;
        let packs = if vec { p.hidden / lanes } else { p.hidden };
        let slices = combine_slices(p.tokens, packs, self.sms);
        let family = if slices > 1 { "combine_sliced" } else { "combine" };
        let f = self.kernels.function(OP, &PERMUTE, &kernel_name(family, p.dtype))?;
        let (t, k, r, h, v) = (i32_of(p.tokens), i32_of(p.k), i32_of(p.rows), i32_of(p.hidden), i32::from(vec));
        let flag = self.flag()?;
        let mut b = self.stream.launch_builder(&f);
        b.arg(&io.y.data).arg(&io.weights.data).arg(&io.token_slot_to_row.data);
        match io.add {
            Some(a) => b.arg(&a.data),
            None => b.arg(&NULL),
        };
        b.arg(&mut io.out.data).arg(&t).arg(&k).arg(&r).arg(&h).arg(&v).arg(&flag.record);
        let cfg = LaunchConfig {
            grid_dim: (p.tokens as u32, slices as u32, 1),
            block_dim: (threads_for(packs.div_ceil(slices)), 1, 1),
            shared_mem_bytes: 0,
        };
        // SAFETY: arguments match `combine_impl` / `combine_sliced_impl`; one block per token
        // (and slice of the row's packs, each bounded by the pack count); rows outside 0..R are recorded
        // and skipped; y holds R × H, add and out T × H elements (check_io); the packed path runs
        // only when H is a multiple of the pack, so packs stay 16-byte aligned.
        unsafe { b.launch(cfg) }.map(drop).map_err(launch_err(OP))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copy_word_is_the_widest_that_divides_the_row() {
        assert_eq!(copy_word(4096).0, 16);
        assert_eq!(copy_word(24).0, 8);
        assert_eq!(copy_word(12).0, 4);
        assert_eq!(copy_word(6).0, 2);
    }

    #[test]
    fn copy_variants_parse_and_name_their_kernels() {
        assert_eq!(CopyVariant::parse("tok").map(CopyVariant::prefix), Some("permute_copy_tok"));
        assert_eq!(CopyVariant::parse("tokcs").map(CopyVariant::prefix), Some("permute_copy_tokcs"));
        assert_eq!(CopyVariant::parse("rank").map(CopyVariant::prefix), Some("permute_copy_rank"));
        for v in ["tok", "tokcs", "rank"] {
            let prefix = CopyVariant::parse(v).map(CopyVariant::prefix).unwrap_or_default();
            assert_eq!(copy_word(4096).1.replace("permute_copy_", &format!("{prefix}_")), format!("{prefix}_w16"));
        }
        assert_eq!(CopyVariant::parse("tok2"), None);
    }

    #[test]
    fn combine_slices_spread_decode_rows_and_leave_prefill_whole() {
        // deepseek-v3, one token: 896 packs in 28 slices of 32 packs.
        assert_eq!(combine_slices(1, 896, 132), 28);
        assert_eq!(combine_slices(8, 896, 132), 28);
        assert_eq!(combine_slices(32, 896, 132), 9);
        assert_eq!(combine_slices(264, 896, 132), 1);
        assert_eq!(combine_slices(16384, 256, 132), 1);
        // Rows shorter than a slice stay whole; no slice is ever empty.
        assert_eq!(combine_slices(1, 20, 132), 1);
        for (t, packs) in [(1, 33), (3, 100), (7, 65), (100, 4096)] {
            let s = combine_slices(t, packs, 132);
            assert!(s >= 1 && (s - 1) * packs.div_ceil(s) < packs, "t {t} packs {packs} slices {s}");
        }
    }

    #[test]
    fn coop_grid_covers_the_larger_loop_within_the_resident_blocks() {
        assert_eq!(coop_grid(512, 128, 1056), 512);
        assert_eq!(coop_grid(2048, 128, 1056), 1056);
        assert_eq!(coop_grid(1, 256, 1056), 256);
        assert_eq!(coop_grid(0, 0, 1056), 1);
        assert_eq!(coop_grid(10, 10, 0), 1);
    }

    #[test]
    fn threads_stay_within_one_to_eight_warps() {
        assert_eq!(threads_for(1), 32);
        assert_eq!(threads_for(33), 64);
        assert_eq!(threads_for(100_000), 256);
    }
}
