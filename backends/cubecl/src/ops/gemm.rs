//! Dense GEMM on cubecl (`GlueOps::gemm` calls [`gemm`]): the grouped GEMM with one expert
//! owning every row, and the launch both share: [`launch`] picks a tensor-core kernel (by
//! default the manual-MMA one, [`crate::kernels::grouped_gemm_mma`]; else
//! [`crate::kernels::grouped_gemm_cmma`]) or the portable tiled one
//! ([`crate::kernels::grouped_gemm`]) through [`select_path`].

use super::gemm_path::{select_path, GemmCaps, GemmPath, GemmShape, TensorKernel, GEMM_ENV};
use crate::kernels::grouped_gemm::{grouped_gemm_kernel, MODE_DENSE, MODE_MASKED, TILE};
use crate::kernels::grouped_gemm_cmma::{grouped_gemm_cmma_kernel, BM, BN, PLANES};
use crate::kernels::grouped_gemm_mma::grouped_gemm_mma_kernel;
use crate::kernels::grouped_gemm_mma6::{self as mma6, grouped_gemm_mma6_kernel};
use crate::{CubeBackend, CubeBuffer};
use cubecl::features::MmaConfig;
use cubecl::ir::{ElemType, FloatKind};
use cubecl::prelude::*;
use cubecl::server::Handle;
use moekit_ops::{DType, Error, GemmProblem, Result, TensorMeta, Validated};

/// The cubecl element type of a float dtype.
///
/// # Errors
/// [`Error::Unsupported`] for a non-float dtype.
pub(crate) fn float_elem(op: &'static str, dtype: DType) -> Result<ElemType> {
    match dtype {
        DType::F32 => Ok(ElemType::Float(FloatKind::F32)),
        DType::F16 => Ok(ElemType::Float(FloatKind::F16)),
        DType::BF16 => Ok(ElemType::Float(FloatKind::BF16)),
        other => Err(Error::unsupported(op, format!("dtype {other:?}"))),
    }
}

/// A cube count dimension, checked against the runtime's limit.
///
/// # Errors
/// [`Error::Unsupported`] past `u32`.
pub(crate) fn cubes(op: &'static str, n: usize) -> Result<u32> {
    u32::try_from(n).map_err(|_| Error::unsupported(op, format!("{n} cubes along one axis")))
}

/// A `u32` kernel scalar.
///
/// # Errors
/// [`Error::Unsupported`] past `u32`.
pub(crate) fn scalar(op: &'static str, n: usize) -> Result<u32> {
    u32::try_from(n).map_err(|_| Error::unsupported(op, format!("size {n} exceeds u32")))
}

/// Every argument of one launch of [`grouped_gemm_kernel`].
pub(crate) struct TiledLaunch<'a> {
    pub(crate) op: &'static str,
    pub(crate) dtype: DType,
    pub(crate) x: &'a CubeBuffer,
    pub(crate) w: &'a CubeBuffer,
    pub(crate) group: Option<&'a CubeBuffer>,
    pub(crate) row_to_token: Option<&'a CubeBuffer>,
    pub(crate) row_scale: Option<&'a CubeBuffer>,
    pub(crate) y: &'a CubeBuffer,
    pub(crate) experts: usize,
    /// `R` (contiguous, dense) or `C` (masked).
    pub(crate) rows: usize,
    pub(crate) tokens: usize,
    pub(crate) k_dim: usize,
    pub(crate) n_dim: usize,
    pub(crate) n_out: usize,
    pub(crate) mode: u32,
    pub(crate) nk: bool,
    pub(crate) swiglu: bool,
}

/// `(handle, elements)` of a buffer, or of a one-element placeholder.
fn arg<R: Runtime>(b: &CubeBackend<R>, buf: Option<&CubeBuffer>) -> (Handle, usize) {
    match buf {
        Some(buf) => (buf.handle.clone(), buf.numel().max(1)),
        // NOTE: a fresh placeholder, never a buffer the launch also writes: wgpu refuses one
        // buffer bound both read-only and read-write in one dispatch.
        None => (b.client.create_from_slice(&[0u8; 4]), 1),
    }
}

/// Launches the grouped GEMM with the kernel [`select_path`] picks for this runtime and shape
/// (environment override `MOEKIT_CUBECL_GEMM`, values in [`super::gemm_path`]).
///
/// # Errors
/// [`Error::Unsupported`] for a dtype the runtime lacks or sizes past `u32`.
pub(crate) fn launch<R: Runtime>(b: &CubeBackend<R>, l: TiledLaunch<'_>) -> Result<()> {
    let shape = GemmShape {
        dtype: l.dtype,
        k_dim: l.k_dim,
        n_dim: l.n_dim,
        n_out: l.n_out,
        nk: l.nk,
        experts: if l.mode == MODE_MASKED { l.experts } else { 1 },
    };
    match path(b, &shape) {
        GemmPath::Tiled => launch_tiled(b, l),
        GemmPath::Cmma { vector, plane, kernel } => launch_cmma(b, l, vector, plane, kernel),
    }
}

