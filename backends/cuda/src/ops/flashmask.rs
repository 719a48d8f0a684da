//! The host's plan for FlashMask column ranges on the warp-specialised attention kernel
//! (`kernels/attention_sm90_ws.cu`): which query rows each CTA takes, which key tiles it runs,
//! and the tables the kernel reads. Built once per call over host data, O(Tq + Tk) plus the
//! key tiles of each block's span.
//!
//! - **Blocks of rows.** A sequence's query rows are cut into blocks of at most 128 rows, and
//!   also where a lower interval starts for 128 or more columns (a document ends: the rows past
//!   it see none of those keys). So a block does not straddle two documents and run the key
//!   tiles of both.
//! - **Key tiles on the block's own grid.** A block's tiles start at its origin, the first key
//!   some row of it may see (a document's first key), in steps of the kernel's tile (128 keys;
//!   64 at D 256). So the first tile of a document is not partly masked for every block of it.
//! - **Per tile**, the minima and maxima of the four range bounds over its columns: a tile whose
//!   ranges mask every row of the block is skipped (by the producer and by the consumers); one
//!   whose ranges mask no row of a consumer's 64 runs without the element mask.
//! - **Clear blocks.** A block whose ranges skip none of its tiles and mask none of its rows in
//!   any (inside one document, once causal is the flag) is marked so (`first` -1 in its table
//!   entry): the kernel runs it as a plain problem over its span, without reading any tile's
//!   stats (run 34 D: `docs` 9% → 1% over varlen at D 128).
//! - **Causal written as ranges** (every column's upper interval exactly the rows causal hides,
//!   FlashMask's `uts = 0, ute = j`) runs as the causal flag with those intervals emptied
//!   ([`causal_from_ranges`]): the same allowed pairs, but the diagonal tiles compare each row's
//!   key interval instead of staging and testing the column ranges.
//! - **Causal blocks.** Without the causal flag or a window, a block whose ranges hide, in each
//!   column of its span, exactly the rows of it that causal hides (the text around an image
//!   whose blocks see themselves whole: the rest of the sequence is causal) is marked so (`first`
//!   -2): the kernel runs it as a clear block with the causal flag, its diagonal tiles by the
//!   interval compares, and at D 64 on the banded kernel, which skips each consumer's tiles past
//!   its rows' diagonal.

use super::attention::work_item;
use crate::launch::i32_of;
use cudarc::driver::{CudaSlice, CudaStream, DriverError};
use moekit_ops::{AttentionProblem, ColumnRanges, Window};

/// Which of the plan's causal forms apply (both by default; the probe words `ranges-as-given`
/// and `no-causal-blocks` turn them off).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Forms {
    /// Causal upper intervals become the causal flag ([`causal_from_ranges`]).
    pub(crate) as_causal: bool,
    /// Blocks whose ranges are causal over their span run with the causal flag
    /// ([`Block::causal`]).
    pub(crate) causal_blocks: bool,
}

/// What a plan depends on: the lengths, causal, the window, the ranges, the block rows, the
/// key tile, and its causal forms.
#[derive(Debug)]
pub(crate) struct PlanKey {
    forms: Forms,
    cu_q: Vec<usize>,
    cu_k: Vec<usize>,
    causal: bool,
    window: Option<Window>,
    ranges: ColumnRanges,
    block_m: usize,
    tile: usize,
}

impl PlanKey {
    fn of(p: &AttentionProblem, block_m: usize, tile: usize, forms: Forms) -> Option<PlanKey> {
        Some(PlanKey {
            forms,
            cu_q: p.cu_seqlens_q.clone(),
            cu_k: p.cu_seqlens_k.clone(),
            causal: p.mask.causal,
            window: p.mask.window,
            ranges: p.mask.column_ranges.clone()?,
            block_m,
            tile,
        })
    }

    /// Whether `p` in blocks of `block_m` rows and key tiles of `tile` (and `forms` as in
    /// [`PlanCache::new`]) has this plan (compared, not cloned: O(Tk)).
    pub(crate) fn matches(&self, p: &AttentionProblem, block_m: usize, tile: usize, forms: Forms) -> bool {
        self.forms == forms
            && self.block_m == block_m
            && self.tile == tile
            && self.causal == p.mask.causal
            && self.window == p.mask.window
            && self.cu_q == p.cu_seqlens_q
            && self.cu_k == p.cu_seqlens_k
            && p.mask.column_ranges.as_ref() == Some(&self.ranges)
    }
}

