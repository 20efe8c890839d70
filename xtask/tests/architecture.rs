//! ARCHITECTURE.md's invariants about the workspace's shape, checked where they live: in core's
//! dependency graph (`cargo tree`), in the crates' lint settings and in the source. These are the
//! promises no behavioural test can see break (a new dependency or one `std::fs` call changes no
//! output), so they are read here instead. Each check is run on something that must trip it
//! first, so none passes because it looked at nothing.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::Command;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

/// Crates that open sockets, run an async runtime or speak TLS.
const NETWORK_CRATES: &[&str] = &[
    "tokio",
    "mio",
    "socket2",
    "async-std",
    "async-io",
    "smol",
    "hyper",
    "reqwest",
    "ureq",
    "rustls",
    "tokio-rustls",
    "rustls-native-certs",
    "rustls-platform-verifier",
    "native-tls",
    "openssl",
    "tungstenite",
    "tokio-tungstenite",
];

/// The packages in liaison-core's normal dependency graph (no dev or build dependencies) with
/// `feature` on. Resolved for core alone: what ffi or server turn on for themselves does not
/// count. For the host only: `--target all` would download other platforms' crates, which the
/// build never fetched, and they differ by platform shims (winapi, r-efi), not by IO crates.
fn core_graph(feature: Option<&str>) -> Vec<String> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut args = vec!["tree", "--package", "liaison-core", "--edges", "normal"];
    args.extend(["--prefix", "none", "--format", "{p}"]);
    if let Some(feature) = feature {
        args.extend(["--features", feature]);
    }
    let out = Command::new(cargo).current_dir(root()).args(&args).output().unwrap();
    assert!(out.status.success(), "cargo tree failed: {}", String::from_utf8_lossy(&out.stderr));
    let mut names: Vec<String> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .filter_map(|l| l.split_whitespace().next().map(str::to_owned))
        .collect();
    names.sort();
    names.dedup();
    names
}

fn network_crates_in(graph: &[String]) -> Vec<&String> {
    graph.iter().filter(|p| NETWORK_CRATES.contains(&p.as_str())).collect()
}

/// Architecture Invariant: only `core::client` and `server` know about tokio, sockets or TLS;
/// core's default build has none of them.
#[test]
fn core_default_build_has_no_runtime_socket_or_tls_crate() {
    let default = core_graph(None);
    assert!(default.iter().any(|p| p == "automerge"), "the graph was read: {default:?}");
    assert_eq!(network_crates_in(&default), Vec::<&String>::new(), "in core's default dependency graph");

    // The same query sees them when the client driver is built.
    let client = core_graph(Some("client"));
    for expected in ["tokio", "rustls", "tokio-tungstenite"] {
        assert!(client.iter().any(|p| p == expected), "{expected} missing from the client graph: {client:?}");
    }
}

/// Lines of code (comments and a trailing `#[cfg(test)] mod tests { .. }` left out).
fn code_lines(file: &Path) -> Vec<(usize, String)> {
    let text = std::fs::read_to_string(file).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    let end = lines
        .windows(2)
        .position(|w| w[0].trim() == "#[cfg(test)]" && w[1].trim().starts_with("mod tests {"))
        .unwrap_or(lines.len());
    lines[..end]
        .iter()
        .enumerate()
        .filter(|(_, l)| !l.trim_start().starts_with("//"))
        .map(|(n, l)| (n + 1, (*l).to_owned()))
        .collect()
}

/// `needle` in `line`, as a path (contains `::`) or as a whole identifier.
fn mentions(line: &str, needle: &str) -> bool {
    if needle.contains("::") || needle.ends_with('(') {
        return line.contains(needle);
    }
    let ident = |c: char| c.is_alphanumeric() || c == '_';
    line.match_indices(needle).any(|(at, _)| {
        let before = line[..at].chars().next_back().is_none_or(|c| !ident(c));
        let after = line[at + needle.len()..].chars().next().is_none_or(|c| !ident(c));
        before && after
    })
}

