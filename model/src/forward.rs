//! The decoder forward on any moekit backend: weights uploaded once ([`Model::new`]), then a
//! sequence through the chosen layers ([`Model::forward_text`]) with the elastic options of
//! [`Elastic`] applied together, per call.
//!
//! One decoder layer, pre-norm (the residual add fused into each RMSNorm):
//!
//! ```text
//! y  = rms_norm(x)                       (the previous sublayer's output added to x first)
//! q, k, v = y·wq, y·wk, y·wv             ([T, Hq·D], [T, Hkv·D] viewed as [T, heads, D])
//! q, k = rotary_3d(q, k, (t, h, w))      (Uni-RoPE; text: t = h = w = position)
//! x += attention(q, k, v, causal)·wo
//! y  = rms_norm(x)
//! x += moe(y) + shared(y)                (dense layers: swiglu MLP)
//! ```
//!
//! then `logits = rms_norm(x)·head.text`. The MoE is the backend's fused `moe_layer` with the
//! shared experts' output as its `add`; routing statistics come from the same routing run as
//! its own op (the fused layer does not hand its choices out).

use crate::config::ModelConfig;
use crate::weights::Weights;
use moekit_ops::{
    api, AttentionIo, AttentionMask, AttentionProblem, Backend, DType, EmbeddingProblem, Error, GemmProblem,
    HostTensor, MoeLayerIo, MoeLayerProblem, RmsNormIo, RmsNormProblem, RotaryIo, RotaryPositions, RotaryProblem,
    RouteIo, RouteProblem, SwigluProblem, TensorMeta,
};
use std::collections::BTreeMap;

/// The elastic sub-model of one call: all three apply together.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Elastic {
    /// Elastic depth: the layers to run (each below `layers`, strictly increasing); `None`
    /// runs every layer.
    pub layers: Option<Vec<usize>>,
    /// Elastic width: `experts[e] == false` removes routed expert `e` (never routed to);
    /// `None` keeps all.
    pub experts: Option<Vec<bool>>,
    /// Elastic sparsity: routed experts per token, `1..=top_k`; `None` is the config's.
    pub top_k: Option<usize>,
}

/// What went wrong running the model.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// An op failed (validation or the backend).
    #[error(transparent)]
    Op(#[from] Error),
    /// The weights lack a tensor the configuration needs.
    #[error("weights: tensor `{0}` is missing")]
    MissingTensor(String),
    /// An elastic option the model cannot take.
    #[error("elastic: {0}")]
    Elastic(String),
    /// An input the model cannot take.
    #[error("input: {0}")]
    Input(String),
}

/// How often each routed expert was chosen in one layer (over the call's tokens).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LayerRouting {
    /// The layer.
    pub layer: usize,
    /// `[T, k]` chosen experts, row-major.
    pub ids: Vec<i32>,
    /// Experts per token in this call.
    pub k: usize,
}

/// The outputs of one forward.
#[derive(Clone, Debug)]
pub struct Forward {
    /// `[T, V]` next-token logits (f32).
    pub text_logits: HostTensor,
    /// Each MoE layer run, in order.
    pub routing: Vec<LayerRouting>,
}

/// The model on backend `B`: the configuration and every weight as a device buffer.
#[derive(Debug)]
pub struct Model<'b, B: Backend> {
    backend: &'b B,
    cfg: ModelConfig,
    dtype: DType,
    tensors: BTreeMap<String, B::Buffer>,
}

impl<'b, B: Backend> Model<'b, B> {
    /// Uploads `weights` (every tensor of `crate::weights::specs(cfg)`) in `dtype`; the
    /// routers' correction biases stay f32 (the routing op takes them so).
    ///
    /// # Errors
    /// [`ModelError::MissingTensor`], the backend's upload errors.
    pub fn new(backend: &'b B, cfg: &ModelConfig, weights: &Weights, dtype: DType) -> Result<Self, ModelError> {
        let mut tensors = BTreeMap::new();
        for s in crate::weights::specs(cfg) {
            let (shape, data) = weights.get(&s.name).ok_or_else(|| ModelError::MissingTensor(s.name.clone()))?;
            let dt = if s.name.ends_with("router_bias") { DType::F32 } else { dtype };
            let buf = backend.upload(&HostTensor::from_f32(dt, shape, data))?;
            tensors.insert(s.name, buf);
        }
        Ok(Model { backend, cfg: cfg.clone(), dtype, tensors })
    }

