//! [`AttentionOps`] on cubecl: the host builds the table of query blocks (sequence lengths
//! are host data) and uploads it with the FlashMask ranges; one launch of
//! [`crate::kernels::attention`] over `(blocks, Hq)` cubes.

use super::gemm::{cubes, float_elem, scalar};
use crate::kernels::attention::{attention_kernel, blocks, BLOCK_ENTRIES};
use crate::CubeBackend;
use cubecl::prelude::*;
use moekit_ops::{AttentionIo, AttentionOps, AttentionProblem, Error, Result, TensorMeta, Validated};

const OP: &str = "attention";

/// The block table `[blocks, BLOCK_ENTRIES]` (see [`BLOCK_ENTRIES`]) for blocks of `bq` query
/// rows that never span two sequences.
fn block_table(p: &AttentionProblem, bq: usize) -> Result<Vec<i32>> {
    let int = |v: usize| i32::try_from(v).map_err(|_| Error::unsupported(OP, format!("{v} exceeds i32")));
    let mut table = Vec::new();
    for b in 0..p.batch() {
        let (lq, lk) = p.seq_lens(b);
        let mut i0 = 0;
        while i0 < lq {
            let nq = bq.min(lq - i0);
            // NOTE: the causal/window key range of a row moves right with the row, so the
            // block's union runs from its first row's start to its last row's end.
            let (lo, _) = p.key_range(b, i0);
            let (_, hi) = p.key_range(b, i0 + nq - 1);
            for v in [p.cu_seqlens_q[b] + i0, nq, p.cu_seqlens_k[b], lq, lk, lo, hi.max(lo), i0] {
                table.push(int(v)?);
            }
            i0 += nq;
        }
    }
    Ok(table)
}

impl<R: Runtime> AttentionOps for CubeBackend<R> {
    fn attention(&self, p: &Validated<AttentionProblem>, io: AttentionIo<'_, Self::Buffer>) -> Result<()> {
        let elem = float_elem(OP, p.dtype)?;
        let d = p.head_dim;
        let (bq, bk) = blocks(d);
        let table = block_table(p, bq)?;
        let n_blocks = table.len() / BLOCK_ENTRIES;
        if n_blocks == 0 {
            return Ok(());
        }
        let table_h = self.client.create_from_slice(bytemuck::cast_slice(&table));
        let tk = p.total_k();
        let ranges_h = match &p.mask.column_ranges {
            Some(c) => {
                let all: Vec<i32> = [&c.lts, &c.lte, &c.uts, &c.ute].into_iter().flatten().copied().collect();
                self.client.create_from_slice(bytemuck::cast_slice(&all))
            }
            None => self.client.create_from_slice(&[0u8; 4]),
        };
        let ranges_len = if p.mask.column_ranges.is_some() { 4 * tk } else { 1 };
        let window = p.mask.window;
        // NOTE: a side past every sequence is clamped to 2^30 so `diag ± side` stays in i32.
        let side = |v: usize| v.min(1 << 30) as i32;
        let (left, right) = window.map_or((0, 0), |w| (side(w.left), side(w.right)));
        // SAFETY: every handle holds at least the given number of elements of the kernel's
        // type (`check_io` checked the buffers; the table and ranges are built here), and the
        // kernel is launched with bounds checks.
        unsafe {
            attention_kernel::launch::<R>(
                &self.client,
                CubeCount::Static(cubes(OP, n_blocks)?, cubes(OP, p.heads_q)?, 1),
                CubeDim::new_2d(bk as u32, bq as u32),
                ArrayArg::from_raw_parts(io.q.handle.clone(), io.q.numel().max(1)),
                ArrayArg::from_raw_parts(io.k.handle.clone(), io.k.numel().max(1)),
                ArrayArg::from_raw_parts(io.v.handle.clone(), io.v.numel().max(1)),
                ArrayArg::from_raw_parts(table_h, table.len()),
                ArrayArg::from_raw_parts(ranges_h, ranges_len.max(1)),
                ArrayArg::from_raw_parts(io.o.handle.clone(), io.o.numel().max(1)),
                ArrayArg::from_raw_parts(io.lse.handle.clone(), io.lse.numel().max(1)),
                scalar(OP, p.heads_q)?,
                scalar(OP, p.heads_kv)?,
                scalar(OP, p.total_q())?,
                scalar(OP, tk)?,
                p.scale,
                p.softcap.unwrap_or(1.0),
                left,
                right,
                d,
                bq,
                bk,
                p.mask.causal,
                window.is_some(),
                p.mask.column_ranges.is_some(),
                p.softcap.is_some(),
                elem,
            );
        }
        Ok(())
    }
}
