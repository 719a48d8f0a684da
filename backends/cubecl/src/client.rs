//! With a cubecl feature on: constructors, and [`Device`] through the cubecl client for any
//! `R: cubecl::Runtime`.

use crate::backend::{CUDA, WGPU};
use crate::{CubeBackend, CubeBuffer};
use cubecl::client::ComputeClient;
use cubecl::ir::{ElemType, FloatKind};
use cubecl::Runtime;
use moekit_ops::{DType, Device, Error, HostTensor, Result, TensorMeta};

const F32_F16_BF16: &[DType] = &[DType::F32, DType::F16, DType::BF16];
const F32_F16: &[DType] = &[DType::F32, DType::F16];
const F32: &[DType] = &[DType::F32];

impl<R: Runtime> CubeBackend<R> {
    /// The backend on a caller's cubecl client (a framework's own, so moekit ops run on its
    /// buffers and queue with no copy).
    pub fn from_client(client: ComputeClient<R>) -> Self {
        let name = match R::name(&client) {
            n if n.starts_with("wgpu") => WGPU,
            n if n.starts_with("cuda") => CUDA,
            _ => "cubecl",
        };
        let props = client.properties();
        let has = |k: FloatKind| props.supports_type(ElemType::Float(k));
        let float_dtypes = match (has(FloatKind::F16), has(FloatKind::BF16)) {
            (true, true) => F32_F16_BF16,
            (true, false) => F32_F16,
            // NOTE: a device without f16 cannot hold bf16 data either in moekit's kernels,
            // which convert half types through f16/bf16 loads.
            _ => F32,
        };
        let flag = crate::flag::ErrorFlag::new(&client);
        CubeBackend { client, name, float_dtypes, flag, moe_scratch: crate::ops::MoeScratch::default() }
    }

    /// The cubecl client.
    pub fn client(&self) -> &ComputeClient<R> {
        &self.client
    }

    /// What the runtime offers moekit's kernels (dtypes, planes, matrix instructions, shared
    /// memory), as the kernel choices see it.
    pub fn capabilities(&self) -> crate::Capabilities {
        use cubecl::ir::{features::Plane, StorageType};
        let props = self.client.properties();
        let f32_ty = StorageType::Scalar(ElemType::Float(FloatKind::F32));
        let has = |kind: FloatKind, n: u32, manual: bool| {
            let ty = StorageType::Scalar(ElemType::Float(kind));
            let config = cubecl::ir::features::MmaConfig { a_type: ty, b_type: ty, cd_type: f32_ty, m: 16, n, k: 16 };
            let m = &props.features.matmul;
            if manual {
                m.mma.contains(&config)
            } else {
                m.cmma.contains(&config)
            }
        };
        let plane = &props.features.plane;
        crate::Capabilities {
            runtime: R::name(&self.client).to_string(),
            float_dtypes: self.float_dtypes.to_vec(),
            plane_ops: plane.contains(Plane::Ops),
            plane_size: (props.hardware.plane_size_min, props.hardware.plane_size_max),
            cmma: (has(FloatKind::F16, 16, false), has(FloatKind::BF16, 16, false)),
            mma: (has(FloatKind::F16, 8, true), has(FloatKind::BF16, 8, true)),
            max_shared_bytes: props.hardware.max_shared_memory_size,
        }
    }
}

/// Runs cubecl's client creation, turning its panics (no adapter, no driver) into
/// [`Error::NoDevice`].
fn start<R: Runtime>(name: &'static str, device: &R::Device) -> Result<CubeBackend<R>> {
    // NOTE: cubecl 0.10 panics in client creation when the device cannot be opened. The
    // device descriptor is only read, and nothing of ours is left half-built by a panic, so
    // asserting unwind safety is sound.
    let open = std::panic::AssertUnwindSafe(|| CubeBackend::from_client(R::client(device)));
    std::panic::catch_unwind(open)
        .map_err(|_| Error::NoDevice { backend: name, reason: "the cubecl runtime could not open the device".into() })
}

