//! Interop with the JavaScript implementation: a Node script using @automerge/automerge-repo
//! 2.5.x and its WebSocket client adapter (tests/js, installed from npm with a lockfile) syncs
//! with a real relay both ways: created in JavaScript and read by our Rust client, and the
//! reverse, with edits flowing both ways.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;

use liaison_core::model::*;
use liaison_core::{DocumentId, Role};
use liaison_e2e::*;

fn js_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("js")
}

/// Installs the locked npm packages if they are not there (`cargo xtask test` does it first).
fn ensure_node_modules() {
    if js_dir().join("node_modules/@automerge/automerge-repo").is_dir() {
        return;
    }
    let status = Command::new("npm")
        .args(["ci", "--no-audit", "--no-fund"])
        .current_dir(js_dir())
        .status()
        .expect("npm is needed for the JavaScript interop test: run `cargo xtask test`, which installs it");
    assert!(status.success(), "npm ci failed");
}

struct Js {
    child: Child,
    stdin: ChildStdin,
    lines: mpsc::Receiver<String>,
}

impl Js {
    /// `tenant` and `user` are the token's: the script derives its actor id from them.
    fn start(relay: &Relay, token: &str, tenant: &str, user: &str, peer: &str) -> Self {
        ensure_node_modules();
        let url = format!("{}?token={token}", relay.url.replace("127.0.0.1", "localhost"));
        let mut child = Command::new("node")
            .arg("interop.mjs")
            .arg(url)
            .current_dir(js_dir())
            .env("PEER_ID", peer)
            .env("LIAISON_TENANT", tenant)
            .env("LIAISON_USER", user)
            .env("NODE_EXTRA_CA_CERTS", relay.data.join("dev-cert.pem"))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("node is needed for the JavaScript interop test");
        let stdin = child.stdin.take().unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Self { child, stdin, lines }
    }

    fn cmd(&mut self, line: &str) -> serde_json::Value {
        writeln!(self.stdin, "{line}").unwrap();
        self.stdin.flush().unwrap();
        let answer = self.lines.recv_timeout(WAIT).unwrap_or_else(|_| panic!("no answer from JavaScript to {line:?}"));
        let v: serde_json::Value = serde_json::from_str(&answer).unwrap();
        assert!(v.get("error").is_none(), "JavaScript failed on {line:?}: {v}");
        v
    }
}

impl Drop for Js {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_javascript_automerge_repo_client_syncs_both_ways_through_the_relay() {
    let data = tempfile::tempdir().unwrap();
    setup_tenant(data.path(), "pharma-a", "onc-east", &[("sato", "msl"), ("jsuser", "msl")]);
    let (_, sato_t) = issue(data.path(), "pharma-a", "sato", "sato-phone", &[]);
    let (_, js_t) = issue(data.path(), "pharma-a", "jsuser", "js-device", &[]);
    let relay = Relay::start(data.path(), &[]).unwrap();
    let sato = Device::new(&relay, "pharma-a", "sato", "sato-phone", &sato_t, Role::Msl);
    let js = std::sync::Arc::new(std::sync::Mutex::new(Js::start(&relay, &js_t, "pharma-a", "jsuser", "js-device")));
    let run = |line: String| {
        let js = js.clone();
        tokio::task::spawn_blocking(move || js.lock().unwrap().cmd(&line))
    };
    let kol = DocumentId::from_bytes([5; 16]);

    // Created in JavaScript, read by our Rust client.
    let created = run(format!("create pharma-a onc-east {kol}")).await.unwrap();
    let js_doc: DocumentId = created["created"].as_str().unwrap().parse().unwrap();
    sato.client().find(js_doc);
    sato.until_store("the JavaScript plan arrives, typed", |s| {
        s.get::<EngagementPlan>(&js_doc)
            .is_ok_and(|p| p.title == "plan from javascript" && p.notes.as_str() == "Written in JavaScript.")
    })
    .await;

    // Created in Rust, read by JavaScript.
    let plan = EngagementPlan { notes: "Written in Rust.".into(), ..EngagementPlan::new(&kol, "plan from rust") };
    let rust_doc = sato.store.create("onc-east", &plan).unwrap();
    sato.created(rust_doc);
    sato.synced().await;
    let read = run(format!("read {rust_doc}")).await.unwrap();
    assert_eq!(read["doc"]["record"]["notes"], "Written in Rust.");
    assert_eq!(read["doc"]["record"]["title"], "plan from rust");
    assert_eq!(read["doc"]["envelope"]["tenant"], "pharma-a");

    // Edits flow both ways.
    run(format!("edit {rust_doc} edited in javascript")).await.unwrap();
    sato.until_store("the JavaScript edit arrives", |s| {
        s.get::<EngagementPlan>(&rust_doc).is_ok_and(|p| p.title == "edited in javascript")
    })
    .await;
    sato.store
        .update(&js_doc, |p: &mut EngagementPlan| {
            let end = p.notes.as_str().len();
            p.notes.splice(end, 0, " Then Rust.")
        })
        .unwrap();
    sato.client().local_change(js_doc);
    let seen = run(format!("wait {js_doc} Written in JavaScript. Then Rust.")).await.unwrap();
    assert_eq!(seen["seen"], js_doc.to_string());
}
