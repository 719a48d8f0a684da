//! # moekit-model: the unified multimodal MoE model on moekit's ops
//!
//! The thin model of issue #5: the whole unified Mixture-of-Experts decoder (per-modality
//! token embeddings, attention + MoE layers with shared and routed experts behind one
//! modality-agnostic router, per-modality heads), built from a JSON config and safetensors
//! weights or a seeded random init, running end to end on any moekit backend, with elastic
//! depth, width and top-k chosen at run time and the routing statistics the ERNIE 5.0 report
//! draws.
//!
//! Modules: [`config`] (every size, JSON, presets, validation), [`weights`] (the tensors a
//! configuration implies, seeded init, safetensors files), [`input`] (interleaved text,
//! visual-code and audio-frame segments; Uni-RoPE positions; the next-frame-and-scale mask),
//! [`forward`] (the decoder on any backend: every head, the MTP modules, elastic depth, width
//! and top-k per call, decoding through a KV cache, each MoE layer's routing), [`stats`]
//! (expert counts per layer and modality, normalised routing entropy, IoU of the most-used
//! experts between modalities) and [`report`] (the heatmap PNG, JSON and table of the routing
//! analysis).

pub mod config;
pub mod forward;
pub mod generate;
pub mod input;
pub mod report;
pub mod stats;
pub mod weights;

pub use forward::{AudioPick, Elastic, Forward, Heads, KvCache, LayerRouting, Model, ModelError, SubModel};
pub use generate::{demo_sequence, generate_audio, generate_image, generate_text, Sampler};
pub use input::{next_scale_inputs, upsample, Audio, Layout, Segment, Visual};
pub use report::{write_all, write_heatmap, Report, ReportError, ReportFiles};
pub use stats::{Modality, RoutingStats};

pub use config::{ConfigError, ModelConfig, Preset, Score};
pub use weights::{param_count, specs, FileDType, Init, TensorSpec, Weights, WeightsError};
