//! CUDA graphs (`Device::capture`): the MoE layer, decode-sized and larger, recorded once and
//! replayed gives exactly the eager layer's output; scratch the backend replaces after a
//! recording stays valid for the graph; work that waits on the host cannot be recorded, and the
//! backend works on after the refusal; backends without graphs refuse with a typed error.
//!
//! To see that a replay (not the eager run `capture` does first) wrote the output, the recorded
//! closure counts its calls: its first, eager call only poisons the output, its second call
//! (the recording) queues the op. A graph that ran nothing leaves the poison.

use moekit_cuda::CudaBackend;
use moekit_ops::{api, DType, Device, Error, HostTensor, MoeLayerIo, MoeLayerProblem, RouteIo, RouteProblem};
use moekit_testing::gen::{normal_tensor, rng};
use std::io::Write;

fn backend_or_skip(test: &str) -> Option<CudaBackend> {
    match CudaBackend::new(0) {
        Ok(b) => Some(b),
        Err(e) => {
            assert!(
                matches!(e, Error::NoDevice { .. } | Error::NotCompiled { .. }),
                "unexpected error without a GPU: {e:?}"
            );
            let _ = writeln!(std::io::stderr(), "SKIPPED {test}: {e}");
            None
        }
    }
}

/// A bf16 layer of `t` tokens, `e` experts, top-`k`, hidden `h`, intermediate `i`, and its
/// host inputs `[x, gate, w_up, w_down]` (normal, never zero).
fn layer(t: usize, h: usize, e: usize, k: usize, i: usize, seed: u64) -> (MoeLayerProblem, Vec<HostTensor>) {
    let dt = DType::BF16;
    let mut route = RouteProblem::new(t, e, k, dt);
    route.hidden = Some(h);
    route.renormalize = true;
    let p = MoeLayerProblem { route, inter: i, add: false };
    let mut r = rng(seed);
    let x = normal_tensor(&mut r, dt, &[t, h], 1.0);
    let gate = normal_tensor(&mut r, dt, &[h, e], 1.0 / (h as f32).sqrt());
    let w_up = normal_tensor(&mut r, dt, &[e, h, 2 * i], 1.0 / (h as f32).sqrt());
    let w_down = normal_tensor(&mut r, dt, &[e, i, h], 1.0 / (i as f32).sqrt());
    (p, vec![x, gate, w_up, w_down])
}

/// NaN rows (bf16 0x7FC0) to poison an output with.
fn poison(dt: DType, shape: &[usize]) -> HostTensor {
    let n: usize = shape.iter().product();
    HostTensor::from_f32(dt, shape, &vec![f32::NAN; n])
}

#[test]
fn moe_layer_replays_give_the_eager_output_at_decode_and_prefill_sizes() {
    let Some(gpu) = backend_or_skip("moe_layer_replays_give_the_eager_output_at_decode_and_prefill_sizes") else {
        return;
    };
    // (T, H, E, k, I): decode steps of 1 and 5 tokens over many experts, and a prefill.
    for (n, &(t, h, e, k, i)) in [(1, 256, 64, 6, 128), (5, 256, 64, 6, 128), (300, 512, 16, 4, 256)].iter().enumerate()
    {
        let (p, host) = layer(t, h, e, k, i, 40 + n as u64);
        let ins: Vec<_> = host.iter().map(|t| gpu.upload(t).unwrap()).collect();
        let [x, gate, w_up, w_down] = &ins[..] else { unreachable!() };
        let mut eager = gpu.alloc(DType::BF16, &[t, h]).unwrap();
        let io = MoeLayerIo { x, gate, bias: None, w_up, w_down, add: None, out: &mut eager, routed: None };
        api::moe_layer(&gpu, &p, io).unwrap();
        let want = gpu.download(&eager).unwrap();

        let nan = gpu.upload(&poison(DType::BF16, &[t, h])).unwrap();
        let mut out = gpu.alloc(DType::BF16, &[t, h]).unwrap();
        {
            let mut calls = 0;
            let graph = gpu
                .capture(&mut || {
                    calls += 1;
                    if calls == 1 {
                        return gpu.copy_rows(&nan, 0, &mut out, 0, t);
                    }
                    let io = MoeLayerIo { x, gate, bias: None, w_up, w_down, add: None, out: &mut out, routed: None };
                    api::moe_layer(&gpu, &p, io)
                })
                .unwrap();
            for _ in 0..3 {
                graph.replay().unwrap();
            }
        }
        let got = gpu.download(&out).unwrap();
        assert_eq!(got, want, "case {n}: T {t} H {h} E {e} k {k} I {i}");
    }
}

