//! The ready file: once it listens, `liaison-relay serve --ready-file PATH` writes where it
//! serves to PATH as JSON ([`Ready`]), for scripts, tests and the benchmark, rather than have them
//! read its console output. The file appears whole or not at all: it is written beside PATH and
//! renamed into place.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Where a running relay serves, as its ready file says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ready {
    /// What devices connect to: `wss://ADDR/v1/sync` (`ws://` when plain).
    pub url: String,
    /// The main listener, `https://ADDR` (`http://` when plain): health, the catalog, and the
    /// admin API and metrics unless `admin_listen` moves them.
    pub base_url: String,
    /// The admin listener (`admin_listen`), when there is one: the admin API and metrics.
    pub admin_url: Option<String>,
    /// The TLS certificate file and its SHA-256 fingerprint (`AB:CD:...`), when serving TLS.
    pub certificate: Option<PathBuf>,
    pub fingerprint: Option<String>,
    /// The certificate's public-key pin (base64 of the SHA-256 of its SubjectPublicKeyInfo),
    /// what devices pin: it stays when a renewal keeps the key.
    #[serde(default)]
    pub spki_pin: Option<String>,
    pub data_dir: PathBuf,
    /// Where the first admin credential was written, on a start that wrote one.
    pub bootstrap_credential: Option<PathBuf>,
}

impl Ready {
    /// What `running` serves, over `data_dir`.
    pub fn of(running: &crate::Running, data_dir: &Path) -> Self {
        let scheme = if running.certificate.is_some() { "https" } else { "http" };
        Ready {
            url: running.url.clone(),
            base_url: format!("{scheme}://{}", running.addr),
            admin_url: running.admin_addr.map(|addr| format!("{scheme}://{addr}")),
            certificate: running.certificate.as_ref().map(|(path, _)| path.clone()),
            fingerprint: running.certificate.as_ref().map(|(_, fingerprint)| fingerprint.clone()),
            spki_pin: running.certificate.as_ref().and_then(|(path, _)| crate::tls::spki_pin(path).ok()),
            data_dir: data_dir.to_owned(),
            bootstrap_credential: running.bootstrap_credential.clone(),
        }
    }

    /// Writes the file: to `PATH.tmp`, flushed, then renamed to `path`.
    pub fn write(&self, path: &Path) -> std::io::Result<()> {
        let mut temporary = path.as_os_str().to_owned();
        temporary.push(".tmp");
        let temporary = PathBuf::from(temporary);
        let text = serde_json::to_vec_pretty(self).map_err(std::io::Error::other)?;
        let mut file = std::fs::File::create(&temporary)?;
        file.write_all(&text)?;
        file.sync_all()?;
        std::fs::rename(&temporary, path)
    }

    /// Reads a ready file; `None` while there is none.
    pub fn read(path: &Path) -> std::io::Result<Option<Self>> {
        match std::fs::read(path) {
            Ok(text) => serde_json::from_slice(&text).map(Some).map_err(std::io::Error::other),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn a_ready_file_reads_back_as_written_and_leaves_nothing_beside_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ready.json");
        assert_eq!(Ready::read(&path).unwrap(), None);
        let ready = Ready {
            url: "wss://127.0.0.1:1234/v1/sync".into(),
            base_url: "https://127.0.0.1:1234".into(),
            admin_url: None,
            certificate: Some(dir.path().join("dev-cert.pem")),
            fingerprint: Some("AB:CD".into()),
            spki_pin: Some("q83vEjRWeJA=".into()),
            data_dir: dir.path().to_owned(),
            bootstrap_credential: None,
        };
        ready.write(&path).unwrap();
        assert_eq!(Ready::read(&path).unwrap(), Some(ready));
        let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names, vec![std::ffi::OsString::from("ready.json")]);
    }
}
