//! The model on the CUDA backend and on cubecl's CUDA runtime against the reference path:
//! text full and elastic, the mixed sequence of every modality (every head, MTP), and
//! decoding through a KV cache. Needs `--features cuda` / `cubecl-cuda` and a GPU; without one
//! each test prints `SKIPPED` (a failure under `MOEKIT_NO_SKIP=1`).
#![cfg(any(feature = "cuda", feature = "cubecl-cuda"))]

mod common;

fn skip_or_panic(what: &str, e: moekit_ops::Error) {
    if std::env::var_os("MOEKIT_NO_SKIP").is_none() {
        println!("SKIPPED {what}: {e}");
    } else {
        panic!("{what}: no backend under MOEKIT_NO_SKIP: {e}");
    }
}

#[cfg(feature = "cuda")]
#[test]
fn cuda_gives_the_reference_logits() {
    match moekit_cuda::CudaBackend::new(0) {
        Ok(b) => common::check_against_reference(&b),
        Err(e) => skip_or_panic("cuda_gives_the_reference_logits", e),
    }
}

#[cfg(feature = "cubecl-cuda")]
#[test]
fn cubecl_cuda_gives_the_reference_logits() {
    match moekit_cubecl::CubeBackend::<moekit_cubecl::CudaRuntime>::cuda(0) {
        Ok(b) => common::check_against_reference(&b),
        Err(e) => skip_or_panic("cubecl_cuda_gives_the_reference_logits", e),
    }
}
