//! The routing report of issue #5, drawn from [`RoutingStats`]: the normalised routing entropy
//! of every layer and the IoU of the most-used quarter of experts between every pair of
//! modalities per layer ([`Report`]: JSON and a printed table), and a heatmap of expert
//! activation per modality and layer ([`write_heatmap`], a PNG drawn with plotters).
//! [`write_all`] writes both files into a folder. The maths lives in [`crate::stats`]; this
//! module only arranges and draws it.

use crate::stats::{Modality, RoutingStats};
use plotters::coord::ranged1d::{DefaultFormatting, KeyPointHint};
use plotters::prelude::*;
use serde_json::{Map, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::ops::Range;
use std::path::{Path, PathBuf};

/// A report that could not be written.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    /// A folder or file could not be created or written.
    #[error("report: cannot write {path}: {source}")]
    Io {
        /// The path being written.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// plotters failed to draw or encode the figure (fonts, PNG encoding, file).
    #[error("report: drawing {path} failed: {message}")]
    Draw {
        /// The figure being drawn.
        path: PathBuf,
        /// plotters' error, as text.
        message: String,
    },
    /// There is nothing to draw: no experts, or no layer with counts.
    #[error("report: no routing statistics to draw")]
    Empty,
}

/// The lowercase name of a modality, as in the statistics' JSON.
pub fn modality_name(m: Modality) -> &'static str {
    match m {
        Modality::Text => "text",
        Modality::Image => "image",
        Modality::Video => "video",
        Modality::Audio => "audio",
    }
}

fn pair_name((a, b): (Modality, Modality)) -> String {
    format!("{}/{}", modality_name(a), modality_name(b))
}

/// The report of one layer.
#[derive(Clone, Debug, PartialEq)]
pub struct LayerReport {
    /// The layer index.
    pub layer: usize,
    /// Normalised routing entropy over every modality ([`RoutingStats::entropy`]).
    pub entropy: Option<f64>,
    /// IoU of the top-quarter experts ([`RoutingStats::iou`]) for each pair `(a, b)`, `a < b`,
    /// of modalities with choices in this layer.
    pub iou: BTreeMap<(Modality, Modality), f64>,
}

/// Entropy and IoU of every layer of a [`RoutingStats`], with the statistics themselves.
#[derive(Clone, Debug, PartialEq)]
pub struct Report {
    /// The statistics the report was computed from.
    pub stats: RoutingStats,
    /// One entry per layer with counts, by increasing layer.
    pub layers: Vec<LayerReport>,
}

impl Report {
    /// Computes the report of `stats`.
    pub fn new(stats: &RoutingStats) -> Self {
        let layers = stats
            .counts
            .iter()
            .map(|(&layer, by_mod)| {
                let mods: Vec<Modality> = by_mod.keys().copied().collect();
                let mut iou = BTreeMap::new();
                for (i, &a) in mods.iter().enumerate() {
                    for &b in &mods[i + 1..] {
                        if let Some(v) = stats.iou(layer, a, b) {
                            iou.insert((a, b), v);
                        }
                    }
                }
                // `+ 0.0` turns the `-0.0` of a one-expert layer into `0.0` for the table and JSON.
                LayerReport { layer, entropy: stats.entropy(layer).map(|h| h + 0.0), iou }
            })
            .collect();
        Report { stats: stats.clone(), layers }
    }

    /// Every modality pair with an IoU in some layer, in order.
    pub fn pairs(&self) -> Vec<(Modality, Modality)> {
        let set: BTreeSet<_> = self.layers.iter().flat_map(|l| l.iou.keys().copied()).collect();
        set.into_iter().collect()
    }

    /// The report as JSON, a superset of [`RoutingStats::to_json`]:
    /// `{"stats": {"experts", "counts": {layer: {modality: [..]}}}, "entropy": {layer: h},
    /// "iou": {layer: {"a/b": iou}}}` (keys in a stable order; `null` for an undefined entropy).
    pub fn to_json(&self) -> Value {
        let mut counts = Map::new();
        for (layer, by_mod) in &self.stats.counts {
            let m: Map<String, Value> =
                by_mod.iter().map(|(&m, c)| (modality_name(m).to_string(), Value::from(c.clone()))).collect();
            counts.insert(layer.to_string(), Value::Object(m));
        }
        let mut stats = Map::new();
        stats.insert("experts".into(), Value::from(self.stats.experts));
        stats.insert("counts".into(), Value::Object(counts));
        let (mut entropy, mut iou) = (Map::new(), Map::new());
        for l in &self.layers {
            entropy.insert(l.layer.to_string(), l.entropy.map_or(Value::Null, Value::from));
            let pairs: Map<String, Value> = l.iou.iter().map(|(&p, &v)| (pair_name(p), Value::from(v))).collect();
            iou.insert(l.layer.to_string(), Value::Object(pairs));
        }
        let mut out = Map::new();
        out.insert("stats".into(), Value::Object(stats));
        out.insert("entropy".into(), Value::Object(entropy));
        out.insert("iou".into(), Value::Object(iou));
        Value::Object(out)
    }

