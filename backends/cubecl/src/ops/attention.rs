//! [`AttentionOps`] on cubecl: the host builds the table of query blocks (sequence lengths
//! are host data) and uploads it with the FlashMask ranges; one launch over `(blocks, Hq)`
//! cubes of the kernel [`select`] picks: the manual-MMA kernel
//! ([`crate::kernels::attention::mma`], FlashAttention-2 style, 64 query rows per cube, where
//! the runtime has manual MMA), the cmma kernel ([`crate::kernels::attention::cmma`], where it has cmma) or the
//! portable one ([`crate::kernels::attention`]).

mod select;

use super::gemm::{cubes, float_elem, scalar};
use crate::kernels::attention::cmma::{attention_cmma_kernel, BQ as CMMA_BQ, PLANE, PLANES, VEC};
use crate::kernels::attention::mma::{attention_mma_kernel, rows as mma_rows, PLANES as MMA_PLANES, PLANES_WIDE};
use crate::kernels::attention::{attention_kernel, blocks, BLOCK_ENTRIES};
use crate::CubeBackend;
use cubecl::ir::features::{MmaConfig, Plane};
use cubecl::ir::{ElemType, StorageType};
use cubecl::prelude::*;
use moekit_ops::{AttentionIo, AttentionOps, AttentionProblem, Error, Result, TensorMeta, Validated};
use select::{select, AttnCaps, AttnPath, ATTN_ENV};

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

/// Reorders the blocks of `table` longest key range first (stable): the cubes are
/// independent, and a launch whose last cubes are the longest (the last query blocks of a
/// causal sequence) leaves most of the GPU idle while they finish.
fn longest_first(table: &[i32]) -> Vec<i32> {
    let mut order: Vec<&[i32]> = table.chunks_exact(BLOCK_ENTRIES).collect();
    order.sort_by_key(|b| std::cmp::Reverse(b[6] - b[5]));
    order.concat()
}

/// What the runtime of `client` offers the kernel choice for inputs of `elem`.
fn caps<R: Runtime>(client: &ComputeClient<R>, elem: ElemType) -> AttnCaps {
    let props = client.properties();
    let ty = StorageType::Scalar(elem);
    let f32_ty = StorageType::Scalar(ElemType::Float(cubecl::ir::FloatKind::F32));
    let cmma = props.features.matmul.cmma.contains(&MmaConfig {
        a_type: ty,
        b_type: ty,
        cd_type: f32_ty,
        m: 16,
        n: 16,
        k: 16,
    });
    let mma =
        props.features.matmul.mma.contains(&MmaConfig { a_type: ty, b_type: ty, cd_type: f32_ty, m: 16, n: 8, k: 16 });
    let plane = &props.features.plane;
    AttnCaps {
        cmma,
        mma,
        plane_ops: plane.contains(Plane::Ops) && plane.contains(Plane::Sync),
        plane_size: (props.hardware.plane_size_min, props.hardware.plane_size_max),
        shared_bytes: props.hardware.max_shared_memory_size,
    }
}

/// Uploads the FlashMask ranges `[4, Tk]` (a one-element placeholder without them); returns the
/// handle and its length in i32.
fn upload_ranges<R: Runtime>(client: &ComputeClient<R>, p: &AttentionProblem) -> (cubecl::server::Handle, usize) {
    match &p.mask.column_ranges {
        Some(c) => {
            let all: Vec<i32> = [&c.lts, &c.lte, &c.uts, &c.ute].into_iter().flatten().copied().collect();
            (client.create_from_slice(bytemuck::cast_slice(&all)), (4 * p.total_k()).max(1))
        }
        None => (client.create_from_slice(&[0u8; 4]), 1),
    }
}

