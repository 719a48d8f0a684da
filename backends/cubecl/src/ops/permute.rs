//! [`PermuteOps`] on cubecl. [`select`] picks the path: chunk histograms, scans, a stable
//! scatter and line-wide copies ([`fast`], kernels in [`crate::kernels::permute::scan`]), or
//! the portable one: dispatch in four launches (segment sizes, offsets, stable row assignment
//! by a per-expert scan of every slot, row copy) and the element-wise combine (kernels in
//! [`crate::kernels::permute`]).

mod fast;
pub(crate) mod index;

use super::gemm::{float_elem, scalar};
use super::{array, grid, placeholder, BLOCK};
use crate::flag::BadIndex;
use crate::kernels::permute;
use crate::{CubeBackend, CubeBuffer};
use cubecl::prelude::*;
use moekit_ops::{CombineIo, CombineProblem, PermuteIo, PermuteOps, PermuteProblem, Result, Validated};

/// Environment override: `simple` forces the portable kernels, `scalar` the scalable ones
/// with lines of one element. Anything else (or unset): the scalable ones in the widest lines
/// the runtime optimises for that divide the hidden size.
pub(crate) const PERMUTE_ENV: &str = "MOEKIT_CUBECL_PERMUTE";

/// The dispatch/combine path.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum PermutePath {
    /// The portable per-expert-scan kernels.
    Simple,
    /// The scalable kernels, in lines of this many elements.
    Scan(usize),
}

/// Chooses the path for rows of `hidden` elements of `elem_size` bytes; `env` is
/// [`PERMUTE_ENV`]'s value, `lines` the runtime's optimised line sizes, widest first.
fn select(env: Option<&str>, hidden: usize, mut lines: impl Iterator<Item = usize>) -> PermutePath {
    match env {
        Some("simple") => PermutePath::Simple,
        Some("scalar") => PermutePath::Scan(1),
        _ => PermutePath::Scan(lines.find(|&l| l > 0 && hidden % l == 0).unwrap_or(1)),
    }
}

impl<R: Runtime> CubeBackend<R> {
    /// The dispatch/combine path for `hidden` elements of dtype `dtype` a row.
    fn permute_path(&self, dtype: moekit_ops::DType, hidden: usize) -> PermutePath {
        let env = std::env::var(PERMUTE_ENV).ok();
        select(env.as_deref(), hidden, self.client.io_optimized_vector_sizes(dtype.size()))
    }

    /// Dispatch on the portable path.
    ///
    /// # Errors
    /// [`moekit_ops::Error::Unsupported`] for sizes past the launch limits.
    fn permute_simple(&self, p: &Validated<PermuteProblem>, io: PermuteIo<'_, CubeBuffer>) -> Result<()> {
        const OP: &str = "permute";
        let elem = float_elem(OP, p.dtype)?;
        let (slots, e, rows) = (p.tokens * p.k, p.experts, p.max_rows());
        let dim = CubeDim::new_1d(BLOCK as u32);
        let per_expert = grid(OP, e)?.ok_or_else(|| moekit_ops::Error::invalid(OP, "experts = 0"))?;
        let sizes_handle = self.scratch(OP, 4 * e)?;
        // SAFETY: `sizes_handle` holds `E` i32.
        let sizes = || unsafe { ArrayArg::<R>::from_raw_parts(sizes_handle.clone(), e) };
        // NOTE: `permute_assign` and `permute_copy` rely on the launches before them; the
        // client runs launches in order on one stream.
        permute::permute_sizes::launch::<R>(
            &self.client,
            per_expert.clone(),
            dim,
            array(io.ids),
            sizes(),
            array(io.token_slot_to_row),
            self.flag_arg(),
            scalar(OP, slots)?,
            scalar(OP, e)?,
            scalar(OP, p.align)?,
            BadIndex::PermuteIds.code(),
        );
        permute::permute_offsets::launch::<R>(
            &self.client,
            CubeCount::Static(1, 1, 1),
            CubeDim::new_1d(1),
            sizes(),
            array(io.offsets),
            scalar(OP, e)?,
        );
        permute::permute_assign::launch::<R>(
            &self.client,
            per_expert,
            dim,
            array(io.ids),
            array(io.offsets),
            array(io.token_slot_to_row),
            array(io.row_to_token),
            scalar(OP, slots)?,
            scalar(OP, e)?,
            scalar(OP, p.k)?,
        );
        if let Some(count) = grid(OP, rows * p.hidden)? {
            permute::permute_copy::launch::<R>(
                &self.client,
                count,
                dim,
                array(io.hidden),
                array(io.offsets),
                array(io.row_to_token),
                array(io.permuted),
                scalar(OP, rows)?,
                scalar(OP, p.hidden)?,
                scalar(OP, e)?,
                elem,
            );
        }
        Ok(())
    }

    /// The combine on the portable path.
    ///
    /// # Errors
    /// [`moekit_ops::Error::Unsupported`] for sizes past the launch limits.
    fn combine_simple(&self, p: &Validated<CombineProblem>, io: CombineIo<'_, CubeBuffer>) -> Result<()> {
        const OP: &str = "unpermute_combine";
        let elem = float_elem(OP, p.dtype)?;
        let Some(count) = grid(OP, p.tokens * p.hidden)? else { return Ok(()) };
        permute::combine::launch::<R>(
            &self.client,
            count,
            CubeDim::new_1d(BLOCK as u32),
            array(io.y),
            array(io.weights),
            array(io.token_slot_to_row),
            io.add.map_or_else(|| placeholder(self), array),
            array(io.out),
            self.flag_arg(),
            scalar(OP, p.tokens)?,
            scalar(OP, p.hidden)?,
            scalar(OP, p.k)?,
            scalar(OP, p.rows)?,
            BadIndex::CombineRows.code(),
            p.add,
            elem,
        );
        Ok(())
    }
}

impl<R: Runtime> PermuteOps for CubeBackend<R> {
    fn permute(&self, p: &Validated<PermuteProblem>, io: PermuteIo<'_, CubeBuffer>) -> Result<()> {
        match self.permute_path(p.dtype, p.hidden) {
            PermutePath::Simple => self.permute_simple(p, io),
            PermutePath::Scan(line) => fast::permute_scan(self, p, io, line),
        }
    }

    fn unpermute_combine(&self, p: &Validated<CombineProblem>, io: CombineIo<'_, CubeBuffer>) -> Result<()> {
        match self.permute_path(p.dtype, p.hidden) {
            PermutePath::Simple => self.combine_simple(p, io),
            PermutePath::Scan(line) => fast::combine_scan(self, p, io, line),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn widest_dividing_line_unless_overridden() {
        let lines = || [8usize, 4, 2, 1].into_iter();
        assert_eq!(select(None, 2048, lines()), PermutePath::Scan(8));
        assert_eq!(select(None, 6, lines()), PermutePath::Scan(2));
        assert_eq!(select(None, 7, lines()), PermutePath::Scan(1));
        assert_eq!(select(Some("scalar"), 2048, lines()), PermutePath::Scan(1));
        assert_eq!(select(Some("simple"), 2048, lines()), PermutePath::Simple);
    }
}
