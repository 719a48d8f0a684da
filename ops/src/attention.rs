//! Attention over packed variable-length batches: GQA, causal, sliding window, softcap and
//! FlashMask column ranges.

use crate::validated::{expect, expect_float};
use crate::{DType, Error, Result, TensorMeta, Validated};

const OP: &str = "attention";

/// Head dims the attention kernels are built for.
pub const HEAD_DIMS: [usize; 3] = [64, 128, 256];

/// A sliding window around the (bottom-right aligned) diagonal: query row `i` of a sequence
/// with `Lq` queries and `Lk` keys sees key `j` iff `i' - left <= j <= i' + right`, where
/// `i' = i + Lk - Lq`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Window {
    /// Keys visible to the left of the diagonal.
    pub left: usize,
    /// Keys visible to the right of the diagonal.
    pub right: usize,
}

/// FlashMask column ranges: for each key column `j` (packed over the batch, `[Tk]` each),
/// query rows `lts[j]..lte[j]` and `uts[j]..ute[j]` (row indices local to the sequence) are
/// masked out. An interval with `start >= end` masks nothing.
///
/// This expresses causal (`uts = 0, ute = j`), document masks, prefix-LM and the scale-wise
/// bidirectional blocks of next-frame-and-scale prediction.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ColumnRanges {
    /// Lower interval start per key column.
    pub lts: Vec<i32>,
    /// Lower interval end (exclusive).
    pub lte: Vec<i32>,
    /// Upper interval start.
    pub uts: Vec<i32>,
    /// Upper interval end (exclusive).
    pub ute: Vec<i32>,
}

/// The mask of an attention problem: the allowed (query, key) pairs are those every present
/// part allows.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AttentionMask {
    /// Causal, bottom-right aligned: key `j` visible iff `j <= i + Lk - Lq`.
    pub causal: bool,
    /// Sliding window.
    pub window: Option<Window>,
    /// FlashMask column ranges.
    pub column_ranges: Option<ColumnRanges>,
}

impl AttentionMask {
    /// No mask.
    pub fn none() -> Self {
        Self::default()
    }

    /// Causal only.
    pub fn causal() -> Self {
        AttentionMask { causal: true, ..Self::default() }
    }
}

/// Packed variable-length attention.
///
/// Inputs: `q [Tq, Hq, D]`, `k, v [Tk, Hkv, D]` (or a cache `[C >= Tk, Hkv, D]` whose rows
/// past `Tk` are not read) of `dtype`; sequence `b` owns query rows
/// `cu_seqlens_q[b]..cu_seqlens_q[b+1]` and key rows `cu_seqlens_k[b]..cu_seqlens_k[b+1]`.
/// Query head `h` reads key/value head `h / (Hq / Hkv)`. Score
/// `s = scale · q·k` (then `softcap · tanh(s / softcap)` with a softcap), masked, softmax
/// over the keys. Outputs: `o [Tq, Hq, D]` and `lse [Hq, Tq] f32` (natural log of the row's
/// sum of `exp(s)` over allowed keys).
#[derive(Clone, Debug, PartialEq)]
pub struct AttentionProblem {
    /// Cumulative query lengths `[B+1]`, from 0, non-decreasing.
    pub cu_seqlens_q: Vec<usize>,
    /// Cumulative key lengths `[B+1]`, from 0, non-decreasing.
    pub cu_seqlens_k: Vec<usize>,
    /// Query heads `Hq`.
    pub heads_q: usize,
    /// Key/value heads `Hkv`, dividing `Hq`.
    pub heads_kv: usize,
    /// Head dim `D`, one of [`HEAD_DIMS`].
    pub head_dim: usize,
    /// Softmax scale (usually `1/sqrt(D)`).
    pub scale: f32,
    /// Logit softcap (> 0) or none.
    pub softcap: Option<f32>,
    /// Mask.
    pub mask: AttentionMask,
    /// Float dtype of q, k, v and o.
    pub dtype: DType,
}

impl AttentionProblem {
    /// Sequences `B`.
    pub fn batch(&self) -> usize {
        self.cu_seqlens_q.len().saturating_sub(1)
    }

    /// Total query rows `Tq`.
    pub fn total_q(&self) -> usize {
        self.cu_seqlens_q.last().copied().unwrap_or(0)
    }

    /// Total key rows `Tk`.
    pub fn total_k(&self) -> usize {
        self.cu_seqlens_k.last().copied().unwrap_or(0)
    }

