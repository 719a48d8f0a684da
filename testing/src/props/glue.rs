//! Model glue against the reference: RMSNorm (± residual), rotary 1-D and 3-D, SwiGLU,
//! embedding gather, dense GEMM, and the metadata-only reshape of a buffer.

use crate::compare::{close, close_floor, ctx, dot_scale, exact, Check};
use crate::exec::{self, RmsNormBufs};
use crate::gen;
use crate::strategies::{dim, seed, tokens};
use moekit_ops::tolerance::Tolerance;
use moekit_ops::{
    Backend, DType, EmbeddingProblem, Error, GemmProblem, HostTensor, RmsNormProblem, RotaryPositions, RotaryProblem,
    SwigluProblem, TensorMeta,
};
use moekit_reference::ReferenceBackend;
use proptest::prelude::*;
use rand::Rng;

/// A glue case: one problem (its dtype is replaced by the test's) and a data seed.
#[derive(Clone, Debug)]
pub struct GlueCase<P> {
    /// The problem.
    pub problem: P,
    /// Data seed.
    pub seed: u64,
}

/// RMSNorm cases: rows 0..=40, H up to 200, eps 1e-6..1e-2, ± residual.
pub fn rms_norm_cases() -> impl Strategy<Value = GlueCase<RmsNormProblem>> {
    (tokens(40), dim(200), prop_oneof![Just(1e-6f32), Just(1e-5f32), 1e-6f32..1e-2], any::<bool>(), seed()).prop_map(
        |(rows, hidden, eps, residual, seed)| GlueCase {
            problem: RmsNormProblem { rows, hidden, eps, residual, dtype: DType::F32 },
            seed,
        },
    )
}

/// RMSNorm on `b` equals the reference (`y` over an `H`-term reduction; the residual sum is
/// one rounding).
///
/// # Errors
/// A mismatch report.
pub fn rms_norm_matches_reference<B: Backend>(b: &B, dtype: DType, c: &GlueCase<RmsNormProblem>) -> Check {
    let p = RmsNormProblem { dtype, ..c.problem.clone() };
    let mut rng = gen::rng(c.seed);
    let s = [p.rows, p.hidden];
    let x = RmsNormBufs {
        x: gen::normal_tensor(&mut rng, dtype, &s, 2.0),
        weight: gen::tensor(dtype, &[p.hidden], &gen::uniform(&mut rng, p.hidden, 0.5, 1.5)),
        residual: p.residual.then(|| gen::normal_tensor(&mut rng, dtype, &s, 1.0)),
        y: gen::poison(dtype, &s),
        residual_out: p.residual.then(|| gen::poison(dtype, &s)),
    };
    let (want_y, want_r) = exec::rms_norm(&ReferenceBackend, &p, &x).map_err(ctx("reference rms_norm"))?;
    let (got_y, got_r) = exec::rms_norm(b, &p, &x).map_err(ctx("rms_norm"))?;
    close("y", &want_y, &got_y, Tolerance::for_dtype(dtype, p.hidden), dtype)?;
    match (want_r, got_r) {
        (Some(w), Some(g)) => close("residual_out", &w, &g, Tolerance::for_dtype(dtype, 1), dtype),
        (None, None) => Ok(()),
        _ => Err("residual_out present on one side only".into()),
    }
}

/// Rotary cases: 1-D and 3-D positions, head dims 2..=256 (even), positions up to 4096.
pub fn rotary_cases() -> impl Strategy<Value = GlueCase<RotaryProblem>> {
    let head_dim = prop_oneof![(1..=20usize).prop_map(|h| 2 * h), Just(64usize), Just(128usize), Just(256usize)];
    (tokens(24), 1..=4usize, head_dim, any::<bool>(), prop_oneof![Just(10_000.0f32), 100.0f32..1e6], seed()).prop_map(
        |(t, heads, d, three_d, theta, seed)| {
            let mut rng = gen::rng(seed ^ 0x707a);
            let half = d / 2;
            let positions = if three_d {
                let a = rng.gen_range(0..=half);
                let b = rng.gen_range(0..=half - a);
                RotaryPositions::ThreeD { sections: [a, b, half - a - b] }
            } else {
                RotaryPositions::OneD
            };
            GlueCase {
                problem: RotaryProblem { tokens: t, heads, head_dim: d, theta, positions, dtype: DType::F32 },
                seed,
            }
        },
    )
}

