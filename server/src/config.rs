//! Relay configuration: a TOML file, then environment variables (`LIAISON_*`) over it, then
//! command-line flags over both. `liaison-relay check-config` validates without serving.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read the config file: {0}")]
    Read(#[source] std::io::Error),
    #[error("the config file is not valid TOML for the relay: {0}")]
    Parse(String),
    #[error("{name} is not valid: {reason}")]
    Env { name: &'static str, reason: String },
    #[error("{0}")]
    Invalid(String),
}

/// How the relay serves TLS.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case", tag = "mode")]
pub enum TlsMode {
    /// A self-signed certificate made on first start and kept in the data directory.
    #[default]
    Dev,
    /// PEM certificate chain and private key from files; reloaded on SIGHUP.
    Files { cert: PathBuf, key: PathBuf },
    /// No TLS. Allowed only on a loopback address, for local development and tests.
    Plain,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Largest WebSocket frame accepted, in bytes.
    pub max_frame_bytes: usize,
    /// Documents one connection may sync at once.
    pub max_documents_per_connection: usize,
    /// Sustained messages per second per connection, and the burst allowed above it.
    pub messages_per_second: u32,
    pub message_burst: u32,
    /// Seconds a connection has to complete the join/peer handshake.
    pub handshake_timeout_secs: u64,
    /// Seconds without any frame after which a connection is closed.
    pub idle_timeout_secs: u64,
    /// Most connections served at once.
    pub max_connections: usize,
    /// Bytes queued for one connection and not yet written; past it the connection is cut as
    /// too slow (a client that stops reading must not pin memory).
    pub max_outbox_bytes: usize,
    /// Seconds a write to a client may take before the connection is cut.
    pub write_timeout_secs: u64,
    /// Bytes of received frames waiting for the relay's engine, over all connections; past it
    /// connections stop being read until the engine catches up.
    pub max_inbound_queue_bytes: usize,
    /// Seconds a client has to send a request's headers. A new connection also has this long,
    /// from being accepted, to finish the TLS handshake and begin its first request.
    pub header_read_timeout_secs: u64,
    /// Most HTTP connections open at once (accepted TCP connections, counted before TLS;
    /// WebSockets included). Beyond it new connections are closed at once.
    pub max_http_connections: usize,
    /// Most WebSockets open at once with one token; beyond it the upgrade is refused (429).
    pub max_connections_per_token: usize,
    /// Documents loaded from storage at once; further loads wait their turn (a device asking
    /// for thousands of documents cannot make the relay read them all at the same time).
    pub max_loading_documents: usize,
    /// Lifetime of a token issued without one, in seconds.
    pub default_token_ttl_secs: u64,
    /// Longest lifetime a token may be issued with, in seconds; a longer one is refused.
    pub max_token_ttl_secs: u64,
}

const DAY_SECS: u64 = 24 * 3600;
/// Above any lifetime that means something; keeps expiry times far from overflowing.
const MAX_TOKEN_TTL_SECS: u64 = 100 * 365 * DAY_SECS;

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_frame_bytes: 8 * 1024 * 1024,
            max_documents_per_connection: 50_000,
            messages_per_second: 500,
            message_burst: 5_000,
            handshake_timeout_secs: 10,
            idle_timeout_secs: 300,
            max_connections: 20_000,
            max_outbox_bytes: 32 * 1024 * 1024,
            write_timeout_secs: 30,
            max_inbound_queue_bytes: 256 * 1024 * 1024,
            header_read_timeout_secs: 10,
            // Above max_connections: WebSockets, plus admin and catalog requests and
            // connections still in their TLS handshake.
            max_http_connections: 25_000,
            max_connections_per_token: 16,
            max_loading_documents: 64,
            // A phone that is lost unnoticed stops syncing within a quarter; the MSL's app
            // gets a new token from IT before then.
            default_token_ttl_secs: 90 * DAY_SECS,
            max_token_ttl_secs: 365 * DAY_SECS,
        }
    }
}

