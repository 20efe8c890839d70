//! The relays under test, each started as child processes (one per node) over a fresh
//! temporary directory; the liaison-pg ones over a fresh database of the run's PostgreSQL.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use liaison_core::client::{Trust, parse_spki_pin, tls_config};

use crate::device::Target;
use crate::postgres::Postgres;
use crate::seed::{self, SeedDoc};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// liaison's relay on sled (its default).
    Liaison,
    /// liaison's relay on PostgreSQL, one relay alone on its database.
    LiaisonPg,
    /// Two liaison relays in cluster mode on one PostgreSQL database, the devices split
    /// between them ([`node_for`]).
    LiaisonPg2,
    /// The same two nodes with each team's devices on one node, as a load balancer hashing
    /// the relay's routing key (`Liaison-Route`, one per team) puts them ([`node_for`]).
    LiaisonPg2Routed,
    Node,
    Samod,
}

impl Kind {
    pub const ALL: [Kind; 6] =
        [Kind::Liaison, Kind::LiaisonPg, Kind::LiaisonPg2, Kind::LiaisonPg2Routed, Kind::Node, Kind::Samod];

    pub fn name(self) -> &'static str {
        match self {
            Kind::Liaison => "liaison",
            Kind::LiaisonPg => "liaison-pg",
            Kind::LiaisonPg2 => "liaison-pg2",
            Kind::LiaisonPg2Routed => "liaison-pg2-routed",
            Kind::Node => "node",
            Kind::Samod => "samod",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.name() == s)
    }

    /// liaison's relay, on any backend.
    pub fn is_liaison(self) -> bool {
        matches!(self, Kind::Liaison | Kind::LiaisonPg | Kind::LiaisonPg2 | Kind::LiaisonPg2Routed)
    }

    /// Whether it needs the run's PostgreSQL instance.
    pub fn uses_postgres(self) -> bool {
        matches!(self, Kind::LiaisonPg | Kind::LiaisonPg2 | Kind::LiaisonPg2Routed)
    }

    /// Relay processes it runs.
    pub fn nodes(self) -> usize {
        if self.is_cluster() { 2 } else { 1 }
    }

    /// Cluster nodes on one database.
    pub fn is_cluster(self) -> bool {
        matches!(self, Kind::LiaisonPg2 | Kind::LiaisonPg2Routed)
    }

    /// Each team's devices on one node.
    pub fn routed_by_team(self) -> bool {
        self == Kind::LiaisonPg2Routed
    }
}

/// The node device `device` connects to, of `nodes`: device i to node i % nodes, so each team
/// of five has members on both nodes of a pair and every edit crosses between them; or, routed
/// by team, every device of team t to node t % nodes, as a balancer hashing the team's routing
/// key spreads teams (the key is per team; which node a team gets does not matter here).
pub fn node_for(device: usize, nodes: usize, routed_by_team: bool) -> usize {
    let n = if routed_by_team { seed::team_of(device) } else { device };
    n % nodes.max(1)
}

/// Where the programs are.
#[derive(Debug, Clone)]
pub struct Programs {
    /// Directory holding `liaison-relay` and `samod-relay`.
    pub bin_dir: PathBuf,
    /// bench/node (server.mjs and node_modules).
    pub node_dir: PathBuf,
    /// samod's documents on a rayon pool of this many threads instead of async tasks.
    pub samod_threads: Option<usize>,
}

impl Programs {
    /// Binaries beside this executable (or beside the test's `deps/` directory); bench/node
    /// of the source tree.
    pub fn beside_exe() -> Result<Self> {
        let exe = std::env::current_exe().context("current exe")?;
        let mut dir = exe.parent().context("exe dir")?.to_owned();
        if dir.ends_with("deps") {
            dir.pop();
        }
        Ok(Self { bin_dir: dir, node_dir: Path::new(env!("CARGO_MANIFEST_DIR")).join("node"), samod_threads: None })
    }

