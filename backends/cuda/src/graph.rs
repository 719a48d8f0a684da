//! CUDA graphs ([`moekit_ops::Device::capture`]): the work of a decode step, or of any small
//! problem whose time is launches, recorded once and replayed with one launch.
//!
//! Recording uses stream capture on the backend's stream: the ops queue their kernels, copies,
//! memsets and stream-ordered allocations exactly as they do eagerly, and none of them waits on
//! the host (the offsets, tile plans and routing stay on the device), so the whole MoE layer
//! records. Per-call intermediates (`alloc` inside an op) become the graph's own allocation
//! and free nodes.
//!
//! Two things outlive a call and are read by a recorded graph: the buffers the work borrowed
//! (held borrowed by the graph's lifetime) and the backend's grow-only scratch (route logits,
//! the cuBLASLt workspace). [`Pins`] keeps scratch that is replaced by a larger one alive while
//! any graph exists, so a replay never reads freed memory; the retired buffers are freed
//! (stream-ordered, after the replays queued before) when the last graph is dropped.

use crate::backend::device_err;
use crate::{CudaBackend, NAME};
use cudarc::driver::sys::{CUgraphInstantiate_flags, CUstreamCaptureMode, CUstreamCaptureStatus};
use cudarc::driver::CudaGraph;
use moekit_ops::{Device, Error, Replay, Result};
use std::any::Any;
use std::sync::{Arc, Mutex};

const OP: &str = "capture";

/// Live graphs of a backend, and the scratch buffers replaced while any lived.
#[derive(Default)]
pub(crate) struct Pins {
    live: usize,
    retired: Vec<Box<dyn Any + Send>>,
}

impl Pins {
    /// The lock, also after a panic elsewhere.
    ///
    /// NOTE: a poisoned lock only means another thread panicked while holding it; the counts
    /// are still right, and losing track of a graph or a buffer would be worse.
    fn locked(pins: &Mutex<Pins>) -> std::sync::MutexGuard<'_, Pins> {
        pins.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Drop `old` now, or keep it until the last graph is gone when a graph may read it.
    pub(crate) fn retire(pins: &Mutex<Pins>, old: Box<dyn Any + Send>) {
        let mut p = Self::locked(pins);
        if p.live > 0 {
            p.retired.push(old);
        }
    }

    /// One more graph that may read the scratch.
    fn pin(pins: &Mutex<Pins>) {
        Self::locked(pins).live += 1;
    }

    /// One graph fewer; the last one frees the retired scratch (stream-ordered, after every
    /// replay queued so far).
    fn unpin(pins: &Mutex<Pins>) {
        let mut p = Self::locked(pins);
        p.live -= 1;
        if p.live == 0 {
            p.retired.clear();
        }
    }
}

/// A recorded graph of a [`CudaBackend`]; see [`Device::capture`].
pub(crate) struct CudaReplay {
    graph: CudaGraph,
    pins: Arc<Mutex<Pins>>,
}

impl Replay for CudaReplay {
    fn replay(&self) -> Result<()> {
        self.graph.launch().map_err(device_err("replay"))
    }
}

impl Drop for CudaReplay {
    fn drop(&mut self) {
        Pins::unpin(&self.pins);
    }
}

impl CudaBackend {
    /// Whether the stream is recording a graph now (ops must then not wait on the host, and
    /// tuning that times candidates is skipped).
    pub(crate) fn capturing(&self) -> bool {
        !matches!(self.stream.capture_status(), Ok(CUstreamCaptureStatus::CU_STREAM_CAPTURE_STATUS_NONE))
    }

    pub(crate) fn capture_graph<'a>(
        &'a self,
        work: &mut (dyn FnMut() -> Result<()> + 'a),
    ) -> Result<Box<dyn Replay + 'a>> {
        if self.stream.cu_stream().is_null() {
            return Err(Error::unsupported(
                OP,
                "graphs need a non-default stream: the legacy default stream cannot be recorded \
                 (CudaBackend::new makes its own stream; from_stream takes the caller's)",
            ));
        }
        if self.capturing() {
            return Err(Error::unsupported(OP, "the stream is already recording a graph"));
        }
        // Eagerly first: NVRTC compiles, scratch grows and tuning decides outside the recording.
        work()?;
        self.sync()?;
        // Count the graph before recording, so scratch replaced from here on is kept.
        Pins::pin(&self.pins);
        match self.record(work) {
            Ok(graph) => Ok(Box::new(CudaReplay { graph, pins: Arc::clone(&self.pins) })),
            Err(e) => {
                Pins::unpin(&self.pins);
                Err(e)
            }
        }
    }

    /// Stream capture of `work` and the instantiated graph (uploaded, so the first replay
    /// does not pay the setup).
    fn record(&self, work: &mut dyn FnMut() -> Result<()>) -> Result<CudaGraph> {
        self.stream.begin_capture(CUstreamCaptureMode::CU_STREAM_CAPTURE_MODE_THREAD_LOCAL).map_err(device_err(OP))?;
        let ran = work();
        // NOTE: the capture always ends, also when `work` failed, so the stream is usable after.
        let ended = self.stream.end_capture(CUgraphInstantiate_flags(0));
        ran?;
        let graph = match ended {
            Ok(Some(g)) => g,
            Ok(None) => {
                return Err(Error::Device { op: OP, backend: NAME, msg: "the capture recorded no graph".into() })
            }
            Err(e) => {
                return Err(Error::unsupported(
                    OP,
                    format!(
                        "the work could not be recorded ({e}); recorded work must not wait on the \
                         host (download, sync) nor use another stream"
                    ),
                ))
            }
        };
        graph.upload().map_err(device_err(OP))?;
        Ok(graph)
    }
}
