//! The peer keys `torch_peers.py` prints for qwen3-30b-a3b match the dims moekit-bench gives
//! its lines for `--shape qwen3-30b-a3b --attn 4,32,8,4096,128,1`, without running that size.

use moekit_bench::cases::{peer_dims, AnyWorkload};
use moekit_bench::peers::{matching, parse};
use moekit_bench::shapes::{resolve, AttnShape};
use moekit_bench::{Op, Workload};
use moekit_ops::DType;

/// What `torch_peers.py` prints for qwen3-30b-a3b and the first attention batch (its
/// `emit` lines, with error and check lines that must be skipped).
const PEERS: &str = r#"{"op": "env", "torch": "2.6.0", "gpu": "NVIDIA H200"}
{"op": "copy", "shape": [1073741824], "peer": "torch.copy_", "ms": 1.0, "gbps": 4280.0}
{"op": "gemm", "shape": [8192, 8192, 8192], "peer": "cublas", "ms": 1.5, "tflops": 733.0}
{"op": "route", "shape": [16384, 2048, 128, 8], "peer": "torch-eager", "ms": 0.21, "gbps": 330.0, "name": "qwen3-30b-a3b"}
{"op": "permute", "shape": [16384, 2048, 128, 8], "peer": "torch-eager", "ms": 0.45, "gbps": 1300.0, "name": "qwen3-30b-a3b"}
{"op": "grouped_gemm_up", "shape": [131072, 2048, 1536, 128], "peer": "torch._grouped_mm", "ms": 1.4, "tflops": 590.0, "name": "qwen3-30b-a3b"}
{"op": "grouped_gemm_up_check", "name": "qwen3-30b-a3b", "rel_err": 0.002}
{"op": "grouped_gemm_up", "shape": [131072, 2048, 1536, 128], "peer": "torch-loop-mm", "ms": 3.1, "tflops": 260.0, "name": "qwen3-30b-a3b"}
{"op": "moe_layer_fwd", "shape": [16384, 2048, 128, 8, 768], "peer": "torch-eager+grouped_mm", "ms": 4.2, "tflops": 300.0, "tokens_per_s": 3900000.0, "name": "qwen3-30b-a3b"}
{"op": "attention_fwd", "shape": [4, 32, 8, 4096, 128, 1], "peer": "sdpa-flash", "ms": 0.9, "tflops": 610.0}
{"op": "attention_fwd", "shape": [4, 32, 8, 4096, 128, 1], "peer": "sdpa-cudnn", "ms": 0.8, "tflops": 690.0}
{"op": "attention_fwd", "shape": [4, 32, 8, 4096, 128, 1], "peer": "sdpa-efficient", "error": "No available kernel"}
"#;

#[test]
fn qwen3_lines_match_their_peers() {
    let peers = parse(PEERS).unwrap();
    let mut shape = resolve("qwen3-30b-a3b").unwrap().remove(0);
    shape.attn = AttnShape::parse("4,32,8,4096,128,1").unwrap();
    let expect = [
        (Op::Route, vec!["torch-eager"]),
        (Op::Permute, vec!["torch-eager"]),
        (Op::GroupedGemmUp, vec!["torch._grouped_mm", "torch-loop-mm"]),
        (Op::MoeLayer, vec!["torch-eager+grouped_mm"]),
        (Op::Attention, vec!["sdpa-cudnn", "sdpa-flash"]),
    ];
    for (op, want) in expect {
        let got: Vec<&str> = matching(&peers, op, &peer_dims(op, &shape)).iter().map(|p| p.peer.as_str()).collect();
        assert_eq!(got, want, "{op} {:?}", peer_dims(op, &shape));
    }
    // The table's own attention batch (32/4 heads) is not the peer's (32/8): no match
    // without --attn.
    let plain = resolve("qwen3-30b-a3b").unwrap().remove(0);
    assert!(matching(&peers, Op::Attention, &peer_dims(Op::Attention, &plain)).is_empty());
}

#[test]
fn peer_dims_are_the_built_workloads_dims() {
    let mut shapes = resolve("tiny").unwrap();
    shapes.extend(resolve("custom:T=40,H=64,E=6,k=3,I=48,skew=1").unwrap());
    for shape in &shapes {
        for op in Op::ALL {
            let dims = AnyWorkload::build(op, shape, DType::F32, 1).unwrap().visit(Dims);
            assert_eq!(peer_dims(op, shape), dims, "{op} on {}", shape.name);
        }
    }
}

struct Dims;

impl moekit_bench::cases::Visit for Dims {
    type Out = Vec<usize>;
    fn visit<W: Workload>(self, w: &W) -> Vec<usize> {
        w.dims()
    }
}
