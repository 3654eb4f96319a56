//! Output of a sweep: a text table, a CSV file, and an SVG plot of hit ratio against cache size
//! (log-scaled size axis, one line per policy), drawn by hand so no plotting crate is needed.

use std::fmt::Write as _;
use std::path::Path;

use crate::error::SimError;
use crate::replay::{Mode, RunResult, SimPolicy};

/// The CSV header of [`write_csv`].
pub const CSV_HEADER: &str = "policy,size,capacity,mode,requests,hits,object_hit_ratio,bytes_requested,bytes_hit,byte_hit_ratio";

/// A hit-ratio accessor.
type Metric = fn(&RunResult) -> f64;

/// Distinct values in first-seen order.
fn distinct<T: PartialEq + Clone>(items: impl Iterator<Item = T>) -> Vec<T> {
    let mut out: Vec<T> = Vec::new();
    for item in items {
        if !out.contains(&item) {
            out.push(item);
        }
    }
    out
}

/// Sizes as (label, capacity), in first-seen order.
fn sizes_of(results: &[RunResult]) -> Vec<(String, u64)> {
    distinct(results.iter().map(|r| (r.size_label.clone(), r.capacity)))
}

fn find(results: &[RunResult], policy: SimPolicy, capacity: u64) -> Option<&RunResult> {
    results
        .iter()
        .find(|r| r.policy == policy && r.capacity == capacity)
}

/// Two pivot tables (policies × sizes): object hit ratio and byte hit ratio, in percent.
pub fn table(results: &[RunResult]) -> String {
    let policies = distinct(results.iter().map(|r| r.policy));
    let sizes = sizes_of(results);
    let mode = results.first().map_or(Mode::Objects, |r| r.mode);
    let mut out = String::new();
    let metrics: [(&str, Metric); 2] = [
        ("object hit ratio %", RunResult::object_hit_ratio),
        ("byte hit ratio %", RunResult::byte_hit_ratio),
    ];
    for (name, metric) in metrics {
        let _ = writeln!(out, "{name} (cache sizes in {}):", mode.as_str());
        let _ = write!(out, "{:<14}", "policy");
        for (label, capacity) in &sizes {
            let heading = format!("{label} ({capacity})");
            let _ = write!(out, " {heading:>18}");
        }
        out.push('\n');
        for &p in &policies {
            let _ = write!(out, "{:<14}", p.as_str());
            for (_, capacity) in &sizes {
                match find(results, p, *capacity) {
                    Some(r) => {
                        let _ = write!(out, " {:>18.2}", 100.0 * metric(r));
                    }
                    None => {
                        let _ = write!(out, " {:>18}", "-");
                    }
                }
            }
            out.push('\n');
        }
        out.push('\n');
    }
    out
}

/// The results as CSV (one row per policy and size).
pub fn csv(results: &[RunResult]) -> String {
    let mut out = String::with_capacity(64 * (results.len() + 1));
    out.push_str(CSV_HEADER);
    out.push('\n');
    for r in results {
        let _ = writeln!(
            out,
            "{},{},{},{},{},{},{:.6},{},{},{:.6}",
            r.policy,
            r.size_label,
            r.capacity,
            r.mode.as_str(),
            r.requests,
            r.hits,
            r.object_hit_ratio(),
            r.bytes_requested,
            r.bytes_hit,
            r.byte_hit_ratio()
        );
    }
    out
}

/// Writes `text` to `path`.
pub fn write_file(path: &Path, text: &str) -> Result<(), SimError> {
    std::fs::write(path, text).map_err(|e| SimError::Io {
        path: path.to_path_buf(),
        source: e,
    })
}

