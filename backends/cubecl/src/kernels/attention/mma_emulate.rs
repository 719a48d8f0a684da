//! CPU emulation of the kernel's fragment plumbing: `ldmatrix` (x4, with and without
//! `.trans`) and `mma.sync` m16n8k16 as the PTX ISA lays out their registers, driven by the
//! kernel's own lane addresses ([`q_lane`], [`k_lane`], [`v_lane`]) and register choices
//! (`half`, `p_frag`), checked against plain matmuls: `S = Q·Kᵀ` in the C layout, then
//! `O = P·V` with P taken from S's C registers as the A fragment. Also the asynchronous copy
//! schedule (see [`schedule`]) against a model of the stage barriers, and the copies' index
//! math.

use super::{frag_ahead, k_lane, k_step, q_lane, q_row0, rows, stages, v_lane, v_step, FRAG, PLANES, PLANES_WIDE, TN};
use crate::kernels::attention::cmma::BK;
use crate::kernels::attention::cmma::{PLANE, VEC};
use crate::kernels::attention::MASKED;

use crate::kernels::mma_emulate::{half, ldmatrix_x4, mma, Frag, LANES};

/// A zeroed accumulator.
fn acc() -> Frag {
    vec![vec![[0.0; 2]; 2]; LANES]
}

/// Element `(row, col)` of an n8 accumulator tile at column `c0`, if lane `l` holds it.
fn c_at(tile: &Frag, c0: usize, row: usize, col: usize) -> f32 {
    let (v, g, cc) = (row / 8, row % 8, col - c0);
    tile[g * 4 + cc / 2][v][cc % 2]
}

fn check_head_dim(d: usize, planes: usize) {
    let bq = rows(planes);
    let ks = d + 8;
    // Small integers: every product and sum is exact in f32.
    let q = |r: usize, c: usize| ((r * 7 + c * 3) % 5) as f32 - 2.0;
    let kf = |j: usize, c: usize| ((j * 5 + c * 11) % 7) as f32 - 3.0;
    let vf = |j: usize, c: usize| ((j * 3 + c * 13) % 9) as f32 - 4.0;
    // The shared array as the kernel lays it out (row stride `d + 8`, NaN in the pads and
    // unused rows): K and V tiles of a block in stage 0, Q in the last stage.
    let n_stages = stages(planes);
    let mut sm = vec![f32::NAN; n_stages * 2 * BK * ks];
    let mut put = |f: &dyn Fn(usize, usize) -> f32, rows: usize, at: usize| {
        for r in 0..rows {
            for c in 0..d {
                sm[(at + r) * ks + c] = f(r, c);
            }
        }
    };
    assert_eq!(q_row0(planes), (n_stages - 1) * 2 * BK, "Q in the last stage");
    assert!(n_stages >= 2 && q_row0(planes) + bq <= n_stages * 2 * BK, "Q fits the last stage");
    put(&q, bq, q_row0(planes));
    let (cur, cur_v) = (0, BK * ks);
    put(&kf, BK, 0);
    put(&vf, BK, BK);
    let q_base = q_row0(planes) * ks;
    for plane in 0..planes {
        let strip0 = plane * FRAG;
        let qf: Vec<Frag> = (0..d / FRAG)
            .map(|dk| {
                let addr: Vec<usize> = (0..LANES).map(|l| q_base + strip0 * ks + q_lane(l, ks) + dk * FRAG).collect();
                ldmatrix_x4(&sm, &addr, false)
            })
            .collect();
        let mut sf: Vec<Frag> = (0..BK / TN).map(|_| acc()).collect();
        for (dk, qa) in qf.iter().enumerate() {
            for kn in 0..BK / FRAG {
                let addr: Vec<usize> = (0..LANES).map(|l| cur + k_lane(l, ks) + kn * FRAG * ks + dk * FRAG).collect();
                let b = ldmatrix_x4(&sm, &addr, false);
                mma(qa, &half(&b, 0), &mut sf[2 * kn]);
                mma(qa, &half(&b, 2), &mut sf[2 * kn + 1]);
            }
        }
        let s = |r: usize, j: usize| (0..d).map(|c| q(strip0 + r, c) * kf(j, c)).sum::<f32>();
        for r in 0..FRAG {
            for j in 0..BK {
                assert_eq!(c_at(&sf[j / TN], j / TN * TN, r, j), s(r, j), "d {d} plane {plane} S[{r}][{j}]");
            }
        }

        let mut of: Vec<Frag> = (0..d / TN).map(|_| acc()).collect();
        for kk in 0..BK / FRAG {
            // The kernel's `p_frag`: lo's pairs, then hi's.
            let pa: Frag = (0..LANES)
                .map(|l| vec![sf[2 * kk][l][0], sf[2 * kk][l][1], sf[2 * kk + 1][l][0], sf[2 * kk + 1][l][1]])
                .collect();
            for dn in 0..d / FRAG {
                let addr: Vec<usize> = (0..LANES).map(|l| cur_v + v_lane(l, ks) + kk * FRAG * ks + dn * FRAG).collect();
                let b = ldmatrix_x4(&sm, &addr, true);
                mma(&pa, &half(&b, 0), &mut of[2 * dn]);
                mma(&pa, &half(&b, 2), &mut of[2 * dn + 1]);
            }
        }
        for r in 0..FRAG {
            for c in 0..d {
                let want = (0..BK).map(|j| s(r, j) * vf(j, c)).sum::<f32>();
                assert_eq!(c_at(&of[c / TN], c / TN * TN, r, c), want, "d {d} plane {plane} O[{r}][{c}]");
            }
        }
    }
}