/// Largest position a rotary case draws.
const MAX_POSITION: i32 = 4096;

/// Rotary on `b` equals the reference.
///
/// # Errors
/// A mismatch report.
pub fn rotary_matches_reference<B: Backend>(b: &B, dtype: DType, c: &GlueCase<RotaryProblem>) -> Check {
    let p = RotaryProblem { dtype, ..c.problem.clone() };
    let mut rng = gen::rng(c.seed);
    let x = gen::normal_tensor(&mut rng, dtype, &[p.tokens, p.heads, p.head_dim], 1.0);
    let pshape = p.positions_shape();
    let pos: Vec<i32> = (0..pshape.iter().product()).map(|_| rng.gen_range(0..=MAX_POSITION)).collect();
    let pos = HostTensor::from_i32(&pshape, &pos);
    let out = gen::poison(dtype, &[p.tokens, p.heads, p.head_dim]);
    let want = exec::rotary(&ReferenceBackend, &p, &x, &pos, &out).map_err(ctx("reference rotary"))?;
    let got = exec::rotary(b, &p, &x, &pos, &out).map_err(ctx("rotary"))?;
    // NOTE: an f32 angle `pos · inv_freq` carries an absolute error of about `pos` ulps of
    // f32, which no f32 backend avoids; the bound adds that to the dtype's rounding.
    let angle = 8.0 * MAX_POSITION as f64 * DType::F32.epsilon();
    let tol = Tolerance { rel: Tolerance::for_dtype(dtype, 2).rel + angle };
    close("out", &want, &got, tol, dtype)
}

/// SwiGLU cases: rows 0..=40, I up to 100.
pub fn swiglu_cases() -> impl Strategy<Value = GlueCase<SwigluProblem>> {
    (tokens(40), dim(100), seed())
        .prop_map(|(rows, inter, seed)| GlueCase { problem: SwigluProblem { rows, inter, dtype: DType::F32 }, seed })
}

/// SwiGLU on `b` equals the reference.
///
/// # Errors
/// A mismatch report.
pub fn swiglu_matches_reference<B: Backend>(b: &B, dtype: DType, c: &GlueCase<SwigluProblem>) -> Check {
    let p = SwigluProblem { dtype, ..c.problem.clone() };
    let mut rng = gen::rng(c.seed);
    let x = gen::normal_tensor(&mut rng, dtype, &[p.rows, 2 * p.inter], 2.0);
    let y = gen::poison(dtype, &[p.rows, p.inter]);
    let want = exec::swiglu(&ReferenceBackend, &p, &x, &y).map_err(ctx("reference swiglu"))?;
    let got = exec::swiglu(b, &p, &x, &y).map_err(ctx("swiglu"))?;
    close("y", &want, &got, Tolerance::for_dtype(dtype, 4), dtype)
}

/// Embedding cases: T 0..=40, V 1..=300, H up to 100.
pub fn embedding_cases() -> impl Strategy<Value = GlueCase<EmbeddingProblem>> {
    (tokens(40), 1..=300usize, dim(100), seed()).prop_map(|(tokens, vocab, hidden, seed)| GlueCase {
        problem: EmbeddingProblem { tokens, vocab, hidden, dtype: DType::F32 },
        seed,
    })
}

/// Embedding gather on `b` equals the reference exactly (rows are copies).
///
/// # Errors
/// A mismatch report.
pub fn embedding_matches_reference<B: Backend>(b: &B, dtype: DType, c: &GlueCase<EmbeddingProblem>) -> Check {
    let p = EmbeddingProblem { dtype, ..c.problem.clone() };
    let mut rng = gen::rng(c.seed);
    let table = gen::normal_tensor(&mut rng, dtype, &[p.vocab, p.hidden], 1.0);
    let ids: Vec<i32> = (0..p.tokens).map(|_| rng.gen_range(0..p.vocab) as i32).collect();
    let ids = HostTensor::from_i32(&[p.tokens], &ids);
    let out = gen::poison(dtype, &[p.tokens, p.hidden]);
    let want = exec::embedding(&ReferenceBackend, &p, &table, &ids, &out).map_err(ctx("reference embedding"))?;
    let got = exec::embedding(b, &p, &table, &ids, &out).map_err(ctx("embedding"))?;
    exact("out", &want, &got)
}

