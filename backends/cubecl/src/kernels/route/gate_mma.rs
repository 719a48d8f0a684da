//! The router's gate GEMM on manual MMA (`ldmatrix` + `mma.sync` m16n8k16, f32 accumulators):
//! `logits [T, E] f32 = hidden [T, H] · gate [H, E]` for f16/bf16 inputs, the same precision
//! as [`super::gate_cmma::gate_logits_cmma`] (exact products of the half inputs, f32 sums, f32 logits).
//! For `H` and `E` multiples of 8 (16-byte staged vectors, planes of 32); other shapes keep
//! the `wmma` kernel (see `crate::ops::route::select`).
//!
//! A cube of `(32, 4)` units owns [`MB`] tokens × [`NB`] experts (all of them when `E <= NB`,
//! so `hidden` is read once); its planes form a 2 × 2 grid, plane `(pr, pc)` accumulating rows
//! `32·pr ..+32` (2 fragment rows) × columns `64·pc ..+64` (8 n8 tiles): 16 accumulators.
//! Depth steps of [`KB`] go through two shared stages; the next step's vectors are loaded into
//! registers (as 32-bit words) before the current step's matrix work and stored after it.
//! `hidden` is staged row-major `[MB, KB]` (A fragments by `ldmatrix.x4`), the gate as it
//! lies, `[KB, NB]` (B fragments by `ldmatrix.x4.trans`). Logits go straight from the
//! accumulators to `out`.
//!
//! Index map (checked by the CPU emulation in `gate_mma_emulate.rs`): staged x vector
//! `v = unit + 128·i` is row `v / 8`, depth `8·(v % 8)`; staged gate vector `v` is depth
//! `v / 16`, column `8·(v % 16)`. Lane `l` addresses A row `32·pr + 16·fi + l % 16`, depth
//! `8·(l / 16)` (+16 per sub-step) and, for the B load `j`, depth `8·((l/8) % 2) + l % 8`,
//! column `64·pc + 16·j + 8·(l / 16)`: registers 0-1 are n8 tile `2j`, 2-3 tile `2j + 1`.
//! Accumulator element `n` of lane `l` in tile `t` of fragment row `fi` is output
//! `(m0 + 32·pr + 16·fi + l/4 + 8·(n/2), n0 + 64·pc + 8·t + 2·(l%4) + n%2)`.
//!
//! NOTE: launched unchecked: staged reads past `T`, `H` or `E` read element vector 0 (the
//! arrays are non-empty when a launch happens) and stage zeros; writes are guarded by `T`, `E`.

use crate::kernels::mma_frag::{acc_zero, half, load_frag};
use cubecl::cmma::{MatrixIdent, MmaDefinition};
use cubecl::ir::ElemType;
use cubecl::prelude::*;

/// Tokens of a cube's block.
pub const MB: usize = 64;
/// Experts of a cube's block.
pub const NB: usize = 128;
/// Depth of one staged step.
pub const KB: usize = 64;
/// Planes per cube (2 × 2).
pub const PLANES: usize = 4;
/// Lanes per plane (the lane maps assume 32).
pub const LANES: usize = 32;
/// Elements per staged vector (16 bytes of f16/bf16).
pub const VEC: usize = 8;
/// Padding of a staged row in elements: rows 16 bytes apart modulo 128 (no `ldmatrix` bank
/// conflicts).
const PAD: usize = 8;
/// Row stride of the staged hidden tile `[MB, KB]`.
pub const LDA: usize = KB + PAD;
/// Row stride of the staged gate tile `[KB, NB]`.
pub const LDB: usize = NB + PAD;
/// Edge of a fragment.
pub const FRAG: usize = 16;
/// Columns of an n8 tile.
pub const TN: usize = 8;
/// Units per cube.
const UNITS: usize = LANES * PLANES;
/// Staged x vectors per unit and step.
pub const PER_A: usize = MB * KB / VEC / UNITS;
/// Staged gate vectors per unit and step.
pub const PER_B: usize = KB * NB / VEC / UNITS;

/// Two elements: one 32-bit register of a 16-bit fragment, or two f32 of an accumulator.
type P2 = Const<2>;
/// One staged 16-byte vector as 32-bit words.
type P4 = Const<4>;

/// Shared memory of one cube in bytes (two stages of both tiles, 16-bit elements).
pub const fn gate_mma_shared_bytes() -> usize {
    2 * (MB * LDA + KB * LDB) * 2
}