    /// Query and key lengths of sequence `b`.
    pub fn seq_lens(&self, b: usize) -> (usize, usize) {
        (self.cu_seqlens_q[b + 1] - self.cu_seqlens_q[b], self.cu_seqlens_k[b + 1] - self.cu_seqlens_k[b])
    }

    /// Whether query row `i` (local) of sequence `b` may attend to key `j` (local).
    pub fn allowed(&self, b: usize, i: usize, j: usize) -> bool {
        let (lq, lk) = self.seq_lens(b);
        let diag = i as i64 + lk as i64 - lq as i64;
        let j64 = j as i64;
        if self.mask.causal && j64 > diag {
            return false;
        }
        if let Some(w) = self.mask.window {
            if j64 < diag.saturating_sub(wide(w.left)) || j64 > diag.saturating_add(wide(w.right)) {
                return false;
            }
        }
        if let Some(c) = &self.mask.column_ranges {
            let col = self.cu_seqlens_k[b] + j;
            let row = i as i32;
            if (c.lts[col] <= row && row < c.lte[col]) || (c.uts[col] <= row && row < c.ute[col]) {
                return false;
            }
        }
        true
    }

    /// The key range `lo..hi` that causal and window allow for row `i` of sequence `b`
    /// (column ranges may mask more inside it).
    pub fn key_range(&self, b: usize, i: usize) -> (usize, usize) {
        let (lq, lk) = self.seq_lens(b);
        let diag = i as i64 + lk as i64 - lq as i64;
        let mut lo = 0i64;
        let mut hi = lk as i64; // exclusive
        if self.mask.causal {
            hi = hi.min(diag + 1);
        }
        if let Some(w) = self.mask.window {
            lo = lo.max(diag.saturating_sub(wide(w.left)));
            hi = hi.min(diag.saturating_add(wide(w.right)).saturating_add(1));
        }
        let lo = lo.clamp(0, lk as i64) as usize;
        let hi = hi.clamp(0, lk as i64) as usize;
        (lo, hi.max(lo))
    }

    /// Number of allowed (query, key) pairs over the batch (per head). O((Tq + Tk) log Tk)
    /// with column ranges ([`Self::visible_keys`]), O(Tq) without.
    pub fn allowed_pairs(&self) -> u64 {
        (0..self.batch()).map(|b| self.visible_keys(b).iter().map(|&n| n as u64).sum::<u64>()).sum()
    }

    /// The number of keys each local query row of sequence `b` may attend to (`[Lq]`).
    ///
    /// Column ranges are counted by a sweep over the rows, not key by key: each column's
    /// intervals (merged where they overlap) enter a Fenwick tree over the keys at their first
    /// row and leave it at their end, and row `i` counts the masked keys of its causal/window
    /// range `lo..hi` as one prefix-sum difference. O((Lq + Lk) log Lk), so validating a
    /// document mask of 16k rows costs microseconds, not a scan of every (row, key) pair.
    /// Column ranges must be of length `Tk` (validation checks that first).
    pub fn visible_keys(&self, b: usize) -> Vec<usize> {
        let (lq, lk) = self.seq_lens(b);
        let ranges: Vec<(usize, usize)> = (0..lq).map(|i| self.key_range(b, i)).collect();
        let Some(c) = &self.mask.column_ranges else {
            return ranges.iter().map(|&(lo, hi)| hi - lo).collect();
        };
        // The masking intervals of every column (merged where they overlap), kept to rows
        // 0..lq: (first row, end row, key).
        let clip = |x: i32| (x.max(0) as usize).min(lq);
        let mut spans = Vec::with_capacity(2 * lk);
        for j in 0..lk {
            let col = self.cu_seqlens_k[b] + j;
            let (a0, a1) = (clip(c.lts[col]), clip(c.lte[col]));
            let (u0, u1) = (clip(c.uts[col]), clip(c.ute[col]));
            if a0 < a1 && u0 < u1 && a0.max(u0) <= a1.min(u1) {
                spans.push((a0.min(u0), a1.max(u1), j));
            } else {
                spans.extend([(a0, a1, j), (u0, u1, j)].into_iter().filter(|s| s.0 < s.1));
            }
        }
        // Keys entering and leaving at each row, bucketed by row (counting sort).
        let bucket = |row: fn(&(usize, usize, usize)) -> usize| {
            let mut start = vec![0usize; lq + 2];
            for sp in &spans {
                start[row(sp) + 1] += 1;
            }
            for r in 0..=lq {
                start[r + 1] += start[r];
            }
            let mut keys = vec![0usize; spans.len()];
            let mut at = start.clone();
            for sp in &spans {
                keys[at[row(sp)]] = sp.2;
                at[row(sp)] += 1;
            }
            (start, keys)
        };
        let (enter_at, enter) = bucket(|s| s.0);
        let (leave_at, leave) = bucket(|s| s.1);
        let mut tree = vec![0i64; lk + 1];
        let add = |tree: &mut [i64], j: usize, d: i64| {
            let mut x = j + 1;
            while x <= lk {
                tree[x] += d;
                x += x & x.wrapping_neg();
            }
        };
        let prefix = |tree: &[i64], n: usize| {
            let (mut x, mut sum) = (n, 0i64);
            while x > 0 {
                sum += tree[x];
                x &= x - 1;
            }
            sum
        };
        let mut out = Vec::with_capacity(lq);
        for (i, &(lo, hi)) in ranges.iter().enumerate() {
            for &j in &leave[leave_at[i]..leave_at[i + 1]] {
                add(&mut tree, j, -1);
            }
            for &j in &enter[enter_at[i]..enter_at[i + 1]] {
                add(&mut tree, j, 1);
            }
            let masked = (prefix(&tree, hi) - prefix(&tree, lo)) as usize;
            out.push(hi - lo - masked);
        }
        out
    }

