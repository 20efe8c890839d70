//! The foreign-language binding tests: Kotlin on the JVM and Python, each driving the real
//! liaison-ffi library against a real relay. This file runs the relay and provisions two MSLs;
//! the scenarios live in mobile-bindings/ (kotlin/src/test, python/).
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

/// A relay with tenant `pharma-a`, team `onc-east` and MSLs alice, bob and carol (a new phone); the environment the
/// foreign tests read.
fn relay() -> (Relay, tempfile::TempDir, tempfile::TempDir, Vec<(String, String)>) {
    let data = tempfile::tempdir().unwrap();
    setup_tenant(data.path(), "pharma-a", "onc-east", &[("alice", "msl"), ("bob", "msl"), ("carol", "msl")]);
    let (_, alice) = issue(data.path(), "pharma-a", "alice", "alice-phone", &[]);
    let (_, bob) = issue(data.path(), "pharma-a", "bob", "bob-phone", &[]);
    let (_, carol) = issue(data.path(), "pharma-a", "carol", "carol-new-phone", &[]);
    let relay = Relay::start(data.path(), &[]).unwrap();
    let work = tempfile::tempdir().unwrap();
    let fp: String = relay.fingerprint.iter().map(|b| format!("{b:02x}")).collect();
    let env = vec![
        ("LIAISON_URL".into(), relay.url.clone()),
        ("LIAISON_FINGERPRINT".into(), fp),
        ("LIAISON_TENANT".into(), "pharma-a".into()),
        ("LIAISON_TEAM".into(), "onc-east".into()),
        ("LIAISON_TOKEN_ALICE".into(), alice),
        ("LIAISON_TOKEN_BOB".into(), bob),
        ("LIAISON_TOKEN_CAROL".into(), carol),
        ("LIAISON_WORKDIR".into(), work.path().display().to_string()),
    ];
    (relay, data, work, env)
}

#[test]
fn kotlin_bindings_against_a_real_relay() {
    prepare();
    let (_relay, _data, _work, env) = relay();
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
    let status = Command::new("java")
        .arg(format!("-Djna.library.path={}", root.join("target/debug").display()))
        .args(["-cp", &cp, "app.liaison.tests.BindingsTestKt"])
        .envs(env)
        .status()
        .unwrap();
    assert!(status.success(), "the Kotlin binding tests failed (their output is above)");
}

#[test]
fn python_bindings_against_a_real_relay() {
    prepare();
    let (_relay, _data, work, env) = relay();
    let root = root();
    // The generated module loads the library from its own directory.
    let module = work.path().join("module");
    std::fs::create_dir_all(&module).unwrap();
    std::fs::copy(root.join("mobile-bindings/generated/python/liaison.py"), module.join("liaison.py")).unwrap();
    std::fs::copy(root.join("target/debug/libliaison_ffi.so"), module.join("libliaison_ffi.so")).unwrap();
    let status = Command::new("python3")
        .arg(root.join("mobile-bindings/python/test_bindings.py"))
        .env("PYTHONPATH", &module)
        .envs(env)
        .status()
        .unwrap();
    assert!(status.success(), "the Python binding tests failed (their output is above)");
}
