//! The binary's exit status for a GPU backend it cannot start.

use std::process::Command;

#[test]
fn cuda_without_a_gpu_or_the_feature_exits_2_with_a_reason() {
    let out = Command::new(env!("CARGO_BIN_EXE_moekit-bench"))
        .args(["--backend", "cuda", "--shape", "tiny", "--op", "route", "--iters", "1", "--warmup", "0"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    let code = out.status.code();
    if cfg!(feature = "cuda") {
        // NOTE: with the feature on, a machine with a GPU runs the case; one without answers
        // `NoDevice` and exits 2.
        if code != Some(0) {
            assert_eq!(code, Some(2), "{stderr}");
            assert!(stderr.contains("cannot start backend `cuda`") && stderr.contains("no device"), "{stderr}");
        }
    } else {
        assert_eq!(code, Some(2), "{stderr}");
        assert!(stderr.contains("not compiled in") && stderr.contains("--features cuda"), "{stderr}");
    }
}

#[test]
fn a_non_positive_copy_ceiling_is_a_usage_error() {
    let out = Command::new(env!("CARGO_BIN_EXE_moekit-bench"))
        .args(["--backend", "cpu", "--shape", "tiny", "--op", "route", "--copy-ceiling-gbps", "0"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--copy-ceiling-gbps"));
}
