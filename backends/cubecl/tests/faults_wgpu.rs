//! Memory over many op calls on cubecl's wgpu runtime (lavapipe in CI): after a warm-up,
//! cubecl's count of bytes in live buffers must not grow (no moekit buffer or handle leaks);
//! the process's resident memory is measured and reported (on lavapipe device memory is host
//! memory, so a leak of device buffers, staging buffers or command encoders anywhere below
//! moekit shows up there), and asserted where the driver allows (NOTE below).
//!
//! Without the `cubecl-wgpu` feature or a Vulkan adapter the test prints `SKIPPED` with the
//! reason (`MOEKIT_NO_SKIP=1` makes that a failure).
//! Environment: `MOEKIT_FAULT_CALLS` (op calls after the warm-up, default 2000),
//! `MOEKIT_FAULT_SLACK_MB` (allowed growth of cubecl's live bytes, default 1),
//! `MOEKIT_FAULT_RSS_SLACK_MB` (when set, the resident set may grow at most this much, else its
//! growth is only reported; see the NOTE below),
//! `MOEKIT_FAULT_OPS` (comma-separated op kinds to cycle through, default all seven ops; the
//! kinds are `route,permute,gemm,combine,attention,rms_norm,moe` and `transfer`, an
//! alloc + upload + download with no op, for narrowing a leak down),
//! `MOEKIT_RESULTS_DIR` (where the test writes `faults-cubecl-wgpu-memory.json`).
//!
//! NOTE: the resident set is reported, not asserted, by default: lavapipe of Mesa 22.x (Debian
//! 12's `mesa-vulkan-drivers` 22.3.6) recompiles a compute shader whose branch or loop
//! conditions read uniform values at every dispatch (`update_inline_shader_state` in
//! `lvp_execute.c` inlines the values and calls `lvp_pipeline_compile`) and never frees the
//! result, so each call of the tiled grouped GEMM leaks ~300 KB of host memory in the driver
//! (the MoE layer, two GEMMs, ~640 KB), whatever moekit and cubecl do; later Mesa caches the
//! variants. cubecl's own counts (live bytes, live allocations) are asserted always: they
//! catch a buffer moekit keeps. With a driver without that leak, set
//! `MOEKIT_FAULT_RSS_SLACK_MB=64` (at 300 KB per GEMM call, 2000 calls grow ~90 MB; without
//! the leak the heap stays within a few MB after the warm-up).
//!
//! NOTE: the same cycle as `faults_cuda.rs` (f32 and f16 here: wgpu has no bf16). There is no
//! out-of-memory test: on lavapipe device memory is host memory, and filling it would fill the
//! machine.

use moekit_cubecl::{CubeBackend, WgpuRuntime};
use moekit_ops::{Backend, DType, Device, HostTensor};
use moekit_testing::faults;
use moekit_testing::suite::backend_or_skip;

type Cube = CubeBackend<WgpuRuntime>;

/// cubecl's own count: (bytes in live buffers, bytes its pools reserve, live allocations).
#[cfg(feature = "cubecl-wgpu")]
fn pool_bytes(b: &Cube) -> (u64, u64, u64) {
    let u = b.client().memory_usage().expect("cubecl memory usage");
    (u.bytes_in_use, u.bytes_reserved, u.number_allocs)
}

#[cfg(not(feature = "cubecl-wgpu"))]
fn pool_bytes(_: &Cube) -> (u64, u64, u64) {
    unreachable!("no cubecl wgpu backend exists without the `cubecl-wgpu` feature")
}

/// The process's resident set, bytes (`VmRSS` of `/proc/self/status`; 0 where there is none).
fn rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

