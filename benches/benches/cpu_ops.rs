//! Criterion micro-benches of every CPU op on the `tiny` and `small` shapes, on the same
//! seeded workloads as the `moekit-bench` binary (`cargo bench -p moekit-bench`).
//!
//! The binary checks each result against the reference; these benches only time, for quick
//! before/after comparisons while tuning a kernel.

use criterion::measurement::WallTime;
use criterion::{criterion_group, criterion_main, BenchmarkGroup, BenchmarkId, Criterion, Throughput};
use moekit_bench::cases::{AnyWorkload, Visit};
use moekit_bench::shapes::resolve;
use moekit_bench::{Op, Prepared, Workload};
use moekit_cpu::CpuBackend;
use moekit_ops::DType;
use std::time::Duration;

/// Adds one workload's bench to a group.
struct AddBench<'g, 'c> {
    group: &'g mut BenchmarkGroup<'c, WallTime>,
    id: BenchmarkId,
}

impl Visit for AddBench<'_, '_> {
    type Out = ();
    fn visit<W: Workload>(self, w: &W) {
        let cpu = CpuBackend::new();
        let mut prepared = match Prepared::new(&cpu, w) {
            Ok(p) => p,
            Err(e) => return eprintln!("{}: cannot prepare: {e}", w.op()),
        };
        self.group.throughput(Throughput::Bytes(w.bytes() as u64));
        self.group.bench_function(self.id, |b| {
            b.iter(|| {
                if let Err(e) = prepared.run() {
                    eprintln!("{}: {e}", w.op());
                }
            })
        });
    }
}

fn cpu_ops(c: &mut Criterion) {
    for op in Op::ALL {
        let mut group = c.benchmark_group(format!("cpu/{op}"));
        group.sample_size(10).warm_up_time(Duration::from_millis(300)).measurement_time(Duration::from_secs(2));
        for name in ["tiny", "small"] {
            let Some(shape) = resolve(name).ok().and_then(|mut v| v.pop()) else { continue };
            for dtype in [DType::F32, DType::BF16] {
                match AnyWorkload::build(op, &shape, dtype, 0) {
                    Ok(w) => w.visit(AddBench { group: &mut group, id: BenchmarkId::new(name, dtype) }),
                    Err(e) => eprintln!("{op} {name} {dtype}: {e}"),
                }
            }
        }
        group.finish();
    }
}

criterion_group!(benches, cpu_ops);
criterion_main!(benches);