/// Dense GEMM cases: M, K, N in 0..=80 (0 included), `b` transposed or not.
pub fn gemm_cases() -> impl Strategy<Value = GlueCase<GemmProblem>> {
    let size = prop_oneof![1 => Just(0usize), 9 => dim(80)];
    (size.clone(), size.clone(), size, any::<bool>(), seed()).prop_map(|(m, k, n, b_transposed, seed)| GlueCase {
        problem: GemmProblem { m, k, n, b_transposed, dtype: DType::F32 },
        seed,
    })
}

/// Dense GEMM on `b` equals the reference within the tolerance of a `K`-term reduction.
///
/// # Errors
/// A mismatch report.
pub fn gemm_matches_reference<B: Backend>(b: &B, dtype: DType, c: &GlueCase<GemmProblem>) -> Check {
    let p = GemmProblem { dtype, ..c.problem.clone() };
    let mut rng = gen::rng(c.seed);
    let a = gen::normal_tensor(&mut rng, dtype, &[p.m, p.k], 1.0);
    let bshape = if p.b_transposed { [p.n, p.k] } else { [p.k, p.n] };
    let bm = gen::normal_tensor(&mut rng, dtype, &bshape, 1.0 / (p.k.max(1) as f32).sqrt());
    let cm = gen::poison(dtype, &[p.m, p.n]);
    let want = exec::gemm(&ReferenceBackend, &p, &a, &bm, &cm).map_err(ctx("reference gemm"))?;
    let got = exec::gemm(b, &p, &a, &bm, &cm).map_err(ctx("gemm"))?;
    close_floor("c", &want, &got, Tolerance::for_dtype(dtype, p.k), dtype, dot_scale(&a, &bm, p.k))
}

/// A reshape case: `[tokens, heads * head_dim]` seen as `[tokens, heads, head_dim]`.
#[derive(Clone, Debug)]
pub struct ReshapeCase {
    /// Rows.
    pub tokens: usize,
    /// Heads.
    pub heads: usize,
    /// Head size.
    pub head_dim: usize,
    /// Data seed.
    pub seed: u64,
}

/// Reshape cases: tokens 0..=24, heads 1..=8, head dims up to 64.
pub fn reshape_cases() -> impl Strategy<Value = ReshapeCase> {
    (tokens(24), 1..=8usize, dim(64), seed()).prop_map(|(tokens, heads, head_dim, seed)| ReshapeCase {
        tokens,
        heads,
        head_dim,
        seed,
    })
}

/// [`moekit_ops::Device::reshape`] on `b` only relabels: the buffer reports the new shape and
/// downloads the same data, a count mismatch is [`Error::Shape`] and leaves the buffer as it
/// was, and reshaping back gives the upload again.
///
/// # Errors
/// A mismatch report.
pub fn reshape_keeps_data<B: Backend>(b: &B, dtype: DType, c: &ReshapeCase) -> Check {
    let (t, h, d) = (c.tokens, c.heads, c.head_dim);
    let x = gen::normal_tensor(&mut gen::rng(c.seed), dtype, &[t, h * d], 1.0);
    let mut buf = b.upload(&x).map_err(ctx("upload"))?;
    b.reshape(&mut buf, &[t, h, d]).map_err(ctx("reshape"))?;
    if buf.shape() != [t, h, d] {
        return Err(format!("reshape: buffer reports {:?}, expected {:?}", buf.shape(), [t, h, d]));
    }
    let want = x.clone().reshape(&[t, h, d]).map_err(ctx("host reshape"))?;
    exact("reshaped", &want, &b.download(&buf).map_err(ctx("download"))?)?;
    match b.reshape(&mut buf, &[t * h * d + 1]) {
        Err(Error::Shape { op: "reshape", what: "buffer", .. }) => {}
        other => return Err(format!("reshape to a wrong count: {other:?}, expected Error::Shape")),
    }
    if buf.shape() != [t, h, d] {
        return Err(format!("a failed reshape changed the shape to {:?}", buf.shape()));
    }
    b.reshape(&mut buf, &[t, h * d]).map_err(ctx("reshape back"))?;
    exact("reshaped back", &x, &b.download(&buf).map_err(ctx("download"))?)
}

