//! Measuring a process from outside: CPU seconds from `/proc/PID/stat`, resident memory from
//! `/proc/PID/status`, sampled so a scenario's peak is its own (VmHWM covers the process's life);
//! a PostgreSQL instance's CPU as its postmaster's process tree.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

/// Clock ticks per second of `/proc/*/stat` times (USER_HZ, 100 on Linux).
const TICKS_PER_SECOND: f64 = 100.0;

/// utime + stime of a process in seconds, `None` if it is gone.
pub fn cpu_seconds(pid: &str) -> Option<f64> {
    let stat = parse_stat(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)?;
    Some(stat.own_seconds())
}

/// What the benchmark reads of a `/proc/PID/stat` line.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Stat {
    pub ppid: u32,
    /// Ticks: user and system time of the process itself.
    pub utime: u64,
    pub stime: u64,
    /// Ticks: user and system time of its children that have exited and been waited for.
    pub cutime: u64,
    pub cstime: u64,
}

impl Stat {
    /// utime + stime in seconds.
    pub fn own_seconds(&self) -> f64 {
        (self.utime + self.stime) as f64 / TICKS_PER_SECOND
    }

    /// cutime + cstime in seconds.
    pub fn reaped_children_seconds(&self) -> f64 {
        (self.cutime + self.cstime) as f64 / TICKS_PER_SECOND
    }
}

/// Parses a `/proc/PID/stat` line (stat(5)).
pub fn parse_stat(stat: &str) -> Option<Stat> {
    // The command name may hold spaces and parentheses: fields start after the last `)`.
    let rest = stat.get(stat.rfind(')')? + 2..)?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // `rest` starts at field 3 (state): ppid is field 4, utime..cstime fields 14-17.
    let field = |n: usize| fields.get(n - 3)?.parse::<u64>().ok();
    Some(Stat {
        ppid: u32::try_from(field(4)?).ok()?,
        utime: field(14)?,
        stime: field(15)?,
        cutime: field(16)?,
        cstime: field(17)?,
    })
}

/// The running processes whose parent is `parent` (a scan of `/proc`).
pub fn children_of(parent: u32) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else { return Vec::new() };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .ok()
                .and_then(|s| parse_stat(&s))
                .is_some_and(|s| s.ppid == parent)
        })
        .collect()
}

/// CPU seconds of a process and its direct children: its own time, its exited children's
/// (cutime + cstime, once it has waited for them) and each running child's own time. A
/// PostgreSQL instance is that tree: the postmaster forks one backend per connection and its
/// helper processes (checkpointer, WAL writer, autovacuum...), and reaps them. `None` if the
/// root is gone.
pub fn tree_cpu_seconds(root: u32) -> Option<f64> {
    let stat = parse_stat(&std::fs::read_to_string(format!("/proc/{root}/stat")).ok()?)?;
    let children: f64 = children_of(root).iter().filter_map(|pid| cpu_seconds(&pid.to_string())).sum();
    Some(stat.own_seconds() + stat.reaped_children_seconds() + children)
}

/// The postmaster's pid: the first line of `DATA/postmaster.pid`.
pub fn parse_postmaster_pid(file: &str) -> Option<u32> {
    file.lines().next()?.trim().parse().ok()
}

