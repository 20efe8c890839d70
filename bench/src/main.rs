//! `liaison-bench`: runs the benchmark scenarios against liaison's relay, the Node automerge-repo
//! sync server and a samod relay (each started here), or against a relay already running.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::Parser;
use liaison_bench::scenarios::{Scenario, Sizes};
use liaison_bench::servers::{Kind, Programs};
use liaison_bench::{Plan, Row, device::Target, report};

#[derive(Parser, Debug)]
#[command(name = "liaison-bench", about = "liaison's relay side by side with automerge-repo's Node server and samod")]
struct Args {
    /// Small sizes for a smoke run (seconds, not minutes).
    #[arg(long)]
    quick: bool,
    /// Relays to start and compare, comma-separated: liaison (on sled), liaison-pg (on a
    /// PostgreSQL database), liaison-pg2 (two cluster nodes on one PostgreSQL database, device i
    /// on node i % 2), liaison-pg2-routed (the same, each team on one node, as a balancer
    /// hashing the relay's routing key puts it), node, samod. The liaison-pg relays run on one private PostgreSQL started
    /// for the run (Debian's, installed if missing), or on LIAISON_TEST_PG_URL's instance.
    #[arg(long, default_value = "liaison,node,samod")]
    servers: String,
    /// Scenarios, comma-separated: initial-sync, team-editing, team-editing-max,
    /// reconnect-storm, idle-scale, cold-store, new-phone (default all).
    #[arg(long)]
    scenarios: Option<String>,
    /// Plain WebSocket instead of TLS.
    #[arg(long)]
    plain: bool,
    #[arg(long)]
    devices: Option<usize>,
    /// Initial sync: documents each device pulls.
    #[arg(long)]
    docs: Option<usize>,
    /// Team editing: shared plans per team.
    #[arg(long)]
    plans: Option<usize>,
    /// Team editing: edits per second per device.
    #[arg(long)]
    rate: Option<f64>,
    /// Team editing: seconds.
    #[arg(long)]
    duration: Option<f64>,
    #[arg(long)]
    offline_edits: Option<usize>,
    #[arg(long)]
    idle: Option<usize>,
    #[arg(long)]
    cold_docs: Option<usize>,
    /// Cold store: share of the stored documents clients touch.
    #[arg(long)]
    cold_touch: Option<f64>,
    /// New phone: documents of its team.
    #[arg(long)]
    phone_docs: Option<usize>,
    /// Seconds any phase may take.
    #[arg(long)]
    timeout: Option<f64>,
    /// Run against a relay already running at this URL (ws:// or wss://) instead of starting them.
    #[arg(long)]
    url: Option<String>,
    /// With --url and wss: the certificate's public-key pin (base64 SHA-256 of its SPKI, as the
    /// relay prints it, or hex).
    #[arg(long)]
    fingerprint: Option<String>,
    /// With --url: a file of `DEVICE TOKEN` lines (liaison's relay; devices are d0, d1, ...).
    #[arg(long)]
    tokens: Option<PathBuf>,
    /// Where liaison-relay and samod-relay are (default: beside this program).
    #[arg(long)]
    bin_dir: Option<PathBuf>,
    /// Run samod's documents on a rayon pool of this many threads (samod's `threadpool`
    /// feature) instead of samod's default, a task per document on the async runtime.
    #[arg(long)]
    samod_threads: Option<usize>,
    /// Write the rows as JSON here too.
    #[arg(long)]
    json: Option<PathBuf>,
}

fn sizes(a: &Args) -> Sizes {
    let mut s = if a.quick { Sizes::quick() } else { Sizes::full() };
    if let Some(v) = a.devices {
        s.devices = v.max(2);
    }
    if let Some(v) = a.docs {
        s.docs_per_device = v;
    }
    if let Some(v) = a.plans {
        s.plans_per_team = v.max(1);
    }
    if let Some(v) = a.rate {
        s.rate = v;
    }
    if let Some(v) = a.duration {
        s.duration = Duration::from_secs_f64(v);
    }
    if let Some(v) = a.offline_edits {
        s.offline_edits = v;
    }
    if let Some(v) = a.idle {
        s.idle_connections = v;
    }
    if let Some(v) = a.cold_docs {
        s.cold_docs = v;
    }
    if let Some(v) = a.cold_touch {
        s.cold_touch = v;
    }
    if let Some(v) = a.phone_docs {
        s.phone_docs = v;
    }
    if let Some(v) = a.timeout {
        s.timeout = Duration::from_secs_f64(v);
    }
    s
}

