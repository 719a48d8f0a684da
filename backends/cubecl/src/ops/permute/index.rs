//! The dispatch indices without the row copy: the first four launches of the scalable permute
//! (chunk histograms, chunk scan per expert, offsets scan, stable scatter; kernels in
//! [`crate::kernels::permute::scan`]), giving `offsets`, `row_to_token` and
//! `token_slot_to_row`; the permute op follows them with its row copy, the fused MoE layer
//! gathers the rows in its first GEMM instead.

use super::super::gemm::scalar;
use super::super::{array, cubes_1d};
use crate::flag::BadIndex;
use crate::kernels::permute::scan::{permute_hist, permute_scan_chunks, permute_scan_offsets, permute_scatter, CHUNK};
use crate::{CubeBackend, CubeBuffer};
use cubecl::prelude::*;
use cubecl::server::Handle;
use moekit_ops::{Error, PermuteProblem, Result, Validated};

const OP: &str = "permute";

/// The index outputs of one dispatch.
pub(crate) struct IndexIo<'a> {
    /// `[T, k] i32`.
    pub(crate) ids: &'a CubeBuffer,
    /// Out: `[E + 1] i32`.
    pub(crate) offsets: &'a mut CubeBuffer,
    /// Out: `[R] i32`.
    pub(crate) row_to_token: &'a mut CubeBuffer,
    /// Out: `[T, k] i32`.
    pub(crate) tsr: &'a mut CubeBuffer,
}

/// Chunks of [`CHUNK`] slots of `p` (the scratch `cc` holds `E·chunks` i32).
pub(crate) fn chunks(p: &PermuteProblem) -> usize {
    (p.tokens * p.k).div_ceil(CHUNK)
}

/// The dispatch indices of `p` (no hidden row is read or written); `cc` is scratch of at least
/// `E·chunks(p)` i32, `sizes` of at least `E` i32 (both at least one).
///
/// # Errors
/// [`Error::Invalid`] for `E = 0`; [`Error::Unsupported`] for sizes past the launch limits.
pub(crate) fn dispatch_index<R: Runtime>(
    b: &CubeBackend<R>,
    p: &Validated<PermuteProblem>,
    io: IndexIo<'_>,
    cc: Handle,
    sizes: Handle,
) -> Result<()> {
    let (slots, e, rows) = (p.tokens * p.k, p.experts, p.max_rows());
    let chunks = chunks(p);
    // NOTE: at least one cube, so that `row_to_token` is filled with no slot at all.
    let hist_cubes = chunks.max(1);
    let dim = CubeDim::new_1d(CHUNK as u32);
    // SAFETY: the caller's `cc` holds `E·chunks` i32 and `sizes` `E` i32 (each at least one).
    let cc_arg = || unsafe { ArrayArg::<R>::from_raw_parts(cc.clone(), (e * chunks).max(1)) };
    // SAFETY: as above.
    let sizes_arg = || unsafe { ArrayArg::<R>::from_raw_parts(sizes.clone(), e.max(1)) };
    let per_expert = cubes_1d(OP, e)?.ok_or_else(|| Error::invalid(OP, "experts = 0"))?;
    let per_chunk = cubes_1d(OP, hist_cubes)?.ok_or_else(|| Error::invalid(OP, "no chunk"))?;
    // NOTE: each launch relies on the ones before it; the client runs them in order.
    permute_hist::launch::<R>(
        &b.client,
        per_chunk.clone(),
        dim,
        array(io.ids),
        cc_arg(),
        array(io.row_to_token),
        array(io.tsr),
        b.flag_arg(),
        scalar(OP, slots)?,
        scalar(OP, rows)?,
        scalar(OP, e)?,
        scalar(OP, chunks)?,
        scalar(OP, hist_cubes)?,
        BadIndex::PermuteIds.code(),
    );
    permute_scan_chunks::launch::<R>(
        &b.client,
        per_expert,
        dim,
        cc_arg(),
        sizes_arg(),
        scalar(OP, e)?,
        scalar(OP, chunks)?,
        scalar(OP, p.align)?,
    );
    permute_scan_offsets::launch::<R>(
        &b.client,
        CubeCount::Static(1, 1, 1),
        dim,
        sizes_arg(),
        array(io.offsets),
        scalar(OP, e)?,
    );
    if chunks > 0 {
        permute_scatter::launch::<R>(
            &b.client,
            per_chunk,
            dim,
            array(io.ids),
            cc_arg(),
            array(io.offsets),
            array(io.tsr),
            array(io.row_to_token),
            scalar(OP, slots)?,
            scalar(OP, e)?,
            scalar(OP, p.k)?,
            scalar(OP, chunks)?,
        );
    }
    Ok(())
}
