//! The model's weights: the name and shape of every tensor a configuration implies
//! ([`specs`]), a seeded random init ([`Weights::random`]), and safetensors files written
//! ([`Weights::save`]) and read memory-mapped ([`Weights::load`], every tensor checked against
//! the configuration; f32, f16 and bf16 files).
//!
//! Layouts follow the ops (row-major, `[K, N]` for a product `x [M, K] · w`):
//!
//! | tensor | shape |
//! | --- | --- |
//! | `embed.text` | `[V, H]` |
//! | `embed.visual` | `[bits, H]` (the projection of a code's ±1 bits) |
//! | `embed.audio.{level}` | `[codebook, H]` |
//! | `layers.{l}.attn_norm`, `layers.{l}.mlp_norm` | `[H]` |
//! | `layers.{l}.attn.wq` / `wk` / `wv` / `wo` | `[H, Hq·D]` / `[H, Hkv·D]` / `[H, Hkv·D]` / `[Hq·D, H]` |
//! | `layers.{l}.router` | `[H, E]` (the fused gate of the routing op) |
//! | `layers.{l}.router_bias` | `[E]` (aux-free correction bias; zeros at init) |
//! | `layers.{l}.experts.up` | `[E, H, 2I]`: columns `0..I` gate, `I..2I` up (the grouped GEMM's SwiGLU epilogue) |
//! | `layers.{l}.experts.down` | `[E, I, H]` |
//! | `layers.{l}.shared.up` / `down` | `[H, 2·S·Is]` / `[S·Is, H]` (the shared experts as one SwiGLU MLP) |
//! | `layers.{l}.mlp.up` / `down` (dense layers) | `[H, 2·Id]` / `[Id, H]` |
//! | `final_norm` | `[H]` |
//! | `head.text` | `[H, V]` |
//! | `head.visual` | `[H, bits]` (one logit per bit of the next scale's code) |
//! | `head.audio.{level}` | `[H, codebook]` |
//! | `mtp.{j}.norm_hidden`, `mtp.{j}.norm_embed` | `[H]` |
//! | `mtp.{j}.proj` | `[2H, H]` (the concatenated normalised hidden state and next-token embedding) |
//! | `mtp.{j}.layer.*` | one decoder layer as `layers.{l}.*` (an MoE layer) |

use crate::config::ModelConfig;
use half::{bf16, f16};
use moekit_ops::{DType, HostTensor, TensorMeta};
use rand::{rngs::StdRng, SeedableRng};
use rand_distr::{Distribution, Normal};
use safetensors::tensor::{Dtype, SafeTensors, TensorView};
use std::collections::BTreeMap;
use std::path::Path;

/// How a tensor is initialised by [`Weights::random`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Init {
    /// All ones (norm weights).
    Ones,
    /// All zeros (the router's correction bias).
    Zeros,
    /// Normal with mean 0 and this standard deviation.
    Normal(f32),
}

/// One tensor of the model.
#[derive(Clone, Debug, PartialEq)]
pub struct TensorSpec {
    /// Its safetensors name.
    pub name: String,
    /// Row-major shape.
    pub shape: Vec<usize>,
    /// Its random init.
    pub init: Init,
}

impl TensorSpec {
    /// Elements.
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }
}

/// The standard deviation of the random init of matrices.
const STD: f32 = 0.02;

/// Every tensor `cfg` implies, in a fixed order (see the module doc for names and shapes).
pub fn specs(cfg: &ModelConfig) -> Vec<TensorSpec> {
    let h = cfg.hidden;
    let mut out = Vec::new();
    let mut add = |name: String, shape: Vec<usize>, init: Init| out.push(TensorSpec { name, shape, init });
    add("embed.text".into(), vec![cfg.text_vocab, h], Init::Normal(STD));
    add("embed.visual".into(), vec![cfg.visual_code_bits, h], Init::Normal(STD));
    for lv in 0..cfg.audio_levels {
        add(format!("embed.audio.{lv}"), vec![cfg.audio_codebook, h], Init::Normal(STD));
    }
    for l in 0..cfg.layers {
        layer_specs(cfg, &format!("layers.{l}"), cfg.is_dense(l), &mut add);
    }
    add("final_norm".into(), vec![h], Init::Ones);
    add("head.text".into(), vec![h, cfg.text_vocab], Init::Normal(STD));
    add("head.visual".into(), vec![h, cfg.visual_code_bits], Init::Normal(STD));
    for lv in 0..cfg.audio_levels {
        add(format!("head.audio.{lv}"), vec![h, cfg.audio_codebook], Init::Normal(STD));
    }
    for j in 0..cfg.mtp_depth {
        add(format!("mtp.{j}.norm_hidden"), vec![h], Init::Ones);
        add(format!("mtp.{j}.norm_embed"), vec![h], Init::Ones);
        add(format!("mtp.{j}.proj"), vec![2 * h, h], Init::Normal(STD));
        layer_specs(cfg, &format!("mtp.{j}.layer"), false, &mut add);
    }
    out
}

