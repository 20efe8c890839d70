//! Measuring a process from outside: CPU seconds from `/proc/PID/stat`, resident memory from
//! `/proc/PID/status`, sampled so a scenario's peak is its own (VmHWM covers the process's life).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

/// Clock ticks per second of `/proc/*/stat` times (USER_HZ, 100 on Linux).
const TICKS_PER_SECOND: f64 = 100.0;

/// utime + stime of a process in seconds, `None` if it is gone.
pub fn cpu_seconds(pid: &str) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces: fields start after its closing parenthesis.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // Fields 14 and 15 of stat(5); `rest` starts at field 3.
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / TICKS_PER_SECOND)
}

/// A `/proc/PID/status` field in bytes (VmRSS, VmHWM).
pub fn status_bytes(pid: &str, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with(field) && l[field.len()..].starts_with(':'))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// Samples a process's RSS every 50 ms until stopped; keeps the peak.
#[derive(Debug)]
pub struct RssSampler {
    peak: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl RssSampler {
    pub fn start(pid: u32) -> Self {
        let peak = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (p, s) = (peak.clone(), stop.clone());
        let task = tokio::spawn(async move {
            let pid = pid.to_string();
            while !s.load(Ordering::Relaxed) {
                if let Some(rss) = status_bytes(&pid, "VmRSS") {
                    p.fetch_max(rss, Ordering::Relaxed);
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        });
        Self { peak, stop, task }
    }

    /// The peak seen so far, in bytes.
    pub fn peak(&self) -> u64 {
        self.peak.load(Ordering::Relaxed)
    }

    pub async fn finish(self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.task.await;
        self.peak.load(Ordering::Relaxed)
    }
}

/// CPU seconds of a process between two points.
#[derive(Debug, Clone)]
pub struct CpuMeter {
    pid: String,
    start: f64,
}

impl CpuMeter {
    pub fn start(pid: u32) -> Self {
        let pid = pid.to_string();
        let start = cpu_seconds(&pid).unwrap_or(0.0);
        Self { pid, start }
    }

    /// For the load generator itself.
    pub fn this_process() -> Self {
        Self::start(std::process::id())
    }

    pub fn elapsed(&self) -> f64 {
        cpu_seconds(&self.pid).map_or(0.0, |now| now - self.start)
    }
}
