//! Counters for `/metrics`, in the Prometheus text format.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

/// Upper bounds (seconds) of the storage flush latency histogram.
const FLUSH_BUCKETS: [f64; 10] = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0];

#[derive(Debug, Default)]
pub struct Metrics {
    pub connections_open: AtomicU64,
    pub connections_total: AtomicU64,
    pub auth_failures: AtomicU64,
    pub frames_in: AtomicU64,
    pub frames_out: AtomicU64,
    pub bytes_in: AtomicU64,
    pub bytes_out: AtomicU64,
    pub resident_documents: AtomicU64,
    /// Documents being loaded from storage now, and the most at once since the start.
    pub loading_documents: AtomicU64,
    pub loading_documents_peak: AtomicU64,
    pub stored_documents: AtomicU64,
    pub storage_failures: AtomicU64,
    /// Writes another cluster node's write to the same document beat (judged again, then
    /// written): many mean a team's devices are spread over nodes.
    pub write_conflicts: AtomicU64,
    /// Times a connection's outbox had no room for more sync messages, which then waited for
    /// the device to read (a slow network; paced, not cut).
    pub backlogged: AtomicU64,
    refusals: Mutex<BTreeMap<String, u64>>,
    closes: Mutex<BTreeMap<String, u64>>,
    flush: Mutex<([u64; FLUSH_BUCKETS.len()], u64, f64)>,
}

fn bump(map: &Mutex<BTreeMap<String, u64>>, key: &str) {
    *map.lock().unwrap_or_else(|p| p.into_inner()).entry(key.to_owned()).or_default() += 1;
}

impl Metrics {
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    pub fn refused(&self, code: &str) {
        bump(&self.refusals, code);
    }

    pub fn closed(&self, reason: &str) {
        bump(&self.closes, reason);
    }

    pub fn observe_flush(&self, seconds: f64) {
        let mut f = self.flush.lock().unwrap_or_else(|p| p.into_inner());
        for (i, le) in FLUSH_BUCKETS.iter().enumerate() {
            if seconds <= *le {
                f.0[i] += 1;
            }
        }
        f.1 += 1;
        f.2 += seconds;
    }

    pub fn render(&self) -> String {
        let mut o = String::new();
        let g = |o: &mut String, name: &str, help: &str, kind: &str, v: u64| {
            let _ = writeln!(o, "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {v}");
        };
        let l = |c: &AtomicU64| c.load(Ordering::Relaxed);
        g(&mut o, "liaison_connections_open", "WebSocket connections open now.", "gauge", l(&self.connections_open));
        g(
            &mut o,
            "liaison_connections_total",
            "WebSocket connections accepted.",
            "counter",
            l(&self.connections_total),
        );
        g(
            &mut o,
            "liaison_auth_failures_total",
            "Connection attempts refused for their credential.",
            "counter",
            l(&self.auth_failures),
        );
        g(&mut o, "liaison_frames_in_total", "Frames received.", "counter", l(&self.frames_in));
        g(&mut o, "liaison_frames_out_total", "Frames sent.", "counter", l(&self.frames_out));
        g(&mut o, "liaison_bytes_in_total", "Frame bytes received.", "counter", l(&self.bytes_in));
        g(&mut o, "liaison_bytes_out_total", "Frame bytes sent.", "counter", l(&self.bytes_out));
        g(&mut o, "liaison_documents_resident", "Documents loaded in memory.", "gauge", l(&self.resident_documents));
        g(
            &mut o,
            "liaison_documents_loading",
            "Documents being loaded from storage.",
            "gauge",
            l(&self.loading_documents),
        );
        g(
            &mut o,
            "liaison_documents_loading_peak",
            "Most documents loading at once since the start (bounded by max_loading_documents).",
            "gauge",
            l(&self.loading_documents_peak),
        );
        g(&mut o, "liaison_documents_stored", "Documents stored.", "gauge", l(&self.stored_documents));
        g(
            &mut o,
            "liaison_storage_failures_total",
            "Storage tasks that failed (disk full, I/O).",
            "counter",
            l(&self.storage_failures),
        );
        g(
            &mut o,
            "liaison_write_conflicts_total",
            "Writes another cluster node's write to the same document beat (judged again and written).",
            "counter",
            l(&self.write_conflicts),
        );
        g(
            &mut o,
            "liaison_backlogged_total",
            "Times a connection's outbox had no room for more sync messages, which waited for the device to read.",
            "counter",
            l(&self.backlogged),
        );
        let _ = writeln!(
            o,
            "# HELP liaison_refusals_total Changes refused, by reason.\n# TYPE liaison_refusals_total counter"
        );
        for (k, v) in self.refusals.lock().unwrap_or_else(|p| p.into_inner()).iter() {
            let _ = writeln!(o, "liaison_refusals_total{{reason=\"{k}\"}} {v}");
        }
        let _ = writeln!(
            o,
            "# HELP liaison_connections_closed_total Connections closed by the relay, by reason.\n# TYPE liaison_connections_closed_total counter"
        );
        for (k, v) in self.closes.lock().unwrap_or_else(|p| p.into_inner()).iter() {
            let _ = writeln!(o, "liaison_connections_closed_total{{reason=\"{k}\"}} {v}");
        }
        let f = self.flush.lock().unwrap_or_else(|p| p.into_inner());
        let _ = writeln!(
            o,
            "# HELP liaison_storage_flush_seconds Time to write and flush one storage task.\n# TYPE liaison_storage_flush_seconds histogram"
        );
        for (i, le) in FLUSH_BUCKETS.iter().enumerate() {
            let _ = writeln!(o, "liaison_storage_flush_seconds_bucket{{le=\"{le}\"}} {}", f.0[i]);
        }
        let _ = writeln!(o, "liaison_storage_flush_seconds_bucket{{le=\"+Inf\"}} {}", f.1);
        let _ = writeln!(o, "liaison_storage_flush_seconds_sum {}\nliaison_storage_flush_seconds_count {}", f.2, f.1);
        o
    }
}
