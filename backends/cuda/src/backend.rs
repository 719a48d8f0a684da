//! [`CudaBackend`]: construction and device memory ([`Device`]); the ops come in issue #3.

use crate::{CudaBuffer, NAME};
use moekit_ops::{DType, Device, Error, HostTensor, Result};
use std::fmt;

#[cfg(feature = "cuda")]
use {
    crate::flag::ErrorFlag,
    crate::ops::gemm::LtCache,
    crate::runtime::Kernels,
    cudarc::driver::{CudaContext, CudaSlice, CudaStream, DriverError},
    moekit_ops::TensorMeta,
    std::sync::Arc,
    std::sync::Mutex,
};

/// The CUDA backend on one GPU: a CUDA context and the stream every op is queued on.
///
/// Float ops take f32, f16 and bf16; index data is i32.
pub struct CudaBackend {
    ordinal: usize,
    #[cfg(feature = "cuda")]
    pub(crate) stream: Arc<CudaStream>,
    #[cfg(feature = "cuda")]
    pub(crate) kernels: Arc<Kernels>,
    #[cfg(feature = "cuda")]
    pub(crate) flag: Mutex<ErrorFlag>,
    /// The cuBLASLt handle for dense GEMMs, made on first use (`ops/gemm.rs`).
    #[cfg(feature = "cuda")]
    pub(crate) blas: std::sync::OnceLock<cudarc::cublaslt::CudaBlasLT>,
    /// cuBLASLt plans and workspace of `gemm_f32_out` (`ops/gemm.rs`).
    #[cfg(feature = "cuda")]
    pub(crate) lt_cache: Mutex<LtCache>,
    /// The route op's f32 gate logits (bytes; grown with [`grown`], never shrunk).
    #[cfg(feature = "cuda")]
    pub(crate) route_logits: Mutex<Option<CudaSlice<u8>>>,
    /// The FlashMask plan of the last attention call with column ranges on the warp-specialised
    /// kernel, reused while the same mask comes again (`ops/flashmask.rs`).
    #[cfg(feature = "cuda")]
    pub(crate) flash_plan: Mutex<Option<crate::ops::flashmask::PlanCache>>,
    /// The decode attention's fused-combine counters, zero between calls (made on the first
    /// decode call outside a graph recording; `ops/attention_decode.rs`).
    #[cfg(feature = "cuda")]
    pub(crate) decode_counters: Mutex<Option<CudaSlice<i32>>>,
    /// The persistent warp-specialised attention kernel's unit ticket counter (zero between
    /// calls) and its CTAs' unit slots (made on the first call outside a graph recording;
    /// `ops/attention.rs`).
    #[cfg(feature = "cuda")]
    pub(crate) attention_tickets: Mutex<Option<CudaSlice<i32>>>,
    /// The grid barrier of the cooperative permute index (`permute_index_coop`): two u32
    /// (arrivals, generation), zeroed when the backend is made and back to zero arrivals after
    /// every barrier. Made here, not on first use, so that no graph capture records its
    /// allocation.
    #[cfg(feature = "cuda")]
    pub(crate) permute_bar: Mutex<CudaSlice<u32>>,

    /// The device's multiprocessor count (the persistent kernels' grid), read once.
    #[cfg(feature = "cuda")]
    pub(crate) sms: usize,
    /// Whether routing with the fused gate takes the one-kernel Hopper path where it applies
    /// (`ops/route.rs`): `MOEKIT_CUDA_ROUTE_GATE=fused`, or [`CudaBackend::set_fused_routing`].
    #[cfg(feature = "cuda")]
    pub(crate) fused_route: std::sync::atomic::AtomicBool,
    /// Live graphs and the scratch they keep alive (`graph.rs`).
    #[cfg(feature = "cuda")]
    pub(crate) pins: Arc<Mutex<crate::graph::Pins>>,
    /// The grouped GEMM's autotune mode and cached kernel choices (`ops/autotune.rs`).
    #[cfg(feature = "cuda")]
    pub(crate) autotune: Mutex<crate::ops::autotune::AutotuneState>,
    /// Blocks per multiprocessor of a kernel at a launch shape (keyed by its name and shape),
    /// from one occupancy query each (the register routing kernels, `ops/route.rs`; the decode
    /// attention kernels, `ops/attention_decode.rs`).
    #[cfg(feature = "cuda")]
    pub(crate) resident: Mutex<std::collections::HashMap<String, usize>>,
}

