//! `--dump`: the safetensors file of a case holds the op's inputs and the checked run's
//! outputs under `in.<arg>` / `out.<arg>`, byte for byte, with the case in the metadata.

use moekit_bench::cases::{AnyWorkload, Visit};
use moekit_bench::dump::{self, st_dtype, DumpInfo};
use moekit_bench::runner::{RunConfig, Runner};
use moekit_bench::shapes::{resolve, MoeShape};
use moekit_bench::workload::reference_outputs;
use moekit_bench::{measure, Op, TimingMode, Workload};
use moekit_cpu::CpuBackend;
use moekit_ops::{DType, HostTensor, TensorMeta};
use safetensors::SafeTensors;
use std::path::{Path, PathBuf};

fn tiny() -> MoeShape {
    resolve("tiny").unwrap().remove(0)
}

/// A fresh folder under the system temp dir, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> Self {
        let p = std::env::temp_dir().join(format!("moekit-bench-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        TempDir(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Every tensor of `file` named as expected, with the dtype, shape and bytes of `expected`.
fn assert_file_holds(file: &Path, expected: &[(String, &HostTensor)]) {
    let bytes = std::fs::read(file).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let mut names: Vec<&str> = st.names().into_iter().map(String::as_str).collect();
    names.sort_unstable();
    let mut want: Vec<&str> = expected.iter().map(|(n, _)| n.as_str()).collect();
    want.sort_unstable();
    assert_eq!(names, want, "{}", file.display());
    for (name, t) in expected {
        let v = st.tensor(name).unwrap();
        assert_eq!(v.dtype(), st_dtype(t.dtype()), "{name}");
        assert_eq!(v.shape(), t.shape(), "{name}");
        assert!(v.data() == t.as_bytes(), "{name}: bytes differ");
    }
}

/// Measure on the CPU, dump, read back.
struct DumpAndRead<'a> {
    dir: &'a Path,
    dtype: DType,
}

impl Visit for DumpAndRead<'_> {
    type Out = PathBuf;
    fn visit<W: Workload>(self, w: &W) -> PathBuf {
        let got = measure(&CpuBackend::new(), w, 0, 1, TimingMode::Queued).unwrap().outputs;
        let info = DumpInfo { shape: "tiny", backend: "cpu", seed: 5 };
        let path = dump::write(self.dir, w, self.dtype, &got, &info).unwrap();
        let ins = w.input_names().iter().map(|n| format!("in.{n}")).zip(w.inputs());
        let outs = w.output_checks().into_iter().map(|c| format!("out.{}", c.0)).zip(&got);
        assert_file_holds(&path, &ins.chain(outs).collect::<Vec<_>>());
        path
    }
}

#[test]
fn dump_holds_inputs_and_outputs_byte_for_byte() {
    let tmp = TempDir::new("dump-bytes");
    for (op, dtype) in [(Op::MoeLayer, DType::BF16), (Op::MoeLayer, DType::F16), (Op::Route, DType::F32)] {
        let w = AnyWorkload::build(op, &tiny(), dtype, 5).unwrap();
        let path = w.visit(DumpAndRead { dir: &tmp.0, dtype });
        assert_eq!(path, tmp.0.join(format!("{}-tiny-{}.safetensors", op.name(), dtype.name())));
    }
}

#[test]
fn runner_dumps_the_tiny_moe_layer_with_its_case_in_the_metadata() {
    let tmp = TempDir::new("dump-runner");
    let cpu = CpuBackend::new();
    let cfg = RunConfig { iters: 1, warmup: 0, seed: 3, dump: Some(tmp.0.clone()), ..RunConfig::default() };
    let shape = tiny();
    let out = Runner::new(&cpu, cfg).run(Op::MoeLayer, &shape, DType::BF16).unwrap();
    let path = out.dump.clone().unwrap().unwrap();
    assert_eq!(path, tmp.0.join("moe_layer-tiny-bf16.safetensors"));

    let bytes = std::fs::read(&path).unwrap();
    let (_, meta) = SafeTensors::read_metadata(&bytes).unwrap();
    let meta = meta.metadata().clone().unwrap();
    assert_eq!(meta["op"], "moe_layer");
    assert_eq!(meta["shape"], "tiny");
    assert_eq!(meta["dtype"], "bf16");
    assert_eq!(meta["backend"], "cpu");
    assert_eq!(meta["seed"], "3");
    assert_eq!(meta["dims"], "[64,128,8,2,64]");

    // The same seed rebuilds the same inputs; the dumped output is the checked run's, so it
    // passes the check against the reference.
    let w = AnyWorkload::build(Op::MoeLayer, &shape, DType::BF16, 3).unwrap();
    let AnyWorkload::Moe(w) = w else { panic!("moe_layer builds a MoeCase") };
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let (t, h, e, i) = (shape.tokens, shape.hidden, shape.experts, shape.inter);
    let shapes = [("in.x", vec![t, h]), ("in.gate", vec![h, e]), ("in.w_up", vec![e, h, 2 * i])];
    let shapes = shapes.into_iter().chain([("in.w_down", vec![e, i, h]), ("out.out", vec![t, h])]);
    for (k, (name, dims)) in shapes.enumerate() {
        let v = st.tensor(name).unwrap();
        assert_eq!((v.dtype(), v.shape()), (safetensors::Dtype::BF16, &dims[..]), "{name}");
        if k < 4 {
            assert!(v.data() == w.inputs()[k].as_bytes(), "{name}: bytes differ from the seeded input");
        }
    }
    assert_eq!(st.len(), 5);
    let dumped = HostTensor::from_bytes(DType::BF16, &[t, h], st.tensor("out.out").unwrap().data()).unwrap();
    let verdict = w.verify_full(&reference_outputs(&w).unwrap(), &[dumped]).unwrap();
    assert!(verdict.pass, "{:?}", verdict.detail);
}
