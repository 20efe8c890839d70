//! liaison's benchmark harness: a load generator that simulates devices over real WebSockets
//! against any automerge-repo relay, and a runner that starts liaison's relay (on sled, on
//! PostgreSQL, or two cluster nodes on one PostgreSQL database), the JavaScript automerge-repo
//! sync server and a samod relay on the same workloads and prints them side by side. See
//! docs/benchmarks.md.

pub mod device;
pub mod postgres;
pub mod procstat;
pub mod report;
pub mod scenarios;
pub mod seed;
pub mod servers;

use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use crate::device::{Device, Target, Wire};
use crate::postgres::Postgres;
use crate::procstat::{CpuMeter, RssSampler, TreeCpuMeter};
use crate::scenarios::{Measured, Scenario, Sizes};
use crate::seed::SeedDoc;
use crate::servers::{Kind, Programs, Server};

/// One scenario against one relay.
#[derive(Debug, Clone)]
pub struct Row {
    pub scenario: Scenario,
    pub server: String,
    pub measured: Measured,
    /// Peak RSS of the relay process during the scenario (sampled every 50 ms), bytes; for a
    /// relay of several nodes, the sum of each node's peak.
    pub peak_rss: Option<u64>,
    /// CPU seconds (user + system) the relay used during the scenario, summed over its nodes.
    pub cpu_s: Option<f64>,
    /// CPU seconds the load generator used during the scenario.
    pub loadgen_cpu_s: f64,
    /// CPU seconds of the PostgreSQL instance (postmaster and children) during the scenario:
    /// liaison-pg relays on a private instance; `None` otherwise (no database, or an external
    /// one whose processes are not ours to read).
    pub db_cpu_s: Option<f64>,
}

impl Row {
    /// Relay CPU milliseconds per operation completed (per edit visible at every teammate,
    /// per document pulled...), the figure that does not depend on how fast the load came.
    pub fn relay_cpu_ms_per_op(&self) -> Option<f64> {
        let cpu = self.cpu_s?;
        (self.measured.ops > 0).then(|| cpu * 1000.0 / self.measured.ops as f64)
    }
}

/// What to run.
#[derive(Debug, Clone)]
pub struct Plan {
    pub sizes: Sizes,
    pub scenarios: Vec<Scenario>,
    pub servers: Vec<Kind>,
    pub tls: bool,
    pub programs: Programs,
}

/// What was measured around one scenario.
struct Measurement {
    measured: Measured,
    peak_rss: Option<u64>,
    cpu_s: Option<f64>,
    loadgen_cpu_s: f64,
    db_cpu_s: Option<f64>,
}

/// Runs `scenario` against `target`, measuring the relay's processes `pids` (none for a relay
/// not started here) and the PostgreSQL process tree rooted at `db_pid`.
async fn measure(
    scenario: Scenario,
    sizes: &Sizes,
    target: &Target,
    pids: &[u32],
    db_pid: Option<u32>,
    docs: &[SeedDoc],
) -> Result<Measurement> {
    let sampler = (!pids.is_empty()).then(|| RssSampler::start(pids));
    let cpu = (!pids.is_empty()).then(|| CpuMeter::start(pids));
    let db = db_pid.map(TreeCpuMeter::start);
    let me = CpuMeter::this_process();
    let measured = match scenario {
        Scenario::InitialSync => scenarios::initial_sync(target, sizes, docs).await?,
        Scenario::TeamEditing => scenarios::team_editing(target, sizes, docs, false).await?,
        Scenario::TeamEditingMax => scenarios::team_editing(target, sizes, docs, true).await?,
        Scenario::ReconnectStorm => scenarios::reconnect_storm(target, sizes, docs).await?,
        Scenario::IdleScale => scenarios::idle_scale(target, sizes, pids).await?,
        Scenario::ColdStore => scenarios::cold_store(target, sizes, docs).await?,
        Scenario::NewPhone => scenarios::new_phone(target, sizes, docs).await?,
    };
    let peak_rss = match sampler {
        Some(s) => Some(s.finish().await),
        None => None,
    };
    Ok(Measurement {
        measured,
        peak_rss,
        cpu_s: cpu.map(|c| c.elapsed()),
        loadgen_cpu_s: me.elapsed(),
        db_cpu_s: db.and_then(|d| d.elapsed()),
    })
}

