//! # moekit-model: the unified multimodal MoE model on moekit's ops
//!
//! The thin model of issue #5: the whole unified Mixture-of-Experts decoder (per-modality
//! token embeddings, attention + MoE layers with shared and routed experts behind one
//! modality-agnostic router, per-modality heads), built from a JSON config and safetensors
//! weights or a seeded random init, running end to end on any moekit backend, with elastic
//! depth, width and top-k chosen at run time and the routing statistics the ERNIE 5.0 report
//! draws.
//!
//! Built so far: [`config`] (every size, JSON, presets, validation), [`weights`] (the tensors
//! a configuration implies, seeded init, safetensors files) and [`forward`] (the decoder on
//! text tokens on any backend, with elastic depth, width and top-k per call, and each MoE
//! layer's routing), [`stats`] (expert counts per layer and modality, normalised routing
//! entropy, IoU of the most-used experts between modalities). The visual and audio inputs and heads, the multi-token-prediction
//! modules, the decoding loops, the routing report and the `moekit` CLI come next (issue #5).

pub mod config;
pub mod forward;
pub mod stats;
pub mod weights;

pub use forward::{Elastic, Forward, LayerRouting, Model, ModelError};
pub use stats::{Modality, RoutingStats};

pub use config::{ConfigError, ModelConfig, Preset, Score};
pub use weights::{param_count, specs, FileDType, Init, TensorSpec, Weights, WeightsError};
