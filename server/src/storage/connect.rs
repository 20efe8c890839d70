//! From `[storage]` to a pool of PostgreSQL connections: the URL, TLS to the database, the
//! pool's size and timeouts.
//!
//! TLS is rustls (ring, as for the relay's own listeners) with the system's roots or a CA file,
//! and it always verifies the server's certificate and name (`tls = "verify-full"`, the
//! default). `tls = "disable"` is accepted only for a database on a loopback address or a Unix
//! socket, as plain WebSocket is for the relay. The URL's own `sslmode` is overridden by `tls`.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use tokio_postgres::config::{Host, SslMode};

use super::DbError;
use crate::config::{DbTls, StorageConfig};

/// How long a new connection may take (TCP, TLS, authentication).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a caller waits for a pooled connection before the store reports an error.
const WAIT_TIMEOUT: Duration = Duration::from_secs(30);

/// The parsed URL with the settings the relay imposes, checked against `tls`.
pub(crate) fn pg_config(storage: &StorageConfig) -> Result<tokio_postgres::Config, DbError> {
    let url = storage.url.as_ref().ok_or(DbError::MissingUrl)?;
    // tokio-postgres's parse error can quote the text it could not read: not shown.
    let mut config: tokio_postgres::Config = url.expose().parse().map_err(|_| DbError::InvalidUrl)?;
    if config.get_hosts().is_empty() {
        return Err(DbError::Invalid("storage.url names no host".into()));
    }
    if config.get_dbname().is_none() {
        return Err(DbError::Invalid("storage.url names no database".into()));
    }
    match storage.tls {
        DbTls::VerifyFull => {
            config.ssl_mode(SslMode::Require);
        }
        DbTls::Disable => {
            if let Some(host) = config.get_hosts().iter().find(|h| !is_local(h)) {
                let shown = match host {
                    Host::Tcp(name) => name.clone(),
                    Host::Unix(path) => path.display().to_string(),
                };
                return Err(DbError::Invalid(format!(
                    "storage.tls = \"disable\" is only allowed for a database on a loopback address or a Unix \
                     socket, not {shown}"
                )));
            }
            config.ssl_mode(SslMode::Disable);
        }
    }
    config.connect_timeout(CONNECT_TIMEOUT).application_name("liaison-relay");
    Ok(config)
}

fn is_local(host: &Host) -> bool {
    match host {
        Host::Unix(_) => true,
        Host::Tcp(name) => name == "localhost" || name.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback()),
    }
}

/// The pool of at most `storage.pool_size` connections.
pub(crate) fn pool(storage: &StorageConfig) -> Result<Pool, DbError> {
    let config = pg_config(storage)?;
    let manager_config = ManagerConfig { recycling_method: RecyclingMethod::Fast };
    // `Fast` recycling hands back a pooled connection unless its socket is known closed; one
    // that died since (a PostgreSQL restart) fails its next query with a clear error and is
    // then dropped, and the next caller gets a new connection.
    let manager = match storage.tls {
        DbTls::Disable => Manager::from_config(config, tokio_postgres::NoTls, manager_config),
        DbTls::VerifyFull => Manager::from_config(config, rustls_connector(storage)?, manager_config),
    };
    Pool::builder(manager)
        .max_size(storage.pool_size)
        .runtime(Runtime::Tokio1)
        .wait_timeout(Some(WAIT_TIMEOUT))
        .create_timeout(Some(CONNECT_TIMEOUT))
        .build()
        .map_err(|e| DbError::Invalid(format!("cannot build the connection pool: {e}")))
}

pub(crate) fn rustls_connector(storage: &StorageConfig) -> Result<tokio_postgres_rustls::MakeRustlsConnect, DbError> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject as _;
    let mut roots = rustls::RootCertStore::empty();
    match &storage.ca_file {
        Some(path) => {
            let certs = CertificateDer::pem_file_iter(path)
                .map_err(|e| DbError::Tls(format!("cannot read storage.ca_file {}: {e}", path.display())))?;
            for cert in certs {
                let cert = cert.map_err(|e| DbError::Tls(format!("storage.ca_file {}: {e}", path.display())))?;
                roots.add(cert).map_err(|e| DbError::Tls(format!("storage.ca_file {}: {e}", path.display())))?;
            }
        }
        None => {
            let native = rustls_native_certs::load_native_certs();
            let (added, _ignored) = roots.add_parsable_certificates(native.certs);
            if added == 0 {
                return Err(DbError::Tls("the system has no usable root certificates; set storage.ca_file".into()));
            }
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| DbError::Tls(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(tokio_postgres_rustls::MakeRustlsConnect::new(config))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Backend, Secret};

    fn storage(url: &str, tls: DbTls) -> StorageConfig {
        StorageConfig { backend: Backend::Postgres, url: Some(Secret::new(url)), tls, ..StorageConfig::default() }
    }

    #[test]
    fn plain_connections_only_to_this_machine() {
        pg_config(&storage("postgres://u:p@127.0.0.1:5432/liaison", DbTls::Disable)).unwrap();
        pg_config(&storage("postgres://u@localhost/liaison", DbTls::Disable)).unwrap();
        pg_config(&storage("host=/run/postgresql dbname=liaison user=u", DbTls::Disable)).unwrap();
        let e = pg_config(&storage("postgres://u:p@db.internal:5432/liaison", DbTls::Disable)).unwrap_err();
        assert!(e.to_string().contains("not db.internal"), "{e}");
        let with_tls = pg_config(&storage("postgres://u:p@db.internal/liaison?sslmode=disable", DbTls::VerifyFull));
        assert_eq!(with_tls.unwrap().get_ssl_mode(), SslMode::Require, "tls overrides the URL's sslmode");
    }

    #[test]
    fn a_bad_url_is_refused_without_quoting_it() {
        for url in ["postgres://u:s3cret@[bad/liaison", "host=x password=s3cret port=notaport dbname=d"] {
            let e = pg_config(&storage(url, DbTls::Disable)).unwrap_err();
            assert!(!e.to_string().contains("s3cret"), "{e}");
        }
        assert!(matches!(pg_config(&StorageConfig::default()), Err(DbError::MissingUrl)));
        let e = pg_config(&storage("postgres://u@127.0.0.1", DbTls::Disable)).unwrap_err();
        assert!(e.to_string().contains("no database"), "{e}");
    }

    #[test]
    fn a_ca_file_that_is_not_pem_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let ca = dir.path().join("ca.pem");
        std::fs::write(&ca, "not a certificate").unwrap();
        let mut s = storage("postgres://u@db.internal/liaison", DbTls::VerifyFull);
        s.ca_file = Some(ca);
        // No PEM block at all: the store would trust nothing.
        let e = pool(&s).map(|_| ()).err();
        let shown = e.map(|e| e.to_string()).unwrap_or_default();
        assert!(shown.is_empty() || shown.contains("ca_file"), "{shown}");
    }
}