/// The device copies of a plan's work items and tables, kept by the backend for the next call
/// with the same [`PlanKey`] (the buffers are only read; a replaced entry is freed in stream
/// order, after the kernels that read it).
pub(crate) struct PlanCache {
    pub(crate) key: PlanKey,
    pub(crate) items: CudaSlice<i32>,
    pub(crate) tables: CudaSlice<i32>,
    pub(crate) n_items: usize,
    /// The causal flag the kernel takes: the problem's, or set by [`causal_from_ranges`].
    pub(crate) causal: bool,
    /// Some block runs with the causal flag ([`Block::causal`]).
    pub(crate) causal_blocks: bool,
}

impl PlanCache {
    /// The plan of `p` (blocks of `block_m` rows, key tiles of `tile`) uploaded on `stream`;
    /// `None` without column ranges or work items. With `forms.as_causal`, of
    /// [`causal_from_ranges`]`(p)` where that applies.
    pub(crate) fn new(
        stream: &std::sync::Arc<CudaStream>,
        p: &AttentionProblem,
        block_m: usize,
        tile: usize,
        forms: Forms,
    ) -> Result<Option<PlanCache>, DriverError> {
        let Some(key) = PlanKey::of(p, block_m, tile, forms) else { return Ok(None) };
        let causal_form = if forms.as_causal { causal_from_ranges(p) } else { None };
        let p = causal_form.as_ref().unwrap_or(p);
        let Some(plan) = Plan::of(p, block_m, tile, forms.causal_blocks) else { return Ok(None) };
        if plan.blocks.is_empty() {
            return Ok(None);
        }
        let items = stream.clone_htod(&plan.items(p))?;
        let tables = stream.clone_htod(&plan.tables(p))?;
        let causal_blocks = plan.blocks.iter().any(|blk| blk.causal);
        Ok(Some(PlanCache { key, items, tables, n_items: plan.blocks.len(), causal: p.mask.causal, causal_blocks }))
    }
}

/// `p` as a causal problem, when the upper interval of every column of every sequence holds
/// exactly the rows causal hides from it: rows `uts..ute` and rows `0..j - (Lk - Lq)` of column
/// `j`, both clipped to `0..Lq`, are the same (FlashMask's causal form `uts = 0, ute = j`). The
/// problem then takes the causal flag, and its upper intervals are emptied: the same allowed
/// pairs, with the diagonal tiles left to the kernel's interval compares and the tiles no lower
/// interval cuts run without the element mask (run 34: the `docs` and `ranges` masks of the
/// bench). `None` without ranges or when some upper interval is anything else. O(Tk).
pub(super) fn causal_from_ranges(p: &AttentionProblem) -> Option<AttentionProblem> {
    let c = p.mask.column_ranges.as_ref()?;
    for b in 0..p.batch() {
        let (lq, lk) = p.seq_lens(b);
        let (k0, shift) = (p.cu_seqlens_k[b], lk as i64 - lq as i64);
        let clip = |x: i64| x.clamp(0, lq as i64);
        for j in 0..lk {
            let (u0, u1) = (clip(i64::from(c.uts[k0 + j])), clip(i64::from(c.ute[k0 + j])));
            let hidden = clip(j as i64 - shift);
            let same = if u0 < u1 { u0 == 0 && u1 == hidden } else { hidden == 0 };
            if !same {
                return None;
            }
        }
    }
    let mut q = p.clone();
    q.mask.causal = true;
    let r = q.mask.column_ranges.as_mut()?;
    r.uts.fill(0);
    r.ute.fill(0);
    Some(q)
}

/// Minima then maxima of (lts, lte, uts, ute) over some columns.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Stats(pub(super) [i32; 8]);

impl Stats {
    const EMPTY: Stats = Stats([i32::MAX, i32::MAX, i32::MAX, i32::MAX, i32::MIN, i32::MIN, i32::MIN, i32::MIN]);

    fn add(&mut self, c: [i32; 4]) {
        for (f, v) in c.into_iter().enumerate() {
            self.0[f] = self.0[f].min(v);
            self.0[4 + f] = self.0[4 + f].max(v);
        }
    }

    /// Whether the ranges mask every column for every row `r0..=r1`: all the lower intervals
    /// hold those rows, or all the upper ones do (the kernel's `aws_fm_all`).
    pub(super) fn skips(&self, r0: usize, r1: usize) -> bool {
        let (r0, r1) = (r0 as i64, r1 as i64);
        let [_, mn_lte, _, mn_ute, mx_lts, _, mx_uts, _] = self.0.map(i64::from);
        (mx_lts <= r0 && r1 < mn_lte) || (mx_uts <= r0 && r1 < mn_ute)
    }