/// A `/proc/PID/status` field in bytes (VmRSS, VmHWM).
pub fn status_bytes(pid: &str, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with(field) && l[field.len()..].starts_with(':'))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// Samples the RSS of a relay's processes (one per node) every 50 ms until stopped; keeps each
/// process's peak. A relay of several nodes reports the **sum of its nodes' peaks**, which may
/// be a little above the peak of their sum (the nodes need not peak at the same sample).
#[derive(Debug)]
pub struct RssSampler {
    peaks: Arc<Vec<AtomicU64>>,
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl RssSampler {
    pub fn start(pids: &[u32]) -> Self {
        let peaks: Arc<Vec<AtomicU64>> = Arc::new(pids.iter().map(|_| AtomicU64::new(0)).collect());
        let stop = Arc::new(AtomicBool::new(false));
        let (p, s) = (peaks.clone(), stop.clone());
        let pids: Vec<String> = pids.iter().map(u32::to_string).collect();
        let task = tokio::spawn(async move {
            while !s.load(Ordering::Relaxed) {
                for (pid, peak) in pids.iter().zip(p.iter()) {
                    if let Some(rss) = status_bytes(pid, "VmRSS") {
                        peak.fetch_max(rss, Ordering::Relaxed);
                    }
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        });
        Self { peaks, stop, task }
    }

    /// The sum of the processes' peaks so far, in bytes.
    pub fn peak(&self) -> u64 {
        self.peaks.iter().map(|p| p.load(Ordering::Relaxed)).sum()
    }

    pub async fn finish(mut self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        let _ = (&mut self.task).await;
        self.peak()
    }
}

/// The RSS of a relay's processes now, summed (bytes); `None` if none could be read.
pub fn rss_now(pids: &[u32]) -> Option<u64> {
    let each: Vec<u64> = pids.iter().filter_map(|p| status_bytes(&p.to_string(), "VmRSS")).collect();
    (!each.is_empty()).then(|| each.iter().sum())
}

/// CPU seconds of some processes between two points, summed (a relay's nodes).
#[derive(Debug, Clone)]
pub struct CpuMeter {
    pids: Vec<String>,
    start: f64,
}

impl CpuMeter {
    pub fn start(pids: &[u32]) -> Self {
        let pids: Vec<String> = pids.iter().map(u32::to_string).collect();
        let start = Self::now(&pids);
        Self { pids, start }
    }

    /// For the load generator itself.
    pub fn this_process() -> Self {
        Self::start(&[std::process::id()])
    }

    fn now(pids: &[String]) -> f64 {
        pids.iter().filter_map(|p| cpu_seconds(p)).sum()
    }

    pub fn elapsed(&self) -> f64 {
        Self::now(&self.pids) - self.start
    }
}

/// CPU seconds of a process tree between two points (a PostgreSQL instance: see
/// [`tree_cpu_seconds`]).
#[derive(Debug, Clone)]
pub struct TreeCpuMeter {
    root: u32,
    start: Option<f64>,
}

impl TreeCpuMeter {
    pub fn start(root: u32) -> Self {
        Self { root, start: tree_cpu_seconds(root) }
    }

    /// `None` if the root was gone at either end.
    pub fn elapsed(&self) -> Option<f64> {
        Some(tree_cpu_seconds(self.root)? - self.start?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stat_line_is_read_after_the_last_parenthesis_of_the_command_name() {
        // A postgres backend renames itself; a name may hold spaces and parentheses.
        let line = "4242 (postgres: a (b) c) S 4100 4100 4100 0 -1 4194560 900 0 0 0 \
                    1234 56 78 9 20 0 1 0 555 100000 2000 18446744073709551615";
        let stat = parse_stat(line).expect("parsed");
        assert_eq!(stat, Stat { ppid: 4100, utime: 1234, stime: 56, cutime: 78, cstime: 9 });
        assert!((stat.own_seconds() - 12.90).abs() < 1e-9);
        assert!((stat.reaped_children_seconds() - 0.87).abs() < 1e-9);
        assert_eq!(parse_stat("4242 (cut short) S 1 2 3"), None);
        assert_eq!(parse_stat("no parenthesis"), None);
    }

    #[test]
    fn the_postmaster_pid_is_the_first_line_of_postmaster_pid() {
        let file =
            "31337\n/tmp/liaison-pg-x/data\n1780000000\n5432\n/tmp/liaison-pg-x\n127.0.0.1\n  5432001 0\nready   \n";
        assert_eq!(parse_postmaster_pid(file), Some(31337));
        assert_eq!(parse_postmaster_pid(""), None);
        assert_eq!(parse_postmaster_pid("not a pid\n"), None);
    }

    #[test]
    fn a_running_child_is_found_by_its_parent_and_its_cpu_counts_in_the_tree() {
        let me = std::process::id();
        // A child that burns CPU for a while, then idles until killed.
        let mut child = std::process::Command::new("sh")
            .args(["-c", "i=0; while [ $i -lt 300000 ]; do i=$((i+1)); done; exec sleep 30"])
            .spawn()
            .expect("sh");
        let before = tree_cpu_seconds(me).expect("this process");
        assert!(children_of(me).contains(&child.id()), "the child is listed under this process");
        assert!(!children_of(me).contains(&me));
        // Wait until the child has burnt some CPU (its own utime, seen in the tree).
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while cpu_seconds(&child.id().to_string()).unwrap_or(0.0) < 0.1 && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        let child_cpu = cpu_seconds(&child.id().to_string()).expect("running");
        assert!(child_cpu >= 0.1, "the child burnt CPU");
        let running = tree_cpu_seconds(me).expect("this process");
        assert!(running - before >= child_cpu - 0.05, "a running child's time counts: {before} -> {running}");
        // Once it exits and is waited for, its time moves to this process's cutime + cstime.
        let _ = child.kill();
        let _ = child.wait();
        assert!(!children_of(me).contains(&child.id()));
        let reaped = parse_stat(&std::fs::read_to_string("/proc/self/stat").expect("stat")).expect("parsed");
        assert!(reaped.reaped_children_seconds() >= child_cpu - 0.05);
        assert!(tree_cpu_seconds(me).expect("this process") >= running - 1e-9);
    }

    #[test]
    fn a_meter_sums_its_processes() {
        let me = std::process::id();
        let one = cpu_seconds(&me.to_string()).expect("this process");
        let meter = CpuMeter::start(&[me, me]);
        assert!(meter.start >= 2.0 * one - 1e-9);
        assert_eq!(rss_now(&[]), None);
        let rss = rss_now(&[me]).expect("rss");
        assert!(rss_now(&[me, me]).expect("rss") >= rss);
    }
}
