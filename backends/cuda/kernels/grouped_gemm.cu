// grouped_gemm kernels: see src/ops/grouped_gemm.rs
