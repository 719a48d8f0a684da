//! The JSON line and the table row of one outcome, plus host name and UTC date.

use crate::peers::{matching, PeerLine};
use crate::runner::Outcome;
use serde::Serialize;

/// One peer's figure on a record.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct PeerRef {
    /// Implementation name.
    pub peer: String,
    /// Its median milliseconds.
    pub ms: f64,
    /// `peer ms / moekit ms` (above 1: moekit is faster).
    pub ratio: f64,
}

/// One JSON line of `--json`.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Record {
    /// Op name.
    pub op: String,
    /// Shape name.
    pub shape: String,
    /// Problem dims as the peer lines spell them.
    pub dims: Vec<usize>,
    /// Backend name.
    pub backend: String,
    /// Dtype.
    pub dtype: String,
    /// Median milliseconds.
    pub ms: f64,
    /// Fastest run, milliseconds.
    pub min_ms: f64,
    /// Timed runs.
    pub iters: usize,
    /// `eager` (one call per run) or `graph` (replays of a recorded graph, `--graph`).
    pub launch: String,
    /// `queued` (each run after a cache-clearing write, runs not waited for one by one, as
    /// `triton.testing.do_bench` times the peers; the default) or `synced` (`--synced`: each run
    /// alone on an idle device, the host's time to its first launch included; runs 1–22).
    pub timing: String,
    /// TFLOP/s at the median (`null` for data movement).
    pub tflops: Option<f64>,
    /// GB/s at the median (minimum bytes read + written).
    pub gbps: f64,
    /// FLOPs of one run.
    pub flops: Option<f64>,
    /// Bytes of one run.
    pub bytes: f64,
    /// `pass` or `fail`.
    pub check: String,
    /// What the check compared (`full`, `sample 256/131072 rows`, ...).
    pub check_scope: String,
    /// Largest relative error (`null` when an integer output differed).
    pub max_rel_err: Option<f64>,
    /// Dense GEMM `[M, K, N]` of the ceiling.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ceiling_mkn: Option<[usize; 3]>,
    /// Its TFLOP/s on the same backend.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ceiling_tflops: Option<f64>,
    /// This op's TFLOP/s as a percent of the ceiling.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pct_of_ceiling: Option<f64>,
    /// Copy rate (GB/s) this memory-bound op is measured against.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub copy_ceiling_gbps: Option<f64>,
    /// This op's GB/s as a percent of the copy rate.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pct_copy_ceiling: Option<f64>,
    /// Reference median milliseconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ref_ms: Option<f64>,
    /// `ref_ms / ms`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub speedup_vs_reference: Option<f64>,
    /// Fastest matching peer.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub peer: Option<String>,
    /// Its milliseconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub peer_ms: Option<f64>,
    /// `peer_ms / ms`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ratio: Option<f64>,
    /// Every matching peer, fastest first.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub peers: Vec<PeerRef>,
    /// The `--dump` file of this case.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dump: Option<String>,
    /// Host name.
    pub host: String,
    /// UTC date and time, ISO 8601.
    pub date: String,
}

impl Record {
    /// The record of `o`, with the peers that match it.
    pub fn new(o: &Outcome, peers: &[PeerLine], host: &str, date: &str) -> Self {
        let ms = o.timing.median_s * 1e3;
        let refs: Vec<PeerRef> = matching(peers, o.op, &o.dims)
            .into_iter()
            .map(|p| PeerRef { peer: p.peer.clone(), ms: p.ms, ratio: p.ms / ms })
            .collect();
        let best = refs.first();
        Record {
            op: o.op.name().to_string(),
            shape: o.shape.clone(),
            dims: o.dims.clone(),
            backend: o.backend.to_string(),
            dtype: o.dtype.name().to_string(),
            ms,
            min_ms: o.timing.min_s * 1e3,
            iters: o.timing.iters,
            launch: if o.graph { "graph" } else { "eager" }.to_string(),
            timing: o.timing_mode.name().to_string(),
            tflops: o.tflops(),
            gbps: o.gbps(),
            flops: o.flops,
            bytes: o.bytes,
            check: if o.verdict.pass { "pass" } else { "fail" }.to_string(),
            check_scope: o.verdict.scope.clone(),
            max_rel_err: Some(o.verdict.max_rel_err).filter(|e| e.is_finite()),
            ceiling_mkn: o.ceiling.as_ref().map(|c| [c.mkn.0, c.mkn.1, c.mkn.2]),
            ceiling_tflops: o.ceiling.as_ref().map(|c| c.tflops),
            pct_of_ceiling: o.pct_of_ceiling(),
            copy_ceiling_gbps: o.copy_ceiling_gbps,
            pct_copy_ceiling: o.pct_of_copy_ceiling(),
            ref_ms: o.reference.as_ref().map(|r| r.median_s * 1e3),
            speedup_vs_reference: o.speedup_vs_reference(),
            peer: best.map(|p| p.peer.clone()),
            peer_ms: best.map(|p| p.ms),
            ratio: best.map(|p| p.ratio),
            peers: refs,
            dump: match &o.dump {
                Some(Ok(path)) => Some(path.display().to_string()),
                _ => None,
            },
            host: host.to_string(),
            date: date.to_string(),
        }
    }

    /// The JSON line (no trailing newline).
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"))
    }
}

/// Host name: `/etc/hostname`, else `$HOSTNAME`, else `unknown`.
pub fn host() -> String {
    std::fs::read_to_string("/etc/hostname")
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok().filter(|s| !s.is_empty()))
        .unwrap_or_else(|| "unknown".to_string())
}

/// Now, UTC, as `YYYY-MM-DDTHH:MM:SSZ`.
pub fn utc_now() -> String {
    let secs = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    utc_iso(secs)
}

/// Seconds since the Unix epoch as `YYYY-MM-DDTHH:MM:SSZ` (proleptic Gregorian calendar).
pub fn utc_iso(secs: u64) -> String {
    let (days, rem) = ((secs / 86_400) as i64, secs % 86_400);
    // NOTE: Howard Hinnant's civil_from_days, valid for every date after 1970.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z", rem / 3600, rem % 3600 / 60, rem % 60)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iso_dates_of_known_instants() {
        assert_eq!(utc_iso(0), "1970-01-01T00:00:00Z");
        assert_eq!(utc_iso(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(utc_iso(1_700_000_000), "2023-11-14T22:13:20Z");
    }
}