#[cfg(feature = "cubecl-wgpu")]
impl CubeBackend<cubecl::wgpu::WgpuRuntime> {
    /// The backend on the default wgpu adapter (`CUBECL_WGPU_DEFAULT_DEVICE` overrides it).
    ///
    /// # Errors
    /// [`Error::NoDevice`] when the graphics API lists no adapter (on Linux: no Vulkan driver;
    /// `mesa-vulkan-drivers` provides lavapipe) or the adapter cannot be opened.
    pub fn wgpu() -> Result<Self> {
        use cubecl::wgpu::{AutoGraphicsApi, GraphicsApi, WgpuRuntime};
        let api = AutoGraphicsApi::backend();
        // NOTE: type id 4 lists adapters of every kind; cubecl panics when none exists.
        if WgpuRuntime::enumerate_devices(4, &api).is_empty() {
            return Err(Error::NoDevice { backend: WGPU, reason: format!("no {api:?} adapter found") });
        }
        start(WGPU, &cubecl::wgpu::WgpuDevice::DefaultDevice)
    }
}

#[cfg(feature = "cubecl-wgpu")]
impl CubeBackend<cubecl::wgpu::WgpuRuntime> {
    /// The backend on a wgpu device and queue the caller already owns (a renderer's, a
    /// burn-wgpu model's), so moekit's kernels are submitted to that queue and no second
    /// device is opened.
    ///
    /// `setup` carries the caller's instance, adapter, device and queue. The device should have
    /// been requested with the features cubecl uses (`SHADER_F16` for f16 data, `SUBGROUP` for
    /// plane operations, and on Vulkan the SPIR-V passthrough): the simplest way is to let
    /// cubecl make it once with `cubecl::wgpu::init_setup` and share that setup with the rest
    /// of the program. Call this once per setup (cubecl registers a new device each call).
    ///
    /// # Errors
    /// [`Error::NoDevice`] when cubecl cannot start a compute server on the device.
    pub fn from_wgpu_setup(setup: cubecl::wgpu::WgpuSetup) -> Result<Self> {
        // NOTE: cubecl 0.10 panics when it cannot build its server on the device; the setup
        // is moved in and nothing of ours is half-built by a panic, so unwind safety holds.
        let open = std::panic::AssertUnwindSafe(|| {
            let device = cubecl::wgpu::init_device(setup, cubecl::wgpu::RuntimeOptions::default());
            CubeBackend::from_client(cubecl::wgpu::WgpuRuntime::client(&device))
        });
        std::panic::catch_unwind(open).map_err(|_| Error::NoDevice {
            backend: WGPU,
            reason: "cubecl could not start on the given wgpu device".into(),
        })
    }
}

#[cfg(feature = "cubecl-cuda")]
impl CubeBackend<cubecl::cuda::CudaRuntime> {
    /// The backend on CUDA device `index`.
    ///
    /// # Errors
    /// [`Error::NoDevice`] when the CUDA driver is missing or has no device `index`.
    pub fn cuda(index: usize) -> Result<Self> {
        let no_device = |reason: String| Error::NoDevice { backend: CUDA, reason };
        // SAFETY: this only tries to load the driver library by its usual names.
        if !unsafe { cudarc::driver::sys::is_culib_present() } {
            return Err(no_device("the CUDA driver library (libcuda) is not installed".into()));
        }
        let count = cudarc::driver::CudaContext::device_count().map_err(|e| no_device(e.to_string()))?;
        if index >= count.max(0) as usize {
            return Err(no_device(format!("device {index} requested, the driver reports {count}")));
        }
        start(CUDA, &cubecl::cuda::CudaDevice { index })
    }
}

/// Allocations of at least this many bytes first ask how much device memory is free (a round
/// trip to cubecl's server thread, negligible next to filling that many bytes).
const CHECK_FREE_BYTES: usize = 64 << 20;