fn print_row(r: &Row) {
    let m = &r.measured;
    eprintln!(
        "  {} / {}: {:.0} {}, p50 {} ms, p99 {} ms, {} errors, peak RSS {} MiB, relay CPU {:.1} s, db CPU {}, loadgen CPU {:.1} s",
        r.scenario.name(),
        r.server,
        m.throughput(),
        m.unit,
        m.percentile_ms(50.0).map_or("-".into(), |v| format!("{v:.1}")),
        m.percentile_ms(99.0).map_or("-".into(), |v| format!("{v:.1}")),
        m.errors,
        r.peak_rss.map_or("-".into(), |b| format!("{:.0}", b as f64 / 1048576.0)),
        r.cpu_s.unwrap_or(0.0),
        r.db_cpu_s.map_or("-".into(), |v| format!("{v:.1} s")),
        r.loadgen_cpu_s,
    );
}

fn main() -> Result<()> {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info,automerge=warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let _ = rustls::crypto::ring::default_provider().install_default();
    let sizes = sizes(&args);
    let scenarios: Vec<Scenario> = match &args.scenarios {
        Some(list) => list
            .split(',')
            .map(|s| Scenario::parse(s.trim()).with_context(|| format!("unknown scenario {s}")))
            .collect::<Result<_>>()?,
        None => Scenario::ALL.to_vec(),
    };
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let rows = if let Some(url) = &args.url {
        let tls = match &args.fingerprint {
            Some(fp) => {
                let pin = liaison_core::client::parse_spki_pin(fp).context("bad public-key pin")?;
                let trust = liaison_core::client::Trust::PinnedKeys { pins: vec![pin] };
                Some(Arc::new(liaison_core::client::tls_config(&trust).map_err(|e| anyhow::anyhow!("{e}"))?))
            }
            None if url.starts_with("wss:") => {
                let c = liaison_core::client::tls_config(&liaison_core::client::Trust::System { pins: vec![] })
                    .map_err(|e| anyhow::anyhow!("{e}"))?;
                Some(Arc::new(c))
            }
            None => None,
        };
        let tokens = match &args.tokens {
            Some(path) => {
                let text = std::fs::read_to_string(path).context("reading the tokens file")?;
                let map: HashMap<String, String> = text
                    .lines()
                    .filter_map(|l| l.split_once(char::is_whitespace))
                    .map(|(d, t)| (d.to_owned(), t.trim().to_owned()))
                    .collect();
                Some(Arc::new(map))
            }
            None => None,
        };
        let target = Target { urls: vec![url.clone()], tls, tokens, routed_by_team: false };
        rt.block_on(liaison_bench::run_against(&target, &sizes, &scenarios, print_row))?
    } else {
        let servers: Vec<Kind> = args
            .servers
            .split(',')
            .map(|s| Kind::parse(s.trim()).with_context(|| format!("unknown relay {s}")))
            .collect::<Result<_>>()?;
        let mut programs = Programs::beside_exe()?;
        programs.samod_threads = args.samod_threads;
        if let Some(d) = &args.bin_dir {
            programs.bin_dir = d.clone();
        }
        for k in &servers {
            let ok = match k {
                Kind::Liaison | Kind::LiaisonPg | Kind::LiaisonPg2 | Kind::LiaisonPg2Routed => {
                    programs.bin_dir.join("liaison-relay").is_file()
                }
                Kind::Samod => programs.bin_dir.join("samod-relay").is_file(),
                Kind::Node => programs.node_available(),
            };
            if !ok {
                bail!(
                    "{} relay not found: build with `cargo build --release -p liaison-server -p liaison-bench --bins` \
                     and install bench/node (`npm ci` there), or leave it out with --servers",
                    k.name()
                );
            }
        }
        let plan = Plan { sizes: sizes.clone(), scenarios, servers, tls: !args.plain, programs };
        eprintln!("sizes: {sizes:?}, tls: {}", plan.tls);
        rt.block_on(liaison_bench::run(&plan, print_row))?
    };
    println!("\n{}", report::table(&rows));
    if rows.iter().any(|r| Kind::parse(&r.server).is_none_or(|k| !k.is_liaison())) {
        println!(
            "liaison relative to each peer (throughput: higher is better; p99, RSS, CPU, bytes: lower is better):\n"
        );
        println!("{}", report::ratios(&rows));
    }
    if rows.iter().any(|r| Kind::parse(&r.server).is_some_and(Kind::uses_postgres)) {
        println!(
            "liaison on PostgreSQL relative to liaison on sled (throughput: higher is better; the rest: lower is better):\n"
        );
        println!("{}", report::backend_ratios(&rows));
    }
    println!("{}", report::details(&rows));
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_string_pretty(&report::json(&rows))?).context("writing the JSON")?;
    }
    Ok(())
}