    /// Whether the Node peer can run here (node on PATH, packages installed).
    pub fn node_available(&self) -> bool {
        self.node_dir.join("node_modules/@automerge/automerge-repo").is_dir()
            && Command::new("node").arg("--version").output().is_ok_and(|o| o.status.success())
    }
}

/// A relay being measured: one process, or one per node of a cluster.
#[derive(Debug)]
pub struct Server {
    pub kind: Kind,
    nodes: Vec<Child>,
    pub target: Target,
    /// The database of a liaison-pg relay, dropped once its nodes stop.
    database: Option<(Arc<Postgres>, String)>,
    _dir: tempfile::TempDir,
}

impl Server {
    /// The relay's processes (one per node).
    pub fn pids(&self) -> Vec<u32> {
        self.nodes.iter().map(Child::id).collect()
    }

    /// Starts `kind` over a fresh directory (and, for liaison-pg, a fresh database on
    /// `postgres`) holding `docs`, for `devices` devices.
    pub fn start(
        kind: Kind,
        programs: &Programs,
        tls: bool,
        devices: usize,
        docs: &[SeedDoc],
        postgres: Option<&Arc<Postgres>>,
    ) -> Result<Self> {
        let dir = tempfile::Builder::new().prefix(&format!("liaison-bench-{}-", kind.name())).tempdir()?;
        let data = dir.path().join("data");
        let mut database = None;
        let (nodes, urls, certificates, tokens) = match kind {
            Kind::Liaison => {
                let tokens = seed::prepare_liaison_sled(&data, devices, docs)?;
                let (child, ready) = start_liaison(programs, tls, dir.path(), &data, None)?;
                (vec![child], vec![ready.url], ready.certificate.into_iter().collect(), Some(Arc::new(tokens)))
            }
            Kind::LiaisonPg | Kind::LiaisonPg2 | Kind::LiaisonPg2Routed => {
                let postgres = postgres.context("liaison-pg needs the run's PostgreSQL")?;
                let url = postgres.fresh_database()?;
                database = Some((postgres.clone(), url.clone()));
                let config = dir.path().join("storage.toml");
                std::fs::write(&config, storage_toml(&url, kind.is_cluster()))?;
                migrate(programs, &config)?;
                let tokens = {
                    let loaded = liaison_server::config::Config::load(Some(&config), &|_| None)
                        .map_err(|e| anyhow::anyhow!("{e}"))?;
                    // No lock: nothing else uses the database yet, and the store is dropped
                    // before the relays open it.
                    let kv = liaison_server::storage::open_postgres_shared(&loaded.storage)
                        .context("opening the benchmark's database")?;
                    seed::prepare_liaison(Arc::new(kv), devices, docs)?
                };
                let (mut nodes, mut urls, mut certificates) = (Vec::new(), Vec::new(), Vec::new());
                for n in 0..kind.nodes() {
                    let node_dir = dir.path().join(format!("node{n}"));
                    std::fs::create_dir_all(&node_dir)?;
                    let started = start_liaison(programs, tls, &node_dir, &node_dir.join("data"), Some(&config));
                    let (child, ready) = match started {
                        Ok(started) => started,
                        Err(e) => {
                            stop_all(&mut nodes);
                            return Err(e.context(format!("node {n}")));
                        }
                    };
                    nodes.push(child);
                    urls.push(ready.url);
                    certificates.extend(ready.certificate);
                }
                (nodes, urls, certificates, Some(Arc::new(tokens)))
            }
            Kind::Node | Kind::Samod => {
                seed::write_nodefs(&data, docs)?;
                let mut cmd = if kind == Kind::Node {
                    let mut c = Command::new("node");
                    // The default old-space limit would cap the peer's growth, not show it.
                    c.arg("--max-old-space-size=8192").arg(programs.node_dir.join("server.mjs"));
                    c
                } else {
                    let mut c = Command::new(programs.bin_dir.join("samod-relay"));
                    // samod logs every client that hangs up without a TLS close_notify as an error.
                    c.env("RUST_LOG", "warn,samod::io_loop=off");
                    if let Some(n) = programs.samod_threads {
                        c.arg("--threads").arg(n.to_string());
                    }
                    c
                };
                cmd.arg("--data").arg(&data);
                let mut certificates = Vec::new();
                if tls {
                    let (cert, key) = liaison_server::tls::dev_certificate(dir.path())?;
                    cmd.arg("--cert").arg(&cert).arg("--key").arg(key);
                    certificates.push(cert);
                }
                let (child, url) = start_announcing(cmd, kind)?;
                (vec![child], vec![url], certificates, None)
            }
        };
        let trust = if certificates.is_empty() {
            None
        } else {
            // Every node's own certificate (each made its dev certificate in its own directory).
            let pins = certificates
                .iter()
                .map(|cert| parse_spki_pin(&liaison_server::tls::spki_pin(cert)?).context("public-key pin"))
                .collect::<Result<Vec<_>>>()?;
            Some(Arc::new(tls_config(&Trust::PinnedKeys { pins }).map_err(|e| anyhow::anyhow!("{e}"))?))
        };
        tracing::info!(server = kind.name(), urls = ?urls, "started");
        Ok(Self {
            kind,
            nodes,
            target: Target { urls, tls: trust, tokens, routed_by_team: kind.routed_by_team() },
            database,
            _dir: dir,
        })
    }

