//! Grouped expert GEMM: contiguous and masked layouts, KN and NK weights, the gather
//! prologue, SwiGLU and row-scale epilogues.
//!
//! Each expert is one f32 GEMM on the `gemm` crate: its rows (gathered or not) and its weight
//! widened to f32, the epilogue applied to the f32 accumulator, each output rounded once.
//! Experts run side by side, largest first; an expert holding several threads' share of the
//! rows also splits its own GEMM over that many threads.

use crate::convert::{dispatch_float, elems, elems_mut, ints, widen, Elem};
use crate::matmul::{matmul, parallelism_for, Mat};
use crate::CpuBackend;
use gemm::Parallelism;
use moekit_ops::{
    check, GemmLayout, GroupedGemmIo, GroupedGemmOps, GroupedGemmProblem, HostTensor, Result, Validated, WeightLayout,
};
use rayon::prelude::*;
use std::borrow::Cow;
use std::sync::Mutex;

const OP: &str = "grouped_gemm";

impl GroupedGemmOps for CpuBackend {
    fn grouped_gemm(&self, p: &Validated<GroupedGemmProblem>, io: GroupedGemmIo<'_, HostTensor>) -> Result<()> {
        let segments = segments(p, io.group)?;
        let gather = match (io.row_to_token, p.gather_tokens) {
            (Some(r), Some(t)) => {
                let r = ints(OP, "row_to_token", r)?;
                check::in_range(OP, "row_to_token", r, -1, t as i64)?;
                Some(r)
            }
            _ => None,
        };
        let row_scale = io.row_scale.map(|s| s.as_f32()).transpose()?;
        dispatch_float!(OP, p.dtype, T => {
            let ctx = Ctx {
                p,
                x: elems::<T>(OP, "x", io.x)?,
                w: elems::<T>(OP, "w", io.w)?,
                gather,
                row_scale,
            };
            ctx.run(&segments, elems_mut::<T>(OP, "y", io.y)?)
        })
    }
}

/// Rows `start..start + len` of expert `e`, as flat row indices into `x` (ungathered), `y`
/// and `row_scale`.
#[derive(Clone, Copy, Debug)]
struct Segment {
    start: usize,
    len: usize,
}

/// Per-expert segments from the offsets (checked) or the counts (checked against `C`).
fn segments(p: &GroupedGemmProblem, group: &HostTensor) -> Result<Vec<Segment>> {
    match p.layout {
        GemmLayout::Contiguous { rows } => {
            let offsets = ints(OP, "offsets", group)?;
            check::offsets(OP, "offsets", offsets, rows)?;
            Ok(offsets.windows(2).map(|w| Segment { start: w[0] as usize, len: (w[1] - w[0]) as usize }).collect())
        }
        GemmLayout::Masked { capacity } => {
            let counts = ints(OP, "counts", group)?;
            check::in_range(OP, "counts", counts, 0, capacity as i64 + 1)?;
            Ok(counts.iter().enumerate().map(|(e, &c)| Segment { start: e * capacity, len: c as usize }).collect())
        }
    }
}

/// One expert's work: its segment and its rows of `y`.
struct Task<'y, T> {
    expert: usize,
    seg: Segment,
    y: &'y mut [T],
}

/// What every expert of one call shares.
struct Ctx<'a, T> {
    p: &'a GroupedGemmProblem,
    x: &'a [T],
    w: &'a [T],
    gather: Option<&'a [i32]>,
    row_scale: Option<&'a [f32]>,
}

