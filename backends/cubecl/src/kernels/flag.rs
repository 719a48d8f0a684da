//! Recording a content error in the backend's record `[code, index, value, hi]` (see
//! `crate::flag`).
//!
//! NOTE: plain stores, not atomics: cubecl-spirv 0.10 panics compiling an atomic indexed
//! inside a branch ("Atomic should have a scope registered"), which is where a record
//! happens. A record written by an earlier launch is kept (the code is checked first); two
//! units of one launch that both meet bad data may interleave their fields, so the reported
//! index and value then come from either of them, and the code is right either way.

use cubecl::prelude::*;

/// Records `(code, index, value, hi)` unless an earlier launch already recorded an error
/// (`code` must not be 0).
#[cube]
pub fn record(flag: &mut Array<i32>, code: i32, index: i32, value: i32, hi: i32) {
    if flag[0] == 0 {
        flag[0] = code;
        flag[1] = index;
        flag[2] = value;
        flag[3] = hi;
    }
}

/// Clears the record: launch with one cube of 4 units.
#[cube(launch)]
pub fn clear_flag(flag: &mut Array<i32>) {
    if UNIT_POS < 4 {
        flag[UNIT_POS as usize] = 0i32;
    }
}
