//! Every bench case on the `tiny` shape: the CPU backend passes the full check and the
//! sampled check, poisoned outputs fail both, and the runner fills every JSON field.

use moekit_bench::cases::{AnyWorkload, Visit};
use moekit_bench::data::poison;
use moekit_bench::record::Record;
use moekit_bench::runner::{RunConfig, Runner};
use moekit_bench::shapes::{resolve, MoeShape};
use moekit_bench::workload::reference_outputs;
use moekit_bench::{measure, Op, TimingMode, Workload};
use moekit_cpu::CpuBackend;
use moekit_ops::{DType, HostTensor};

fn tiny() -> MoeShape {
    resolve("tiny").unwrap().remove(0)
}

/// Checks one workload four ways.
struct FourWays {
    samples: usize,
}

impl Visit for FourWays {
    type Out = Vec<String>;
    fn visit<W: Workload>(self, w: &W) -> Vec<String> {
        let mut problems = Vec::new();
        let name = w.op().name();
        let got = measure(&CpuBackend::new(), w, 1, 2, TimingMode::Queued).unwrap().outputs;
        let expected = reference_outputs(w).unwrap();
        let full = w.verify_full(&expected, &got).unwrap();
        if !full.pass {
            problems.push(format!("{name}: cpu fails the full check: {:?}", full.detail));
        }
        let sample = w.verify_sample(&got, self.samples, 1).unwrap();
        if !sample.pass {
            problems.push(format!("{name}: cpu fails the sampled check: {:?}", sample.detail));
        }
        let poisoned: Vec<HostTensor> = w.outputs().iter().map(|(dt, s)| poison(*dt, s)).collect();
        if w.verify_full(&expected, &poisoned).unwrap().pass {
            problems.push(format!("{name}: poisoned outputs pass the full check"));
        }
        if w.verify_sample(&poisoned, self.samples, 1).unwrap().pass {
            problems.push(format!("{name}: poisoned outputs pass the sampled check"));
        }
        problems
    }
}

#[test]
fn every_case_passes_on_cpu_and_poison_fails() {
    let shape = tiny();
    let mut problems = Vec::new();
    for dtype in [DType::F32, DType::BF16] {
        for op in Op::ALL {
            let w = AnyWorkload::build(op, &shape, dtype, 5).unwrap();
            problems.extend(w.visit(FourWays { samples: 7 }).into_iter().map(|p| format!("{dtype}: {p}")));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn skewed_custom_shape_checks_on_a_sample() {
    let shape = resolve("custom:T=300,H=72,E=12,k=3,I=40,skew=1.3").unwrap().remove(0);
    let mut problems = Vec::new();
    for op in [Op::Route, Op::Permute, Op::GroupedGemmUp, Op::MoeLayer] {
        let w = AnyWorkload::build(op, &shape, DType::F32, 9).unwrap();
        problems.extend(w.visit(FourWays { samples: 50 }));
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn runner_fills_the_json_line() {
    let cpu = CpuBackend::new();
    let cfg = RunConfig { iters: 2, warmup: 0, compare_reference: true, ceiling: true, ..RunConfig::default() };
    let mut runner = Runner::new(&cpu, cfg);
    let out = runner.run(Op::GroupedGemmUp, &tiny(), DType::F32).unwrap();
    assert!(out.verdict.pass, "{:?}", out.verdict.detail);
    assert_eq!(out.dims, vec![64 * 2, 128, 128, 8]);
    let peers = moekit_bench::peers::parse(
        r#"{"op": "grouped_gemm_up", "shape": [128, 128, 128, 8], "peer": "torch._grouped_mm", "ms": 0.25}"#,
    )
    .unwrap();
    let rec = Record::new(&out, &peers, "host", "2026-01-01T00:00:00Z");
    let v: serde_json::Value = serde_json::from_str(&rec.to_json()).unwrap();
    for key in [
        "op",
        "shape",
        "backend",
        "dtype",
        "ms",
        "tflops",
        "gbps",
        "check",
        "max_rel_err",
        "host",
        "date",
        "peer",
        "peer_ms",
        "ratio",
        "ref_ms",
        "speedup_vs_reference",
        "ceiling_tflops",
        "pct_of_ceiling",
    ] {
        assert!(v.get(key).is_some_and(|x| !x.is_null()), "missing {key} in {v}");
    }
    assert_eq!(v["check"], "pass");
    let ratio = v["ratio"].as_f64().unwrap();
    assert!((ratio - 0.25 / v["ms"].as_f64().unwrap()).abs() < 1e-9 * ratio.max(1.0));
    assert_eq!((v["timing"].as_str(), v["iters"].as_u64()), (Some("queued"), Some(2)));
}

#[test]
fn the_json_line_says_how_the_runs_were_timed() {
    let cpu = CpuBackend::new();
    for (mode, name) in [(TimingMode::Queued, "queued"), (TimingMode::Synced, "synced")] {
        // 7 runs with the ceiling interleaved 5 at a time: every run of the op is counted.
        let cfg = RunConfig { iters: 7, warmup: 0, ceiling: true, timing: mode, ..RunConfig::default() };
        let out = Runner::new(&cpu, cfg).run(Op::Permute, &tiny(), DType::F32).unwrap();
        assert!(out.verdict.pass, "{:?}", out.verdict.detail);
        let v: serde_json::Value = serde_json::from_str(&Record::new(&out, &[], "host", "d").to_json()).unwrap();
        assert_eq!((v["timing"].as_str(), v["iters"].as_u64()), (Some(name), Some(7)), "{v}");
        let (ms, min_ms) = (v["ms"].as_f64().unwrap(), v["min_ms"].as_f64().unwrap());
        assert!(min_ms > 0.0 && min_ms <= ms, "{v}");
    }
}