/// The tensors of one decoder layer under `prefix`.
fn layer_specs(cfg: &ModelConfig, prefix: &str, dense: bool, add: &mut impl FnMut(String, Vec<usize>, Init)) {
    let (h, d) = (cfg.hidden, cfg.head_dim);
    add(format!("{prefix}.attn_norm"), vec![h], Init::Ones);
    add(format!("{prefix}.attn.wq"), vec![h, cfg.q_heads * d], Init::Normal(STD));
    add(format!("{prefix}.attn.wk"), vec![h, cfg.kv_heads * d], Init::Normal(STD));
    add(format!("{prefix}.attn.wv"), vec![h, cfg.kv_heads * d], Init::Normal(STD));
    add(format!("{prefix}.attn.wo"), vec![cfg.q_heads * d, h], Init::Normal(STD));
    add(format!("{prefix}.mlp_norm"), vec![h], Init::Ones);
    if dense {
        add(format!("{prefix}.mlp.up"), vec![h, 2 * cfg.dense_intermediate], Init::Normal(STD));
        add(format!("{prefix}.mlp.down"), vec![cfg.dense_intermediate, h], Init::Normal(STD));
        return;
    }
    let (e, i) = (cfg.routed_experts, cfg.expert_intermediate);
    add(format!("{prefix}.router"), vec![h, e], Init::Normal(STD));
    add(format!("{prefix}.router_bias"), vec![e], Init::Zeros);
    add(format!("{prefix}.experts.up"), vec![e, h, 2 * i], Init::Normal(STD));
    add(format!("{prefix}.experts.down"), vec![e, i, h], Init::Normal(STD));
    if cfg.shared_experts > 0 {
        let s = cfg.shared_experts * cfg.shared_intermediate;
        add(format!("{prefix}.shared.up"), vec![h, 2 * s], Init::Normal(STD));
        add(format!("{prefix}.shared.down"), vec![s, h], Init::Normal(STD));
    }
}

/// Parameters of `cfg` (every tensor of [`specs`]).
pub fn param_count(cfg: &ModelConfig) -> usize {
    specs(cfg).iter().map(TensorSpec::numel).sum()
}

/// What went wrong with a weights file.
#[derive(Debug, thiserror::Error)]
pub enum WeightsError {
    /// I/O on the file.
    #[error("weights {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// Not a safetensors file (or a corrupt one).
    #[error("weights {path}: not a safetensors file: {msg}")]
    Format {
        /// The file.
        path: String,
        /// The parser's message.
        msg: String,
    },
    /// A tensor the configuration needs is missing.
    #[error("weights {path}: tensor `{name}` is missing (the config needs {needed} tensors)")]
    Missing {
        /// The file.
        path: String,
        /// The tensor.
        name: String,
        /// Tensors the configuration needs.
        needed: usize,
    },
    /// A tensor has another shape than the configuration implies.
    #[error("weights {path}: tensor `{name}` has shape {got:?}, the config implies {expected:?}")]
    Shape {
        /// The file.
        path: String,
        /// The tensor.
        name: String,
        /// The configuration's shape.
        expected: Vec<usize>,
        /// The file's shape.
        got: Vec<usize>,
    },
    /// A tensor in a dtype other than f32, f16 or bf16.
    #[error("weights {path}: tensor `{name}` has dtype {dtype}; f32, f16 and bf16 are read")]
    DType {
        /// The file.
        path: String,
        /// The tensor.
        name: String,
        /// The file's dtype.
        dtype: String,
    },
}

/// The dtype of a written file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FileDType {
    /// 4 bytes an element.
    F32,
    /// 2 bytes an element.
    F16,
    /// 2 bytes an element.
    BF16,
}

impl FileDType {
    /// The tensor dtype.
    pub fn dtype(self) -> DType {
        match self {
            FileDType::F32 => DType::F32,
            FileDType::F16 => DType::F16,
            FileDType::BF16 => DType::BF16,
        }
    }
}

