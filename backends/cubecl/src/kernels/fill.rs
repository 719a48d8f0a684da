//! Filling and copying device memory (row copies in [`copy_words`] / [`copy_halves`]). Filling fresh device memory: zeros written by the device, so an allocation costs no host
//! upload (a 512 MB intermediate of the MoE layer would otherwise cross PCIe as zeros).

use super::glue::unit_index;
use cubecl::ir::ElemType;
use cubecl::prelude::*;

/// Writes zero to every word of `out`; one unit per word (1-D launch of any cube count).
#[cube(launch)]
pub fn zero_words(out: &mut Array<u32>) {
    let i = unit_index();
    if i < out.len() {
        out[i] = 0u32;
    }
}

/// Copies `n` words of `src` from word `src_at` to `dst` at word `dst_at`; one unit per word.
#[cube(launch)]
pub fn copy_words(src: &Array<u32>, dst: &mut Array<u32>, src_at: u32, dst_at: u32, n: u32) {
    let i = unit_index();
    if i < n as usize {
        dst[dst_at as usize + i] = src[src_at as usize + i];
    }
}

/// Copies `n` 2-byte elements (moved as `F`, never converted) of `src` from element `src_at`
/// to `dst` at `dst_at`: the copy of 2-byte dtypes whose range does not fall on whole words.
#[cube(launch)]
pub fn copy_halves<F: Float>(
    src: &Array<F>,
    dst: &mut Array<F>,
    src_at: u32,
    dst_at: u32,
    n: u32,
    #[define(F)] _dtype: ElemType,
) {
    let i = unit_index();
    if i < n as usize {
        dst[dst_at as usize + i] = src[src_at as usize + i];
    }
}
