//! Dense GEMM on CUDA: cuBLASLt with f32 compute (f32 in full f32, not TF32), through cudarc's
//! safe `Matmul` API; where cuBLASLt is missing or has no algorithm for the shape, the grouped
//! GEMM kernel with one expert.
//!
//! Row-major `c [M, N] = a [M, K] · b` is the column-major `cᵀ [N, M] = bᵀ · aᵀ`: cuBLASLt's
//! A is `b` (`[N, K]` column-major with ld N, or transposed from `[K, N]` with ld K when
//! `b_transposed`), its B is `a` (`[K, M]`, ld K), its C is `c` (`[N, M]`, ld N).

use crate::backend::{device_err, grown, lock};
use crate::{CudaBackend, CudaBuffer, NAME};
use cudarc::cublaslt::result::CublasError;
use cudarc::cublaslt::{sys, CudaBlasLT, Matmul, MatmulConfig, MatmulShared, Workspace};
use cudarc::driver::{CudaSlice, CudaStream};
use moekit_ops::{
    DType, Device, Error, GemmProblem, GroupedGemmIo, GroupedGemmOps, GroupedGemmProblem, HostTensor, Result,
    Validated, WeightLayout,
};
use std::collections::HashMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;

const OP: &str = "gemm";

/// `c = a · b` (see [`GemmProblem`]).
///
/// # Errors
/// [`Error::Device`] when cuBLASLt (or the fallback kernel) fails to launch.
pub(crate) fn gemm(
    be: &CudaBackend,
    p: &Validated<GemmProblem>,
    a: &CudaBuffer,
    b: &CudaBuffer,
    c: &mut CudaBuffer,
) -> Result<()> {
    if p.m == 0 || p.n == 0 {
        return Ok(());
    }
    if p.k == 0 {
        return be.stream.memset_zeros(&mut c.data).map_err(device_err(OP));
    }
    // NOTE: cuBLASLt runs in the calling thread's current context, which cudarc's kernel
    // launches set but its matmul does not.
    be.stream.context().bind_to_thread().map_err(device_err(OP))?;
    match handle(be) {
        Some(lt) => match lt_gemm(&Lt(lt), p, a, b, c) {
            Ok(()) => Ok(()),
            // NOTE: cuBLASLt answers NOT_SUPPORTED when its heuristic finds no algorithm (odd
            // leading dimensions on some versions); the grouped kernel takes any shape.
            Err(e) if e.0 == sys::cublasStatus_t::CUBLAS_STATUS_NOT_SUPPORTED => fallback(be, p, a, b, c),
            Err(e) => Err(Error::Device { op: OP, backend: NAME, msg: format!("cuBLASLt: {e}") }),
        },
        None => fallback(be, p, a, b, c),
    }
}

/// The backend's cuBLASLt handle, created on first use; `None` where the library is missing or
/// the handle cannot be made.
fn handle(be: &CudaBackend) -> Option<&CudaBlasLT> {
    if let Some(h) = be.blas.get() {
        return Some(h);
    }
    // SAFETY: only tries to load the cuBLASLt library by its usual names.
    if !unsafe { sys::is_culib_present() } {
        return None;
    }
    // NOTE: cudarc unwraps the workspace allocation and panics on a missing entry point; both
    // mean "no cuBLASLt here", served by the fallback kernel.
    let stream = be.stream.clone();
    let h = catch_unwind(AssertUnwindSafe(|| CudaBlasLT::new(stream))).ok()?.ok()?;
    // A racing thread may have set it first; then this handle is dropped.
    let _ = be.blas.set(h);
    be.blas.get()
}

/// Element types as cuBLASLt sees them (the buffers hold raw bytes).
#[repr(transparent)]
struct F32(#[allow(dead_code)] f32);
#[repr(transparent)]
struct F16(#[allow(dead_code)] u16);
#[repr(transparent)]
struct Bf16(#[allow(dead_code)] u16);

/// A borrowed cuBLASLt handle whose GEMMs all compute in f32.
///
/// NOTE: cudarc's own `Matmul<f32>` computes in TF32 (`CUBLAS_COMPUTE_32F_FAST_TF32`), whose
/// 10-bit mantissa misses the f32 tolerance; this wrapper uses `CUBLAS_COMPUTE_32F` everywhere.
struct Lt<'a>(&'a CudaBlasLT);

impl MatmulShared for Lt<'_> {
    fn handle(&self) -> &sys::cublasLtHandle_t {
        self.0.handle()
    }
    fn workspace(&self) -> &Workspace {
        self.0.workspace()
    }
    fn stream(&self) -> &Arc<CudaStream> {
        self.0.stream()
    }
}

macro_rules! lt_matmul {
    ($ty:ty, $data:ident) => {
        impl Matmul<$ty> for Lt<'_> {
            fn matrix_type() -> sys::cudaDataType {
                sys::cudaDataType_t::$data
            }
            fn compute_type() -> sys::cublasComputeType_t {
                sys::cublasComputeType_t::CUBLAS_COMPUTE_32F
            }
        }
    };
}
lt_matmul!(F32, CUDA_R_32F);
lt_matmul!(F16, CUDA_R_16F);
lt_matmul!(Bf16, CUDA_R_16BF);