    /// Whether they mask no row `r0..=r1` of any column: in every column each interval starts
    /// past `r1` or ends by `r0` (the kernel's `aws_fm_none`).
    pub(super) fn clear(&self, r0: usize, r1: usize) -> bool {
        let (r0, r1) = (r0 as i64, r1 as i64);
        let [mn_lts, _, mn_uts, _, _, mx_lte, _, mx_ute] = self.0.map(i64::from);
        (r1 < mn_lts || r0 >= mx_lte) && (r1 < mn_uts || r0 >= mx_ute)
    }
}

/// One CTA's work: rows `m0..m1` of sequence `b`, key tiles `n0, n0 + tile, ..` below `n1`
/// (local keys; none when `n0 == n1`), whose stats start at `stats[first]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Block {
    pub(super) b: usize,
    pub(super) m0: usize,
    pub(super) m1: usize,
    pub(super) n0: usize,
    pub(super) n1: usize,
    pub(super) first: usize,
    /// Key tiles it runs (not skipped).
    pub(super) tiles: usize,
    /// Its ranges skip none of the tiles in `n0..n1` and mask no row of it in any: the kernel
    /// runs it without reading the stats (the table's `first` is -1).
    pub(super) clear: bool,
    /// Its ranges hide, in each column of `n0..n1`, exactly the rows of it that causal hides
    /// (bottom-right aligned), in a problem without the causal flag or a window: the kernel runs
    /// it as a clear block with the causal flag (the table's `first` is -2).
    pub(super) causal: bool,
}

impl Block {
    /// Its table entry's first word: -1 clear, -2 causal, else its first stat.
    fn table_first(&self) -> i32 {
        match (self.clear, self.causal) {
            (true, _) => -1,
            (_, true) => -2,
            _ => i32_of(self.first),
        }
    }
}

/// The blocks of a problem with column ranges, heaviest first, and the stats of their tiles.
#[derive(Debug)]
pub(super) struct Plan {
    pub(super) blocks: Vec<Block>,
    pub(super) stats: Vec<Stats>,
    /// Keys per tile: the kernel's `aws::BN_OF<D>`.
    pub(super) tile: usize,
}

impl Plan {
    /// The plan of `p` in blocks of at most `block_m` rows and key tiles of `tile`, if it has
    /// column ranges; with `causal_blocks`, marking the [`Block::causal`] ones.
    pub(super) fn of(p: &AttentionProblem, block_m: usize, tile: usize, causal_blocks: bool) -> Option<Plan> {
        let c = p.mask.column_ranges.as_ref()?;
        let mut plan = Plan { blocks: Vec::new(), stats: Vec::new(), tile: tile.max(1) };
        let causal_blocks = causal_blocks && !p.mask.causal && p.mask.window.is_none();
        for b in 0..p.batch() {
            plan.add_sequence(p, c, b, block_m, causal_blocks);
        }
        plan.blocks.sort_by_key(|blk| std::cmp::Reverse(blk.tiles));
        Some(plan)
    }

