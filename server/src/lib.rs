//! liaison's relay: an axum + tokio + rustls server over the core's sync engine and sled store.
//!
//! - [`config`]: TOML and environment configuration.
//! - [`auth`]: tenants, teams, users, device tokens (hashed).
//! - [`policy`]: who may read or write which document; what changes are refused.
//! - [`support`]: support grants (a tenant lets a system admin read, audited).
//! - [`audit`]: the audit log of every admin action and enrolment, per tenant.
//! - [`oidc`]: enterprise sign-in: identity providers' tokens enrol devices.
//! - [`relay`]: the actor that owns the sync engine.
//! - [`http`]: health, metrics, the WebSocket endpoint, the catalog and the admin API.
//! - [`connections`]: connection limits (open HTTP connections, time to start a request,
//!   WebSockets per token).
//! - [`tls`]: development certificate and PEM loading.
//! - [`ready`]: the ready file a started relay writes (`serve --ready-file`); [`process`]
//!   (feature `process`) starts a relay process and waits for it.
//! - [`keys`]: every key the relay writes into the database it shares with core.

pub mod audit;
pub mod auth;
pub mod backup;
pub mod config;
pub mod connections;
pub mod contract;
pub mod erasure;
pub mod error;
pub mod http;
pub mod keys;
pub mod ledger;
pub mod metrics;
pub mod oidc;
pub mod outbox;
pub mod policy;
#[cfg(feature = "process")]
pub mod process;
pub mod ready;
pub mod relay;
pub mod storage;
pub mod storage_ids;
pub mod support;
pub mod tls;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use liaison_core::storage::{KvStore, SledKv, StorageError};
use liaison_core::store::{StoreOptions, SystemClock};
use liaison_core::{DocStore, Identity, Role};

use crate::auth::AuthStore;
use crate::config::{Backend, Config, TlsMode};
use crate::metrics::Metrics;

/// The relay's own identity, for changes it makes itself (admin unlocks). Its install bytes are
/// random, made on the database's first start and again by a restore (see [`backup`]).
///
/// In a cluster every node shares the store's install bytes, so each process names itself
/// apart (`PEER_ID#RANDOM`): two nodes editing (an admin unlock) must never write under one
/// automerge actor, nor a restarted node under its old one.
fn relay_identity(config: &Config, install: [u8; 8]) -> Identity {
    let device = if config.storage.cluster {
        let node: [u8; 4] = auth::random_bytes::<4>();
        format!("{}#{}", config.peer_id, node.iter().map(|b| format!("{b:02x}")).collect::<String>())
    } else {
        config.peer_id.clone()
    };
    Identity { tenant: auth::SYSTEM_TENANT.into(), user: "relay".into(), device, role: Role::Admin, install }
}

/// The relay's install bytes, made and stored on first use.
fn relay_install(kv: &dyn KvStore) -> Result<[u8; 8]> {
    if let Some(v) = kv.get(backup::INSTALL_KEY)?
        && let Ok(install) = <[u8; 8]>::try_from(v.as_slice())
    {
        return Ok(install);
    }
    let install = auth::random_bytes::<8>();
    kv.put(backup::INSTALL_KEY, &install)?;
    kv.flush()?;
    Ok(install)
}

/// The relay's data, opened.
#[derive(Debug, Clone)]
pub struct Data {
    pub store: Arc<DocStore>,
    pub auth: AuthStore,
    /// The store every write goes through (a live backup journals them).
    pub kv: Arc<backup::tap::TappedKv>,
    pub ledger: Arc<ledger::Ledger>,
    /// Where `kv` keeps its data: backups of a PostgreSQL store are PostgreSQL's own.
    pub backend: Backend,
    /// In a cluster: the channel to the other nodes (set by `start`).
    pub hints: Option<Arc<dyn storage::hints::Hints>>,
}