    /// Check the problem, including that every query row sees at least one key.
    ///
    /// # Errors
    /// [`Error::BadOffsets`] for cumulative lengths that are empty, do not start at 0 or
    /// decrease; [`Error::Invalid`] for `cu_seqlens_q` and `cu_seqlens_k` of different
    /// lengths, `Hq % Hkv != 0`, zero heads, a non-finite scale or softcap, lengths past
    /// `i32::MAX`;
    /// [`Error::Shape`] for column ranges not of length `Tk`, [`Error::IndexOutOfRange`] for a
    /// range bound outside the sequence; [`Error::Unsupported`] for a head dim outside
    /// [`HEAD_DIMS`] or a non-float dtype; [`Error::EmptyMaskRow`] when a query row has no
    /// key to attend to.
    pub fn validate(&self) -> Result<Validated<AttentionProblem>> {
        expect_float(OP, self.dtype)?;
        if !HEAD_DIMS.contains(&self.head_dim) {
            return Err(Error::unsupported(OP, format!("head dim {} (supported: {HEAD_DIMS:?})", self.head_dim)));
        }
        if self.heads_q == 0 || self.heads_kv == 0 || self.heads_q % self.heads_kv != 0 {
            return Err(Error::invalid(
                OP,
                format!("heads_q = {} must be a positive multiple of heads_kv = {}", self.heads_q, self.heads_kv),
            ));
        }
        if !self.scale.is_finite() {
            return Err(Error::invalid(OP, format!("scale {} is not finite", self.scale)));
        }
        if let Some(c) = self.softcap {
            if !(c.is_finite() && c > 0.0) {
                return Err(Error::invalid(OP, format!("softcap {c} must be finite and > 0")));
            }
        }
        check_cu_seqlens("cu_seqlens_q", &self.cu_seqlens_q)?;
        check_cu_seqlens("cu_seqlens_k", &self.cu_seqlens_k)?;
        if self.cu_seqlens_q.len() != self.cu_seqlens_k.len() {
            return Err(Error::invalid(
                OP,
                format!(
                    "cu_seqlens_q has {} entries, cu_seqlens_k {}",
                    self.cu_seqlens_q.len(),
                    self.cu_seqlens_k.len()
                ),
            ));
        }
        if self.total_q() > i32::MAX as usize || self.total_k() > i32::MAX as usize {
            return Err(Error::invalid(OP, "sequence lengths exceed i32 range"));
        }
        if let Some(c) = &self.mask.column_ranges {
            self.check_column_ranges(c)?;
        }
        self.check_no_empty_row()?;
        Ok(Validated::new(self.clone()))
    }