#[test]
fn fragments_of_both_products_match_plain_matmuls() {
    for d in [64, 128] {
        for planes in [PLANES, PLANES_WIDE] {
            check_head_dim(d, planes);
        }
    }
}

/// The kernel's online softmax for one row, block by block of [`BK`] scores (`None`:
/// masked): running max `m` from `MASKED`, `corr = e^(m - m_new)`, P = `e^(s - base)` with
/// `base` = `m_new`, or 0 while `m_new` is still `MASKED`; returns `(Σ p·v, l, m)`.
fn online_row(scores: &[Option<f32>], v: &[f32]) -> (f32, f32, f32) {
    let (mut m, mut l, mut o) = (MASKED, 0f32, 0f32);
    for (blk, vb) in scores.chunks(BK).zip(v.chunks(BK)) {
        let s: Vec<f32> = blk.iter().map(|x| x.unwrap_or(MASKED)).collect();
        let mx = s.iter().copied().fold(MASKED, f32::max);
        let m_new = m.max(mx);
        let corr = (m - m_new).exp();
        let base = if m_new == MASKED { 0.0 } else { m_new };
        let p: Vec<f32> = s.iter().map(|x| (x - base).exp()).collect();
        l = l * corr + p.iter().sum::<f32>();
        o = o * corr + p.iter().zip(vb).map(|(p, v)| p * v).sum::<f32>();
        m = m_new;
    }
    (o, l, m)
}

#[test]
fn masked_scores_never_count_even_when_a_row_starts_masked() {
    // Three blocks; the row's allowed keys start in the last (FlashMask masking the early
    // keys), or are scattered; values of masked keys are large so any leak shows.
    let n = 3 * BK;
    let v: Vec<f32> = (0..n).map(|j| if j % 3 == 0 { 1000.0 } else { (j % 7) as f32 - 3.0 }).collect();
    let patterns: [&dyn Fn(usize) -> bool; 4] =
        [&|j| j >= 2 * BK + 5, &|j| j == n - 1, &|j| j % 17 == 1 && j > BK, &|j| !(3..2 * BK).contains(&j)];
    for (t, allowed) in patterns.iter().enumerate() {
        let scores: Vec<Option<f32>> = (0..n).map(|j| allowed(j).then(|| ((j * 13) % 11) as f32 * 0.5 - 2.0)).collect();
        let (o, l, m) = online_row(&scores, &v);
        let real: Vec<(f32, f32)> = scores.iter().zip(&v).filter_map(|(s, v)| s.map(|s| (s, *v))).collect();
        let mx = real.iter().map(|r| r.0).fold(f32::MIN, f32::max);
        let l_ref: f32 = real.iter().map(|(s, _)| (s - mx).exp()).sum();
        let o_ref: f32 = real.iter().map(|(s, v)| (s - mx).exp() * v).sum();
        assert_eq!(m, mx, "pattern {t}");
        assert!((l - l_ref).abs() <= 1e-5 * l_ref, "pattern {t}: l {l} vs {l_ref}");
        assert!((o / l - o_ref / l_ref).abs() <= 1e-3, "pattern {t}: o {} vs {}", o / l, o_ref / l_ref);
    }
}

