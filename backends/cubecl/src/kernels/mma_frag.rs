//! The manual-MMA fragment operations shared by the kernels that use cubecl's
//! [`MmaDefinition`] at m16n8k16 (the grouped GEMMs, the router's gate, attention):
//! `ldmatrix.x4` loads from shared memory, one n8 tile's B fragment out of a load, zeroed
//! accumulators and a fragment row of four MMAs. Register layouts: PTX ISA (emulated on the
//! CPU by `mma_emulate`).

use cubecl::cmma::{MatrixIdent, MmaDefinition};
use cubecl::prelude::*;

/// Two elements: one 32-bit register of a 16-bit fragment, or two f32 of an accumulator (the
/// vector size cubecl's CUDA target gives m16n8k16 for f16/bf16 with f32 accumulators).
pub(crate) type P2 = Const<2>;
/// Rows of an m16 fragment and depth of a k16 step.
pub(crate) const FRAG: usize = 16;
/// Columns of an n8 tile.
pub(crate) const TN: usize = 8;

/// A zeroed m16n8 accumulator (2 vectors of 2 f32 per lane).
#[cube]
pub(crate) fn acc_zero() -> Array<Vector<f32, P2>> {
    let mut c = Array::<Vector<f32, P2>>::new(2usize);
    c[0usize] = Vector::<f32, P2>::zeroed();
    c[1usize] = Vector::<f32, P2>::zeroed();
    c
}

/// Four 8×8 matrices by one `ldmatrix.x4` (`.trans` with `trans`) from `stage` (vectors of
/// `vec` elements), this lane's row starting at element `at` (a multiple of 8: 16-byte
/// aligned). NOTE: the ident only names the operand; cubecl lowers A and B loads alike.
#[cube]
pub(crate) fn load_frag<F: Float, V: Size>(
    stage: &SharedMemory<Vector<F, V>>,
    at: usize,
    #[comptime] vec: usize,
    #[comptime] trans: bool,
) -> Array<Vector<F, P2>> {
    let def = MmaDefinition::<F, F, f32>::new(FRAG, TN, FRAG);
    let row = stage.slice(at / vec, at / vec + comptime!(TN.div_ceil(vec)));
    def.load_matrix::<Vector<F, V>, P2>(&row, MatrixIdent::A, 4usize, trans)
}

/// Registers `i, i + 1` of an `ldmatrix.x4` result: one n8 tile's B fragment.
#[cube]
pub(crate) fn half<F: Float>(regs: &Array<Vector<F, P2>>, #[comptime] i: usize) -> Array<Vector<F, P2>> {
    let mut b = Array::<Vector<F, P2>>::new(2usize);
    b[0usize] = regs[i];
    b[1usize] = regs[i + 1];
    b
}

/// One fragment row: `c_j += a · b_j` for four n8 tiles.
#[cube]
#[allow(clippy::too_many_arguments)]
pub(crate) fn mma_row<F: Float>(
    a: &Array<Vector<F, P2>>,
    b0: &Array<Vector<F, P2>>,
    b1: &Array<Vector<F, P2>>,
    b2: &Array<Vector<F, P2>>,
    b3: &Array<Vector<F, P2>>,
    c0: &mut Array<Vector<f32, P2>>,
    c1: &mut Array<Vector<f32, P2>>,
    c2: &mut Array<Vector<f32, P2>>,
    c3: &mut Array<Vector<f32, P2>>,
) {
    let def = MmaDefinition::<F, F, f32>::new(FRAG, TN, FRAG);
    def.execute_inplace(a, b0, c0);
    def.execute_inplace(a, b1, c1);
    def.execute_inplace(a, b2, c2);
    def.execute_inplace(a, b3, c3);
}