/// Every `.rs` file under `dir`, recursively, sorted.
fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(rust_files(&path));
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
    out.sort();
    out
}

/// `file:line: code` for every line of `files` that mentions one of `forbidden`.
fn uses(files: &[PathBuf], forbidden: &[&str]) -> Vec<String> {
    let mut found = Vec::new();
    for file in files {
        for (n, line) in code_lines(file) {
            if let Some(what) = forbidden.iter().find(|f| mentions(&line, f)) {
                found.push(format!("{}:{n}: {what}: {}", file.display(), line.trim()));
            }
        }
    }
    found
}

/// Clocks, randomness, threads, files, sockets, processes, the environment and the store.
const IO: &[&str] = &[
    "std::fs",
    "std::net",
    "std::thread",
    "std::env",
    "std::process",
    "std::time",
    "SystemTime",
    "Instant",
    "sleep",
    "File",
    "TcpStream",
    "UdpSocket",
    "Uuid",
    "uuid",
    "rand",
    "getrandom",
    "::random(",
    "tokio",
    "sled",
    "crate::store",
    "crate::storage",
    "DocStore",
    "KvStore",
];

/// Architecture Invariants: `core::model` does no IO; `core::sync::engine` (and what it calls:
/// the wire codec, the screen, the inflation and expansion meters) does no IO. Time, identity
/// and session ids come in as arguments; storage is a task the driver runs (`store_tasks.rs` and
/// the test driver `testing/`, left out here, are that driver side).
#[test]
fn model_and_engine_read_no_clock_randomness_disk_or_socket() {
    let core = root().join("core/src");
    let mut files = rust_files(&core.join("model"));
    files.extend(rust_files(&core.join("sync")).into_iter().filter(|f| {
        !f.ends_with("store_tasks.rs") && !f.ends_with("wire/tests.rs") && !f.to_string_lossy().contains("/testing/")
    }));
    for must in [
        "model/document.rs",
        "model/guard.rs",
        "sync/engine/mod.rs",
        "sync/engine/receive.rs",
        "sync/engine/disk.rs",
        "sync/notice.rs",
        "sync/screen.rs",
        "sync/wire/mod.rs",
        "sync/wire/decode.rs",
    ] {
        assert!(files.iter().any(|f| f.ends_with(must)), "{must} is scanned");
    }
    assert_eq!(uses(&files, IO), Vec::<String>::new(), "IO in core::model or core::sync");

    // The scan sees IO where there is some: the clock reads the time.
    let clock = [core.join("clock.rs")];
    assert!(uses(&clock, IO).iter().any(|u| u.contains("SystemTime")), "{:?}", uses(&clock, IO));
}

/// Architecture Invariant: core reads the wall clock only in `clock.rs`; everything else takes
/// a `Clock` (the store, the device's driver) or a `now` argument (the model, the engine).
/// `Instant` (a stopwatch, for logging how long a flush took) is not the wall clock.
#[test]
fn core_reads_the_wall_clock_only_in_clock_rs() {
    let core = root().join("core/src");
    let files: Vec<PathBuf> = rust_files(&core).into_iter().filter(|f| !f.ends_with("clock.rs")).collect();
    let wall_clock = ["SystemTime", "UNIX_EPOCH", "chrono", "time::OffsetDateTime"];
    assert_eq!(uses(&files, &wall_clock), Vec::<String>::new(), "a wall-clock read outside core/src/clock.rs");
    assert!(!uses(&[core.join("clock.rs")], &wall_clock).is_empty(), "the scan sees the clock's");
}

/// The source half of "only `core::client` knows about tokio, sockets or TLS" (the dependency
/// half is `core_default_build_has_no_runtime_socket_or_tls_crate`).
#[test]
fn only_core_client_names_tokio_sockets_or_tls() {
    let core = root().join("core/src");
    let client = core.join("client");
    let files: Vec<PathBuf> = rust_files(&core).into_iter().filter(|f| !f.starts_with(&client)).collect();
    let network = ["tokio", "rustls", "tungstenite", "std::net", "TcpStream", "TcpListener", "UdpSocket"];
    assert_eq!(uses(&files, &network), Vec::<String>::new(), "network code outside core::client");
    assert!(!uses(&[client.join("mod.rs")], &network).is_empty(), "the scan sees the client's");
}

