//! Shared by the fuzz targets (each includes it with `#[path = "common/mod.rs"] mod common;`):
//! a byte-driven generator of problem fields and buffers, and the differential check of the
//! reference against the CPU backend.
//!
//! The first input byte picks a mode: three in four inputs build a *valid* small problem with
//! tame data (multiples of 1/8, so f32 and f64 paths agree closely); the rest are *garbage*
//! (huge and zero sizes, every dtype, wrong shapes, out-of-range ids and offsets, NaN and
//! infinities). Either way both backends run through `moekit_ops::api` and must return the same
//! `Result` variant (with the same `op` and `what`); outputs are compared only when both are
//! `Ok` and every float input was finite and small.

#![allow(dead_code)]

use arbitrary::Unstructured;
use moekit_ops::tolerance::rms;
use moekit_ops::{DType, Error, HostTensor, TensorMeta};

/// Largest buffer (elements) the generator builds from a problem's implied shape; past it a
/// small arbitrary shape stands in (validation must refuse it, without allocating).
pub const MAX_NUMEL: usize = 1 << 12;

/// Integer outputs start as this (below every index range), floats as NaN, so an element
/// neither backend writes is seen equal, and one only one backend writes differs.
pub const POISON_I32: i32 = -1_234_567;

/// Fuzz bytes as problem fields and buffers.
pub struct Gen<'a> {
    u: Unstructured<'a>,
    /// Valid-problem mode (else garbage).
    pub valid: bool,
    /// In valid mode: some float inputs are NaN or infinite.
    specials: bool,
    /// Every float input so far was finite and at most 16 in magnitude, every data index small:
    /// outputs are compared only then.
    pub tame: bool,
    /// Some float input so far was finite but huge (past 1e15): an f32 intermediate may
    /// overflow where the reference's f64 does not.
    pub large: bool,
}

impl<'a> Gen<'a> {
    /// A generator over `data`; the first byte picks the mode.
    pub fn new(data: &'a [u8]) -> Self {
        let mut u = Unstructured::new(data);
        let mode = u.arbitrary::<u8>().unwrap_or(0);
        let valid = mode % 4 != 3;
        let specials = valid && mode & 0xf0 == 0xf0;
        Gen { u, valid, specials, tame: true, large: false }
    }

    /// Records one float input in [`Gen::tame`] and [`Gen::large`].
    pub fn note(&mut self, x: f64) {
        if !x.is_finite() || x.abs() > 16.0 {
            self.tame = false;
        }
        if x.is_finite() && x.abs() > 1e15 {
            self.large = true;
        }
    }

    /// Some input is finite but huge: an intermediate may overflow f32 on one backend and not
    /// in the other's wider accumulator (see [`same_result`]).
    pub fn may_overflow(&self) -> bool {
        self.large
    }

    /// A byte (0 once the input is used up).
    pub fn byte(&mut self) -> u8 {
        self.u.arbitrary::<u8>().unwrap_or(0)
    }

    /// A bool.
    pub fn bool(&mut self) -> bool {
        self.byte() & 1 == 1
    }

    /// One in `n`.
    pub fn one_in(&mut self, n: u8) -> bool {
        self.byte() % n.max(1) == 0
    }

    /// An integer in `lo..=hi`.
    pub fn int(&mut self, lo: usize, hi: usize) -> usize {
        if hi <= lo {
            return lo;
        }
        lo + (self.u.arbitrary::<u16>().unwrap_or(0) as usize) % (hi - lo).saturating_add(1)
    }

    /// A size: `lo..=hi` in valid mode; in garbage mode also 0 and, now and then, a huge one.
    pub fn size(&mut self, lo: usize, hi: usize) -> usize {
        if self.valid {
            return self.int(lo, hi);
        }
        match self.byte() % 16 {
            0 => 0,
            1 => [usize::MAX, usize::MAX / 2 + 1, i32::MAX as usize, i32::MAX as usize + 1, 1 << 32, 1 << 40, 65536]
                [self.int(0, 6)],
            _ => self.int(0, hi.saturating_add(1)),
        }
    }

