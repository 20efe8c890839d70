//! Project tasks: `cargo xtask ci | test | bench | bindings`.
//!
//! - `test`: installs what the tests need, then runs every test of the workspace (unit,
//!   integration, property, crash and doc tests; benchmarks run once on small data).
//! - `ci`: formatting check, clippy with `-D warnings` on all targets, then `test`.
//! - `bench`: the relay benchmark against its peers (`bench/`); `bench criterion`: the crates'
//!   criterion benchmarks at full size.
//! - `fuzz [SECONDS]`: every cargo-fuzz target for SECONDS (default 60) each; installs
//!   cargo-fuzz if missing. Crashes land in `fuzz/artifacts/`: keep them in `fuzz/regressions/`.
//! - `soak [CASES]`: the protocol simulator (open relay and real policy) and the convergence
//!   properties at CASES cases each
//!   (default 2,000; the everyday suite runs 40 and 48), in release.
//! - `bindings [--release]`: builds liaison-ffi and generates Swift, Kotlin and Python into
//!   mobile-bindings/generated/; the Swift is made to cancel Rust futures (`swift_cancel.rs`).
//! - `swift-cancellable FILE`: that Swift patch alone (the XCFramework script runs it).
//! - `kotlin-bench [KOLS]`: the Kotlin benchmark on the release library (default 2,000 KOLs).
//! - `mobile-release`: the size-optimised library and its stripped size.
//! - `postgres`: the tests' private PostgreSQL, for running tests by hand
//!   (`LIAISON_TEST_PG_URL=... cargo test ...`); stopped on Enter.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use anyhow::{Context, Result, bail};

mod bench;
mod mobile;
mod postgres;
mod swift_cancel;

fn main() -> Result<()> {
    // Tasks run from the workspace root whatever the caller's directory.
    if let Some(root) = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).parent() {
        std::env::set_current_dir(root).context("entering the workspace root")?;
    }
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("ci") => ci(),
        Some("test") => test(),
        Some("bench") => bench::bench(&args[1..]),
        Some("fuzz") => fuzz(args.get(1).map(String::as_str).unwrap_or("60")),
        Some("soak") => soak(args.get(1).map(String::as_str).unwrap_or("2000")),
        Some("bindings") => mobile::bindings(args.get(1).is_some_and(|a| a == "--release")),
        Some("prepare-binding-tests") => mobile::prepare_binding_tests(),
        Some("kotlin-bench") => mobile::kotlin_bench(args.get(1).map(String::as_str).unwrap_or("2000")),
        Some("mobile-release") => mobile::mobile_release(),
        Some("swift-cancellable") => match args.get(1) {
            Some(file) => swift_cancel::patch_file(std::path::Path::new(file)),
            None => anyhow::bail!("usage: cargo xtask swift-cancellable GENERATED.swift"),
        },
        Some("postgres") => postgres::until_enter(),
        _ => {
            eprintln!(
                "usage: cargo xtask <ci|test|bench [liaison-bench args]|bench criterion [args]|fuzz [seconds]|soak [cases]|\
                 bindings [--release]|prepare-binding-tests|kotlin-bench [kols]|mobile-release|swift-cancellable FILE|postgres>"
            );
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
    cargo(&["clippy", "--workspace", "--all-targets", "--all-features", "--", "-D", "warnings"])?;
    test()
}

fn have(program: &str, arg: &str) -> bool {
    Command::new(program).arg(arg).output().is_ok_and(|o| o.status.success())
}

fn run(program: &str, args: &[&str], dir: Option<&str>) -> Result<()> {
    eprintln!("$ {program} {}", args.join(" "));
    let mut cmd = Command::new(program);
    cmd.args(args);
    if let Some(d) = dir {
        cmd.current_dir(d);
    }
    let status = cmd.status().with_context(|| format!("running {program}"))?;
    if !status.success() {
        bail!("{program} {} failed ({status})", args.join(" "));
    }
    Ok(())
}

/// What the tests need beyond the Rust toolchain:
/// - PostgreSQL (Debian's `postgresql`, installed by `postgres::start` if missing), for the
///   relay's PostgreSQL backend;
/// - Node.js and npm (Debian's packages if missing) and the npm packages of the JavaScript
///   interop test (tests/js) and the benchmark's Node peer (bench/node), installed exactly as locked.
fn install_test_dependencies() -> Result<()> {
    if !have("node", "--version") || !have("npm", "--version") {
        run("apt-get", &["update"], None)?;
        run("apt-get", &["install", "-y", "nodejs", "npm"], None)?;
    }
    npm_ci("tests/js")?;
    // The benchmark's Node peer, which the harness smoke test drives.
    bench::prepare_node()
}

/// `npm ci` in `dir` if its node_modules is missing or older than its lockfile.
fn npm_ci(dir: &str) -> Result<()> {
    let dir = std::path::Path::new(dir);
    let installed = dir.join("node_modules/.package-lock.json");
    let lock = dir.join("package-lock.json");
    let fresh = match (std::fs::metadata(installed), std::fs::metadata(lock)) {
        (Ok(a), Ok(b)) => a.modified().ok() >= b.modified().ok(),
        _ => false,
    };
    if !fresh {
        run("npm", &["ci", "--no-audit", "--no-fund"], dir.to_str())?;
    }
    Ok(())
}