#[cfg(not(feature = "cuda"))]
impl CudaBackend {
    /// The backend on GPU `ordinal`.
    ///
    /// # Errors
    /// Always [`Error::NotCompiled`]: this build lacks the cargo feature `cuda`.
    pub fn new(ordinal: usize) -> Result<Self> {
        let _ = ordinal;
        Err(not_compiled())
    }
}

#[cfg(not(feature = "cuda"))]
fn not_compiled() -> Error {
    Error::NotCompiled { backend: NAME, feature: "cuda" }
}

/// Sets the release threshold of the device's default memory pool, which the backend's
/// stream-ordered allocations come from, to "never": memory the backend frees stays in the pool
/// for the next call instead of going back to the driver at every synchronisation. With the
/// driver's default (0) a MoE layer called after a sync mapped its ~0.7 GB of intermediates
/// afresh every call: 230–370 µs of host time on qwen3 and ernie (run 23). PyTorch's caching
/// allocator holds its memory the same way. `MOEKIT_CUDA_POOL=release` keeps the default.
#[cfg(feature = "cuda")]
fn hold_pool_memory(ctx: &CudaContext) -> std::result::Result<(), DriverError> {
    use cudarc::driver::sys;
    let pools = ctx.attribute(sys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MEMORY_POOLS_SUPPORTED)?;
    if pools == 0 {
        return Ok(());
    }
    let mut pool: sys::CUmemoryPool = std::ptr::null_mut();
    // SAFETY: `pool` is a valid out-pointer and the device handle is the context's.
    unsafe { sys::cuDeviceGetDefaultMemPool(&mut pool, ctx.cu_device()) }.result()?;
    let mut threshold = u64::MAX;
    // SAFETY: the release threshold attribute takes a pointer to a u64 (cuuint64_t).
    unsafe {
        sys::cuMemPoolSetAttribute(
            pool,
            sys::CUmemPool_attribute::CU_MEMPOOL_ATTR_RELEASE_THRESHOLD,
            (&mut threshold as *mut u64).cast(),
        )
    }
    .result()
}

#[cfg(feature = "cuda")]
impl CudaBackend {
    /// The backend on GPU `ordinal`, queueing work on a stream of its own (a non-blocking
    /// stream of a context handle of its own, with cudarc's cross-stream event tracking off:
    /// every op of the backend is ordered on that one stream, and the stream can record graphs,
    /// which the legacy default stream cannot). Memory the backend frees stays in the device's
    /// default pool across synchronisations (its release threshold set to the maximum), as in
    /// PyTorch's caching allocator; `MOEKIT_CUDA_POOL=release` keeps the driver's default.
    ///
    /// # Errors
    /// [`Error::NoDevice`] when the CUDA driver library is not installed, or the driver reports
    /// no device `ordinal` (or cannot start).
    pub fn new(ordinal: usize) -> Result<Self> {
        // SAFETY: this only tries to load the driver library by its usual names.
        if !unsafe { cudarc::driver::sys::is_culib_present() } {
            return Err(no_device("the CUDA driver library (libcuda) is not installed".into()));
        }
        // NOTE: cudarc panics when a driver entry point it binds is missing (a driver far
        // older than the bindings); that is "no usable device" to the caller, not a crash.
        let ctx = std::panic::catch_unwind(|| CudaContext::new(ordinal))
            .map_err(|_| no_device(format!("the CUDA driver could not open device {ordinal}")))?
            .map_err(|e| no_device(format!("device {ordinal}: {e}")))?;
        // SAFETY: this context handle is the backend's own (CudaContext::new makes a fresh
        // one), and the backend queues all its work on the one stream made next, so no buffer
        // of it is used on two streams and the events cudarc would record are not needed.
        unsafe { ctx.disable_event_tracking() };
        if std::env::var("MOEKIT_CUDA_POOL").as_deref() != Ok("release") {
            // NOTE: a failure only leaves the driver's default (release at every sync).
            let _ = hold_pool_memory(&ctx);
        }
        let stream = ctx.new_stream().map_err(|e| no_device(format!("device {ordinal}: no stream: {e}")))?;
        Self::from_stream(stream)
    }

