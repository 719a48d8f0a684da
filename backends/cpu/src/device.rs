//! The CPU device: host memory, no stream.

/// moekit's default backend: host memory, rayon parallelism, f32 accumulation, every op for
/// f32, f16 and bf16.
///
/// Buffers are [`moekit_ops::HostTensor`]s; upload and download copy, `sync` returns at once (every op
/// has finished when it returns).
///
/// ```
/// use moekit_cpu::CpuBackend;
/// use moekit_ops::{DType, Device};
/// let cpu = CpuBackend::new();
/// let buf = cpu.alloc(DType::BF16, &[2, 3]).unwrap();
/// assert_eq!(cpu.download(&buf).unwrap().to_f32_vec(), vec![0.0; 6]);
/// ```
#[derive(Clone, Copy, Debug, Default)]
pub struct CpuBackend {
    _private: (),
}

impl CpuBackend {
    /// The CPU backend on rayon's global thread pool (set `RAYON_NUM_THREADS` to size it).
    pub fn new() -> Self {
        CpuBackend { _private: () }
    }
}

moekit_ops::host_device!(CpuBackend, "cpu");