    /// A float dtype (valid mode) or any dtype (garbage mode).
    pub fn dtype(&mut self) -> DType {
        if self.valid {
            DType::FLOATS[self.int(0, 2)]
        } else {
            [DType::F32, DType::F16, DType::BF16, DType::I32][self.int(0, 3)]
        }
    }

    /// A problem-level f32 (scaling, eps, theta, ...): one of `good` in valid mode; in garbage
    /// mode also 0, negatives, NaN, infinities and arbitrary bits.
    pub fn scalar(&mut self, good: &[f32]) -> f32 {
        if self.valid || self.byte() % 3 != 0 {
            return good[self.int(0, good.len() - 1)];
        }
        match self.byte() % 8 {
            0 => 0.0,
            1 => -1.0,
            2 => f32::NAN,
            3 => f32::INFINITY,
            4 => f32::NEG_INFINITY,
            5 => f32::MIN_POSITIVE,
            _ => f32::from_bits(self.u.arbitrary::<u32>().unwrap_or(0)),
        }
    }

    /// One float of data: a multiple of `step` in `[-max, max]`; NaN, infinities, huge, tiny
    /// and arbitrary bits in garbage mode (and now and then in valid mode with specials).
    pub fn float(&mut self, step: f32, max: f32) -> f32 {
        let m = (max / step).floor() as i32;
        let grid = |s: &mut Self| (s.int(0, (2 * m) as usize) as i32 - m) as f32 * step;
        let wild = !self.valid && self.byte() % 4 == 0 || self.specials && self.byte() % 8 == 0;
        let v = if wild {
            match self.byte() % 10 {
                0 => f32::NAN,
                1 => f32::INFINITY,
                2 => f32::NEG_INFINITY,
                3 => 70000.0,
                4 => -3.0e38,
                5 => 1.0e-30,
                6 => -0.0,
                _ => f32::from_bits(self.u.arbitrary::<u32>().unwrap_or(0)),
            }
        } else {
            grid(self)
        };
        self.note(v as f64);
        v
    }

    /// A float tensor of `dtype` (any dtype: `I32` takes the values truncated).
    pub fn floats(&mut self, dtype: DType, shape: &[usize], step: f32, max: f32) -> HostTensor {
        let n = numel(shape).unwrap_or(0);
        let v: Vec<f32> = (0..n).map(|_| self.float(step, max)).collect();
        let t = HostTensor::from_f32(dtype, shape, &v);
        // NOTE: a value that rounds to infinity in f16 (70000) is no longer small.
        for x in t.to_f64_vec() {
            self.note(x);
        }
        t
    }

    /// One index in `lo..hi` (valid mode); in garbage mode also just outside the range and
    /// the extremes of i32.
    pub fn index(&mut self, lo: i32, hi: i32) -> i32 {
        if !self.valid && self.byte() % 4 == 0 {
            return [-1, hi, hi.saturating_add(1), i32::MAX, i32::MIN, lo.saturating_sub(1)][self.int(0, 5)];
        }
        if hi <= lo {
            return lo;
        }
        (lo as i64 + self.int(0, (hi as i64 - lo as i64 - 1) as usize) as i64) as i32
    }

    /// An i32 tensor of indices in `lo..hi` (see [`Gen::index`]).
    pub fn indices(&mut self, shape: &[usize], lo: i32, hi: i32) -> HostTensor {
        let n = numel(shape).unwrap_or(0);
        let v: Vec<i32> = (0..n).map(|_| self.index(lo, hi)).collect();
        HostTensor::from_i32(shape, &v)
    }

