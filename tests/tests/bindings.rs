//! The foreign-language binding tests: Kotlin on the JVM and Python, each driving the real
//! liaison-ffi library against a real relay. This file runs the relay and provisions two MSLs;
//! the scenarios live in mobile-bindings/ (kotlin/src/test, python/).
//! The Swift package is not compiled here; its hand-written initialisers are checked against
//! the generated Swift (`hand_written_swift_initialisers_match_the_generated_ones`).
//!
//! `cargo xtask test` generates the bindings and compiles the Kotlin first; run alone, the test
//! does it through `cargo xtask prepare-binding-tests`.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::Command;

use liaison_e2e::{Relay, issue, setup_tenant};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_owned()
}

/// Where cargo builds (`CARGO_TARGET_DIR`, else `target/` in the workspace).
fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| root().join("target"), PathBuf::from)
}

fn prepare() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        if std::env::var_os("LIAISON_BINDINGS_PREPARED").is_some() {
            return;
        }
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let status = Command::new(cargo)
            .current_dir(root())
            .args(["run", "--quiet", "-p", "xtask", "--", "prepare-binding-tests"])
            .status()
            .unwrap();
        assert!(status.success(), "preparing the binding tests failed");
    });
}

/// A relay with tenant `pharma-a`, team `onc-east` and MSLs alice, bob, carol (a new phone)
/// and dan (whose credential the sign-in scenario has revoked); the environment the foreign
/// tests read, and dan's token id.
fn relay() -> (Relay, tempfile::TempDir, tempfile::TempDir, Vec<(String, String)>, String) {
    let data = tempfile::tempdir().unwrap();
    let users = [("alice", "msl"), ("bob", "msl"), ("carol", "msl"), ("dan", "msl")];
    setup_tenant(data.path(), "pharma-a", "onc-east", &users);
    let (_, alice) = issue(data.path(), "pharma-a", "alice", "alice-phone", &[]);
    let (_, bob) = issue(data.path(), "pharma-a", "bob", "bob-phone", &[]);
    let (_, carol) = issue(data.path(), "pharma-a", "carol", "carol-new-phone", &[]);
    let (dan_id, dan) = issue(data.path(), "pharma-a", "dan", "dan-phone", &[]);
    let relay = Relay::start(data.path(), &[]).unwrap();
    let work = tempfile::tempdir().unwrap();
    use base64::Engine as _;
    let pin = base64::engine::general_purpose::STANDARD.encode(relay.spki_pin);
    let env = vec![
        ("LIAISON_URL".into(), relay.url.clone()),
        ("LIAISON_SPKI_PIN".into(), pin),
        ("LIAISON_TOKEN_DAN".into(), dan),
        ("LIAISON_TENANT".into(), "pharma-a".into()),
        ("LIAISON_TEAM".into(), "onc-east".into()),
        ("LIAISON_TOKEN_ALICE".into(), alice),
        ("LIAISON_TOKEN_BOB".into(), bob),
        ("LIAISON_TOKEN_CAROL".into(), carol),
        ("LIAISON_WORKDIR".into(), work.path().display().to_string()),
    ];
    (relay, data, work, env, dan_id)
}

/// Runs `foreign` while revoking dan's credential when the foreign test asks: it writes
/// `revoke-dan` into the work directory; the revocation goes through the admin API (as IT
/// would), and `revoked-dan` tells it done.
fn with_revoker(relay: &Relay, work: &Path, dan_id: &str, foreign: impl FnOnce() -> bool) -> bool {
    let done = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|scope| {
        scope.spawn(|| {
            let (ask, answer) = (work.join("revoke-dan"), work.join("revoked-dan"));
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                if ask.exists() && !answer.exists() {
                    let path = format!("/admin/v1/tokens/{dan_id}");
                    let (status, body) = relay.admin_api("DELETE", &path, &relay.admin_token(), None);
                    assert_eq!(status, 200, "{body}");
                    std::fs::write(&answer, b"").unwrap();
                }
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
        });
        let ok = foreign();
        done.store(true, std::sync::atomic::Ordering::Relaxed);
        ok
    })
}

#[test]
fn kotlin_bindings_against_a_real_relay() {
    prepare();
    let (relay, _data, work, env, dan_id) = relay();
    let root = root();
    let jars = root.join("target/kotlin-toolchain/jars");
    let cp = [
        root.join("target/kotlin-classes"),
        jars.join("kotlin-stdlib-2.3.10-RC.jar"),
        jars.join("kotlin-jupyter-kernel-0.19.0-944-all.jar"),
        PathBuf::from("/usr/share/java/jna.jar"),
    ]
    .map(|p| p.display().to_string())
    .join(":");
    let ok = with_revoker(&relay, work.path(), &dan_id, || {
        Command::new("java")
            .arg(format!("-Djna.library.path={}", target_dir().join("debug").display()))
            .args(["-cp", &cp, "app.liaison.tests.BindingsTestKt"])
            .envs(env)
            .status()
            .unwrap()
            .success()
    });
    assert!(ok, "the Kotlin binding tests failed (their output is above)");
}

