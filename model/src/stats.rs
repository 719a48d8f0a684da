//! Routing statistics, as the ERNIE 5.0 report analyses them: how often each routed expert is
//! chosen, per layer and per modality ([`RoutingStats::record`]), the normalised routing
//! entropy of a layer ([`RoutingStats::entropy`]: 1 when every expert is chosen equally often,
//! 0 when one expert takes everything) and the IoU of the most-used experts of two modalities
//! in a layer ([`RoutingStats::iou`]).

use serde::Serialize;
use std::collections::BTreeMap;

/// The modality of a token.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Modality {
    /// Text tokens.
    Text,
    /// Image tokens (visual codes of one frame).
    Image,
    /// Video tokens (visual codes of several frames).
    Video,
    /// Audio frames.
    Audio,
}

/// Per (layer, modality), how many times each routed expert was chosen.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct RoutingStats {
    /// Routed experts `E`.
    pub experts: usize,
    /// `counts[layer][modality][e]`.
    pub counts: BTreeMap<usize, BTreeMap<Modality, Vec<u64>>>,
}

impl RoutingStats {
    /// Empty statistics over `experts` routed experts.
    pub fn new(experts: usize) -> Self {
        RoutingStats { experts, counts: BTreeMap::new() }
    }

    /// Counts the choices `ids` (any number of tokens × k, each in `0..E`) of tokens of
    /// `modality` in `layer`. Ids outside `0..E` are not counted.
    pub fn record(&mut self, layer: usize, modality: Modality, ids: &[i32]) {
        let e = self.experts;
        let c = self.counts.entry(layer).or_default().entry(modality).or_insert_with(|| vec![0; e]);
        for &id in ids {
            if let Some(slot) = usize::try_from(id).ok().and_then(|i| c.get_mut(i)) {
                *slot += 1;
            }
        }
    }

    /// The counts of `modality` in `layer` (all modalities summed with `None`).
    pub fn layer_counts(&self, layer: usize, modality: Option<Modality>) -> Option<Vec<u64>> {
        let l = self.counts.get(&layer)?;
        match modality {
            Some(m) => l.get(&m).cloned(),
            None => Some((0..self.experts).map(|e| l.values().map(|c| c[e]).sum()).collect()),
        }
    }

    /// The normalised routing entropy of `layer` over every modality: `H(p) / ln E` with `p`
    /// the share of choices of each expert; `None` for a layer with no choices or `E < 2`.
    pub fn entropy(&self, layer: usize) -> Option<f64> {
        let c = self.layer_counts(layer, None)?;
        let total: u64 = c.iter().sum();
        if total == 0 || self.experts < 2 {
            return None;
        }
        let h: f64 = c
            .iter()
            .filter(|&&n| n > 0)
            .map(|&n| {
                let p = n as f64 / total as f64;
                -p * p.ln()
            })
            .sum();
        Some(h / (self.experts as f64).ln())
    }

    /// The `ceil(E/4)` most-used experts of `modality` in `layer` (ties to the lower id).
    pub fn top_quarter(&self, layer: usize, modality: Modality) -> Option<Vec<usize>> {
        let c = self.layer_counts(layer, Some(modality))?;
        let mut order: Vec<usize> = (0..self.experts).collect();
        order.sort_by(|&a, &b| c[b].cmp(&c[a]).then(a.cmp(&b)));
        order.truncate(self.experts.div_ceil(4));
        order.sort_unstable();
        Some(order)
    }

    /// The IoU of the top-quarter experts of modalities `a` and `b` in `layer`; `None` when
    /// either has no choices there.
    pub fn iou(&self, layer: usize, a: Modality, b: Modality) -> Option<f64> {
        let (ta, tb) = (self.top_quarter(layer, a)?, self.top_quarter(layer, b)?);
        let inter = ta.iter().filter(|e| tb.contains(e)).count();
        let union = ta.len() + tb.len() - inter;
        Some(inter as f64 / union.max(1) as f64)
    }

    /// The statistics as JSON (counts per layer and modality, and each layer's entropy).
    pub fn to_json(&self) -> String {
        #[derive(Serialize)]
        struct Out<'a> {
            stats: &'a RoutingStats,
            entropy: BTreeMap<usize, Option<f64>>,
        }
        let entropy = self.counts.keys().map(|&l| (l, self.entropy(l))).collect();
        // NOTE: plain maps of numbers cannot fail to serialise.
        serde_json::to_string_pretty(&Out { stats: self, entropy }).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entropy_is_one_for_uniform_and_zero_for_a_single_expert() {
        let mut s = RoutingStats::new(8);
        s.record(0, Modality::Text, &(0..8).collect::<Vec<i32>>());
        s.record(1, Modality::Text, &[3; 10]);
        assert!((s.entropy(0).unwrap() - 1.0).abs() < 1e-12);
        assert_eq!(s.entropy(1), Some(0.0));
        assert_eq!(s.entropy(2), None);
        // Two experts equally: ln 2 / ln 8 = 1/3.
        s.record(2, Modality::Audio, &[1, 5, 1, 5]);
        assert!((s.entropy(2).unwrap() - 1.0 / 3.0).abs() < 1e-12);
        // Out-of-range ids are not counted.
        s.record(3, Modality::Text, &[-1, 8, 2]);
        assert_eq!(s.layer_counts(3, Some(Modality::Text)).unwrap().iter().sum::<u64>(), 1);
    }

    #[test]
    fn iou_of_the_most_used_quarter() {
        let mut s = RoutingStats::new(8);
        // Text favours experts 0 and 1, image 1 and 2, audio 6 and 7 (a quarter of 8 = 2).
        s.record(0, Modality::Text, &[0, 0, 0, 1, 1, 2]);
        s.record(0, Modality::Image, &[1, 1, 1, 2, 2, 0]);
        s.record(0, Modality::Audio, &[6, 6, 7, 7, 7]);
        assert_eq!(s.top_quarter(0, Modality::Text), Some(vec![0, 1]));
        assert_eq!(s.iou(0, Modality::Text, Modality::Text), Some(1.0));
        assert_eq!(s.iou(0, Modality::Text, Modality::Image), Some(1.0 / 3.0));
        assert_eq!(s.iou(0, Modality::Text, Modality::Audio), Some(0.0));
        assert_eq!(s.iou(0, Modality::Text, Modality::Video), None);
        // Summed over modalities.
        assert_eq!(s.layer_counts(0, None).unwrap(), vec![4, 5, 3, 0, 0, 0, 2, 3]);
        let json = s.to_json();
        assert!(json.contains("\"audio\"") && json.contains("\"entropy\""), "{json}");
    }
}
