//! Harness for end-to-end tests: a real `liaison-relay` process with TLS on 127.0.0.1:0 and a
//! temporary data directory, real devices (`DocStore` + `SyncClient`), and raw WebSocket
//! connections for misbehaving peers.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stderr, missing_debug_implementations)]

pub mod raw;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use liaison_core::client::{ClientOptions, SyncClient, SyncStatus, Trust, parse_fingerprint, parse_spki_pin};
use liaison_core::storage::SledKv;
use liaison_core::store::{StoreOptions, SystemClock};
use liaison_core::{DocStore, DocumentId, Identity, Role};

/// How long any wait in these tests may take before it fails.
pub const WAIT: Duration = Duration::from_secs(30);

/// The relay binary beside the test executable.
///
/// `cargo test` builds binaries only as test harnesses, so the real one must be built:
/// `cargo xtask test` does it first and sets `LIAISON_RELAY_PREBUILT`; otherwise it is built
/// here, once per test binary, with the e2e package selected too so features unify alike.
pub fn relay_bin() -> PathBuf {
    // Another relay binary (for example an older build, to see a test fail on it).
    if let Some(bin) = std::env::var_os("LIAISON_RELAY_BIN") {
        return PathBuf::from(bin);
    }
    static BUILT: std::sync::Once = std::sync::Once::new();
    BUILT.call_once(|| {
        if std::env::var_os("LIAISON_RELAY_PREBUILT").is_some() {
            return;
        }
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut cmd = Command::new(cargo);
        cmd.args(["build", "--quiet", "-p", "liaison-server", "-p", "liaison-e2e", "--bins"]);
        if !cfg!(debug_assertions) {
            cmd.arg("--release");
        }
        let status = cmd.status().expect("running cargo build for the relay");
        assert!(status.success(), "building the relay failed");
    });
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().and_then(Path::parent).unwrap();
    dir.join("liaison-relay")
}

/// Where a test relay keeps its data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Store {
    /// sled in the data directory (the default).
    Sled,
    /// A database of its own on the tests' PostgreSQL (`LIAISON_TEST_PG_URL`, or a private
    /// instance this process starts: `liaison_server::storage::testing`).
    Postgres,
}

/// The configuration file of a data directory made by [`data_dir`] for PostgreSQL; every
/// relay command of this harness (`serve`, `admin`) reads it when it is there, unless the test
/// gives `serve` a `--config` of its own.
pub const CONFIG_FILE: &str = "e2e-storage.toml";

/// A new data directory for a relay on `store`. For PostgreSQL it holds [`CONFIG_FILE`] naming
/// a new database, already migrated with `liaison-relay migrate`.
pub fn data_dir(store: Store) -> tempfile::TempDir {
    match store {
        Store::Sled => tempfile::tempdir().unwrap(),
        Store::Postgres => postgres_data_dir(liaison_server::storage::testing::fresh_database().unwrap()),
    }
}