#[test]
fn ldmatrix_rows_are_16_byte_aligned_and_conflict_free() {
    for d in [64, 128] {
        let ks = d + 8;
        for f in [q_lane, k_lane, v_lane] {
            let addr: Vec<usize> = (0..LANES).map(|l| f(l, ks)).collect();
            assert!(addr.iter().all(|a| a % 8 == 0), "d {d}: {addr:?}");
            // Each 8×8 matrix: eight 16-byte rows in distinct 16-byte bank groups.
            for m in 0..4 {
                let mut groups: Vec<usize> = addr[8 * m..8 * m + 8].iter().map(|a| a * 2 / 16 % 8).collect();
                groups.sort_unstable();
                groups.dedup();
                assert_eq!(groups.len(), 8, "d {d} matrix {m}");
            }
        }
    }
}

/// What a stage (or the Q rows of the last stage) holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Data {
    Q,
    Block(usize),
}

/// One operation of the kernel's copy schedule (the same for every unit).
#[derive(Clone, Copy, Debug)]
enum Op {
    /// The unit's copies of `Data` into stage `stage`.
    Copy(Data, usize),
    /// `commit_copy_async` on barrier `b`.
    Commit(usize),
    /// `arrive_and_wait` on barrier `b`.
    Wait(usize),
    /// `ldmatrix` reads of `Data` from stage `stage`.
    Read(Data, usize),
}

/// The kernel's schedule with `stages` stages for a key range of `n` blocks, its loop
/// variables as the kernel keeps them; `ahead` = `stages - 1` is the kernel (blocks copied
/// `ahead` iterations before their reads, `ahead` of them before the loop).
fn schedule(stages: usize, n: usize, ahead: usize) -> Vec<Op> {
    let last = stages - 1;
    let mut ops = vec![Op::Copy(Data::Q, last), Op::Commit(last)];
    for b in 0..ahead.min(n) {
        ops.extend([Op::Copy(Data::Block(b), b), Op::Commit(b)]);
    }
    ops.extend([Op::Wait(last), Op::Read(Data::Q, last)]);
    let mut stage = 0;
    for i in 0..n {
        ops.push(Op::Wait(stage));
        if i + ahead < n {
            let mut fill = stage + ahead;
            if fill >= stages {
                fill -= stages;
            }
            ops.extend([Op::Copy(Data::Block(i + ahead), fill), Op::Commit(fill)]);
        }
        ops.push(Op::Read(Data::Block(i), stage));
        stage += 1;
        if stage == stages {
            stage = 0;
        }
    }
    ops
}

/// Stages a schedule may use (the model's arrays).
const MAX_STAGES: usize = 4;

/// What a stage holds: its data, the barrier phase its copies were committed in, whether they
/// have landed, and the op of its last read.
#[derive(Clone, Copy, Debug, Default)]
struct Stage {
    data: Option<Data>,
    committed: Option<(usize, usize)>,
    landed: bool,
    last_read: Option<usize>,
}