/// The kernel a launch of `shape` on `b` uses: [`select_path`] with the runtime's
/// capabilities and the environment override [`GEMM_ENV`].
pub(crate) fn path<R: Runtime>(b: &CubeBackend<R>, shape: &GemmShape) -> GemmPath {
    let force = std::env::var(GEMM_ENV).ok();
    select_path(&caps(b, shape.dtype), shape, force.as_deref())
}

/// What the runtime behind `b` offers the tensor-core path for `dtype`.
fn caps<R: Runtime>(b: &CubeBackend<R>, dtype: DType) -> GemmCaps {
    let props = b.client.properties();
    let hw = &props.hardware;
    let has = |n: u32, manual: bool| {
        float_elem("grouped_gemm", dtype).is_ok_and(|elem| {
            let config = MmaConfig {
                a_type: elem.into(),
                b_type: elem.into(),
                cd_type: ElemType::Float(FloatKind::F32).into(),
                m: 16,
                n,
                k: 16,
            };
            let matmul = &b.client.features().matmul;
            if manual {
                matmul.mma.contains(&config)
            } else {
                matmul.cmma.contains(&config)
            }
        })
    };
    GemmCaps {
        cmma: has(16, false),
        mma: has(8, true),
        plane_size: (hw.plane_size_min, hw.plane_size_max),
        max_units: hw.max_units_per_cube,
        max_shared: hw.max_shared_memory_size,
        max_cube_count: hw.max_cube_count,
        load_bits: hw.load_width,
    }
}

/// Launches the tensor-core kernel `kernel` over `(max(1, ceil(rows/BM)), ceil(N_out/(BN or
/// BN/2, or the wide kernel's `block_cols`)), E or 1)` cubes of `(plane, PLANES)` units, staging vectors of `vector` elements.
///
/// # Errors
/// [`Error::Unsupported`] for sizes past `u32`.
fn launch_cmma<R: Runtime>(
    b: &CubeBackend<R>,
    l: TiledLaunch<'_>,
    vector: usize,
    plane: u32,
    kernel: TensorKernel,
) -> Result<()> {
    let elem = float_elem(l.op, l.dtype)?;
    let block_cols = match kernel {
        TensorKernel::Wide => mma6::block_cols(l.swiglu),
        _ if l.swiglu => BN / 2,
        _ => BN,
    };
    let col_cubes = cubes(l.op, l.n_out.div_ceil(block_cols))?;
    let row_cubes = cubes(l.op, l.rows.div_ceil(BM).max(1))?;
    let expert_cubes = cubes(l.op, if l.mode == MODE_MASKED { l.experts } else { 1 })?;
    if col_cubes == 0 || expert_cubes == 0 {
        return Ok(());
    }
    let (x, w, y) =
        ((l.x.handle.clone(), l.x.numel()), (l.w.handle.clone(), l.w.numel()), (l.y.handle.clone(), l.y.numel()));
    let (group, rtt, scale) = (arg(b, l.group), arg(b, l.row_to_token), arg(b, l.row_scale));
    // NOTE: the tensor-core kernels take the same arguments; a macro keeps one list.
    macro_rules! go {
        ($kernel:ident) => {
            go!($kernel, 1)
        };
        ($kernel:ident, $y_vector:expr) => {
            // SAFETY: every handle is a live allocation of at least the given number of elements
            // (checked by `check_io`; `x` and `w` hold a whole number of `vector`s because
            // `vector` divides their row length, see `select_path`). The kernel runs unchecked:
            // it keeps every access inside those lengths whatever the index data says (see its
            // module doc).
            unsafe {
                $kernel::launch_unchecked::<R>(
                    &b.client,
                    CubeCount::Static(row_cubes, col_cubes, expert_cubes),
                    CubeDim::new_2d(plane, PLANES as u32),
                    vector,
                    ArrayArg::from_raw_parts(x.0, (x.1 / vector).max(1)),
                    ArrayArg::from_raw_parts(w.0, (w.1 / vector).max(1)),
                    ArrayArg::from_raw_parts(group.0, group.1),
                    ArrayArg::from_raw_parts(rtt.0, rtt.1),
                    ArrayArg::from_raw_parts(scale.0, scale.1),
                    ArrayArg::from_raw_parts(y.0, (y.1 / $y_vector).max(1)),
                    b.flag_arg(),
                    scalar(l.op, l.experts)?,
                    scalar(l.op, l.rows)?,
                    scalar(l.op, l.tokens)?,
                    scalar(l.op, l.k_dim)?,
                    scalar(l.op, l.n_dim)?,
                    plane as usize,
                    l.mode,
                    l.nk,
                    l.swiglu,
                    l.row_scale.is_some(),
                    l.row_to_token.is_some(),
                    elem,
                )
            }
        };
    }
    match kernel {
        TensorKernel::Wmma => go!(grouped_gemm_cmma_kernel),
        TensorKernel::Mma => go!(grouped_gemm_mma_kernel),
        // NOTE: the wide kernel writes `y` as pairs (`N_out` even, see `select_path`), on
        // blocks of `mma6::block_cols` output columns.
        TensorKernel::Wide => go!(grouped_gemm_mma6_kernel, 2),
    }
    Ok(())
}