    /// The configuration.
    pub fn config(&self) -> &ModelConfig {
        &self.cfg
    }

    fn w(&self, name: &str) -> Result<&B::Buffer, ModelError> {
        self.tensors.get(name).ok_or_else(|| ModelError::MissingTensor(name.to_owned()))
    }

    /// Checks `e` against the configuration and returns the layers to run and the top-k.
    fn plan(&self, e: &Elastic) -> Result<(Vec<usize>, usize), ModelError> {
        let layers = match &e.layers {
            None => (0..self.cfg.layers).collect(),
            Some(l) => {
                if l.is_empty() || l.windows(2).any(|w| w[0] >= w[1]) || l.iter().any(|&i| i >= self.cfg.layers) {
                    return Err(ModelError::Elastic(format!(
                        "layers {l:?} must be non-empty, strictly increasing and below {}",
                        self.cfg.layers
                    )));
                }
                l.clone()
            }
        };
        let k = e.top_k.unwrap_or(self.cfg.top_k);
        if k == 0 || k > self.cfg.top_k {
            return Err(ModelError::Elastic(format!("top_k {k} must be in 1..={}", self.cfg.top_k)));
        }
        if let Some(m) = &e.experts {
            let on = m.iter().filter(|&&b| b).count();
            if m.len() != self.cfg.routed_experts || on < k {
                return Err(ModelError::Elastic(format!(
                    "expert mask of {} entries with {on} kept: needs {} entries and at least top_k = {k} kept",
                    m.len(),
                    self.cfg.routed_experts
                )));
            }
        }
        Ok((layers, k))
    }

    /// Runs text token `ids` (one sequence, positions `0..T`) through the sub-model `e`:
    /// next-token logits for every position and the routing of every MoE layer run.
    ///
    /// # Errors
    /// [`ModelError::Input`] for no tokens or ids outside the vocabulary,
    /// [`ModelError::Elastic`] for options the model cannot take, op errors.
    pub fn forward_text(&self, ids: &[i32], e: &Elastic) -> Result<Forward, ModelError> {
        let cfg = &self.cfg;
        let (t, h) = (ids.len(), cfg.hidden);
        if t == 0 {
            return Err(ModelError::Input("no tokens".into()));
        }
        if let Some(bad) = ids.iter().find(|&&i| i < 0 || i as usize >= cfg.text_vocab) {
            return Err(ModelError::Input(format!("token id {bad} outside the vocabulary 0..{}", cfg.text_vocab)));
        }
        let (layers, k) = self.plan(e)?;
        let b = self.backend;
        let ids_buf = b.upload(&HostTensor::from_i32(&[t], ids))?;
        let mut x = b.alloc(self.dtype, &[t, h])?;
        let emb = EmbeddingProblem { tokens: t, vocab: cfg.text_vocab, hidden: h, dtype: self.dtype };
        api::embedding(b, &emb, self.w("embed.text")?, &ids_buf, &mut x)?;
        let pos: Vec<i32> = (0..3).flat_map(|_| 0..t as i32).collect();
        let positions = b.upload(&HostTensor::from_i32(&[3, t], &pos))?;

        let mut stream = Residual { x, delta: None };
        let mut routing = Vec::new();
        for &l in &layers {
            let prefix = format!("layers.{l}");
            let y = self.norm(&mut stream, &format!("{prefix}.attn_norm"))?;
            stream.delta = Some(self.attention(&prefix, &y, &positions, t)?);
            let y = self.norm(&mut stream, &format!("{prefix}.mlp_norm"))?;
            let out = if cfg.is_dense(l) {
                self.swiglu_mlp(&y, &format!("{prefix}.mlp"), t, cfg.dense_intermediate)?
            } else {
                let (out, ids) = self.moe(&prefix, &y, t, k, e.experts.as_deref())?;
                routing.push(LayerRouting { layer: l, ids, k });
                out
            };
            stream.delta = Some(out);
        }
        let y = self.norm(&mut stream, "final_norm")?;
        let v = cfg.text_vocab;
        let mut logits = b.alloc(self.dtype, &[t, v])?;
        let g = GemmProblem { m: t, k: h, n: v, b_transposed: false, dtype: self.dtype };
        api::gemm(b, &g, &y, self.w("head.text")?, &mut logits)?;
        let host = b.download(&logits)?;
        let text_logits = HostTensor::from_f32(DType::F32, &[t, v], &host.to_f32_vec());
        Ok(Forward { text_logits, routing })
    }