/// Opens the relay's data: documents and identities share one database (sled in the data
/// directory, or PostgreSQL); revocations, erasures and purges go into the security ledger
/// first, a file in the data directory in both cases.
pub fn open_data(config: &Config) -> Result<Data> {
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("cannot create the data directory {}", config.data_dir.display()))?;
    // Records of every tenant live here: only the relay's user may enter the directory.
    {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(&config.data_dir, std::fs::Permissions::from_mode(0o700)).with_context(|| {
            format!("cannot restrict the data directory {} to the relay's user", config.data_dir.display())
        })?;
    }
    let base: Arc<dyn KvStore> = match config.storage.backend {
        Backend::Sled => match SledKv::open_with_cache(&config.data_dir.join("db"), config.store_cache_mb << 20) {
            Ok(kv) => Arc::new(kv),
            Err(StorageError::InUse) => anyhow::bail!(
                "the data directory {} is in use: is a relay already running on it? \
                 (while it runs, use the admin API instead of the admin CLI)",
                config.data_dir.display()
            ),
            Err(e) => return Err(e).context("cannot open the data directory"),
        },
        Backend::Postgres if config.storage.cluster => {
            Arc::new(storage::open_postgres_cluster(&config.storage).context("cannot open the PostgreSQL store")?)
        }
        Backend::Postgres => {
            Arc::new(storage::open_postgres(&config.storage).context("cannot open the PostgreSQL store")?)
        }
    };
    // Sync writes append received changes without loading documents (`append_sync_batch`), so
    // the store's cache serves only the relay's own edits (admin unlocks): the default size.
    // In a cluster every write is conditional on what it was built on (other nodes write too).
    // A relay lists nothing: no screen indexes, so opening it never rebuilds them (no loads).
    let options = StoreOptions { shared: config.storage.cluster, screen_indexes: false, ..StoreOptions::default() };
    let install = relay_install(base.as_ref()).context("cannot read the relay's install bytes")?;
    let kv = Arc::new(backup::tap::TappedKv::new(base));
    let store = DocStore::with_kv(kv.clone(), relay_identity(config, install), Arc::new(SystemClock), options)
        .context("cannot open the document store")?;
    // Documents stored by a relay older than the catalog enter the change feed once, so the
    // catalog lists them.
    store.backfill_feed().context("cannot enter stored documents into the change feed")?;
    let ledger = Arc::new(ledger::Ledger::open(&config.ledger_path())?);
    if config.storage.backend == Backend::Sled {
        // Files too: sled makes its own with the process's umask.
        backup::restrict(&config.data_dir.join("db"))
            .with_context(|| format!("cannot restrict {} to the relay's user", config.data_dir.display()))?;
    }
    let lifetimes = auth::TokenLifetimes::from_limits(&config.limits);
    let auth = AuthStore::with_ledger(kv.clone(), ledger.clone()).with_lifetimes(lifetimes);
    Ok(Data { store: Arc::new(store), auth, kv, ledger, backend: config.storage.backend, hints: None })
}

/// Milliseconds since the epoch, from core's clock.
pub fn now_ms() -> i64 {
    use liaison_core::store::Clock as _;
    SystemClock.now_ms()
}

/// Where the bootstrap credential is written, in the data directory.
pub fn bootstrap_file(data_dir: &Path) -> std::path::PathBuf {
    data_dir.join("bootstrap-admin-token")
}

/// Writes an admin credential to a file only the relay's user can read, if no system admin
/// holds a working token (see [`AuthStore::bootstrap_admin`]: one admin request, one day).
fn bootstrap(auth: &AuthStore, data_dir: &Path) -> Result<Option<std::path::PathBuf>> {
    let now = now_ms();
    if !auth.needs_bootstrap(now)? {
        return Ok(None);
    }
    let (_, secret) = auth.bootstrap_admin("bootstrap", now)?;
    let path = bootstrap_file(data_dir);
    tls::write_private(&path, format!("{secret}\n").as_bytes())?;
    Ok(Some(path))
}

/// A relay that is serving.
#[derive(Debug)]
pub struct Running {
    /// `wss://ADDR/v1/sync` (or `ws://` for plain).
    pub url: String,
    pub addr: std::net::SocketAddr,
    /// Where `/metrics` and the admin API are served, when not on `addr` (`admin_listen`).
    pub admin_addr: Option<std::net::SocketAddr>,
    /// The TLS certificate file and its SHA-256 fingerprint, when serving TLS.
    pub certificate: Option<(std::path::PathBuf, String)>,
    /// Where the first admin credential was written, on a first start.
    pub bootstrap_credential: Option<std::path::PathBuf>,
    pub store: Arc<DocStore>,
    pub auth: AuthStore,
    relay: relay::RelayHandle,
    /// The main listener, then the admin listener if any.
    listeners: Vec<Listener>,
}

