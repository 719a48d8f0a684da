//! Routing by hand.

use crate::{assert_close, f32s};
use moekit_ops::{BiasUpdateProblem, DType, GroupLimit, HostTensor, RouteProblem, ScoreFn};
use moekit_reference::{route, update_bias, RouteOut};

fn run(p: &RouteProblem, logits: &[f64], bias: Option<&[f64]>) -> RouteOut {
    let v = p.validate().unwrap();
    let logits = f32s(&[p.tokens, p.experts], logits);
    let bias = bias.map(|b| f32s(&[p.experts], b));
    route(&v, &logits, None, bias.as_ref()).unwrap()
}

#[test]
fn equal_logits_go_to_the_lower_index_first() {
    let p = RouteProblem::new(2, 4, 2, DType::F32);
    let out = run(&p, &[0.0; 8], None);
    assert_eq!(out.ids.as_i32().unwrap(), &[0, 1, 0, 1]);
    assert_close(&out.weights, &[0.25; 4], 1e-7);
    assert_eq!(out.counts.as_i32().unwrap(), &[2, 2, 0, 0]);
    assert_close(&out.load, &[0.5; 4], 1e-7);
}

#[test]
fn softmax_weights_of_three_experts() {
    // exp(logits) = 1, 2, 5; sum 8 → scores 1/8, 2/8, 5/8.
    let p = RouteProblem::new(1, 3, 2, DType::F32);
    let out = run(&p, &[0.0, 2f64.ln(), 5f64.ln()], None);
    assert_eq!(out.ids.as_i32().unwrap(), &[2, 1]);
    assert_close(&out.weights, &[0.625, 0.25], 1e-6);
    assert_eq!(out.counts.as_i32().unwrap(), &[0, 1, 1]);
    assert_close(&out.load, &[0.125, 0.25, 0.625], 1e-6);
}

#[test]
fn expert_mask_removes_mass_and_choice() {
    // Expert 2 masked: softmax over exp = 1, 2 → 1/3, 2/3; expert 2 scores 0.
    let mut p = RouteProblem::new(1, 3, 1, DType::F32);
    p.expert_mask = Some(vec![true, true, false]);
    let out = run(&p, &[0.0, 2f64.ln(), 5f64.ln()], None);
    assert_eq!(out.ids.as_i32().unwrap(), &[1]);
    assert_close(&out.weights, &[2.0 / 3.0], 1e-6);
    assert_eq!(out.counts.as_i32().unwrap(), &[0, 1, 0]);
    assert_close(&out.load, &[1.0 / 3.0, 2.0 / 3.0, 0.0], 1e-6);
}

#[test]
fn group_limited_routing_keeps_the_best_group() {
    // Groups {0,1}, {2,3}. Expert 0 is the single best, but group 1 sums to more:
    // e^3 + e^-10 ≈ 20.09 < 2·e^2.5 ≈ 24.36, so the top-2 come from group 1 (tie → 2 first).
    let mut p = RouteProblem::new(1, 4, 2, DType::F32);
    p.groups = Some(GroupLimit { n_group: 2, topk_group: 1 });
    let logits = [3.0, -10.0, 2.5, 2.5];
    let out = run(&p, &logits, None);
    assert_eq!(out.ids.as_i32().unwrap(), &[2, 3]);
    let z = 3f64.exp() + (-10f64).exp() + 2.0 * 2.5f64.exp();
    assert_close(&out.weights, &[2.5f64.exp() / z, 2.5f64.exp() / z], 1e-6);

    // Without the group limit the plain top-2 is experts 0 and 2.
    p.groups = None;
    assert_eq!(run(&p, &logits, None).ids.as_i32().unwrap(), &[0, 2]);
}