    fn check_column_ranges(&self, c: &ColumnRanges) -> Result<()> {
        let tk = self.total_k();
        for (what, v) in [("lts", &c.lts), ("lte", &c.lte), ("uts", &c.uts), ("ute", &c.ute)] {
            if v.len() != tk {
                return Err(Error::Shape { op: OP, what, expected: vec![tk], got: vec![v.len()] });
            }
        }
        for b in 0..self.batch() {
            let (lq, _) = self.seq_lens(b);
            let cols = self.cu_seqlens_k[b]..self.cu_seqlens_k[b + 1];
            for (what, v) in [("lts", &c.lts), ("lte", &c.lte), ("uts", &c.uts), ("ute", &c.ute)] {
                let v = &v[cols.clone()];
                // One pass that vectorises; the bad column only when there is one.
                if v.iter().fold(false, |bad, &x| bad | (x < 0) | (x as i64 > lq as i64)) {
                    let at = v.iter().position(|&x| x < 0 || x as i64 > lq as i64).unwrap_or(0);
                    return Err(Error::IndexOutOfRange {
                        op: OP,
                        what,
                        index: cols.start + at,
                        value: v[at] as i64,
                        lo: 0,
                        hi: lq as i64 + 1,
                    });
                }
            }
        }
        Ok(())
    }

    /// O(Tq) when every row sees its diagonal key, or the first or the last key of its range
    /// (every causal, window and FlashMask pattern that keeps the diagonal); else the
    /// sequence's rows are counted by [`Self::visible_keys`].
    fn check_no_empty_row(&self) -> Result<()> {
        for b in 0..self.batch() {
            let (lq, lk) = self.seq_lens(b);
            let k0 = self.cu_seqlens_k[b];
            let probes_see = match &self.mask.column_ranges {
                None => (0..lq).all(|i| {
                    let (lo, hi) = self.key_range(b, i);
                    lo < hi
                }),
                Some(c) => {
                    // Whether the column ranges leave key j (local) to row r; causal and window
                    // are in the row's key range already.
                    let cols = k0..k0 + lk;
                    let (lts, lte) = (&c.lts[cols.clone()], &c.lte[cols.clone()]);
                    let (uts, ute) = (&c.uts[cols.clone()], &c.ute[cols]);
                    let free = |j: usize, r: i32| !((lts[j] <= r && r < lte[j]) || (uts[j] <= r && r < ute[j]));
                    (0..lq).all(|i| {
                        let (lo, hi) = self.key_range(b, i);
                        let r = i as i32;
                        lo < hi && {
                            let diag = (i + lk).saturating_sub(lq).clamp(lo, hi - 1);
                            free(diag, r) || free(lo, r) || free(hi - 1, r)
                        }
                    })
                }
            };
            if probes_see {
                continue;
            }
            if let Some(i) = self.visible_keys(b).iter().position(|&n| n == 0) {
                return Err(Error::EmptyMaskRow { op: OP, seq: b, row: i });
            }
        }
        Ok(())
    }
}

/// A window side as i64: sides past `i64::MAX` (wider than any sequence) saturate instead of
/// wrapping negative, and the bounds computed from them saturate instead of overflowing.
fn wide(side: usize) -> i64 {
    i64::try_from(side).unwrap_or(i64::MAX)
}

fn check_cu_seqlens(what: &'static str, cu: &[usize]) -> Result<()> {
    if cu.is_empty() || cu[0] != 0 {
        return Err(Error::BadOffsets { op: OP, what, msg: "must start with 0 and hold B+1 entries".into() });
    }
    if let Some(i) = cu.windows(2).position(|w| w[1] < w[0]) {
        return Err(Error::BadOffsets {
            op: OP,
            what,
            msg: format!("decreases at {}: {} > {}", i + 1, cu[i], cu[i + 1]),
        });
    }
    Ok(())
}

/// Buffers of one attention call.
#[derive(Debug)]
pub struct AttentionIo<'a, B> {
    /// `[Tq, Hq, D]`.
    pub q: &'a B,
    /// `[Tk, Hkv, D]`, or a cache `[C >= Tk, Hkv, D]` whose rows past `Tk` are not read.
    pub k: &'a B,
    /// `[Tk, Hkv, D]`, or a cache `[C >= Tk, Hkv, D]`.
    pub v: &'a B,
    /// Out: `[Tq, Hq, D]`.
    pub o: &'a mut B,
    /// Out: `[Hq, Tq] f32`.
    pub lse: &'a mut B,
}