#[test]
fn python_bindings_against_a_real_relay() {
    prepare();
    let (relay, _data, work, env, dan_id) = relay();
    let root = root();
    // The generated module loads the library from its own directory.
    let module = work.path().join("module");
    std::fs::create_dir_all(&module).unwrap();
    std::fs::copy(root.join("mobile-bindings/generated/python/liaison.py"), module.join("liaison.py")).unwrap();
    std::fs::copy(target_dir().join("debug/libliaison_ffi.so"), module.join("libliaison_ffi.so")).unwrap();
    let ok = with_revoker(&relay, work.path(), &dan_id, || {
        Command::new("python3")
            .arg(root.join("mobile-bindings/python/test_bindings.py"))
            .env("PYTHONPATH", &module)
            .envs(env)
            .status()
            .unwrap()
            .success()
    });
    assert!(ok, "the Python binding tests failed (their output is above)");
}

/// One parameter of a Swift initialiser: its label, its type, and whether it has a default.
#[derive(Debug, PartialEq)]
struct SwiftParam {
    label: String,
    ty: String,
    defaulted: bool,
}

/// The parameters of `public init(...)` starting at `text` (`label: Type = default, ...`).
fn swift_params(text: &str) -> Vec<SwiftParam> {
    let open = text.find("public init(").unwrap() + "public init(".len();
    let (mut depth, mut end) = (1, open);
    for (i, c) in text[open..].char_indices() {
        depth += match c {
            '(' | '[' => 1,
            ')' | ']' => -1,
            _ => 0,
        };
        if depth == 0 {
            end = open + i;
            break;
        }
    }
    let (mut params, mut depth, mut start) = (Vec::new(), 0, open);
    let list = &text[..end];
    for (i, c) in list[open..].char_indices().map(|(i, c)| (open + i, c)).chain([(end, ',')]) {
        match c {
            '(' | '[' => depth += 1,
            ')' | ']' => depth -= 1,
            ',' if depth == 0 => {
                let param = list.get(start..i).unwrap_or("").trim();
                if let Some((label, rest)) = param.split_once(':') {
                    let (ty, default) = rest.split_once('=').map_or((rest, false), |(t, _)| (t, true));
                    params.push(SwiftParam { label: label.trim().into(), ty: ty.trim().into(), defaulted: default });
                }
                start = i + 1;
            }
            _ => {}
        }
    }
    params
}

/// The Swift package is not compiled here (no Swift compiler), so its hand-written
/// initialisers (swift/Sources/LiaisonCore/Records.swift) are checked against the generated
/// Swift instead: each declares only fields of its record, with the generated types; it leaves
/// out a field the generated initialiser requires (so no call matches both); and its
/// `self.init(...)` names, in order, the generated initialiser's labels and leaves out only
/// defaulted ones.
#[test]
fn hand_written_swift_initialisers_match_the_generated_ones() {
    prepare();
    let root = root();
    let generated = std::fs::read_to_string(root.join("mobile-bindings/generated/swift/LiaisonCore.swift")).unwrap();
    let records =
        std::fs::read_to_string(root.join("mobile-bindings/swift/Sources/LiaisonCore/Records.swift")).unwrap();
    let mut checked = Vec::new();
    for block in records.split("\nextension ").skip(1) {
        let name = block.split_whitespace().next().unwrap();
        let at = generated.find(&format!("public struct {name}: ")).unwrap_or_else(|| panic!("no struct {name}"));
        let theirs = swift_params(&generated[at..]);
        let ours = swift_params(block);
        for p in &ours {
            let field = theirs.iter().find(|t| t.label == p.label);
            let field = field.unwrap_or_else(|| panic!("{name} has no field {}", p.label));
            assert_eq!(field.ty, p.ty, "{name}.{}: the generated type", p.label);
        }
        assert!(
            theirs.iter().any(|t| !t.defaulted && ours.iter().all(|p| p.label != t.label)),
            "{name}: the hand-written initialiser must leave out a required field"
        );
        let call = block.split("self.init(").nth(1).unwrap().split(')').next().unwrap();
        let labels: Vec<&str> =
            call.split(',').filter_map(|arg| arg.split_once(':')).map(|(label, _)| label.trim()).collect();
        let mut rest = theirs.iter();
        for label in &labels {
            loop {
                let t = rest.next().unwrap_or_else(|| panic!("{name}: self.init names {label} out of order"));
                if t.label == *label {
                    break;
                }
                assert!(t.defaulted, "{name}: self.init leaves out the required {}", t.label);
            }
        }
        assert!(rest.all(|t| t.defaulted), "{name}: self.init leaves out a required field at the end");
        checked.push(name.to_owned());
    }
    assert_eq!(
        checked,
        ["Interaction", "MedicalInsight", "MedicalInformationRequest", "KolProfile", "FollowUp", "PlanActivity"]
    );
}

