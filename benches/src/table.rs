//! The table printed on stdout, one row per record.

use crate::record::Record;

/// Column header: `%ceil` is the percent of the dense-GEMM rate at the same FLOPs
/// (`--ceiling`), `%copy` the percent of the copy rate for memory-bound ops.
pub fn header() -> String {
    format!(
        "{:<18} {:<16} {:<5} {:>10} {:>8} {:>8} {:>7} {:>6} {:>9} {:>20} {:<5} {:>9}",
        "op", "shape", "dtype", "time", "TFLOP/s", "GB/s", "%ceil", "%copy", "vs ref", "vs peer", "check", "max_rel"
    )
}

/// Milliseconds as `123.4 us` below one millisecond, else `12.34 ms`.
pub fn time(ms: f64) -> String {
    if ms < 1.0 {
        format!("{:.1} us", ms * 1e3)
    } else if ms < 1000.0 {
        format!("{ms:.2} ms")
    } else {
        format!("{:.2} s", ms / 1e3)
    }
}

fn opt(v: Option<f64>, f: impl Fn(f64) -> String) -> String {
    v.map_or_else(|| "-".to_string(), f)
}

fn short(name: &str, width: usize) -> String {
    if name.chars().count() <= width {
        name.to_string()
    } else {
        let head: String = name.chars().take(width - 1).collect();
        format!("{head}~")
    }
}

/// One row.
pub fn row(r: &Record) -> String {
    format!(
        "{:<18} {:<16} {:<5} {:>10} {:>8} {:>8.2} {:>7} {:>6} {:>9} {:>20} {:<5} {:>9}",
        if r.launch == "graph" { format!("{} (graph)", r.op) } else { r.op.clone() },
        short(&r.shape, 16),
        r.dtype,
        time(r.ms),
        opt(r.tflops, |t| format!("{t:.3}")),
        r.gbps,
        opt(r.pct_of_ceiling, |p| format!("{p:.0}%")),
        opt(r.pct_copy_ceiling, |p| format!("{p:.0}%")),
        opt(r.speedup_vs_reference, |s| format!("{s:.1}x")),
        match (&r.peer, r.ratio) {
            (Some(p), Some(x)) => format!("{x:.2}x {}", short(p, 14)),
            _ => "-".to_string(),
        },
        r.check,
        opt(r.max_rel_err, |e| format!("{e:.1e}")),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_pick_a_readable_unit() {
        assert_eq!(time(0.0123), "12.3 us");
        assert_eq!(time(12.345), "12.35 ms");
        assert_eq!(time(2500.0), "2.50 s");
    }
}
