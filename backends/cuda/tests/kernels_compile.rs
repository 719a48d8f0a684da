//! Every embedded kernel source compiles with NVRTC for Hopper (`sm_90a`) and Ampere
//! (`sm_80`), without a GPU. Skipped (and said so) where libnvrtc is not installed.

#[cfg(feature = "cuda")]
#[test]
fn every_kernel_source_compiles() {
    use std::io::Write;
    if !moekit_cuda::nvrtc_present() {
        let _ = writeln!(std::io::stderr(), "SKIPPED every_kernel_source_compiles: libnvrtc is not installed");
        return;
    }
    for arch in ["sm_90a", "sm_80"] {
        let ptx = moekit_cuda::compile_kernels(arch).unwrap_or_else(|e| panic!("{arch}: {e}"));
        assert_eq!(ptx.len(), 8, "{arch}");
        for (name, text) in ptx {
            assert!(text.contains(".version"), "{arch} {name}: not PTX");
            // NOTE: the wgmma kernels sit behind `__CUDA_ARCH_FEAT_SM90_ALL`; they must be there
            // for sm_90a (the launcher picks them on Hopper) and absent elsewhere.
            if name == "grouped_gemm.cu" {
                for kernel in [
                    "grouped_gemm_wgmma_kn_bf16",
                    "grouped_gemm_wgmma_ws_kn_bf16",
                    "grouped_gemm_wgmma_ws_nk_f16",
                    "grouped_gemm_wgmma_wide_nk_bf16",
                    "grouped_gemm_wgmma_ws_wide_kn_f16",
                    "grouped_gemm_wgmma_ws_tma_nk_bf16",
                ] {
                    assert_eq!(text.contains(kernel), arch == "sm_90a", "{arch} {name}: {kernel}");
                }
            }
            if name == "route.cu" {
                for kernel in ["route_fused_r1_bf16", "route_fused_r4_f16", "route_fused_r8_bf16"] {
                    assert_eq!(text.contains(kernel), arch == "sm_90a", "{arch} {name}: {kernel}");
                }
                assert!(text.contains("route_r4_bf16"), "{arch} {name}: the register path");
            }
            if name == "attention.cu" {
                assert_eq!(text.contains("attention_sm90_d128_bf16"), arch == "sm_90a", "{arch} {name}: wgmma");
                assert!(
                    text.contains("attention_fa2_d128_bf16") && !text.contains("attention_sm90ws_"),
                    "{arch} {name}"
                );
            }
            // The warp-specialised module holds its 10 kernels (sm_90a; with the banded form), the
            // causal-block one its 6, and neither any of the other's.
            let plain = ["attention_sm90ws_d128_bf16", "attention_sm90ws_d64_f16", "attention_sm90ws3s_d64_f16"];
            let cb = ["attention_sm90ws3sc_d64_bf16", "attention_sm90wsc_d128_f16", "attention_sm90wsc_d256_bf16"];
            if name == "attention_sm90_ws_cb.cu" {
                for kernel in cb {
                    assert_eq!(text.contains(kernel), arch == "sm_90a", "{arch} {name}: {kernel}");
                }
                assert!(plain.iter().all(|k| !text.contains(k)) && !text.contains("attention_fa2_"), "{arch} {name}");
            }
            if name == "attention_sm90_ws.cu" {
                for kernel in ["attention_sm90ws_d256_bf16", "attention_sm90ws3_d64_bf16"].into_iter().chain(plain) {
                    assert_eq!(text.contains(kernel), arch == "sm_90a", "{arch} {name}: {kernel}");
                }
                assert!(cb.iter().all(|k| !text.contains(k)), "{arch} {name}");
                assert!(!text.contains("attention_fa2_") && !text.contains("attention_sm90_d"), "{arch} {name}");
            }
            // The decode module holds v1, v2 (3 and 2 stages) and the combine on every arch, v3
            // (TMA) on sm_90a only.
            if name == "attention_decode.cu" {
                for kernel in [
                    "attention_decode_d128_bf16",
                    "attention_decode2_d64_f16",
                    "attention_decode2s2_d128_bf16",
                    "attention_decode_combine_d128_bf16",
                ] {
                    assert!(text.contains(kernel), "{arch} {name}: {kernel}");
                }
                for kernel in ["attention_decode3_d128_bf16", "attention_decode3_d64_f16"] {
                    assert_eq!(text.contains(kernel), arch == "sm_90a", "{arch} {name}: {kernel}");
                }
            }
            if let Some(dir) = std::env::var_os("MOEKIT_PTX_OUT") {
                let path = std::path::Path::new(&dir).join(format!("{}-{arch}.ptx", name.trim_end_matches(".cu")));
                std::fs::write(path, text).expect("write PTX");
            }
        }
    }
}
