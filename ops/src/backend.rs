//! The backend seam: one trait per op family over a [`Device`], composed into [`Backend`].
//!
//! Backends implement the traits taking `&Validated<P>`; callers use the free functions in
//! [`crate::api`], which validate the problem and every buffer before the backend runs.
//!
//! # Where errors come from
//!
//! - **Validation** (every backend, before it runs): `P::validate()`, then `check_io` on every
//!   buffer, then whether the backend takes the dtype. Typed errors ([`crate::Error::Shape`],
//!   [`crate::Error::DType`], [`crate::Error::Invalid`], ...) naming the op and the argument.
//!   These guarantees hold for the [`crate::api`] entry points (and the `Device` methods
//!   [`Device::copy_rows`] and [`Device::reshape`], which check their own arguments). The
//!   op-family traits below trust that `check_io` passed: a trait method called directly with
//!   buffers of the wrong shape may panic or read garbage on some backends.
//! - **Content errors**: bad index data (ids, rows, offsets, counts, gather rows out of range)
//!   and non-finite routing inputs, which only the data shows. Host backends (reference, cpu)
//!   return them from the op call itself. Device backends (cuda, cubecl-cuda, cubecl-wgpu)
//!   **defer** them: the kernel records the first bad element it meets, stays in bounds and
//!   carries on, the op returns `Ok`, and the error surfaces at the next [`Device::download`],
//!   [`Device::sync`] or [`Device::time_ms`] on that backend, whichever buffer it concerns.
//!   The same variant, op, argument and bounds are reported on every backend; the index is
//!   the lowest bad one on host backends and whichever bad element a thread hit first on
//!   device backends. Only the first error since the last check is kept (later ones are
//!   lost). After a content error every output of that op is unspecified on every backend
//!   (host backends happen to leave them untouched; device backends may have written them).

use crate::attention::{AttentionIo, AttentionProblem};
use crate::glue::{EmbeddingProblem, GemmProblem, RmsNormIo, RmsNormProblem, RotaryIo, RotaryProblem, SwigluProblem};
use crate::grouped_gemm::{GroupedGemmIo, GroupedGemmProblem};
use crate::permute::{CombineIo, CombineProblem, PermuteIo, PermuteProblem};
use crate::route::{BiasUpdateProblem, RouteIo, RouteProblem};
use crate::{DType, HostTensor, Result, TensorMeta, Validated};

/// Device memory and a stream. Every op family builds on it.
pub trait Device {
    /// A device-resident buffer that knows its dtype and shape.
    type Buffer: TensorMeta + std::fmt::Debug;

    /// Backend name (`"reference"`, `"cpu"`, `"cuda"`, `"cubecl-wgpu"`, ...).
    fn name(&self) -> &'static str;

    /// Float dtypes the float ops accept on this backend (index data is always `I32`).
    fn float_dtypes(&self) -> &'static [DType];

    /// A zero-filled buffer.
    ///
    /// # Errors
    /// [`crate::Error::Device`] when the device cannot allocate.
    fn alloc(&self, dtype: DType, shape: &[usize]) -> Result<Self::Buffer>;

    /// Copy a host tensor to the device.
    ///
    /// # Errors
    /// [`crate::Error::Device`] or [`crate::Error::Unsupported`] for a dtype the device lacks.
    fn upload(&self, tensor: &HostTensor) -> Result<Self::Buffer>;

    /// Copy a buffer back to the host (waits for the work that writes it).
    ///
    /// # Errors
    /// [`crate::Error::Device`]; on device backends also a deferred content error of any
    /// earlier op (see [`Device::sync`]), not necessarily one that wrote `buffer`: the bytes
    /// copied are then discarded and the error is cleared.
    fn download(&self, buffer: &Self::Buffer) -> Result<HostTensor>;

    /// Reinterprets `buffer` with another row-major `shape` of the same element count (no
    /// copy, no kernel).
    ///
    /// # Errors
    /// [`crate::Error::Shape`] when the element counts differ.
    fn reshape(&self, buffer: &mut Self::Buffer, shape: &[usize]) -> Result<()>;