/// Host weights: every tensor of a configuration, by name, each in the dtype it was read or
/// drawn in (a bf16 file stays bf16 on the host: 2 bytes a parameter, 42 GB for the ERNIE-like
/// preset's ~21 B, not 84 GB of f32 copies); [`crate::Model::new`] converts to the model's
/// dtype only where they differ.
#[derive(Clone, Debug, PartialEq)]
pub struct Weights {
    tensors: BTreeMap<String, HostTensor>,
}

impl Weights {
    /// Seeded random weights for `cfg` in f32 (the same seed gives the same weights on every
    /// machine and any thread count: tensor `i` of [`specs`] draws from its own `StdRng`
    /// seeded from `seed` and `i`; tensors are drawn in parallel).
    pub fn random(cfg: &ModelConfig, seed: u64) -> Self {
        Self::random_as(cfg, seed, FileDType::F32)
    }

    /// [`Weights::random`] rounded (to nearest even) to `dtype` as each tensor is drawn, so a
    /// large model never holds f32 copies; a model of that dtype gets exactly the weights it
    /// would get from [`Weights::random`].
    pub fn random_as(cfg: &ModelConfig, seed: u64, dtype: FileDType) -> Self {
        use rayon::prelude::*;
        // NOTE: each tensor draws from its own generator, seeded from `seed` and its index in
        // `specs`, so tensors are drawn in parallel and the result does not depend on the
        // thread count (an ERNIE-scale model has ~20 G parameters).
        let tensors = specs(cfg)
            .into_par_iter()
            .enumerate()
            .map(|(i, s)| {
                let n = s.numel();
                let data = match s.init {
                    Init::Ones => vec![1.0; n],
                    Init::Zeros => vec![0.0; n],
                    Init::Normal(std) => {
                        let mut rng = StdRng::seed_from_u64(seed ^ (i as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15));
                        // NOTE: `Normal::new` fails only for a negative or NaN deviation; the
                        // specs' deviations are positive constants.
                        let dist = Normal::new(0.0f32, std).expect("a positive deviation");
                        (0..n).map(|_| dist.sample(&mut rng)).collect()
                    }
                };
                (s.name, HostTensor::from_f32(dtype.dtype(), &s.shape, &data))
            })
            .collect();
        Weights { tensors }
    }

    /// No tensors (fill with [`Weights::insert`]).
    pub fn empty() -> Self {
        Weights { tensors: BTreeMap::new() }
    }

    /// Adds (or replaces) tensor `name` as f32.
    ///
    /// # Panics
    /// When `data` does not hold the elements `shape` implies.
    pub fn insert(&mut self, name: &str, shape: &[usize], data: Vec<f32>) {
        assert_eq!(shape.iter().product::<usize>(), data.len(), "tensor `{name}`: shape {shape:?}");
        self.tensors.insert(name.to_owned(), HostTensor::from_f32(DType::F32, shape, &data));
    }

    /// Adds (or replaces) tensor `name`, in its own dtype.
    pub fn insert_tensor(&mut self, name: &str, tensor: HostTensor) {
        self.tensors.insert(name.to_owned(), tensor);
    }

