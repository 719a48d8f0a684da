//! Tensor plumbing: `Device::copy_rows` and `Device::reshape` on the reference and the CPU
//! backend, `HostTensor::{reshape, copy_rows_from, new, from_bytes}`, with arbitrary shapes
//! (0-d, empty, huge axes whose product overflows), dtypes, row ranges past the end or
//! overflowing: nothing panics; both backends return the same `Result`; a successful copy
//! equals a plain element-by-element model (the rest of `dst` unchanged), a successful
//! reshape keeps the data, a failed one changes nothing.

#![no_main]

#[path = "common/mod.rs"]
mod common;

use common::{check, numel, same_result, Cmp, Gen};
use libfuzzer_sys::fuzz_target;
use moekit_cpu::CpuBackend;
use moekit_ops::{DType, Device, HostData, HostTensor, TensorMeta};
use moekit_reference::ReferenceBackend;

/// A shape: small axes mostly; in garbage mode also 0-d, and huge axes.
fn shape(g: &mut Gen) -> Vec<usize> {
    let rank = g.int(if g.valid { 1 } else { 0 }, 4);
    (0..rank).map(|_| if g.valid { g.int(0, 4) } else { g.size(0, 5) }).collect()
}

/// A tensor of `dtype` and `shape` (an unbuildable shape becomes a small one).
fn tensor(g: &mut Gen, dtype: DType, shape: &[usize]) -> HostTensor {
    let shape = if numel(shape).is_none_or(|n| n > common::MAX_NUMEL) { vec![g.int(0, 3)] } else { shape.to_vec() };
    if dtype == DType::I32 {
        g.indices(&shape, -100, 100)
    } else {
        g.floats(dtype, &shape, 0.125, 8.0)
    }
}

fn row_index(g: &mut Gen, rows: usize) -> usize {
    if g.valid {
        g.int(0, rows)
    } else {
        g.size(0, rows.saturating_add(1))
    }
}

/// The copy, element by element, or `None` where it must fail.
fn model(src: &HostTensor, sr: usize, dst: &HostTensor, dr: usize, rows: usize) -> Option<HostTensor> {
    if src.dtype() != dst.dtype() || src.shape().is_empty() || dst.shape().is_empty() {
        return None;
    }
    // NOTE: a 0-row tensor may have axes whose product overflows: its rows have no width.
    let (ws, wd) = (numel(&src.shape()[1..])?, numel(&dst.shape()[1..])?);
    if ws != wd || sr.checked_add(rows)? > src.shape()[0] || dr.checked_add(rows)? > dst.shape()[0] {
        return None;
    }
    let (s, mut d) = (src.to_f64_vec(), dst.to_f64_vec());
    d[dr * ws..(dr + rows) * ws].copy_from_slice(&s[sr * ws..(sr + rows) * ws]);
    Some(HostTensor::from_f64(dst.dtype(), dst.shape(), &d))
}

fn copy_rows(g: &mut Gen) {
    let dt = g.dtype();
    let src_shape = shape(g);
    let src = tensor(g, dt, &src_shape);
    let mut dst_shape = if g.valid || g.bool() { src.shape().to_vec() } else { shape(g) };
    if let Some(first) = dst_shape.first_mut() {
        *first = if g.valid { g.int(0, 5) } else { g.size(0, 5) };
    }
    let dst_dt = if g.valid || g.bool() { dt } else { g.dtype() };
    let dst = tensor(g, dst_dt, &dst_shape);
    let (rs, rd) = (src.shape().first().copied().unwrap_or(0), dst.shape().first().copied().unwrap_or(0));
    let sr = row_index(g, rs);
    let dr = row_index(g, rd);
    let rows = if g.valid { g.int(0, rs.saturating_sub(sr).min(rd.saturating_sub(dr))) } else { g.size(0, 4) };
    let (mut a, mut b, mut c) = (dst.clone(), dst.clone(), dst.clone());
    let ra = ReferenceBackend.copy_rows(&src, sr, &mut a, dr, rows);
    let rb = CpuBackend::new().copy_rows(&src, sr, &mut b, dr, rows);
    let rc = c.copy_rows_from(&src, sr, dr, rows);
    same_result("copy_rows", &ra, &rb, false, &(&src, sr, &dst, dr, rows));
    same_result("copy_rows (HostTensor)", &ra, &rc, false, &(&src, sr, &dst, dr, rows));
    let checked = moekit_ops::check_copy_rows(&src, sr, &dst, dr, rows);
    assert_eq!(checked.is_ok(), ra.is_ok(), "check_copy_rows and copy_rows disagree: {checked:?} vs {ra:?}");
    match model(&src, sr, &dst, dr, rows) {
        Some(want) => {
            assert!(ra.is_ok(), "copy_rows refused a valid copy: {ra:?}");
            for got in [&a, &b, &c] {
                assert_eq!(got.dtype(), want.dtype());
                check("dst", &want, got, Cmp::Exact);
            }
        }
        None => {
            assert!(ra.is_err(), "copy_rows took an invalid copy");
            for got in [&a, &b, &c] {
                assert_eq!(
                    (got.shape(), got.as_bytes()),
                    (dst.shape(), dst.as_bytes()),
                    "a failed copy_rows changed dst"
                );
            }
        }
    }
}

