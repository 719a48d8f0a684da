//! # moekit-model: the unified multimodal MoE model on moekit's ops (to come)
//!
//! This crate will hold the thin model of issue #5: the whole unified Mixture-of-Experts
//! decoder (per-modality token embeddings, attention + MoE layers with shared and routed
//! experts behind one modality-agnostic router, per-modality heads), built from a JSON config
//! and safetensors weights or a seeded random init, running end to end on any moekit backend,
//! with elastic depth, width and top-k chosen at run time and the routing statistics the
//! ERNIE 5.0 report draws. It is empty until then: the ops it will stand on live in
//! `moekit-ops` and the backends.