/// A row copy: `src [src_rows, heads, head_dim]` into `dst [dst_rows, heads · head_dim]`.
#[derive(Clone, Debug)]
pub struct CopyRowsCase {
    /// Rows of the source.
    pub src_rows: usize,
    /// Rows of the destination.
    pub dst_rows: usize,
    /// First source row copied.
    pub src_row: usize,
    /// First destination row written.
    pub dst_row: usize,
    /// Rows copied.
    pub rows: usize,
    /// Heads (the row is `heads · head_dim` elements; odd widths reach the 2-byte paths).
    pub heads: usize,
    /// Head size.
    pub head_dim: usize,
    /// Data seed.
    pub seed: u64,
}

/// Row-copy cases: up to 40 rows each side, any valid range (empty ones included), rows of
/// 1 to 8 × 1 to 40 elements.
pub fn copy_rows_cases() -> impl Strategy<Value = CopyRowsCase> {
    (0..=40usize, 0..=40usize, 1..=8usize, 1..=40usize, seed())
        .prop_flat_map(|(src_rows, dst_rows, heads, head_dim, seed)| {
            let most = src_rows.min(dst_rows);
            (Just((src_rows, dst_rows, heads, head_dim, seed)), 0..=most)
                .prop_flat_map(move |(c, rows)| (Just(c), Just(rows), 0..=c.0 - rows, 0..=c.1 - rows))
        })
        .prop_map(|((src_rows, dst_rows, heads, head_dim, seed), rows, src_row, dst_row)| CopyRowsCase {
            src_rows,
            dst_rows,
            src_row,
            dst_row,
            rows,
            heads,
            head_dim,
            seed,
        })
}

/// [`moekit_ops::Device::copy_rows`] on `b` writes exactly the chosen rows of a random `dst`
/// (the rest stays as uploaded), bit for bit; a range past either buffer is
/// [`Error::Invalid`] and writes nothing; a dtype mismatch is [`Error::DType`].
///
/// # Errors
/// A mismatch report.
pub fn copy_rows_exact<B: Backend>(b: &B, dtype: DType, c: &CopyRowsCase) -> Check {
    let (h, d) = (c.heads, c.head_dim);
    let mut rng = gen::rng(c.seed);
    let src = gen::normal_tensor(&mut rng, dtype, &[c.src_rows, h, d], 1.0);
    let dst = gen::normal_tensor(&mut rng, dtype, &[c.dst_rows, h * d], 1.0);
    let sbuf = b.upload(&src).map_err(ctx("upload src"))?;
    let mut dbuf = b.upload(&dst).map_err(ctx("upload dst"))?;
    b.copy_rows(&sbuf, c.src_row, &mut dbuf, c.dst_row, c.rows).map_err(ctx("copy_rows"))?;
    let mut want = dst.clone();
    want.copy_rows_from(&src, c.src_row, c.dst_row, c.rows).map_err(ctx("host copy"))?;
    exact("copied", &want, &b.download(&dbuf).map_err(ctx("download"))?)?;
    // One row past the end of the source, then of the destination.
    for (sr, dr) in [(c.src_rows - c.rows, 0), (0, c.dst_rows - c.rows)] {
        match b.copy_rows(&sbuf, sr, &mut dbuf, dr, c.rows + 1) {
            Err(Error::Invalid { op: "copy_rows", .. }) => {}
            other => {
                return Err(format!("copy of rows {sr}.. into {dr}.. past an end: {other:?}, expected Error::Invalid"))
            }
        }
    }
    exact("after refused copies", &want, &b.download(&dbuf).map_err(ctx("download"))?)?;
    let other = if dtype == DType::F32 { DType::I32 } else { DType::F32 };
    let wrong = b.alloc(other, &[c.src_rows, h * d]).map_err(ctx("alloc"))?;
    match b.copy_rows(&wrong, 0, &mut dbuf, 0, 0) {
        Err(Error::DType { op: "copy_rows", .. }) => Ok(()),
        r => Err(format!("copy between dtypes: {r:?}, expected Error::DType")),
    }
}