fn reshape(g: &mut Gen) {
    let dt = g.dtype();
    let from = shape(g);
    let t = tensor(g, dt, &from);
    let to = if g.valid || g.bool() {
        // A shape of the same element count: the axes split or merged.
        let n = t.numel();
        match g.byte() % 4 {
            0 => vec![n],
            1 if n > 0 => {
                let d = (1..=n).filter(|d| n % d == 0).nth(g.int(0, 3)).unwrap_or(1);
                vec![d, n / d]
            }
            2 => vec![1, n, 1],
            _ => t.shape().iter().rev().copied().collect(),
        }
    } else {
        shape(g)
    };
    let ok = numel(&to) == Some(t.numel());
    let (mut a, mut b, mut c) = (t.clone(), t.clone(), t.clone());
    let ra = ReferenceBackend.reshape(&mut a, &to);
    let rb = CpuBackend::new().reshape(&mut b, &to);
    let rc = c.reshape_in_place(&to);
    same_result("reshape", &ra, &rb, false, &(&t, &to));
    assert_eq!(ra.is_ok(), ok, "reshape {:?} -> {to:?}: {ra:?}", t.shape());
    assert_eq!(rc.is_ok(), ok, "HostTensor::reshape_in_place {:?} -> {to:?}: {rc:?}", t.shape());
    let by_value = t.clone().reshape(&to);
    assert_eq!(by_value.is_ok(), ok);
    for got in [&a, &b, &c] {
        assert_eq!(got.as_bytes(), t.as_bytes(), "reshape changed the data");
        assert_eq!(got.shape(), if ok { &to[..] } else { t.shape() });
    }
}

fn bytes(g: &mut Gen) {
    let dt = [DType::F32, DType::F16, DType::BF16, DType::I32][g.int(0, 3)];
    let s = shape(g);
    let n = g.int(0, 40);
    let raw: Vec<u8> = (0..n).map(|_| g.byte()).collect();
    match HostTensor::from_bytes(dt, &s, &raw) {
        Ok(t) => {
            assert_eq!(t.as_bytes(), &raw[..], "from_bytes/as_bytes round trip");
            assert_eq!((t.dtype(), t.shape()), (dt, &s[..]));
        }
        Err(_) => assert!(numel(&s).and_then(|n| n.checked_mul(dt.size())) != Some(raw.len())),
    }
    let data = match dt {
        DType::I32 => HostData::I32(vec![1; n]),
        _ => HostData::F32(vec![1.0; n]),
    };
    let r = HostTensor::new(&s, data);
    assert_eq!(r.is_ok(), numel(&s) == Some(n), "HostTensor::new {s:?} with {n} elements: {r:?}");
}

fuzz_target!(|data: &[u8]| {
    let mut g = Gen::new(data);
    match g.byte() % 3 {
        0 => copy_rows(&mut g),
        1 => reshape(&mut g),
        _ => bytes(&mut g),
    }
});