/// Runs `ops` against the barrier model: a wait on barrier `b` completes its current phase
/// (the copies committed to `b` in that phase have landed, and every unit has arrived, so
/// every read before the wait is done, in every unit).
///
/// # Errors
/// The first hazard met.
fn check(ops: &[Op], n: usize) -> Result<(), String> {
    let mut stages = [Stage::default(); MAX_STAGES];
    let mut phase = [0usize; MAX_STAGES];
    let mut uncommitted = Vec::new();
    let mut last_wait: Option<usize> = None;
    let mut reads = Vec::new();
    for (i, op) in ops.iter().enumerate() {
        match *op {
            Op::Copy(data, st) => {
                let s = &mut stages[st];
                if s.data.is_some() && s.last_read.is_none() {
                    return Err(format!("stage {st} overwritten unread at op {i}"));
                }
                if s.data.is_some() && s.last_read >= last_wait {
                    return Err(format!("stage {st} refilled before a cube-wide wait at op {i}"));
                }
                *s = Stage { data: Some(data), ..Stage::default() };
                uncommitted.push(st);
            }
            Op::Commit(b) => {
                for st in uncommitted.drain(..) {
                    stages[st].committed = Some((b, phase[b]));
                }
            }
            Op::Wait(b) => {
                for s in stages.iter_mut() {
                    if s.committed == Some((b, phase[b])) {
                        s.landed = true;
                    }
                }
                phase[b] += 1;
                last_wait = Some(i);
            }
            Op::Read(data, st) => {
                let s = &mut stages[st];
                if s.data != Some(data) || !s.landed {
                    return Err(format!("{data:?} read from {s:?} at op {i}"));
                }
                s.last_read = Some(i);
                reads.push(data);
            }
        }
    }
    if !uncommitted.is_empty() {
        return Err("copies never committed".into());
    }
    if let Some(s) = stages.iter().find(|s| s.data.is_some() && !(s.landed && s.last_read.is_some())) {
        return Err(format!("left in flight: {s:?}"));
    }
    let want: Vec<Data> = std::iter::once(Data::Q).chain((0..n).map(Data::Block)).collect();
    if reads != want {
        return Err(format!("reads {reads:?}"));
    }
    Ok(())
}

#[test]
fn every_block_is_read_after_its_copies_land_and_no_stage_is_refilled_early() {
    for planes in [PLANES, PLANES_WIDE] {
        let st = stages(planes);
        assert!((2..=MAX_STAGES).contains(&st));
        for n in 1..=20 {
            assert_eq!(check(&schedule(st, n, st - 1), n), Ok(()), "{planes} planes, {n} blocks");
        }
    }
}

#[test]
fn the_model_rejects_copies_further_ahead_and_an_early_refill_of_q() {
    for st in [2, 3] {
        // `st` blocks ahead refills the stage read in the same iteration.
        assert!(check(&schedule(st, 5, st), 5).is_err(), "{st} stages");
        // Block `st - 1` copied before the Q reads overwrites Q (the last stage) unread.
        let mut ops = schedule(st, 4, st - 1);
        let at = ops.iter().position(|op| matches!(op, Op::Wait(_))).unwrap();
        ops.insert(at, Op::Commit(st - 1));
        ops.insert(at, Op::Copy(Data::Block(st - 1), st - 1));
        assert!(check(&ops, 4).is_err(), "{st} stages");
    }
    // Three stages copying one block ahead (one stage idle) are safe too: the model is not
    // too strict.
    assert_eq!(check(&schedule(3, 6, 1), 6), Ok(()));
}

