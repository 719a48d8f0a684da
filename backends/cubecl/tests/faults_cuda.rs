//! GPU faults on cubecl's CUDA runtime (issue #6): an allocation the device cannot hold answers
//! [`Error::OutOfMemory`] and the backend keeps working (ops still match the reference);
//! a problem too large for the device is a typed error, not a panic; device memory returns to
//! its baseline after 10,000 op calls.
//!
//! Without the `cubecl-cuda` feature or a GPU every test prints `SKIPPED` with the reason.
//! Environment: `MOEKIT_FAULT_CALLS` (op calls of the memory test, default 10000),
//! `MOEKIT_FAULT_SLACK_MB` (allowed growth, default 16), `MOEKIT_RESULTS_DIR` (where the
//! memory test writes `faults-cubecl-cuda-memory.json`).
//!
//! NOTE: the same tests as `backends/cuda/tests/faults.rs`, over cubecl's allocator: cubecl
//! keeps freed memory in its pools, so the memory test checks both the driver's view and
//! cubecl's own count of bytes in use.

use moekit_cubecl::{CubeBackend, CudaRuntime};
use moekit_ops::{api, Backend, DType, Device, Error, MoeLayerIo, MoeLayerProblem, RouteProblem};
use moekit_testing::faults;
use moekit_testing::props::{grouped_gemm, moe, route};
use moekit_testing::suite::backend_or_skip;
use std::sync::{Mutex, MutexGuard};

/// The backend, with this binary's tests serialised: the memory test measures the whole
/// device, and the out-of-memory test fills it, so they must not overlap (the test harness
/// runs tests on several threads).
fn gpu(test: &str) -> Option<(Cube, MutexGuard<'static, ()>)> {
    static SERIAL: Mutex<()> = Mutex::new(());
    let guard = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    backend_or_skip(test, Cube::cuda(0)).map(|b| (b, guard))
}

type Cube = CubeBackend<CudaRuntime>;

/// The driver's (free, total) device memory, asked on cubecl's server thread (where its CUDA
/// context is current).
#[cfg(feature = "cubecl-cuda")]
fn mem_info(b: &Cube) -> (u64, u64) {
    let (free, total) = b.client().exclusive(cudarc::driver::result::mem_get_info).unwrap().expect("cuMemGetInfo");
    (free as u64, total as u64)
}

#[cfg(not(feature = "cubecl-cuda"))]
fn mem_info(_: &Cube) -> (u64, u64) {
    unreachable!("no cubecl CUDA backend exists without the `cubecl-cuda` feature")
}

/// Device memory in use (all processes and contexts), bytes, from the driver.
fn used_bytes(b: &Cube) -> u64 {
    let (free, total) = mem_info(b);
    total - free
}

fn total_bytes(b: &Cube) -> u64 {
    mem_info(b).1
}

/// cubecl's own count: (bytes in live buffers, bytes its pools reserve).
#[cfg(feature = "cubecl-cuda")]
fn pool_bytes(b: &Cube) -> (u64, u64) {
    let u = b.client().memory_usage().expect("cubecl memory usage");
    (u.bytes_in_use, u.bytes_reserved)
}

#[cfg(not(feature = "cubecl-cuda"))]
fn pool_bytes(_: &Cube) -> (u64, u64) {
    unreachable!("no cubecl CUDA backend exists without the `cubecl-cuda` feature")
}

/// Hands the pools' unused memory back to the driver.
#[cfg(feature = "cubecl-cuda")]
fn cleanup(b: &Cube) {
    b.client().memory_cleanup();
    b.sync().unwrap();
}

#[cfg(not(feature = "cubecl-cuda"))]
fn cleanup(_: &Cube) {}

