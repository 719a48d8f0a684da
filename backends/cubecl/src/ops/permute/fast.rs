//! The scalable dispatch (five launches: chunk histograms, chunk scan per expert, offsets
//! scan, scatter, line copy) and combine (one launch), kernels in
//! [`crate::kernels::permute::scan`].

use super::super::gemm::{float_elem, scalar};
use super::super::{array, cubes_1d};
use crate::flag::BadIndex;
use crate::kernels::permute::scan::{
    combine_lines, permute_copy_rows, permute_copy_tokens, permute_hist, permute_scan_chunks, permute_scan_offsets,
    permute_scatter, CHUNK,
};
use crate::{CubeBackend, CubeBuffer};
use cubecl::prelude::*;
use moekit_ops::{CombineIo, CombineProblem, Error, PermuteIo, PermuteProblem, Result, Validated};

/// Dispatch in lines of `line` elements (`line` divides `H`).
///
/// # Errors
/// [`Error::Invalid`] for `E = 0`; [`Error::Unsupported`] for sizes past the launch limits.
pub(super) fn permute_scan<R: Runtime>(
    b: &CubeBackend<R>,
    p: &Validated<PermuteProblem>,
    io: PermuteIo<'_, CubeBuffer>,
    line: usize,
) -> Result<()> {
    const OP: &str = "permute";
    let elem = float_elem(OP, p.dtype)?;
    let (slots, e, rows) = (p.tokens * p.k, p.experts, p.max_rows());
    let chunks = slots.div_ceil(CHUNK);
    // NOTE: at least one cube, so that `row_to_token` is filled with no slot at all (T = 0
    // with alignment padding rows).
    let hist_cubes = chunks.max(1);
    let dim = CubeDim::new_1d(CHUNK as u32);
    let cc = b.client.empty(4 * (e * chunks).max(1));
    let sizes = b.client.empty(4 * e.max(1));
    // SAFETY: `cc` holds `E·chunks` i32 and `sizes` `E` i32 (each at least one).
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
        array(io.token_slot_to_row),
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
            array(io.token_slot_to_row),
            array(io.row_to_token),
            scalar(OP, slots)?,
            scalar(OP, e)?,
            scalar(OP, p.k)?,
            scalar(OP, chunks)?,
        );
    }
    let lines = p.hidden / line;
    if p.align == 1 {
        // NOTE: every row of `R = T·k` is some slot's when the ids are valid; with bad ids
        // (recorded, reported at the next sync) rows of no slot keep their content.
        if let Some(count) = cubes_1d(OP, p.tokens)? {
            permute_copy_tokens::launch::<R>(
                &b.client,
                count,
                dim,
                line,
                array(io.hidden),
                array(io.token_slot_to_row),
                array(io.permuted),
                scalar(OP, p.tokens)?,
                scalar(OP, lines)?,
                scalar(OP, p.k)?,
                scalar(OP, rows)?,
                elem,
            );
        }
    } else if let Some(count) = cubes_1d(OP, rows)? {
        permute_copy_rows::launch::<R>(
            &b.client,
            count,
            dim,
            line,
            array(io.hidden),
            array(io.row_to_token),
            array(io.permuted),
            scalar(OP, rows)?,
            scalar(OP, lines)?,
            scalar(OP, p.tokens)?,
            elem,
        );
    }
    Ok(())
}

/// The combine in lines of `line` elements (`line` divides `H`).
///
/// # Errors
/// [`Error::Unsupported`] for sizes past the launch limits.
pub(super) fn combine_scan<R: Runtime>(
    b: &CubeBackend<R>,
    p: &Validated<CombineProblem>,
    io: CombineIo<'_, CubeBuffer>,
    line: usize,
) -> Result<()> {
    const OP: &str = "unpermute_combine";
    let elem = float_elem(OP, p.dtype)?;
    let Some(count) = cubes_1d(OP, p.tokens)? else { return Ok(()) };
    // NOTE: the placeholder for an absent `add` is one element; a line-wide array over it is
    // never read (`has_add` is false), but its length must be a whole line.
    let add = match io.add {
        Some(a) => array(a),
        None => {
            let handle = b.client.create_from_slice(&vec![0u8; 4 * line]);
            // SAFETY: the handle holds `line` elements of every dtype moekit launches with.
            unsafe { ArrayArg::from_raw_parts(handle, line) }
        }
    };
    combine_lines::launch::<R>(
        &b.client,
        count,
        CubeDim::new_1d(CHUNK as u32),
        line,
        array(io.y),
        array(io.weights),
        array(io.token_slot_to_row),
        add,
        array(io.out),
        b.flag_arg(),
        scalar(OP, p.tokens)?,
        scalar(OP, p.hidden / line)?,
        scalar(OP, p.k)?,
        scalar(OP, p.rows)?,
        BadIndex::CombineRows.code(),
        p.add,
        elem,
    );
    Ok(())
}
