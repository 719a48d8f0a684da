//! `%copy`: memory-bound ops carry the copy ceiling and its percentage, FLOP-bound ones do not.

use moekit_bench::record::Record;
use moekit_bench::runner::{RunConfig, Runner};
use moekit_bench::shapes::resolve;
use moekit_bench::Op;
use moekit_cpu::CpuBackend;
use moekit_ops::DType;

#[test]
fn only_memory_bound_ops_report_pct_copy_ceiling() {
    let cpu = CpuBackend::new();
    let cfg = RunConfig { iters: 1, warmup: 0, copy_ceiling_gbps: Some(50.0), ..RunConfig::default() };
    let mut runner = Runner::new(&cpu, cfg);
    let shape = resolve("tiny").unwrap().remove(0);
    for op in Op::ALL {
        let out = runner.run(op, &shape, DType::F32).unwrap();
        let v: serde_json::Value = serde_json::from_str(&Record::new(&out, &[], "h", "d").to_json()).unwrap();
        if op.memory_bound() {
            let pct = v["pct_copy_ceiling"].as_f64().unwrap_or_else(|| panic!("{op}: no pct_copy_ceiling in {v}"));
            let expected = 100.0 * v["gbps"].as_f64().unwrap() / 50.0;
            assert!((pct - expected).abs() <= 1e-9 * expected, "{op}: {pct} vs {expected}");
            assert_eq!(v["copy_ceiling_gbps"], 50.0);
        } else {
            assert!(v.get("pct_copy_ceiling").is_none() && v.get("copy_ceiling_gbps").is_none(), "{op}: {v}");
        }
    }
}

#[test]
fn no_copy_ceiling_no_percentage() {
    let cpu = CpuBackend::new();
    let mut runner = Runner::new(&cpu, RunConfig { iters: 1, warmup: 0, ..RunConfig::default() });
    let out = runner.run(Op::Permute, &resolve("tiny").unwrap().remove(0), DType::F32).unwrap();
    assert_eq!(out.pct_of_copy_ceiling(), None);
    assert!(!Record::new(&out, &[], "h", "d").to_json().contains("pct_copy_ceiling"));
}
