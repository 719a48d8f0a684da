//! Seeded random inputs (never zeros), Zipf-skewed routing, poison fills and row selection.

use moekit_ops::{DType, Error, HostData, HostTensor, Result, TensorMeta};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rayon::prelude::*;

/// Elements per independently seeded chunk of a parallel fill.
const CHUNK: usize = 1 << 16;

/// A seeded generator for stream `stream` of `seed` (streams never overlap in practice).
pub fn rng(seed: u64, stream: u64) -> StdRng {
    StdRng::seed_from_u64(seed ^ stream.wrapping_mul(0x9E37_79B9_7F4A_7C15).rotate_left(17))
}

/// A uniform value in `±[0.01, 1]` (never zero, so no output can pass by being all zeros).
fn nonzero(r: &mut StdRng) -> f32 {
    let m: f32 = r.gen_range(0.01..1.0);
    if r.gen::<bool>() {
        m
    } else {
        -m
    }
}

/// `n` values uniform in `±[0.01, 1] · scale`, filled in parallel, deterministic in `seed`.
pub fn uniform_values(n: usize, scale: f32, seed: u64) -> Vec<f32> {
    let mut v = vec![0f32; n];
    v.par_chunks_mut(CHUNK).enumerate().for_each(|(c, chunk)| {
        let mut r = rng(seed, c as u64 + 1);
        for x in chunk {
            *x = nonzero(&mut r) * scale;
        }
    });
    v
}

/// A float tensor of `dtype` with values uniform in `±[0.01, 1] · scale`, the same values
/// [`uniform_values`] gives, rounded to `dtype`; generated in `dtype` directly so a large
/// bf16 weight never exists as f32 too.
///
/// # Errors
/// Never in practice: [`Error::Shape`] would mean the generated length is wrong.
pub fn uniform(dtype: DType, shape: &[usize], scale: f32, seed: u64) -> Result<HostTensor> {
    fn fill<T: Send + Clone>(n: usize, scale: f32, seed: u64, zero: T, conv: impl Fn(f32) -> T + Sync) -> Vec<T> {
        let mut v = vec![zero; n];
        v.par_chunks_mut(CHUNK).enumerate().for_each(|(c, chunk)| {
            let mut r = rng(seed, c as u64 + 1);
            for x in chunk {
                *x = conv(nonzero(&mut r) * scale);
            }
        });
        v
    }
    let n: usize = shape.iter().product();
    match dtype {
        DType::F16 => {
            let v = fill(n, scale, seed, half::f16::ZERO, half::f16::from_f32);
            HostTensor::new(shape, HostData::F16(v))
        }
        DType::BF16 => {
            let v = fill(n, scale, seed, half::bf16::ZERO, half::bf16::from_f32);
            HostTensor::new(shape, HostData::BF16(v))
        }
        _ => Ok(HostTensor::from_f32(dtype, shape, &uniform_values(n, scale, seed))),
    }
}

/// Log-popularity of each expert under a Zipf law with exponent `skew`: the expert of rank
/// `r` (a seeded shuffle of the experts, so the hot ones are spread) gets `-skew · ln(r+1)`.
pub fn zipf_log_popularity(experts: usize, skew: f64, seed: u64) -> Vec<f64> {
    let mut rank: Vec<usize> = (0..experts).collect();
    rank.shuffle(&mut rng(seed, 0xE0));
    let mut out = vec![0.0; experts];
    for (r, &e) in rank.iter().enumerate() {
        out[e] = -skew * ((r + 1) as f64).ln();
    }
    out
}

/// Expert ids `[T, k] i32`: each token draws `k` distinct experts without replacement with
/// probabilities following [`zipf_log_popularity`] (Gumbel top-k).
pub fn zipf_ids(tokens: usize, experts: usize, k: usize, skew: f64, seed: u64) -> Vec<i32> {
    let logp = zipf_log_popularity(experts, skew, seed);
    let mut ids = vec![0i32; tokens * k];
    ids.par_chunks_mut(k.max(1) * 256).enumerate().for_each(|(c, chunk)| {
        let mut r = rng(seed, 0x1D5 + c as u64);
        let mut keys: Vec<(f64, usize)> = Vec::with_capacity(experts);
        for row in chunk.chunks_mut(k) {
            keys.clear();
            for (e, &lp) in logp.iter().enumerate() {
                let u: f64 = r.gen_range(f64::MIN_POSITIVE..1.0);
                keys.push((lp - (-u.ln()).ln(), e));
            }
            keys.select_nth_unstable_by(k - 1, |a, b| b.0.total_cmp(&a.0));
            for (slot, &(_, e)) in row.iter_mut().zip(&keys[..k]) {
                *slot = e as i32;
            }
        }
    });
    ids
}

/// Tokens per expert `[E]` of `ids`.
pub fn counts(ids: &[i32], experts: usize) -> Vec<usize> {
    let mut c = vec![0usize; experts];
    for &e in ids {
        c[e as usize] += 1;
    }
    c
}

