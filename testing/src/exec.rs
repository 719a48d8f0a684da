//! Running one op on any backend from host tensors: upload every buffer (outputs arrive
//! poisoned, see [`crate::gen::poison`]), call the checked entry point in
//! [`moekit_ops::api`], download the outputs.
//!
//! Each `*Bufs` bundle holds every buffer of one call as host tensors, so the same bundle runs
//! on the oracle and on the backend under test, and the invalid-input property can corrupt
//! any one of them. Each runner returns the bundle with its outputs replaced by what the
//! backend wrote.

use crate::gen::poison;
use moekit_ops::{
    api, AttentionIo, AttentionProblem, Backend, BiasUpdateProblem, CombineIo, CombineProblem, DType, EmbeddingProblem,
    GemmProblem, GroupedGemmIo, GroupedGemmProblem, HostTensor, MoeLayerIo, MoeLayerProblem, PermuteIo, PermuteProblem,
    Result, RmsNormIo, RmsNormProblem, RotaryIo, RotaryProblem, RouteIo, RouteProblem, SwigluProblem,
};

fn up_opt<B: Backend>(b: &B, t: &Option<HostTensor>) -> Result<Option<B::Buffer>> {
    t.as_ref().map(|t| b.upload(t)).transpose()
}

/// Buffers of [`api::route`].
#[derive(Clone, Debug)]
pub struct RouteBufs {
    /// `[T, E]` logits or `[T, H]` hidden.
    pub logits: HostTensor,
    /// `[H, E]` with the fused gate.
    pub gate: Option<HostTensor>,
    /// `[E] f32`.
    pub bias: Option<HostTensor>,
    /// Out `[T, k] i32`.
    pub ids: HostTensor,
    /// Out `[T, k] f32`.
    pub weights: HostTensor,
    /// Out `[E] i32`.
    pub counts: HostTensor,
    /// Out `[E] f32`.
    pub load: HostTensor,
}

impl RouteBufs {
    /// Inputs plus poisoned outputs shaped for `p`.
    pub fn new(p: &RouteProblem, logits: HostTensor, gate: Option<HostTensor>, bias: Option<HostTensor>) -> Self {
        let (t, e, k) = (p.tokens, p.experts, p.k);
        RouteBufs {
            logits,
            gate,
            bias,
            ids: poison(DType::I32, &[t, k]),
            weights: poison(DType::F32, &[t, k]),
            counts: poison(DType::I32, &[e]),
            load: poison(DType::F32, &[e]),
        }
    }
}

/// Runs [`api::route`].
///
/// # Errors
/// The op's, upload's or download's error.
pub fn route<B: Backend>(b: &B, p: &RouteProblem, x: &RouteBufs) -> Result<RouteBufs> {
    let logits = b.upload(&x.logits)?;
    let gate = up_opt(b, &x.gate)?;
    let bias = up_opt(b, &x.bias)?;
    let (mut ids, mut weights) = (b.upload(&x.ids)?, b.upload(&x.weights)?);
    let (mut counts, mut load) = (b.upload(&x.counts)?, b.upload(&x.load)?);
    let io = RouteIo {
        logits: &logits,
        gate: gate.as_ref(),
        bias: bias.as_ref(),
        ids: &mut ids,
        weights: &mut weights,
        counts: &mut counts,
        load: &mut load,
    };
    api::route(b, p, io)?;
    Ok(RouteBufs {
        ids: b.download(&ids)?,
        weights: b.download(&weights)?,
        counts: b.download(&counts)?,
        load: b.download(&load)?,
        ..x.clone()
    })
}

/// Runs [`api::update_bias`]: returns the updated `bias [E] f32`.
///
/// # Errors
/// The op's, upload's or download's error.
pub fn update_bias<B: Backend>(
    b: &B,
    p: &BiasUpdateProblem,
    bias: &HostTensor,
    counts: &HostTensor,
) -> Result<HostTensor> {
    let mut bias_d = b.upload(bias)?;
    let counts_d = b.upload(counts)?;
    api::update_bias(b, p, &mut bias_d, &counts_d)?;
    b.download(&bias_d)
}