    /// The backend on a caller's stream (and its context), so moekit ops queue behind and
    /// before the caller's own work with no extra synchronisation. Graphs
    /// ([`Device::capture`]) need a stream other than the legacy default stream, and a context
    /// without cudarc's event tracking (or buffers allocated before it was turned on).
    ///
    /// # Errors
    /// [`Error::NoDevice`] when the device's compute capability or multiprocessor count cannot
    /// be read.
    pub fn from_stream(stream: Arc<CudaStream>) -> Result<Self> {
        let kernels = Arc::new(Kernels::new(stream.context().clone())?);
        let flag = Mutex::new(ErrorFlag::new(&stream)?);
        let blas = std::sync::OnceLock::new();
        let (lt_cache, route_logits) = (Mutex::default(), Mutex::new(None));
        let pins = Arc::default();
        let permute_bar =
            stream.alloc_zeros::<u32>(2).map(Mutex::new).map_err(|e| no_device(format!("permute barrier: {e}")))?;
        let sms = stream
            .context()
            .attribute(cudarc::driver::sys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT)
            .map_err(|e| no_device(format!("multiprocessor count: {e}")))?;
        let sms = usize::try_from(sms).unwrap_or(1).max(1);
        Ok(CudaBackend {
            ordinal: stream.context().ordinal(),
            stream,
            kernels,
            flag,
            blas,
            lt_cache,
            route_logits,
            flash_plan: Mutex::new(None),
            decode_counters: Mutex::new(None),
            attention_tickets: Mutex::new(None),
            permute_bar,
            pins,
            sms,
            fused_route: crate::ops::route::fused_route_from_env().into(),
            autotune: Mutex::default(),
            resident: Mutex::default(),
        })
    }

    /// Blocks of kernel `name` (`f`) one multiprocessor holds at once with `threads` threads and
    /// `shared` bytes of dynamic shared memory (at least one): the driver's occupancy answer,
    /// asked once per kernel and shape and kept in [`CudaBackend::resident`] (a driver call on
    /// every launch otherwise).
    pub(crate) fn resident_blocks(
        &self,
        op: &'static str,
        f: &cudarc::driver::CudaFunction,
        name: &str,
        threads: u32,
        shared: usize,
    ) -> Result<usize> {
        let key = format!("{name}/{threads}/{shared}");
        if let Some(&n) = crate::backend::lock(&self.resident, op, "occupancy")?.get(&key) {
            return Ok(n);
        }
        let n = f.occupancy_max_active_blocks_per_multiprocessor(threads, shared, None).map_err(device_err(op))?;
        let n = (n as usize).max(1);
        crate::backend::lock(&self.resident, op, "occupancy")?.insert(key, n);
        Ok(n)
    }

    /// The device error record kernels write bad indices to (see `flag.rs`).
    pub(crate) fn flag(&self) -> Result<std::sync::MutexGuard<'_, ErrorFlag>> {
        self.flag.lock().map_err(|_| Error::Device { op: "launch", backend: NAME, msg: "error flag poisoned".into() })
    }

    /// Report (and clear) a content error a kernel recorded since the last check.
    fn take_content_error(&self) -> Result<()> {
        self.flag()?.take(&self.stream)
    }

    /// The architecture kernels are compiled for (`sm_90a` on Hopper).
    pub fn arch(&self) -> &'static str {
        self.kernels.arch()
    }

    /// The stream every op is queued on.
    pub fn stream(&self) -> &Arc<CudaStream> {
        &self.stream
    }

    /// The CUDA context.
    pub fn context(&self) -> &Arc<CudaContext> {
        self.stream.context()
    }
}

impl CudaBackend {
    /// The GPU ordinal this backend runs on.
    pub fn ordinal(&self) -> usize {
        self.ordinal
    }
}

impl fmt::Debug for CudaBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CudaBackend").field("ordinal", &self.ordinal).finish_non_exhaustive()
    }
}

#[cfg(feature = "cuda")]
fn no_device(reason: String) -> Error {
    Error::NoDevice { backend: NAME, reason }
}

