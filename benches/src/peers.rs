//! Peer timings (PyTorch, from `../shared/peers/torch_peers.py`): one JSON object per line,
//! `{"op", "shape", "peer", "ms", "tflops", "gbps"}`, matched to moekit lines by op and shape.
//!
//! Op-name mapping (moekit → peer) and the shape each side spells:
//!
//! | moekit op | peer op | shape |
//! | --- | --- | --- |
//! | `route` | `route` | `[T, H, E, k]` |
//! | `permute` | `permute` | `[T, H, E, k]` |
//! | `grouped_gemm_up` | `grouped_gemm_up` | `[T·k, H, 2I, E]` |
//! | `moe_layer` | `moe_layer_fwd` | `[T, H, E, k, I]` |
//! | `attention` | `attention_fwd` | `[B, Hq, Hkv, S, D, causal]` |
//! | `gemm` | `gemm` | `[M, K, N]` (the peer's is its square ceiling GEMM) |
//!
//! The peers run bf16; the dtype is not part of the match. Lines without `ms` (errors,
//! `env`, `*_check`) are skipped.

use crate::workload::Op;
use serde::Deserialize;

/// One peer timing.
#[derive(Clone, Debug, PartialEq, Deserialize)]
pub struct PeerLine {
    /// Peer op name (`moe_layer_fwd`, ...).
    pub op: String,
    /// Peer problem dims.
    pub shape: Vec<usize>,
    /// Which implementation (`torch._grouped_mm`, `sdpa-flash`, ...).
    pub peer: String,
    /// Median milliseconds.
    pub ms: f64,
    /// Shape name, where the peer gives one.
    #[serde(default)]
    pub name: Option<String>,
}

/// Parse peer lines; lines that are not timings (no `ms` or no `shape`) are skipped.
///
/// # Errors
/// A message naming the line that is not JSON.
pub fn parse(text: &str) -> Result<Vec<PeerLine>, String> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || !line.starts_with('{') {
            continue;
        }
        let v: serde_json::Value =
            serde_json::from_str(line).map_err(|e| format!("peer line {}: not JSON: {e}", i + 1))?;
        if v.get("ms").and_then(|m| m.as_f64()).is_none() || v.get("shape").is_none() {
            continue;
        }
        if let Ok(p) = serde_json::from_value::<PeerLine>(v) {
            out.push(p);
        }
    }
    Ok(out)
}

/// Read and parse a peer file.
///
/// # Errors
/// A message naming the file or the bad line.
pub fn load(path: &std::path::Path) -> Result<Vec<PeerLine>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("--peers {}: {e}", path.display()))?;
    parse(&text)
}

/// Every peer timing of `op` on `dims`, fastest first.
pub fn matching<'a>(peers: &'a [PeerLine], op: Op, dims: &[usize]) -> Vec<&'a PeerLine> {
    let mut m: Vec<&PeerLine> = peers.iter().filter(|p| p.op == op.peer_name() && p.shape == dims).collect();
    m.sort_by(|a, b| a.ms.total_cmp(&b.ms));
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    const LINES: &str = r#"{"op": "env", "torch": "2.5", "gpu": "H200"}
{"op": "grouped_gemm_up", "shape": [4096, 512, 512, 16], "peer": "torch._grouped_mm", "ms": 0.5, "tflops": 2.1, "name": "small"}
{"op": "grouped_gemm_up", "shape": [4096, 512, 512, 16], "peer": "torch-loop-mm", "ms": 0.9, "tflops": 1.2, "name": "small"}
{"op": "grouped_gemm_up_check", "name": "small", "rel_err": 0.001}
{"op": "moe_layer_fwd", "peer": "torch-eager+grouped_mm", "error": "boom", "name": "x"}
{"op": "moe_layer_fwd", "shape": [512, 512, 16, 4, 256], "peer": "torch-eager+grouped_mm", "ms": 1.5}
"#;

    #[test]
    fn skips_non_timings_and_matches_by_mapped_op_and_shape() {
        let p = parse(LINES).unwrap();
        assert_eq!(p.len(), 3);
        let g = matching(&p, Op::GroupedGemmUp, &[4096, 512, 512, 16]);
        assert_eq!(g.iter().map(|l| l.peer.as_str()).collect::<Vec<_>>(), ["torch._grouped_mm", "torch-loop-mm"]);
        assert_eq!(matching(&p, Op::MoeLayer, &[512, 512, 16, 4, 256])[0].ms, 1.5);
        assert!(matching(&p, Op::MoeLayer, &[512, 512, 16, 4, 128]).is_empty());
    }

    #[test]
    fn bad_json_names_the_line() {
        assert!(parse("{\"op\": }").unwrap_err().contains("line 1"));
    }
}