    /// `rms_norm(delta + x)` with weight `name`; `x` becomes `delta + x`.
    fn norm(&self, s: &mut Residual<B::Buffer>, name: &str) -> Result<B::Buffer, ModelError> {
        let b = self.backend;
        let (rows, h) = (s.x.shape()[0], self.cfg.hidden);
        let mut y = b.alloc(self.dtype, &[rows, h])?;
        let p =
            RmsNormProblem { rows, hidden: h, eps: self.cfg.rms_eps, residual: s.delta.is_some(), dtype: self.dtype };
        match s.delta.take() {
            None => api::rms_norm(
                b,
                &p,
                RmsNormIo { x: &s.x, weight: self.w(name)?, residual: None, y: &mut y, residual_out: None },
            )?,
            Some(d) => {
                let mut sum = b.alloc(self.dtype, &[rows, h])?;
                let io = RmsNormIo {
                    x: &d,
                    weight: self.w(name)?,
                    residual: Some(&s.x),
                    y: &mut y,
                    residual_out: Some(&mut sum),
                };
                api::rms_norm(b, &p, io)?;
                s.x = sum;
            }
        }
        Ok(y)
    }

    /// `y [rows, K] · w [K, N]`.
    fn matmul(&self, y: &B::Buffer, w: &str, n: usize) -> Result<B::Buffer, ModelError> {
        let (rows, kd) = (y.shape()[0], y.shape()[1]);
        let mut c = self.backend.alloc(self.dtype, &[rows, n])?;
        let g = GemmProblem { m: rows, k: kd, n, b_transposed: false, dtype: self.dtype };
        api::gemm(self.backend, &g, y, self.w(w)?, &mut c)?;
        Ok(c)
    }

    /// The attention sublayer of `prefix` on `y [T, H]`: `[T, H]` to add to the residual.
    fn attention(&self, prefix: &str, y: &B::Buffer, positions: &B::Buffer, t: usize) -> Result<B::Buffer, ModelError> {
        let (cfg, b, dt) = (&self.cfg, self.backend, self.dtype);
        let d = cfg.head_dim;
        let mut q = self.matmul(y, &format!("{prefix}.attn.wq"), cfg.q_heads * d)?;
        let mut k = self.matmul(y, &format!("{prefix}.attn.wk"), cfg.kv_heads * d)?;
        let mut v = self.matmul(y, &format!("{prefix}.attn.wv"), cfg.kv_heads * d)?;
        b.reshape(&mut q, &[t, cfg.q_heads, d])?;
        b.reshape(&mut k, &[t, cfg.kv_heads, d])?;
        b.reshape(&mut v, &[t, cfg.kv_heads, d])?;
        let rot = |heads| RotaryProblem {
            tokens: t,
            heads,
            head_dim: d,
            theta: cfg.rope_base,
            positions: RotaryPositions::ThreeD { sections: cfg.rope_sections },
            dtype: dt,
        };
        let mut qr = b.alloc(dt, &[t, cfg.q_heads, d])?;
        api::rotary(b, &rot(cfg.q_heads), RotaryIo { x: &q, positions, out: &mut qr })?;
        let mut kr = b.alloc(dt, &[t, cfg.kv_heads, d])?;
        api::rotary(b, &rot(cfg.kv_heads), RotaryIo { x: &k, positions, out: &mut kr })?;
        let p = AttentionProblem {
            cu_seqlens_q: vec![0, t],
            cu_seqlens_k: vec![0, t],
            heads_q: cfg.q_heads,
            heads_kv: cfg.kv_heads,
            head_dim: d,
            scale: 1.0 / (d as f32).sqrt(),
            softcap: None,
            mask: AttentionMask::causal(),
            dtype: dt,
        };
        let mut o = b.alloc(dt, &[t, cfg.q_heads, d])?;
        let mut lse = b.alloc(DType::F32, &[cfg.q_heads, t])?;
        api::attention(b, &p, AttentionIo { q: &qr, k: &kr, v: &v, o: &mut o, lse: &mut lse })?;
        b.reshape(&mut o, &[t, cfg.q_heads * d])?;
        self.matmul(&o, &format!("{prefix}.attn.wo"), cfg.hidden)
    }