fn env_num(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// Asserts `r` is an out-of-memory error (with the op and, when given, the byte count).
fn expect_oom<T: std::fmt::Debug>(r: moekit_ops::Result<T>, op: &str, bytes: Option<usize>) {
    match r {
        Err(Error::OutOfMemory { op: got_op, backend, bytes: got, msg }) => {
            assert_eq!((got_op, backend), (op, "cubecl-cuda"), "{msg}");
            if let Some(bytes) = bytes {
                assert_eq!(got, bytes, "{msg}");
            }
        }
        other => panic!("expected OutOfMemory from {op}, got {other:?}"),
    }
}

/// A few ops on fresh random data, each compared with the reference: the backend works.
fn still_works<B: Backend>(b: &B, seed: u64) {
    let dt = DType::BF16;
    let w = faults::workload(seed);
    route::route_matches_reference(b, dt, &w.route).expect("route after OOM");
    grouped_gemm::grouped_gemm_matches_reference(b, dt, &w.gemm).expect("grouped GEMM after OOM");
    moe::moe_layer_matches_reference(b, dt, &w.moe).expect("MoE layer after OOM");
    b.sync().expect("sync after OOM");
}

#[test]
fn out_of_memory_is_typed_and_the_backend_keeps_working() {
    let Some((b, _serial)) = gpu("out_of_memory_is_typed_and_the_backend_keeps_working") else { return };
    still_works(&b, 1);
    // 1 TiB: more than any GPU holds.
    expect_oom(b.alloc(DType::F32, &[1 << 38]), "alloc", Some(1 << 40));
    // A byte count past usize: no device could hold it, and it must not panic on overflow.
    expect_oom(b.alloc(DType::BF16, &[usize::MAX / 2, 3]), "alloc", Some(usize::MAX));
    // Just more than the whole device.
    let total = total_bytes(&b) as usize;
    expect_oom(b.alloc(DType::F32, &[total / 4 + (1 << 28)]), "alloc", None);
    b.sync().expect("sync after a refused allocation");
    still_works(&b, 2);
    // NOTE: 8 GiB is below cubecl's largest single allocation (a quarter of the device).
    // Fill the device in 8 GiB pieces until the driver refuses: the refusal is typed, and
    // once the pieces are dropped everything works again.
    let chunk = 1usize << 31; // f32 elements: 8 GiB
    let mut held = Vec::new();
    let refusal = loop {
        match b.alloc(DType::F32, &[chunk]) {
            Ok(buf) => held.push(buf),
            Err(e) => break e,
        }
        assert!(held.len() < 1024, "the device took 8 TiB without refusing");
    };
    assert!(
        matches!(refusal, Error::OutOfMemory { op: "alloc", bytes, .. } if bytes == 4 * chunk),
        "after {} pieces: {refusal:?}",
        held.len()
    );
    eprintln!("filled the device with {} pieces of 8 GiB, then: {refusal}", held.len());
    drop(held);
    b.sync().expect("sync after freeing");
    cleanup(&b);
    still_works(&b, 3);
}

#[test]
fn a_problem_too_large_for_the_device_is_a_typed_error() {
    let Some((b, _serial)) = gpu("a_problem_too_large_for_the_device_is_a_typed_error") else { return };
    let dt = DType::BF16;
    // Grouped GEMM whose output [R, N] would need 256 GiB: its output cannot be allocated.
    let (rows, k_dim, n_dim) = (1usize << 24, 64usize, 8192usize);
    let x = b.alloc(dt, &[rows, k_dim]).expect("2 GiB input");
    expect_oom(b.alloc(dt, &[rows, n_dim]), "alloc", Some(rows * n_dim * 2));
    drop(x);
    // An MoE layer whose inputs fit (a few hundred MiB) but whose intermediates
    // ([T·k, I] = 2^23 × 16384 bf16 = 256 GiB) do not.
    let (t, h, e, k, i) = (1usize << 20, 64usize, 8usize, 8usize, 16384usize);
    let mut route = RouteProblem::new(t, e, k, dt);
    route.hidden = Some(h);
    let p = MoeLayerProblem { route, inter: i, add: false };
    let x = b.alloc(dt, &[t, h]).unwrap();
    let gate = b.alloc(dt, &[h, e]).unwrap();
    let w_up = b.alloc(dt, &[e, h, 2 * i]).unwrap();
    let w_down = b.alloc(dt, &[e, i, h]).unwrap();
    let mut out = b.alloc(dt, &[t, h]).unwrap();
    let io = MoeLayerIo {
        x: &x,
        gate: &gate,
        bias: None,
        w_up: &w_up,
        w_down: &w_down,
        add: None,
        out: &mut out,
        routed: None,
    };
    let r = api::moe_layer(&b, &p, io).and_then(|()| b.sync());
    match r {
        Err(Error::OutOfMemory { .. }) => {}
        Err(e) if e.is_validation() => {}
        other => panic!("a 256 GiB MoE intermediate: expected OutOfMemory or a validation error, got {other:?}"),
    }
    drop((x, gate, w_up, w_down, out));
    b.sync().expect("sync after the refused problem");
    cleanup(&b);
    still_works(&b, 4);
}

/// Op call `n` of the cycle (each call uploads its inputs, allocates its outputs, runs one op,
/// downloads, compares with the reference and drops every buffer).
fn call<B: Backend>(b: &B, n: u64) {
    let ops = faults::OPS.len() as u64;
    let dt = if (n / ops) % 2 == 0 { DType::BF16 } else { DType::F32 };
    // NOTE: a few data seeds, so the data varies but every round hits the same kernels.
    let r = faults::run_op(b, dt, &faults::workload(n % 5), (n % ops) as usize);
    r.unwrap_or_else(|e| panic!("op call {n} ({dt}): {e}"));
}

#[test]
fn device_memory_returns_to_baseline_after_many_calls() {
    let Some((b, _serial)) = gpu("device_memory_returns_to_baseline_after_many_calls") else { return };
    let calls = env_num("MOEKIT_FAULT_CALLS", 10_000);
    let slack = env_num("MOEKIT_FAULT_SLACK_MB", 16) << 20;
    let start = std::time::Instant::now();
    b.sync().unwrap();
    let cold = used_bytes(&b);
    // NOTE: the first calls compile and load kernels (module code lives in device memory) and
    // fill cubecl's pools and the MoE layer's scratch; those stay for the client's life by
    // design (cubecl keeps freed slices in its pools for reuse). So the baseline is taken after
    // a warm-up round of 100 calls (every op in both dtypes many times) and the following
    // calls must not grow it: not the driver's count of used memory (the pools do not keep
    // growing) and not cubecl's bytes in live buffers (no buffer leaks).
    for n in 0..100 {
        call(&b, n);
    }
    b.sync().unwrap();
    let before = used_bytes(&b);
    let (live_before, reserved_before) = pool_bytes(&b);
    let mut peak = before;
    for n in 0..calls {
        call(&b, 100 + n);
        if n % 250 == 0 {
            peak = peak.max(used_bytes(&b));
        }
    }
    b.sync().unwrap();
    let after = used_bytes(&b);
    let (live_after, reserved_after) = pool_bytes(&b);
    peak = peak.max(after);
    let pass = after <= before + slack && live_after <= live_before + slack;
    let line = format!(
        "{{\"test\":\"faults-cubecl-cuda-memory\",\"backend\":\"cubecl-cuda\",\"calls\":{calls},\"warmup_calls\":100,\
         \"cold_used_bytes\":{cold},\"before_used_bytes\":{before},\"after_used_bytes\":{after},\
         \"peak_used_bytes\":{peak},\"growth_bytes\":{},\"live_before_bytes\":{live_before},\
         \"live_after_bytes\":{live_after},\"reserved_before_bytes\":{reserved_before},\
         \"reserved_after_bytes\":{reserved_after},\"slack_bytes\":{slack},\"seconds\":{:.2},\"pass\":{pass}}}",
        after as i64 - before as i64,
        start.elapsed().as_secs_f64(),
    );
    println!("{line}");
    eprintln!("{line}");
    if let Some(dir) = std::env::var_os("MOEKIT_RESULTS_DIR") {
        std::fs::create_dir_all(&dir).ok();
        std::fs::write(std::path::Path::new(&dir).join("faults-cubecl-cuda-memory.json"), format!("{line}\n"))
            .expect("write the result file");
    }
    assert!(pass, "device memory or cubecl's live bytes grew over {calls} calls: {line}");
}
