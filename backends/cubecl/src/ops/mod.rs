//! The op families of [`crate::CubeBackend`] over any `R: cubecl::Runtime`, one module per
//! family: the host side (launch configuration, buffer checks) of the `#[cube]` kernels in
//! [`crate::kernels`].

mod attention;
pub(crate) mod gemm;
mod gemm_path;
mod glue;
mod grouped_gemm;
mod moe;
mod permute;
mod route;

pub(crate) use moe::MoeScratch;

use crate::CubeBackend;
use cubecl::Runtime;

/// Units per cube of the 1-D launches (a power of two, a multiple of every plane size).
pub(crate) const BLOCK: usize = 64;

/// Most cubes along one axis that every runtime accepts.
const MAX_CUBES_X: usize = 65_535;

/// A 1-D launch of `units` units in cubes of [`BLOCK`] (the cube index is the linear
/// `CUBE_POS`), or `None` when there is nothing to do.
///
/// # Errors
/// [`moekit_ops::Error::Unsupported`] for more cubes than a 2-D grid holds.
pub(crate) fn grid(op: &'static str, units: usize) -> moekit_ops::Result<Option<cubecl::prelude::CubeCount>> {
    cubes_1d(op, units.div_ceil(BLOCK))
}

/// `cubes` cubes laid out along x then y (the linear `CUBE_POS` counts them), or `None` for 0.
///
/// # Errors
/// [`moekit_ops::Error::Unsupported`] past `65535²` cubes.
pub(crate) fn cubes_1d(op: &'static str, cubes: usize) -> moekit_ops::Result<Option<cubecl::prelude::CubeCount>> {
    if cubes == 0 {
        return Ok(None);
    }
    let x = cubes.min(MAX_CUBES_X);
    let y = cubes.div_ceil(x);
    if y > MAX_CUBES_X {
        return Err(moekit_ops::Error::unsupported(op, format!("{cubes} cubes exceed a 65535 x 65535 grid")));
    }
    // NOTE: x·y may exceed `cubes`; kernels skip cubes past the work.
    Ok(Some(cubecl::prelude::CubeCount::Static(x as u32, y as u32, 1)))
}

/// The buffer as a kernel array of its elements.
pub(crate) fn array<R: Runtime>(buf: &crate::CubeBuffer) -> cubecl::prelude::ArrayArg<R> {
    use moekit_ops::TensorMeta;
    // SAFETY: the handle holds `numel` elements of the buffer's dtype (at least one byte for
    // an empty tensor, which no launch reads: launches with no work are skipped).
    unsafe { cubecl::prelude::ArrayArg::from_raw_parts(buf.handle.clone(), buf.numel().max(1)) }
}

/// A fresh one-element placeholder for an absent optional buffer.
///
/// NOTE: never a buffer the launch also writes: wgpu refuses one buffer bound both read-only
/// and read-write in one dispatch.
pub(crate) fn placeholder<R: Runtime>(b: &CubeBackend<R>) -> cubecl::prelude::ArrayArg<R> {
    let handle = b.client.create_from_slice(&[0u8; 4]);
    // SAFETY: 4 bytes hold one element of every dtype moekit launches with (at most 4 bytes).
    unsafe { cubecl::prelude::ArrayArg::from_raw_parts(handle, 1) }
}