/// Buffers of [`api::permute`].
#[derive(Clone, Debug)]
pub struct PermuteBufs {
    /// `[T, H]`.
    pub hidden: HostTensor,
    /// `[T, k] i32`.
    pub ids: HostTensor,
    /// Out `[R, H]`.
    pub permuted: HostTensor,
    /// Out `[E+1] i32`.
    pub offsets: HostTensor,
    /// Out `[R] i32`.
    pub row_to_token: HostTensor,
    /// Out `[T, k] i32`.
    pub token_slot_to_row: HostTensor,
}

impl PermuteBufs {
    /// Inputs plus poisoned outputs shaped for `p`.
    pub fn new(p: &PermuteProblem, hidden: HostTensor, ids: HostTensor) -> Self {
        let r = p.max_rows();
        PermuteBufs {
            hidden,
            ids,
            permuted: poison(p.dtype, &[r, p.hidden]),
            offsets: poison(DType::I32, &[p.experts + 1]),
            row_to_token: poison(DType::I32, &[r]),
            token_slot_to_row: poison(DType::I32, &[p.tokens, p.k]),
        }
    }
}

/// Runs [`api::permute`].
///
/// # Errors
/// The op's, upload's or download's error.
pub fn permute<B: Backend>(b: &B, p: &PermuteProblem, x: &PermuteBufs) -> Result<PermuteBufs> {
    let (hidden, ids) = (b.upload(&x.hidden)?, b.upload(&x.ids)?);
    let (mut permuted, mut offsets) = (b.upload(&x.permuted)?, b.upload(&x.offsets)?);
    let (mut rtt, mut tsr) = (b.upload(&x.row_to_token)?, b.upload(&x.token_slot_to_row)?);
    let io = PermuteIo {
        hidden: &hidden,
        ids: &ids,
        permuted: &mut permuted,
        offsets: &mut offsets,
        row_to_token: &mut rtt,
        token_slot_to_row: &mut tsr,
    };
    api::permute(b, p, io)?;
    Ok(PermuteBufs {
        permuted: b.download(&permuted)?,
        offsets: b.download(&offsets)?,
        row_to_token: b.download(&rtt)?,
        token_slot_to_row: b.download(&tsr)?,
        ..x.clone()
    })
}

/// Buffers of [`api::unpermute_combine`].
#[derive(Clone, Debug)]
pub struct CombineBufs {
    /// `[R, H]`.
    pub y: HostTensor,
    /// `[T, k] f32`.
    pub weights: HostTensor,
    /// `[T, k] i32`.
    pub token_slot_to_row: HostTensor,
    /// `[T, H]`.
    pub add: Option<HostTensor>,
    /// Out `[T, H]`.
    pub out: HostTensor,
}

/// Runs [`api::unpermute_combine`]; returns `out`.
///
/// # Errors
/// The op's, upload's or download's error.
pub fn combine<B: Backend>(b: &B, p: &CombineProblem, x: &CombineBufs) -> Result<HostTensor> {
    let (y, w, tsr) = (b.upload(&x.y)?, b.upload(&x.weights)?, b.upload(&x.token_slot_to_row)?);
    let add = up_opt(b, &x.add)?;
    let mut out = b.upload(&x.out)?;
    let io = CombineIo { y: &y, weights: &w, token_slot_to_row: &tsr, add: add.as_ref(), out: &mut out };
    api::unpermute_combine(b, p, io)?;
    b.download(&out)
}

/// Buffers of [`api::grouped_gemm`].
#[derive(Clone, Debug)]
pub struct GroupedGemmBufs {
    /// `[R, K]`, `[T, K]` or `[E, C, K]`.
    pub x: HostTensor,
    /// `[E, K, N]` or `[E, N, K]`.
    pub w: HostTensor,
    /// `offsets [E+1] i32` or `counts [E] i32`.
    pub group: HostTensor,
    /// `[R] i32`.
    pub row_to_token: Option<HostTensor>,
    /// `[R] f32` or `[E, C] f32`.
    pub row_scale: Option<HostTensor>,
    /// Out.
    pub y: HostTensor,
}

