//! Attention over packed variable-length batches.

use crate::expect;
use moekit_ops::{AttentionProblem, DType, HostTensor, Result, Validated};

/// Packed varlen attention; see [`AttentionProblem`].
///
/// For sequence `b`, query row `i`, query head `h` (key/value head `h / (Hq / Hkv)`), over the
/// allowed keys `j`: `s_j = scale · q·k_j` (then `c · tanh(s_j / c)` with softcap `c`),
/// `p_j = exp(s_j) / Σ exp(s)`, `o = Σ p_j · v_j`, `lse = ln Σ exp(s)`.
///
/// `q [Tq, Hq, D]`, `k, v [Tk, Hkv, D]` → `(o [Tq, Hq, D], lse [Hq, Tq] f32)`.
///
/// # Errors
/// [`moekit_ops::Error::Shape`] / [`moekit_ops::Error::DType`] for inputs that do not match.
pub fn attention(
    p: &Validated<AttentionProblem>,
    q: &HostTensor,
    k: &HostTensor,
    v: &HostTensor,
) -> Result<(HostTensor, HostTensor)> {
    const OP: &str = "attention";
    let (tq, hq, hkv, d) = (p.total_q(), p.heads_q, p.heads_kv, p.head_dim);
    expect(OP, "q", q, p.dtype, &[tq, hq, d])?;
    p.check_kv("k", k)?;
    p.check_kv("v", v)?;
    let (q, k, v) = (q.to_f64_vec(), k.to_f64_vec(), v.to_f64_vec());
    let group = hq / hkv;
    let scale = p.scale as f64;
    let softcap = p.softcap.map(|c| c as f64);

    let mut o = vec![0f64; tq * hq * d];
    let mut lse = vec![0f64; hq * tq];
    for b in 0..p.batch() {
        let (q0, k0) = (p.cu_seqlens_q[b], p.cu_seqlens_k[b]);
        let (lq, _) = p.seq_lens(b);
        for i in 0..lq {
            let (lo, hi) = p.key_range(b, i);
            let keys: Vec<usize> = (lo..hi).filter(|&j| p.allowed(b, i, j)).collect();
            for h in 0..hq {
                let kvh = h / group;
                let q_row = &q[((q0 + i) * hq + h) * d..][..d];

                // Scores of the allowed keys.
                let scores: Vec<f64> = keys
                    .iter()
                    .map(|&j| {
                        let k_row = &k[((k0 + j) * hkv + kvh) * d..][..d];
                        let s = scale * (0..d).map(|c| q_row[c] * k_row[c]).sum::<f64>();
                        softcap.map_or(s, |cap| cap * (s / cap).tanh())
                    })
                    .collect();

                // Softmax (shifted by the max for range) and the weighted sum of values.
                let max = scores.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                let sum: f64 = scores.iter().map(|s| (s - max).exp()).sum();
                let o_row = &mut o[((q0 + i) * hq + h) * d..][..d];
                for (&j, &s) in keys.iter().zip(&scores) {
                    let weight = (s - max).exp() / sum;
                    let v_row = &v[((k0 + j) * hkv + kvh) * d..][..d];
                    for c in 0..d {
                        o_row[c] += weight * v_row[c];
                    }
                }
                lse[h * tq + q0 + i] = max + sum.ln();
            }
        }
    }
    Ok((HostTensor::from_f64(p.dtype, &[tq, hq, d], &o), HostTensor::from_f64(DType::F32, &[hq, tq], &lse)))
}