/// Every store call that touches the disk is `async` for Swift too (the Swift is not compiled
/// here, so the generated text is read), and the generated Swift is patched to cancel the Rust
/// future when the awaiting Task is cancelled: each async call names the cancel function that
/// goes with its free function, and the C header declares it.
#[test]
fn swift_store_calls_are_async_and_cancel_the_rust_future() {
    prepare();
    let dir = root().join("mobile-bindings/generated/swift");
    let swift = std::fs::read_to_string(dir.join("LiaisonCore.swift")).unwrap();
    let header = std::fs::read_to_string(dir.join("LiaisonCoreFFI.h")).unwrap();
    let protocol = swift.split("public protocol LiaisonStoreProtocol").nth(1).unwrap().split("\n}").next().unwrap();
    let mut sync: Vec<&str> = protocol
        .lines()
        .map(str::trim)
        .filter(|l| l.starts_with("func ") && !l.contains(" async"))
        .map(|l| l.trim_start_matches("func ").split('(').next().unwrap())
        // A live query's call only registers it: its answers come from the notifier thread.
        .filter(|name| !name.starts_with("watch"))
        .collect();
    sync.sort_unstable();
    assert_eq!(
        sync,
        ["discardRefused", "publishPresence", "retrySignIn", "setNetwork", "setObserver", "syncStatus"],
        "only calls that touch no disk stay synchronous"
    );
    assert!(swift.contains("static func `open`(config: StoreConfig)async throws"), "opening is async too");
    assert!(swift.contains("withTaskCancellationHandler"), "the Swift is patched (xtask/src/swift_cancel.rs)");
    let mut calls = 0;
    for call in swift.split("await uniffiRustCallAsync(").skip(1) {
        let field = |name: &str| {
            call.split(&format!("{name}: ")).nth(1).and_then(|rest| rest.split(',').next()).unwrap().trim().to_owned()
        };
        let (free, cancel) = (field("freeFunc"), field("cancelFunc"));
        assert_eq!(cancel, free.replace("_rust_future_free_", "_rust_future_cancel_"), "the cancel that frees {free}");
        assert!(header.contains(&format!("void {cancel}(")), "{cancel} is in the C header");
        calls += 1;
    }
    assert!(calls >= 30, "{calls} async calls");
}

/// The Android module (mobile-bindings/android, not built here: no Android SDK) declares a
/// dependency for every package its Kotlin imports: the generated Kotlin in its Android flavour
/// (`uniffi-android.toml`, which must take effect: `android = true` is what imports
/// `androidx.annotation`) and the hand-written sources it compiles with.
#[test]
fn the_android_module_declares_what_its_kotlin_imports() {
    prepare();
    let root = root();
    let mut files = Vec::new();
    let mut dirs =
        vec![root.join("mobile-bindings/generated/kotlin-android"), root.join("mobile-bindings/kotlin/src/main")];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "kt") {
                files.push(path);
            }
        }
    }
    let mut imports = std::collections::BTreeSet::new();
    for f in &files {
        for line in std::fs::read_to_string(f).unwrap().lines() {
            if let Some(i) = line.trim().strip_prefix("import ") {
                imports.insert(i.trim().to_owned());
            }
        }
    }
    assert!(
        imports.contains("androidx.annotation.RequiresApi"),
        "the generated Kotlin is not Android's: uniffi ignored uniffi-android.toml"
    );
    let gradle = std::fs::read_to_string(root.join("mobile-bindings/android/liaison/build.gradle.kts")).unwrap();
    let declared = |coordinate: &str| gradle.contains(&format!("(\"{coordinate}:"));
    // Package prefix -> the Maven coordinate that provides it (None: the JDK, Kotlin or Android).
    let providers: [(&str, Option<&str>); 7] = [
        ("java.", None),
        ("kotlin.", None),
        ("android.", None),
        ("app.liaison.core.", None),
        ("androidx.annotation.", Some("androidx.annotation:annotation")),
        ("kotlinx.coroutines.", Some("org.jetbrains.kotlinx:kotlinx-coroutines-android")),
        ("com.sun.jna.", Some("net.java.dev.jna:jna")),
    ];
    for import in &imports {
        let provider = providers.iter().find(|(prefix, _)| import.starts_with(prefix));
        let Some((_, provider)) = provider else { panic!("{import}: no dependency of the Android module provides it") };
        if let Some(coordinate) = provider {
            assert!(declared(coordinate), "{import} needs {coordinate} in build.gradle.kts");
        }
    }
}