    /// A SwiGLU MLP `(silu(y·up[:, :I]) * y·up[:, I:])·down` under `prefix`.
    fn swiglu_mlp(&self, y: &B::Buffer, prefix: &str, t: usize, inter: usize) -> Result<B::Buffer, ModelError> {
        let up = self.matmul(y, &format!("{prefix}.up"), 2 * inter)?;
        let mut a = self.backend.alloc(self.dtype, &[t, inter])?;
        api::swiglu(self.backend, &SwigluProblem { rows: t, inter, dtype: self.dtype }, &up, &mut a)?;
        self.matmul(&a, &format!("{prefix}.down"), self.cfg.hidden)
    }

    /// The MoE sublayer of `prefix` on `y [T, H]` with `k` experts per token among `mask`:
    /// its output `[T, H]` (routed plus shared experts) and the chosen experts `[T, k]`.
    fn moe(
        &self,
        prefix: &str,
        y: &B::Buffer,
        t: usize,
        k: usize,
        mask: Option<&[bool]>,
    ) -> Result<(B::Buffer, Vec<i32>), ModelError> {
        let (cfg, b, dt) = (&self.cfg, self.backend, self.dtype);
        let (h, e) = (cfg.hidden, cfg.routed_experts);
        let shared = if cfg.shared_experts > 0 {
            Some(self.swiglu_mlp(y, &format!("{prefix}.shared"), t, cfg.shared_experts * cfg.shared_intermediate)?)
        } else {
            None
        };
        let mut route = RouteProblem::new(t, e, k, dt);
        route.hidden = Some(h);
        route.score = cfg.score.into();
        route.use_bias = true;
        route.expert_mask = mask.map(<[bool]>::to_vec);
        route.renormalize = cfg.renormalize;
        route.scaling = cfg.route_scale;
        let (gate, bias) = (self.w(&format!("{prefix}.router"))?, self.w(&format!("{prefix}.router_bias"))?);
        // The routing statistics: the layer's own routing, run as its own op.
        let mut ids = b.alloc(DType::I32, &[t, k])?;
        let mut weights = b.alloc(DType::F32, &[t, k])?;
        let mut counts = b.alloc(DType::I32, &[e])?;
        let mut load = b.alloc(DType::F32, &[e])?;
        let io = RouteIo {
            logits: y,
            gate: Some(gate),
            bias: Some(bias),
            ids: &mut ids,
            weights: &mut weights,
            counts: &mut counts,
            load: &mut load,
        };
        api::route(b, &route, io)?;
        let chosen = b.download(&ids)?.as_i32().map_err(ModelError::Op)?.to_vec();

        let p = MoeLayerProblem { route, inter: cfg.expert_intermediate, add: shared.is_some() };
        let mut out = b.alloc(dt, &[t, h])?;
        let io = MoeLayerIo {
            x: y,
            gate,
            bias: Some(bias),
            w_up: self.w(&format!("{prefix}.experts.up"))?,
            w_down: self.w(&format!("{prefix}.experts.down"))?,
            add: shared.as_ref(),
            out: &mut out,
        };
        api::moe_layer(b, &p, io)?;
        Ok((out, chosen))
    }
}

/// The residual stream: `x` and the output of the last sublayer not yet added to it.
struct Residual<T> {
    x: T,
    delta: Option<T>,
}