    /// The tensor names, in order.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.tensors.keys().map(String::as_str)
    }

    /// The tensor called `name`, in the dtype it was read or drawn in.
    pub fn get(&self, name: &str) -> Option<&HostTensor> {
        self.tensors.get(name)
    }

    /// Tensors held.
    pub fn len(&self) -> usize {
        self.tensors.len()
    }

    /// Whether no tensor is held.
    pub fn is_empty(&self) -> bool {
        self.tensors.is_empty()
    }

    /// Parameters held.
    pub fn params(&self) -> usize {
        self.tensors.values().map(|t| t.shape().iter().product::<usize>()).sum()
    }

    /// Writes every tensor to a safetensors file at `path` in `dtype` (rounded once to
    /// nearest even).
    ///
    /// # Errors
    /// [`WeightsError::Io`] when the file cannot be written.
    pub fn save(&self, path: &Path, dtype: FileDType) -> Result<(), WeightsError> {
        let io = |source| WeightsError::Io { path: path.display().to_string(), source };
        let bytes: Vec<(&String, &[usize], Vec<u8>)> = self
            .tensors
            .iter()
            .map(|(name, t)| {
                // NOTE: a tensor already in the file's dtype is written as it is; others go
                // through f32 (exact from f16/bf16) and are rounded once.
                let b = if t.dtype() == dtype.dtype() {
                    t.as_bytes().to_vec()
                } else {
                    let data = t.to_f32_vec();
                    match dtype {
                        FileDType::F32 => bytemuck::cast_slice(&data).to_vec(),
                        FileDType::F16 => data.iter().flat_map(|&v| f16::from_f32(v).to_le_bytes()).collect(),
                        FileDType::BF16 => data.iter().flat_map(|&v| bf16::from_f32(v).to_le_bytes()).collect(),
                    }
                };
                (name, t.shape(), b)
            })
            .collect();
        let st = match dtype {
            FileDType::F32 => Dtype::F32,
            FileDType::F16 => Dtype::F16,
            FileDType::BF16 => Dtype::BF16,
        };
        let mut views = Vec::with_capacity(bytes.len());
        for (name, shape, b) in &bytes {
            // NOTE: the byte length matches the shape and dtype by construction.
            let view = TensorView::new(st, shape.to_vec(), b)
                .map_err(|e| io(std::io::Error::new(std::io::ErrorKind::InvalidData, format!("{name}: {e}"))))?;
            views.push((name.as_str(), view));
        }
        safetensors::serialize_to_file(views, &None, path).map_err(|e| io(std::io::Error::other(e.to_string())))
    }

    /// Reads the weights of `cfg` from the safetensors file at `path` (memory-mapped; f32,
    /// f16 or bf16 tensors, kept in their dtype). Every tensor of [`specs`] must be there with
    /// its shape; others in the file are ignored.
    ///
    /// # Errors
    /// [`WeightsError`]: the file cannot be read or parsed, or a tensor is missing, has
    /// another shape or an unsupported dtype.
    pub fn load(cfg: &ModelConfig, path: &Path) -> Result<Self, WeightsError> {
        Self::load_with_progress(cfg, path, &mut |_, _| {})
    }

    /// [`Weights::load`], calling `progress(bytes read, bytes to read)` after each tensor (a
    /// progress bar for large files).
    ///
    /// # Errors
    /// As [`Weights::load`].
    pub fn load_with_progress(
        cfg: &ModelConfig,
        path: &Path,
        progress: &mut dyn FnMut(u64, u64),
    ) -> Result<Self, WeightsError> {
        let p = path.display().to_string();
        let file = std::fs::File::open(path).map_err(|source| WeightsError::Io { path: p.clone(), source })?;
        // SAFETY: the map is read-only and lives only inside this call; the file is not
        // expected to change while it is read (a concurrent writer could only corrupt the
        // values read, which the shape checks do not depend on).
        let map =
            unsafe { memmap2::Mmap::map(&file) }.map_err(|source| WeightsError::Io { path: p.clone(), source })?;
        let st =
            SafeTensors::deserialize(&map).map_err(|e| WeightsError::Format { path: p.clone(), msg: e.to_string() })?;
        let needed = specs(cfg);
        let count = needed.len();
        let total: u64 = needed.iter().filter_map(|s| st.tensor(&s.name).ok()).map(|v| v.data().len() as u64).sum();
        let mut done = 0u64;
        let mut tensors = BTreeMap::new();
        for s in needed {
            let view = st.tensor(&s.name).map_err(|_| WeightsError::Missing {
                path: p.clone(),
                name: s.name.clone(),
                needed: count,
            })?;
            if view.shape() != s.shape.as_slice() {
                return Err(WeightsError::Shape {
                    path: p.clone(),
                    name: s.name.clone(),
                    expected: s.shape.clone(),
                    got: view.shape().to_vec(),
                });
            }
            let b = view.data();
            let dt = match view.dtype() {
                Dtype::F32 => DType::F32,
                Dtype::F16 => DType::F16,
                Dtype::BF16 => DType::BF16,
                other => {
                    return Err(WeightsError::DType {
                        path: p.clone(),
                        name: s.name.clone(),
                        dtype: format!("{other:?}"),
                    })
                }
            };
            // NOTE: safetensors stores little-endian values, the host's order on every machine
            // moekit builds for; the byte length matches the shape, which was just checked.
            let t = HostTensor::from_bytes(dt, &s.shape, b)
                .map_err(|e| WeightsError::Format { path: p.clone(), msg: format!("{}: {e}", s.name) })?;
            done += b.len() as u64;
            progress(done, total);
            tensors.insert(s.name, t);
        }
        Ok(Weights { tensors })
    }
}