/// The kernel's copies (`copy_tile` as the kernel calls it) of Q and of the K tiles of a whole
/// key range, block by block, into a model of the shared array, checked element by element:
/// every slot of a tile written once, real rows from the right token and kv head, zeros past
/// the range.
fn check_copies(d: usize, planes: usize) {
    let units = PLANE * planes;
    let (row_v, ks_v) = (d / VEC, (d + 8) / VEC);
    let tile_v = BK * ks_v;
    let rstep = units / row_v;
    let (per, q_copies) = (BK / rstep, rows(planes) / rstep);
    // Global rows as vector ids: token t, head hh, column c.
    let (hq, hkv, h, q0, nq, k0, key_lo, key_hi) = (8, 2, 5, 3, rows(planes) - 5, 11, 7, 7 + 2 * BK + 9);
    let kvh = h / (hq / hkv);
    let id = |t: usize, hh: usize, heads: usize, c: usize| Some((t * heads + hh) * row_v + c);
    let q_base = q_row0(planes) * ks_v;
    let mut sm: Vec<Option<Option<usize>>> = vec![None; stages(planes) * 2 * tile_v];
    let copy_tile = |sm: &mut Vec<Option<Option<usize>>>,
                     from: usize,
                     stride: usize,
                     to: usize,
                     row0: usize,
                     n: usize,
                     count: usize| {
        let avail = n.saturating_sub(row0);
        for t in 0..count {
            let v = (t * rstep < avail).then_some(from + t * stride);
            let at = to + t * rstep * ks_v;
            assert!(sm[at].is_none(), "slot {at} written twice");
            sm[at] = Some(v);
        }
    };
    for unit in 0..units {
        let (col, row0) = (unit % row_v, unit / row_v);
        let slot0 = row0 * ks_v + col;
        copy_tile(
            &mut sm,
            ((q0 + row0) * hq + h) * row_v + col,
            hq * row_v * rstep,
            q_base + slot0,
            row0,
            nq,
            q_copies,
        );
    }
    for r in 0..rows(planes) {
        for c in 0..row_v {
            let want = (r < nq).then(|| id(q0 + r, h, hq, c)).flatten();
            assert_eq!(sm[q_base + r * ks_v + c], Some(want), "d {d} planes {planes} Q row {r} col {c}");
        }
    }
    // K blocks: each into a cleared stage, the source carried as the kernel carries it.
    let kv_row = hkv * row_v;
    for kb in (key_lo..key_hi).step_by(BK) {
        let mut tile: Vec<Option<Option<usize>>> = vec![None; 2 * tile_v];
        for unit in 0..units {
            let (col, row0) = (unit % row_v, unit / row_v);
            let mut src = ((k0 + key_lo + row0) * hkv + kvh) * row_v + col;
            src += (kb - key_lo) / BK * BK * kv_row;
            copy_tile(&mut tile, src, kv_row * rstep, row0 * ks_v + col, row0, key_hi - kb, per);
        }
        for r in 0..BK {
            for c in 0..row_v {
                let want = (kb + r < key_hi).then(|| id(k0 + kb + r, kvh, hkv, c)).flatten();
                assert_eq!(tile[r * ks_v + c], Some(want), "d {d} planes {planes} block {kb} row {r} col {c}");
            }
            assert!((row_v..ks_v).all(|c| tile[r * ks_v + c].is_none()), "pad written");
        }
    }
}

#[test]
fn the_copies_fill_q_and_every_k_tile_exactly() {
    for d in [64, 128] {
        for planes in [PLANES, PLANES_WIDE] {
            check_copies(d, planes);
        }
    }
}

#[test]
fn the_loads_ahead_loops_visit_the_nested_loops_steps_in_order() {
    // The loads-ahead form (`frag_ahead > 0`) runs the mma of the nested loops in the same
    // order (so the same sums, rounded the same), each fragment loaded `frag_ahead` steps
    // before.
    for d in [64, 128] {
        let nested_k: Vec<(usize, usize)> =
            (0..d / FRAG).flat_map(|dk| (0..BK / FRAG).map(move |kn| (dk, kn))).collect();
        let flat_k: Vec<(usize, usize)> = (0..nested_k.len()).map(k_step).collect();
        assert_eq!(flat_k, nested_k, "d {d}");
        let nested_v: Vec<(usize, usize)> =
            (0..BK / FRAG).flat_map(|kk| (0..d / FRAG).map(move |dn| (kk, dn))).collect();
        let flat_v: Vec<(usize, usize)> = (0..nested_v.len()).map(|i| v_step(i, d)).collect();
        assert_eq!(flat_v, nested_v, "d {d}");
    }
    assert_eq!((frag_ahead(PLANES), frag_ahead(PLANES_WIDE)), (0, 2));
}
