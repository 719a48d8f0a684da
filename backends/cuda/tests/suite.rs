//! The property suite on the CUDA backend, every op and dtype, against the reference. Without
//! the `cuda` feature or a GPU every test prints `SKIPPED` with the reason.

moekit_testing::backend_suite!(cuda, try moekit_cuda::CudaBackend::new(0), [f32, f16, bf16]);