/// Offsets `[E+1]` of contiguous expert segments with these counts.
pub fn offsets(counts: &[usize]) -> Vec<i32> {
    let mut o = Vec::with_capacity(counts.len() + 1);
    o.push(0i32);
    let mut acc = 0usize;
    for &c in counts {
        acc += c;
        o.push(acc as i32);
    }
    o
}

/// `token_slot_to_row [T, k]` of the stable expert-contiguous order of `ids [T, k]` (by
/// expert, then token, then slot), as a dispatch without alignment produces it.
pub fn token_slot_to_row(ids: &[i32], experts: usize) -> Vec<i32> {
    let mut next: Vec<i32> = offsets(&counts(ids, experts))[..experts].to_vec();
    ids.iter()
        .map(|&e| {
            let row = next[e as usize];
            next[e as usize] += 1;
            row
        })
        .collect()
}

/// The expert owning row `row` of contiguous segments `offsets [E+1]`.
pub fn expert_of_row(offsets: &[i32], row: usize) -> usize {
    offsets.partition_point(|&o| o as usize <= row).saturating_sub(1)
}

/// A tensor that must be overwritten: NaN for floats, a large negative garbage value for i32.
pub fn poison(dtype: DType, shape: &[usize]) -> HostTensor {
    match dtype {
        DType::I32 => HostTensor::full(DType::I32, shape, -1_234_567_891.0),
        _ => HostTensor::full(dtype, shape, f64::NAN),
    }
}

/// `count` distinct indices of `0..n`, sorted; all of them when `count >= n`.
pub fn sample_indices(n: usize, count: usize, seed: u64) -> Vec<usize> {
    if count >= n {
        return (0..n).collect();
    }
    let mut v = rand::seq::index::sample(&mut rng(seed, 0x5A), n, count).into_vec();
    v.sort_unstable();
    v
}

/// The rows `rows` (along dim 0) of `t`, in that order.
///
/// # Errors
/// [`Error::IndexOutOfRange`] for a row past the tensor.
pub fn select_rows(t: &HostTensor, rows: &[usize]) -> Result<HostTensor> {
    let n0 = t.shape().first().copied().unwrap_or(0);
    if let Some(&bad) = rows.iter().find(|&&r| r >= n0) {
        return Err(Error::IndexOutOfRange {
            op: "select_rows",
            what: "rows",
            index: 0,
            value: bad as i64,
            lo: 0,
            hi: n0 as i64,
        });
    }
    let width: usize = t.shape().iter().skip(1).product();
    fn gather<T: Copy>(v: &[T], rows: &[usize], width: usize) -> Vec<T> {
        rows.iter().flat_map(|&r| v[r * width..(r + 1) * width].iter().copied()).collect()
    }
    let data = match t.data() {
        HostData::F32(v) => HostData::F32(gather(v, rows, width)),
        HostData::F16(v) => HostData::F16(gather(v, rows, width)),
        HostData::BF16(v) => HostData::BF16(gather(v, rows, width)),
        HostData::I32(v) => HostData::I32(gather(v, rows, width)),
    };
    let mut shape = t.shape().to_vec();
    if let Some(first) = shape.first_mut() {
        *first = rows.len();
    }
    HostTensor::new(&shape, data)
}

/// The rows of `parts` stacked along dim 0 (every part of one dtype and row shape).
///
/// # Errors
/// [`Error::Shape`] or [`Error::DType`] for parts that do not stack; [`Error::Invalid`] for
/// no parts.
pub fn concat_rows(parts: &[HostTensor]) -> Result<HostTensor> {
    let first = parts.first().ok_or_else(|| Error::invalid("concat_rows", "no parts"))?;
    let mut shape = first.shape().to_vec();
    shape[0] = 0;
    let mut data = HostTensor::zeros(first.dtype(), &[0]).data().clone();
    for p in parts {
        if p.dtype() != first.dtype() {
            return Err(Error::DType { op: "concat_rows", what: "part", expected: first.dtype(), got: p.dtype() });
        }
        if p.shape()[1..] != first.shape()[1..] {
            return Err(Error::Shape {
                op: "concat_rows",
                what: "part",
                expected: first.shape().to_vec(),
                got: p.shape().to_vec(),
            });
        }
        shape[0] += p.shape()[0];
        match (&mut data, p.data()) {
            (HostData::F32(a), HostData::F32(b)) => a.extend_from_slice(b),
            (HostData::F16(a), HostData::F16(b)) => a.extend_from_slice(b),
            (HostData::BF16(a), HostData::BF16(b)) => a.extend_from_slice(b),
            (HostData::I32(a), HostData::I32(b)) => a.extend_from_slice(b),
            _ => return Err(Error::invalid("concat_rows", "mixed storage")),
        }
    }
    HostTensor::new(&shape, data)
}