fn colour(policy: SimPolicy) -> (&'static str, &'static str) {
    use outpost_store::policy::PolicyKind;
    match policy {
        SimPolicy::Online(PolicyKind::Lru) => ("#7f7f7f", ""),
        SimPolicy::Online(PolicyKind::S3Fifo) => ("#1f77b4", ""),
        SimPolicy::Online(PolicyKind::WTinyLfu) => ("#ff7f0e", ""),
        SimPolicy::Online(PolicyKind::S3TinyLfu) => ("#d62728", ""),
        SimPolicy::Online(PolicyKind::SizeAware) => ("#9467bd", ""),
        SimPolicy::Belady => ("#000000", "6,4"),
        SimPolicy::BeladyAdmitAll => ("#2ca02c", "2,3"),
    }
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// An SVG line plot of the mode's headline hit ratio (object or byte) against cache size.
pub fn svg(results: &[RunResult], title: &str) -> String {
    const W: f64 = 760.0;
    const H: f64 = 480.0;
    const LEFT: f64 = 70.0;
    const RIGHT: f64 = 170.0;
    const TOP: f64 = 50.0;
    const BOTTOM: f64 = 60.0;
    let plot_w = W - LEFT - RIGHT;
    let plot_h = H - TOP - BOTTOM;
    let policies = distinct(results.iter().map(|r| r.policy));
    let mut sizes = sizes_of(results);
    sizes.sort_by_key(|(_, c)| *c);
    let mode = results.first().map_or(Mode::Objects, |r| r.mode);
    let metric_name = match mode {
        Mode::Objects => "object hit ratio",
        Mode::Bytes => "byte hit ratio",
    };
    let logs: Vec<f64> = sizes
        .iter()
        .map(|(_, c)| ((*c).max(1) as f64).log10())
        .collect();
    let (lo, hi) = match (logs.first(), logs.last()) {
        (Some(&lo), Some(&hi)) if hi > lo => (lo, hi),
        (Some(&lo), _) => (lo - 0.5, lo + 0.5),
        _ => (0.0, 1.0),
    };
    let pad = 0.06 * (hi - lo);
    let x_of = |capacity: u64| {
        let l = (capacity.max(1) as f64).log10();
        LEFT + (l - (lo - pad)) / ((hi + pad) - (lo - pad)) * plot_w
    };
    let y_of = |ratio: f64| TOP + (1.0 - ratio.clamp(0.0, 1.0)) * plot_h;

    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}" font-family="Helvetica, Arial, sans-serif" font-size="12">"#
    );
    let _ = writeln!(s, r#"<rect width="{W}" height="{H}" fill="white"/>"#);
    let _ = writeln!(
        s,
        r#"<text x="{}" y="28" text-anchor="middle" font-size="15" font-weight="bold">{}</text>"#,
        LEFT + plot_w / 2.0,
        escape(title)
    );
    // Horizontal grid and y labels every 10%.
    for i in 0..=10 {
        let ratio = f64::from(i) / 10.0;
        let y = y_of(ratio);
        let _ = writeln!(
            s,
            r##"<line x1="{LEFT}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="#e5e5e5"/>"##,
            LEFT + plot_w
        );
        let _ = writeln!(
            s,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="end">{}%</text>"#,
            LEFT - 8.0,
            y + 4.0,
            i * 10
        );
    }
    // Vertical ticks at each cache size.
    for (label, capacity) in &sizes {
        let x = x_of(*capacity);
        let _ = writeln!(
            s,
            r##"<line x1="{x:.1}" y1="{TOP}" x2="{x:.1}" y2="{:.1}" stroke="#f0f0f0"/>"##,
            TOP + plot_h
        );
        let _ = writeln!(
            s,
            r#"<text x="{x:.1}" y="{:.1}" text-anchor="middle">{}</text>"#,
            TOP + plot_h + 18.0,
            escape(label)
        );
        let _ = writeln!(
            s,
            r##"<text x="{x:.1}" y="{:.1}" text-anchor="middle" fill="#777" font-size="10">{capacity}</text>"##,
            TOP + plot_h + 31.0
        );
    }
    let _ = writeln!(
        s,
        r##"<rect x="{LEFT}" y="{TOP}" width="{plot_w}" height="{plot_h}" fill="none" stroke="#333"/>"##
    );
    let _ = writeln!(
        s,
        r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">cache size (log scale; capacity in {} below)</text>"#,
        LEFT + plot_w / 2.0,
        H - 10.0,
        mode.as_str()
    );
    let _ = writeln!(
        s,
        r#"<text x="18" y="{:.1}" text-anchor="middle" transform="rotate(-90 18 {:.1})">{metric_name}</text>"#,
        TOP + plot_h / 2.0,
        TOP + plot_h / 2.0
    );
    // One line per policy.
    for (i, &p) in policies.iter().enumerate() {
        let (stroke, dash) = colour(p);
        let mut points: Vec<(f64, f64)> = results
            .iter()
            .filter(|r| r.policy == p)
            .map(|r| (x_of(r.capacity), y_of(r.primary_hit_ratio())))
            .collect();
        points.sort_by(|a, b| a.0.total_cmp(&b.0));
        let path: Vec<String> = points
            .iter()
            .map(|(x, y)| format!("{x:.1},{y:.1}"))
            .collect();
        let dash_attr = if dash.is_empty() {
            String::new()
        } else {
            format!(r#" stroke-dasharray="{dash}""#)
        };
        let _ = writeln!(
            s,
            r#"<polyline points="{}" fill="none" stroke="{stroke}" stroke-width="2"{dash_attr}/>"#,
            path.join(" ")
        );
        for (x, y) in &points {
            let _ = writeln!(
                s,
                r#"<circle cx="{x:.1}" cy="{y:.1}" r="3.5" fill="{stroke}"/>"#
            );
        }
        let ly = TOP + 10.0 + 22.0 * i as f64;
        let lx = LEFT + plot_w + 18.0;
        let _ = writeln!(
            s,
            r#"<line x1="{lx:.1}" y1="{ly:.1}" x2="{:.1}" y2="{ly:.1}" stroke="{stroke}" stroke-width="2"{dash_attr}/>"#,
            lx + 28.0
        );
        let _ = writeln!(
            s,
            r#"<text x="{:.1}" y="{:.1}">{}</text>"#,
            lx + 36.0,
            ly + 4.0,
            escape(p.as_str())
        );
    }
    s.push_str("</svg>\n");
    s
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use outpost_store::policy::PolicyKind;

    fn results() -> Vec<RunResult> {
        let mut out = Vec::new();
        for (p, base) in [
            (SimPolicy::Online(PolicyKind::Lru), 10u64),
            (SimPolicy::Belady, 30),
        ] {
            for (label, capacity, extra) in [("0.1%", 100u64, 0u64), ("1%", 1000, 20)] {
                out.push(RunResult {
                    policy: p,
                    size_label: label.into(),
                    capacity,
                    mode: Mode::Objects,
                    requests: 100,
                    hits: base + extra,
                    bytes_requested: 1000,
                    bytes_hit: 10 * (base + extra),
                });
            }
        }
        out
    }

    #[test]
    fn table_and_csv_carry_every_result() {
        let r = results();
        let t = table(&r);
        assert!(t.contains("0.1% (100)") && t.contains("1% (1000)"), "{t}");
        assert!(t.contains("50.00"), "{t}");
        let c = csv(&r);
        let lines: Vec<&str> = c.lines().collect();
        assert_eq!(lines.len(), 5);
        assert_eq!(lines[0], CSV_HEADER);
        assert_eq!(
            lines[1],
            "lru,0.1%,100,objects,100,10,0.100000,1000,100,0.100000"
        );
    }

    #[test]
    fn svg_is_well_formed_enough() {
        let s = svg(&results(), "a <title> & more");
        assert!(s.starts_with("<svg") && s.trim_end().ends_with("</svg>"));
        assert!(s.contains("a &lt;title&gt; &amp; more"));
        assert_eq!(s.matches("<polyline").count(), 2);
        assert_eq!(s.matches("<circle").count(), 4);
        assert!(!s.contains("NaN"));
        // A single size still plots.
        let one: Vec<RunResult> = results()
            .into_iter()
            .filter(|r| r.capacity == 100)
            .collect();
        assert!(!svg(&one, "t").contains("NaN"));
    }
}