impl<R: Runtime> CubeBackend<R> {
    /// Refuses, with [`Error::OutOfMemory`], an allocation of `bytes` that cannot succeed,
    /// before cubecl is asked for it.
    ///
    /// NOTE: cubecl 0.10 reserves memory on its server thread (`initialize_memory`) and
    /// `unwrap`s the result there: a request larger than its largest pool
    /// (`properties().memory.max_page_size`, a quarter of the GPU's memory on CUDA) or one the
    /// driver refuses panics on that thread (which catches it) and leaves a handle bound to
    /// nothing, with no error to the caller. So the size is checked here: against
    /// `max_page_size` always, and from [`CHECK_FREE_BYTES`] on (CUDA runtime only) against
    /// the driver's free memory plus what cubecl's pools hold unused. Fragmentation of the
    /// pools can still make a request that passes fail.
    pub(crate) fn check_alloc(&self, op: &'static str, bytes: usize) -> Result<()> {
        let oom = |msg: String| Error::OutOfMemory { op, backend: self.name, bytes, msg };
        let max = self.client.properties().memory.max_page_size;
        if bytes as u64 > max {
            return Err(oom(format!("above the largest single allocation of cubecl's runtime ({max} bytes)")));
        }
        if bytes >= CHECK_FREE_BYTES {
            // NOTE: a request that no page cubecl holds can take reserves a whole new page of its
            // pool from the driver (on the H200, 8 GiB takes a 9.4 GB page and 6 GiB a 37.5 GB one),
            // so the page, not the request, must fit. Pages cubecl holds unused are given back
            // first when the page does not fit.
            let page = pool_page(bytes as u64, max, self.client.properties().memory.alignment);
            if let Some(free) = self.driver_free() {
                let free = if page > free {
                    self.client.memory_cleanup();
                    cubecl::future::block_on(self.client.sync()).map_err(|e| Error::Device {
                        op,
                        backend: self.name,
                        msg: e.to_string(),
                    })?;
                    self.driver_free().unwrap_or(free)
                } else {
                    free
                };
                if page > free {
                    return Err(oom(format!(
                        "cubecl reserves a page of {page} bytes for it and {free} bytes are free on the device"
                    )));
                }
            }
        }
        Ok(())
    }

    /// Uninitialised device memory of `bytes` (at least one) for an op's scratch, after
    /// [`CubeBackend::check_alloc`]: every allocation goes through the size check, since
    /// cubecl's own allocation panics on its server thread instead of answering an error.
    ///
    /// # Errors
    /// [`Error::OutOfMemory`] when the device cannot hold it.
    pub(crate) fn scratch(&self, op: &'static str, bytes: usize) -> Result<cubecl::server::Handle> {
        let bytes = alloc_len(bytes);
        self.check_alloc(op, bytes)?;
        Ok(self.client.empty(bytes))
    }

    /// Zeroes the first `words` 4-byte words of `handle` on the device (a kernel, no upload).
    ///
    /// # Errors
    /// [`Error::Unsupported`] when the grid would be too large for the runtime.
    pub(crate) fn zero_words(&self, op: &'static str, handle: &cubecl::server::Handle, words: usize) -> Result<()> {
        if let Some(count) = crate::ops::grid(op, words)? {
            // SAFETY: callers pass a handle of at least `words` u32 words, the array launched over.
            let out = unsafe { cubecl::prelude::ArrayArg::from_raw_parts(handle.clone(), words) };
            crate::kernels::fill::zero_words::launch::<R>(
                &self.client,
                count,
                cubecl::prelude::CubeDim::new_1d(crate::ops::BLOCK as u32),
                out,
            );
        }
        Ok(())
    }

    /// Bytes the driver can still give; `None` where the runtime cannot say (wgpu).
    fn driver_free(&self) -> Option<u64> {
        #[cfg(feature = "cubecl-cuda")]
        if self.name == CUDA {
            // NOTE: on cubecl's server thread, where its CUDA context is current.
            let (free, _total) = self.client.exclusive(cudarc::driver::result::mem_get_info).ok()?.ok()?;
            return Some(free as u64);
        }
        None
    }
}

