//! `cargo xtask bench`: the side-by-side relay benchmark (bench/, docs/benchmarks.md).
//!
//! - `cargo xtask bench [ARGS]`: builds the relays and the load generator in release, installs
//!   the Node peer's locked packages, and runs `liaison-bench ARGS` (full sizes unless `--quick`;
//!   see `liaison-bench --help`). The rows are also written to target/bench-results.json.
//! - `cargo xtask bench criterion [ARGS]`: the criterion benchmarks of the crates.

use anyhow::Result;

pub fn bench(args: &[String]) -> Result<()> {
    if args.first().map(String::as_str) == Some("criterion") {
        let mut cargo_args = vec!["bench", "--workspace", "--"];
        cargo_args.extend(args[1..].iter().map(String::as_str));
        return crate::cargo(&cargo_args);
    }
    crate::cargo(&["build", "--release", "-p", "liaison-server", "-p", "liaison-bench", "--bins"])?;
    prepare_node()?;
    let mut bench_args: Vec<&str> = args.iter().map(String::as_str).collect();
    if !args.iter().any(|a| a == "--json") {
        bench_args.extend(["--json", "target/bench-results.json"]);
    }
    crate::run("target/release/liaison-bench", &bench_args, None)
}

/// Installs the Node peer's packages exactly as locked (bench/node/package-lock.json). Needs
/// node and npm on PATH.
pub fn prepare_node() -> Result<()> {
    crate::npm_ci("bench/node")
}