/// One bound listener's server task.
#[derive(Debug)]
struct Listener {
    handle: axum_server::Handle<std::net::SocketAddr>,
    server: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl Running {
    /// Graceful shutdown: close connections with "going away", finish storage work, flush.
    pub async fn shutdown(self) -> Result<()> {
        tracing::info!("shutting down: closing connections and flushing");
        self.relay.shutdown().await;
        for listener in &self.listeners {
            listener.handle.graceful_shutdown(Some(Duration::from_secs(10)));
        }
        for listener in self.listeners {
            let _ = listener.server.await;
        }
        self.store.flush()?;
        tracing::info!("stopped");
        Ok(())
    }
}

/// Most connections the admin listener holds open at once (operators and a metrics scraper).
const ADMIN_HTTP_CONNECTIONS: usize = 1024;

/// Starts serving and returns once the listeners are bound.
pub async fn start(config: Config) -> Result<Running> {
    config.validate()?;
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut data = open_data(&config)?;
    if config.storage.cluster {
        let hints = storage::hints::PgHints::connect(&config.storage)
            .await
            .context("cannot listen for the other relays of the cluster")?;
        tracing::info!(node = %hints.node(), "cluster mode: hints to and from the other relays on this database");
        data.hints = Some(Arc::new(hints));
    }
    let (store, auth) = (data.store.clone(), data.auth.clone());
    let bootstrap_credential = bootstrap(&auth, &config.data_dir)?;
    let admin = http::AdminOptions {
        bootstrap_file: Some(bootstrap_file(&config.data_dir)),
        metrics_token: config.metrics_token.clone(),
    };
    let state = http::AppState::start(data, &config, admin);
    let (relay, metrics) = (state.relay.clone(), state.metrics.clone());
    // With an admin listener, the main one serves devices only.
    let (main_app, admin_app) = match config.admin_listen {
        Some(admin_addr) => (http::device_app(state.clone()), Some((admin_addr, http::admin_app(state)))),
        None => (http::app(state), None),
    };

    let (scheme, tls) = match &config.tls {
        TlsMode::Plain => ("ws", None),
        TlsMode::Dev => {
            let (cert, key) = tls::dev_certificate(&config.data_dir)?;
            ("wss", Some((cert, key)))
        }
        TlsMode::Files { cert, key } => ("wss", Some((cert.clone(), key.clone()))),
    };
    let rustls_config = match &tls {
        Some((cert, key)) => {
            let rustls_config = axum_server::tls_rustls::RustlsConfig::from_pem_file(cert, key)
                .await
                .context("cannot load the TLS certificate and key")?;
            // Both listeners share it: a reload renews both.
            spawn_reload_on_sighup(rustls_config.clone(), cert.clone(), key.clone());
            Some(rustls_config)
        }
        None => None,
    };
    // One budget for a new connection to finish TLS and start its request, and for each
    // request head (see `connections`).
    let header_read_timeout = Duration::from_secs(config.limits.header_read_timeout_secs);
    let serving = |addr, app, max_connections| {
        let (handle, server) =
            serve(addr, app, rustls_config.clone(), max_connections, header_read_timeout, metrics.clone());
        async move {
            match handle.listening().await {
                Some(bound) => Ok((bound, Listener { handle, server })),
                None => {
                    let err = server.await.context("the server task failed")?;
                    Err(anyhow::anyhow!("cannot listen on {addr}: {:?}", err.err()))
                }
            }
        }
    };
    let (addr, main) = serving(config.listen, main_app, config.limits.max_http_connections).await?;
    let mut listeners = vec![main];
    let admin_addr = match admin_app {
        Some((admin_addr, app)) => match serving(admin_addr, app, ADMIN_HTTP_CONNECTIONS).await {
            Ok((bound, admin)) => {
                listeners.push(admin);
                Some(bound)
            }
            Err(e) => {
                for listener in &listeners {
                    listener.handle.shutdown();
                }
                relay.shutdown().await;
                return Err(e);
            }
        },
        None => None,
    };
    let certificate = match &tls {
        Some((cert, _)) => Some((cert.clone(), tls::fingerprint(cert)?)),
        None => None,
    };
    tracing::info!(%addr, ?admin_addr, scheme, "relay started");
    Ok(Running {
        url: format!("{scheme}://{addr}/v1/sync"),
        addr,
        admin_addr,
        certificate,
        bootstrap_credential,
        store,
        auth,
        relay,
        listeners,
    })
}

/// Serves `app` on `addr` (TLS with `tls`, else plain), at most `max_connections` at once.
fn serve(
    addr: std::net::SocketAddr,
    app: axum::Router,
    tls: Option<axum_server::tls_rustls::RustlsConfig>,
    max_connections: usize,
    header_read_timeout: Duration,
    metrics: Arc<Metrics>,
) -> (axum_server::Handle<std::net::SocketAddr>, tokio::task::JoinHandle<std::io::Result<()>>) {
    let handle = axum_server::Handle::new();
    // The peer's address reaches handlers (`ConnectInfo`), for the audit log.
    let app = app.into_make_service_with_connect_info::<std::net::SocketAddr>();
    // TCP_NODELAY: sync messages are small and answered at once; with Nagle's algorithm a reply
    // waits for the peer's delayed ACK (p50 257 ms at light load).
    let nodelay = axum_server::accept::NoDelayAcceptor::new();
    let server = match tls {
        Some(rustls_config) => {
            let tls = axum_server::tls_rustls::RustlsAcceptor::new(rustls_config)
                .handshake_timeout(header_read_timeout)
                .acceptor(nodelay);
            let acceptor = connections::LimitedAcceptor::new(tls, max_connections, header_read_timeout, metrics);
            let mut server = axum_server::bind(addr).acceptor(acceptor).handle(handle.clone());
            time_request_heads(server.http_builder(), header_read_timeout);
            tokio::spawn(async move { server.serve(app).await })
        }
        None => {
            let acceptor = connections::LimitedAcceptor::new(nodelay, max_connections, header_read_timeout, metrics);
            let mut server = axum_server::bind(addr).acceptor(acceptor).handle(handle.clone());
            time_request_heads(server.http_builder(), header_read_timeout);
            tokio::spawn(async move { server.serve(app).await })
        }
    };
    (handle, server)
}

/// Serves until SIGTERM or Ctrl-C, then shuts down gracefully. Prints where to connect, and
/// writes it to `ready_file` as JSON if given (see [`ready`]).
pub async fn run(config: Config, ready_file: Option<&Path>) -> Result<()> {
    let running = start(config.clone()).await?;
    println!("liaison relay listening on {}", running.url);
    if let Some(admin) = running.admin_addr {
        let scheme = if running.certificate.is_some() { "https" } else { "http" };
        println!("admin API and metrics on {scheme}://{admin}");
    }
    if let Some((cert, fp)) = &running.certificate {
        println!("TLS certificate: {} (SHA-256 fingerprint {fp})", cert.display());
        if let Ok(pin) = tls::spki_pin(cert) {
            println!("public-key pin for devices (SHA-256 of its SubjectPublicKeyInfo): {pin}");
        }
    }
    println!("data directory: {}", config.data_dir.display());
    match &running.bootstrap_credential {
        Some(path) => println!(
            "first admin credential: written to {} (readable by this user only); it works for \
             one admin API request within 24 hours: issue yourself an admin token with it \
             (POST /admin/v1/tenants/system/users/admin/tokens), then the file is deleted",
            path.display()
        ),
        None => println!("administrators exist; issue credentials with the admin API or `liaison-relay admin`"),
    }
    if let Some(path) = ready_file {
        ready::Ready::of(&running, &config.data_dir)
            .write(path)
            .with_context(|| format!("cannot write the ready file {}", path.display()))?;
    }
    shutdown_signal().await;
    running.shutdown().await
}

/// HTTP/1: a client must send each request head within `timeout` (the connection is closed
/// otherwise). hyper needs a timer for it, or the timeout is silently not applied.
fn time_request_heads(
    builder: &mut hyper_util::server::conn::auto::Builder<hyper_util::rt::TokioExecutor>,
    timeout: Duration,
) {
    builder.http1().timer(hyper_util::rt::TokioTimer::new()).header_read_timeout(timeout);
}

fn spawn_reload_on_sighup(
    config: axum_server::tls_rustls::RustlsConfig,
    cert: std::path::PathBuf,
    key: std::path::PathBuf,
) {
    tokio::spawn(async move {
        let Ok(mut hup) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) else { return };
        while hup.recv().await.is_some() {
            match config.reload_from_pem_file(&cert, &key).await {
                Ok(()) => tracing::info!("TLS certificate reloaded"),
                Err(e) => tracing::error!(error = %e, "TLS reload failed; keeping the previous certificate"),
            }
        }
    });
}