/// Where the relay keeps its data (`[storage] backend`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    /// A sled database in the data directory (one relay).
    #[default]
    Sled,
    /// A PostgreSQL database (`storage.url`); its schema is made by `liaison-relay migrate`.
    Postgres,
}

/// TLS to PostgreSQL (`[storage] tls`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum DbTls {
    /// TLS, with the server's certificate and name verified against the system's roots or
    /// `ca_file` (libpq's `sslmode=verify-full`).
    #[default]
    VerifyFull,
    /// No TLS: only for a database on a loopback address or a Unix socket.
    Disable,
}

/// The `[storage]` table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StorageConfig {
    pub backend: Backend,
    /// PostgreSQL: `postgres://USER:PASSWORD@HOST:PORT/DATABASE` or `host=... dbname=...`
    /// (`LIAISON_STORAGE_URL` overrides it; shown as `<redacted>`). Its `sslmode` is ignored:
    /// `tls` decides.
    pub url: Option<Secret>,
    /// PostgreSQL connections this relay opens at most.
    pub pool_size: usize,
    pub tls: DbTls,
    /// PEM file of the CA(s) that sign the database's certificate (default: the system's roots).
    pub ca_file: Option<PathBuf>,
    /// PostgreSQL only: this relay is one node of a cluster sharing the database (a preview:
    /// see the operator guide's "Cluster" section). Off: the relay takes the database for
    /// itself and a second one is refused.
    pub cluster: bool,
}

impl Default for StorageConfig {
    fn default() -> Self {
        // The relay's writer, its actor and a few HTTP handlers query at once.
        Self { backend: Backend::Sled, url: None, pool_size: 16, tls: DbTls::VerifyFull, ca_file: None, cluster: false }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    pub tls: TlsMode,
    pub limits: Limits,
    /// Documents kept loaded in memory at most; idle ones are evicted and reloaded on demand.
    pub resident_documents: usize,
    /// sled's page cache in MiB (the store's memory beyond resident documents).
    pub store_cache_mb: u64,
    /// sled in the data directory (default) or PostgreSQL.
    pub storage: StorageConfig,
    pub log_format: LogFormat,
    /// The relay's peer id on the wire.
    pub peer_id: String,
    /// Where backups made through the admin API go, each in a directory the relay names
    /// (default `DATA/backups`; put it on another volume).
    pub backup_root: Option<PathBuf>,
    /// Where tenant exports go, each in a directory the relay names (default `DATA/exports`).
    pub export_root: Option<PathBuf>,
    /// The security ledger: every revocation, erasure and purge, which a restore re-applies
    /// (default `DATA/security-ledger.jsonl`; keep it, or a copy, apart from the data).
    pub ledger_path: Option<PathBuf>,
    /// A second listener for `/metrics` and the admin API, with the same TLS as `listen`. When
    /// set, the main listener (devices) answers 404 for them.
    pub admin_listen: Option<SocketAddr>,
    /// When set, `/metrics` answers only requests with `Authorization: Bearer <metrics_token>`.
    pub metrics_token: Option<Secret>,
    /// Enterprise sign-in: per tenant, the identity provider whose access tokens enrol devices
    /// (`[[oidc]]` tables; see `oidc::config`).
    pub oidc: Vec<crate::oidc::config::OidcTenant>,
}

/// A secret from the configuration: `check-config` and `Debug` show it as `<redacted>`.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(secret: impl Into<String>) -> Self {
        Self(secret.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

impl Serialize for Secret {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str("<redacted>")
    }
}

/// The shortest `metrics_token` accepted.
const MIN_METRICS_TOKEN_CHARS: usize = 16;

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8443)),
            data_dir: PathBuf::from("./liaison-data"),
            tls: TlsMode::Dev,
            limits: Limits::default(),
            resident_documents: 2_000,
            store_cache_mb: 64,
            storage: StorageConfig::default(),
            log_format: LogFormat::Text,
            peer_id: "liaison-relay".into(),
            backup_root: None,
            export_root: None,
            ledger_path: None,
            admin_listen: None,
            metrics_token: None,
            oidc: Vec::new(),
        }
    }
}

