//! Attention on cubecl's CUDA runtime at shapes the property suite never reaches (several
//! sequences of 200-700 tokens, GQA 4:1, head dims 64 and 128, f16 and bf16), where the
//! backend takes the cmma kernel, against the reference. Without the `cubecl-cuda` feature or
//! a GPU every test prints `SKIPPED` with the reason. `MOEKIT_CUBECL_ATTN=mma` runs the same
//! cases on the manual-MMA kernel (`ldmatrix` + `mma.sync`), `portable` on the portable kernel.

use moekit_cubecl::{CubeBackend, CudaRuntime};
use moekit_ops::{AttentionMask, AttentionProblem, DType, Window};
use moekit_testing::gen::{self, MaskPattern};
use moekit_testing::props::attention::{attention_matches_reference, AttentionCase};
use moekit_testing::suite::backend_or_skip;

/// Query lengths of the packed batch (several 64-row blocks, ragged tails).
const LENS_Q: [usize; 3] = [213, 517, 371];

/// Runs `make(d)` for head dims 64 and 128 in f16 and bf16 against the reference.
fn check(test: &str, make: impl Fn(usize) -> AttentionProblem) {
    let Some(b) = backend_or_skip(test, CubeBackend::<CudaRuntime>::cuda(0)) else { return };
    for d in [64, 128] {
        for dtype in [DType::F16, DType::BF16] {
            let problem = AttentionProblem { dtype, ..make(d) };
            let case = AttentionCase { problem, pattern: None, seed: 0x5eed ^ d as u64 };
            if let Err(e) = attention_matches_reference(&b, dtype, &case) {
                panic!("{test}: d {d} {dtype:?}: {e}");
            }
        }
    }
}

/// Four query heads per key/value head (8 and 2), lengths `lq` / `lk`, the given mask.
fn problem(d: usize, lq: &[usize], lk: &[usize], mask: AttentionMask, softcap: Option<f32>) -> AttentionProblem {
    AttentionProblem {
        cu_seqlens_q: gen::cumsum(lq),
        cu_seqlens_k: gen::cumsum(lk),
        heads_q: 8,
        heads_kv: 2,
        head_dim: d,
        scale: 1.0 / (d as f32).sqrt(),
        softcap,
        mask,
        dtype: DType::F32,
    }
}

/// Keys `lq + extra` per sequence (bottom-right aligned masks keep every row non-empty).
fn longer(extra: [usize; 3]) -> Vec<usize> {
    LENS_Q.iter().zip(extra).map(|(l, e)| l + e).collect()
}

#[test]
fn causal() {
    check("attention_cmma::causal", |d| problem(d, &LENS_Q, &LENS_Q, AttentionMask::causal(), None));
}

#[test]
fn causal_with_more_keys() {
    check("attention_cmma::causal_with_more_keys", |d| {
        problem(d, &LENS_Q, &longer([37, 0, 130]), AttentionMask::causal(), None)
    });
}

#[test]
fn no_mask_ragged_keys() {
    check("attention_cmma::no_mask_ragged_keys", |d| {
        problem(d, &LENS_Q, &[650, 201, 444], AttentionMask::none(), None)
    });
}

#[test]
fn window() {
    check("attention_cmma::window", |d| {
        let mask = AttentionMask { window: Some(Window { left: 150, right: 40 }), ..AttentionMask::none() };
        problem(d, &LENS_Q, &longer([0, 70, 5]), mask, None)
    });
}

#[test]
fn causal_window_softcap() {
    check("attention_cmma::causal_window_softcap", |d| {
        let mask = AttentionMask { causal: true, window: Some(Window { left: 90, right: 0 }), column_ranges: None };
        problem(d, &LENS_Q, &LENS_Q, mask, Some(15.0))
    });
}

#[test]
fn softcap_no_mask() {
    check("attention_cmma::softcap_no_mask", |d| problem(d, &LENS_Q, &LENS_Q, AttentionMask::none(), Some(5.0)));
}

#[test]
fn column_ranges() {
    for (i, pattern) in [MaskPattern::Document, MaskPattern::PrefixLm, MaskPattern::Blocks].into_iter().enumerate() {
        check(&format!("attention_cmma::column_ranges::{pattern:?}"), |d| {
            let (cu_q, cu_k) = (gen::cumsum(&LENS_Q), gen::cumsum(&LENS_Q));
            let mut rng = gen::rng(0xc0 + i as u64);
            let ranges = gen::column_ranges(&mut rng, pattern, &cu_q, &cu_k);
            let mask = AttentionMask { causal: i == 1, window: None, column_ranges: Some(ranges) };
            problem(d, &LENS_Q, &LENS_Q, mask, None)
        });
    }
}
