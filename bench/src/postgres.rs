//! The PostgreSQL instance the `liaison-pg` relays run on: one for the whole run, a fresh
//! database for every relay start.

use std::path::PathBuf;

use anyhow::{Context, Result};
use liaison_server::storage::testing::{self, PrivatePostgres};

/// Where the liaison-pg relays keep their data.
#[derive(Debug)]
pub enum Postgres {
    /// Started here (Debian's PostgreSQL, fsync and synchronous_commit on; see
    /// `liaison_server::storage::testing`), stopped when dropped.
    Private(PrivatePostgres),
    /// `LIAISON_TEST_PG_URL`: an instance already running, whose processes are not measured.
    External { admin_url: String },
}

impl Postgres {
    /// `LIAISON_TEST_PG_URL` if set, else a private instance.
    pub fn start() -> Result<Self> {
        if let Ok(admin_url) = std::env::var(testing::URL_VAR) {
            return Ok(Self::External { admin_url });
        }
        Ok(Self::Private(PrivatePostgres::start().context("starting a private PostgreSQL")?))
    }

    /// A new, empty database; returns its URL.
    pub fn fresh_database(&self) -> Result<String> {
        match self {
            Self::Private(pg) => pg.fresh_database(),
            // testing::fresh_database uses LIAISON_TEST_PG_URL, which is this instance.
            Self::External { .. } => testing::fresh_database(),
        }
    }

    /// Drops a database made by [`Postgres::fresh_database`] once no relay uses it.
    pub fn drop_database(&self, url: &str) -> Result<()> {
        let name = database_name(url).context("the URL names no database")?;
        testing::psql(&self.admin_url(), &format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
    }

    pub fn admin_url(&self) -> String {
        match self {
            Self::Private(pg) => pg.admin_url(),
            Self::External { admin_url } => admin_url.clone(),
        }
    }

    /// The postmaster's pid (the root of the instance's processes), for a private instance;
    /// `None` for an external one (it may not even run on this machine).
    pub fn postmaster_pid(&self) -> Option<u32> {
        let Self::Private(pg) = self else { return None };
        let file: PathBuf = pg.data_directory().join("postmaster.pid");
        crate::procstat::parse_postmaster_pid(&std::fs::read_to_string(file).ok()?)
    }
}

/// The database a `postgres://HOST/NAME` URL names (no query string in ours).
pub fn database_name(url: &str) -> Option<&str> {
    let (_, name) = url.rsplit_once('/')?;
    let name = name.split('?').next()?;
    (!name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')).then_some(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_database_name_is_the_urls_last_segment_and_only_a_plain_identifier() {
        assert_eq!(database_name("postgres://postgres@127.0.0.1:5432/liaison_t1_2_3"), Some("liaison_t1_2_3"));
        assert_eq!(database_name("postgres://postgres@127.0.0.1:5432/db?sslmode=disable"), Some("db"));
        assert_eq!(database_name("postgres://postgres@127.0.0.1:5432/"), None);
        assert_eq!(database_name("postgres://h/x; DROP TABLE y"), None);
    }
}