/// Runs every scenario against every relay, each on a fresh process and directory.
pub async fn run(plan: &Plan, mut on_row: impl FnMut(&Row)) -> Result<Vec<Row>> {
    let mut rows = Vec::new();
    // One PostgreSQL instance for the whole run, if a relay needs it; each start of such a
    // relay gets a database of its own on it.
    let postgres = if plan.servers.iter().any(|k| k.uses_postgres()) {
        let postgres = tokio::task::spawn_blocking(Postgres::start).await??;
        tracing::info!(postmaster = ?postgres.postmaster_pid(), "PostgreSQL ready");
        Some(std::sync::Arc::new(postgres))
    } else {
        None
    };
    for &scenario in &plan.scenarios {
        let t = Instant::now();
        let sizes = plan.sizes.clone();
        let docs = tokio::task::spawn_blocking(move || scenario.seed(&sizes)).await??;
        tracing::info!(
            scenario = scenario.name(),
            docs = docs.len(),
            secs = t.elapsed().as_secs_f64(),
            "documents made"
        );
        for &kind in &plan.servers {
            let (programs, tls, devices) = (plan.programs.clone(), plan.tls, plan.sizes.devices);
            let seed = docs.clone();
            let pg = postgres.clone().filter(|_| kind.uses_postgres());
            let t = Instant::now();
            let server =
                tokio::task::spawn_blocking(move || Server::start(kind, &programs, tls, devices, &seed, pg.as_ref()))
                    .await?
                    .with_context(|| format!("starting {}", kind.name()))?;
            tracing::info!(server = kind.name(), secs = t.elapsed().as_secs_f64(), "relay seeded and started");
            // Let start-up work (loading, JIT) settle before measuring.
            tokio::time::sleep(plan.sizes.settle).await;
            let db_pid = postgres.as_ref().filter(|_| kind.uses_postgres()).and_then(|p| p.postmaster_pid());
            let result = measure(scenario, &plan.sizes, &server.target, &server.pids(), db_pid, &docs).await;
            tokio::task::spawn_blocking(move || server.stop()).await?;
            let m = result.with_context(|| format!("{} against {}", scenario.name(), kind.name()))?;
            let row = Row {
                scenario,
                server: kind.name().into(),
                measured: m.measured,
                peak_rss: m.peak_rss,
                cpu_s: m.cpu_s,
                loadgen_cpu_s: m.loadgen_cpu_s,
                db_cpu_s: m.db_cpu_s,
            };
            on_row(&row);
            rows.push(row);
        }
    }
    Ok(rows)
}

/// Runs the scenarios against a relay that is already running. Documents are pushed through
/// the protocol first (by each team's first device), since its storage is not ours to write.
pub async fn run_against(
    target: &Target,
    sizes: &Sizes,
    scenarios: &[Scenario],
    mut on_row: impl FnMut(&Row),
) -> Result<Vec<Row>> {
    let mut rows = Vec::new();
    for &scenario in scenarios {
        let s = sizes.clone();
        let docs = tokio::task::spawn_blocking(move || scenario.seed(&s)).await??;
        push_docs(target, &docs, sizes.timeout).await?;
        let m = measure(scenario, sizes, target, &[], None, &docs).await?;
        let row = Row {
            scenario,
            server: "external".into(),
            measured: m.measured,
            peak_rss: m.peak_rss,
            cpu_s: m.cpu_s,
            loadgen_cpu_s: m.loadgen_cpu_s,
            db_cpu_s: m.db_cpu_s,
        };
        on_row(&row);
        rows.push(row);
    }
    Ok(rows)
}

/// Uploads documents through the protocol and waits until the relay acknowledges each.
pub async fn push_docs(target: &Target, docs: &[SeedDoc], timeout: Duration) -> Result<()> {
    let wire = std::sync::Arc::new(Wire::default());
    let mut by_team: std::collections::HashMap<usize, Vec<SeedDoc>> = Default::default();
    for d in docs {
        by_team.entry(d.team).or_default().push(d.clone());
    }
    let tasks: Vec<_> = by_team
        .into_iter()
        .map(|(team, list)| {
            let (target, wire) = (target.clone(), wire.clone());
            tokio::spawn(async move {
                let name = seed::device_name(team * 5);
                let mut dev = Device::new(&name, &format!("{name}/seeder"), team * 5, wire);
                dev.connect(&target).await?;
                for chunk in list.chunks(200) {
                    for d in chunk {
                        dev.hold(d.id, &d.bytes)?;
                        dev.flush(d.id).await?;
                    }
                    let ids: Vec<_> = chunk.iter().map(|d| d.id).collect();
                    let done = |dev: &Device| ids.iter().all(|id| dev.docs.get(id).is_some_and(|x| x.acknowledged()));
                    if !dev.until(Instant::now() + timeout, |_| {}, done).await? {
                        anyhow::bail!("the relay did not acknowledge seeded documents");
                    }
                    for id in ids {
                        dev.forget(id);
                    }
                }
                dev.disconnect().await;
                Ok::<(), anyhow::Error>(())
            })
        })
        .collect();
    for t in tasks {
        t.await??;
    }
    Ok(())
}