    /// A fixed-width text table: layer, entropy, then one IoU column per modality pair
    /// (`-` where the pair or the entropy is undefined), four decimals.
    pub fn table(&self) -> String {
        let pairs = self.pairs();
        let heads: Vec<String> = pairs.iter().map(|&p| format!("iou {}", pair_name(p))).collect();
        let widths: Vec<usize> = heads.iter().map(|h| h.len().max(6)).collect();
        let cell = |v: Option<f64>| v.map_or_else(|| "-".to_string(), |v| format!("{v:.4}"));
        let mut s = format!("{:>5}  {:>7}", "layer", "entropy");
        for (h, w) in heads.iter().zip(&widths) {
            let _ = write!(s, "  {h:>w$}");
        }
        s.push('\n');
        for l in &self.layers {
            let _ = write!(s, "{:>5}  {:>7}", l.layer, cell(l.entropy));
            for (p, w) in pairs.iter().zip(&widths) {
                let _ = write!(s, "  {:>w$}", cell(l.iou.get(p).copied()));
            }
            s.push('\n');
        }
        s
    }
}

/// The files [`write_all`] wrote.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReportFiles {
    /// `routing_heatmap.png`.
    pub heatmap: PathBuf,
    /// `routing_report.json`.
    pub json: PathBuf,
}

/// Writes `routing_heatmap.png` ([`write_heatmap`]) and `routing_report.json`
/// ([`Report::to_json`]) into `dir`, creating it if needed.
pub fn write_all(stats: &RoutingStats, dir: &Path) -> Result<ReportFiles, ReportError> {
    std::fs::create_dir_all(dir).map_err(|source| ReportError::Io { path: dir.to_path_buf(), source })?;
    let files = ReportFiles { heatmap: dir.join("routing_heatmap.png"), json: dir.join("routing_report.json") };
    let io = |source| ReportError::Io { path: files.json.clone(), source };
    let text = serde_json::to_string_pretty(&Report::new(stats).to_json()).map_err(|e| io(e.into()))?;
    std::fs::write(&files.json, text + "\n").map_err(io)?;
    write_heatmap(stats, &files.heatmap)?;
    Ok(files)
}

// Heatmap geometry: each panel holds `E × L` cells around a fixed frame for labels; a colour
// bar sits on the right.
const FRAME_W: u32 = 90;
const FRAME_H: u32 = 110;
const BAR_W: u32 = 120;

fn modalities(stats: &RoutingStats) -> Vec<Modality> {
    let set: BTreeSet<Modality> = stats.counts.values().flat_map(|m| m.keys().copied()).collect();
    set.into_iter().collect()
}

/// The pixel size `(width, height)` of the heatmap [`write_heatmap`] draws for `stats`.
pub fn heatmap_size(stats: &RoutingStats) -> (u32, u32) {
    let e = stats.experts.max(1) as u32;
    let l = stats.counts.len().max(1) as u32;
    let (cw, ch) = ((640 / e).clamp(3, 48), (448 / l).clamp(6, 48));
    let panels = modalities(stats).len().max(1) as u32;
    (panels * (FRAME_W + e * cw) + BAR_W, FRAME_H + l * ch)
}

/// Draws one PNG at `path` with one panel per modality present, side by side: a heatmap of
/// layer (rows, layer 0 at the bottom) × expert (columns) of the share of that layer's choices
/// of that modality going to each expert, on one viridis scale shown by a colour bar. Cells of
/// a layer without choices of the modality stay blank. The size is [`heatmap_size`].
pub fn write_heatmap(stats: &RoutingStats, path: &Path) -> Result<(), ReportError> {
    register_font(path)?;
    let mods = modalities(stats);
    if stats.experts == 0 || mods.is_empty() {
        return Err(ReportError::Empty);
    }
    let layers: Vec<usize> = stats.counts.keys().copied().collect();
    // shares[m][row] = share of each expert, None where the layer has no choices of m.
    let shares: Vec<Vec<Option<Vec<f64>>>> = mods
        .iter()
        .map(|&m| {
            layers
                .iter()
                .map(|&l| {
                    let c = stats.layer_counts(l, Some(m))?;
                    let total: u64 = c.iter().sum();
                    (total > 0).then(|| c.iter().map(|&n| n as f64 / total as f64).collect())
                })
                .collect()
        })
        .collect();
    let vmax = shares.iter().flatten().flatten().flatten().copied().fold(0.0, f64::max);
    let vmax = if vmax > 0.0 { vmax } else { 1.0 };
    draw(path, stats, &mods, &layers, &shares, vmax)
        .map_err(|message| ReportError::Draw { path: path.to_path_buf(), message })
}

