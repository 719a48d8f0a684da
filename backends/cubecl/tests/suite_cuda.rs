//! The property suite on cubecl's CUDA runtime, every op and dtype, against the reference.
//! Without the `cubecl-cuda` feature or a GPU every test prints `SKIPPED` with the reason.

moekit_testing::backend_suite!(
    cubecl_cuda,
    try moekit_cubecl::CubeBackend::<moekit_cubecl::CudaRuntime>::cuda(0),
    [f32, f16, bf16]
);