impl Validated<AttentionProblem> {
    /// Checks a key or value buffer: `[C, Hkv, D]` of the problem's dtype with a capacity
    /// `C >= Tk`. Rows from `Tk` on are never read, so a KV cache of capacity `C` is passed as
    /// it is, its filled rows named by `cu_seqlens_k`.
    ///
    /// # Errors
    /// [`Error::DType`], or [`Error::Shape`] naming `[Tk, Hkv, D]` (the least shape taken:
    /// any capacity `C >= Tk` in the first place is accepted).
    pub fn check_kv<B: TensorMeta + ?Sized>(&self, what: &'static str, buf: &B) -> Result<()> {
        let (tk, hkv, d) = (self.total_k(), self.heads_kv, self.head_dim);
        if buf.dtype() != self.dtype {
            return Err(Error::DType { op: OP, what, expected: self.dtype, got: buf.dtype() });
        }
        match buf.shape() {
            [c, h, dd] if *c >= tk && *h == hkv && *dd == d => Ok(()),
            got => Err(Error::Shape { op: OP, what, expected: vec![tk, hkv, d], got: got.to_vec() }),
        }
    }

    /// Check every buffer against the problem.
    ///
    /// # Errors
    /// [`Error::Shape`] or [`Error::DType`] naming the first bad buffer.
    pub fn check_io<B: TensorMeta>(&self, io: &AttentionIo<'_, B>) -> Result<()> {
        let (tq, hq, d) = (self.total_q(), self.heads_q, self.head_dim);
        expect(OP, "q", io.q, self.dtype, &[tq, hq, d])?;
        self.check_kv("k", io.k)?;
        self.check_kv("v", io.v)?;
        expect(OP, "o", io.o, self.dtype, &[tq, hq, d])?;
        expect(OP, "lse", io.lse, DType::F32, &[hq, tq])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `visible_keys` against a scan of every (row, key) pair, on random column ranges (often
    /// overlapping, touching, empty or reversed) with every mix of causal and window.
    #[test]
    fn visible_keys_match_a_scan_of_every_pair() {
        let mut x = 0x2545_F491_4F6C_DD1Du64;
        let mut rnd = |n: usize| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x % n as u64) as usize
        };
        let mut empties = 0;
        for case in 0..300 {
            let batch = 1 + rnd(3);
            let mut lens = Vec::new();
            for _ in 0..batch {
                let lq = rnd(40);
                lens.push((lq, lq + rnd(12)));
            }
            let cu = |f: fn(&(usize, usize)) -> usize| {
                let mut v = vec![0];
                for l in &lens {
                    v.push(v.last().unwrap() + f(l));
                }
                v
            };
            let (cu_q, cu_k) = (cu(|l| l.0), cu(|l| l.1));
            let tk = *cu_k.last().unwrap();
            let mut col = |lq: usize| (0..4).map(|_| rnd(lq + 1) as i32).collect::<Vec<_>>();
            let mut c = ColumnRanges { lts: vec![], lte: vec![], uts: vec![], ute: vec![] };
            for &(lq, lk) in &lens {
                for _ in 0..lk {
                    let v = col(lq);
                    c.lts.push(v[0]);
                    c.lte.push(v[1]);
                    c.uts.push(v[2]);
                    c.ute.push(v[3]);
                }
            }
            assert_eq!(c.lts.len(), tk);
            let window = (case % 3 == 0).then(|| Window { left: rnd(10), right: rnd(10) });
            let p = AttentionProblem {
                cu_seqlens_q: cu_q,
                cu_seqlens_k: cu_k,
                heads_q: 1,
                heads_kv: 1,
                head_dim: 64,
                scale: 1.0,
                softcap: None,
                mask: AttentionMask { causal: case % 2 == 0, window, column_ranges: Some(c) },
                dtype: DType::F32,
            };
            let (mut total, mut first_empty) = (0u64, None);
            for b in 0..batch {
                let (lq, lk) = p.seq_lens(b);
                let want: Vec<usize> = (0..lq).map(|i| (0..lk).filter(|&j| p.allowed(b, i, j)).count()).collect();
                assert_eq!(p.visible_keys(b), want, "case {case} sequence {b}");
                total += want.iter().sum::<usize>() as u64;
                first_empty = first_empty.or(want.iter().position(|&n| n == 0).map(|i| (b, i)));
            }
            assert_eq!(p.allowed_pairs(), total, "case {case}");
            // Validation names the first row left without a key, whether the probes or the
            // sweep find it.
            match (p.validate(), first_empty) {
                (Ok(_), None) => {}
                (Err(Error::EmptyMaskRow { seq, row, .. }), Some(at)) => assert_eq!((seq, row), at, "case {case}"),
                (got, want) => panic!("case {case}: {got:?}, first empty row {want:?}"),
            }
            empties += usize::from(first_empty.is_some());
        }
        // Both outcomes occur.
        assert!(empties > 10 && empties < 290, "{empties} cases with an empty row");
    }
}