/// A new data directory for a relay on the PostgreSQL database `url` (migrated here).
pub fn postgres_data_dir(url: String) -> tempfile::TempDir {
    let data = tempfile::tempdir().unwrap();
    {
        let config = format!("[storage]\nbackend = \"postgres\"\nurl = \"{url}\"\ntls = \"disable\"\npool_size = 8\n");
        std::fs::write(data.path().join(CONFIG_FILE), config).unwrap();
        let out = Command::new(relay_bin())
            .arg("migrate")
            .args(config_args(data.path()))
            .output()
            .expect("running liaison-relay migrate");
        assert!(out.status.success(), "migrate failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    data
}

/// Data directories for `n` relays of one cluster on one new PostgreSQL database
/// (`[storage] cluster = true`, migrated once): each node has its own directory (certificate,
/// ready file), all name the same database.
pub fn cluster_data_dirs(n: usize) -> Vec<tempfile::TempDir> {
    cluster_data_dirs_on(liaison_server::storage::testing::fresh_database().unwrap(), n)
}

/// [`cluster_data_dirs`] on the database `url` (a private instance a test may restart).
pub fn cluster_data_dirs_on(url: String, n: usize) -> Vec<tempfile::TempDir> {
    let first = postgres_data_dir(url);
    let file = first.path().join(CONFIG_FILE);
    let mut config = std::fs::read_to_string(&file).unwrap();
    // `[storage]` is the file's only table: a line appended belongs to it.
    config.push_str("cluster = true\n");
    std::fs::write(&file, &config).unwrap();
    let mut dirs = vec![first];
    for _ in 1..n {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(CONFIG_FILE), &config).unwrap();
        dirs.push(dir);
    }
    dirs
}

/// The configuration the harness's relay runs `data` with (for opening its data in a test).
pub fn relay_config(data: &Path) -> liaison_server::config::Config {
    let file = data.join(CONFIG_FILE);
    let mut config = liaison_server::config::Config::load(file.exists().then_some(file.as_path()), &|_| None).unwrap();
    config.data_dir = data.to_owned();
    config
}

/// `--config DATA/relay.toml` when [`data_dir`] wrote one.
fn config_args(data: &Path) -> Vec<std::ffi::OsString> {
    let file = data.join(CONFIG_FILE);
    if file.exists() { vec!["--config".into(), file.into_os_string()] } else { Vec::new() }
}

/// Runs `liaison-relay admin --data DIR ARGS` and returns its stdout.
pub fn admin(data: &Path, args: &[&str]) -> Result<String> {
    let out = Command::new(relay_bin())
        .arg("admin")
        .arg("--data")
        .arg(data)
        .args(config_args(data))
        .args(args)
        .output()
        .context("running the admin CLI")?;
    if !out.status.success() {
        bail!("admin {:?} failed: {}", args, String::from_utf8_lossy(&out.stderr));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Issues a device token with the admin CLI; returns (token id, secret).
pub fn issue(data: &Path, tenant: &str, user: &str, device: &str, extra: &[&str]) -> (String, String) {
    let mut args = vec!["issue-token", "--tenant", tenant, "--user", user, "--device", device];
    args.extend_from_slice(extra);
    let out = admin(data, &args).unwrap();
    let id = out.lines().find_map(|l| l.strip_prefix("token id: ")).unwrap().to_owned();
    let secret = out.lines().find_map(|l| l.strip_prefix("token: ")).unwrap().to_owned();
    (id, secret)
}

/// A tenant with one team and users: (user, role) pairs.
pub fn setup_tenant(data: &Path, tenant: &str, team: &str, users: &[(&str, &str)]) {
    admin(data, &["add-tenant", tenant]).unwrap();
    admin(data, &["add-team", "--tenant", tenant, team]).unwrap();
    for (user, role) in users {
        admin(data, &["put-user", "--tenant", tenant, "--role", role, "--team", team, user]).unwrap();
    }
}

pub struct Relay {
    child: Option<Child>,
    pub data: PathBuf,
    pub url: String,
    pub base: String,
    pub fingerprint: [u8; 32],
    /// The certificate's public-key pin, what devices pin.
    pub spki_pin: [u8; 32],
    pub cert_pem: Vec<u8>,
    /// `https://ADDR` of the admin listener (`admin_listen`), when the relay has one.
    pub admin_base: Option<String>,
    /// A system admin's token, exchanged once for the single-use bootstrap credential.
    admin_secret: std::sync::OnceLock<String>,
    extra: Vec<String>,
}

impl Relay {
    /// Starts the relay on 127.0.0.1:0 over `data`, with extra `serve` arguments.
    pub fn start(data: &Path, extra: &[&str]) -> Result<Self> {
        let mut command = Command::new(relay_bin());
        command
            .args(["serve", "--listen", "127.0.0.1:0", "--data"])
            .arg(data)
            .args(if extra.contains(&"--config") { Vec::new() } else { config_args(data) })
            .args(extra)
            .env("RUST_LOG", std::env::var("LIAISON_RELAY_LOG").unwrap_or_else(|_| "warn".into()))
            .stderr(Stdio::inherit());
        let (child, ready) = liaison_server::process::start(command, &data.join("relay-ready.json"), WAIT)
            .context("starting the relay")?;
        let fingerprint = ready.fingerprint.as_deref().and_then(parse_fingerprint);
        let spki_pin = ready.spki_pin.as_deref().and_then(parse_spki_pin);
        let cert_pem = ready.certificate.as_ref().and_then(|cert| std::fs::read(cert).ok()).unwrap_or_default();
        Ok(Self {
            child: Some(child),
            data: data.to_owned(),
            url: ready.url,
            base: ready.base_url,
            fingerprint: fingerprint.unwrap_or([0; 32]),
            spki_pin: spki_pin.unwrap_or([0; 32]),
            cert_pem,
            admin_base: ready.admin_url,
            admin_secret: std::sync::OnceLock::new(),
            extra: extra.iter().map(|s| (*s).to_owned()).collect(),
        })
    }

    /// The relay's resident memory in KiB (VmRSS), read from /proc.
    pub fn rss_kib(&self) -> u64 {
        let pid = self.pid().expect("relay running");
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap()
    }

    /// Issues a device token through the admin API while the relay runs; returns (id, secret).
    pub fn issue_live(&self, tenant: &str, user: &str, device: &str) -> (String, String) {
        let (status, body) = self.admin_api(
            "POST",
            &format!("/admin/v1/tenants/{tenant}/users/{user}/tokens"),
            &self.admin_token(),
            Some(serde_json::json!({ "device": device })),
        );
        assert_eq!(status, 201, "{body}");
        (body["id"].as_str().unwrap_or_default().to_owned(), body["token"].as_str().unwrap_or_default().to_owned())
    }

    /// The documents the catalog lists for `token`.
    pub fn catalog(&self, token: &str) -> String {
        self.get_text(&format!("/v1/catalog?token={token}"))
    }

    /// The relay's process id (for signals).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// SIGKILL: no shutdown, no flush.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM and wait: the graceful path.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill").arg("-TERM").arg(c.id().to_string()).status();
            let _ = c.wait();
        }
    }

    /// Starts the relay again on the same data directory (a new port).
    pub fn restart(&mut self) -> Result<()> {
        self.kill();
        let extra: Vec<&str> = self.extra.iter().map(String::as_str).collect();
        let admin_secret = self.admin_secret.take();
        *self = Relay::start(&self.data.clone(), &extra)?;
        if let Some(secret) = admin_secret {
            let _ = self.admin_secret.set(secret);
        }
        Ok(())
    }

    /// The first admin credential the relay wrote on its first start (single use).
    pub fn bootstrap_token(&self) -> String {
        std::fs::read_to_string(self.data.join("bootstrap-admin-token")).unwrap().trim().to_owned()
    }

    /// A system admin's token (device `e2e-admin`): on first use, the bootstrap credential is
    /// spent on issuing it, as an operator does.
    pub fn admin_token(&self) -> String {
        self.admin_secret
            .get_or_init(|| {
                let (status, body) = self.admin_api(
                    "POST",
                    "/admin/v1/tenants/system/users/admin/tokens",
                    &self.bootstrap_token(),
                    Some(serde_json::json!({ "device": "e2e-admin" })),
                );
                assert_eq!(status, 201, "exchanging the bootstrap credential for an admin token: {body}");
                body["token"].as_str().unwrap().to_owned()
            })
            .clone()
    }

    fn http(&self) -> ureq::Agent {
        let cert = ureq::tls::Certificate::from_pem(&self.cert_pem).unwrap().to_owned();
        let tls = ureq::tls::TlsConfig::builder().root_certs(ureq::tls::RootCerts::new_with_certs(&[cert])).build();
        ureq::Agent::config_builder().tls_config(tls).http_status_as_error(false).build().new_agent()
    }

    /// GETs a plain-text endpoint (such as /metrics).
    pub fn get_text(&self, path: &str) -> String {
        let url = format!("{}{}", self.base.replace("127.0.0.1", "localhost"), path);
        self.http().get(&url).call().unwrap().body_mut().read_to_string().unwrap()
    }

    /// GETs `path` from `base` (`relay.base`, or the admin listener's), with a bearer token if
    /// given; returns (status, body).
    pub fn get_from(&self, base: &str, path: &str, bearer: Option<&str>) -> (u16, String) {
        let url = format!("{}{}", base.replace("127.0.0.1", "localhost"), path);
        let mut request = self.http().get(&url);
        if let Some(token) = bearer {
            request = request.header("Authorization", &format!("Bearer {token}"));
        }
        let mut resp = request.call().unwrap();
        (resp.status().as_u16(), resp.body_mut().read_to_string().unwrap_or_default())
    }

    /// Calls the admin API (blocking) on the admin listener if the relay has one, else on the
    /// main one; returns (status, body).
    pub fn admin_api(
        &self,
        method: &str,
        path: &str,
        token: &str,
        body: Option<serde_json::Value>,
    ) -> (u16, serde_json::Value) {
        let base = self.admin_base.as_deref().unwrap_or(&self.base);
        self.api_on(base, method, path, token, body)
    }

    /// Calls an API route on `base` (blocking); returns (status, body).
    pub fn api_on(
        &self,
        base: &str,
        method: &str,
        path: &str,
        token: &str,
        body: Option<serde_json::Value>,
    ) -> (u16, serde_json::Value) {
        let url = format!("{}{}", base.replace("127.0.0.1", "localhost"), path);
        let agent = self.http();
        let auth = format!("Bearer {token}");
        let mut resp = match (method, body) {
            ("GET", _) => agent.get(&url).header("Authorization", &auth).call().unwrap(),
            ("DELETE", _) => agent.delete(&url).header("Authorization", &auth).call().unwrap(),
            ("PUT", Some(b)) => agent.put(&url).header("Authorization", &auth).send_json(b).unwrap(),
            (_, b) => {
                agent.post(&url).header("Authorization", &auth).send_json(b.unwrap_or(serde_json::json!({}))).unwrap()
            }
        };
        let status = resp.status().as_u16();
        let body = resp.body_mut().read_json().unwrap_or(serde_json::Value::Null);
        (status, body)
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A device: its own sled store and a sync client pinned to the relay's certificate.
pub struct Device {
    pub store: Arc<DocStore>,
    pub client: Option<SyncClient>,
    pub dir: tempfile::TempDir,
    pub name: String,
    token: String,
}

fn init_logs() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_test_writer()
            .try_init();
    });
}