/// Columns `cols` of a 2-D tensor `[rows, n]` → `[rows, cols.len()]`.
///
/// # Errors
/// [`Error::Shape`] when `t` is not 2-D; [`Error::IndexOutOfRange`] for a column past `n`.
pub fn select_cols(t: &HostTensor, cols: &[usize]) -> Result<HostTensor> {
    let &[rows, n] = t.shape() else {
        return Err(Error::Shape { op: "select_cols", what: "tensor", expected: vec![0, 0], got: t.shape().to_vec() });
    };
    if let Some(&bad) = cols.iter().find(|&&c| c >= n) {
        return Err(Error::IndexOutOfRange {
            op: "select_cols",
            what: "cols",
            index: 0,
            value: bad as i64,
            lo: 0,
            hi: n as i64,
        });
    }
    fn gather<T: Copy>(v: &[T], rows: usize, n: usize, cols: &[usize]) -> Vec<T> {
        (0..rows).flat_map(|r| cols.iter().map(move |&c| v[r * n + c])).collect()
    }
    let data = match t.data() {
        HostData::F32(v) => HostData::F32(gather(v, rows, n, cols)),
        HostData::F16(v) => HostData::F16(gather(v, rows, n, cols)),
        HostData::BF16(v) => HostData::BF16(gather(v, rows, n, cols)),
        HostData::I32(v) => HostData::I32(gather(v, rows, n, cols)),
    };
    HostTensor::new(&[rows, cols.len()], data)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uniform_is_seeded_and_never_zero() {
        let a = uniform_values(200_000, 0.5, 7);
        assert_eq!(a, uniform_values(200_000, 0.5, 7));
        assert_ne!(a, uniform_values(200_000, 0.5, 8));
        assert!(a.iter().all(|x| x.abs() >= 0.005 && x.abs() <= 0.5));
        for dt in [DType::F32, DType::F16, DType::BF16] {
            let t = uniform(dt, &[400, 500], 0.5, 7).unwrap();
            assert_eq!(t, HostTensor::from_f32(dt, &[400, 500], &a), "{dt}");
        }
    }

    #[test]
    fn zipf_ids_are_distinct_per_token_and_skewed() {
        let (t, e, k) = (4000, 16, 4);
        let ids = zipf_ids(t, e, k, 1.5, 3);
        for row in ids.chunks(k) {
            let mut r = row.to_vec();
            r.sort_unstable();
            r.dedup();
            assert_eq!(r.len(), k);
        }
        let c = counts(&ids, e);
        assert_eq!(c.iter().sum::<usize>(), t * k);
        let (lo, hi) = (c.iter().min().unwrap(), c.iter().max().unwrap());
        assert!(*hi > 3 * *lo, "skew 1.5 should make hot experts: {c:?}");
        let flat = counts(&zipf_ids(t, e, k, 0.0, 3), e);
        assert!(*flat.iter().max().unwrap() < 2 * *flat.iter().min().unwrap(), "{flat:?}");
    }

    #[test]
    fn offsets_and_expert_of_row_agree() {
        let o = offsets(&[2, 0, 3]);
        assert_eq!(o, vec![0, 2, 2, 5]);
        let owners: Vec<_> = (0..5).map(|r| expert_of_row(&o, r)).collect();
        assert_eq!(owners, vec![0, 0, 2, 2, 2]);
        // tokens 0 and 1, k = 2: expert 1 gets (0,0),(1,1); expert 0 gets (0,1),(1,0)
        assert_eq!(token_slot_to_row(&[1, 0, 0, 1], 2), vec![2, 0, 1, 3]);
    }

    #[test]
    fn selection_keeps_rows_and_columns() {
        let t = HostTensor::from_i32(&[3, 2], &[0, 1, 2, 3, 4, 5]);
        assert_eq!(select_rows(&t, &[2, 0]).unwrap(), HostTensor::from_i32(&[2, 2], &[4, 5, 0, 1]));
        assert_eq!(select_cols(&t, &[1]).unwrap(), HostTensor::from_i32(&[3, 1], &[1, 3, 5]));
        assert!(select_rows(&t, &[3]).is_err());
        let parts = [select_rows(&t, &[1]).unwrap(), select_rows(&t, &[0, 2]).unwrap()];
        assert_eq!(concat_rows(&parts).unwrap(), HostTensor::from_i32(&[3, 2], &[2, 3, 0, 1, 4, 5]));
        assert_eq!(sample_indices(5, 9, 1), vec![0, 1, 2, 3, 4]);
        let s = sample_indices(100, 10, 1);
        assert!(s.len() == 10 && s.windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    fn poison_is_not_a_plausible_output() {
        assert!(poison(DType::BF16, &[4]).to_f32_vec().iter().all(|x| x.is_nan()));
        assert!(poison(DType::I32, &[2]).as_i32().unwrap().iter().all(|&x| x < -1_000_000_000));
    }
}
