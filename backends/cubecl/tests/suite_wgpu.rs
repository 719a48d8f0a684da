//! The cross-backend property suite on cubecl's wgpu runtime (lavapipe in CI): skipped, and
//! said so, without the feature `cubecl-wgpu` or a Vulkan adapter.

moekit_testing::backend_suite!(wgpu, try moekit_cubecl::CubeBackend::<moekit_cubecl::WgpuRuntime>::wgpu(), [f32, f16]);