    /// Copies rows `src_row..src_row + rows` of `src` into rows `dst_row..dst_row + rows` of
    /// `dst` (rows: the first axis; both buffers' rows hold the same number of elements, of one
    /// dtype); the rest of `dst` is unchanged. Writing a KV cache, assembling a sequence from
    /// segments and taking a slice of rows are all this. Ordered after earlier work on the
    /// backend's stream, like an op.
    ///
    /// # Errors
    /// Those of [`crate::check_copy_rows`] (nothing is written), device errors.
    fn copy_rows(
        &self,
        src: &Self::Buffer,
        src_row: usize,
        dst: &mut Self::Buffer,
        dst_row: usize,
        rows: usize,
    ) -> Result<()>;

    /// Wait for all queued work.
    ///
    /// # Errors
    /// [`crate::Error::Device`], or a content error (bad index data, non-finite routing
    /// inputs) a kernel recorded since the last check, on the backends that defer them (cuda,
    /// cubecl-cuda, cubecl-wgpu; host backends return them from the op and `sync` is always
    /// `Ok`). The check is the last `download`, `sync` or `time_ms` on this backend; only the
    /// first error since then is kept, and reporting it clears it. The error is not tied to a
    /// buffer, and the outputs of the op that raised it are unspecified.
    fn sync(&self) -> Result<()>;

    /// Milliseconds of device time `work` takes: the default waits for the device, runs
    /// `work`, waits again and reads the wall clock; GPU backends time with device events.
    ///
    /// # Errors
    /// The errors of `work` and of [`Device::sync`] (a deferred content error included).
    fn time_ms(&self, work: &mut dyn FnMut() -> Result<()>) -> Result<f64> {
        self.sync()?;
        let start = std::time::Instant::now();
        work()?;
        self.sync()?;
        Ok(start.elapsed().as_secs_f64() * 1e3)
    }

    /// Milliseconds of device time of each of `runs` runs of `work`, timed as
    /// `triton.testing.do_bench` times the PyTorch peers: each run follows a write over a buffer
    /// larger than the last-level cache (256 MiB), so it starts with a cold cache, and the runs
    /// are queued without waiting for each one, so the host's launches of a run overlap the
    /// device's work before it and stay out of the figure while they take less time than that
    /// write. The default (host backends, cubecl) times each run with [`Device::time_ms`];
    /// the cuda backend does the above.
    ///
    /// # Errors
    /// The errors of `work` and of [`Device::sync`] (a deferred content error included).
    fn time_runs_ms(&self, work: &mut dyn FnMut() -> Result<()>, runs: usize) -> Result<Vec<f64>> {
        (0..runs).map(|_| self.time_ms(work)).collect()
    }

