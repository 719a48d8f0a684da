//! The decoder on any moekit backend: weights uploaded once ([`Model::new`]), then a sequence
//! of interleaved segments ([`Model::forward`], [`Model::forward_mtp`]) or a piece of one after
//! the rows already in a [`KvCache`] ([`Model::step`]), through the sub-model of [`Elastic`].
//!
//! Input embeddings: text ids through `embed.text`; a visual code's ±1 bits times
//! `embed.visual`; an audio frame the sum of its levels' rows of `embed.audio.{level}`.
//! One decoder layer, pre-norm (the residual add fused into each RMSNorm):
//!
//! ```text
//! y  = rms_norm(x)                       (the previous sublayer's output added to x first)
//! q, k, v = y·wq, y·wk, y·wv             ([T, Hq·D], [T, Hkv·D] viewed as [T, heads, D])
//! q, k = rotary_3d(q, k, (t, h, w))      (Uni-RoPE positions of crate::input)
//! x += attention(q, k, v, mask)·wo       (causal; visual scale blocks bidirectional)
//! y  = rms_norm(x)
//! x += moe(y) + shared(y)                (dense layers: swiglu MLP)
//! ```
//!
//! Heads on `y = final_norm(x)`, each over its modality's rows: text `y·head.text`, visual
//! `y·head.visual` (one logit per bit of the next scale's code), audio depth-wise: level `l`
//! reads `final_norm(x + Σ_{m<l} embed.audio.m[c_m])` through `head.audio.l`, `c_m` the code
//! chosen at level `m`. The MoE is the backend's fused `moe_layer` with the shared experts'
//! output as its `add`; the routing statistics are its `routed` output, read back once after
//! the layers (no host wait per layer).

use crate::config::ModelConfig;
use crate::input::{Layout, Segment};
use crate::stats::Modality;
use crate::weights::Weights;
use moekit_ops::{
    api, AttentionIo, AttentionMask, AttentionProblem, Backend, CombineIo, CombineProblem, DType, EmbeddingProblem,
    Error, GemmProblem, HostTensor, MoeLayerIo, MoeLayerProblem, RmsNormIo, RmsNormProblem, RotaryIo, RotaryPositions,
    RotaryProblem, RouteProblem, SwigluProblem, TensorMeta,
};
use std::collections::BTreeMap;
use std::ops::Range;

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

/// The sub-model an [`Elastic`] choice selects ([`Model::plan`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubModel {
    /// The layers it runs, increasing.
    pub layers: Vec<usize>,
    /// Experts each token is routed to.
    pub top_k: usize,
    /// Routed experts it keeps (all of them without a mask).
    pub experts: usize,
}

/// How the depth-wise audio heads choose a level's code: `(level, logits) -> code`.
pub type AudioPick<'p> = &'p mut dyn FnMut(usize, &[f32]) -> usize;

/// Which rows the heads read.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Heads {
    /// Every row (each head over its modality's rows).
    #[default]
    All,
    /// The last row only (a serving prefill: the next token after the prompt).
    Last,
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

/// The outputs of one call, each head over the rows of its modality (rows in call order).
#[derive(Clone, Debug)]
pub struct Forward {
    /// Rows, modalities, positions and blocks of the call.
    pub layout: Layout,
    /// The text rows (indices into the call's rows).
    pub text_rows: Vec<usize>,
    /// `[text rows, V]` next-token logits (f32).
    pub text_logits: HostTensor,
    /// The visual rows.
    pub visual_rows: Vec<usize>,
    /// `[visual rows, bits]` logits of each bit of the row's own code (its cell of its
    /// scale), predicted from input codes that carry the scale before it (next-scale
    /// prediction, see [`crate::input::Visual::bits`]); a bit is 1 where its logit is positive.
    pub visual_logits: HostTensor,
    /// The audio rows.
    pub audio_rows: Vec<usize>,
    /// Per codec level, `[audio rows, codebook]` logits of the next frame's code at that
    /// level, each level conditioned on the codes chosen at the levels before it.
    pub audio_logits: Vec<HostTensor>,
    /// `[audio rows, levels]`: the codes the depth-wise chain chose (greedy).
    pub audio_codes: Vec<i32>,
    /// Per multi-token-prediction module `j` ([`Model::forward_mtp`] only), `[T - j - 1, V]`:
    /// row `i` predicts the token at row `i + j + 2`.
    pub mtp_logits: Vec<HostTensor>,
    /// Each MoE layer run, in order (every row of the call).
    pub routing: Vec<LayerRouting>,
}