/// Runs [`api::grouped_gemm`]; returns `y`.
///
/// # Errors
/// The op's, upload's or download's error.
pub fn grouped_gemm<B: Backend>(b: &B, p: &GroupedGemmProblem, x: &GroupedGemmBufs) -> Result<HostTensor> {
    let (xd, w, group) = (b.upload(&x.x)?, b.upload(&x.w)?, b.upload(&x.group)?);
    let (rtt, scale) = (up_opt(b, &x.row_to_token)?, up_opt(b, &x.row_scale)?);
    let mut y = b.upload(&x.y)?;
    let io = GroupedGemmIo {
        x: &xd,
        w: &w,
        group: &group,
        row_to_token: rtt.as_ref(),
        row_scale: scale.as_ref(),
        y: &mut y,
    };
    api::grouped_gemm(b, p, io)?;
    b.download(&y)
}

/// Buffers of [`api::attention`].
#[derive(Clone, Debug)]
pub struct AttentionBufs {
    /// `[Tq, Hq, D]`.
    pub q: HostTensor,
    /// `[Tk, Hkv, D]`.
    pub k: HostTensor,
    /// `[Tk, Hkv, D]`.
    pub v: HostTensor,
    /// Out `[Tq, Hq, D]`.
    pub o: HostTensor,
    /// Out `[Hq, Tq] f32`.
    pub lse: HostTensor,
}

/// Runs [`api::attention`]; returns `(o, lse)`.
///
/// # Errors
/// The op's, upload's or download's error.
pub fn attention<B: Backend>(b: &B, p: &AttentionProblem, x: &AttentionBufs) -> Result<(HostTensor, HostTensor)> {
    let (q, k, v) = (b.upload(&x.q)?, b.upload(&x.k)?, b.upload(&x.v)?);
    let (mut o, mut lse) = (b.upload(&x.o)?, b.upload(&x.lse)?);
    api::attention(b, p, AttentionIo { q: &q, k: &k, v: &v, o: &mut o, lse: &mut lse })?;
    Ok((b.download(&o)?, b.download(&lse)?))
}

/// Buffers of [`api::rms_norm`].
#[derive(Clone, Debug)]
pub struct RmsNormBufs {
    /// `[rows, H]`.
    pub x: HostTensor,
    /// `[H]`.
    pub weight: HostTensor,
    /// `[rows, H]`.
    pub residual: Option<HostTensor>,
    /// Out `[rows, H]`.
    pub y: HostTensor,
    /// Out `[rows, H]`.
    pub residual_out: Option<HostTensor>,
}

/// Runs [`api::rms_norm`]; returns `(y, residual_out)`.
///
/// # Errors
/// The op's, upload's or download's error.
pub fn rms_norm<B: Backend>(b: &B, p: &RmsNormProblem, x: &RmsNormBufs) -> Result<(HostTensor, Option<HostTensor>)> {
    let (xd, w) = (b.upload(&x.x)?, b.upload(&x.weight)?);
    let res = up_opt(b, &x.residual)?;
    let mut y = b.upload(&x.y)?;
    let mut res_out = up_opt(b, &x.residual_out)?;
    let io = RmsNormIo { x: &xd, weight: &w, residual: res.as_ref(), y: &mut y, residual_out: res_out.as_mut() };
    api::rms_norm(b, p, io)?;
    let res_out = res_out.as_ref().map(|r| b.download(r)).transpose()?;
    Ok((b.download(&y)?, res_out))
}

/// Runs [`api::rotary`] on `x [T, heads, D]` and positions; `out` is the poisoned output.
///
/// # Errors
/// The op's, upload's or download's error.
pub fn rotary<B: Backend>(
    b: &B,
    p: &RotaryProblem,
    x: &HostTensor,
    pos: &HostTensor,
    out: &HostTensor,
) -> Result<HostTensor> {
    let (xd, posd, mut o) = (b.upload(x)?, b.upload(pos)?, b.upload(out)?);
    api::rotary(b, p, RotaryIo { x: &xd, positions: &posd, out: &mut o })?;
    b.download(&o)
}

