//! Selection scores recomputed in f64 from the (dtype-rounded) inputs, to judge near-ties and
//! to check the routing invariants on any backend, the reference included.

use crate::compare::{near, SCORE_REL};
use moekit_ops::{HostTensor, RouteProblem, ScoreFn};

/// f64 scores of one routing problem.
#[derive(Clone, Debug)]
pub struct Scores {
    /// Tokens.
    pub tokens: usize,
    /// Experts.
    pub experts: usize,
    /// `[T, E]` score (softmax over allowed experts or sigmoid); 0 for masked experts.
    pub score: Vec<f64>,
    /// `[T, E]` selection score `score + bias`; `-inf` for masked experts.
    pub sel: Vec<f64>,
    /// `[T, E]`: the expert lies in a group the token keeps (all `true` without groups).
    pub in_groups: Vec<bool>,
    /// `[T]`: the group choice is a near-tie (f32 may keep another group).
    pub ambiguous: Vec<bool>,
}

impl Scores {
    /// Recompute from the problem and its inputs (`logits [T, E]`, or `hidden [T, H]` and
    /// `gate [H, E]`; optional `bias [E]`).
    pub fn new(p: &RouteProblem, logits: &HostTensor, gate: Option<&HostTensor>, bias: Option<&HostTensor>) -> Self {
        let (t, e) = (p.tokens, p.experts);
        let raw = match (p.hidden, gate) {
            (Some(h), Some(g)) => {
                let (x, w) = (logits.to_f64_vec(), g.to_f64_vec());
                let mut out = vec![0.0; t * e];
                for ti in 0..t {
                    for hi in 0..h {
                        let xv = x[ti * h + hi];
                        for ei in 0..e {
                            out[ti * e + ei] += xv * w[hi * e + ei];
                        }
                    }
                }
                out
            }
            _ => logits.to_f64_vec(),
        };
        let bias = bias.map(|b| b.to_f64_vec()).unwrap_or_else(|| vec![0.0; e]);
        let mut s = Scores {
            tokens: t,
            experts: e,
            score: vec![0.0; t * e],
            sel: vec![f64::NEG_INFINITY; t * e],
            in_groups: vec![true; t * e],
            ambiguous: vec![false; t],
        };
        for ti in 0..t {
            let row = &raw[ti * e..(ti + 1) * e];
            let max = (0..e).filter(|&x| p.allowed(x)).map(|x| row[x]).fold(f64::NEG_INFINITY, f64::max);
            let denom: f64 = (0..e).filter(|&x| p.allowed(x)).map(|x| (row[x] - max).exp()).sum();
            for ei in (0..e).filter(|&x| p.allowed(x)) {
                let sc = match p.score {
                    ScoreFn::Softmax => (row[ei] - max).exp() / denom,
                    ScoreFn::Sigmoid => 1.0 / (1.0 + (-row[ei]).exp()),
                };
                s.score[ti * e + ei] = sc;
                s.sel[ti * e + ei] = sc + bias[ei];
            }
            if let Some(g) = p.groups {
                s.limit_groups(ti, g.n_group, g.topk_group);
            }
        }
        s
    }

    fn limit_groups(&mut self, t: usize, n_group: usize, topk_group: usize) {
        let e = self.experts;
        let size = e / n_group;
        let sel = &self.sel[t * e..(t + 1) * e];
        let gscore: Vec<f64> = (0..n_group)
            .map(|g| {
                let mut v: Vec<f64> = sel[g * size..(g + 1) * size].iter().copied().filter(|x| x.is_finite()).collect();
                v.sort_by(|a, b| b.total_cmp(a));
                match v.len() {
                    0 => f64::NEG_INFINITY,
                    1 => v[0],
                    _ => v[0] + v[1],
                }
            })
            .collect();
        let mut order: Vec<usize> = (0..n_group).collect();
        order.sort_by(|&a, &b| gscore[b].total_cmp(&gscore[a]).then(a.cmp(&b)));
        if topk_group < n_group {
            let (last, next) = (gscore[order[topk_group - 1]], gscore[order[topk_group]]);
            // NOTE: an exact f64 tie counts too: each group score is a sum of two f32 values
            // (score + bias) that the backend adds in f32, which can round two sums that tie
            // in f64 apart, either way (seen with quantised logits, sigmoid, bias and groups).
            self.ambiguous[t] = near(last, next, SCORE_REL);
        }
        for (rank, &g) in order.iter().enumerate() {
            for x in g * size..(g + 1) * size {
                self.in_groups[t * e + x] = rank < topk_group;
            }
        }
    }

