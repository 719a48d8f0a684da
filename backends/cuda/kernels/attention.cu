// attention kernels: see src/ops/attention.rs
