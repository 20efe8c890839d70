//! The relays under test, each started as a child process over a fresh temporary directory.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use liaison_core::client::{Trust, parse_spki_pin, tls_config};

use crate::device::Target;
use crate::seed::{self, SeedDoc};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    Liaison,
    Node,
    Samod,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Liaison => "liaison",
            Kind::Node => "node",
            Kind::Samod => "samod",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "liaison" => Some(Kind::Liaison),
            "node" => Some(Kind::Node),
            "samod" => Some(Kind::Samod),
            _ => None,
        }
    }
}

/// Where the programs are.
#[derive(Debug, Clone)]
pub struct Programs {
    /// Directory holding `liaison-relay` and `samod-relay`.
    pub bin_dir: PathBuf,
    /// bench/node (server.mjs and node_modules).
    pub node_dir: PathBuf,
    /// samod's documents on a rayon pool of this many threads instead of async tasks.
    pub samod_threads: Option<usize>,
}

impl Programs {
    /// Binaries beside this executable (or beside the test's `deps/` directory); bench/node
    /// of the source tree.
    pub fn beside_exe() -> Result<Self> {
        let exe = std::env::current_exe().context("current exe")?;
        let mut dir = exe.parent().context("exe dir")?.to_owned();
        if dir.ends_with("deps") {
            dir.pop();
        }
        Ok(Self { bin_dir: dir, node_dir: Path::new(env!("CARGO_MANIFEST_DIR")).join("node"), samod_threads: None })
    }

    /// Whether the Node peer can run here (node on PATH, packages installed).
    pub fn node_available(&self) -> bool {
        self.node_dir.join("node_modules/@automerge/automerge-repo").is_dir()
            && Command::new("node").arg("--version").output().is_ok_and(|o| o.status.success())
    }
}

/// A relay process being measured.
#[derive(Debug)]
pub struct Server {
    pub kind: Kind,
    child: Child,
    pub target: Target,
    _dir: tempfile::TempDir,
}

impl Server {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Starts `kind` over a fresh directory holding `docs`, for `devices` devices.
    pub fn start(kind: Kind, programs: &Programs, tls: bool, devices: usize, docs: &[SeedDoc]) -> Result<Self> {
        let dir = tempfile::Builder::new().prefix(&format!("liaison-bench-{}-", kind.name())).tempdir()?;
        let data = dir.path().join("data");
        let (child, url, certificate, tokens) = match kind {
            Kind::Liaison => {
                let tokens = seed::prepare_liaison(&data, devices, docs)?;
                let mut cmd = Command::new(programs.bin_dir.join("liaison-relay"));
                cmd.args(["serve", "--listen", "127.0.0.1:0", "--data"]).arg(&data);
                if !tls {
                    cmd.arg("--plain");
                }
                cmd.env("RUST_LOG", std::env::var("LIAISON_RELAY_LOG").unwrap_or_else(|_| "warn".into()));
                cmd.stderr(Stdio::inherit());
                let (child, ready) = liaison_server::process::start(cmd, &dir.path().join("ready.json"), START_TIMEOUT)
                    .context("the liaison relay did not start")?;
                (child, ready.url, ready.certificate, Some(Arc::new(tokens)))
            }
            Kind::Node | Kind::Samod => {
                seed::write_nodefs(&data, docs)?;
                let mut cmd = if kind == Kind::Node {
                    let mut c = Command::new("node");
                    // The default old-space limit would cap the peer's growth, not show it.
                    c.arg("--max-old-space-size=8192").arg(programs.node_dir.join("server.mjs"));
                    c
                } else {
                    let mut c = Command::new(programs.bin_dir.join("samod-relay"));
                    // samod logs every client that hangs up without a TLS close_notify as an error.
                    c.env("RUST_LOG", "warn,samod::io_loop=off");
                    if let Some(n) = programs.samod_threads {
                        c.arg("--threads").arg(n.to_string());
                    }
                    c
                };
                cmd.arg("--data").arg(&data);
                let mut certificate = None;
                if tls {
                    let (cert, key) = liaison_server::tls::dev_certificate(dir.path())?;
                    cmd.arg("--cert").arg(&cert).arg("--key").arg(key);
                    certificate = Some(cert);
                }
                let (child, url) = start_announcing(cmd, kind)?;
                (child, url, certificate, None)
            }
        };
        let trust = match certificate {
            Some(cert) => {
                let pin = parse_spki_pin(&liaison_server::tls::spki_pin(&cert)?).context("public-key pin")?;
                Some(Arc::new(tls_config(&Trust::PinnedKeys { pins: vec![pin] }).map_err(|e| anyhow::anyhow!("{e}"))?))
            }
            None => None,
        };
        tracing::info!(server = kind.name(), %url, "started");
        Ok(Self { kind, child, target: Target { url, tls: trust, tokens }, _dir: dir })
    }

    /// SIGTERM, then SIGKILL if it lingers.
    pub fn stop(mut self) {
        let _ = Command::new("kill").arg("-TERM").arg(self.child.id().to_string()).status();
        for _ in 0..50 {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Device tokens of a target, if it needs them.
pub fn tokens_of(target: &Target) -> Option<&HashMap<String, String>> {
    target.tokens.as_deref()
}

/// How long a relay may take to start listening.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// Starts a peer relay (the JavaScript or samod one) and reads the URL it announces on stdout
/// (`... listening on URL`); stdout is drained after, so it never blocks.
fn start_announcing(mut cmd: Command, kind: Kind) -> Result<(Child, String)> {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .with_context(|| format!("starting the {} relay", kind.name()))?;
    let stdout = child.stdout.take().context("stdout")?;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut url = None;
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if url.is_none()
                && let Some(i) = line.find(" listening on ")
            {
                url = Some(line[i + " listening on ".len()..].trim().to_owned());
                let _ = tx.send(url.clone());
            }
            // Keep draining so the relay never blocks on a full pipe.
        }
        let _ = tx.send(None);
    });
    match rx.recv_timeout(START_TIMEOUT) {
        Ok(Some(url)) => Ok((child, url)),
        _ => {
            let _ = child.kill();
            let _ = child.wait();
            bail!("the {} relay did not start", kind.name());
        }
    }
}
