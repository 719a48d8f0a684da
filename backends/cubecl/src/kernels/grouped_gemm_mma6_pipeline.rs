//! CPU emulation of the sixth kernel's copy pipeline (no GPU here): the kernel's sequence of
//! copies, commits, barrier waits, stage reads and cube syncs (the same for every unit), run
//! against a model of the barriers. A wait on barrier `b` completes its current phase: the
//! copies committed to `b` in that phase have landed, and every unit has arrived, so every
//! read before the wait is done.

use super::STAGES;

/// One pipeline operation of a unit.
#[derive(Clone, Copy, Debug)]
enum Op {
    /// The unit's copies of K step `step` into stage `stage`.
    Copy { step: usize, stage: usize },
    /// `commit_copy_async` on barrier `b`.
    Commit(usize),
    /// `arrive_and_wait` on barrier `b`.
    Wait(usize),
    /// `ldmatrix` reads of K step `step` from stage `stage`.
    Read { step: usize, stage: usize },
    /// `sync_cube`.
    Sync,
}

/// The operations for one expert of `steps` K steps, copies issued `ahead` steps before
/// their reads; `ahead` = [`AHEAD`] is `grouped_gemm_mma6_kernel` (those of steps 0, 1 and 2
/// that exist before the loop; in the loop, wait on the step's barrier, copy step + 3, read).
fn expert(steps: usize, ahead: usize, ops: &mut Vec<Op>) {
    for step in 0..ahead.min(steps) {
        ops.push(Op::Copy { step, stage: step % STAGES });
        ops.push(Op::Commit(step % STAGES));
    }
    for step in 0..steps {
        let cur = step % STAGES;
        ops.push(Op::Wait(cur));
        if step + ahead < steps {
            let st = (step + ahead) % STAGES;
            ops.push(Op::Copy { step: step + ahead, stage: st });
            ops.push(Op::Commit(st));
        }
        ops.push(Op::Read { step, stage: cur });
    }
    ops.push(Op::Sync);
}

/// How many steps ahead the kernel copies.
const AHEAD: usize = STAGES - 1;

/// What a stage holds: `(expert, step)`, the barrier phase its copies were committed in, and
/// whether a read has used it.
#[derive(Clone, Copy, Debug, Default)]
struct Stage {
    data: Option<(usize, usize)>,
    committed: Option<(usize, usize)>,
    landed: bool,
    read: bool,
    last_read: Option<usize>,
}

/// Runs the operations of experts with `steps[i]` K steps each, copying `ahead` steps ahead,
/// against the barrier model.
///
/// # Errors
/// The first hazard met.
fn check(steps: &[usize], ahead: usize) -> Result<(), String> {
    let mut ops = Vec::new();
    let mut starts = Vec::new();
    for &s in steps {
        starts.push(ops.len());
        expert(s, ahead, &mut ops);
    }
    let expert_at = |i: usize| starts.iter().rposition(|&s| s <= i).unwrap_or(0);
    let mut stages = [Stage::default(); STAGES];
    let mut phase = [0usize; STAGES];
    let mut uncommitted: Vec<usize> = Vec::new();
    let mut last_barrier: Option<usize> = None;
    let mut reads = vec![Vec::new(); steps.len()];
    for (i, op) in ops.iter().enumerate() {
        let e = expert_at(i);
        match *op {
            Op::Copy { step, stage } => {
                let s = &mut stages[stage];
                // The stage's previous data was read, by every unit before a cube-wide wait.
                if s.data.is_some() && !s.read {
                    return Err(format!("stage {stage} overwritten unread at op {i}"));
                }
                if s.data.is_some() && s.last_read >= last_barrier {
                    return Err(format!("stage {stage} refilled before a cube-wide wait at op {i}"));
                }
                *s = Stage { data: Some((e, step)), ..Stage::default() };
                uncommitted.push(stage);
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
                last_barrier = Some(i);
            }
            Op::Read { step, stage } => {
                let s = &mut stages[stage];
                if s.data != Some((e, step)) || !s.landed {
                    return Err(format!("step {step} of expert {e} read from {s:?} at op {i}"));
                }
                s.read = true;
                s.last_read = Some(i);
                reads[e].push(step);
            }
            Op::Sync => last_barrier = Some(i),
        }
    }
    // Nothing in flight at the end, every copy read, every step read once and in order.
    if !uncommitted.is_empty() {
        return Err("copies never committed".into());
    }
    if let Some(s) = stages.iter().find(|s| s.data.is_some() && !(s.landed && s.read)) {
        return Err(format!("left in flight: {s:?}"));
    }
    for (e, r) in reads.iter().enumerate() {
        if *r != (0..steps[e]).collect::<Vec<_>>() {
            return Err(format!("expert {e} read steps {r:?}"));
        }
    }
    Ok(())
}

