//! Project tasks: `cargo xtask ci | test | bench`.
//!
//! - `test`: installs what the tests need, then runs every test of the workspace (unit,
//!   integration, property, crash and doc tests; benchmarks run once on small data).
//! - `ci`: formatting check, clippy with `-D warnings` on all targets, then `test`.
//! - `bench`: the criterion benchmarks at full size.

use std::process::Command;

use anyhow::{Context, Result, bail};

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("ci") => ci(),
        Some("test") => test(),
        Some("bench") => bench(&args[1..]),
        _ => {
            eprintln!("usage: cargo xtask <ci|test|bench [criterion args]>");
            std::process::exit(2);
        }
    }
}

fn cargo(args: &[&str]) -> Result<()> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    eprintln!("$ cargo {}", args.join(" "));
    let status = Command::new(&cargo).args(args).status().with_context(|| format!("running cargo {}", args[0]))?;
    if !status.success() {
        bail!("cargo {} failed ({status})", args.join(" "));
    }
    Ok(())
}

fn ci() -> Result<()> {
    cargo(&["fmt", "--all", "--check"])?;
    cargo(&["clippy", "--workspace", "--all-targets", "--", "-D", "warnings"])?;
    test()
}

/// What the tests need beyond the Rust toolchain. The core tests need nothing else: the
/// relay, binding and interop issues add their apt, pip and npm packages here.
fn install_test_dependencies() -> Result<()> {
    Ok(())
}

fn test() -> Result<()> {
    install_test_dependencies()?;
    cargo(&["test", "--workspace", "--all-targets"])?;
    cargo(&["test", "--workspace", "--doc"])
}

fn bench(extra: &[String]) -> Result<()> {
    let mut args = vec!["bench", "--workspace", "--"];
    args.extend(extra.iter().map(String::as_str));
    cargo(&args)
}
