//! Filling fresh device memory: zeros written by the device, so an allocation costs no host
//! upload (a 512 MB intermediate of the MoE layer would otherwise cross PCIe as zeros).

use super::glue::unit_index;
use cubecl::prelude::*;

/// Writes zero to every word of `out`; one unit per word (1-D launch of any cube count).
#[cube(launch)]
pub fn zero_words(out: &mut Array<u32>) {
    let i = unit_index();
    if i < out.len() {
        out[i] = 0u32;
    }
}