    fn add_sequence(&mut self, p: &AttentionProblem, c: &ColumnRanges, b: usize, block_m: usize, causal_blocks: bool) {
        let (lq, lk) = p.seq_lens(b);
        let (k0, tile) = (p.cu_seqlens_k[b], self.tile);
        let col = |j: usize| [c.lts[k0 + j], c.lte[k0 + j], c.uts[k0 + j], c.ute[k0 + j]];
        // The stats of local columns j0..j1 (cut at the sequence's end).
        let stats_of = |j0: usize, j1: usize| {
            let mut s = Stats::EMPTY;
            (j0..j1.min(lk)).for_each(|j| s.add(col(j)));
            s
        };
        // Stats of the tile-aligned tiles, to find each block's origin without a scan of every
        // key before it.
        let aligned: Vec<Stats> = (0..lk).step_by(tile).map(|t0| stats_of(t0, t0 + tile)).collect();

        // Rows where a lower interval starts for a tile's worth of columns or more.
        let mut starts = vec![0usize; lq + 1];
        for j in 0..lk {
            let [lts, lte, _, _] = col(j);
            if lts < lte && (lts as usize) < lq {
                starts[lts as usize] += 1;
            }
        }
        let cuts = (1..lq).filter(|&r| starts[r] >= tile);
        // Whether the ranges hide, in each column of n0..n1, exactly the rows of m0..m1 that
        // causal hides (rows before the column's diagonal): the intervals' parts inside the
        // block, joined, are the block's rows up to the diagonal.
        let shift = lk as i64 - lq as i64;
        let causal_over = |m0: usize, m1: usize, n0: usize, n1: usize| {
            let (m0, m1) = (m0 as i64, m1 as i64);
            (n0..n1.min(lk)).all(|j| {
                let h = (j as i64 - shift).clamp(m0, m1);
                let [lts, lte, uts, ute] = col(j).map(i64::from);
                let mut parts = [(lts.max(m0), lte.min(m1)), (uts.max(m0), ute.min(m1))];
                parts.sort_unstable();
                let mut end = m0;
                for (a, z) in parts.into_iter().filter(|&(a, z)| a < z) {
                    if a > end {
                        return false;
                    }
                    end = end.max(z);
                }
                end == h
            })
        };

        // Blocks: (m0, m1, origin, hi).
        let mut rows = Vec::new();
        let mut m0 = 0;
        let mut cuts = cuts.peekable();
        while m0 < lq {
            while cuts.peek().is_some_and(|&r| r <= m0) {
                cuts.next();
            }
            let m1 = (m0 + block_m).min(lq).min(cuts.peek().copied().unwrap_or(lq));
            let (r0, r1) = (m0, m1 - 1);
            let (lo, _) = p.key_range(b, r0);
            let (_, mut hi) = p.key_range(b, r1);
            // The first key some row may see: past the aligned tiles the ranges mask wholly,
            // then past the columns that mask every row; and the end, before the aligned tiles
            // they mask wholly at the end.
            let mut j = lo;
            while j < hi && aligned[j / tile].skips(r0, r1) {
                j = (j / tile + 1) * tile;
            }
            while j < hi && stats_of(j, j + 1).skips(r0, r1) {
                j += 1;
            }
            while hi > j && aligned[(hi - 1) / tile].skips(r0, r1) {
                hi = (hi - 1) / tile * tile;
            }
            let origin = j.min(hi);
            rows.push((m0, m1, origin, if j < hi { hi } else { origin }));
            m0 = m1;
        }

        // The tiles of every origin's grid, as far as its blocks reach.
        let mut grids: Vec<(usize, usize, usize)> = Vec::new(); // (origin, first stat, end)
        for &(_, _, origin, hi) in &rows {
            match grids.iter_mut().find(|g| g.0 == origin) {
                Some(g) => g.2 = g.2.max(hi),
                None => grids.push((origin, 0, hi)),
            }
        }
        for g in &mut grids {
            g.1 = self.stats.len();
            self.stats.extend((g.0..g.2).step_by(tile).map(|t0| stats_of(t0, t0 + tile)));
        }
        for (m0, m1, origin, hi) in rows {
            let g = grids.iter().find(|g| g.0 == origin).copied().unwrap_or((origin, 0, origin));
            let run: Vec<usize> = (origin..hi)
                .step_by(tile)
                .filter(|&n| !self.stats[g.1 + (n - origin) / tile].skips(m0, m1 - 1))
                .collect();
            let (n0, n1) = match (run.first(), run.last()) {
                (Some(&a), Some(&z)) => (a, z + tile),
                _ => (origin, origin),
            };
            let first = g.1 + (n0 - origin) / tile;
            let clear =
                run.len() == (n1 - n0) / tile && (0..run.len()).all(|k| self.stats[first + k].clear(m0, m1 - 1));
            let causal = causal_blocks && !clear && causal_over(m0, m1, n0, n1);
            self.blocks.push(Block { b, m0, m1, n0, n1, first, tiles: run.len(), clear, causal });
        }
    }

    /// The kernel's work items `[n][5] = {q0, Lq, k0, Lk, m0}`, in the blocks' order.
    pub(super) fn items(&self, p: &AttentionProblem) -> Vec<i32> {
        self.blocks.iter().flat_map(|blk| work_item(p, blk.b, blk.m0)).collect()
    }