impl Drop for Device {
    /// Stops the client, then waits (up to 5 s) until its task and storage work have let go of
    /// the store, so the store (and sled's last flush) goes before its directory. Removing the
    /// directory first made sled's flush at runtime shutdown write into a removed directory and
    /// wait forever (seen twice in `hostile::oversized_ids_…`, whose devices hold 5 MiB
    /// documents: sled keeps those as blob files in the directory). If the store is still held
    /// after that, the directory is left behind rather than removed under it.
    fn drop(&mut self) {
        self.client = None;
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while Arc::strong_count(&self.store) > 1 && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        if Arc::strong_count(&self.store) > 1 {
            self.dir.disable_cleanup(true);
        }
    }
}

impl Device {
    pub fn new(relay: &Relay, tenant: &str, user: &str, device: &str, token: &str, role: Role) -> Self {
        init_logs();
        let dir = tempfile::tempdir().unwrap();
        let who = Identity { tenant: tenant.into(), user: user.into(), device: device.into(), role, install: [0; 8] };
        let kv = SledKv::open(dir.path()).unwrap();
        let store =
            Arc::new(DocStore::with_kv(Arc::new(kv), who, Arc::new(SystemClock), StoreOptions::default()).unwrap());
        let mut d = Self { store, client: None, dir, name: device.into(), token: token.into() };
        d.connect(relay);
        d
    }

