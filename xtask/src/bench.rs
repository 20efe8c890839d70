//! `cargo xtask bench`: the side-by-side relay benchmark (bench/, docs/benchmarks.md).
//!
//! - `cargo xtask bench [ARGS]`: builds the relays and the load generator in release, installs
//!   the Node peer's locked packages, and runs `liaison-bench ARGS` (full sizes unless `--quick`;
//!   see `liaison-bench --help`). The rows are also written to target/bench-results.json
//!   (`$CARGO_TARGET_DIR/bench-results.json` when that is set).
//!   `--servers liaison,liaison-pg,liaison-pg2` compares liaison on sled, on PostgreSQL and as
//!   two cluster nodes on one database (a private PostgreSQL for the run, or
//!   `LIAISON_TEST_PG_URL`'s); the Node peer's packages are installed only when `node` is run.
//! - `cargo xtask bench criterion [ARGS]`: the criterion benchmarks of the crates.

use anyhow::Result;

pub fn bench(args: &[String]) -> Result<()> {
    if args.first().map(String::as_str) == Some("criterion") {
        let mut cargo_args = vec!["bench", "--workspace", "--"];
        cargo_args.extend(args[1..].iter().map(String::as_str));
        return crate::cargo(&cargo_args);
    }
    crate::cargo(&["build", "--release", "-p", "liaison-server", "-p", "liaison-bench", "--bins"])?;
    if needs_node(args) {
        prepare_node()?;
    }
    // Where cargo built (CARGO_TARGET_DIR when a shared machine gives worktrees one target).
    let target = crate::mobile::target_dir();
    let results = target.join("bench-results.json").to_string_lossy().into_owned();
    let program = target.join("release/liaison-bench").to_string_lossy().into_owned();
    let mut bench_args: Vec<&str> = args.iter().map(String::as_str).collect();
    if !args.iter().any(|a| a == "--json") {
        bench_args.extend(["--json", &results]);
    }
    crate::run(&program, &bench_args, None)
}

/// Installs the Node peer's packages exactly as locked (bench/node/package-lock.json). Needs
/// node and npm on PATH.
pub fn prepare_node() -> Result<()> {
    crate::npm_ci("bench/node")
}

/// The relays `liaison-bench` runs by default (its `--servers` default).
const DEFAULT_SERVERS: &str = "liaison,node,samod";

/// Whether the run includes the Node peer (`--servers LIST` or `--servers=LIST`; `--url` runs
/// against a relay already running and starts none).
fn needs_node(args: &[String]) -> bool {
    if args.iter().any(|a| a == "--url" || a.starts_with("--url=")) {
        return false;
    }
    let mut servers = DEFAULT_SERVERS;
    for (i, arg) in args.iter().enumerate() {
        if let Some(list) = arg.strip_prefix("--servers=") {
            servers = list;
        } else if arg == "--servers"
            && let Some(list) = args.get(i + 1)
        {
            servers = list;
        }
    }
    servers.split(',').any(|s| s.trim() == "node")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn the_node_peer_is_prepared_only_when_it_runs() {
        assert!(needs_node(&args(&[])));
        assert!(needs_node(&args(&["--quick"])));
        assert!(needs_node(&args(&["--servers", "liaison,node"])));
        assert!(needs_node(&args(&["--servers=node"])));
        assert!(!needs_node(&args(&["--servers", "liaison,liaison-pg,liaison-pg2"])));
        assert!(!needs_node(&args(&["--servers=liaison-pg2", "--quick"])));
        assert!(!needs_node(&args(&["--url", "wss://relay/v1/sync"])));
    }
}