/// The page that cubecl's default memory configuration (`MemoryConfiguration::SubSlices` of
/// cubecl-runtime 0.10, `MemoryManagement::from_configuration`) reserves from the driver for a
/// request of `bytes` that none of its pages can take: the pools, smallest first, are sliced
/// pages of `max_page / 4^j` (aligned) taking slices up to `page / 2^j`, then one pool of
/// `max_page` pages; a request goes to the first pool whose slice limit holds it, or whose page
/// it fills to at least 80%.
///
/// NOTE: keep in step with cubecl-runtime when the pinned version moves (tested against the
/// figures seen on the H200 in `pool_page_matches_cubecl_on_the_h200`).
fn pool_page(bytes: u64, max_page: u64, align: u64) -> u64 {
    const MB: u64 = 1 << 20;
    let align = align.max(1);
    let mut pools = Vec::new();
    let mut current = max_page;
    let mut level = 1u32;
    while current >= 32 * MB {
        current = (current / 4).next_multiple_of(align);
        pools.push((current, current.checked_shr(level).unwrap_or(0)));
        level += 1;
    }
    pools.reverse();
    let top = max_page / align * align;
    pools.push((top, top));
    pools
        .into_iter()
        .find(|&(page, slice)| slice >= bytes || page.checked_sub(bytes).is_some_and(|d| d * 5 < page))
        .map_or(bytes, |(page, _)| page)
}

/// Bytes of a `dtype` tensor of `shape`, or [`Error::OutOfMemory`] when the count overflows
/// `usize` (no device holds that).
fn tensor_bytes(op: &'static str, backend: &'static str, dtype: DType, shape: &[usize]) -> Result<usize> {
    shape.iter().try_fold(dtype.size(), |n, &d| n.checked_mul(d)).ok_or_else(|| Error::OutOfMemory {
        op,
        backend,
        bytes: usize::MAX,
        msg: format!("a {dtype} tensor of shape {shape:?} needs more than usize::MAX bytes"),
    })
}

/// NOTE: zero-element tensors (`T = 0`) are valid everywhere in moekit; they keep 16 unused,
/// initialised bytes, so no runtime is asked for an empty allocation and a kernel's one
/// 16-byte vector load of element 0 (loaded and discarded where a tile has no data) stays
/// inside initialised memory (compute-sanitizer's initcheck).
const MIN_BYTES: usize = 16;

/// Bytes to allocate for `bytes` of data.
fn alloc_len(bytes: usize) -> usize {
    bytes.max(MIN_BYTES)
}

impl<R: Runtime> Device for CubeBackend<R> {
    type Buffer = CubeBuffer;