    /// A shape for a buffer the problem implies to be `want` of `dtype`: exactly that in valid
    /// mode; in garbage mode sometimes another dtype or shape (an axis off by one, dropped or
    /// added, or a small arbitrary shape). An implied shape too large to build is replaced by
    /// a small arbitrary one.
    pub fn meta(&mut self, dtype: DType, want: &[usize]) -> (DType, Vec<usize>) {
        let too_big = numel(want).is_none_or(|n| n > MAX_NUMEL);
        if self.valid && !too_big {
            return (dtype, want.to_vec());
        }
        let mut dt = dtype;
        let mut shape = want.to_vec();
        let pick = if too_big { 5 } else { self.byte() % 8 };
        match pick {
            0 => dt = [DType::F32, DType::F16, DType::BF16, DType::I32][self.int(0, 3)],
            1 if !shape.is_empty() => {
                let i = self.int(0, shape.len() - 1);
                shape[i] = if self.bool() { shape[i].saturating_add(1) } else { shape[i].saturating_sub(1) };
            }
            2 => {
                shape.pop();
            }
            3 => shape.push(self.int(0, 3)),
            5 => shape = (0..self.int(0, 4)).map(|_| self.int(0, 5)).collect(),
            _ => {}
        }
        if numel(&shape).is_none_or(|n| n > MAX_NUMEL) {
            shape = vec![self.int(0, 4)];
        }
        (dt, shape)
    }

    /// A float input buffer (see [`Gen::meta`]) with data on a `step` grid up to `max`.
    pub fn input(&mut self, dtype: DType, want: &[usize], step: f32, max: f32) -> HostTensor {
        let (dt, shape) = self.meta(dtype, want);
        if dt == DType::I32 {
            self.indices(&shape, -2, 8)
        } else {
            self.floats(dt, &shape, step, max)
        }
    }

    /// An index input buffer (see [`Gen::meta`]) with values in `lo..hi`.
    pub fn input_idx(&mut self, want: &[usize], lo: i32, hi: i32) -> HostTensor {
        let (dt, shape) = self.meta(DType::I32, want);
        if dt == DType::I32 {
            self.indices(&shape, lo, hi)
        } else {
            self.floats(dt, &shape, 1.0, 8.0)
        }
    }

    /// An output buffer (see [`Gen::meta`]), poisoned.
    pub fn output(&mut self, dtype: DType, want: &[usize]) -> HostTensor {
        let (dt, shape) = self.meta(dtype, want);
        poison(dt, &shape)
    }

    /// `Some(make())` when `want` (valid mode), else present or absent at random. Made only
    /// when present, so the data of a buffer that is not passed never counts in
    /// [`Gen::tame`] or [`Gen::large`].
    pub fn present<T>(&mut self, want: bool, make: impl FnOnce(&mut Self) -> T) -> Option<T> {
        let on = if self.valid || self.byte() % 4 != 0 { want } else { !want };
        on.then(|| make(self))
    }

    /// A seed drawn from the input.
    pub fn seed(&mut self) -> u64 {
        self.u.arbitrary::<u64>().unwrap_or(0)
    }
}

/// Product of a shape, `None` on overflow.
pub fn numel(shape: &[usize]) -> Option<usize> {
    shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d))
}

/// Poison of `dtype` and `shape`: NaN for floats, [`POISON_I32`] for integers.
pub fn poison(dtype: DType, shape: &[usize]) -> HostTensor {
    let n = numel(shape).unwrap_or(0);
    match dtype {
        DType::I32 => HostTensor::from_i32(shape, &vec![POISON_I32; n]),
        _ => HostTensor::from_f32(dtype, shape, &vec![f32::NAN; n]),
    }
}

/// The variant, op and argument of an error: what must agree between two backends.
pub fn error_key(e: &Error) -> (String, Option<&'static str>, Option<&'static str>) {
    let variant = format!("{e:?}").split([' ', '{', '(']).next().unwrap_or("").to_string();
    let (op, what) = match e {
        Error::Shape { op, what, .. }
        | Error::DType { op, what, .. }
        | Error::IndexOutOfRange { op, what, .. }
        | Error::BadOffsets { op, what, .. }
        | Error::NonFinite { op, what, .. } => (Some(*op), Some(*what)),
        Error::Invalid { op, .. }
        | Error::Unsupported { op, .. }
        | Error::EmptyMaskRow { op, .. }
        | Error::NotImplemented { op, .. }
        | Error::Device { op, .. } => (Some(*op), None),
        _ => (None, None),
    };
    (variant, op, what)
}

