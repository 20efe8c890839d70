//! A short run of the harness so it cannot rot: every scenario at tiny sizes against liaison's
//! relay, the samod relay, and (if `node` and bench/node/node_modules are present) the Node
//! peer. Asserts documents arrived, edits became visible, connections held, and no errors.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;
use std::time::Duration;

use liaison_bench::scenarios::{Scenario, Sizes};
use liaison_bench::servers::{Kind, Programs};
use liaison_bench::{Plan, run};

/// The relay binaries are not built by `cargo test` (only as test harnesses): `cargo xtask test`
/// builds them first and sets LIAISON_RELAY_PREBUILT; otherwise build them here.
fn build_bins() {
    if std::env::var_os("LIAISON_RELAY_PREBUILT").is_some() {
        return;
    }
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.args(["build", "--quiet", "-p", "liaison-server", "-p", "liaison-bench", "--bins"]);
    if !cfg!(debug_assertions) {
        cmd.arg("--release");
    }
    assert!(cmd.status().expect("running cargo build").success(), "building the relays failed");
}

fn tiny() -> Sizes {
    Sizes {
        devices: 10,
        docs_per_device: 4,
        plans_per_team: 2,
        rate: 4.0,
        duration: Duration::from_secs(1),
        offline_edits: 2,
        idle_connections: 30,
        idle_hold: Duration::from_millis(300),
        cold_docs: 200,
        cold_touch: 0.1,
        phone_docs: 50,
        timeout: Duration::from_secs(20),
        settle: Duration::ZERO,
    }
}

#[test]
fn every_scenario_against_liaison_and_the_peers_on_three() {
    build_bins();
    let programs = Programs::beside_exe().unwrap();
    let mut peers = vec![Kind::Samod];
    if programs.node_available() {
        peers.push(Kind::Node);
    } else {
        eprintln!("node or bench/node/node_modules missing: the Node peer is left out (npm ci in bench/node)");
    }
    let _ = rustls::crypto::ring::default_provider().install_default();
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    // Every scenario against liaison; the peers on the three that exercise the most protocol,
    // to keep the test short.
    let liaison = Plan {
        sizes: tiny(),
        scenarios: Scenario::ALL.to_vec(),
        servers: vec![Kind::Liaison],
        tls: true,
        programs: programs.clone(),
    };
    let others = Plan {
        sizes: tiny(),
        scenarios: vec![Scenario::InitialSync, Scenario::TeamEditing, Scenario::ReconnectStorm],
        servers: peers.clone(),
        tls: true,
        programs,
    };
    let mut rows = rt.block_on(run(&liaison, |_| {})).unwrap();
    rows.extend(rt.block_on(run(&others, |_| {})).unwrap());
    assert_eq!(rows.len(), Scenario::ALL.len() + 3 * peers.len());
    println!("{}", liaison_bench::report::table(&rows));
    for r in &rows {
        let m = &r.measured;
        let what = format!("{} against {}", r.scenario.name(), r.server);
        assert!(r.peak_rss.is_some_and(|b| b > 0), "{what}: the relay's RSS was measured");
        assert!(r.cpu_s.is_some(), "{what}: the relay's CPU was measured");
        assert!(m.wire_bytes > 0, "{what}: bytes on the wire were counted");
        // The peers are measured, not judged: what they complete in a one-second window on a
        // loaded machine varies (the Node server has dropped 17, and all 35, edits in debug CI
        // runs). For them this checks that the harness drives and measures them.
        if r.server != Kind::Liaison.name() {
            if m.errors > 0 {
                println!("{what}: {} errors (the peer's, reported, not a harness failure)", m.errors);
            }
            continue;
        }
        // Our relay must lose nothing and complete everything.
        assert_eq!(m.errors, 0, "{what}: errors ({:?})", m.extra);
        let expected = match r.scenario {
            // Two teams of five, each device its team's four documents.
            Scenario::InitialSync => 40,
            // Every offline edit of the ten devices reached its four teammates.
            Scenario::ReconnectStorm => 20,
            Scenario::IdleScale => 30,
            Scenario::ColdStore => 20,
            // At least one edit per device became visible at all four teammates.
            Scenario::TeamEditing | Scenario::TeamEditingMax => 10,
            // Every document of the new phone's team, found through the catalog.
            Scenario::NewPhone => 50,
        };
        if r.scenario == Scenario::NewPhone {
            let get = |k: &str| m.extra.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone()).unwrap_or_default();
            assert_eq!(get("listed by the catalog"), "50", "{what}: {:?}", m.extra);
            assert_eq!(get("reconnect entries"), "0", "{what}: nothing new, nothing listed");
            let bytes: u64 = get("reconnect bytes").parse().unwrap();
            assert!(bytes < 1024, "{what}: a reconnect with nothing new moved {bytes} bytes");
        }
        assert!(m.ops >= expected, "{what}: {} done, expected at least {expected}", m.ops);
        if r.scenario != Scenario::IdleScale {
            assert!(!m.latencies_us.is_empty(), "{what}: latencies were sampled");
        }
    }
}

/// liaison on PostgreSQL, alone and as two cluster nodes (device i on node i % 2), on the two
/// scenarios of issue 15: nothing lost, the database's CPU measured. Starts a private
/// PostgreSQL (or uses `LIAISON_TEST_PG_URL`'s, whose CPU is then not measured).
#[test]
fn liaison_on_postgres_alone_and_as_two_cluster_nodes_completes_team_editing_and_initial_sync() {
    build_bins();
    let _ = rustls::crypto::ring::default_provider().install_default();
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    let plan = Plan {
        sizes: tiny(),
        scenarios: vec![Scenario::InitialSync, Scenario::TeamEditing],
        servers: vec![Kind::LiaisonPg, Kind::LiaisonPg2],
        tls: true,
        programs: Programs::beside_exe().unwrap(),
    };
    let rows = rt.block_on(run(&plan, |_| {})).unwrap();
    println!("{}", liaison_bench::report::table(&rows));
    assert_eq!(rows.len(), 4);
    let private = std::env::var_os(liaison_server::storage::testing::URL_VAR).is_none();
    for r in &rows {
        let m = &r.measured;
        let what = format!("{} against {}", r.scenario.name(), r.server);
        assert_eq!(m.errors, 0, "{what}: errors ({:?})", m.extra);
        let expected = if r.scenario == Scenario::InitialSync { 40 } else { 10 };
        assert!(m.ops >= expected, "{what}: {} done, expected at least {expected}", m.ops);
        assert!(r.cpu_s.is_some_and(|s| s > 0.0), "{what}: the relay's CPU was measured");
        assert_eq!(r.db_cpu_s.is_some(), private, "{what}: the database's CPU is measured when the instance is ours");
    }
    // In clock ticks (10 ms), so a scenario of a tenth of a second may read 0: over the run.
    let db_cpu: f64 = rows.iter().filter_map(|r| r.db_cpu_s).sum();
    assert!(!private || db_cpu > 0.0, "the database worked: {db_cpu} s");
}