#[test]
fn group_with_one_allowed_expert_scores_its_best_only() {
    // Expert 1 masked: group 0 scores s0 alone (e^3 ≈ 20.09) and beats group 1
    // (2·e^1.5 ≈ 8.96); had it scored -inf, expert 2 would win.
    let mut p = RouteProblem::new(1, 4, 1, DType::F32);
    p.groups = Some(GroupLimit { n_group: 2, topk_group: 1 });
    p.expert_mask = Some(vec![true, false, true, true]);
    let out = run(&p, &[3.0, 100.0, 1.5, 1.5], None);
    assert_eq!(out.ids.as_i32().unwrap(), &[0]);
    let z = 3f64.exp() + 2.0 * 1.5f64.exp();
    assert_close(&out.weights, &[3f64.exp() / z], 1e-6);
    assert_close(&out.load, &[3f64.exp() / z, 0.0, 1.5f64.exp() / z, 1.5f64.exp() / z], 1e-6);
}

#[test]
fn renormalise_then_scale() {
    // Chosen scores 5/8 and 2/8 → 5/7 and 2/7, times 2.5.
    let mut p = RouteProblem::new(1, 3, 2, DType::F32);
    p.renormalize = true;
    p.scaling = 2.5;
    let out = run(&p, &[0.0, 2f64.ln(), 5f64.ln()], None);
    assert_eq!(out.ids.as_i32().unwrap(), &[2, 1]);
    assert_close(&out.weights, &[2.5 * 5.0 / 7.0, 2.5 * 2.0 / 7.0], 1e-6);
}

#[test]
fn bias_steers_selection_but_not_weights() {
    // Sigmoid scores σ(1) = 0.7310585786, σ(0) = 0.5, 0.5; bias [0, 2, 0] → selection
    // 0.731, 2.5, 0.5 → experts 1 then 0, weighted by their unbiased scores.
    let mut p = RouteProblem::new(1, 3, 2, DType::F32);
    p.score = ScoreFn::Sigmoid;
    p.use_bias = true;
    let out = run(&p, &[1.0, 0.0, 0.0], Some(&[0.0, 2.0, 0.0]));
    assert_eq!(out.ids.as_i32().unwrap(), &[1, 0]);
    assert_close(&out.weights, &[0.5, 0.7310585786], 1e-7);
    assert_close(&out.load, &[0.7310585786, 0.5, 0.5], 1e-7);
}

#[test]
fn fused_gate_forms_the_logits() {
    // hidden [1, 2] = [1, 2]; gate [2, 3] = [[1, 0, 0.5], [0, 1, 0.25]] → logits [1, 2, 1]:
    // expert 1, then the tie 0/2 goes to 0.
    let mut p = RouteProblem::new(1, 3, 2, DType::F32);
    p.hidden = Some(2);
    let v = p.validate().unwrap();
    let hidden = f32s(&[1, 2], &[1.0, 2.0]);
    let gate = f32s(&[2, 3], &[1.0, 0.0, 0.5, 0.0, 1.0, 0.25]);
    let out = route(&v, &hidden, Some(&gate), None).unwrap();
    assert_eq!(out.ids.as_i32().unwrap(), &[1, 0]);
    let z = 2.0 * 1f64.exp() + 2f64.exp();
    assert_close(&out.weights, &[2f64.exp() / z, 1f64.exp() / z], 1e-6);
}

#[test]
fn update_bias_moves_towards_the_mean() {
    // counts [4, 2, 0, 2], mean 2 → signs -1, 0, +1, 0.
    let p = BiasUpdateProblem { experts: 4, speed: 0.5, expert_mask: None }.validate().unwrap();
    let bias = f32s(&[4], &[0.0, 0.0, 0.0, 0.0]);
    let counts = HostTensor::from_i32(&[4], &[4, 2, 0, 2]);
    assert_close(&update_bias(&p, &bias, &counts).unwrap(), &[-0.5, 0.0, 0.5, 0.0], 0.0);

    // Expert 3 masked: its count is left out of the mean (still 2) and its bias kept.
    let p = BiasUpdateProblem { experts: 4, speed: 0.5, expert_mask: Some(vec![true, true, true, false]) };
    let bias = f32s(&[4], &[1.0, 1.0, 1.0, 1.0]);
    let counts = HostTensor::from_i32(&[4], &[4, 2, 0, 9]);
    assert_close(&update_bias(&p.validate().unwrap(), &bias, &counts).unwrap(), &[0.5, 1.0, 1.5, 1.0], 0.0);
}