async fn shutdown_signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term => {}
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn the_data_directory_is_closed_to_other_users() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let data_dir = dir.path().join("data");
        std::fs::create_dir(&data_dir).unwrap();
        std::fs::set_permissions(&data_dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        let config = Config { data_dir: data_dir.clone(), ..Config::default() };
        let _opened = open_data(&config).unwrap();
        assert_eq!(std::fs::metadata(&data_dir).unwrap().permissions().mode() & 0o777, 0o700);
        for entry in std::fs::read_dir(data_dir.join("db")).unwrap() {
            let entry = entry.unwrap();
            let mode = entry.metadata().unwrap().permissions().mode() & 0o777;
            let want = if entry.file_type().unwrap().is_dir() { 0o700 } else { 0o600 };
            assert_eq!(mode, want, "{}", entry.path().display());
        }
        let ledger = std::fs::metadata(config.ledger_path()).unwrap();
        assert_eq!(ledger.permissions().mode() & 0o777, 0o600);
    }

    #[test]
    fn the_relay_writes_under_its_own_random_install_kept_across_restarts() {
        use liaison_core::storage::KvStore as _;
        let dir = tempfile::tempdir().unwrap();
        let config = Config { data_dir: dir.path().to_owned(), ..Config::default() };
        let first = open_data(&config).unwrap().kv.get(backup::INSTALL_KEY).unwrap().unwrap();
        assert_eq!(first.len(), 8);
        assert_ne!(first, [0; 8]);
        let again = open_data(&config).unwrap().kv.get(backup::INSTALL_KEY).unwrap().unwrap();
        assert_eq!(first, again);
    }
}
