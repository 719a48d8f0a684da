//! Small helpers shared by the op launchers: kernel names per dtype, grid sizes, errors.

use crate::NAME;
use cudarc::driver::{DriverError, LaunchConfig};
use moekit_ops::{DType, Error};

/// The kernel name for a float dtype: `base_f32`, `base_f16` or `base_bf16` (see
/// `MOEKIT_FLOAT_KERNELS` in `kernels/common.cuh`).
pub(crate) fn kernel_name(base: &str, dtype: DType) -> String {
    format!("{base}_{}", dtype.name())
}

/// A 1-D launch of `blocks` blocks (at least one) of `threads` threads.
pub(crate) fn blocks(blocks: usize, threads: u32) -> LaunchConfig {
    LaunchConfig { grid_dim: (blocks.max(1) as u32, 1, 1), block_dim: (threads, 1, 1), shared_mem_bytes: 0 }
}

/// A 1-D launch covering `n` items with `threads` threads per block.
pub(crate) fn cover(n: usize, threads: u32) -> LaunchConfig {
    blocks(n.div_ceil(threads as usize), threads)
}

/// Map a launch error to [`Error::Device`] naming the op.
pub(crate) fn launch_err(op: &'static str) -> impl FnOnce(DriverError) -> Error {
    move |e| Error::Device { op, backend: NAME, msg: format!("launch: {e}") }
}

/// A size the problem validated to fit in i32, as the kernels take it.
pub(crate) fn i32_of(n: usize) -> i32 {
    // NOTE: every problem's validate() rejects sizes past i32::MAX, so this never saturates
    // on a validated problem.
    i32::try_from(n).unwrap_or(i32::MAX)
}