/// The error of a failed driver call of `op`: [`Error::OutOfMemory`] for the driver's
/// `CUDA_ERROR_OUT_OF_MEMORY` (the op's scratch or output did not fit; `bytes` unknown, 0),
/// [`Error::Device`] for the rest.
///
/// NOTE: an out-of-memory answer of `cuMemAlloc`/`cuMemAllocAsync` is not sticky: the
/// context and stream stay usable, so the caller may free memory and retry.
#[cfg(feature = "cuda")]
pub(crate) fn device_err(op: &'static str) -> impl FnOnce(DriverError) -> Error {
    move |e| alloc_err(op, 0)(e)
}

/// [`device_err`] for an allocation of `bytes`.
#[cfg(feature = "cuda")]
fn alloc_err(op: &'static str, bytes: usize) -> impl FnOnce(DriverError) -> Error {
    use cudarc::driver::sys::CUresult::CUDA_ERROR_OUT_OF_MEMORY;
    move |e| match e.0 {
        CUDA_ERROR_OUT_OF_MEMORY => Error::OutOfMemory { op, backend: NAME, bytes, msg: e.to_string() },
        _ => Error::Device { op, backend: NAME, msg: e.to_string() },
    }
}

/// Bytes of a `dtype` tensor of `shape`, or [`Error::OutOfMemory`] when the count overflows
/// `usize` (no device holds that).
#[cfg(feature = "cuda")]
pub(crate) fn tensor_bytes(op: &'static str, dtype: DType, shape: &[usize]) -> Result<usize> {
    shape.iter().try_fold(dtype.size(), |n, &d| n.checked_mul(d)).ok_or_else(|| Error::OutOfMemory {
        op,
        backend: NAME,
        bytes: usize::MAX,
        msg: format!("a {dtype} tensor of shape {shape:?} needs more than usize::MAX bytes"),
    })
}

#[cfg(feature = "cuda")]
impl CudaBackend {
    /// A buffer of `dtype` and `shape` on the stream whose contents are undefined (no memset,
    /// unlike [`Device::alloc`]): for a layer's intermediates, which its kernels write in full
    /// before anything reads them. Zeroing them cost the qwen3 layer ~0.74 GB of memsets per
    /// call, and a decode step nine memset nodes.
    ///
    /// # Errors
    /// [`Error::OutOfMemory`] when the device has no room; [`Error::Device`] otherwise.
    pub(crate) fn alloc_uninit(&self, dtype: DType, shape: &[usize]) -> Result<CudaBuffer> {
        let bytes = tensor_bytes("alloc", dtype, shape)?;
        // SAFETY: device memory only; the callers' kernels write every element before any read
        // (see ops/moe.rs), and the host never reads it before.
        let data = unsafe { self.stream.alloc::<u8>(alloc_len(bytes)) }.map_err(alloc_err("alloc", bytes))?;
        Ok(CudaBuffer { dtype, shape: shape.to_vec(), data })
    }
}

/// The scratch buffer in `slot`, at least `len` elements (at least one), allocated on the
/// backend's stream or grown there (the old one freed stream-ordered, or kept until the last
/// graph that may read it is dropped); contents undefined.
///
/// NOTE: reusing one buffer across calls is safe because every op of a backend is queued on
/// its one stream: the next call's writes run after this call's reads.
///
/// # Errors
/// The driver's allocation error.
#[cfg(feature = "cuda")]
pub(crate) fn grown<'a, T: cudarc::driver::DeviceRepr + Send + 'static>(
    slot: &'a mut Option<CudaSlice<T>>,
    be: &CudaBackend,
    len: usize,
) -> std::result::Result<&'a mut CudaSlice<T>, DriverError> {
    let (len, stream) = (len.max(1), &be.stream);
    let buf = match slot.take() {
        Some(buf) if buf.len() >= len => buf,
        old => {
            if let Some(old) = old {
                crate::graph::Pins::retire(&be.pins, Box::new(old));
            }
            // SAFETY: scratch whose users write every element they read.
            unsafe { stream.alloc::<T>(len) }?
        }
    };
    Ok(slot.insert(buf))
}

/// Lock `m`, or a device error naming `what` when a panicking thread poisoned it.
#[cfg(feature = "cuda")]
pub(crate) fn lock<'a, T>(m: &'a Mutex<T>, op: &'static str, what: &str) -> Result<std::sync::MutexGuard<'a, T>> {
    m.lock().map_err(|_| Error::Device { op, backend: NAME, msg: format!("{what} poisoned") })
}

