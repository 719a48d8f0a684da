//! `ReferenceBackend` through the checked entry points of `moekit_ops::api`.

use crate::{assert_close, f32s};
use moekit_ops::{
    api, DType, Device, HostTensor, MoeLayerIo, MoeLayerProblem, RmsNormIo, RmsNormProblem, RouteIo, RouteProblem,
};
use moekit_reference::ReferenceBackend;

#[test]
fn device_basics() {
    let b = ReferenceBackend;
    assert_eq!(b.name(), "reference");
    assert_eq!(b.float_dtypes(), &[DType::F32, DType::F16, DType::BF16]);
    assert_eq!(b.alloc(DType::BF16, &[2, 3]).unwrap(), HostTensor::zeros(DType::BF16, &[2, 3]));
    let t = f32s(&[2], &[1.0, 2.0]);
    assert_eq!(b.download(&b.upload(&t).unwrap()).unwrap(), t);
    b.sync().unwrap();
}

#[test]
fn route_writes_every_output() {
    let b = ReferenceBackend;
    let p = RouteProblem::new(1, 3, 2, DType::F32);
    let logits = f32s(&[1, 3], &[0.0, 2f64.ln(), 5f64.ln()]);
    let mut ids = b.alloc(DType::I32, &[1, 2]).unwrap();
    let mut weights = b.alloc(DType::F32, &[1, 2]).unwrap();
    let mut counts = b.alloc(DType::I32, &[3]).unwrap();
    let mut load = b.alloc(DType::F32, &[3]).unwrap();
    let io = RouteIo {
        logits: &logits,
        gate: None,
        bias: None,
        ids: &mut ids,
        weights: &mut weights,
        counts: &mut counts,
        load: &mut load,
    };
    api::route(&b, &p, io).unwrap();
    assert_eq!(ids.as_i32().unwrap(), &[2, 1]);
    assert_close(&weights, &[0.625, 0.25], 1e-6);
    assert_eq!(counts.as_i32().unwrap(), &[0, 1, 1]);
    assert_close(&load, &[0.125, 0.25, 0.625], 1e-6);
}

#[test]
fn rms_norm_writes_residual_out() {
    let b = ReferenceBackend;
    let p = RmsNormProblem { rows: 1, hidden: 2, eps: 1e-6, residual: true, dtype: DType::F32 };
    let (x, r, w) = (f32s(&[1, 2], &[1.0, 2.0]), f32s(&[1, 2], &[2.0, 2.0]), f32s(&[2], &[2.0, 0.5]));
    let (mut y, mut ro) = (b.alloc(DType::F32, &[1, 2]).unwrap(), b.alloc(DType::F32, &[1, 2]).unwrap());
    let io = RmsNormIo { x: &x, weight: &w, residual: Some(&r), y: &mut y, residual_out: Some(&mut ro) };
    api::rms_norm(&b, &p, io).unwrap();
    assert_close(&y, &[1.6970563, 0.5656854], 1e-6);
    assert_close(&ro, &[3.0, 4.0], 0.0);
}

#[test]
fn moe_layer_default_composition() {
    // One expert, k = 1: the routing weight is 1. x = [1, 2]; w_up = identity → acc = [1, 2]
    // (gate 1, up 2) → act = silu(1)·2 = 1.4621171573; w_down = [[1, -1]] → out = [a, -a].
    let b = ReferenceBackend;
    let mut route = RouteProblem::new(1, 1, 1, DType::F32);
    route.hidden = Some(2);
    let p = MoeLayerProblem { route, inter: 1, add: false };
    let x = f32s(&[1, 2], &[1.0, 2.0]);
    let gate = f32s(&[2, 1], &[0.3, -0.7]);
    let w_up = f32s(&[1, 2, 2], &[1.0, 0.0, 0.0, 1.0]);
    let w_down = f32s(&[1, 1, 2], &[1.0, -1.0]);
    let mut out = b.alloc(DType::F32, &[1, 2]).unwrap();
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
    api::moe_layer(&b, &p, io).unwrap();
    assert_close(&out, &[1.4621171573, -1.4621171573], 1e-6);
}