impl<R: Runtime> AttentionOps for CubeBackend<R> {
    fn attention(&self, p: &Validated<AttentionProblem>, io: AttentionIo<'_, Self::Buffer>) -> Result<()> {
        let elem = float_elem(OP, p.dtype)?;
        let d = p.head_dim;
        let forced = std::env::var(ATTN_ENV).ok();
        let path = select(p.dtype, d, caps(&self.client, elem), forced.as_deref());
        let planes = if path == AttnPath::MmaWide { PLANES_WIDE } else { MMA_PLANES };
        let (bq, bk) = match path {
            AttnPath::Cmma => (CMMA_BQ, 0),
            AttnPath::Mma | AttnPath::MmaWide => (mma_rows(planes), 0),
            AttnPath::Portable => blocks(d),
        };
        let mut table = block_table(p, bq)?;
        if matches!(path, AttnPath::Mma | AttnPath::MmaWide) {
            table = longest_first(&table);
        }
        let n_blocks = table.len() / BLOCK_ENTRIES;
        if n_blocks == 0 {
            return Ok(());
        }
        let table_h = self.client.create_from_slice(bytemuck::cast_slice(&table));
        let tk = p.total_k();
        let (ranges_h, ranges_len) = upload_ranges(&self.client, p);
        let window = p.mask.window;
        // NOTE: a side past every sequence is clamped to 2^30 so `diag ± side` stays in i32.
        let side = |v: usize| v.min(1 << 30) as i32;
        let (left, right) = window.map_or((0, 0), |w| (side(w.left), side(w.right)));
        let count = CubeCount::Static(cubes(OP, n_blocks)?, cubes(OP, p.heads_q)?, 1);
        // SAFETY: every handle holds at least the given number of elements of the kernel's
        // type (`check_io` checked the buffers; the table and ranges are built here). The
        // portable kernel runs with bounds checks; the cmma and mma kernels run unchecked and keep
        // every access inside them by construction (reads guarded by the block's row and key
        // counts, FlashMask reads behind `j < key_hi`, shared indices inside the tiles). The
        // cmma and mma kernels read q/k/v as vectors of `VEC`: the selection guarantees
        // `VEC | D`, so the buffers hold a whole number of them and every row starts on one.
        unsafe {
            let (q, k, v) = (
                ArrayArg::from_raw_parts(io.q.handle.clone(), io.q.numel().max(1)),
                ArrayArg::from_raw_parts(io.k.handle.clone(), io.k.numel().max(1)),
                ArrayArg::from_raw_parts(io.v.handle.clone(), io.v.numel().max(1)),
            );
            let table_a = ArrayArg::from_raw_parts(table_h, table.len());
            let ranges_a = ArrayArg::from_raw_parts(ranges_h, ranges_len);
            let o = ArrayArg::from_raw_parts(io.o.handle.clone(), io.o.numel().max(1));
            let lse = ArrayArg::from_raw_parts(io.lse.handle.clone(), io.lse.numel().max(1));
            let (hq, hkv, tq, tk) =
                (scalar(OP, p.heads_q)?, scalar(OP, p.heads_kv)?, scalar(OP, p.total_q())?, scalar(OP, tk)?);
            let cap = p.softcap.unwrap_or(1.0);
            let (causal, win, colr, capped) =
                (p.mask.causal, window.is_some(), p.mask.column_ranges.is_some(), p.softcap.is_some());
            match path {
                AttnPath::Cmma => attention_cmma_kernel::launch_unchecked::<R>(
                    &self.client,
                    count,
                    CubeDim::new_2d(PLANE as u32, PLANES as u32),
                    VEC,
                    ArrayArg::from_raw_parts(io.q.handle.clone(), (io.q.numel() / VEC).max(1)),
                    ArrayArg::from_raw_parts(io.k.handle.clone(), (io.k.numel() / VEC).max(1)),
                    ArrayArg::from_raw_parts(io.v.handle.clone(), (io.v.numel() / VEC).max(1)),
                    table_a,
                    ranges_a,
                    o,
                    lse,
                    hq,
                    hkv,
                    tq,
                    tk,
                    p.scale,
                    cap,
                    left,
                    right,
                    d,
                    causal,
                    win,
                    colr,
                    capped,
                    elem,
                ),
                AttnPath::Mma | AttnPath::MmaWide => attention_mma_kernel::launch_unchecked::<R>(
                    &self.client,
                    count,
                    CubeDim::new_2d(PLANE as u32, planes as u32),
                    VEC,
                    ArrayArg::from_raw_parts(io.q.handle.clone(), (io.q.numel() / VEC).max(1)),
                    ArrayArg::from_raw_parts(io.k.handle.clone(), (io.k.numel() / VEC).max(1)),
                    ArrayArg::from_raw_parts(io.v.handle.clone(), (io.v.numel() / VEC).max(1)),
                    table_a,
                    ranges_a,
                    o,
                    lse,
                    hq,
                    hkv,
                    tq,
                    tk,
                    p.scale,
                    cap,
                    left,
                    right,
                    d,
                    planes,
                    causal,
                    win,
                    colr,
                    capped,
                    elem,
                ),
                AttnPath::Portable => attention_kernel::launch::<R>(
                    &self.client,
                    count,
                    CubeDim::new_2d(bk as u32, bq as u32),
                    q,
                    k,
                    v,
                    table_a,
                    ranges_a,
                    o,
                    lse,
                    hq,
                    hkv,
                    tq,
                    tk,
                    p.scale,
                    cap,
                    left,
                    right,
                    d,
                    bq,
                    bk,
                    causal,
                    win,
                    colr,
                    capped,
                    elem,
                ),
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::{longest_first, BLOCK_ENTRIES};

    /// A block-table entry whose key range is `lo..hi`, tagged by `tag` in its first field.
    fn block(tag: i32, lo: i32, hi: i32) -> [i32; BLOCK_ENTRIES] {
        let mut b = [0; BLOCK_ENTRIES];
        b[0] = tag;
        b[5] = lo;
        b[6] = hi;
        b
    }

    #[test]
    fn longest_first_is_a_stable_permutation_by_key_range() {
        // Two causal sequences: the key range grows with the query block.
        let blocks = [block(0, 0, 64), block(1, 0, 128), block(2, 0, 192), block(3, 200, 264), block(4, 200, 392)];
        let table: Vec<i32> = blocks.concat();
        let sorted = longest_first(&table);
        assert_eq!(sorted.len(), table.len());
        let tags: Vec<i32> = sorted.chunks_exact(BLOCK_ENTRIES).map(|b| b[0]).collect();
        // 192, 192 (stable: block 2 before block 4), 128, 64, 64.
        assert_eq!(tags, [2, 4, 1, 0, 3]);
        for b in sorted.chunks_exact(BLOCK_ENTRIES) {
            assert_eq!(b, blocks[b[0] as usize], "a block's entries travel together");
        }
        assert!(longest_first(&[]).is_empty());
    }
}
