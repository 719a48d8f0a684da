//! One f32 GEMM entry point over the `gemm` crate, with bounds checked before the unsafe call.

use gemm::Parallelism;
use moekit_ops::{Error, Result};

/// A read-only strided f32 matrix: element `(i, j)` is `data[i * rs + j * cs]`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Mat<'a> {
    /// Backing storage.
    pub data: &'a [f32],
    /// Row stride in elements.
    pub rs: usize,
    /// Column stride in elements.
    pub cs: usize,
}

impl<'a> Mat<'a> {
    /// A row-major matrix with `cols` columns.
    pub fn row_major(data: &'a [f32], cols: usize) -> Self {
        Mat { data, rs: cols, cs: 1 }
    }

    /// The transpose of a row-major matrix with `cols` columns (`(i, j)` reads `data[j * cols + i]`).
    pub fn transposed(data: &'a [f32], cols: usize) -> Self {
        Mat { data, rs: 1, cs: cols }
    }

    fn fits(&self, rows: usize, cols: usize) -> bool {
        rows == 0 || cols == 0 || (rows - 1) * self.rs + (cols - 1) * self.cs < self.data.len()
    }
}

/// Multiply-adds below which a GEMM runs on one thread: splitting smaller ones costs more
/// than it saves.
const PARALLEL_MIN_MACS: usize = 1 << 21;

/// Parallelism for one GEMM of `m x k x n` multiply-adds that may use the whole pool.
pub(crate) fn parallelism_for(m: usize, k: usize, n: usize) -> Parallelism {
    let threads = rayon::current_num_threads();
    if threads > 1 && m.saturating_mul(k).saturating_mul(n) >= PARALLEL_MIN_MACS {
        Parallelism::Rayon(threads)
    } else {
        Parallelism::None
    }
}

/// `c[i, j] (+)= Σ_l a[i, l] · b[l, j]` for `a [m, k]`, `b [k, n]`, `c [m, n]` row-major with
/// row stride `c_rs`, in f32. With `accumulate` the product is added to `c`, else it
/// overwrites `c`.
///
/// # Errors
/// [`Error::Invalid`] when a view is too short for its extent (an internal bug, reported
/// rather than risking an out-of-bounds access).
pub(crate) fn matmul(
    (m, k, n): (usize, usize, usize),
    a: Mat<'_>,
    b: Mat<'_>,
    c: &mut [f32],
    c_rs: usize,
    accumulate: bool,
    par: Parallelism,
) -> Result<()> {
    if m == 0 || n == 0 {
        return Ok(());
    }
    if !a.fits(m, k) || !b.fits(k, n) || (m - 1) * c_rs + n > c.len() || c_rs < n {
        return Err(Error::invalid("matmul", format!("views too short for {m}x{k}x{n}")));
    }
    if k == 0 {
        if !accumulate {
            c.chunks_mut(c_rs).take(m).for_each(|row| row[..n].fill(0.0));
        }
        return Ok(());
    }
    // SAFETY: the checks above keep every element the GEMM reads inside `a.data` and `b.data`
    // and every element it writes inside `c` (rows `0..m` at stride `c_rs`, columns `0..n`);
    // `c` is borrowed mutably, so no other reference aliases it.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            c.as_mut_ptr(),
            1,
            c_rs as isize,
            accumulate,
            a.data.as_ptr(),
            a.cs as isize,
            a.rs as isize,
            b.data.as_ptr(),
            b.cs as isize,
            b.rs as isize,
            1.0f32,
            1.0f32,
            false,
            false,
            false,
            par,
        );
    }
    Ok(())
}