/// The environment, as a function so tests can supply their own.
pub type Env<'a> = &'a dyn Fn(&str) -> Option<String>;

impl Config {
    /// Reads `file` (if given), then applies `LIAISON_*` variables from `env`, then validates.
    pub fn load(file: Option<&Path>, env: Env<'_>) -> Result<Self, ConfigError> {
        let mut config = match file {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(ConfigError::Read)?;
                toml::from_str(&text).map_err(|e| ConfigError::Parse(e.message().to_owned()))?
            }
            None => Config::default(),
        };
        config.apply_env(env)?;
        Ok(config)
    }

    pub fn backup_root(&self) -> PathBuf {
        self.backup_root.clone().unwrap_or_else(|| self.data_dir.join("backups"))
    }

    pub fn export_root(&self) -> PathBuf {
        self.export_root.clone().unwrap_or_else(|| self.data_dir.join("exports"))
    }

    pub fn ledger_path(&self) -> PathBuf {
        self.ledger_path.clone().unwrap_or_else(|| self.data_dir.join("security-ledger.jsonl"))
    }

    fn apply_env(&mut self, env: Env<'_>) -> Result<(), ConfigError> {
        if let Some(v) = env("LIAISON_LISTEN") {
            self.listen = v
                .parse()
                .map_err(|_| ConfigError::Env { name: "LIAISON_LISTEN", reason: "expected ADDRESS:PORT".into() })?;
        }
        if let Some(v) = env("LIAISON_ADMIN_LISTEN") {
            self.admin_listen = Some(v.parse().map_err(|_| ConfigError::Env {
                name: "LIAISON_ADMIN_LISTEN",
                reason: "expected ADDRESS:PORT".into(),
            })?);
        }
        if let Some(v) = env("LIAISON_METRICS_TOKEN") {
            self.metrics_token = Some(Secret(v));
        }
        if let Some(v) = env("LIAISON_DATA_DIR") {
            self.data_dir = PathBuf::from(v);
        }
        match (env("LIAISON_TLS_CERT"), env("LIAISON_TLS_KEY")) {
            (Some(cert), Some(key)) => self.tls = TlsMode::Files { cert: cert.into(), key: key.into() },
            (None, None) => {}
            _ => {
                return Err(ConfigError::Env {
                    name: "LIAISON_TLS_CERT",
                    reason: "set both LIAISON_TLS_CERT and LIAISON_TLS_KEY".into(),
                });
            }
        }
        if let Some(v) = env("LIAISON_LOG_FORMAT") {
            self.log_format = match v.as_str() {
                "json" => LogFormat::Json,
                "text" => LogFormat::Text,
                _ => {
                    return Err(ConfigError::Env {
                        name: "LIAISON_LOG_FORMAT",
                        reason: "expected text or json".into(),
                    });
                }
            };
        }
        for (name, slot) in [
            ("LIAISON_BACKUP_ROOT", &mut self.backup_root),
            ("LIAISON_EXPORT_ROOT", &mut self.export_root),
            ("LIAISON_LEDGER_PATH", &mut self.ledger_path),
        ] {
            if let Some(v) = env(name) {
                *slot = Some(PathBuf::from(v));
            }
        }
        if let Some(v) = env("LIAISON_RESIDENT_DOCUMENTS") {
            self.resident_documents = v.parse().map_err(|_| ConfigError::Env {
                name: "LIAISON_RESIDENT_DOCUMENTS",
                reason: "expected a number".into(),
            })?;
        }
        if let Some(v) = env("LIAISON_STORAGE_BACKEND") {
            self.storage.backend = match v.as_str() {
                "sled" => Backend::Sled,
                "postgres" => Backend::Postgres,
                _ => {
                    return Err(ConfigError::Env {
                        name: "LIAISON_STORAGE_BACKEND",
                        reason: "expected sled or postgres".into(),
                    });
                }
            };
        }
        if let Some(v) = env("LIAISON_STORAGE_URL") {
            self.storage.url = Some(Secret(v));
        }
        if let Some(v) = env("LIAISON_STORAGE_POOL_SIZE") {
            self.storage.pool_size = v.parse().map_err(|_| ConfigError::Env {
                name: "LIAISON_STORAGE_POOL_SIZE",
                reason: "expected a number".into(),
            })?;
        }
        if let Some(v) = env("LIAISON_STORE_CACHE_MB") {
            self.store_cache_mb = v
                .parse()
                .map_err(|_| ConfigError::Env { name: "LIAISON_STORE_CACHE_MB", reason: "expected a number".into() })?;
        }
        for (name, limit) in [
            ("LIAISON_DEFAULT_TOKEN_TTL_SECS", &mut self.limits.default_token_ttl_secs),
            ("LIAISON_MAX_TOKEN_TTL_SECS", &mut self.limits.max_token_ttl_secs),
        ] {
            if let Some(v) = env(name) {
                *limit =
                    v.parse().map_err(|_| ConfigError::Env { name, reason: "expected a number of seconds".into() })?;
            }
        }
        Ok(())
    }

    /// Checks what cannot be checked by types alone.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.tls == TlsMode::Plain && !self.listen.ip().is_loopback() {
            return Err(ConfigError::Invalid(format!(
                "plain WebSocket (no TLS) is only allowed on a loopback address, not {}",
                self.listen.ip()
            )));
        }
        if let Some(admin) = self.admin_listen {
            if self.tls == TlsMode::Plain && !admin.ip().is_loopback() {
                return Err(ConfigError::Invalid(format!(
                    "plain HTTP (no TLS) is only allowed on a loopback address, not admin_listen {}",
                    admin.ip()
                )));
            }
            if admin == self.listen && admin.port() != 0 {
                return Err(ConfigError::Invalid("admin_listen must differ from listen".into()));
            }
        }
        if self.metrics_token.as_ref().is_some_and(|t| t.expose().chars().count() < MIN_METRICS_TOKEN_CHARS) {
            return Err(ConfigError::Invalid(format!(
                "metrics_token must be at least {MIN_METRICS_TOKEN_CHARS} characters"
            )));
        }
        if let TlsMode::Files { cert, key } = &self.tls {
            for (what, p) in [("certificate", cert), ("private key", key)] {
                if !p.is_file() {
                    return Err(ConfigError::Invalid(format!("TLS {what} file {} does not exist", p.display())));
                }
            }
        }
        let l = &self.limits;
        if l.max_frame_bytes < 1024
            || l.messages_per_second == 0
            || l.max_connections == 0
            || l.handshake_timeout_secs == 0
            || l.header_read_timeout_secs == 0
            || l.max_http_connections == 0
            || l.max_connections_per_token == 0
        {
            return Err(ConfigError::Invalid("limits must be positive (max_frame_bytes at least 1024)".into()));
        }
        if l.max_http_connections < l.max_connections {
            return Err(ConfigError::Invalid(format!(
                "limits.max_http_connections ({}) must be at least limits.max_connections ({}): every \
                 WebSocket is an HTTP connection",
                l.max_http_connections, l.max_connections
            )));
        }
        if l.default_token_ttl_secs == 0 || l.default_token_ttl_secs > l.max_token_ttl_secs {
            return Err(ConfigError::Invalid(format!(
                "limits.default_token_ttl_secs ({}) must be at least 1 and at most limits.max_token_ttl_secs ({})",
                l.default_token_ttl_secs, l.max_token_ttl_secs
            )));
        }
        if l.max_token_ttl_secs > MAX_TOKEN_TTL_SECS {
            return Err(ConfigError::Invalid(format!(
                "limits.max_token_ttl_secs must be at most {MAX_TOKEN_TTL_SECS} (100 years)"
            )));
        }
        if self.store_cache_mb < 4 {
            return Err(ConfigError::Invalid("store_cache_mb must be at least 4".into()));
        }
        if self.resident_documents == 0 {
            return Err(ConfigError::Invalid("resident_documents must be at least 1".into()));
        }
        if self.peer_id.is_empty() {
            return Err(ConfigError::Invalid("peer_id must not be empty".into()));
        }
        crate::oidc::config::validate_all(&self.oidc, l.max_token_ttl_secs).map_err(ConfigError::Invalid)?;
        if self.storage.backend == Backend::Postgres {
            if self.storage.pool_size == 0 {
                return Err(ConfigError::Invalid("storage.pool_size must be at least 1".into()));
            }
            if self.storage.cluster && self.storage.pool_size < 2 {
                // A node's commit holds the writers' lock on one pooled connection and writes
                // on another.
                return Err(ConfigError::Invalid("storage.pool_size must be at least 2 with cluster = true".into()));
            }
            crate::storage::check_config(&self.storage).map_err(|e| ConfigError::Invalid(e.to_string()))?;
        } else if self.storage.cluster {
            return Err(ConfigError::Invalid("storage.cluster needs backend = \"postgres\"".into()));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_env(_: &str) -> Option<String> {
        None
    }

    #[test]
    fn defaults_are_loopback_dev_tls_and_valid() {
        let c = Config::load(None, &no_env).unwrap();
        assert!(c.listen.ip().is_loopback());
        assert_eq!(c.tls, TlsMode::Dev);
        c.validate().unwrap();
    }

    #[test]
    fn toml_then_env_overrides() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("relay.toml");
        std::fs::write(
            &path,
            "listen = \"127.0.0.1:9000\"\nresident_documents = 10\n[limits]\nmessages_per_second = 7\n",
        )
        .unwrap();
        let env = |k: &str| (k == "LIAISON_LISTEN").then(|| "127.0.0.1:9100".to_owned());
        let c = Config::load(Some(&path), &env).unwrap();
        assert_eq!(c.listen.port(), 9100, "the environment wins over the file");
        assert_eq!(c.resident_documents, 10);
        assert_eq!(c.limits.messages_per_second, 7);
        assert_eq!(c.limits.message_burst, Limits::default().message_burst);
    }

    #[test]
    fn plain_websocket_only_on_loopback() {
        let mut c = Config { tls: TlsMode::Plain, ..Config::default() };
        c.validate().unwrap();
        c.listen = "0.0.0.0:8080".parse().unwrap();
        let e = c.validate().unwrap_err();
        assert!(e.to_string().contains("only allowed on a loopback"), "{e}");
    }

    #[test]
    fn an_admin_listener_follows_the_main_ones_tls_rule_and_the_metrics_token_stays_secret() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("relay.toml");
        std::fs::write(&path, "admin_listen = \"127.0.0.1:9444\"\nmetrics_token = \"scrape-0123456789abcdef\"\n")
            .unwrap();
        let c = Config::load(Some(&path), &no_env).unwrap();
        assert_eq!(c.admin_listen, Some("127.0.0.1:9444".parse().unwrap()));
        assert_eq!(c.metrics_token.as_ref().map(Secret::expose), Some("scrape-0123456789abcdef"));
        c.validate().unwrap();
        let shown = format!("{c:?}\n{}", toml::to_string_pretty(&c).unwrap());
        assert!(!shown.contains("scrape-0123456789abcdef") && shown.contains("<redacted>"), "{shown}");
        assert!(Config::load(None, &no_env).unwrap().metrics_token.is_none());
        toml::to_string_pretty(&Config::default()).unwrap();

        let env = |k: &str| match k {
            "LIAISON_ADMIN_LISTEN" => Some("10.0.0.5:9444".to_owned()),
            "LIAISON_METRICS_TOKEN" => Some("short".to_owned()),
            _ => None,
        };
        let mut c = Config::load(None, &env).unwrap();
        assert!(c.validate().unwrap_err().to_string().contains("at least 16 characters"));
        c.metrics_token = None;
        c.validate().unwrap();
        c.tls = TlsMode::Plain;
        let e = c.validate().unwrap_err();
        assert!(e.to_string().contains("only allowed on a loopback address, not admin_listen 10.0.0.5"), "{e}");
        c.admin_listen = Some(c.listen);
        assert_eq!(c.validate().unwrap_err().to_string(), "admin_listen must differ from listen");
        let bad = |k: &str| (k == "LIAISON_ADMIN_LISTEN").then(|| "nowhere".to_owned());
        assert!(Config::load(None, &bad).is_err());
    }

    #[test]
    fn clear_errors_for_bad_files_and_variables() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("relay.toml");
        std::fs::write(&path, "listen = 5\nbogus = true\n").unwrap();
        assert!(matches!(Config::load(Some(&path), &no_env), Err(ConfigError::Parse(_))));
        let env = |k: &str| (k == "LIAISON_LISTEN").then(|| "nowhere".to_owned());
        let e = Config::load(None, &env).unwrap_err();
        assert_eq!(e.to_string(), "LIAISON_LISTEN is not valid: expected ADDRESS:PORT");
        let half = |k: &str| (k == "LIAISON_TLS_CERT").then(|| "/x.pem".to_owned());
        assert!(Config::load(None, &half).is_err());
        let files =
            Config { tls: TlsMode::Files { cert: "/nope.pem".into(), key: "/nope.key".into() }, ..Config::default() };
        assert!(files.validate().unwrap_err().to_string().contains("does not exist"));
    }

    #[test]
    fn connection_limits_are_positive_and_http_connections_cover_websockets() {
        let with = |limits: Limits| Config { limits, ..Config::default() }.validate();
        with(Limits::default()).unwrap();
        assert!(with(Limits { header_read_timeout_secs: 0, ..Limits::default() }).is_err());
        assert!(with(Limits { max_connections_per_token: 0, ..Limits::default() }).is_err());
        let e = with(Limits { max_connections: 30_000, ..Limits::default() }).unwrap_err();
        assert!(e.to_string().contains("max_http_connections (25000) must be at least"), "{e}");
        with(Limits { max_connections: 30_000, max_http_connections: 40_000, ..Limits::default() }).unwrap();
    }

    #[test]
    fn oidc_tenants_come_from_toml_tables_and_are_checked_with_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("relay.toml");
        let tenant = |name: &str, issuer: &str| {
            format!(
                "[[oidc]]\ntenant = \"{name}\"\nissuer = \"{issuer}\"\naudiences = [\"api://liaison\"]\n\
                 jwks_url = \"https://idp.example/keys\"\nalgorithms = [\"RS256\", \"ES256\"]\n\
                 roles_claim = \"realm_access.roles\"\n[oidc.roles]\nliaison-msl = \"msl\"\n\
                 [oidc.teams]\noncology-east = \"onc-east\"\n"
            )
        };
        std::fs::write(
            &path,
            tenant("pharma-a", "https://idp.example/a") + &tenant("pharma-b", "https://idp.example/b"),
        )
        .unwrap();
        let c = Config::load(Some(&path), &no_env).unwrap();
        c.validate().unwrap();
        assert_eq!(c.oidc.len(), 2);
        assert_eq!(c.oidc[1].roles["liaison-msl"], crate::auth::RoleName::Msl);
        assert_eq!(c.oidc[0].teams["oncology-east"], "onc-east");
        let shown = toml::to_string_pretty(&c).unwrap();
        assert!(shown.contains("https://idp.example/b"), "{shown}");

        std::fs::write(
            &path,
            tenant("pharma-a", "https://idp.example/a") + &tenant("pharma-b", "https://idp.example/a"),
        )
        .unwrap();
        let e = Config::load(Some(&path), &no_env).unwrap().validate().unwrap_err();
        assert_eq!(e.to_string(), "oidc: issuer https://idp.example/a is configured for two tenants");
        std::fs::write(&path, tenant("pharma-a", "https://idp.example/a").replace("ES256", "HS256")).unwrap();
        assert!(matches!(Config::load(Some(&path), &no_env), Err(ConfigError::Parse(_))), "HS256 is not an option");
    }

    #[test]
    fn postgres_storage_from_a_table_or_the_environment_and_its_password_never_shown() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("relay.toml");
        std::fs::write(
            &path,
            "[storage]\nbackend = \"postgres\"\nurl = \"postgres://relay:hunter2-pw@db.internal/liaison\"\npool_size = 4\n",
        )
        .unwrap();
        let c = Config::load(Some(&path), &no_env).unwrap();
        assert_eq!((c.storage.backend, c.storage.pool_size, c.storage.tls), (Backend::Postgres, 4, DbTls::VerifyFull));
        c.validate().unwrap();
        let shown = format!("{c:?}\n{}", toml::to_string_pretty(&c).unwrap());
        assert!(!shown.contains("hunter2-pw"), "{shown}");

        let env = |k: &str| match k {
            "LIAISON_STORAGE_URL" => Some("postgres://relay:other-pw@db.internal/liaison".to_owned()),
            "LIAISON_STORAGE_POOL_SIZE" => Some("0".to_owned()),
            _ => None,
        };
        let c = Config::load(Some(&path), &env).unwrap();
        assert_eq!(c.storage.url.as_ref().map(Secret::expose), Some("postgres://relay:other-pw@db.internal/liaison"));
        assert_eq!(c.validate().unwrap_err().to_string(), "storage.pool_size must be at least 1");
        let mut one = c.clone();
        one.storage.pool_size = 1;
        one.storage.cluster = true;
        assert_eq!(one.validate().unwrap_err().to_string(), "storage.pool_size must be at least 2 with cluster = true");

        let plain = Config {
            storage: StorageConfig {
                backend: Backend::Postgres,
                tls: DbTls::Disable,
                pool_size: 4,
                ..c.storage.clone()
            },
            ..Config::default()
        };
        let e = plain.validate().unwrap_err().to_string();
        assert!(e.contains("only allowed for a database on a loopback") && !e.contains("other-pw"), "{e}");
        let missing = Config {
            storage: StorageConfig { backend: Backend::Postgres, ..StorageConfig::default() },
            ..Config::default()
        };
        assert!(missing.validate().unwrap_err().to_string().contains("LIAISON_STORAGE_URL"));
        let bad = |k: &str| (k == "LIAISON_STORAGE_BACKEND").then(|| "mysql".to_owned());
        assert!(Config::load(None, &bad).is_err());
        assert_eq!(Config::default().storage.backend, Backend::Sled, "sled stays the default");
    }

    #[test]
    fn tokens_live_90_days_by_default_and_at_most_a_year() {
        let c = Config::load(None, &no_env).unwrap();
        assert_eq!((c.limits.default_token_ttl_secs, c.limits.max_token_ttl_secs), (90 * 86_400, 365 * 86_400));
        let env = |k: &str| match k {
            "LIAISON_DEFAULT_TOKEN_TTL_SECS" => Some("3600".to_owned()),
            "LIAISON_MAX_TOKEN_TTL_SECS" => Some("86400".to_owned()),
            _ => None,
        };
        let c = Config::load(None, &env).unwrap();
        assert_eq!((c.limits.default_token_ttl_secs, c.limits.max_token_ttl_secs), (3600, 86_400));
        c.validate().unwrap();
        let bad = |k: &str| (k == "LIAISON_MAX_TOKEN_TTL_SECS").then(|| "a year".to_owned());
        let e = Config::load(None, &bad).unwrap_err();
        assert_eq!(e.to_string(), "LIAISON_MAX_TOKEN_TTL_SECS is not valid: expected a number of seconds");
        let with = |limits: Limits| Config { limits, ..Config::default() }.validate();
        let e = with(Limits { default_token_ttl_secs: 400 * 86_400, ..Limits::default() }).unwrap_err();
        assert!(e.to_string().contains("at most limits.max_token_ttl_secs"), "{e}");
        assert!(with(Limits { default_token_ttl_secs: 0, ..Limits::default() }).is_err());
        assert!(with(Limits { max_token_ttl_secs: u64::MAX, ..Limits::default() }).is_err());
    }
}
