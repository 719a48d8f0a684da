//! Grouped GEMM rate against one dense GEMM of the same FLOPs (both through `CpuBackend`).
//!
//! `cargo run --release -p moekit-cpu --example grouped_gemm_rate`

use moekit_cpu::CpuBackend;
use moekit_ops::{api, DType, GemmProblem, GroupedGemmIo, GroupedGemmProblem, HostTensor};
use std::time::Instant;

fn filled(dtype: DType, shape: &[usize]) -> HostTensor {
    let n: usize = shape.iter().product();
    let v: Vec<f32> = (0..n).map(|i| ((i * 7919 % 1009) as f32 / 1009.0) - 0.5).collect();
    HostTensor::from_f32(dtype, shape, &v)
}

/// Best time over `reps` runs, in seconds.
fn best(reps: usize, mut f: impl FnMut()) -> f64 {
    f();
    (0..reps)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed().as_secs_f64()
        })
        .fold(f64::INFINITY, f64::min)
}

fn run(dtype: DType, sizes: &[usize], k: usize, n: usize) {
    let cpu = CpuBackend::new();
    let rows: usize = sizes.iter().sum();
    let e = sizes.len();
    let flops = 2.0 * (rows * k * n) as f64;

    let gp = GemmProblem { m: rows, k, n, b_transposed: false, dtype };
    let (a, b) = (filled(dtype, &[rows, k]), filled(dtype, &[k, n]));
    let mut c = HostTensor::zeros(dtype, &[rows, n]);
    let dense = best(5, || api::gemm(&cpu, &gp, &a, &b, &mut c).unwrap());

    let p = GroupedGemmProblem::contiguous(rows, e, k, n, dtype);
    let x = filled(dtype, &[rows, k]);
    let w = filled(dtype, &[e, k, n]);
    let mut offsets = vec![0i32];
    sizes.iter().for_each(|&s| offsets.push(offsets.last().unwrap() + s as i32));
    let group = HostTensor::from_i32(&[e + 1], &offsets);
    let mut y = HostTensor::zeros(dtype, &[rows, n]);
    let grouped = best(5, || {
        let io = GroupedGemmIo { x: &x, w: &w, group: &group, row_to_token: None, row_scale: None, y: &mut y };
        api::grouped_gemm(&cpu, &p, io).unwrap()
    });
    println!(
        "{dtype:>4} E={e:<3} rows={rows} K={k} N={n}: dense {:7.1} GFLOP/s ({:6.2} ms), grouped {:7.1} GFLOP/s \
         ({:6.2} ms) = {:5.1}% of dense",
        flops / dense / 1e9,
        dense * 1e3,
        flops / grouped / 1e9,
        grouped * 1e3,
        100.0 * dense / grouped
    );
}

/// One dense GEMM `m x k x n` repeated on the same (cache-warm) operands.
fn dense_only(dtype: DType, m: usize, k: usize, n: usize) {
    let cpu = CpuBackend::new();
    let gp = GemmProblem { m, k, n, b_transposed: false, dtype };
    let (a, b) = (filled(dtype, &[m, k]), filled(dtype, &[k, n]));
    let mut c = HostTensor::zeros(dtype, &[m, n]);
    let t = best(20, || api::gemm(&cpu, &gp, &a, &b, &mut c).unwrap());
    println!("{dtype:>4} dense {m}x{k}x{n}: {:7.1} GFLOP/s", 2.0 * (m * k * n) as f64 / t / 1e9);
}

fn main() {
    for m in [8, 32, 64, 128, 256] {
        dense_only(DType::F32, m, 512, 1024);
    }
    println!("rayon threads: {}", rayon::current_num_threads());
    let uneven = [512, 384, 320, 256, 224, 160, 128, 64];
    let many: Vec<usize> = (0..64).map(|i| [8, 16, 24, 40, 56][i % 5]).collect();
    for dtype in [DType::F32, DType::BF16, DType::F16] {
        run(dtype, &uneven, 512, 1024);
    }
    run(DType::F32, &[1600, 200, 100, 100, 48], 512, 1024);
    run(DType::F32, &many, 512, 1024);
    run(DType::BF16, &many, 512, 1024);
}