/// The keys and values of the rows seen so far, per layer of one sub-model: what decoding
/// appends to ([`Model::step`]).
#[derive(Debug)]
pub struct KvCache<T> {
    layers: Vec<usize>,
    k: Vec<T>,
    v: Vec<T>,
    capacity: usize,
    len: usize,
    next_position: i32,
}

impl<T> KvCache<T> {
    /// Rows cached.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether no row is cached.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Rows it can hold.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// The next free Uni-RoPE position.
    pub fn next_position(&self) -> i32 {
        self.next_position
    }
}

/// The model on backend `B`: the configuration and every weight as a device buffer.
#[derive(Debug)]
pub struct Model<'b, B: Backend> {
    backend: &'b B,
    cfg: ModelConfig,
    dtype: DType,
    tensors: BTreeMap<String, B::Buffer>,
}

/// The buffer name of the audio levels' embeddings stacked `[levels · codebook, H]` (the
/// table of the embedding sums).
const AUDIO_TABLE: &str = "embed.audio";

impl<'b, B: Backend> Model<'b, B> {
    /// Uploads `weights` (every tensor of `crate::weights::specs(cfg)`) in `dtype`; the
    /// routers' correction biases stay f32 (the routing op takes them so).
    ///
    /// # Errors
    /// [`ModelError::MissingTensor`], the backend's upload errors.
    pub fn new(backend: &'b B, cfg: &ModelConfig, weights: &Weights, dtype: DType) -> Result<Self, ModelError> {
        let mut tensors = BTreeMap::new();
        let mut audio = Vec::new();
        for s in crate::weights::specs(cfg) {
            let w = weights.get(&s.name).ok_or_else(|| ModelError::MissingTensor(s.name.clone()))?;
            let dt = if s.name.ends_with("router_bias") { DType::F32 } else { dtype };
            // NOTE: the audio levels' tables live on the device only as the stacked table and
            // the MTP projection only as its halves: each weight is uploaded once.
            if s.name.starts_with("embed.audio.") {
                audio.extend(w.to_f32_vec());
                continue;
            }
            if let Some(prefix) = s.name.strip_suffix(".proj") {
                // The MTP projection `[2H, H]` as its two halves (hidden rows, embedding rows).
                let (data, half) = (w.to_f32_vec(), cfg.hidden * cfg.hidden);
                for (part, rows) in [("hidden", &data[..half]), ("embed", &data[half..])] {
                    let t = HostTensor::from_f32(dtype, &[cfg.hidden, cfg.hidden], rows);
                    tensors.insert(format!("{prefix}.proj.{part}"), backend.upload(&t)?);
                }
                continue;
            }
            // NOTE: uploaded as it is when already in the model's dtype (no host copy), else
            // converted once (through f32, exact from f16 and bf16).
            let buf = if w.dtype() == dt {
                backend.upload(w)?
            } else {
                backend.upload(&HostTensor::from_f32(dt, w.shape(), &w.to_f32_vec()))?
            };
            tensors.insert(s.name, buf);
        }
        let table = HostTensor::from_f32(dtype, &[cfg.audio_levels * cfg.audio_codebook, cfg.hidden], &audio);
        tensors.insert(AUDIO_TABLE.into(), backend.upload(&table)?);
        Ok(Model { backend, cfg: cfg.clone(), dtype, tensors })
    }

    /// The configuration.
    pub fn config(&self) -> &ModelConfig {
        &self.cfg
    }