    /// Records the device work `work` queues as a graph that [`Replay::replay`] queues again
    /// with one launch, for decode steps and other small problems whose time is launches.
    ///
    /// `work` runs twice: once eagerly (and waited for), so kernels are compiled, scratch is
    /// grown and tuning choices are made outside the recording, then once recorded (nothing it
    /// queues runs until a replay). A replay repeats exactly the recorded work on the same
    /// buffers: the borrows `work` holds stay held while the returned graph lives, so the
    /// buffers it reads and writes can be neither freed nor changed from the host in between.
    /// Problem sizes, and everything the host decided while recording, are fixed; data on the
    /// device (routing, offsets) is read afresh by every replay. Content errors a replay meets
    /// are deferred as for ops.
    ///
    /// The default refuses: only the CUDA backend records graphs.
    ///
    /// # Errors
    /// [`crate::Error::Unsupported`] on backends without graphs (and on CUDA for work that
    /// waits on the host, such as a download, while recording); the errors of `work`.
    fn capture<'a>(&'a self, work: &mut (dyn FnMut() -> Result<()> + 'a)) -> Result<Box<dyn Replay + 'a>> {
        let _ = work;
        Err(crate::Error::unsupported("capture", format!("the {} backend does not record graphs", self.name())))
    }
}

/// Recorded device work ([`Device::capture`]).
pub trait Replay {
    /// Queues the recorded work once more on its backend's stream (no wait).
    ///
    /// # Errors
    /// Device errors of the launch.
    fn replay(&self) -> Result<()>;
}

/// Routing and the aux-loss-free bias update.
pub trait RouteOps: Device {
    /// Top-k routing; see [`RouteProblem`].
    ///
    /// # Errors
    /// [`crate::Error::NonFinite`] for non-finite routing inputs ([`crate::numerics`] says
    /// which), a content error: returned here on host backends, deferred to the next
    /// `download`/`sync`/`time_ms` on device backends (cuda and cubecl both); device errors.
    fn route(&self, p: &Validated<RouteProblem>, io: RouteIo<'_, Self::Buffer>) -> Result<()>;

    /// `bias[e] += speed * sign(mean - counts[e])` in place; see [`BiasUpdateProblem`].
    /// The counts and the bias are used as given (no content check).
    ///
    /// # Errors
    /// Device errors.
    fn update_bias(
        &self,
        p: &Validated<BiasUpdateProblem>,
        bias: &mut Self::Buffer,
        counts: &Self::Buffer,
    ) -> Result<()>;
}

/// Dispatch and weighted combine.
pub trait PermuteOps: Device {
    /// Dispatch; see [`PermuteProblem`].
    ///
    /// # Errors
    /// [`crate::Error::IndexOutOfRange`] for ids outside `0..E` (a content error: returned
    /// here on host backends, deferred on device backends, see the module docs), device
    /// errors.
    fn permute(&self, p: &Validated<PermuteProblem>, io: PermuteIo<'_, Self::Buffer>) -> Result<()>;

    /// Weighted combine; see [`CombineProblem`].
    ///
    /// # Errors
    /// [`crate::Error::IndexOutOfRange`] for rows outside `0..R` (a content error, deferred on
    /// device backends), device errors.
    fn unpermute_combine(&self, p: &Validated<CombineProblem>, io: CombineIo<'_, Self::Buffer>) -> Result<()>;
}

/// Grouped expert GEMM.
pub trait GroupedGemmOps: Device {
    /// See [`GroupedGemmProblem`].
    ///
    /// # Errors
    /// [`crate::Error::BadOffsets`] / [`crate::Error::IndexOutOfRange`] for bad offsets,
    /// counts or gather rows (content errors, deferred on device backends; the `BadOffsets`
    /// message is free text and differs between host and device), device errors.
    fn grouped_gemm(&self, p: &Validated<GroupedGemmProblem>, io: GroupedGemmIo<'_, Self::Buffer>) -> Result<()>;
}

/// Attention.
pub trait AttentionOps: Device {
    /// See [`AttentionProblem`].
    ///
    /// # Errors
    /// Device errors.
    fn attention(&self, p: &Validated<AttentionProblem>, io: AttentionIo<'_, Self::Buffer>) -> Result<()>;
}

/// Model glue.
pub trait GlueOps: Device {
    /// See [`RmsNormProblem`].
    ///
    /// # Errors
    /// Device errors.
    fn rms_norm(&self, p: &Validated<RmsNormProblem>, io: RmsNormIo<'_, Self::Buffer>) -> Result<()>;

    /// See [`RotaryProblem`].
    ///
    /// # Errors
    /// Device errors.
    fn rotary(&self, p: &Validated<RotaryProblem>, io: RotaryIo<'_, Self::Buffer>) -> Result<()>;

    /// See [`SwigluProblem`]: `x [rows, 2I]` → `y [rows, I]`.
    ///
    /// # Errors
    /// Device errors.
    fn swiglu(&self, p: &Validated<SwigluProblem>, x: &Self::Buffer, y: &mut Self::Buffer) -> Result<()>;

    /// See [`EmbeddingProblem`]: `table [V, H]`, `ids [T]` → `out [T, H]`.
    ///
    /// # Errors
    /// [`crate::Error::IndexOutOfRange`] for ids outside `0..V` (a content error, deferred on
    /// device backends), device errors.
    fn embedding(
        &self,
        p: &Validated<EmbeddingProblem>,
        table: &Self::Buffer,
        ids: &Self::Buffer,
        out: &mut Self::Buffer,
    ) -> Result<()>;

    /// See [`GemmProblem`]: `c = a · b`.
    ///
    /// # Errors
    /// Device errors.
    fn gemm(&self, p: &Validated<GemmProblem>, a: &Self::Buffer, b: &Self::Buffer, c: &mut Self::Buffer) -> Result<()>;
}

/// Every op family on one device.
pub trait Backend: RouteOps + PermuteOps + GroupedGemmOps + AttentionOps + GlueOps + crate::moe::MoeOps {}

impl<T: RouteOps + PermuteOps + GroupedGemmOps + AttentionOps + GlueOps + crate::moe::MoeOps> Backend for T {}
