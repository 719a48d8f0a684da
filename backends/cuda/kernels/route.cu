// route kernels: see src/ops/route.rs