/// The gate GEMM; see the module doc. `x` and `gate` as vectors of [`VEC`]; launch with cubes
/// of `(32, PLANES)` units and `(ceil(T / MB), ceil(E / NB))` cubes.
#[cube(launch_unchecked)]
pub fn gate_logits_mma<F: Float, V: Size>(
    x: &Array<Vector<F, V>>,
    gate: &Array<Vector<F, V>>,
    out: &mut Array<f32>,
    tokens: u32,
    hidden: u32,
    experts: u32,
    #[define(F)] _dtype: ElemType,
) {
    let unit = UNIT_POS as usize;
    let lane = UNIT_POS_X as usize;
    let plane = UNIT_POS_Y as usize;
    let pr = plane / 2;
    let pc = plane % 2;
    let (t_count, h_count, e_count) = (tokens as usize, hidden as usize, experts as usize);
    let m0 = CUBE_POS_X as usize * MB;
    let n0 = CUBE_POS_Y as usize * NB;

    let a_stage = comptime!(MB * LDA / VEC);
    let b_stage = comptime!(KB * LDB / VEC);
    let mut sa = SharedMemory::<Vector<F, V>>::new_aligned(comptime!(2 * MB * LDA / VEC), 32usize);
    let mut sb = SharedMemory::<Vector<F, V>>::new_aligned(comptime!(2 * KB * LDB / VEC), 32usize);
    let mut ra = Array::<Vector<u32, P4>>::new(PER_A);
    let mut rb = Array::<Vector<u32, P4>>::new(PER_B);
    let mut ra_ok = Array::<u32>::new(PER_A);
    let mut rb_ok = Array::<u32>::new(PER_B);

    // Hoisted staging maps: x vector `i` of this unit is row `a_r + 16·i`, depth `a_k`; gate
    // vector `i` is depth `b_k + 8·i`, column `b_c` (the same for every `i`).
    let a_r = unit / comptime!(KB / VEC);
    let a_k = unit % comptime!(KB / VEC) * VEC;
    let b_k = unit / comptime!(NB / VEC);
    let b_c = unit % comptime!(NB / VEC) * VEC;
    let a_src = (m0 + a_r) * h_count + a_k;
    let a_slot = a_r * comptime!(LDA / VEC) + a_k / VEC;
    let b_src = b_k * e_count + n0 + b_c;
    let b_slot = b_k * comptime!(LDB / VEC) + b_c / VEC;
    let col_ok = n0 + b_c < e_count;

    let mut c00 = acc_zero();
    let mut c01 = acc_zero();
    let mut c02 = acc_zero();
    let mut c03 = acc_zero();
    let mut c04 = acc_zero();
    let mut c05 = acc_zero();
    let mut c06 = acc_zero();
    let mut c07 = acc_zero();
    let mut c10 = acc_zero();
    let mut c11 = acc_zero();
    let mut c12 = acc_zero();
    let mut c13 = acc_zero();
    let mut c14 = acc_zero();
    let mut c15 = acc_zero();
    let mut c16 = acc_zero();
    let mut c17 = acc_zero();

    // This lane's `ldmatrix` row addresses inside a stage, in elements, at sub-step 0.
    let a_lane = (pr * comptime!(2 * FRAG) + lane % FRAG) * LDA + lane / FRAG * TN;
    let b_lane = (lane / TN % 2 * TN + lane % TN) * LDB + pc * comptime!(4 * FRAG) + lane / FRAG * TN;

    let steps = h_count.div_ceil(KB);
    load_a(x, &mut ra, &mut ra_ok, a_src, m0 + a_r, t_count, h_count, a_k < h_count);
    load_b(gate, &mut rb, &mut rb_ok, b_src, b_k, h_count, e_count, col_ok);
    store(&mut sa, &ra, &ra_ok, a_slot, PER_A, comptime!(16 * LDA / VEC));
    store(&mut sb, &rb, &rb_ok, b_slot, PER_B, comptime!(8 * LDB / VEC));
    sync_cube();

    for step in 0..steps {
        let cur = step % 2;
        let next = step + 1 < steps;
        let k0n = (step + 1) * KB;
        // NOTE: the branch keeps the loads above the matrix work (see the fourth grouped GEMM).
        if next {
            let k_ok = a_k + k0n < h_count;
            load_a(x, &mut ra, &mut ra_ok, a_src + k0n, m0 + a_r, t_count, h_count, k_ok);
            load_b(gate, &mut rb, &mut rb_ok, b_src + k0n * e_count, b_k + k0n, h_count, e_count, col_ok);
        }

        let sa0 = cur * comptime!(MB * LDA) + a_lane;
        let sb0 = cur * comptime!(KB * LDB) + b_lane;
        #[unroll]
        for ks in 0..comptime!(KB / FRAG) {
            let bk = sb0 + comptime!(ks * FRAG * LDB);
            let b0 = load_frag::<F, V>(&sb, bk, VEC, true);
            let b1 = load_frag::<F, V>(&sb, bk + FRAG, VEC, true);
            let b2 = load_frag::<F, V>(&sb, bk + comptime!(2 * FRAG), VEC, true);
            let b3 = load_frag::<F, V>(&sb, bk + comptime!(3 * FRAG), VEC, true);
            let ak = sa0 + comptime!(ks * FRAG);
            let a = load_frag::<F, V>(&sa, ak, VEC, false);
            mma_row::<F>(
                &a, &b0, &b1, &b2, &b3, &mut c00, &mut c01, &mut c02, &mut c03, &mut c04, &mut c05, &mut c06, &mut c07,
            );
            let a = load_frag::<F, V>(&sa, ak + comptime!(FRAG * LDA), VEC, false);
            mma_row::<F>(
                &a, &b0, &b1, &b2, &b3, &mut c10, &mut c11, &mut c12, &mut c13, &mut c14, &mut c15, &mut c16, &mut c17,
            );
        }

        if next {
            let st = (step + 1) % 2;
            store(&mut sa, &ra, &ra_ok, st * a_stage + a_slot, PER_A, comptime!(16 * LDA / VEC));
            store(&mut sb, &rb, &rb_ok, st * b_stage + b_slot, PER_B, comptime!(8 * LDB / VEC));
        }
        sync_cube();
    }

    let row0 = m0 + pr * comptime!(2 * FRAG);
    let col0 = n0 + pc * comptime!(4 * FRAG);
    write_row::<F>(out, row0, col0, t_count, e_count, &c00, &c01, &c02, &c03, &c04, &c05, &c06, &c07);
    let row1 = row0 + FRAG;
    write_row::<F>(out, row1, col0, t_count, e_count, &c10, &c11, &c12, &c13, &c14, &c15, &c16, &c17);
}