fn env_num(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

const KINDS: [&str; 8] = ["route", "permute", "gemm", "combine", "attention", "rms_norm", "moe", "transfer"];

/// The op kinds to cycle through (`MOEKIT_FAULT_OPS`, default the seven ops).
fn kinds() -> Vec<usize> {
    match std::env::var("MOEKIT_FAULT_OPS") {
        Ok(list) if !list.trim().is_empty() => list
            .split(',')
            .map(|k| {
                let k = k.trim();
                KINDS.iter().position(|&n| n == k).unwrap_or_else(|| panic!("MOEKIT_FAULT_OPS: unknown kind {k:?}"))
            })
            .collect(),
        _ => (0..7).collect(),
    }
}

/// An allocation, an upload and two downloads, checked, with no op: the transfer path alone.
fn transfer<B: Backend>(b: &B, dt: DType, seed: u64) -> moekit_ops::Result<()> {
    let shape = [64usize, 96];
    let vals: Vec<f32> = (0..64 * 96).map(|i| ((i as u64 * 31 + seed) % 97) as f32 - 48.0).collect();
    let host = HostTensor::from_f32(dt, &shape, &vals);
    let up = b.upload(&host)?;
    let zero = b.alloc(dt, &shape)?;
    let back = b.download(&up)?;
    assert_eq!(back.as_bytes(), host.as_bytes(), "upload + download changed the data");
    let z = b.download(&zero)?;
    assert!(z.as_bytes().iter().all(|&x| x == 0), "alloc is not zeroed");
    Ok(())
}

/// Op call `n` of the cycle (each call uploads its inputs, allocates its outputs, runs one op,
/// downloads, compares with the reference and drops every buffer).
fn call<B: Backend>(b: &B, kinds: &[usize], n: u64) {
    let ops = kinds.len() as u64;
    let dt = if (n / ops) % 2 == 0 { DType::F16 } else { DType::F32 };
    // NOTE: a few data seeds, so the data varies but every round hits the same kernels.
    let kind = kinds[(n % ops) as usize];
    let r = match kind {
        k if k < faults::OPS.len() => faults::run_op(b, dt, &faults::workload(n % 5), k),
        _ => transfer(b, dt, n % 5).map_err(|e| e.to_string()),
    };
    r.unwrap_or_else(|e| panic!("op call {n} ({}, {dt}): {e}", KINDS[kind]));
}

#[test]
fn memory_returns_to_baseline_after_many_calls() {
    let Some(b) = backend_or_skip("memory_returns_to_baseline_after_many_calls", Cube::wgpu()) else { return };
    let calls = env_num("MOEKIT_FAULT_CALLS", 2000);
    let slack = env_num("MOEKIT_FAULT_SLACK_MB", 1) << 20;
    let rss_slack =
        std::env::var("MOEKIT_FAULT_RSS_SLACK_MB").ok().and_then(|v| v.parse::<u64>().ok()).map(|mb| mb << 20);
    let kinds = kinds();
    let names: Vec<&str> = kinds.iter().map(|&k| KINDS[k]).collect();
    const WARMUP: u64 = 100;
    const EVERY: u64 = 250;
    let start = std::time::Instant::now();
    b.sync().unwrap();
    let cold_rss = rss_bytes();
    // NOTE: the first calls compile kernels (pipelines stay cached for the client's life), fill
    // cubecl's pools and the MoE layer's grow-only scratch, and grow the heap's arenas to their
    // working size; so the baseline is taken after a warm-up of 100 calls (every op in both
    // dtypes several times) and the calls after it must not grow it.
    for n in 0..WARMUP {
        call(&b, &kinds, n);
    }
    b.sync().unwrap();
    let warm_seconds = start.elapsed().as_secs_f64();
    let rss_before = rss_bytes();
    let (live_before, reserved_before, allocs_before) = pool_bytes(&b);
    let mut samples = vec![format!("[0,{live_before},{reserved_before},{rss_before}]")];
    let mut peak_rss = rss_before;
    let run = std::time::Instant::now();
    for n in 1..=calls {
        call(&b, &kinds, WARMUP + n);
        if n % EVERY == 0 || n == calls {
            let rss = rss_bytes();
            let (live, reserved, _) = pool_bytes(&b);
            peak_rss = peak_rss.max(rss);
            samples.push(format!("[{n},{live},{reserved},{rss}]"));
        }
    }
    b.sync().unwrap();
    let seconds = run.elapsed().as_secs_f64();
    let rss_after = rss_bytes();
    let (live_after, reserved_after, allocs_after) = pool_bytes(&b);
    peak_rss = peak_rss.max(rss_after);
    let live_ok = live_after <= live_before + slack && allocs_after <= allocs_before;
    let rss_ok = rss_slack.is_none_or(|s| rss_after <= rss_before + s);
    let pass = live_ok && rss_ok;
    let rss_growth = rss_after as i64 - rss_before as i64;
    let line = format!(
        "{{\"test\":\"faults-cubecl-wgpu-memory\",\"backend\":\"cubecl-wgpu\",\"ops\":\"{}\",\"calls\":{calls},\
         \"warmup_calls\":{WARMUP},\"warmup_seconds\":{warm_seconds:.2},\"seconds\":{seconds:.2},\
         \"live_before_bytes\":{live_before},\"live_after_bytes\":{live_after},\
         \"allocs_before\":{allocs_before},\"allocs_after\":{allocs_after},\
         \"reserved_before_bytes\":{reserved_before},\"reserved_after_bytes\":{reserved_after},\
         \"cold_rss_bytes\":{cold_rss},\"rss_before_bytes\":{rss_before},\"rss_after_bytes\":{rss_after},\
         \"peak_rss_bytes\":{peak_rss},\"rss_growth_bytes\":{rss_growth},\"rss_growth_per_call_bytes\":{},\
         \"slack_bytes\":{slack},\"rss_slack_bytes\":{},\
         \"samples_call_live_reserved_rss\":[{}],\"pass\":{pass}}}",
        names.join(","),
        rss_growth / calls.max(1) as i64,
        rss_slack.map_or("null".to_string(), |s| s.to_string()),
        samples.join(","),
    );
    println!("{line}");
    eprintln!("{line}");
    if let Some(dir) = std::env::var_os("MOEKIT_RESULTS_DIR") {
        std::fs::create_dir_all(&dir).ok();
        std::fs::write(std::path::Path::new(&dir).join("faults-cubecl-wgpu-memory.json"), format!("{line}\n"))
            .expect("write the result file");
    }
    assert!(live_ok, "cubecl's live bytes or allocation count grew over {calls} calls: {line}");
    assert!(rss_ok, "the resident set grew by {rss_growth} bytes over {calls} calls: {line}");
}