#[test]
fn every_step_is_read_after_its_copies_land_and_no_stage_is_refilled_early() {
    for s in 0..=20 {
        assert_eq!(check(&[s], AHEAD), Ok(()), "{s}");
    }
    // A cube of the contiguous layout may run several experts (the K loop again per expert).
    for a in 0..=7 {
        for b in 0..=7 {
            assert_eq!(check(&[a, b], AHEAD), Ok(()), "{a} {b}");
            assert_eq!(check(&[a, b, (a + b) % 5 + 1], AHEAD), Ok(()), "{a} {b}");
        }
    }
}

#[test]
fn the_model_rejects_copies_one_step_further_ahead() {
    // As many steps ahead as there are stages refills the stage read in the same step.
    assert!(check(&[STAGES + 1], AHEAD + 1).is_err());
    // Copies of the next step only (one stage idle) are safe too: the model is not too strict.
    assert_eq!(check(&[9, 2], 1), Ok(()));
}

#[test]
fn accumulator_pairs_are_adjacent_columns_of_one_row() {
    // The PTX m16n8k16 accumulator layout : element `n` of
    // lane `l` at row `l/4 + 8·(n/2)`, column `2·(l%4) + n%2`. `write_pairs` stores elements
    // `2v`, `2v + 1` as the pair at column `c` (even): every pair of the n8 tile once.
    let pos = |l: usize, n: usize| (l / 4 + 8 * (n / 2), 2 * (l % 4) + n % 2);
    let mut pairs = std::collections::HashSet::new();
    for lane in 0..32 {
        for v in 0..2 {
            let (r, c) = pos(lane, 2 * v);
            assert_eq!(c % 2, 0, "lane {lane}");
            assert_eq!(pos(lane, 2 * v + 1), (r, c + 1), "lane {lane}");
            assert!(pairs.insert((r, c / 2)), "lane {lane}");
        }
    }
    assert_eq!(pairs.len(), 16 * 8 / 2);
}

#[test]
fn the_closed_form_copy_slots_cover_each_tile_once() {
    use super::{BK, BM, BN, LDA, LDB_KN, LDB_NK};
    // `a_slot` and both `b_slot`s have the form `v / q · ld + v % q` (vector `v` of the tile,
    // `q` vectors per tile row, row stride `ld` in vectors); `copy` uses the unit's first
    // slot plus `i · (units / q) · ld` for its vector `i`.
    let (vec, units) = (8, 256);
    let slot = |v: usize, q: usize, ld: usize| v / q * ld + v % q;
    let tiles = [
        (BK / vec, LDA / vec, BM * BK / vec),
        (BN / vec, LDB_KN / vec, BK * BN / vec),
        (BK / vec, LDB_NK / vec, BK * BN / vec),
    ];
    for (q, ld, total) in tiles {
        assert!(units % q == 0 && total % units == 0);
        let mut seen = std::collections::HashSet::new();
        for unit in 0..units {
            for i in 0..total / units {
                let s = slot(unit, q, ld) + i * (units / q) * ld;
                assert_eq!(s, slot(unit + i * units, q, ld), "unit {unit} vector {i}");
                assert!(seen.insert(s));
            }
        }
        assert_eq!(seen.len(), total);
    }
}