#[test]
fn scratch_replaced_after_a_recording_stays_valid_for_its_graph() {
    let Some(gpu) = backend_or_skip("scratch_replaced_after_a_recording_stays_valid_for_its_graph") else { return };
    let route = |t: usize, h: usize, e: usize| {
        let mut p = RouteProblem::new(t, e, 4, DType::BF16);
        p.hidden = Some(h);
        p.renormalize = true;
        let mut r = rng(t as u64);
        let x = gpu.upload(&normal_tensor(&mut r, DType::BF16, &[t, h], 1.0)).unwrap();
        let gate = gpu.upload(&normal_tensor(&mut r, DType::BF16, &[h, e], 0.1)).unwrap();
        (p, x, gate)
    };
    let outs = |gpu: &CudaBackend, t: usize, k: usize, e: usize| {
        let a = |dt, s: &[usize]| gpu.alloc(dt, s).unwrap();
        (a(DType::I32, &[t, k]), a(DType::F32, &[t, k]), a(DType::I32, &[e]), a(DType::F32, &[e]))
    };
    let (small, xs, gs) = route(64, 128, 32);
    let (mut ids, mut w, mut counts, mut load) = outs(&gpu, 64, 4, 32);
    let io = RouteIo {
        logits: &xs,
        gate: Some(&gs),
        bias: None,
        ids: &mut ids,
        weights: &mut w,
        counts: &mut counts,
        load: &mut load,
    };
    api::route(&gpu, &small, io).unwrap();
    let want = [gpu.download(&ids).unwrap(), gpu.download(&w).unwrap(), gpu.download(&counts).unwrap()];

    let (mut gids, mut gw, mut gcounts, mut gload) = outs(&gpu, 64, 4, 32);
    let bad_ids = gpu.upload(&HostTensor::from_f32(DType::I32, &[64, 4], &vec![-7.0; 256])).unwrap();
    {
        let mut calls = 0;
        let graph = gpu
            .capture(&mut || {
                calls += 1;
                if calls == 1 {
                    return gpu.copy_rows(&bad_ids, 0, &mut gids, 0, 64);
                }
                let io = RouteIo {
                    logits: &xs,
                    gate: Some(&gs),
                    bias: None,
                    ids: &mut gids,
                    weights: &mut gw,
                    counts: &mut gcounts,
                    load: &mut gload,
                };
                api::route(&gpu, &small, io)
            })
            .unwrap();
        // A much larger routing replaces the backend's logits scratch the graph reads.
        let (big, xb, gb) = route(4096, 256, 256);
        let (mut i2, mut w2, mut c2, mut l2) = outs(&gpu, 4096, 4, 256);
        let io = RouteIo {
            logits: &xb,
            gate: Some(&gb),
            bias: None,
            ids: &mut i2,
            weights: &mut w2,
            counts: &mut c2,
            load: &mut l2,
        };
        api::route(&gpu, &big, io).unwrap();
        gpu.sync().unwrap();
        graph.replay().unwrap();
    }
    let got = [gpu.download(&gids).unwrap(), gpu.download(&gw).unwrap(), gpu.download(&gcounts).unwrap()];
    assert_eq!(got, want);
}

#[test]
fn work_that_waits_on_the_host_is_refused_and_the_backend_works_on() {
    let Some(gpu) = backend_or_skip("work_that_waits_on_the_host_is_refused_and_the_backend_works_on") else { return };
    let (p, host) = layer(8, 64, 8, 2, 32, 9);
    let ins: Vec<_> = host.iter().map(|t| gpu.upload(t).unwrap()).collect();
    let [x, gate, w_up, w_down] = &ins[..] else { unreachable!() };
    let mut out = gpu.alloc(DType::BF16, &[8, 64]).unwrap();
    let r = gpu.capture(&mut || {
        let io = MoeLayerIo { x, gate, bias: None, w_up, w_down, add: None, out: &mut out, routed: None };
        api::moe_layer(&gpu, &p, io)?;
        gpu.sync()
    });
    let e = r.err().expect("a recording that synchronises must fail");
    assert!(matches!(e, Error::Device { .. } | Error::Unsupported { .. }), "{e:?}");
    // Eager work after the failed recording.
    let io = MoeLayerIo { x, gate, bias: None, w_up, w_down, add: None, out: &mut out, routed: None };
    api::moe_layer(&gpu, &p, io).unwrap();
    let got = gpu.download(&out).unwrap();
    assert!(got.to_f32_vec().iter().all(|v| v.is_finite()));
}

#[cfg(feature = "cuda")]
#[test]
fn the_legacy_default_stream_is_refused() {
    let Some(gpu) = backend_or_skip("the_legacy_default_stream_is_refused") else { return };
    let on_default = CudaBackend::from_stream(gpu.context().default_stream()).unwrap();
    let e = on_default.capture(&mut || Ok(())).err().expect("the legacy stream cannot record");
    assert!(matches!(e, Error::Unsupported { op: "capture", .. }), "{e:?}");
}

#[test]
fn backends_without_graphs_refuse_with_a_typed_error() {
    let reference = moekit_reference::ReferenceBackend;
    let e = reference.capture(&mut || Ok(())).err().expect("the reference records no graphs");
    assert!(matches!(e, Error::Unsupported { op: "capture", .. }), "{e:?}");
}
