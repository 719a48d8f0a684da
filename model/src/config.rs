//! The model's configuration: every size of the unified decoder, read from and written to JSON
//! (serde), with presets from [`Preset::Tiny`] (runs in CI in seconds) to an ERNIE-like shape
//! that fits one GPU. [`ModelConfig::validate`] checks a configuration once; everything built
//! from a validated configuration may rely on it.

use serde::{Deserialize, Serialize};
use std::path::Path;

/// How the router turns logits into scores (`moekit_ops::ScoreFn`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Score {
    /// Softmax over the allowed experts.
    Softmax,
    /// Elementwise sigmoid.
    Sigmoid,
}

impl From<Score> for moekit_ops::ScoreFn {
    fn from(s: Score) -> Self {
        match s {
            Score::Softmax => moekit_ops::ScoreFn::Softmax,
            Score::Sigmoid => moekit_ops::ScoreFn::Sigmoid,
        }
    }
}

/// Every size of the model. Shapes in the docs: `H` = [`hidden`](Self::hidden), `D` =
/// [`head_dim`](Self::head_dim), `E` = [`routed_experts`](Self::routed_experts), `I` =
/// [`expert_intermediate`](Self::expert_intermediate).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelConfig {
    /// A name for reports.
    pub name: String,
    /// Hidden size `H`.
    pub hidden: usize,
    /// Decoder layers.
    pub layers: usize,
    /// Query heads.
    pub q_heads: usize,
    /// Key-value heads (GQA); divides `q_heads`.
    pub kv_heads: usize,
    /// Head dim `D`: one of the attention op's (`moekit_ops::HEAD_DIMS`: 64, 128, 256).
    pub head_dim: usize,
    /// Rotary base (ERNIE: 1e6).
    #[serde(default = "default_rope_base")]
    pub rope_base: f32,
    /// Uni-RoPE: how the `D / 2` rotary pairs split between the (t, h, w) position axes;
    /// sums to `D / 2`.
    pub rope_sections: [usize; 3],
    /// Routed experts `E`.
    pub routed_experts: usize,
    /// Shared experts (always on; 0 for none).
    pub shared_experts: usize,
    /// Routed experts per token `k` (the largest; elastic top-k picks fewer per call).
    pub top_k: usize,
    /// Intermediate size `I` of one routed expert.
    pub expert_intermediate: usize,
    /// Intermediate size of one shared expert.
    pub shared_intermediate: usize,
    /// Router score function.
    pub score: Score,
    /// Divide each token's k weights by their sum.
    pub renormalize: bool,
    /// Multiply the final routing weights by this factor.
    #[serde(default = "one")]
    pub route_scale: f32,
    /// The first layers use a dense SwiGLU MLP instead of the MoE (default none).
    #[serde(default)]
    pub dense_first_layers: usize,
    /// Intermediate size of those dense MLPs.
    #[serde(default)]
    pub dense_intermediate: usize,
    /// Text vocabulary.
    pub text_vocab: usize,
    /// Bits of one visual code (bit-wise quantised multi-scale tokenizer).
    pub visual_code_bits: usize,
    /// Entries of each audio codebook (residual codec).
    pub audio_codebook: usize,
    /// Residual codec levels of an audio frame.
    pub audio_levels: usize,
    /// Multi-token-prediction modules after the text head (0 for none).
    #[serde(default)]
    pub mtp_depth: usize,
    /// RMSNorm epsilon.
    #[serde(default = "default_eps")]
    pub rms_eps: f32,
}

fn default_rope_base() -> f32 {
    1e6
}
fn one() -> f32 {
    1.0
}
fn default_eps() -> f32 {
    1e-6
}

/// A configuration that cannot make a model: which field and why, with the numbers.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ConfigError {
    /// A size that must be positive is 0.
    #[error("config `{name}`: `{field}` must be positive")]
    Zero {
        /// The config's name.
        name: String,
        /// The field.
        field: &'static str,
    },
    /// Fields that contradict each other.
    #[error("config `{name}`: {msg}")]
    Inconsistent {
        /// The config's name.
        name: String,
        /// What is wrong, with the numbers.
        msg: String,
    },
    /// No preset of that name.
    #[error("no preset `{0}` (known: {known})", known = Preset::NAMES.join(", "))]
    UnknownPreset(String),
    /// The JSON could not be read or parsed.
    #[error("config {path}: {msg}")]
    Read {
        /// Where it was read from.
        path: String,
        /// The I/O or parse error.
        msg: String,
    },
}

