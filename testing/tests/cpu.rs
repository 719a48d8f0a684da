//! The property suite on the CPU backend, every op and dtype, against the reference.

moekit_testing::backend_suite!(cpu, moekit_cpu::CpuBackend::new(), [f32, f16, bf16]);
