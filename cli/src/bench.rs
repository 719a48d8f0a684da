//! `moekit bench`: prefill and decode speed of the model on one backend, against the H200's
//! limits.
//!
//! - **Prefill** of `T` text tokens from an empty cache, the heads on the last row only (a
//!   serving prefill): tokens/s and TFLOP/s, counting `2 · T · P` for the active matrix
//!   parameters `P` per token (attention projections, router, `k` routed and the shared
//!   experts, dense MLPs) plus causal attention `2 · Hq · D · T²` per layer.
//! - **Decode**: one text token per step after a cache of `C` rows (batch 1): tokens/s and
//!   the bytes a step must read (every attention and shared weight, the router, `k` experts'
//!   weights, the text head, the K/V cache) as GB/s.
//!
//! Each figure is the median of `iters` wall-clock runs after one warm-up, the backend synced
//! before and after (the model reads each layer's routing back to the host, so the host waits
//! on the device anyway). JSON lines go to `--json`.

use moekit_model::{Elastic, Heads, Model, ModelConfig, Segment};
use moekit_ops::Backend;
use std::fmt::Write as _;
use std::time::Instant;

/// The H200's datasheet limits: dense bf16 tensor-core FLOP/s and HBM bytes/s.
const PEAK_FLOPS: f64 = 989.4e12;
const PEAK_BYTES: f64 = 4.8e12;

/// What to measure.
#[derive(Debug, Clone)]
pub struct BenchPlan {
    /// Prefill lengths.
    pub prefill: Vec<usize>,
    /// Cache lengths of the decode steps.
    pub context: Vec<usize>,
    /// Timed runs per figure.
    pub iters: usize,
}

/// Matrix parameters one token runs through in layer `l` (per token, not counting the head).
fn layer_params(cfg: &ModelConfig, l: usize, k: usize) -> f64 {
    let (h, d) = (cfg.hidden as f64, cfg.head_dim as f64);
    let attn = h * (cfg.q_heads as f64 * d + 2.0 * cfg.kv_heads as f64 * d) + cfg.q_heads as f64 * d * h;
    let mlp = if cfg.is_dense(l) {
        3.0 * h * cfg.dense_intermediate as f64
    } else {
        let routed = k as f64 * 3.0 * h * cfg.expert_intermediate as f64;
        let shared = 3.0 * h * (cfg.shared_experts * cfg.shared_intermediate) as f64;
        h * cfg.routed_experts as f64 + routed + shared
    };
    attn + mlp
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Runs the plan on `m`; the report lines and the JSON lines.
///
/// # Errors
/// The model's errors, as text.
pub fn bench<B: Backend>(m: &Model<'_, B>, e: &Elastic, plan: &BenchPlan) -> Result<(String, String), String> {
    let cfg = m.config();
    let b = m.backend();
    let layers = e.layers.clone().unwrap_or_else(|| (0..cfg.layers).collect());
    let k = e.top_k.unwrap_or(cfg.top_k);
    let params: f64 = layers.iter().map(|&l| layer_params(cfg, l, k)).sum();
    let size = 2.0; // bytes per weight in bf16/f16 (f32 runs: the GB/s is a lower bound)
    let (hd, nl) = ((cfg.q_heads * cfg.head_dim) as f64, layers.len() as f64);
    let ids = |n: usize| -> Vec<i32> { (0..n).map(|i| ((i * 7919 + 13) % cfg.text_vocab) as i32).collect() };
    let err = |x: moekit_model::ModelError| x.to_string();
    let dev = |x: moekit_ops::Error| x.to_string();
    let (mut text, mut json) = (String::new(), String::new());
    let common =
        format!("\"backend\":\"{}\",\"preset\":\"{}\",\"layers\":{},\"top_k\":{k}", b.name(), cfg.name, layers.len());
    for &t in &plan.prefill {
        let mut times = Vec::new();
        for it in 0..=plan.iters {
            let mut cache = m.cache(t, e).map_err(err)?;
            b.sync().map_err(dev)?;
            let t0 = Instant::now();
            m.step_with(&mut cache, &[Segment::Text(ids(t))], e, Heads::Last).map_err(err)?;
            b.sync().map_err(dev)?;
            if it > 0 {
                times.push(t0.elapsed().as_secs_f64());
            }
        }
        let s = median(times);
        let flops = 2.0 * t as f64 * params + nl * 2.0 * hd * (t as f64).powi(2);
        let tf = flops / s / 1e12;
        let _ = writeln!(
            text,
            "prefill      {t:>6} tokens: {:>9.2} ms, {:>9.0} tokens/s, {tf:>6.1} TFLOP/s ({:.1}% of 989)",
            s * 1e3,
            t as f64 / s,
            100.0 * flops / s / PEAK_FLOPS
        );
        let _ = writeln!(
            json,
            "{{\"op\":\"model_prefill\",{common},\"tokens\":{t},\"ms\":{:.4},\"tokens_per_s\":{:.1},\"tflops\":{tf:.2}}}",
            s * 1e3,
            t as f64 / s
        );
    }
    for &c in &plan.context {
        let steps = plan.iters.max(1);
        let mut cache = m.cache(c + steps + 2, e).map_err(err)?;
        if c > 0 {
            m.step_with(&mut cache, &[Segment::Text(ids(c))], e, Heads::Last).map_err(err)?;
        }
        m.step(&mut cache, &[Segment::Text(vec![1])], e).map_err(err)?; // warm-up
        let mut times = Vec::new();
        for i in 0..steps {
            b.sync().map_err(dev)?;
            let t0 = Instant::now();
            m.step(&mut cache, &[Segment::Text(vec![(i % cfg.text_vocab) as i32])], e).map_err(err)?;
            b.sync().map_err(dev)?;
            times.push(t0.elapsed().as_secs_f64());
        }
        let s = median(times);
        let kv = nl * 2.0 * (c as f64) * (cfg.kv_heads * cfg.head_dim) as f64 * size;
        let bytes = (params + (cfg.hidden * cfg.text_vocab) as f64) * size + kv;
        let gbs = bytes / s / 1e9;
        let _ = writeln!(
            text,
            "decode       context {c:>6}: {:>9.3} ms, {:>9.1} tokens/s, {gbs:>7.1} GB/s of weights + KV ({:.1}% of 4.8 TB/s)",
            s * 1e3,
            1.0 / s,
            100.0 * bytes / s / PEAK_BYTES
        );
        let _ = writeln!(
            json,
            "{{\"op\":\"model_decode\",{common},\"context\":{c},\"ms\":{:.4},\"tokens_per_s\":{:.2},\"gbps\":{gbs:.1}}}",
            s * 1e3,
            1.0 / s
        );
    }
    Ok((text, json))
}