/// The shipped configurations.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Preset {
    /// 2 layers, H = 128, 8 experts: the whole model in milliseconds on a CPU (CI).
    Tiny,
    /// 8 layers, H = 1024, 64 experts of I = 512, top-6: a real model in minutes on a CPU, in
    /// milliseconds on a GPU.
    Small,
    /// An ERNIE-4.5-21B-A3B-like shape (28 layers, H = 2560, 64 experts of I = 1536, top-6, 2
    /// shared experts, the first layer dense): ~21 B parameters, ~3 B active per token; fits
    /// one H200 in bf16.
    ErnieA3b,
}

impl Preset {
    /// The names [`Preset::from_name`] knows.
    pub const NAMES: [&'static str; 3] = ["tiny", "small", "ernie-a3b"];

    /// The preset called `name`.
    ///
    /// # Errors
    /// [`ConfigError::UnknownPreset`] for any other name.
    pub fn from_name(name: &str) -> Result<Self, ConfigError> {
        match name.trim().to_ascii_lowercase().as_str() {
            "tiny" => Ok(Preset::Tiny),
            "small" => Ok(Preset::Small),
            "ernie-a3b" => Ok(Preset::ErnieA3b),
            other => Err(ConfigError::UnknownPreset(other.to_owned())),
        }
    }

    /// The preset's configuration (valid: see the tests).
    pub fn config(self) -> ModelConfig {
        match self {
            Preset::Tiny => ModelConfig {
                name: "tiny".into(),
                hidden: 128,
                layers: 2,
                q_heads: 2,
                kv_heads: 1,
                head_dim: 64,
                rope_base: 1e6,
                rope_sections: [8, 12, 12],
                routed_experts: 8,
                shared_experts: 1,
                top_k: 2,
                expert_intermediate: 32,
                shared_intermediate: 32,
                score: Score::Softmax,
                renormalize: true,
                route_scale: 1.0,
                dense_first_layers: 0,
                dense_intermediate: 0,
                text_vocab: 256,
                visual_code_bits: 8,
                audio_codebook: 64,
                audio_levels: 2,
                mtp_depth: 1,
                rms_eps: 1e-6,
            },
            Preset::Small => ModelConfig {
                name: "small".into(),
                hidden: 1024,
                layers: 8,
                q_heads: 16,
                kv_heads: 4,
                head_dim: 64,
                rope_base: 1e6,
                rope_sections: [8, 12, 12],
                routed_experts: 64,
                shared_experts: 1,
                top_k: 6,
                expert_intermediate: 512,
                shared_intermediate: 1024,
                score: Score::Softmax,
                renormalize: true,
                route_scale: 1.0,
                dense_first_layers: 0,
                dense_intermediate: 0,
                text_vocab: 32_000,
                visual_code_bits: 16,
                audio_codebook: 1024,
                audio_levels: 4,
                mtp_depth: 1,
                rms_eps: 1e-6,
            },
            Preset::ErnieA3b => ModelConfig {
                name: "ernie-a3b".into(),
                hidden: 2560,
                layers: 28,
                q_heads: 20,
                kv_heads: 4,
                head_dim: 128,
                rope_base: 5e5,
                rope_sections: [16, 24, 24],
                routed_experts: 64,
                shared_experts: 2,
                top_k: 6,
                expert_intermediate: 1536,
                shared_intermediate: 1536,
                score: Score::Softmax,
                renormalize: true,
                route_scale: 1.0,
                dense_first_layers: 1,
                dense_intermediate: 12_288,
                text_vocab: 103_424,
                visual_code_bits: 32,
                audio_codebook: 1024,
                audio_levels: 8,
                mtp_depth: 1,
                rms_eps: 1e-5,
            },
        }
    }
}

impl ModelConfig {
    /// Reads a configuration from a JSON file and validates it.
    ///
    /// # Errors
    /// [`ConfigError::Read`] for I/O and parse errors (unknown fields included), else what
    /// [`ModelConfig::validate`] finds.
    pub fn from_json_file(path: &Path) -> Result<Self, ConfigError> {
        let read = |msg: String| ConfigError::Read { path: path.display().to_string(), msg };
        let text = std::fs::read_to_string(path).map_err(|e| read(e.to_string()))?;
        let cfg: ModelConfig = serde_json::from_str(&text).map_err(|e| read(e.to_string()))?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// The configuration as pretty JSON (the format [`ModelConfig::from_json_file`] reads).
    pub fn to_json(&self) -> String {
        // NOTE: serialising plain numbers, strings and arrays cannot fail.
        serde_json::to_string_pretty(self).unwrap_or_default()
    }

    /// Checks every field once.
    ///
    /// # Errors
    /// [`ConfigError::Zero`] for a size that must be positive and is 0;
    /// [`ConfigError::Inconsistent`] for fields that contradict each other (GQA heads that do
    /// not divide, an odd head dim or one the attention op does not take, rotary sections that do not sum to `D / 2`, `top_k` above
    /// the routed experts, more dense layers than layers, a dense layer without its
    /// intermediate size, a non-positive epsilon or
    /// rotary base).
    pub fn validate(&self) -> Result<(), ConfigError> {
        let zero = |field| ConfigError::Zero { name: self.name.clone(), field };
        let bad = |msg: String| ConfigError::Inconsistent { name: self.name.clone(), msg };
        for (field, v) in [
            ("hidden", self.hidden),
            ("layers", self.layers),
            ("q_heads", self.q_heads),
            ("kv_heads", self.kv_heads),
            ("head_dim", self.head_dim),
            ("routed_experts", self.routed_experts),
            ("top_k", self.top_k),
            ("expert_intermediate", self.expert_intermediate),
            ("text_vocab", self.text_vocab),
            ("visual_code_bits", self.visual_code_bits),
            ("audio_codebook", self.audio_codebook),
            ("audio_levels", self.audio_levels),
        ] {
            if v == 0 {
                return Err(zero(field));
            }
        }
        if self.shared_experts > 0 && self.shared_intermediate == 0 {
            return Err(zero("shared_intermediate"));
        }
        if self.q_heads % self.kv_heads != 0 {
            return Err(bad(format!("q_heads {} is not a multiple of kv_heads {}", self.q_heads, self.kv_heads)));
        }
        if self.head_dim % 2 != 0 {
            return Err(bad(format!("head_dim {} is odd (rotary needs pairs)", self.head_dim)));
        }
        if !moekit_ops::HEAD_DIMS.contains(&self.head_dim) {
            return Err(bad(format!(
                "head_dim {} is not one the attention op takes ({:?})",
                self.head_dim,
                moekit_ops::HEAD_DIMS
            )));
        }
        let pairs: usize = self.rope_sections.iter().sum();
        if pairs != self.head_dim / 2 {
            return Err(bad(format!(
                "rope_sections {:?} sum to {pairs}, not head_dim / 2 = {}",
                self.rope_sections,
                self.head_dim / 2
            )));
        }
        if self.top_k > self.routed_experts {
            return Err(bad(format!("top_k {} exceeds routed_experts {}", self.top_k, self.routed_experts)));
        }
        if self.dense_first_layers > self.layers {
            return Err(bad(format!("dense_first_layers {} exceeds layers {}", self.dense_first_layers, self.layers)));
        }
        if self.dense_first_layers > 0 && self.dense_intermediate == 0 {
            return Err(zero("dense_intermediate"));
        }
        let positive = |v: f32| v.is_finite() && v > 0.0;
        if !positive(self.rms_eps) || !positive(self.rope_base - 1.0) || !self.route_scale.is_finite() {
            return Err(bad(format!(
                "rms_eps {} must be > 0, rope_base {} > 1, route_scale {} finite",
                self.rms_eps, self.rope_base, self.route_scale
            )));
        }
        Ok(())
    }

    /// Whether layer `l` is a dense (MLP) layer rather than an MoE layer.
    pub fn is_dense(&self, l: usize) -> bool {
        l < self.dense_first_layers
    }
}