    /// SIGTERM to every node, then SIGKILL to any that lingers; then drops its database.
    pub fn stop(mut self) {
        stop_all(&mut self.nodes);
        if let Some((postgres, url)) = self.database.take()
            && let Err(e) = postgres.drop_database(&url)
        {
            tracing::warn!("could not drop the benchmark's database: {e:#}");
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        for child in &mut self.nodes {
            if let Ok(None) = child.try_wait() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}

/// SIGTERM to every process, then SIGKILL to those still running after 5 s.
fn stop_all(children: &mut [Child]) {
    for child in children.iter() {
        let _ = Command::new("kill").arg("-TERM").arg(child.id().to_string()).status();
    }
    for _ in 0..50 {
        if children.iter_mut().all(|c| matches!(c.try_wait(), Ok(Some(_)))) {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    for child in children.iter_mut() {
        if let Ok(None) = child.try_wait() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// `[storage]` of a liaison-pg relay: PostgreSQL on loopback (so `tls = "disable"`), the
/// default pool size, and `cluster = true` for the nodes of a pair.
pub fn storage_toml(url: &str, cluster: bool) -> String {
    format!("[storage]\nbackend = \"postgres\"\nurl = \"{url}\"\ntls = \"disable\"\ncluster = {cluster}\n")
}

/// `liaison-relay migrate --config FILE`: the schema, as an operator makes it.
fn migrate(programs: &Programs, config: &Path) -> Result<()> {
    let out = Command::new(programs.bin_dir.join("liaison-relay"))
        .arg("migrate")
        .arg("--config")
        .arg(config)
        .output()
        .context("running liaison-relay migrate")?;
    if !out.status.success() {
        bail!("liaison-relay migrate failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(())
}

/// Starts `liaison-relay serve` over `data` (its ready file in `dir`), with a `--config` for
/// PostgreSQL.
fn start_liaison(
    programs: &Programs,
    tls: bool,
    dir: &Path,
    data: &Path,
    config: Option<&Path>,
) -> Result<(Child, liaison_server::ready::Ready)> {
    let mut cmd = Command::new(programs.bin_dir.join("liaison-relay"));
    cmd.args(["serve", "--listen", "127.0.0.1:0", "--data"]).arg(data);
    if let Some(config) = config {
        cmd.arg("--config").arg(config);
    }
    if !tls {
        cmd.arg("--plain");
    }
    cmd.env("RUST_LOG", std::env::var("LIAISON_RELAY_LOG").unwrap_or_else(|_| "warn".into()));
    cmd.stderr(Stdio::inherit());
    liaison_server::process::start(cmd, &dir.join("ready.json"), START_TIMEOUT)
        .context("the liaison relay did not start")
}

/// Device tokens of a target, if it needs them.
pub fn tokens_of(target: &Target) -> Option<&HashMap<String, String>> {
    target.tokens.as_deref()
}

/// How long a relay may take to start listening.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// Starts a peer relay (the JavaScript or samod one) and reads the URL it announces on stdout
/// (`... listening on URL`); stdout is drained after, so it never blocks.
fn start_announcing(mut cmd: Command, kind: Kind) -> Result<(Child, String)> {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .with_context(|| format!("starting the {} relay", kind.name()))?;
    let stdout = child.stdout.take().context("stdout")?;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut url = None;
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if url.is_none()
                && let Some(i) = line.find(" listening on ")
            {
                url = Some(line[i + " listening on ".len()..].trim().to_owned());
                let _ = tx.send(url.clone());
            }
            // Keep draining so the relay never blocks on a full pipe.
        }
        let _ = tx.send(None);
    });
    match rx.recv_timeout(START_TIMEOUT) {
        Ok(Some(url)) => Ok((child, url)),
        _ => {
            let _ = child.kill();
            let _ = child.wait();
            bail!("the {} relay did not start", kind.name());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn devices_alternate_between_the_nodes_so_every_team_spans_both() {
        assert_eq!((0..6).map(|d| node_for(d, 2, false)).collect::<Vec<_>>(), [0, 1, 0, 1, 0, 1]);
        assert!((0..10).all(|d| node_for(d, 1, false) == 0));
        // A team is five consecutive devices: both nodes serve some of each team.
        for team in 0..4 {
            let nodes: std::collections::HashSet<usize> =
                (team * 5..team * 5 + 5).map(|d| node_for(d, 2, false)).collect();
            assert_eq!(nodes.len(), 2);
            // Routed by team: all five on one node, and the teams spread over both.
            let routed: std::collections::HashSet<usize> =
                (team * 5..team * 5 + 5).map(|d| node_for(d, 2, true)).collect();
            assert_eq!(routed, [team % 2].into());
        }
        assert_eq!(node_for(3, 0, false), 0, "no nodes is read as one");
    }

    #[test]
    fn relay_names_round_trip_and_only_the_pg_relays_need_postgres() {
        for kind in Kind::ALL {
            assert_eq!(Kind::parse(kind.name()), Some(kind));
        }
        assert_eq!(Kind::parse("liaison-pg3"), None);
        assert_eq!(Kind::ALL.iter().filter(|k| k.uses_postgres()).count(), 3);
        assert!(Kind::ALL.iter().filter(|k| k.uses_postgres()).all(|k| k.is_liaison()));
        assert_eq!(Kind::LiaisonPg2.nodes(), 2);
        assert_eq!(Kind::LiaisonPg.nodes(), 1);
        assert_eq!((Kind::LiaisonPg2Routed.nodes(), Kind::LiaisonPg2Routed.routed_by_team()), (2, true));
    }

    #[test]
    fn the_storage_table_parses_as_the_relay_reads_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("storage.toml");
        std::fs::write(&file, storage_toml("postgres://postgres@127.0.0.1:5432/bench_1", true)).expect("write");
        let config = liaison_server::config::Config::load(Some(&file), &|_| None).expect("a valid config");
        assert_eq!(config.storage.backend, liaison_server::config::Backend::Postgres);
        assert!(config.storage.cluster);
        assert_eq!(config.storage.tls, liaison_server::config::DbTls::Disable);
        liaison_server::storage::check_config(&config.storage).expect("accepted for loopback");
    }
}