fn lt_gemm(
    lt: &Lt<'_>,
    p: &GemmProblem,
    a: &CudaBuffer,
    b: &CudaBuffer,
    c: &mut CudaBuffer,
) -> std::result::Result<(), CublasError> {
    let (m, n, k) = (p.m as u64, p.n as u64, p.k as u64);
    let cfg = MatmulConfig {
        transa: p.b_transposed,
        transb: false,
        transc: false,
        m: n,
        n: m,
        k,
        alpha: 1.0,
        lda: (if p.b_transposed { k } else { n }) as i64,
        ldb: k as i64,
        // NOTE: with beta = 0 cuBLASLt does not read C, so whatever c held (NaN poison) is gone.
        beta: 0.0,
        ldc: n as i64,
        stride_a: None,
        stride_b: None,
        stride_c: None,
        stride_bias: None,
        batch_size: None,
    };
    match p.dtype {
        DType::F16 => run::<F16>(lt, cfg, p, a, b, c),
        DType::BF16 => run::<Bf16>(lt, cfg, p, a, b, c),
        _ => run::<F32>(lt, cfg, p, a, b, c),
    }
}

fn run<E>(
    lt: &Lt<'_>,
    cfg: MatmulConfig,
    p: &GemmProblem,
    a: &CudaBuffer,
    b: &CudaBuffer,
    c: &mut CudaBuffer,
) -> std::result::Result<(), CublasError>
where
    for<'a> Lt<'a>: Matmul<E>,
{
    let bad = || CublasError(sys::cublasStatus_t::CUBLAS_STATUS_INVALID_VALUE);
    // SAFETY: the bytes are only handed to cuBLASLt as elements of `E`'s dtype; `transmute`
    // checks each slice holds that many.
    let a_v = unsafe { a.data.transmute::<E>(p.m * p.k) }.ok_or_else(bad)?;
    // SAFETY: as above.
    let b_v = unsafe { b.data.transmute::<E>(p.k * p.n) }.ok_or_else(bad)?;
    // SAFETY: as above, `m · n` elements of the dtype.
    let mut c_v = unsafe { c.data.transmute_mut::<E>(p.m * p.n) }.ok_or_else(bad)?;
    // SAFETY: check_io proved a [M, K], b [K, N] or [N, K] and c [M, N] of the dtype; the
    // config describes exactly those matrices (see the module doc).
    unsafe { lt.matmul(cfg, &b_v, &a_v, &mut c_v, None, None) }
}

/// The grouped GEMM kernel with one expert over all `M` rows.
///
/// NOTE: the offsets `[0, M]` are uploaded from the host (a small pageable copy); this path only
/// runs without cuBLASLt.
fn fallback(be: &CudaBackend, p: &GemmProblem, a: &CudaBuffer, b: &CudaBuffer, c: &mut CudaBuffer) -> Result<()> {
    let m = i32::try_from(p.m).map_err(|_| Error::unsupported(OP, "M past i32 without cuBLASLt"))?;
    let mut g = GroupedGemmProblem::contiguous(p.m, 1, p.k, p.n, p.dtype);
    if p.b_transposed {
        g.weight_layout = WeightLayout::NK;
    }
    let g = g.validate()?;
    let offsets = be.upload(&HostTensor::from_i32(&[2], &[0, m]))?;
    // NOTE: w is [1, K, N] / [1, N, K]: b's bytes with a leading 1, which the launcher (given a
    // validated problem, taking raw pointers) never looks at.
    let io = GroupedGemmIo { x: a, w: b, group: &offsets, row_to_token: None, row_scale: None, y: c };
    be.grouped_gemm(&g, io)
}