    /// (Re)starts the sync client against `relay`.
    pub fn connect(&mut self, relay: &Relay) {
        self.client = None;
        let options = ClientOptions {
            url: relay.url.clone(),
            token: self.token.clone(),
            credentials: None,
            peer_id: self.name.clone(),
            storage_id: format!("{}-store", self.name),
            trust: Trust::PinnedKeys { pins: vec![relay.spki_pin] },
            backoff_min: Duration::from_millis(50),
            backoff_max: Duration::from_millis(500),
        };
        self.client = Some(SyncClient::start(self.store.clone(), options).unwrap());
    }

    /// Stops syncing (the device goes offline).
    pub fn offline(&mut self) {
        self.client = None;
    }

    pub fn client(&self) -> &SyncClient {
        self.client.as_ref().expect("device is online")
    }

    /// Waits until the status satisfies `cond`.
    pub async fn until(&self, what: &str, cond: impl Fn(&SyncStatus) -> bool) -> SyncStatus {
        let mut rx = self.client().watch_status();
        let r = tokio::time::timeout(WAIT, async {
            loop {
                let s = rx.borrow_and_update().clone();
                if cond(&s) {
                    return s;
                }
                if rx.changed().await.is_err() {
                    return s;
                }
            }
        })
        .await;
        match r {
            Ok(s) if cond(&s) => s,
            _ => panic!("{}: timed out waiting until {what}; status {:?}", self.name, self.client().status()),
        }
    }

    /// Waits until every local change is acknowledged by the relay.
    pub async fn synced(&self) {
        self.until("every local change is acknowledged", |s| {
            s.pending_documents == 0 && s.state == liaison_core::client::ConnState::UpToDate
        })
        .await;
    }

    /// Waits until `check` holds on the store, re-checking on every sync event and at least every
    /// 20 ms: a change the client makes to the store itself (a discard, say) need not be followed
    /// by any sync event.
    pub async fn until_store(&self, what: &str, check: impl Fn(&DocStore) -> bool) {
        let mut events = self.client().events();
        let r = tokio::time::timeout(WAIT, async {
            loop {
                if check(&self.store) {
                    return;
                }
                tokio::select! {
                    _ = events.recv() => {}
                    _ = tokio::time::sleep(Duration::from_millis(20)) => {}
                }
            }
        })
        .await;
        assert!(r.is_ok() && check(&self.store), "{}: timed out waiting until {what}", self.name);
    }

    pub fn created(&self, doc: DocumentId) {
        self.client().announce(doc);
    }
}
