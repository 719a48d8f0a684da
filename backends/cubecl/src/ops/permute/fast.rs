//! The scalable dispatch (five launches: chunk histograms, chunk scan per expert, offsets
//! scan, scatter, line copy) and combine (one launch), kernels in
//! [`crate::kernels::permute::scan`].

use super::super::gemm::{float_elem, scalar};
use super::super::{array, cubes_1d};
use super::index;
use crate::flag::BadIndex;
use crate::kernels::permute::scan::{combine_lines, permute_copy_rows, permute_copy_tokens, CHUNK};
use crate::{CubeBackend, CubeBuffer};
use cubecl::prelude::*;
use moekit_ops::{CombineIo, CombineProblem, PermuteIo, PermuteProblem, Result, Validated};

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
    let (e, rows) = (p.experts, p.max_rows());
    let chunks = index::chunks(p);
    let cc = b.scratch(OP, 4 * (e * chunks).max(1))?;
    let sizes = b.scratch(OP, 4 * e.max(1))?;
    index::dispatch_index(
        b,
        p,
        index::IndexIo { ids: io.ids, offsets: io.offsets, row_to_token: io.row_to_token, tsr: io.token_slot_to_row },
        cc,
        sizes,
    )?;
    let dim = CubeDim::new_1d(CHUNK as u32);
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
