//! Inputs the cargo-fuzz targets (`fuzz/`) found to abort the CPU backend, kept as regression
//! tests (the reference must answer the same).

use moekit_cpu::CpuBackend;
use moekit_ops::{
    api, CombineIo, CombineProblem, DType, HostTensor, RotaryIo, RotaryPositions, RotaryProblem, TensorMeta,
};
use moekit_reference::ReferenceBackend;

/// `fuzz/permute`: a combine with no tokens and a huge hidden size built an `H`-long f32
/// scratch per rayon task anyway (a capacity-overflow panic for `H` past `isize::MAX / 4`,
/// 8 GiB per task at `H = i32::MAX`, the most validation now takes). No rows: nothing to
/// compute, `Ok`.
#[test]
fn combine_without_tokens_allocates_nothing_per_hidden() {
    for h in [i32::MAX as usize, 1 << 30] {
        let p = CombineProblem { tokens: 0, hidden: h, k: 2, rows: 0, add: false, dtype: DType::F16 };
        let y = HostTensor::zeros(DType::F16, &[0, h]);
        let w = HostTensor::zeros(DType::F32, &[0, 2]);
        let tsr = HostTensor::zeros(DType::I32, &[0, 2]);
        let mut out = HostTensor::zeros(DType::F16, &[0, h]);
        let mut want = out.clone();
        let io = CombineIo { y: &y, weights: &w, token_slot_to_row: &tsr, add: None, out: &mut out };
        api::unpermute_combine(&CpuBackend::new(), &p, io).unwrap();
        let io = CombineIo { y: &y, weights: &w, token_slot_to_row: &tsr, add: None, out: &mut want };
        api::unpermute_combine(&ReferenceBackend, &p, io).unwrap();
        assert_eq!(out, want);
    }
}

/// Found beside the above by reading the same pattern: rotary with no tokens and a head dim
/// near `i32::MAX` built `D/2`-long frequency tables (gigabytes) before noticing there was
/// nothing to rotate.
#[test]
fn rotary_without_tokens_allocates_nothing_per_head_dim() {
    let d = i32::MAX as usize - 1;
    let p = RotaryProblem {
        tokens: 0,
        heads: 1,
        head_dim: d,
        theta: 10_000.0,
        positions: RotaryPositions::OneD,
        dtype: DType::F32,
    };
    let x = HostTensor::zeros(DType::F32, &[0, 1, d]);
    let pos = HostTensor::zeros(DType::I32, &[0]);
    let mut out = x.clone();
    api::rotary(&CpuBackend::new(), &p, RotaryIo { x: &x, positions: &pos, out: &mut out }).unwrap();
    assert_eq!(out.shape(), [0, 1, d]);
}