/// Runs [`api::swiglu`] on `x [rows, 2I]` into the poisoned `y`.
///
/// # Errors
/// The op's, upload's or download's error.
pub fn swiglu<B: Backend>(b: &B, p: &SwigluProblem, x: &HostTensor, y: &HostTensor) -> Result<HostTensor> {
    let (xd, mut yd) = (b.upload(x)?, b.upload(y)?);
    api::swiglu(b, p, &xd, &mut yd)?;
    b.download(&yd)
}

/// Runs [`api::embedding`].
///
/// # Errors
/// The op's, upload's or download's error.
pub fn embedding<B: Backend>(
    b: &B,
    p: &EmbeddingProblem,
    table: &HostTensor,
    ids: &HostTensor,
    out: &HostTensor,
) -> Result<HostTensor> {
    let (t, i, mut o) = (b.upload(table)?, b.upload(ids)?, b.upload(out)?);
    api::embedding(b, p, &t, &i, &mut o)?;
    b.download(&o)
}

/// Runs [`api::gemm`].
///
/// # Errors
/// The op's, upload's or download's error.
pub fn gemm<B: Backend>(b: &B, p: &GemmProblem, a: &HostTensor, bm: &HostTensor, c: &HostTensor) -> Result<HostTensor> {
    let (ad, bd, mut cd) = (b.upload(a)?, b.upload(bm)?, b.upload(c)?);
    api::gemm(b, p, &ad, &bd, &mut cd)?;
    b.download(&cd)
}

/// Buffers of [`api::moe_layer`].
#[derive(Clone, Debug)]
pub struct MoeBufs {
    /// `[T, H]`.
    pub x: HostTensor,
    /// `[H, E]`.
    pub gate: HostTensor,
    /// `[E] f32`.
    pub bias: Option<HostTensor>,
    /// `[E, H, 2I]`.
    pub w_up: HostTensor,
    /// `[E, I, H]`.
    pub w_down: HostTensor,
    /// `[T, H]`.
    pub add: Option<HostTensor>,
    /// Out `[T, H]`.
    pub out: HostTensor,
}

/// Runs [`api::moe_layer`] without the `routed` output; returns `out`.
///
/// # Errors
/// The op's, upload's or download's error.
pub fn moe_layer<B: Backend>(b: &B, p: &MoeLayerProblem, x: &MoeBufs) -> Result<HostTensor> {
    // Without the `routed` output: every buffer then comes from `x`, none is sized from `p`,
    // so a problem with absurd sizes (the invalid-input property's) allocates nothing big.
    run_moe_layer(b, p, x, None)
}

/// Runs [`api::moe_layer`] with its `routed` output; returns `out` and the routed experts
/// `[T, k]`.
///
/// # Errors
/// The op's, upload's or download's error.
pub fn moe_layer_routed<B: Backend>(b: &B, p: &MoeLayerProblem, x: &MoeBufs) -> Result<(HostTensor, HostTensor)> {
    let mut routed =
        b.upload(&HostTensor::from_i32(&[p.route.tokens, p.route.k], &vec![-7; p.route.tokens * p.route.k]))?;
    let out = run_moe_layer(b, p, x, Some(&mut routed))?;
    Ok((out, b.download(&routed)?))
}

/// Uploads `x`, runs [`api::moe_layer`] (writing `routed` when given) and downloads `out`.
fn run_moe_layer<B: Backend>(
    b: &B,
    p: &MoeLayerProblem,
    x: &MoeBufs,
    routed: Option<&mut B::Buffer>,
) -> Result<HostTensor> {
    let (xd, gate) = (b.upload(&x.x)?, b.upload(&x.gate)?);
    let (bias, add) = (up_opt(b, &x.bias)?, up_opt(b, &x.add)?);
    let (w_up, w_down) = (b.upload(&x.w_up)?, b.upload(&x.w_down)?);
    let mut out = b.upload(&x.out)?;
    let io = MoeLayerIo {
        x: &xd,
        gate: &gate,
        bias: bias.as_ref(),
        w_up: &w_up,
        w_down: &w_down,
        add: add.as_ref(),
        out: &mut out,
        routed,
    };
    api::moe_layer(b, p, io)?;
    b.download(&out)
}
