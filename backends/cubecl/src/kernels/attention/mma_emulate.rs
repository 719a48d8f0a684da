//! CPU emulation of the kernel's fragment plumbing: `ldmatrix` (x4, with and without
//! `.trans`) and `mma.sync` m16n8k16 as the PTX ISA lays out their registers, driven by the
//! kernel's own lane addresses ([`q_lane`], [`k_lane`], [`v_lane`]) and register choices
//! (`half`, `p_frag`), checked against plain matmuls: `S = Q·Kᵀ` in the C layout, then
//! `O = P·V` with P taken from S's C registers as the A fragment.

use super::{k_lane, q_lane, q_row0, rows, v_lane, FRAG, PLANES, PLANES_WIDE, TN};
use crate::kernels::attention::cmma::BK;
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
    // Stages as the kernel lays them out (row stride `d + 8`): Q of the whole cube in the
    // last `bq` rows of both K stages (NaN elsewhere), K, V.
    let stage = |f: &dyn Fn(usize, usize) -> f32, rows: usize, at: usize| {
        let mut s = vec![f32::NAN; (at + rows) * ks];
        for r in 0..rows {
            for c in 0..d {
                s[(at + r) * ks + c] = f(r, c);
            }
        }
        s
    };
    assert_eq!(q_row0(planes) + bq, 2 * BK, "Q fills the K stages up to their end");
    let (qs, kst, vst) = (stage(&q, bq, q_row0(planes)), stage(&kf, BK, 0), stage(&vf, BK, 0));
    let q_base = q_row0(planes) * ks;
    for plane in 0..planes {
        let strip0 = plane * FRAG;
        let qf: Vec<Frag> = (0..d / FRAG)
            .map(|dk| {
                let addr: Vec<usize> = (0..LANES).map(|l| q_base + strip0 * ks + q_lane(l, ks) + dk * FRAG).collect();
                ldmatrix_x4(&qs, &addr, false)
            })
            .collect();
        let mut sf: Vec<Frag> = (0..BK / TN).map(|_| acc()).collect();
        for (dk, qa) in qf.iter().enumerate() {
            for kn in 0..BK / FRAG {
                let addr: Vec<usize> = (0..LANES).map(|l| k_lane(l, ks) + kn * FRAG * ks + dk * FRAG).collect();
                let b = ldmatrix_x4(&kst, &addr, false);
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
                let addr: Vec<usize> = (0..LANES).map(|l| v_lane(l, ks) + kk * FRAG * ks + dn * FRAG).collect();
                let b = ldmatrix_x4(&vst, &addr, true);
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