/// Row-major `c [M, N] f32 = a [M, K] · b [K, N]` through cuBLASLt with f32 compute, the
/// inputs of `dtype` and the output kept in f32 (never rounded to the input dtype); `c` holds
/// the f32 elements as bytes (at least `M · N · 4`).
///
/// The descriptors and algorithm of each `(dtype, M, N, K)` are made once per backend and
/// cached ([`LtCache`]), as is the workspace, so a repeated call only queues the matmul.
///
/// Returns `Ok(false)`, having queued nothing, where cuBLASLt is missing or has no algorithm
/// for the shape: the caller then runs its own kernel.
///
/// # Errors
/// [`Error::Device`] when cuBLASLt fails otherwise.
pub(crate) fn gemm_f32_out(
    be: &CudaBackend,
    op: &'static str,
    dtype: DType,
    (m, n, k): (usize, usize, usize),
    a: &CudaBuffer,
    b: &CudaBuffer,
    c: &mut CudaSlice<u8>,
) -> Result<bool> {
    if m == 0 || n == 0 || k == 0 {
        return Ok(false);
    }
    be.stream.context().bind_to_thread().map_err(device_err(op))?;
    let Some(lt) = handle(be) else {
        return Ok(false);
    };
    let lt_err = |e: CublasError| Error::Device { op, backend: NAME, msg: format!("cuBLASLt: {e}") };
    // NOTE: the lock is held until the matmul is queued: the cached descriptors and the
    // workspace are used by one thread at a time.
    let mut cache = lock(&be.lt_cache, op, "cuBLASLt cache")?;
    let LtCache { plans, workspace } = &mut *cache;
    let key = (dtype, m, n, k);
    if !plans.contains_key(&key) {
        // NOTE: a serving loop sees a new M (token count) at nearly every step; the cap keeps
        // the cache small, and a refill costs one heuristic query per shape.
        if plans.len() >= LT_CACHE_CAP {
            plans.clear();
        }
        let plan = match lt_plan(lt, lt_type(dtype), (m as u64, n as u64, k as u64)) {
            Ok(plan) => Some(plan),
            Err(e) if e.0 == sys::cublasStatus_t::CUBLAS_STATUS_NOT_SUPPORTED => None,
            Err(e) => return Err(lt_err(e)),
        };
        plans.insert(key, plan);
    }
    let Some(Some(plan)) = plans.get(&key) else {
        return Ok(false);
    };
    let ws = grown(workspace, be, plan.ws_len).map_err(device_err(op))?;
    match lt_f32_out(lt, &be.stream, plan, ws, a, b, c) {
        Ok(()) => Ok(true),
        Err(e) if e.0 == sys::cublasStatus_t::CUBLAS_STATUS_NOT_SUPPORTED => Ok(false),
        Err(e) => Err(lt_err(e)),
    }
}

/// cuBLASLt's type of the inputs of `dtype`.
fn lt_type(dtype: DType) -> sys::cudaDataType {
    match dtype {
        DType::F16 => sys::cudaDataType_t::CUDA_R_16F,
        DType::BF16 => sys::cudaDataType_t::CUDA_R_16BF,
        _ => sys::cudaDataType_t::CUDA_R_32F,
    }
}

/// Most shapes [`LtCache`] keeps before it starts over.
const LT_CACHE_CAP: usize = 64;

/// Per-backend state of [`gemm_f32_out`]: the plan of each `(dtype, M, N, K)` (`None`: cuBLASLt
/// has no algorithm for it) and one workspace, grown when a plan needs more.
#[derive(Default)]
pub(crate) struct LtCache {
    plans: HashMap<(DType, usize, usize, usize), Option<LtPlan>>,
    workspace: Option<CudaSlice<u8>>,
}

/// The descriptors of one shape and the algorithm cuBLASLt chose for it.
struct LtPlan {
    descs: LtDescs,
    algo: sys::cublasLtMatmulAlgo_t,
    /// Workspace bytes the algorithm needs (at least 1).
    ws_len: usize,
}

/// cuBLASLt descriptors, destroyed on drop.
struct LtDescs {
    /// A, B and C (= D).
    layouts: Vec<sys::cublasLtMatrixLayout_t>,
    desc: Option<sys::cublasLtMatmulDesc_t>,
    pref: Option<sys::cublasLtMatmulPreference_t>,
}

// SAFETY: the descriptors are pointers to heap objects of cuBLASLt's host memory, tied to no
// thread (any thread may create, use and destroy them); `LtDescs` owns them alone and frees
// them once on drop. They are only reached through `CudaBackend::lt_cache`'s mutex, so one
// thread uses them at a time; nothing needs `Sync`.
unsafe impl Send for LtDescs {}

