//! The model on cubecl's wgpu runtime (CI: lavapipe) against the reference path: text full
//! and elastic, the mixed sequence of every modality (every head, MTP), and decoding through
//! a KV cache. Needs `--features cubecl-wgpu`; without a Vulkan adapter it prints `SKIPPED`
//! (a failure under `MOEKIT_NO_SKIP=1`, as in CI).
#![cfg(feature = "cubecl-wgpu")]

mod common;

use moekit_cubecl::{CubeBackend, WgpuRuntime};

#[test]
fn cubecl_wgpu_gives_the_reference_logits_for_full_and_elastic_models() {
    match CubeBackend::<WgpuRuntime>::wgpu() {
        Ok(b) => common::check_against_reference(&b),
        Err(e) if std::env::var_os("MOEKIT_NO_SKIP").is_none() => {
            println!("SKIPPED cubecl_wgpu_gives_the_reference_logits: {e}");
        }
        Err(e) => panic!("no cubecl-wgpu backend under MOEKIT_NO_SKIP: {e}"),
    }
}