/// Both backends returned the same variant (and the same op and argument on error).
/// `case` (printed on failure) is the problem and its inputs.
///
/// With `may_overflow` (some input finite but past 1e15), `NonFinite` on one side against
/// `Ok` or `NonFinite` on the other is accepted: the reference accumulates in f64, the CPU in
/// f32 (DESIGN: "accumulate in f32 or better"), so an intermediate such as a fused-gate logit
/// may overflow on one and not the other. Otherwise (NaN and infinities included) the results
/// must agree.
pub fn same_result(
    what: &str,
    want: &moekit_ops::Result<()>,
    got: &moekit_ops::Result<()>,
    may_overflow: bool,
    case: &dyn std::fmt::Debug,
) {
    let non_finite = |r: &moekit_ops::Result<()>| matches!(r, Err(Error::NonFinite { .. }));
    let benign = |r: &moekit_ops::Result<()>| r.is_ok() || non_finite(r);
    if may_overflow && (non_finite(want) || non_finite(got)) && benign(want) && benign(got) {
        return;
    }
    match (want, got) {
        (Ok(()), Ok(())) => {}
        (Err(w), Err(g)) => assert_eq!(
            error_key(w),
            error_key(g),
            "{what}: the reference and the CPU refuse differently:\n  reference: {w}\n  cpu:       {g}\ncase: {case:#?}"
        ),
        _ => panic!("{what}: reference returned {want:?}, cpu returned {got:?}\ncase: {case:#?}"),
    }
}

/// How an output is compared.
#[derive(Clone, Copy, Debug)]
pub enum Cmp {
    /// Bit for bit (integers, copies); NaN equals NaN.
    Exact,
    /// Within `rel * (|expected| + floor)`, `floor` at least the RMS of the expected tensor.
    Close {
        /// Relative bound.
        rel: f64,
        /// Least magnitude the error is judged against (the typical size of the summed terms).
        floor: f64,
    },
}

/// Compare one output of the reference (`want`) and the CPU (`got`).
pub fn check(what: &str, want: &HostTensor, got: &HostTensor, cmp: Cmp) {
    assert_eq!((want.dtype(), want.shape()), (got.dtype(), got.shape()), "{what}: dtype/shape differ");
    let (w, g) = (want.to_f64_vec(), got.to_f64_vec());
    match cmp {
        Cmp::Exact => {
            let bad: Vec<usize> = (0..w.len()).filter(|&i| !(w[i] == g[i] || w[i].is_nan() && g[i].is_nan())).collect();
            assert!(
                bad.is_empty(),
                "{what}: {} of {} elements differ, first at [{}]: reference {}, cpu {}",
                bad.len(),
                w.len(),
                bad[0],
                w[bad[0]],
                g[bad[0]]
            );
        }
        Cmp::Close { rel, floor } => {
            // NOTE: below the output dtype's smallest normal number the spacing of values is
            // absolute (one subnormal step), so the error is judged against that, not `|e|`.
            let min_normal = if want.dtype() == DType::F16 { 6.1e-5 } else { f32::MIN_POSITIVE as f64 };
            let floor = rms(&w).max(floor).max(min_normal);
            for (i, (&e, &a)) in w.iter().zip(&g).enumerate() {
                let ok = e == a
                    || e.is_nan() && a.is_nan()
                    || e.is_finite() && a.is_finite() && (a - e).abs() <= rel * (e.abs() + floor);
                assert!(
                    ok,
                    "{what}[{i}]: reference {e:e}, cpu {a:e} (rel {rel:e}, floor {floor:e}; all: {w:?} vs {g:?})"
                );
            }
        }
    }
}

/// Relative tolerance for an output of `dtype` from a reduction of `len` terms (the
/// tolerance module's bound, loosened 4x).
pub fn tol(dtype: DType, len: usize) -> f64 {
    moekit_ops::tolerance::Tolerance::for_dtype(dtype, len).times(4.0).rel
}

/// RMS of a tensor's elements (0 when empty).
pub fn rms_of(t: &HostTensor) -> f64 {
    rms(&t.to_f64_vec())
}

/// Largest magnitude of a tensor's elements (0 when empty).
pub fn max_abs(t: &HostTensor) -> f64 {
    t.to_f64_vec().iter().fold(0.0, |m, x| m.max(x.abs()))
}