/// Bytes to allocate for `bytes` of data.
///
/// NOTE: the driver refuses a 0-byte allocation, and zero-element tensors (`T = 0`) are valid
/// everywhere in moekit, so they keep one unused byte.
#[cfg(feature = "cuda")]
fn alloc_len(bytes: usize) -> usize {
    bytes.max(1)
}

impl Device for CudaBackend {
    type Buffer = CudaBuffer;

    fn name(&self) -> &'static str {
        NAME
    }

    fn float_dtypes(&self) -> &'static [DType] {
        &DType::FLOATS
    }

    #[cfg(feature = "cuda")]
    fn alloc(&self, dtype: DType, shape: &[usize]) -> Result<CudaBuffer> {
        let bytes = tensor_bytes("alloc", dtype, shape)?;
        let data = self.stream.alloc_zeros::<u8>(alloc_len(bytes)).map_err(alloc_err("alloc", bytes))?;
        Ok(CudaBuffer { dtype, shape: shape.to_vec(), data })
    }

    #[cfg(feature = "cuda")]
    fn upload(&self, tensor: &HostTensor) -> Result<CudaBuffer> {
        let bytes = tensor.as_bytes();
        // NOTE: zeroed like `alloc` (not left uninitialised): kernels that load whole words
        // may touch the bytes past an odd-length half-precision tensor.
        let data = self.stream.alloc_zeros::<u8>(alloc_len(bytes.len())).map_err(alloc_err("upload", bytes.len()))?;
        let mut buf = CudaBuffer { dtype: tensor.dtype(), shape: tensor.shape().to_vec(), data };
        if !bytes.is_empty() {
            let mut dst = buf.data.slice_mut(..bytes.len());
            self.stream.memcpy_htod(bytes, &mut dst).map_err(device_err("upload"))?;
        }
        Ok(buf)
    }

    #[cfg(feature = "cuda")]
    fn download(&self, buffer: &CudaBuffer) -> Result<HostTensor> {
        let n = buffer.num_bytes();
        let mut host = vec![0u8; n];
        if n > 0 {
            self.stream.memcpy_dtoh(&buffer.data.slice(..n), &mut host).map_err(device_err("download"))?;
            // NOTE: the copy into pageable memory is queued on the stream; wait for it before
            // the bytes are read.
            self.stream.synchronize().map_err(device_err("download"))?;
        }
        self.take_content_error()?;
        HostTensor::from_bytes(buffer.dtype, &buffer.shape, &host)
    }

    fn reshape(&self, buffer: &mut CudaBuffer, shape: &[usize]) -> Result<()> {
        // NOTE: the device bytes stay as they are; only the logical shape changes. Metadata
        // only, so it answers the same with or without the feature.
        moekit_ops::check_reshape("buffer", &*buffer, shape)?;
        buffer.shape = shape.to_vec();
        Ok(())
    }

    #[cfg(feature = "cuda")]
    fn copy_rows(
        &self,
        src: &CudaBuffer,
        src_row: usize,
        dst: &mut CudaBuffer,
        dst_row: usize,
        rows: usize,
    ) -> Result<()> {
        let row = moekit_ops::check_copy_rows(src, src_row, &*dst, dst_row, rows)? * src.dtype.size();
        let n = rows * row;
        if n > 0 {
            let from = src.data.slice(src_row * row..src_row * row + n);
            let mut to = dst.data.slice_mut(dst_row * row..dst_row * row + n);
            self.stream.memcpy_dtod(&from, &mut to).map_err(device_err("copy_rows"))?;
        }
        Ok(())
    }

    #[cfg(feature = "cuda")]
    fn time_ms(&self, work: &mut dyn FnMut() -> Result<()>) -> Result<f64> {
        use cudarc::driver::sys::CUevent_flags::CU_EVENT_DEFAULT;
        let start = self.stream.record_event(Some(CU_EVENT_DEFAULT)).map_err(device_err("time"))?;
        work()?;
        let end = self.stream.record_event(Some(CU_EVENT_DEFAULT)).map_err(device_err("time"))?;
        let ms = start.elapsed_ms(&end).map_err(device_err("time"))?;
        self.take_content_error()?;
        Ok(ms as f64)
    }

    #[cfg(feature = "cuda")]
    fn time_runs_ms(&self, work: &mut dyn FnMut() -> Result<()>, runs: usize) -> Result<Vec<f64>> {
        use cudarc::driver::sys::CUevent_flags::CU_EVENT_DEFAULT;
        /// MiB written before each run: `do_bench`'s cache-clearing buffer, 5× the H200's L2.
        const FLUSH_MIB: usize = 256;
        // `MOEKIT_BENCH_FLUSH=<MiB>` sizes the write (0: none), to see what it costs a short
        // bandwidth-bound op: the next run writes back the dirty lines it leaves in L2.
        let mib = std::env::var("MOEKIT_BENCH_FLUSH").ok().and_then(|v| v.trim().parse().ok()).unwrap_or(FLUSH_MIB);
        // `MOEKIT_BENCH_FLUSH_READ=1` flushes by reading the buffer instead (a kernel; it leaves
        // clean lines in L2, so the run pays for no write-back of the flush's own lines).
        let read = std::env::var("MOEKIT_BENCH_FLUSH_READ").is_ok_and(|v| v.trim() == "1");
        let mut flush = self.stream.alloc_zeros::<u8>((mib << 20).max(16)).map_err(device_err("time"))?;
        let mut sink = self.stream.alloc_zeros::<u32>(1).map_err(device_err("time"))?;
        let reader = if read && mib > 0 {
            Some(self.kernels.function("time", &crate::runtime::sources::GLUE, "bench_read_flush")?)
        } else {
            None
        };
        let words = ((mib << 20) / 16) as i64;
        let mut events = Vec::with_capacity(runs);
        for _ in 0..runs {
            match &reader {
                Some(f) => {
                    use cudarc::driver::PushKernelArg;
                    let mut b = self.stream.launch_builder(f);
                    b.arg(&flush).arg(&words).arg(&mut sink);
                    // SAFETY: arguments match `bench_read_flush`; the buffer holds `words`
                    // 16-byte words (mib MiB), `sink` one u32.
                    unsafe { b.launch(crate::launch::blocks(1056, 256)) }.map_err(crate::launch::launch_err("time"))?;
                }
                None if mib > 0 => self.stream.memset_zeros(&mut flush).map_err(device_err("time"))?,
                None => {}
            }
            let start = self.stream.record_event(Some(CU_EVENT_DEFAULT)).map_err(device_err("time"))?;
            work()?;
            let end = self.stream.record_event(Some(CU_EVENT_DEFAULT)).map_err(device_err("time"))?;
            events.push((start, end));
        }
        let ms = events
            .iter()
            .map(|(start, end)| start.elapsed_ms(end).map(f64::from))
            .collect::<std::result::Result<Vec<f64>, _>>()
            .map_err(device_err("time"))?;
        self.take_content_error()?;
        Ok(ms)
    }

    #[cfg(feature = "cuda")]
    fn sync(&self) -> Result<()> {
        self.stream.synchronize().map_err(device_err("sync"))?;
        self.take_content_error()
    }

    #[cfg(feature = "cuda")]
    fn capture<'a>(&'a self, work: &mut (dyn FnMut() -> Result<()> + 'a)) -> Result<Box<dyn moekit_ops::Replay + 'a>> {
        self.capture_graph(work)
    }

    // Without the feature no `CudaBackend` can be built (`new` always fails), so these are
    // never reached; they answer the same typed error rather than panic.
    #[cfg(not(feature = "cuda"))]
    fn alloc(&self, _: DType, _: &[usize]) -> Result<CudaBuffer> {
        Err(not_compiled())
    }

    #[cfg(not(feature = "cuda"))]
    fn upload(&self, _: &HostTensor) -> Result<CudaBuffer> {
        Err(not_compiled())
    }

    #[cfg(not(feature = "cuda"))]
    fn download(&self, _: &CudaBuffer) -> Result<HostTensor> {
        Err(not_compiled())
    }

    #[cfg(not(feature = "cuda"))]
    fn copy_rows(&self, _: &CudaBuffer, _: usize, _: &mut CudaBuffer, _: usize, _: usize) -> Result<()> {
        Err(not_compiled())
    }

    #[cfg(not(feature = "cuda"))]
    fn sync(&self) -> Result<()> {
        Err(not_compiled())
    }
}

#[cfg(not(feature = "cuda"))]
moekit_ops::not_implemented_ops!(CudaBackend);
