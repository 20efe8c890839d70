//! The table, the ratios of liaison to each peer, and a JSON form of the rows.

use std::fmt::Write as _;

use crate::Row;

fn mib(b: Option<u64>) -> String {
    b.map_or("-".into(), |b| format!("{:.0}", b as f64 / (1024.0 * 1024.0)))
}

fn opt(v: Option<f64>, prec: usize) -> String {
    v.map_or("-".into(), |v| format!("{v:.prec$}"))
}

/// A Markdown table: one line per scenario and relay.
pub fn table(rows: &[Row]) -> String {
    let mut s = String::new();
    s.push_str(
        "| scenario | relay | throughput | p50 ms | p99 ms | errors | peak RSS MiB | relay CPU s | wire MB | loadgen CPU s | wall s |\n",
    );
    s.push_str("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n");
    for r in rows {
        let m = &r.measured;
        let rss = if r.scenario == crate::scenarios::Scenario::IdleScale {
            m.rss_at_point.or(r.peak_rss)
        } else {
            r.peak_rss
        };
        let _ = writeln!(
            s,
            "| {} | {} | {:.0} {} | {} | {} | {} | {} | {} | {:.1} | {:.1} | {:.1} |",
            r.scenario.name(),
            r.server,
            m.throughput(),
            m.unit,
            opt(m.percentile_ms(50.0), 1),
            opt(m.percentile_ms(99.0), 1),
            m.errors,
            mib(rss),
            opt(r.cpu_s, 1),
            m.wire_bytes as f64 / 1e6,
            r.loadgen_cpu_s,
            m.wall.as_secs_f64(),
        );
    }
    s
}

/// Scenario-specific figures.
pub fn details(rows: &[Row]) -> String {
    let mut s = String::new();
    for r in rows {
        if r.measured.extra.is_empty() {
            continue;
        }
        let parts: Vec<String> = r.measured.extra.iter().map(|(k, v)| format!("{k}: {v}")).collect();
        let _ = writeln!(s, "- {} / {}: {}", r.scenario.name(), r.server, parts.join("; "));
    }
    s
}

fn ratio(a: Option<f64>, b: Option<f64>) -> String {
    match (a, b) {
        (Some(a), Some(b)) if b > 0.0 && a.is_finite() => format!("{:.2}x", a / b),
        _ => "-".into(),
    }
}

/// liaison over each peer: throughput (higher is better for liaison), p99, RSS, CPU and wire
/// bytes (lower is better for liaison).
pub fn ratios(rows: &[Row]) -> String {
    let mut s = String::new();
    s.push_str("| scenario | liaison vs | throughput | p99 | peak RSS | relay CPU | wire bytes |\n");
    s.push_str("|---|---|---:|---:|---:|---:|---:|\n");
    for l in rows.iter().filter(|r| r.server == "liaison") {
        for p in rows.iter().filter(|r| r.scenario == l.scenario && r.server != "liaison") {
            let rss = |r: &Row| {
                if r.scenario == crate::scenarios::Scenario::IdleScale {
                    r.measured.rss_at_point.or(r.peak_rss)
                } else {
                    r.peak_rss
                }
                .map(|b| b as f64)
            };
            let _ = writeln!(
                s,
                "| {} | {} | {} | {} | {} | {} | {} |",
                l.scenario.name(),
                p.server,
                ratio(Some(l.measured.throughput()), Some(p.measured.throughput())),
                ratio(l.measured.percentile_ms(99.0), p.measured.percentile_ms(99.0)),
                ratio(rss(l), rss(p)),
                ratio(l.cpu_s, p.cpu_s),
                ratio(Some(l.measured.wire_bytes as f64), Some(p.measured.wire_bytes as f64)),
            );
        }
    }
    s
}

/// The rows as JSON (for keeping runs and comparing them).
pub fn json(rows: &[Row]) -> serde_json::Value {
    let rows: Vec<serde_json::Value> = rows
        .iter()
        .map(|r| {
            let m = &r.measured;
            serde_json::json!({
                "scenario": r.scenario.name(),
                "server": r.server,
                "ops": m.ops,
                "unit": m.unit,
                "throughput": m.throughput(),
                "wall_s": m.wall.as_secs_f64(),
                "p50_ms": m.percentile_ms(50.0),
                "p99_ms": m.percentile_ms(99.0),
                "max_ms": m.percentile_ms(100.0),
                "samples": m.latencies_us.len(),
                "errors": m.errors,
                "wire_bytes": m.wire_bytes,
                "peak_rss_bytes": r.peak_rss,
                "rss_at_point_bytes": m.rss_at_point,
                "relay_cpu_s": r.cpu_s,
                "loadgen_cpu_s": r.loadgen_cpu_s,
                "extra": m.extra.iter().map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone()))).collect::<serde_json::Map<_, _>>(),
            })
        })
        .collect();
    serde_json::Value::Array(rows)
}