/// This unit's x vectors of one step into `ra` (see the fourth grouped GEMM's NOTE on why the
/// loads are unconditional and the zeroing waits for [`store`]): vector `i` starts at element
/// `at + 16·i·H` of row `row + 16·i`; real data where `k_ok` and the row is below `T`, else
/// vector 0 is read and `ok` says to stage zero.
#[cube]
#[allow(clippy::too_many_arguments)]
fn load_a<F: Float, V: Size>(
    x: &Array<Vector<F, V>>,
    ra: &mut Array<Vector<u32, P4>>,
    ok: &mut Array<u32>,
    at: usize,
    row: usize,
    t_count: usize,
    h_count: usize,
    k_ok: bool,
) {
    #[unroll]
    for i in 0..PER_A {
        let rows = comptime!(i * MB / PER_A);
        let mut src = 0usize;
        let mut real = 0u32;
        if k_ok && row + rows < t_count {
            src = (at + rows * h_count) / VEC;
            real = 1u32;
        }
        ra[i] = Vector::<u32, P4>::reinterpret(x[src]);
        ok[i] = real;
    }
}

/// This unit's gate vectors of one step into `rb`: vector `i` starts at element `at + 8·i·E`,
/// depth `k + 8·i`; real data where `col_ok` and the depth is below `H` (else as [`load_a`]).
#[cube]
#[allow(clippy::too_many_arguments)]
fn load_b<F: Float, V: Size>(
    gate: &Array<Vector<F, V>>,
    rb: &mut Array<Vector<u32, P4>>,
    ok: &mut Array<u32>,
    at: usize,
    k: usize,
    h_count: usize,
    e_count: usize,
    col_ok: bool,
) {
    #[unroll]
    for i in 0..PER_B {
        let depth = comptime!(i * KB / PER_B);
        let mut src = 0usize;
        let mut real = 0u32;
        if col_ok && k + depth < h_count {
            src = (at + depth * e_count) / VEC;
            real = 1u32;
        }
        rb[i] = Vector::<u32, P4>::reinterpret(gate[src]);
        ok[i] = real;
    }
}