impl Drop for LtDescs {
    fn drop(&mut self) {
        // NOTE: destroy errors are ignored: the descriptors are host objects and nothing
        // useful can be done about a failure here.
        for &l in &self.layouts {
            // SAFETY: created by `create_matrix_layout` and destroyed once.
            let _ = unsafe { cudarc::cublaslt::result::destroy_matrix_layout(l) };
        }
        if let Some(d) = self.desc {
            // SAFETY: created by `create_matmul_desc` and destroyed once.
            let _ = unsafe { cudarc::cublaslt::result::destroy_matmul_desc(d) };
        }
        if let Some(p) = self.pref {
            // SAFETY: created by `create_matmul_pref` and destroyed once.
            let _ = unsafe { cudarc::cublaslt::result::destroy_matmul_pref(p) };
        }
    }
}

/// Most workspace bytes an algorithm of [`gemm_f32_out`] may ask for.
const F32_OUT_WORKSPACE: usize = 4 << 20;

/// The descriptors of `c [M, N] f32 = a [M, K] · b [K, N]` with inputs of type `ab`, and
/// cuBLASLt's best algorithm for them.
fn lt_plan(
    lt: &CudaBlasLT,
    ab: sys::cudaDataType,
    (m, n, k): (u64, u64, u64),
) -> std::result::Result<LtPlan, CublasError> {
    use cudarc::cublaslt::result as r;
    let f32t = sys::cudaDataType_t::CUDA_R_32F;
    let mut d = LtDescs { layouts: Vec::with_capacity(3), desc: None, pref: None };
    // Column-major view (see the module doc): A = b [N, K] ld N, B = a [K, M] ld K, C = D =
    // c [N, M] ld N, all untransposed.
    d.layouts.push(r::create_matrix_layout(ab, n, k, n as i64)?);
    d.layouts.push(r::create_matrix_layout(ab, k, m, k as i64)?);
    d.layouts.push(r::create_matrix_layout(f32t, n, m, n as i64)?);
    let desc = r::create_matmul_desc(sys::cublasComputeType_t::CUBLAS_COMPUTE_32F, f32t)?;
    d.desc = Some(desc);
    let pref = r::create_matmul_pref()?;
    d.pref = Some(pref);
    let ws_size = F32_OUT_WORKSPACE;
    // SAFETY: the attribute is a usize read during the call.
    unsafe {
        r::set_matmul_pref_attribute(
            pref,
            sys::cublasLtMatmulPreferenceAttributes_t::CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES,
            (&ws_size) as *const usize as *const _,
            std::mem::size_of::<usize>(),
        )?;
    }
    let (la, lb, lc) = (d.layouts[0], d.layouts[1], d.layouts[2]);
    // SAFETY: every descriptor is alive (owned by `d`).
    let heur = unsafe { r::get_matmul_algo_heuristic(*lt.handle(), desc, la, lb, lc, lc, pref) }?;
    Ok(LtPlan { descs: d, algo: heur.algo, ws_len: heur.workspaceSize.clamp(1, ws_size) })
}

/// Queue `plan`'s matmul on `stream` with workspace `ws` (at least `plan.ws_len` bytes).
fn lt_f32_out(
    lt: &CudaBlasLT,
    stream: &Arc<CudaStream>,
    plan: &LtPlan,
    ws: &CudaSlice<u8>,
    a: &CudaBuffer,
    b: &CudaBuffer,
    c: &mut CudaSlice<u8>,
) -> std::result::Result<(), CublasError> {
    use cudarc::driver::{DevicePtr, DevicePtrMut};
    let (la, lb, lc) = (plan.descs.layouts[0], plan.descs.layouts[1], plan.descs.layouts[2]);
    let desc = plan.descs.desc.ok_or(CublasError(sys::cublasStatus_t::CUBLAS_STATUS_NOT_INITIALIZED))?;
    let (alpha, beta) = (1.0f32, 0.0f32);
    let (pa, _ra) = a.data.device_ptr(stream);
    let (pb, _rb) = b.data.device_ptr(stream);
    let (pc, _rc) = c.device_ptr_mut(stream);
    let (pw, _rw) = ws.device_ptr(stream);
    // SAFETY: the caller's shapes hold a [M, K] and b [K, N] of the input dtype and c [M, N]
    // f32, exactly the plan's layouts (made for this key); beta = 0, so C is not read; the
    // workspace holds at least ws_len bytes and is only reused by later work on this stream.
    unsafe {
        cudarc::cublaslt::result::matmul(
            *lt.handle(),
            desc,
            (&alpha) as *const f32 as *const _,
            (&beta) as *const f32 as *const _,
            pb as *const _,
            la,
            pa as *const _,
            lb,
            pc as *const _,
            lc,
            pc as *mut _,
            lc,
            &plan.algo,
            pw as *mut _,
            plan.ws_len,
            stream.cu_stream() as *mut _,
        )
    }
}