fn test() -> Result<()> {
    install_test_dependencies()?;
    // The e2e tests spawn the relay binary (`cargo test` builds binaries only as test harnesses)
    // and the binding tests load the ffi library through Kotlin and Python: build the workspace,
    // generate the bindings and compile the Kotlin first.
    mobile::prepare_binding_tests()?;
    // One PostgreSQL for the whole run, stopped when `database` drops (the tests ended,
    // passed or not) or, if xtask itself dies, when its pipe closes.
    let database = postgres::start()?;
    let mut totals = Totals::default();
    let all = cargo_test(&["test", "--workspace", "--all-targets", "--no-fail-fast"], &database.url, &mut totals);
    let doc = cargo_test(&["test", "--workspace", "--doc"], &database.url, &mut totals);
    // One closing line for the whole run, after cargo's per-binary ones.
    println!("tests: {} passed, {} failed, {} skipped", totals.passed, totals.failed, totals.ignored);
    all.and(doc)
}

#[derive(Default)]
struct Totals {
    passed: u64,
    failed: u64,
    ignored: u64,
}

/// Runs a cargo test command, echoing its output and adding up its `test result:` lines.
fn cargo_test(args: &[&str], postgres_url: &str, totals: &mut Totals) -> Result<()> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    eprintln!("$ cargo {}", args.join(" "));
    let mut child = Command::new(&cargo)
        .args(args)
        // test() built the relay binary just before; the e2e harness need not build it again.
        .env("LIAISON_RELAY_PREBUILT", "1")
        .env("LIAISON_BINDINGS_PREPARED", "1")
        .env("LIAISON_TEST_PG_URL", postgres_url)
        .stdout(Stdio::piped())
        .spawn()
        .context("running cargo test")?;
    let stdout = child.stdout.take().context("cargo test stdout")?;
    for line in BufReader::new(stdout).lines() {
        let line = line.context("reading cargo test output")?;
        println!("{line}");
        if let Some(rest) = line.strip_prefix("test result: ") {
            for part in rest.split(';') {
                let mut words = part.split_whitespace().rev();
                let (Some(what), Some(n)) = (words.next(), words.next()) else { continue };
                let n: u64 = n.trim_start_matches("ok. ").parse().unwrap_or(0);
                match what {
                    "passed" => totals.passed += n,
                    "failed" => totals.failed += n,
                    "ignored" => totals.ignored += n,
                    _ => {}
                }
            }
        }
    }
    let status = child.wait().context("waiting for cargo test")?;
    if !status.success() {
        bail!("cargo {} failed ({status})", args.join(" "));
    }
    Ok(())
}

/// The simulator and the convergence properties at `cases` cases each (`PROPTEST_CASES`).
fn soak(cases: &str) -> Result<()> {
    let n: u32 = cases.parse().context("soak takes a number of cases")?;
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let started = std::time::Instant::now();
    // The simulator with the open relay and with the relay's real policy, and the convergence
    // properties of offline edits.
    let args = [
        "test",
        "--release",
        "-p",
        "liaison-core",
        "-p",
        "liaison-server",
        "--test",
        "sync_sim",
        "--test",
        "convergence",
        "--test",
        "sim_policy",
    ];
    eprintln!("$ PROPTEST_CASES={n} cargo {}", args.join(" "));
    let status =
        Command::new(&cargo).args(args).env("PROPTEST_CASES", n.to_string()).status().context("running cargo")?;
    eprintln!("soak: {n} cases each, {:.0} s", started.elapsed().as_secs_f64());
    if !status.success() {
        bail!(
            "the soak failed: a failing case (printed above, saved to the .proptest-regressions file) or a build error"
        );
    }
    Ok(())
}

const FUZZ_TARGETS: [&str; 3] = ["wire_decode", "engine_frames", "engine_changes"];

fn fuzz(seconds: &str) -> Result<()> {
    let seconds: u32 = seconds.parse().context("fuzz takes a number of seconds")?;
    let have = Command::new("cargo").args(["fuzz", "--version"]).output().is_ok_and(|o| o.status.success());
    if !have {
        cargo(&["install", "cargo-fuzz", "--locked"])?;
    }
    for target in FUZZ_TARGETS {
        eprintln!("$ cargo fuzz run {target} (for {seconds} s)");
        let status = Command::new("cargo")
            .current_dir("fuzz")
            // cargo-fuzz passes sanitizer flags that stable rustc accepts only with this set.
            .env("RUSTC_BOOTSTRAP", "1")
            .args(["fuzz", "run", target, &format!("seeds/{target}"), "--", &format!("-max_total_time={seconds}")])
            .status()
            .context("running cargo fuzz")?;
        if !status.success() {
            bail!("fuzz target {target} found a crash: see fuzz/artifacts/{target}/");
        }
    }
    Ok(())
}