/// Stores the `n` staged vectors `regs` at slots `slot + i·step` of a stage (zero where `ok` is 0).
#[cube]
fn store<F: Float, V: Size>(
    stage: &mut SharedMemory<Vector<F, V>>,
    regs: &Array<Vector<u32, P4>>,
    ok: &Array<u32>,
    slot: usize,
    #[comptime] n: usize,
    #[comptime] step: usize,
) {
    #[unroll]
    for i in 0..n {
        let at = slot + comptime!(i * step);
        // NOTE: a select, not a branch: ptxas made each store of a branch its own basic block.
        stage[at] = Vector::<F, V>::reinterpret(select(ok[i] == 1, regs[i], Vector::<u32, P4>::zeroed()));
    }
}

/// One fragment row: `c_t += a · b_t` for the plane's eight n8 tiles (tiles `2j, 2j + 1` from
/// the B load `j`).
#[cube]
#[allow(clippy::too_many_arguments)]
fn mma_row<F: Float>(
    a: &Array<Vector<F, P2>>,
    b0: &Array<Vector<F, P2>>,
    b1: &Array<Vector<F, P2>>,
    b2: &Array<Vector<F, P2>>,
    b3: &Array<Vector<F, P2>>,
    c0: &mut Array<Vector<f32, P2>>,
    c1: &mut Array<Vector<f32, P2>>,
    c2: &mut Array<Vector<f32, P2>>,
    c3: &mut Array<Vector<f32, P2>>,
    c4: &mut Array<Vector<f32, P2>>,
    c5: &mut Array<Vector<f32, P2>>,
    c6: &mut Array<Vector<f32, P2>>,
    c7: &mut Array<Vector<f32, P2>>,
) {
    let def = MmaDefinition::<F, F, f32>::new(FRAG, TN, FRAG);
    def.execute_inplace(a, &half(b0, 0usize), c0);
    def.execute_inplace(a, &half(b0, 2usize), c1);
    def.execute_inplace(a, &half(b1, 0usize), c2);
    def.execute_inplace(a, &half(b1, 2usize), c3);
    def.execute_inplace(a, &half(b2, 0usize), c4);
    def.execute_inplace(a, &half(b2, 2usize), c5);
    def.execute_inplace(a, &half(b3, 0usize), c6);
    def.execute_inplace(a, &half(b3, 2usize), c7);
}

/// Writes one fragment row (first output row `row0`) of the plane from its tiles `c0..c7`
/// (tile `t` at output column `col0 + 8·t`), rows below `T` and columns below `E` only.
#[cube]
#[allow(clippy::too_many_arguments)]
fn write_row<F: Float>(
    out: &mut Array<f32>,
    row0: usize,
    col0: usize,
    t_count: usize,
    e_count: usize,
    c0: &Array<Vector<f32, P2>>,
    c1: &Array<Vector<f32, P2>>,
    c2: &Array<Vector<f32, P2>>,
    c3: &Array<Vector<f32, P2>>,
    c4: &Array<Vector<f32, P2>>,
    c5: &Array<Vector<f32, P2>>,
    c6: &Array<Vector<f32, P2>>,
    c7: &Array<Vector<f32, P2>>,
) {
    let def = MmaDefinition::<F, F, f32>::new(FRAG, TN, FRAG);
    let lane = UNIT_POS_X;
    #[unroll]
    for n in 0..4usize {
        let (r, col) = def.position_of_nth(lane, comptime!(n as u32), MatrixIdent::Accumulator);
        let v = comptime!(n / 2);
        let h = comptime!(n % 2);
        let row = row0 + r as usize;
        if row < t_count {
            let base = row * e_count;
            let oc = col0 + col as usize;
            put(out, base, oc, e_count, c0[v][h]);
            put(out, base, oc + TN, e_count, c1[v][h]);
            put(out, base, oc + comptime!(2 * TN), e_count, c2[v][h]);
            put(out, base, oc + comptime!(3 * TN), e_count, c3[v][h]);
            put(out, base, oc + comptime!(4 * TN), e_count, c4[v][h]);
            put(out, base, oc + comptime!(5 * TN), e_count, c5[v][h]);
            put(out, base, oc + comptime!(6 * TN), e_count, c6[v][h]);
            put(out, base, oc + comptime!(7 * TN), e_count, c7[v][h]);
        }
    }
}

/// `out[base + col] = value` where `col < E`.
#[cube]
fn put(out: &mut Array<f32>, base: usize, col: usize, e_count: usize, value: f32) {
    if col < e_count {
        out[base + col] = value;
    }
}

#[cfg(test)]
#[path = "gate_mma_emulate.rs"]
mod emulate;