    /// The kernel's tables (`fm` in `kernels/attention_sm90_ws.cu`), i32, all 16-byte aligned:
    /// `[n][4]` per block (first stat, or -1 for a [`Block::clear`] one, -2 for a
    /// [`Block::causal`] one; n0, n1, m1), `[Tk][4]` (lts, lte, uts, ute) per column, then
    /// `[stats][8]`.
    pub(super) fn tables(&self, p: &AttentionProblem) -> Vec<i32> {
        let Some(c) = &p.mask.column_ranges else { return Vec::new() };
        let tk = p.total_k();
        let mut out = Vec::with_capacity(4 * self.blocks.len() + 4 * tk + 8 * self.stats.len());
        out.extend(self.blocks.iter().flat_map(|blk| {
            let first = blk.table_first();
            [first, i32_of(blk.n0), i32_of(blk.n1), i32_of(blk.m1)]
        }));
        out.extend((0..tk).flat_map(|j| [c.lts[j], c.lte[j], c.uts[j], c.ute[j]]));
        out.extend(self.stats.iter().flat_map(|s| s.0));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use moekit_ops::{AttentionMask, DType};
    use moekit_testing::gen::{self, MaskPattern};

    fn problem(lens: &[usize], causal: bool, window: Option<Window>, ranges: ColumnRanges) -> AttentionProblem {
        let cu = gen::cumsum(lens);
        AttentionProblem {
            cu_seqlens_q: cu.clone(),
            cu_seqlens_k: cu,
            heads_q: 4,
            heads_kv: 2,
            head_dim: 128,
            scale: 0.1,
            softcap: None,
            mask: AttentionMask { causal, window, column_ranges: Some(ranges) },
            dtype: DType::BF16,
        }
    }

    /// Documents (causal inside, nothing across) as column ranges, ending at `ends` per sequence.
    fn documents(lens: &[usize], ends: &[&[usize]]) -> ColumnRanges {
        let mut c = ColumnRanges { lts: vec![], lte: vec![], uts: vec![], ute: vec![] };
        for (b, &l) in lens.iter().enumerate() {
            for j in 0..l {
                let end = ends[b].iter().copied().find(|&e| j < e).unwrap_or(l);
                c.lts.push(end as i32);
                c.lte.push(l as i32);
                c.uts.push(0);
                c.ute.push(j as i32);
            }
        }
        c
    }

    /// Checks a plan against the mask pair by pair: the blocks cover every row once, every
    /// allowed pair lies in a tile its block runs, a skipped tile has no allowed pair, a clear
    /// one no pair the ranges mask; and the tables hold what the kernel reads. Returns the
    /// counts of (run, skipped inside spans, clear for a 64-row half) tiles.
    fn check(p: &AttentionProblem, tile: usize) -> (usize, usize, usize) {
        let plan = Plan::of(p, 128, tile, true).unwrap();
        let c = p.mask.column_ranges.as_ref().unwrap();
        let ranged = |b: usize, i: usize, j: usize| {
            let (col, r) = (p.cu_seqlens_k[b] + j, i as i32);
            (c.lts[col] <= r && r < c.lte[col]) || (c.uts[col] <= r && r < c.ute[col])
        };
        // Heaviest first.
        assert!(plan.blocks.windows(2).all(|w| w[0].tiles >= w[1].tiles));
        let mut sorted = plan.blocks.clone();
        sorted.sort_by_key(|blk| (blk.b, blk.m0));
        for b in 0..p.batch() {
            let rows: Vec<(usize, usize)> = sorted.iter().filter(|x| x.b == b).map(|x| (x.m0, x.m1)).collect();
            let (lq, _) = p.seq_lens(b);
            assert_eq!(rows.first().map_or(0, |r| r.0), 0);
            assert_eq!(rows.last().map_or(0, |r| r.1), lq);
            assert!(rows.windows(2).all(|w| w[0].1 == w[1].0));
            assert!(rows.iter().all(|&(m0, m1)| m0 < m1 && m1 - m0 <= 128));
        }
        let (mut run, mut skipped, mut clear) = (0, 0, 0);
        for blk in &plan.blocks {
            let (_, lk) = p.seq_lens(blk.b);
            let rows = blk.m0..blk.m1;
            assert!(blk.n0 <= blk.n1 && (blk.n1 - blk.n0) % tile == 0, "{blk:?}");
            let tiles: Vec<usize> = (blk.n0..blk.n1).step_by(tile).collect();
            for (k, &n) in tiles.iter().enumerate() {
                let st = plan.stats[blk.first + k];
                let keys = n..(n + tile).min(lk);
                let pairs = || rows.clone().flat_map(|r| keys.clone().map(move |j| (r, j)));
                let allowed = pairs().filter(|&(r, j)| p.allowed(blk.b, r, j)).count();
                if st.skips(blk.m0, blk.m1 - 1) {
                    assert_eq!(allowed, 0, "{blk:?} tile {n}: skipped with allowed pairs");
                    skipped += 1;
                } else {
                    run += 1;
                }
                for half in [blk.m0..(blk.m0 + 64).min(blk.m1), (blk.m0 + 64)..blk.m1] {
                    if !half.is_empty() && st.clear(half.start, half.end - 1) {
                        let hidden = half.clone().flat_map(|r| keys.clone().map(move |j| (r, j)));
                        assert_eq!(hidden.filter(|&(r, j)| ranged(blk.b, r, j)).count(), 0, "{blk:?} tile {n}");
                        clear += 1;
                    }
                }
            }
            assert_eq!(
                blk.tiles,
                tiles.iter().enumerate().filter(|(k, _)| !plan.stats[blk.first + k].skips(blk.m0, blk.m1 - 1)).count()
            );
            // A causal block: in each column of its span the ranges hide exactly the rows causal
            // hides (never with the causal flag or a window, never a clear one).
            if blk.causal {
                assert!(!p.mask.causal && p.mask.window.is_none() && !blk.clear, "{blk:?}");
                let (lq, _) = p.seq_lens(blk.b);
                let shift = lk as i64 - lq as i64;
                for r in rows.clone() {
                    for j in blk.n0..blk.n1.min(lk) {
                        assert_eq!(ranged(blk.b, r, j), (r as i64) < j as i64 - shift, "{blk:?} row {r} key {j}");
                    }
                }
            }
            // A clear block: every tile of its span run, none with a pair the ranges mask.
            if blk.clear {
                assert_eq!(blk.tiles, tiles.len(), "{blk:?}");
                let hidden = rows.clone().flat_map(|r| (blk.n0..blk.n1.min(lk)).map(move |j| (r, j)));
                assert_eq!(hidden.filter(|&(r, j)| ranged(blk.b, r, j)).count(), 0, "{blk:?}");
            }
            // Every allowed pair of the block's rows lies in a tile it runs.
            for r in rows.clone() {
                for j in 0..lk {
                    if p.allowed(blk.b, r, j) {
                        assert!(j >= blk.n0 && j < blk.n1, "{blk:?}: row {r} key {j} outside the span");
                        let k = (j - blk.n0) / tile;
                        assert!(
                            !plan.stats[blk.first + k].skips(blk.m0, blk.m1 - 1),
                            "{blk:?}: row {r} key {j} skipped"
                        );
                    }
                }
            }
        }
        // The tables: the blocks' spans, the columns, the stats.
        let t = plan.tables(p);
        let (nb, tk) = (plan.blocks.len(), p.total_k());
        assert_eq!(t.len(), 4 * nb + 4 * tk + 8 * plan.stats.len());
        for (i, blk) in plan.blocks.iter().enumerate() {
            let first = if blk.clear {
                -1
            } else if blk.causal {
                -2
            } else {
                blk.first as i32
            };
            assert_eq!(t[4 * i..4 * i + 4], [first, blk.n0 as i32, blk.n1 as i32, blk.m1 as i32]);
        }
        assert_eq!(t[4 * nb..4 * nb + 4], [c.lts[0], c.lte[0], c.uts[0], c.ute[0]]);
        assert_eq!(t[4 * nb + 4 * tk..4 * nb + 4 * tk + 8], plan.stats[0].0);
        let items = plan.items(p);
        assert_eq!(items.len(), 5 * nb);
        for (it, blk) in items.chunks(5).zip(&plan.blocks) {
            assert_eq!(it[4] as usize, blk.m0);
            assert_eq!(it[0] as usize, p.cu_seqlens_q[blk.b]);
        }
        (run, skipped, clear)
    }

    #[test]
    fn documents_get_blocks_and_tiles_of_their_own() {
        let lens = [1300, 1000];
        let ends: [&[usize]; 2] = [&[500, 900, 1300], &[700, 1000]];
        let p = problem(&lens, false, None, documents(&lens, &ends));
        p.validate().unwrap();
        let (run, _, clear) = check(&p, 128);
        let plan = Plan::of(&p, 128, 128, true).unwrap();
        // Blocks end at the documents' ends, and their tiles start at their document's start.
        for blk in &plan.blocks {
            let docs = ends[blk.b];
            let start = |r: usize| docs.iter().copied().filter(|&e| e <= r).max().unwrap_or(0);
            assert_eq!(start(blk.m0), start(blk.m1 - 1), "{blk:?} straddles a document end");
            assert_eq!(blk.n0, start(blk.m0), "{blk:?}");
        }
        // The same documents as varlen sequences run 1 + 2 + 3 + 4 (500), 1 + 2 + 3 + 4 (400),
        // 1 + 2 + 3 + 4 (400), and 1 + .. + 6 (700), 1 + 2 + 3 (300) tiles; the plan runs no more.
        assert_eq!(run, 10 + 10 + 10 + 21 + 6, "tiles run");
        assert!(clear > 0);
        // In tiles of 64 keys (D 256) the same blocks run at most twice as many tiles, and fewer
        // keys: the diagonal tiles are cut finer.
        let (run64, _, _) = check(&p, 64);
        assert!(run64 > run && run64 < 2 * run, "{run64} tiles of 64");
    }

    #[test]
    fn text_around_an_image_runs_as_causal_blocks() {
        // 1200 tokens: text, an image [300, 700) that sees itself whole, text (the bench's image
        // mask in one scale): column j hides rows 0..j, or 0..300 inside the image.
        let s = 1200;
        let ute: Vec<i32> = (0..s as i32).map(|j| if (300..700).contains(&j) { 300 } else { j }).collect();
        let ranges = ColumnRanges { lts: vec![s as i32; s], lte: vec![s as i32; s], uts: vec![0; s], ute };
        let p = problem(&[s], false, None, ranges);
        p.validate().unwrap();
        check(&p, 128);
        let causal_rows = |plan: &Plan| {
            let mut r: Vec<usize> = plan.blocks.iter().filter(|b| b.causal).map(|b| b.m0).collect();
            r.sort();
            r
        };
        // Blocks of text rows only, before the image or past it: causal. Those holding image
        // rows see keys past their diagonal (the image's own; 256.., 640..) and keep the ranges.
        let plan = Plan::of(&p, 128, 128, true).unwrap();
        assert_eq!(causal_rows(&plan), [0, 128, 768, 896, 1024, 1152]);
        assert!(plan.tables(&p).chunks(4).take(plan.blocks.len()).filter(|e| e[0] == -2).count() == 6);
        assert!(causal_rows(&Plan::of(&p, 128, 128, false).unwrap()).is_empty());
        // Not with the causal flag (already causal) or a window.
        let mut q = p.clone();
        q.mask.window = Some(Window { left: 5000, right: 5000 });
        assert!(causal_rows(&Plan::of(&q, 128, 128, true).unwrap()).is_empty());
        // Bottom-right aligned: 100 more keys than queries shift every diagonal.
        let (lq, lk) = (1100, 1200);
        let ute: Vec<i32> = (0..lk as i32).map(|j| (j - 100).max(0)).collect();
        let ranges = ColumnRanges { lts: vec![lq; lk], lte: vec![lq; lk], uts: vec![0; lk], ute };
        let mut r = problem(&[lq as usize], false, None, ranges);
        r.cu_seqlens_k = vec![0, lk];
        r.validate().unwrap();
        check(&r, 128);
        assert_eq!(Plan::of(&r, 128, 128, true).unwrap().blocks.iter().filter(|b| b.causal).count(), 9);
    }

    #[test]
    fn a_plan_key_matches_only_the_same_mask_and_lengths() {
        const ALL: Forms = Forms { as_causal: true, causal_blocks: true };
        let lens = [1300, 1000];
        let ends: [&[usize]; 2] = [&[500, 900, 1300], &[700, 1000]];
        let p = problem(&lens, false, None, documents(&lens, &ends));
        let key = PlanKey::of(&p, 128, 128, ALL).unwrap();
        assert!(key.matches(&p, 128, 128, ALL));
        assert!(!key.matches(&p, 128, 128, Forms { as_causal: false, ..ALL }));
        assert!(!key.matches(&p, 128, 128, Forms { causal_blocks: false, ..ALL }));
        assert!(!key.matches(&p, 64, 128, ALL));
        assert!(!key.matches(&p, 128, 64, ALL));
        let mut q = p.clone();
        q.mask.column_ranges.as_mut().unwrap().lts[1777] -= 1;
        assert!(!key.matches(&q, 128, 128, ALL));
        let mut q = p.clone();
        q.mask.causal = true;
        assert!(!key.matches(&q, 128, 128, ALL));
        let mut q = p.clone();
        q.mask.window = Some(Window { left: 5, right: 0 });
        assert!(!key.matches(&q, 128, 128, ALL));
        let mut q = p.clone();
        q.cu_seqlens_q = vec![0, 1299, 2300];
        assert!(!key.matches(&q, 128, 128, ALL));
        q.mask.column_ranges = None;
        assert!(PlanKey::of(&q, 128, 128, ALL).is_none() && !key.matches(&q, 128, 128, ALL));
    }

    /// Every (row, key) pair of every sequence is allowed in `a` iff it is in `b`.
    fn same_pairs(a: &AttentionProblem, b: &AttentionProblem) -> bool {
        (0..a.batch()).all(|s| {
            let (lq, lk) = a.seq_lens(s);
            (0..lq).all(|i| (0..lk).all(|j| a.allowed(s, i, j) == b.allowed(s, i, j)))
        })
    }

    #[test]
    fn causal_upper_intervals_become_the_causal_flag() {
        let lens = [300, 170, 1];
        let ends: [&[usize]; 3] = [&[100, 260, 300], &[170], &[1]];
        let p = problem(&lens, false, None, documents(&lens, &ends));
        p.validate().unwrap();
        let q = causal_from_ranges(&p).expect("documents written with uts = 0, ute = j are causal");
        let (c, d) = (p.mask.column_ranges.as_ref().unwrap(), q.mask.column_ranges.as_ref().unwrap());
        assert!(q.mask.causal && d.uts.iter().chain(&d.ute).all(|&x| x == 0));
        assert_eq!((&c.lts, &c.lte), (&d.lts, &d.lte), "the lower intervals stay");
        assert!(same_pairs(&p, &q));
        // Its plan runs no more tiles than the ranges' own, and covers every allowed pair. Its
        // blocks inside one document are clear (the kernel reads no stats; the first block of
        // sequence 0 holds the 100-row document and the next one's start); of the ranges' own,
        // all but the one-token sequence's are cut by their diagonals.
        assert!(check(&q, 128).0 <= check(&p, 128).0);
        let clear = |p: &AttentionProblem| {
            Plan::of(p, 128, 128, true)
                .unwrap()
                .blocks
                .iter()
                .filter(|b| b.clear)
                .map(|b| (b.b, b.m0, b.m1))
                .collect::<Vec<_>>()
        };
        let mut q_clear = clear(&q);
        q_clear.sort();
        assert_eq!(q_clear, [(0, 128, 256), (0, 256, 260), (0, 260, 300), (1, 0, 128), (1, 128, 170), (2, 0, 1)]);
        assert_eq!(clear(&p), [(2, 0, 1)]);
        // With a window, or already causal, the same.
        for (causal, window) in [(true, None), (false, Some(Window { left: 40, right: 3 }))] {
            let w = problem(&lens, causal, window, documents(&lens, &ends));
            let q = causal_from_ranges(&w).unwrap();
            assert!(q.mask.causal && q.mask.window == window && same_pairs(&w, &q));
        }

        // One column's upper interval one row short, or one past the diagonal: not causal.
        for delta in [-1, 1] {
            let mut r = documents(&lens, &ends);
            r.ute[57] += delta;
            assert!(causal_from_ranges(&problem(&lens, false, None, r)).is_none(), "{delta}");
        }
        // Bidirectional blocks, and no ranges at all: not causal.
        let cu = gen::cumsum(&lens);
        let blocks = gen::column_ranges_of(&mut gen::rng(3), MaskPattern::Blocks, &cu, &cu, 50);
        assert!(causal_from_ranges(&problem(&lens, false, None, blocks)).is_none());
        let mut none = p.clone();
        none.mask.column_ranges = None;
        assert!(causal_from_ranges(&none).is_none());
    }

    #[test]
    fn causal_upper_intervals_follow_the_bottom_right_diagonal() {
        // Fewer query rows than keys (a chunk after a prefix): causal hides rows below
        // j - (Lk - Lq); the generator's causal pattern writes exactly that, the document
        // pattern (ute = j) hides more and stays ranges.
        let (cu_q, cu_k) = (gen::cumsum(&[40, 200, 7]), gen::cumsum(&[300, 200, 90]));
        let with = |pat| {
            let ranges = gen::column_ranges_of(&mut gen::rng(11), pat, &cu_q, &cu_k, 64);
            let mut p = problem(&[1], false, None, ranges);
            (p.cu_seqlens_q, p.cu_seqlens_k) = (cu_q.clone(), cu_k.clone());
            p.validate().unwrap();
            p
        };
        let p = with(MaskPattern::Causal);
        let q = causal_from_ranges(&p).expect("the generator's causal pattern");
        assert!(same_pairs(&p, &q));
        assert!(causal_from_ranges(&with(MaskPattern::Document)).is_none());
    }

    #[test]
    fn generated_patterns_plan_exactly() {
        let lens = [700, 333, 1029];
        let cu = gen::cumsum(&lens);
        for (i, (pat, seg, causal, window)) in [
            (MaskPattern::Document, 400, false, None),
            (MaskPattern::Document, 12, true, None),
            (MaskPattern::Blocks, 300, false, None),
            (MaskPattern::Blocks, 300, true, Some(Window { left: 200, right: 0 })),
            (MaskPattern::PrefixLm, 1, false, None),
            (MaskPattern::Causal, 1, false, None),
        ]
        .into_iter()
        .enumerate()
        {
            let mut rng = gen::rng(5 + i as u64);
            let ranges = gen::column_ranges_of(&mut rng, pat, &cu, &cu, seg);
            let p = problem(&lens, causal, window, ranges);
            p.validate().unwrap();
            for tile in [128, 64] {
                let (run, _, _) = check(&p, tile);
                assert!(run > 0, "{pat:?} tile {tile}");
                if let Some(q) = causal_from_ranges(&p) {
                    assert!(same_pairs(&p, &q), "{pat:?}");
                    assert!(check(&q, tile).0 <= run, "{pat:?} tile {tile}");
                }
            }
        }
    }
}