    /// The backend.
    pub fn backend(&self) -> &'b B {
        self.backend
    }

    fn w(&self, name: &str) -> Result<&B::Buffer, ModelError> {
        self.tensors.get(name).ok_or_else(|| ModelError::MissingTensor(name.to_owned()))
    }

    /// The sub-model `e` selects, checked against the configuration: the layers it runs, its
    /// top-k and how many routed experts it keeps. Every forward checks it; callers may ask
    /// first (to report the sub-model, or to refuse a bad one before any work).
    ///
    /// # Errors
    /// [`ModelError::Elastic`] for layers that are empty, not strictly increasing or past the
    /// model's, a top-k of 0 or above the model's, or an expert mask of the wrong length or
    /// with fewer than top-k experts kept.
    pub fn plan(&self, e: &Elastic) -> Result<SubModel, ModelError> {
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
        let experts = e.experts.as_ref().map_or(self.cfg.routed_experts, |m| m.iter().filter(|&&b| b).count());
        Ok(SubModel { layers, top_k: k, experts })
    }

    /// An empty KV cache of `capacity` rows for the layers of sub-model `e`.
    ///
    /// # Errors
    /// [`ModelError::Elastic`], allocation errors.
    pub fn cache(&self, capacity: usize, e: &Elastic) -> Result<KvCache<B::Buffer>, ModelError> {
        let layers = self.plan(e)?.layers;
        let (hkv, d) = (self.cfg.kv_heads, self.cfg.head_dim);
        let alloc = || self.backend.alloc(self.dtype, &[capacity, hkv, d]);
        let k = layers.iter().map(|_| alloc()).collect::<Result<_, _>>()?;
        let v = layers.iter().map(|_| alloc()).collect::<Result<_, _>>()?;
        Ok(KvCache { layers, k, v, capacity, len: 0, next_position: 0 })
    }

    /// Runs text token `ids` (one sequence, positions `0..T`) through the sub-model `e`.
    ///
    /// # Errors
    /// As [`Model::forward`].
    pub fn forward_text(&self, ids: &[i32], e: &Elastic) -> Result<Forward, ModelError> {
        self.forward(&[Segment::Text(ids.to_vec())], e)
    }

    /// Runs one sequence of interleaved `segments` (from position 0) through the sub-model
    /// `e`: every head's logits over its modality's rows and the routing of every MoE layer.
    ///
    /// # Errors
    /// [`ModelError::Input`] for no rows or a bad segment, [`ModelError::Elastic`] for
    /// options the model cannot take, op errors.
    pub fn forward(&self, segments: &[Segment], e: &Elastic) -> Result<Forward, ModelError> {
        let layout = Layout::new(&self.cfg, segments, 0)?;
        let mut cache = self.cache(layout.rows, e)?;
        self.run(&mut cache, segments, layout, e, false, Heads::All, None)
    }

    /// [`Model::forward`] and the multi-token-prediction modules (`mtp_depth` of them) after
    /// it: module `j` reads the previous module's (first: the main model's) hidden state of
    /// row `i` and the input embedding of row `i + j + 1`, runs its decoder layer (causal
    /// attention) and predicts row `i + j + 2`'s text token through the shared text head.
    ///
    /// # Errors
    /// As [`Model::forward`].
    pub fn forward_mtp(&self, segments: &[Segment], e: &Elastic) -> Result<Forward, ModelError> {
        let layout = Layout::new(&self.cfg, segments, 0)?;
        let mut cache = self.cache(layout.rows, e)?;
        self.run(&mut cache, segments, layout, e, true, Heads::All, None)
    }

    /// Appends `segments` to `cache` (after its rows, from its next position) through the
    /// sub-model `e` the cache was made for: the outputs of the new rows. A sequence fed in
    /// pieces gives the logits of one [`Model::forward`] of the whole.
    ///
    /// # Errors
    /// [`ModelError::Elastic`] when `e`'s layers are not the cache's, [`ModelError::Input`]
    /// past the cache's capacity, as [`Model::forward`] otherwise.
    pub fn step(
        &self,
        cache: &mut KvCache<B::Buffer>,
        segments: &[Segment],
        e: &Elastic,
    ) -> Result<Forward, ModelError> {
        self.step_with(cache, segments, e, Heads::All)
    }

    /// [`Model::step`] with the heads on the rows `heads` names (the others' outputs are
    /// empty).
    ///
    /// # Errors
    /// As [`Model::step`].
    pub fn step_with(
        &self,
        cache: &mut KvCache<B::Buffer>,
        segments: &[Segment],
        e: &Elastic,
        heads: Heads,
    ) -> Result<Forward, ModelError> {
        let layout = Layout::new(&self.cfg, segments, cache.next_position)?;
        self.run(cache, segments, layout, e, false, heads, None)
    }

    /// [`Model::step_with`] with the depth-wise audio heads choosing each level's code by
    /// `pick(level, logits)` (a sampler) instead of the greedy argmax; the next level is
    /// conditioned on the picked code.
    ///
    /// # Errors
    /// As [`Model::step`].
    pub fn step_sampled(
        &self,
        cache: &mut KvCache<B::Buffer>,
        segments: &[Segment],
        e: &Elastic,
        heads: Heads,
        pick: AudioPick<'_>,
    ) -> Result<Forward, ModelError> {
        let layout = Layout::new(&self.cfg, segments, cache.next_position)?;
        self.run(cache, segments, layout, e, false, heads, Some(pick))
    }

    fn run(
        &self,
        cache: &mut KvCache<B::Buffer>,
        segments: &[Segment],
        layout: Layout,
        e: &Elastic,
        mtp: bool,
        heads: Heads,
        pick: Option<AudioPick<'_>>,
    ) -> Result<Forward, ModelError> {
        let cfg = &self.cfg;
        let SubModel { layers, top_k: k, .. } = self.plan(e)?;
        if layers != cache.layers {
            return Err(ModelError::Elastic(format!("layers {layers:?} differ from the cache's {:?}", cache.layers)));
        }
        let (t, past) = (layout.rows, cache.len);
        if past + t > cache.capacity {
            return Err(ModelError::Input(format!(
                "{t} rows after {past} cached exceed the cache's capacity {}",
                cache.capacity
            )));
        }
        let b = self.backend;
        let x = self.embed(segments, &layout)?;
        // NOTE: the MTP modules read the embeddings again once the main stack has consumed `x`:
        // a device copy now instead of a second embedding pass (a text gather, the visual bit
        // projections and the audio level sums, with their uploads).
        let x0 = if mtp {
            let mut c = b.alloc(self.dtype, &[t, cfg.hidden])?;
            b.copy_rows(&x, 0, &mut c, 0, t)?;
            Some(c)
        } else {
            None
        };
        let positions = b.upload(&HostTensor::from_i32(&[3, t], &layout.positions))?;
        let mask = match layout.column_ranges(past) {
            Some(c) => AttentionMask { column_ranges: Some(c), ..AttentionMask::none() },
            None => AttentionMask::causal(),
        };
        let mut stream = Residual { x, delta: None };
        let mut routed = Vec::new();
        for (slot, &l) in layers.iter().enumerate() {
            let kv = Some(Kv { k: &mut cache.k[slot], v: &mut cache.v[slot], past });
            let ids =
                self.layer(&format!("layers.{l}"), &mut stream, &positions, &mask, kv, k, e.experts.as_deref())?;
            if let Some(ids) = ids {
                routed.push((l, ids));
            }
        }
        cache.len += t;
        cache.next_position = layout.next_position;
        let y = self.norm(&mut stream, "final_norm")?;
        // The rows each head reads: its modality's runs, or only the last row.
        let runs = |m: &dyn Fn(Modality) -> bool| -> Vec<Range<usize>> {
            let all = layout.runs(m);
            match heads {
                Heads::All => all,
                Heads::Last => all.into_iter().filter(|r| r.end == t).map(|_| t - 1..t).collect(),
            }
        };
        let (text, visual, audio) = (
            runs(&|m| m == Modality::Text),
            runs(&|m| matches!(m, Modality::Image | Modality::Video)),
            runs(&|m| m == Modality::Audio),
        );
        let rows = |r: &[Range<usize>]| -> Vec<usize> { r.iter().cloned().flatten().collect() };
        let (text_rows, visual_rows, audio_rows) = (rows(&text), rows(&visual), rows(&audio));
        let text_logits = self.head(&y, &text, "head.text", cfg.text_vocab)?;
        let visual_logits = self.head(&y, &visual, "head.visual", cfg.visual_code_bits)?;
        let (audio_logits, audio_codes) = self.audio_heads(&stream.x, &audio, pick)?;
        let mut routing = Vec::with_capacity(routed.len());
        for (layer, ids) in routed {
            routing.push(LayerRouting { layer, ids: b.download(&ids)?.as_i32()?.to_vec(), k });
        }
        let mtp_logits = match &x0 {
            Some(x0) => self.mtp(&stream.x, x0, &layout, k, e.experts.as_deref())?,
            None => vec![],
        };
        Ok(Forward {
            layout,
            text_rows,
            text_logits,
            visual_rows,
            visual_logits,
            audio_rows,
            audio_logits,
            audio_codes,
            mtp_logits,
            routing,
        })
    }

    /// The input embeddings `[T, H]` of `segments`: text by the embedding op, visual codes as
    /// `±1 bits · embed.visual`, audio frames as the sum of their levels' embeddings.
    fn embed(&self, segments: &[Segment], layout: &Layout) -> Result<B::Buffer, ModelError> {
        let (cfg, b, dt, h) = (&self.cfg, self.backend, self.dtype, self.cfg.hidden);
        let mut parts = Vec::with_capacity(segments.len());
        for s in segments {
            let n = s.rows(cfg);
            let mut out = b.alloc(dt, &[n, h])?;
            match s {
                Segment::Text(ids) => {
                    let ids = b.upload(&HostTensor::from_i32(&[n], ids))?;
                    let p = EmbeddingProblem { tokens: n, vocab: cfg.text_vocab, hidden: h, dtype: dt };
                    api::embedding(b, &p, self.w("embed.text")?, &ids, &mut out)?;
                }
                Segment::Visual(v) => {
                    let signs: Vec<f32> = v.bits.iter().map(|&x| if x == 1 { 1.0 } else { -1.0 }).collect();
                    let signs = b.upload(&HostTensor::from_f32(dt, &[n, cfg.visual_code_bits], &signs))?;
                    let g = GemmProblem { m: n, k: cfg.visual_code_bits, n: h, b_transposed: false, dtype: dt };
                    api::gemm(b, &g, &signs, self.w("embed.visual")?, &mut out)?;
                }
                Segment::Audio(a) => {
                    let levels = cfg.audio_levels;
                    let rows: Vec<i32> = a
                        .codes
                        .iter()
                        .enumerate()
                        .map(|(i, &c)| ((i % levels) * cfg.audio_codebook) as i32 + c)
                        .collect();
                    out = self.gather_sum(None, &rows, levels)?;
                }
            }
            parts.push(out);
        }
        if parts.len() == 1 {
            return Ok(parts.pop().unwrap_or_else(|| unreachable!()));
        }
        let mut x = b.alloc(dt, &[layout.rows, h])?;
        for (part, r) in parts.iter().zip(&layout.segments) {
            b.copy_rows(part, 0, &mut x, r.start, r.len())?;
        }
        Ok(x)
    }

    /// `add + Σ_j audio_table[rows[t, j]]` over `[n, per]` rows of the stacked audio table
    /// (the combine op with unit weights: an embedding sum).
    fn gather_sum(&self, add: Option<&B::Buffer>, rows: &[i32], per: usize) -> Result<B::Buffer, ModelError> {
        let (b, h) = (self.backend, self.cfg.hidden);
        let n = rows.len() / per;
        let table = self.w(AUDIO_TABLE)?;
        let p = CombineProblem {
            tokens: n,
            hidden: h,
            k: per,
            rows: table.shape()[0],
            add: add.is_some(),
            dtype: self.dtype,
        };
        let weights = b.upload(&HostTensor::from_f32(DType::F32, &[n, per], &vec![1.0; rows.len()]))?;
        let slots = b.upload(&HostTensor::from_i32(&[n, per], rows))?;
        let mut out = b.alloc(self.dtype, &[n, h])?;
        api::unpermute_combine(
            b,
            &p,
            CombineIo { y: table, weights: &weights, token_slot_to_row: &slots, add, out: &mut out },
        )?;
        Ok(out)
    }

    /// The rows `runs` of `y [T, H]` as one `[n, H]` buffer, or `None` when the runs are all
    /// of `y` (use `y` itself).
    fn take_rows(&self, y: &B::Buffer, runs: &[Range<usize>]) -> Result<Option<B::Buffer>, ModelError> {
        let n: usize = runs.iter().map(Range::len).sum();
        if n == y.shape()[0] {
            return Ok(None);
        }
        let mut out = self.backend.alloc(self.dtype, &[n, self.cfg.hidden])?;
        let mut at = 0;
        for r in runs {
            self.backend.copy_rows(y, r.start, &mut out, at, r.len())?;
            at += r.len();
        }
        Ok(Some(out))
    }

    /// `y[runs] · w [H, N]`, downloaded as f32 `[n, N]`.
    fn head(&self, y: &B::Buffer, runs: &[Range<usize>], w: &str, n_out: usize) -> Result<HostTensor, ModelError> {
        let n: usize = runs.iter().map(Range::len).sum();
        if n == 0 {
            return Ok(HostTensor::zeros(DType::F32, &[0, n_out]));
        }
        let taken = self.take_rows(y, runs)?;
        let logits = self.matmul(taken.as_ref().unwrap_or(y), w, n_out)?;
        Ok(HostTensor::from_f32(DType::F32, &[n, n_out], &self.backend.download(&logits)?.to_f32_vec()))
    }

    /// The depth-wise audio heads on the final hidden states `x [T, H]` (before the final
    /// norm) of the audio rows `runs`: level 0 reads `final_norm(x)`; level `l` reads
    /// `final_norm(x + Σ_{m<l} embed.audio.m[c_m])`, the codes `c_m` chosen at the levels
    /// before it (greedy, or by `pick`).
    fn audio_heads(
        &self,
        x: &B::Buffer,
        runs: &[Range<usize>],
        mut pick: Option<AudioPick<'_>>,
    ) -> Result<(Vec<HostTensor>, Vec<i32>), ModelError> {
        let (cfg, b) = (&self.cfg, self.backend);
        let (levels, cb) = (cfg.audio_levels, cfg.audio_codebook);
        let n: usize = runs.iter().map(Range::len).sum();
        if n == 0 {
            return Ok(((0..levels).map(|_| HostTensor::zeros(DType::F32, &[0, cb])).collect(), vec![]));
        }
        let taken = self.take_rows(x, runs)?;
        // The states level `l` reads: the audio rows of `x`, then conditioned on each level.
        let mut conditioned: Option<B::Buffer> = None;
        let (mut logits, mut codes) = (Vec::with_capacity(levels), vec![0i32; n * levels]);
        for l in 0..levels {
            if l > 0 {
                let prev = conditioned.as_ref().or(taken.as_ref()).unwrap_or(x);
                let rows: Vec<i32> = (0..n).map(|i| ((l - 1) * cb) as i32 + codes[i * levels + l - 1]).collect();
                conditioned = Some(self.gather_sum(Some(prev), &rows, 1)?);
            }
            let cur = conditioned.as_ref().or(taken.as_ref()).unwrap_or(x);
            let y = self.rms(cur, "final_norm")?;
            let lg = self.matmul(&y, &format!("head.audio.{l}"), cb)?;
            let lg = b.download(&lg)?.to_f32_vec();
            for (i, row) in lg.chunks(cb).enumerate() {
                let c = match pick.as_mut() {
                    Some(p) => p(l, row).min(cb - 1),
                    None => argmax(row),
                };
                codes[i * levels + l] = c as i32;
            }
            logits.push(HostTensor::from_f32(DType::F32, &[n, cb], &lg));
        }
        Ok((logits, codes))
    }

    /// The multi-token-prediction modules on the main model's final hidden states `h [T, H]`
    /// and the input embeddings `x0 [T, H]`.
    fn mtp(
        &self,
        h: &B::Buffer,
        x0: &B::Buffer,
        layout: &Layout,
        k: usize,
        mask: Option<&[bool]>,
    ) -> Result<Vec<HostTensor>, ModelError> {
        let (cfg, b) = (&self.cfg, self.backend);
        let (t, hd) = (layout.rows, cfg.hidden);
        let mut prev: Option<B::Buffer> = None;
        let mut out = Vec::new();
        for j in 0..cfg.mtp_depth {
            let n = t.saturating_sub(j + 1);
            if n == 0 {
                break;
            }
            let prefix = format!("mtp.{j}");
            let hid = prev.as_ref().unwrap_or(h);
            // NOTE: n < T, so both takes are copies (never `None`).
            let (first, next) = (0..n, j + 1..j + 1 + n);
            let a = self.take_rows(hid, std::slice::from_ref(&first))?;
            let e = self.take_rows(x0, std::slice::from_ref(&next))?;
            let a = self.rms(a.as_ref().unwrap_or(hid), &format!("{prefix}.norm_hidden"))?;
            let e = self.rms(e.as_ref().unwrap_or(x0), &format!("{prefix}.norm_embed"))?;
            // [a, e] · proj = a · proj[..H] + e · proj[H..]: the second term enters the layer
            // as the pending residual delta.
            let x = self.matmul(&a, &format!("{prefix}.proj.hidden"), hd)?;
            let delta = self.matmul(&e, &format!("{prefix}.proj.embed"), hd)?;
            let p3: Vec<i32> = (0..3).flat_map(|a| layout.positions[a * t..a * t + n].to_vec()).collect();
            let pos = b.upload(&HostTensor::from_i32(&[3, n], &p3))?;
            let mut stream = Residual { x, delta: Some(delta) };
            self.layer(&format!("{prefix}.layer"), &mut stream, &pos, &AttentionMask::causal(), None, k, mask)?;
            let y = self.norm(&mut stream, "final_norm")?;
            let logits = self.matmul(&y, "head.text", cfg.text_vocab)?;
            out.push(HostTensor::from_f32(DType::F32, &[n, cfg.text_vocab], &b.download(&logits)?.to_f32_vec()));
            prev = Some(stream.x);
        }
        Ok(out)
    }

    /// One decoder layer under `prefix` on the residual stream: attention (keys and values
    /// through `kv` when given), then the MLP or MoE; the MoE's chosen experts `[T, k]`.
    #[allow(clippy::too_many_arguments)]
    fn layer(
        &self,
        prefix: &str,
        stream: &mut Residual<B::Buffer>,
        positions: &B::Buffer,
        mask: &AttentionMask,
        kv: Option<Kv<'_, B::Buffer>>,
        k: usize,
        experts: Option<&[bool]>,
    ) -> Result<Option<B::Buffer>, ModelError> {
        let t = stream.x.shape()[0];
        let y = self.norm(stream, &format!("{prefix}.attn_norm"))?;
        stream.delta = Some(self.attention(prefix, &y, positions, mask, kv, t)?);
        let y = self.norm(stream, &format!("{prefix}.mlp_norm"))?;
        let dense = self.tensors.contains_key(&format!("{prefix}.mlp.up"));
        let (out, ids) = if dense {
            (self.swiglu_mlp(&y, &format!("{prefix}.mlp"), t, self.cfg.dense_intermediate)?, None)
        } else {
            let (out, ids) = self.moe(prefix, &y, t, k, experts)?;
            (out, Some(ids))
        };
        stream.delta = Some(out);
        Ok(ids)
    }

    /// `rms_norm(x)` with weight `name`.
    fn rms(&self, x: &B::Buffer, name: &str) -> Result<B::Buffer, ModelError> {
        let b = self.backend;
        let (rows, h) = (x.shape()[0], self.cfg.hidden);
        let mut y = b.alloc(self.dtype, &[rows, h])?;
        let p = RmsNormProblem { rows, hidden: h, eps: self.cfg.rms_eps, residual: false, dtype: self.dtype };
        let io = RmsNormIo { x, weight: self.w(name)?, residual: None, y: &mut y, residual_out: None };
        api::rms_norm(b, &p, io)?;
        Ok(y)
    }

    /// `rms_norm(delta + x)` with weight `name`; `x` becomes `delta + x`.
    fn norm(&self, s: &mut Residual<B::Buffer>, name: &str) -> Result<B::Buffer, ModelError> {
        let Some(d) = s.delta.take() else { return self.rms(&s.x, name) };
        let b = self.backend;
        let (rows, h) = (s.x.shape()[0], self.cfg.hidden);
        let mut y = b.alloc(self.dtype, &[rows, h])?;
        let mut sum = b.alloc(self.dtype, &[rows, h])?;
        let p = RmsNormProblem { rows, hidden: h, eps: self.cfg.rms_eps, residual: true, dtype: self.dtype };
        let io =
            RmsNormIo { x: &d, weight: self.w(name)?, residual: Some(&s.x), y: &mut y, residual_out: Some(&mut sum) };
        api::rms_norm(b, &p, io)?;
        s.x = sum;
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
    /// With `kv`, the rotated keys and the values are written into the cache after its `past`
    /// rows and the queries attend to all `past + T` of them.
    fn attention(
        &self,
        prefix: &str,
        y: &B::Buffer,
        positions: &B::Buffer,
        mask: &AttentionMask,
        kv: Option<Kv<'_, B::Buffer>>,
        t: usize,
    ) -> Result<B::Buffer, ModelError> {
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
        let past = kv.as_ref().map_or(0, |c| c.past);
        let p = AttentionProblem {
            cu_seqlens_q: vec![0, t],
            cu_seqlens_k: vec![0, past + t],
            heads_q: cfg.q_heads,
            heads_kv: cfg.kv_heads,
            head_dim: d,
            scale: 1.0 / (d as f32).sqrt(),
            softcap: None,
            mask: mask.clone(),
            dtype: dt,
        };
        let mut o = b.alloc(dt, &[t, cfg.q_heads, d])?;
        let mut lse = b.alloc(DType::F32, &[cfg.q_heads, t])?;
        match kv {
            Some(c) => {
                b.copy_rows(&kr, 0, c.k, past, t)?;
                b.copy_rows(&v, 0, c.v, past, t)?;
                api::attention(b, &p, AttentionIo { q: &qr, k: c.k, v: c.v, o: &mut o, lse: &mut lse })?;
            }
            None => api::attention(b, &p, AttentionIo { q: &qr, k: &kr, v: &v, o: &mut o, lse: &mut lse })?,
        }
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
    ) -> Result<(B::Buffer, B::Buffer), ModelError> {
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
        let p = MoeLayerProblem { route, inter: cfg.expert_intermediate, add: shared.is_some() };
        let mut out = b.alloc(dt, &[t, h])?;
        // The routing statistics come out of the layer's own routing (`routed`), read back
        // after the whole forward (no host wait per layer).
        let mut routed = b.alloc(DType::I32, &[t, k])?;
        let io = MoeLayerIo {
            x: y,
            gate,
            bias: Some(bias),
            w_up: self.w(&format!("{prefix}.experts.up"))?,
            w_down: self.w(&format!("{prefix}.experts.down"))?,
            add: shared.as_ref(),
            out: &mut out,
            routed: Some(&mut routed),
        };
        api::moe_layer(b, &p, io)?;
        Ok((out, routed))
    }
}

/// A layer's slot of a [`KvCache`] and the rows already in it.
struct Kv<'a, T> {
    k: &'a mut T,
    v: &'a mut T,
    past: usize,
}

/// The index of the largest value (the first of equals; NaN never wins).
pub(crate) fn argmax(row: &[f32]) -> usize {
    let mut best = 0;
    for (i, &x) in row.iter().enumerate() {
        if x > row[best] || row[best].is_nan() {
            best = i;
        }
    }
    best
}

/// The residual stream: `x` and the output of the last sublayer not yet added to it.
struct Residual<T> {
    x: T,
    delta: Option<T>,
}