    fn name(&self) -> &'static str {
        self.name
    }

    fn float_dtypes(&self) -> &'static [DType] {
        self.float_dtypes
    }

    fn alloc(&self, dtype: DType, shape: &[usize]) -> Result<CubeBuffer> {
        let bytes = tensor_bytes("alloc", self.name, dtype, shape)?;
        // NOTE: whole 4-byte words, zeroed on the device by a kernel (no host upload); the
        // buffer's shape, not the handle's size, says how many bytes are data.
        self.check_alloc("alloc", alloc_len(bytes))?;
        let words = alloc_len(bytes).div_ceil(4);
        let handle = self.client.empty(words * 4);
        self.zero_words("alloc", &handle, words)?;
        Ok(CubeBuffer { dtype, shape: shape.to_vec(), handle })
    }

    fn upload(&self, tensor: &HostTensor) -> Result<CubeBuffer> {
        let bytes = tensor.as_bytes();
        self.check_alloc("upload", alloc_len(bytes.len()))?;
        let handle = if bytes.is_empty() {
            self.client.create_from_slice(&[0u8; MIN_BYTES])
        } else {
            self.client.create_from_slice(bytes)
        };
        Ok(CubeBuffer { dtype: tensor.dtype(), shape: tensor.shape().to_vec(), handle })
    }

    fn reshape(&self, buffer: &mut CubeBuffer, shape: &[usize]) -> Result<()> {
        // NOTE: the handle stays as it is; only the logical shape changes, so the byte count
        // (`num_bytes`) and the handle's size stay consistent.
        moekit_ops::check_reshape("buffer", &*buffer, shape)?;
        buffer.shape = shape.to_vec();
        Ok(())
    }

    fn copy_rows(
        &self,
        src: &CubeBuffer,
        src_row: usize,
        dst: &mut CubeBuffer,
        dst_row: usize,
        rows: usize,
    ) -> Result<()> {
        use crate::kernels::fill;
        use cubecl::prelude::{ArrayArg, CubeDim};
        const OP: &str = "copy_rows";
        let size = src.dtype.size();
        let row = moekit_ops::check_copy_rows(src, src_row, &*dst, dst_row, rows)? * size;
        let (from, to, n) = (src_row * row, dst_row * row, rows * row);
        let Some(count) = crate::ops::grid(OP, n.div_ceil(4))? else { return Ok(()) };
        let block = CubeDim::new_1d(crate::ops::BLOCK as u32);
        let scalar = |v: usize| crate::ops::gemm::scalar(OP, v);
        // SAFETY (both launches): every buffer's handle holds whole 4-byte words covering its
        // data (`alloc`, `upload`), and the checked ranges lie inside the data.
        let words = |b: &CubeBuffer| unsafe {
            ArrayArg::<R>::from_raw_parts(b.handle.clone(), b.num_bytes().div_ceil(4).max(1))
        };
        if (from | to | n) % 4 == 0 {
            fill::copy_words::launch::<R>(
                &self.client,
                count,
                block,
                words(src),
                words(dst),
                scalar(from / 4)?,
                scalar(to / 4)?,
                scalar(n / 4)?,
            );
        } else {
            // NOTE: only 2-byte dtypes get here (4-byte ranges are whole words); the bits move
            // as f16 whatever the dtype, which no runtime converts on a plain load and store.
            let Some(count) = crate::ops::grid(OP, n / 2)? else { return Ok(()) };
            let halves =
                |b: &CubeBuffer| unsafe { ArrayArg::<R>::from_raw_parts(b.handle.clone(), (b.num_bytes() / 2).max(1)) };
            let elem = ElemType::Float(FloatKind::F16);
            fill::copy_halves::launch::<R>(
                &self.client,
                count,
                block,
                halves(src),
                halves(dst),
                scalar(from / 2)?,
                scalar(to / 2)?,
                scalar(n / 2)?,
                elem,
            );
        }
        Ok(())
    }

    fn download(&self, buffer: &CubeBuffer) -> Result<HostTensor> {
        let n = buffer.num_bytes();
        // NOTE: the record is read first, so even an empty download reports a content error.
        self.flag.check(&self.client, self.name)?;
        if n == 0 {
            return Ok(HostTensor::zeros(buffer.dtype, &buffer.shape));
        }
        let bytes = self.client.read_one(buffer.handle.clone()).map_err(|e| Error::Device {
            op: "download",
            backend: self.name,
            msg: e.to_string(),
        })?;
        HostTensor::from_bytes(buffer.dtype, &buffer.shape, bytes.get(..n).unwrap_or(&bytes))
    }

    fn sync(&self) -> Result<()> {
        cubecl::future::block_on(self.client.sync()).map_err(|e| Error::Device {
            op: "sync",
            backend: self.name,
            msg: e.to_string(),
        })?;
        self.flag.check(&self.client, self.name)
    }
}

#[cfg(test)]
mod tests {
    use super::pool_page;

    /// The H200 (cubecl-cuda: a quarter of 150.1 GB per largest page, 512-byte alignment):
    /// the fault test saw cubecl reserve 9,381,867,520 bytes for an 8 GiB buffer.
    #[test]
    fn pool_page_matches_cubecl_on_the_h200() {
        const MAX: u64 = 37_527_470_080;
        const GIB: u64 = 1 << 30;
        assert_eq!(pool_page(8 * GIB, MAX, 512), 9_381_867_520);
        // Too large for the 9.4 GB pool's slices, too small to fill 80% of its page.
        assert_eq!(pool_page(6 * GIB, MAX, 512), MAX);
        // Slices up to half of the 9.4 GB page.
        assert_eq!(pool_page(4 * GIB, MAX, 512), 9_381_867_520);
        assert_eq!(pool_page(MAX, MAX, 512), MAX);
        // Small requests take small pages; every page holds its request.
        for bytes in [64u64 << 20, 100 << 20, 1 << 30, 3 * GIB, 20 * GIB, MAX - 1] {
            let page = pool_page(bytes, MAX, 512);
            assert!(page >= bytes && page <= MAX, "{bytes} -> {page}");
        }
        assert!(pool_page(64 << 20, MAX, 512) < 1 << 30);
    }
}