/// Architecture Invariant: unsafe code is forbidden everywhere but `ffi`, and ffi's own source
/// has none. The workspace forbids it; each member but ffi must take the workspace's lints.
#[test]
fn unsafe_code_is_forbidden_outside_ffi_and_ffi_writes_none() {
    let root = root();
    let manifest = std::fs::read_to_string(root.join("Cargo.toml")).unwrap();
    let lints = manifest.split("[workspace.lints.rust]").nth(1).unwrap().split("\n[").next().unwrap();
    assert!(lints.lines().any(|l| l.replace(' ', "") == "unsafe_code=\"forbid\""), "{lints}");

    let members = manifest.split("members = [").nth(1).unwrap().split(']').next().unwrap();
    let members: Vec<&str> = members.split(',').map(|m| m.trim().trim_matches('"')).filter(|m| !m.is_empty()).collect();
    assert!(members.contains(&"core") && members.contains(&"ffi"), "{members:?}");
    for member in members.iter().filter(|m| **m != "ffi") {
        let text = std::fs::read_to_string(root.join(member).join("Cargo.toml")).unwrap();
        let takes_workspace_lints = text.split("\n[lints]").nth(1).is_some_and(|rest| {
            rest.lines().take_while(|l| !l.starts_with('[')).any(|l| l.replace(' ', "") == "workspace=true")
        });
        assert!(takes_workspace_lints, "{member}/Cargo.toml must have `[lints] workspace = true`");
    }

    let ffi = rust_files(&root.join("ffi/src"));
    assert!(ffi.iter().any(|f| f.ends_with("store.rs")));
    assert_eq!(uses(&ffi, &["unsafe"]), Vec::<String>::new(), "unsafe in ffi's own source");
}

/// The apps see no unsigned integer (Kotlin's `UInt` and `ULong` do not mix with `Int` and
/// `Long`): ffi's records, enums and signatures are signed, and its source names an unsigned type
/// only to check a signed value from the app (`u64::try_from`, negative is `InvalidInput`).
#[test]
fn ffi_exports_no_unsigned_integer() {
    let ffi = rust_files(&root().join("ffi/src"));
    assert!(ffi.iter().any(|f| f.ends_with("types.rs")));
    let unsigned: Vec<String> = uses(&ffi, &["u8", "u16", "u32", "u64", "u128"])
        .into_iter()
        .filter(|line| !line.contains("::try_from("))
        .collect();
    assert_eq!(unsigned, Vec::<String>::new(), "an unsigned integer in ffi's API");
}

/// One concept per file: a file of core over 500 lines is named in ARCHITECTURE.md with a
/// sentence on its size ("~N lines"), saying why it stays whole.
#[test]
fn core_files_over_500_lines_are_explained_in_architecture_md() {
    let core = root().join("core/src");
    let architecture = std::fs::read_to_string(root().join("ARCHITECTURE.md")).unwrap();
    let mut unexplained = Vec::new();
    for file in rust_files(&core) {
        let lines = std::fs::read_to_string(&file).unwrap().lines().count();
        let rel = file.strip_prefix(&core).unwrap().to_string_lossy().replace('\\', "/");
        let name = rel.rsplit('/').next().unwrap().to_owned();
        let explained = architecture.lines().any(|l| l.contains(&name) && l.contains(" lines"))
            || architecture.contains(&format!("`core/src/{rel}`"))
                && architecture
                    .split(&format!("`core/src/{rel}`"))
                    .nth(1)
                    .is_some_and(|after| after.chars().take(200).collect::<String>().contains(" lines"));
        if lines > 500 && !explained {
            unexplained.push(format!("{rel} ({lines} lines)"));
        }
    }
    assert!(unexplained.is_empty(), "split these or say in ARCHITECTURE.md why they stay whole: {unexplained:?}");
}