/// An axis of `n` unit cells, `[i, i + 1)` for cell `i`, with ticks at the centres of at
/// most ~16 of them.
struct Cells(usize);

impl Ranged for Cells {
    type FormatOption = DefaultFormatting;
    type ValueType = f64;

    fn map(&self, v: &f64, (lo, hi): (i32, i32)) -> i32 {
        lo + (f64::from(hi - lo) * v / self.0.max(1) as f64).round() as i32
    }

    fn key_points<H: KeyPointHint>(&self, _: H) -> Vec<f64> {
        (0..self.0).step_by(self.0.div_ceil(16).max(1)).map(|i| i as f64 + 0.5).collect()
    }

    fn range(&self) -> Range<f64> {
        0.0..self.0 as f64
    }
}

fn draw(
    path: &Path,
    stats: &RoutingStats,
    mods: &[Modality],
    layers: &[usize],
    shares: &[Vec<Option<Vec<f64>>>],
    vmax: f64,
) -> Result<(), String> {
    let s = |e: &dyn std::fmt::Display| e.to_string();
    let (w, h) = heatmap_size(stats);
    let root = BitMapBackend::new(path, (w, h)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| s(&e))?;
    let (panels, bar) = root.split_horizontally(w - BAR_W);
    let (e_n, l_n) = (stats.experts, layers.len());
    for ((area, &m), rows) in panels.split_evenly((1, mods.len())).iter().zip(mods).zip(shares) {
        let mut chart = ChartBuilder::on(area)
            .caption(modality_name(m), ("sans-serif", 20))
            .margin(8)
            .x_label_area_size(40)
            .y_label_area_size(50)
            .build_cartesian_2d(Cells(e_n), Cells(l_n))
            .map_err(|e| s(&e))?;
        let layer_label = |v: &f64| layers.get(*v as usize).map_or_else(String::new, |l| l.to_string());
        chart
            .configure_mesh()
            .disable_mesh()
            .x_desc("expert")
            .y_desc("layer")
            .x_label_formatter(&|v| format!("{}", *v as usize))
            .y_label_formatter(&layer_label)
            .label_style(("sans-serif", 12))
            .axis_desc_style(("sans-serif", 14))
            .draw()
            .map_err(|e| s(&e))?;
        let cells = rows.iter().zip(0..).filter_map(|(r, y)| Some((r.as_ref()?, y as f64))).flat_map(|(r, y)| {
            r.iter().zip(0..).map(move |(&v, x)| {
                let x = x as f64;
                Rectangle::new([(x, y), (x + 1.0, y + 1.0)], ViridisRGB::get_color(v / vmax).filled())
            })
        });
        chart.draw_series(cells).map_err(|e| s(&e))?;
    }
    let mut scale = ChartBuilder::on(&bar)
        .caption("share", ("sans-serif", 16))
        .margin(8)
        .x_label_area_size(40)
        .y_label_area_size(55)
        .build_cartesian_2d(0.0..1.0, 0.0..vmax)
        .map_err(|e| s(&e))?;
    scale
        .configure_mesh()
        .disable_mesh()
        .disable_x_axis()
        .y_labels(6)
        .y_label_formatter(&|v| format!("{v:.3}"))
        .label_style(("sans-serif", 12))
        .draw()
        .map_err(|e| s(&e))?;
    const STEPS: usize = 64;
    let step = vmax / STEPS as f64;
    let bands = (0..STEPS).map(|i| {
        let lo = i as f64 * step;
        Rectangle::new([(0.0, lo), (1.0, lo + step)], ViridisRGB::get_color((i as f64 + 0.5) / STEPS as f64).filled())
    });
    scale.draw_series(bands).map_err(|e| s(&e))?;
    root.present().map_err(|e| s(&e))
}

/// DejaVu Sans (Bitstream Vera license, `assets/DejaVuSans-LICENSE.txt`), built in so the
/// figure needs no system font library.
static FONT: &[u8] = include_bytes!("../assets/DejaVuSans.ttf");

/// Makes the built-in font plotters' `sans-serif` (once per process).
fn register_font(path: &Path) -> Result<(), ReportError> {
    static DONE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    let ok = *DONE
        .get_or_init(|| plotters::style::register_font("sans-serif", plotters::style::FontStyle::Normal, FONT).is_ok());
    if ok {
        Ok(())
    } else {
        Err(ReportError::Draw { path: path.to_path_buf(), message: "the built-in font does not parse".into() })
    }
}