/// Launches the tiled kernel over `(max(1, ceil(rows/TILE)), ceil(N_out/TILE), E or 1)`
/// cubes.
///
/// # Errors
/// [`Error::Unsupported`] for a dtype the runtime lacks or sizes past `u32`.
fn launch_tiled<R: Runtime>(b: &CubeBackend<R>, l: TiledLaunch<'_>) -> Result<()> {
    let elem = float_elem(l.op, l.dtype)?;
    let col_cubes = cubes(l.op, l.n_out.div_ceil(TILE))?;
    let row_cubes = cubes(l.op, l.rows.div_ceil(TILE).max(1))?;
    let expert_cubes = cubes(l.op, if l.mode == MODE_MASKED { l.experts } else { 1 })?;
    if col_cubes == 0 || expert_cubes == 0 {
        return Ok(());
    }
    let (x, w, y) =
        ((l.x.handle.clone(), l.x.numel()), (l.w.handle.clone(), l.w.numel()), (l.y.handle.clone(), l.y.numel()));
    let (group, rtt, scale) = (arg(b, l.group), arg(b, l.row_to_token), arg(b, l.row_scale));
    // SAFETY: every handle is a live allocation of at least the given number of elements of
    // the kernel's element type (checked by `check_io`); the kernel keeps every access inside
    // those lengths whatever the index data says, and runs bounds-checked besides.
    unsafe {
        grouped_gemm_kernel::launch::<R>(
            &b.client,
            CubeCount::Static(row_cubes, col_cubes, expert_cubes),
            CubeDim::new_2d(TILE as u32, TILE as u32),
            ArrayArg::from_raw_parts(x.0, x.1.max(1)),
            ArrayArg::from_raw_parts(w.0, w.1.max(1)),
            ArrayArg::from_raw_parts(group.0, group.1),
            ArrayArg::from_raw_parts(rtt.0, rtt.1),
            ArrayArg::from_raw_parts(scale.0, scale.1),
            ArrayArg::from_raw_parts(y.0, y.1.max(1)),
            b.flag_arg(),
            scalar(l.op, l.experts)?,
            scalar(l.op, l.rows)?,
            scalar(l.op, l.tokens)?,
            scalar(l.op, l.k_dim)?,
            scalar(l.op, l.n_dim)?,
            l.mode,
            l.nk,
            l.swiglu,
            l.row_scale.is_some(),
            l.row_to_token.is_some(),
            elem,
        );
    }
    Ok(())
}

/// Dense `c [M, N] = a [M, K] · b` (`b [K, N]`, or `[N, K]` transposed), f32 accumulation.
///
/// # Errors
/// [`Error::Unsupported`] for sizes past `u32`.
pub(crate) fn gemm<R: Runtime>(
    b: &CubeBackend<R>,
    p: &Validated<GemmProblem>,
    a: &CubeBuffer,
    bm: &CubeBuffer,
    c: &mut CubeBuffer,
) -> Result<()> {
    if p.m == 0 || p.n == 0 {
        return Ok(());
    }
    launch(
        b,
        TiledLaunch {
            op: "gemm",
            dtype: p.dtype,
            x: a,
            w: bm,
            group: None,
            row_to_token: None,
            row_scale: None,
            y: c,
            experts: 1,
            rows: p.m,
            tokens: 0,
            k_dim: p.k,
            n_dim: p.n,
            n_out: p.n,
            mode: MODE_DENSE,
            nk: p.b_transposed,
            swiglu: false,
        },
    )
}
