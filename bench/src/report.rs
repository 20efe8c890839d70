//! The table, the ratios of liaison to each peer and of liaison on PostgreSQL to liaison on
//! sled, and a JSON form of the rows.

use std::fmt::Write as _;

use crate::Row;

fn mib(b: Option<u64>) -> String {
    b.map_or("-".into(), |b| format!("{:.0}", b as f64 / (1024.0 * 1024.0)))
}

fn opt(v: Option<f64>, prec: usize) -> String {
    v.map_or("-".into(), |v| format!("{v:.prec$}"))
}

/// The RSS a row reports: at the scenario's point of interest for idle-scale, else the peak.
fn reported_rss(r: &Row) -> Option<u64> {
    if r.scenario == crate::scenarios::Scenario::IdleScale {
        r.measured.rss_at_point.or(r.peak_rss)
    } else {
        r.peak_rss
    }
}

/// The unit of a row's operations, for "relay CPU per ...": `docs/s` -> `doc`.
fn op_unit(r: &Row) -> &'static str {
    match r.measured.unit {
        "docs/s" => "doc",
        "edits/s" => "edit",
        "conns/s" => "conn",
        _ => "op",
    }
}

/// A Markdown table: one line per scenario and relay. A relay of several nodes reports its
/// nodes' CPU summed and the sum of their peak RSS; `db CPU s` is the PostgreSQL instance's
/// (liaison-pg relays; `-` without one, `n/a` for an external instance).
pub fn table(rows: &[Row]) -> String {
    let mut s = String::new();
    s.push_str(
        "| scenario | relay | throughput | p50 ms | p99 ms | errors | peak RSS MiB | relay CPU s | relay CPU ms/op | db CPU s | wire MB | loadgen CPU s | wall s |\n",
    );
    s.push_str("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n");
    for r in rows {
        let m = &r.measured;
        let db = match (r.db_cpu_s, crate::servers::Kind::parse(&r.server).is_some_and(|k| k.uses_postgres())) {
            (Some(v), _) => format!("{v:.1}"),
            (None, true) => "n/a".into(),
            (None, false) => "-".into(),
        };
        let _ = writeln!(
            s,
            "| {} | {} | {:.0} {} | {} | {} | {} | {} | {} | {} | {} | {:.1} | {:.1} | {:.1} |",
            r.scenario.name(),
            r.server,
            m.throughput(),
            m.unit,
            opt(m.percentile_ms(50.0), 1),
            opt(m.percentile_ms(99.0), 1),
            m.errors,
            mib(reported_rss(r)),
            opt(r.cpu_s, 1),
            r.relay_cpu_ms_per_op().map_or("-".into(), |v| format!("{v:.2}/{}", op_unit(r))),
            db,
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
/// bytes (lower is better for liaison). The peers are the other implementations, not liaison
/// on another backend (see [`backend_ratios`]).
pub fn ratios(rows: &[Row]) -> String {
    let mut s = String::new();
    s.push_str("| scenario | liaison vs | throughput | p99 | peak RSS | relay CPU | wire bytes |\n");
    s.push_str("|---|---|---:|---:|---:|---:|---:|\n");
    let peer = |r: &Row| crate::servers::Kind::parse(&r.server).is_none_or(|k| !k.is_liaison());
    for l in rows.iter().filter(|r| r.server == "liaison") {
        for p in rows.iter().filter(|r| r.scenario == l.scenario && peer(r)) {
            let rss = |r: &Row| reported_rss(r).map(|b| b as f64);
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

/// liaison on PostgreSQL (one relay, or a cluster's nodes summed) over liaison on sled, same
/// scenario: throughput (higher is better), p99, peak RSS, relay CPU, relay CPU per operation
/// (lower is better). The database's own CPU is not in "relay CPU": it is in the table.
pub fn backend_ratios(rows: &[Row]) -> String {
    let mut s = String::new();
    s.push_str("| scenario | relay vs liaison (sled) | throughput | p99 | peak RSS | relay CPU | relay CPU per op | relay + db CPU per op |\n");
    s.push_str("|---|---|---:|---:|---:|---:|---:|---:|\n");
    let on_postgres = |r: &Row| crate::servers::Kind::parse(&r.server).is_some_and(|k| k.uses_postgres());
    for sled in rows.iter().filter(|r| r.server == "liaison") {
        for pg in rows.iter().filter(|r| r.scenario == sled.scenario && on_postgres(r)) {
            let rss = |r: &Row| reported_rss(r).map(|b| b as f64);
            let with_db = pg
                .relay_cpu_ms_per_op()
                .zip(pg.db_cpu_s)
                .map(|(relay, db)| relay + db * 1000.0 / pg.measured.ops.max(1) as f64);
            let _ = writeln!(
                s,
                "| {} | {} | {} | {} | {} | {} | {} | {} |",
                sled.scenario.name(),
                pg.server,
                ratio(Some(pg.measured.throughput()), Some(sled.measured.throughput())),
                ratio(pg.measured.percentile_ms(99.0), sled.measured.percentile_ms(99.0)),
                ratio(rss(pg), rss(sled)),
                ratio(pg.cpu_s, sled.cpu_s),
                ratio(pg.relay_cpu_ms_per_op(), sled.relay_cpu_ms_per_op()),
                ratio(with_db, sled.relay_cpu_ms_per_op()),
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
                "relay_cpu_ms_per_op": r.relay_cpu_ms_per_op(),
                "db_cpu_s": r.db_cpu_s,
                "loadgen_cpu_s": r.loadgen_cpu_s,
                "extra": m.extra.iter().map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone()))).collect::<serde_json::Map<_, _>>(),
            })
        })
        .collect();
    serde_json::Value::Array(rows)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::scenarios::{Measured, Scenario};

    fn row(server: &str, ops: u64, cpu_s: f64, db_cpu_s: Option<f64>) -> Row {
        Row {
            scenario: Scenario::TeamEditing,
            server: server.into(),
            measured: Measured {
                ops,
                unit: "edits/s",
                wall: Duration::from_secs(10),
                latencies_us: vec![1_000, 2_000, 4_000],
                ..Measured::default()
            },
            peak_rss: Some(100 << 20),
            cpu_s: Some(cpu_s),
            loadgen_cpu_s: 1.0,
            db_cpu_s,
        }
    }

    #[test]
    fn relay_cpu_per_edit_and_db_cpu_are_columns_and_pg_rows_are_compared_with_sled_not_as_peers() {
        let rows = [
            row("liaison", 1000, 1.0, None),
            row("liaison-pg", 1000, 2.0, Some(3.0)),
            row("liaison-pg2", 500, 2.0, None),
            row("node", 500, 4.0, None),
        ];
        let table = table(&rows);
        assert!(table.contains("| relay CPU ms/op | db CPU s |"));
        assert!(table.contains("| 1.0 | 1.00/edit | - |"), "{table}");
        assert!(table.contains("| 2.0 | 2.00/edit | 3.0 |"), "{table}");
        // A liaison-pg relay without a measured database (an external one): n/a, not 0.
        assert!(table.contains("| 2.0 | 4.00/edit | n/a |"), "{table}");

        let peers = ratios(&rows);
        assert!(peers.contains("| team-editing | node | 2.00x |"), "{peers}");
        assert!(!peers.contains("liaison-pg"), "{peers}");

        let backends = backend_ratios(&rows);
        // Throughput pg/sled, relay CPU per op pg/sled, relay + db per op ((2 + 3) / 1).
        assert!(
            backends.contains("| team-editing | liaison-pg | 1.00x | 1.00x | 1.00x | 2.00x | 2.00x | 5.00x |"),
            "{backends}"
        );
        assert!(
            backends.contains("| team-editing | liaison-pg2 | 0.50x | 1.00x | 1.00x | 2.00x | 4.00x | - |"),
            "{backends}"
        );

        let json = json(&rows);
        assert_eq!(json[1]["db_cpu_s"], 3.0);
        assert_eq!(json[0]["relay_cpu_ms_per_op"], 1.0);
    }
}
