//! [`PermuteOps`] on cubecl: dispatch in four launches (segment sizes, offsets, stable row
//! assignment, row copy) and the weighted combine (kernels in [`crate::kernels::permute`]).

use super::gemm::{float_elem, scalar};
use super::{array, grid, placeholder, BLOCK};
use crate::flag::BadIndex;
use crate::kernels::permute;
use crate::{CubeBackend, CubeBuffer};
use cubecl::prelude::*;
use moekit_ops::{CombineIo, CombineProblem, PermuteIo, PermuteOps, PermuteProblem, Result, Validated};

impl<R: Runtime> PermuteOps for CubeBackend<R> {
    fn permute(&self, p: &Validated<PermuteProblem>, io: PermuteIo<'_, CubeBuffer>) -> Result<()> {
        const OP: &str = "permute";
        let elem = float_elem(OP, p.dtype)?;
        let (slots, e, rows) = (p.tokens * p.k, p.experts, p.max_rows());
        let dim = CubeDim::new_1d(BLOCK as u32);
        let per_expert = grid(OP, e)?.ok_or_else(|| moekit_ops::Error::invalid(OP, "experts = 0"))?;
        let sizes_handle = self.client.empty(4 * e);
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

    fn unpermute_combine(&self, p: &Validated<CombineProblem>, io: CombineIo<'_, CubeBuffer>) -> Result<()> {
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