impl<T: Elem + Default> Ctx<'_, T> {
    fn run(&self, segments: &[Segment], y: &mut [T]) -> Result<()> {
        let (k, n) = (self.p.k_dim, self.p.n_dim);
        y.par_chunks_mut(1 << 14).for_each(|c| c.fill(T::default()));
        let mut tasks = split_by_segments(y, segments, self.p.n_out());
        let threads = rayon::current_num_threads();
        let total_rows: usize = tasks.iter().map(|t| t.seg.len).sum();
        // NOTE: experts run side by side, largest first (greedy longest-processing-time
        // scheduling over one worker per thread); an expert holding several threads' share of
        // the rows (rounded) also splits its own GEMM over that many threads (idle workers steal the
        // pieces). Many small GEMMs split badly, one big one well.
        let par_of = |len: usize| {
            let share = (threads * len + total_rows / 2) / total_rows.max(1);
            match parallelism_for(len, k, n) {
                Parallelism::None => Parallelism::None,
                _ if share < 2 => Parallelism::None,
                _ => Parallelism::Rayon(share),
            }
        };
        tasks.sort_by_key(|t| std::cmp::Reverse(t.seg.len));
        let workers = threads.min(tasks.len());
        let queue = Mutex::new(tasks.into_iter());
        (0..workers).into_par_iter().try_for_each(|_| {
            while let Some(t) = queue.lock().ok().and_then(|mut q| q.next()) {
                let par = par_of(t.seg.len);
                self.expert(t, par)?;
            }
            Ok(())
        })
    }

    /// One expert: `y_e = epilogue(x_e · W_e)`.
    fn expert(&self, task: Task<'_, T>, par: Parallelism) -> Result<()> {
        let p = self.p;
        let (m, k, n) = (task.seg.len, p.k_dim, p.n_dim);
        let lhs = self.rows_f32(task.seg);
        let w = widen(&self.w[task.expert * k * n..(task.expert + 1) * k * n]);
        let rhs = match p.weight_layout {
            WeightLayout::KN => Mat::row_major(&w, n),
            WeightLayout::NK => Mat::transposed(&w, k),
        };
        let mut acc = vec![0f32; m * n];
        matmul((m, k, n), Mat::row_major(&lhs, k), rhs, &mut acc, n, false, par)?;
        let n_out = p.n_out();
        for (i, (acc_row, y_row)) in acc.chunks(n).zip(task.y.chunks_mut(n_out)).enumerate() {
            let scale = self.row_scale.map_or(1.0, |s| s[task.seg.start + i]);
            if p.swiglu {
                let (gate, up) = acc_row.split_at(n_out);
                for ((y, &g), &u) in y_row.iter_mut().zip(gate).zip(up) {
                    *y = T::from_f32(silu(g) * u * scale);
                }
            } else {
                y_row.iter_mut().zip(acc_row).for_each(|(y, &a)| *y = T::from_f32(a * scale));
            }
        }
        Ok(())
    }

    /// The segment's input rows `[len, K]` in f32: borrowed for ungathered f32, gathered
    /// through `row_to_token` (−1: a zero row) and/or widened otherwise.
    fn rows_f32(&self, seg: Segment) -> Cow<'_, [f32]> {
        let k = self.p.k_dim;
        let Some(row_to_token) = self.gather else {
            return widen(&self.x[seg.start * k..(seg.start + seg.len) * k]);
        };
        let mut rows = vec![0f32; seg.len * k];
        for (dst, &t) in rows.chunks_mut(k).zip(&row_to_token[seg.start..seg.start + seg.len]) {
            if let Ok(t) = usize::try_from(t) {
                dst.iter_mut().zip(&self.x[t * k..(t + 1) * k]).for_each(|(d, s)| *d = s.to_f32());
            }
        }
        Cow::Owned(rows)
    }
}

/// `silu(g) = g · sigmoid(g)`.
pub(crate) fn silu(g: f32) -> f32 {
    g / (1.0 + (-g).exp())
}

/// Splits `y` (rows of `width`) into one mutable slice per non-empty segment. Segments are
/// ascending and disjoint (offsets are non-decreasing; masked segments stay in their
/// capacity).
fn split_by_segments<'y, T>(y: &'y mut [T], segments: &[Segment], width: usize) -> Vec<Task<'y, T>> {
    let mut tasks = Vec::with_capacity(segments.len());
    let mut rest = y;
    let mut pos = 0;
    for (expert, &seg) in segments.iter().enumerate() {
        if seg.len == 0 {
            continue;
        }
        let tail = std::mem::take(&mut rest);
        let (_, tail) = tail.split_at_mut((seg.start - pos) * width);
        let (mine, tail) = tail.split_at_mut(seg.len * width);
        rest = tail;
        pos = seg.start + seg.len;
        tasks.push(Task { expert, seg, y: mine });
    }
    tasks
}