    /// Selection score of expert `x` for token `t`.
    pub fn sel(&self, t: usize, x: usize) -> f64 {
        self.sel[t * self.experts + x]
    }

    /// Checks `ids` (one token's k ids) are in range, allowed, distinct and inside the kept
    /// groups (unless the group choice is a near-tie).
    ///
    /// # Errors
    /// What is wrong, naming the token.
    pub fn check_valid(&self, t: usize, ids: &[i32]) -> Result<(), String> {
        for (j, &id) in ids.iter().enumerate() {
            if id < 0 || id as usize >= self.experts {
                return Err(format!("token {t}: id {id} outside 0..{}", self.experts));
            }
            let x = id as usize;
            if self.sel(t, x) == f64::NEG_INFINITY {
                return Err(format!("token {t}: id {id} is masked out"));
            }
            if ids[..j].contains(&id) {
                return Err(format!("token {t}: id {id} chosen twice: {ids:?}"));
            }
            if !self.ambiguous[t] && !self.in_groups[t * self.experts + x] {
                return Err(format!("token {t}: id {id} lies outside the kept groups"));
            }
        }
        Ok(())
    }

    /// Checks `ids` is a top-k of the token: ordered by selection score (exact ties by lower
    /// index) and no unchosen candidate scores better (within [`SCORE_REL`]).
    ///
    /// # Errors
    /// What is wrong, naming the token.
    pub fn check_top_k(&self, t: usize, ids: &[i32]) -> Result<(), String> {
        self.check_valid(t, ids)?;
        let sel: Vec<f64> = ids.iter().map(|&i| self.sel(t, i as usize)).collect();
        for j in 1..ids.len() {
            let ordered = if sel[j - 1] == sel[j] { ids[j - 1] < ids[j] } else { sel[j - 1] > sel[j] };
            if !ordered && !near(sel[j - 1], sel[j], SCORE_REL) {
                return Err(format!("token {t}: ids {ids:?} not ordered by score {sel:?}"));
            }
        }
        if self.ambiguous[t] || ids.is_empty() {
            return Ok(());
        }
        let min = sel.iter().copied().fold(f64::INFINITY, f64::min);
        let worst = ids[sel.iter().position(|&s| s == min).unwrap_or(0)];
        for x in 0..self.experts {
            let (s, cand) = (self.sel(t, x), self.in_groups[t * self.experts + x]);
            if !cand || s == f64::NEG_INFINITY || ids.contains(&(x as i32)) {
                continue;
            }
            if s > min && !near(s, min, SCORE_REL) {
                return Err(format!("token {t}: unchosen expert {x} scores {s} above chosen {min} ({ids:?})"));
            }
            if s == min && (x as i32) < worst {
                return Err(format!("token {t}: exact tie at {s} should go to expert {x}, not {worst}"));
            }
        }
        Ok(())
    }

    /// Expected weights of the chosen `ids` of token `t`: scores, renormalised and scaled.
    pub fn weights(&self, p: &RouteProblem, t: usize, ids: &[i32]) -> Vec<f64> {
        let sc: Vec<f64> = ids.iter().map(|&i| self.score[t * self.experts + i as usize]).collect();
        let sum: f64 = sc.iter().sum();
        sc.iter().map(|&s| if p.renormalize { s / sum } else { s } * p.scaling as f64).collect()
    }

    /// Expected load `[E]`: per-expert sum of scores over tokens.
    pub fn load(&self) -> Vec<f64> {
        let e = self.experts;
        (0..e).map(|x| (0..self.tokens).map(|t| self.score[t * e + x]).sum()).collect()
    }
}
