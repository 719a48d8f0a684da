//! The `moekit` command on the tiny preset: `run` (elastic options too), `generate`, `report`,
//! `init-weights` and `run --weights` on the file, and typed failures.

use std::process::Command;

fn moekit(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_moekit")).args(args).output().unwrap();
    (out.status.success(), String::from_utf8_lossy(&out.stdout).into(), String::from_utf8_lossy(&out.stderr).into())
}

#[test]
fn run_prints_the_model_routing_top_tokens_and_speed() {
    let (ok, out, err) = moekit(&["run", "--preset", "tiny", "--backend", "cpu", "--tokens", "24", "--iters", "2"]);
    assert!(ok, "{out}\n{err}");
    for want in [
        "model        tiny",
        "backend      cpu",
        "routing      layer  0",
        "routing      layer  1",
        "input        text",
        "image [(1, 1), (2, 2), (4, 4)] (21 tokens)",
        "audio 8 frames",
        "top tokens",
        "visual head  21 rows",
        "audio heads  8 rows",
        "tokens/s",
    ] {
        assert!(out.contains(want), "{want:?} missing in\n{out}");
    }
    let (ok, out, err) = moekit(&[
        "run",
        "--backend",
        "reference",
        "--tokens",
        "8",
        "--iters",
        "1",
        "--depth",
        "1",
        "--experts",
        "0-3,6",
        "--top-k",
        "1",
    ]);
    assert!(ok, "{out}\n{err}");
    assert!(out.contains("layers [1] of 2, 5 of 8 routed experts, top-1 of 2"), "{out}");
    assert!(!out.contains("routing      layer  0"), "{out}");
}

#[test]
fn init_weights_writes_a_file_run_reads() {
    let path = std::env::temp_dir().join(format!("moekit-cli-{}.safetensors", std::process::id()));
    let p = path.to_str().unwrap();
    let (ok, out, err) = moekit(&["init-weights", "--preset", "tiny", "--seed", "5", "--out", p, "--dtype", "f32"]);
    assert!(ok && out.contains("wrote"), "{out}\n{err}");
    let (ok, a, err) = moekit(&["run", "--backend", "cpu", "--weights", p, "--tokens", "8", "--iters", "1"]);
    assert!(ok, "{a}\n{err}");
    let (ok, b, _) = moekit(&["run", "--backend", "cpu", "--seed", "5", "--tokens", "8", "--iters", "1"]);
    assert!(ok);
    // The same weights (file or seed): the same top tokens.
    let top = |s: &str| s.lines().find(|l| l.contains("top tokens")).unwrap().to_owned();
    assert_eq!(top(&a), top(&b));
}

#[test]
fn bad_options_fail_with_a_message() {
    let (ok, _, err) = moekit(&["run", "--backend", "tpu"]);
    assert!(!ok && err.contains("unknown backend `tpu`"), "{err}");
    let (ok, _, err) = moekit(&["run", "--preset", "huge"]);
    assert!(!ok && err.contains("no preset `huge`"), "{err}");
    let (ok, _, err) = moekit(&["run", "--backend", "cpu", "--experts", "0-9"]);
    assert!(!ok && err.contains("not a range inside 0..8"), "{err}");
    let (ok, _, err) = moekit(&["run", "--backend", "cpu", "--top-k", "5"]);
    assert!(!ok && err.contains("top_k 5 must be in 1..=2"), "{err}");
    let (ok, _, err) = moekit(&["run", "--backend", "cpu", "--weights", "/nonexistent.safetensors"]);
    assert!(!ok && err.contains("/nonexistent.safetensors"), "{err}");
}

#[test]
fn generate_prints_text_image_and_audio() {
    let args = ["generate", "--backend", "cpu", "--text", "5", "--image", "1x1,2x2", "--audio", "3"];
    let (ok, out, err) = moekit(&args);
    assert!(ok, "{out}\n{err}");
    for want in [
        "generated [",
        "image        scales [(1, 1), (2, 2)]: 5 codes of 8 bits",
        "audio        3 frames",
        "cache        ",
    ] {
        assert!(out.contains(want), "{want:?} missing in\n{out}");
    }
    // Seeded sampling repeats itself.
    let sampled = [
        "generate",
        "--backend",
        "cpu",
        "--text",
        "6",
        "--image",
        "none",
        "--audio",
        "0",
        "--temperature",
        "1.2",
        "--sample-seed",
        "4",
    ];
    let line = |s: &str| s.lines().find(|l| l.contains("generated")).unwrap().split(" (").next().unwrap().to_owned();
    let (a, b) = (moekit(&sampled), moekit(&sampled));
    assert!(a.0 && b.0, "{}", a.2);
    assert_eq!(line(&a.1), line(&b.1));
    let (ok, _, err) = moekit(&["generate", "--backend", "cpu", "--image", "2x"]);
    assert!(!ok && err.contains("`2x` is not HxW"), "{err}");
}

#[test]
fn report_writes_the_heatmap_and_the_json() {
    let dir = std::env::temp_dir().join(format!("moekit-report-{}", std::process::id()));
    let d = dir.to_str().unwrap();
    let (ok, out, err) = moekit(&["report", "--backend", "cpu", "--tokens", "96", "--out", d]);
    assert!(ok, "{out}\n{err}");
    assert!(out.contains("iou text/image"), "{out}");
    let png = std::fs::read(dir.join("routing_heatmap.png")).unwrap();
    assert_eq!(&png[1..4], b"PNG");
    let json = std::fs::read_to_string(dir.join("routing_report.json")).unwrap();
    assert!(json.contains("\"entropy\"") && json.contains("audio"), "{json}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn bench_prints_prefill_and_decode_and_writes_json() {
    let json = std::env::temp_dir().join(format!("moekit-bench-{}.json", std::process::id()));
    let j = json.to_str().unwrap();
    let args = ["bench", "--backend", "cpu", "--prefill", "32", "--context", "16", "--iters", "2", "--json", j];
    let (ok, out, err) = moekit(&args);
    assert!(ok, "{out}\n{err}");
    assert!(out.contains("prefill          32 tokens") && out.contains("decode       context     16"), "{out}");
    let lines = std::fs::read_to_string(&json).unwrap();
    assert!(lines.contains("\"op\":\"model_prefill\"") && lines.contains("\"op\":\"model_decode\""), "{lines}");
    std::fs::remove_file(&json).unwrap();
    let (ok, _, err) = moekit(&["bench", "--backend", "cpu", "--prefill", "0"]);
    assert!(!ok && err.contains("must be positive"), "{err}");
}
