//! The routing report: entropy and IoU numbers in the JSON and the table, and the heatmap PNG.

use moekit_model::report::{heatmap_size, write_all, write_heatmap, Report, ReportError};
use moekit_model::{Modality, RoutingStats};
use std::path::PathBuf;

/// 8 experts, 3 layers:
/// - layer 0: text and image both uniform over the 8 experts (entropy 1, IoU 1);
/// - layer 1: text on experts 0 and 1, audio on 6 and 7 (disjoint top quarters, IoU 0);
/// - layer 2: text alone, all on expert 3 (entropy 0, no pair).
fn stats() -> RoutingStats {
    let mut s = RoutingStats::new(8);
    let all: Vec<i32> = (0..8).collect();
    s.record(0, Modality::Text, &all);
    s.record(0, Modality::Image, &all);
    s.record(1, Modality::Text, &[0, 0, 1, 1, 0]);
    s.record(1, Modality::Audio, &[6, 7, 7, 6, 6]);
    s.record(2, Modality::Text, &[3; 7]);
    s
}

fn temp_dir(tag: &str) -> PathBuf {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
    std::env::temp_dir().join(format!("moekit-report-{tag}-{}-{nanos}", std::process::id()))
}

/// The width and height from a PNG's IHDR chunk, after checking the signature.
fn png_size(bytes: &[u8]) -> (u32, u32) {
    assert!(bytes.len() > 24, "too short for a PNG: {} bytes", bytes.len());
    assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n", "not a PNG signature");
    assert_eq!(&bytes[12..16], b"IHDR");
    let be = |b: &[u8]| u32::from_be_bytes([b[0], b[1], b[2], b[3]]);
    (be(&bytes[16..20]), be(&bytes[20..24]))
}

#[test]
fn entropy_and_iou_per_layer() {
    let r = Report::new(&stats());
    assert_eq!(r.layers.len(), 3);
    let (l0, l1, l2) = (&r.layers[0], &r.layers[1], &r.layers[2]);
    assert!((l0.entropy.unwrap() - 1.0).abs() < 1e-12);
    assert_eq!(l0.iou.get(&(Modality::Text, Modality::Image)), Some(&1.0));
    assert_eq!(l1.iou.get(&(Modality::Text, Modality::Audio)), Some(&0.0));
    assert_eq!(l1.iou.len(), 1);
    assert_eq!(l2.entropy, Some(0.0));
    assert!(l2.iou.is_empty());
    assert_eq!(r.pairs(), vec![(Modality::Text, Modality::Image), (Modality::Text, Modality::Audio)]);
}

#[test]
fn json_holds_stats_entropy_and_iou() {
    let j = Report::new(&stats()).to_json();
    assert_eq!(j["stats"]["experts"], 8);
    assert_eq!(j["stats"]["counts"]["2"]["text"][3], 7);
    assert_eq!(j["stats"]["counts"]["1"]["audio"][6], 3);
    assert!((j["entropy"]["0"].as_f64().unwrap() - 1.0).abs() < 1e-12);
    assert_eq!(j["entropy"]["2"], 0.0);
    assert_eq!(j["iou"]["0"]["text/image"], 1.0);
    assert_eq!(j["iou"]["1"]["text/audio"], 0.0);
    assert!(j["iou"]["2"].as_object().unwrap().is_empty());
    // Stable key order: the same text twice.
    assert_eq!(j.to_string(), Report::new(&stats()).to_json().to_string());
}

#[test]
fn table_has_one_row_per_layer_and_dashes_for_absent_pairs() {
    let t = Report::new(&stats()).table();
    println!("{t}");
    let lines: Vec<&str> = t.lines().collect();
    assert_eq!(lines.len(), 4, "{t}");
    let cols = |l: &str| l.split_whitespace().map(str::to_string).collect::<Vec<_>>();
    assert_eq!(cols(lines[0]), ["layer", "entropy", "iou", "text/image", "iou", "text/audio"]);
    assert_eq!(cols(lines[1]), ["0", "1.0000", "1.0000", "-"]);
    assert_eq!(cols(lines[2])[2..], ["-", "0.0000"]);
    assert_eq!(cols(lines[3]), ["2", "0.0000", "-", "-"]);
    // Fixed width: every line as long as the header.
    assert!(lines.iter().all(|l| l.len() == lines[0].len()), "{t}");
}

#[test]
fn write_all_writes_json_and_a_png_of_the_expected_size() {
    let dir = temp_dir("all");
    let s = stats();
    let files = write_all(&s, &dir).unwrap();
    let json: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&files.json).unwrap()).unwrap();
    assert_eq!(json, Report::new(&s).to_json());
    let png = std::fs::read(&files.heatmap).unwrap();
    assert_eq!(png_size(&png), heatmap_size(&s));
    // Three panels (text, image, audio) of 8 experts and 3 layers, a colour bar: not tiny.
    let (w, h) = heatmap_size(&s);
    assert_eq!((w, h), (3 * (90 + 8 * 48) + 120, 110 + 3 * 48));
    // A flat image compresses to a few hundred bytes; cells, labels and the bar do not.
    assert!(png.len() > 5_000, "PNG of {} bytes looks empty", png.len());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn heatmap_at_model_scale() {
    // 64 experts × 28 layers, two modalities with skewed, layer-dependent routing.
    let mut s = RoutingStats::new(64);
    for l in 0..28usize {
        let li = l as i32;
        let text: Vec<i32> = (0..512).map(|i| (i * i + li) % 64).collect();
        let image: Vec<i32> = (0..512).map(|i| (i % 16) * 4 + li % 4).collect();
        s.record(l, Modality::Text, &text);
        s.record(l, Modality::Image, &image);
    }
    let dir = temp_dir("big");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("big.png");
    write_heatmap(&s, &path).unwrap();
    let png = std::fs::read(&path).unwrap();
    let (w, h) = png_size(&png);
    assert_eq!((w, h), heatmap_size(&s));
    assert!(w >= 2 * 64 * 3 && h >= 28 * 6, "{w}×{h}");
    assert!(png.len() > 10_000, "PNG of {} bytes looks empty", png.len());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn empty_stats_are_a_typed_error() {
    let path = temp_dir("empty").join("none.png");
    assert!(matches!(write_heatmap(&RoutingStats::new(8), &path), Err(ReportError::Empty)));
    assert!(!path.exists());
}
