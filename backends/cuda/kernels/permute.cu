// permute kernels: see src/ops/permute.rs
