//! Versioned schema migrations (`server/migrations/NNNN_name.sql`), run by `liaison-relay
//! migrate`, and the check `serve` makes before it uses a database.
//!
//! A small runner rather than a crate (see ARCHITECTURE.md): each migration runs in its own
//! transaction together with its row in `schema_migrations` (version, name, SHA-256 of its
//! text), so a failed one leaves no trace; runs are serialised by an advisory lock, so two
//! relays started with `migrate` at once apply each migration once; a database whose schema is
//! newer than the relay knows is refused, and so is one where an applied migration's text has
//! changed since.

use sha2::{Digest as _, Sha256};

use super::DbError;
use super::pg_kv::map_pg_err;

/// Every migration, in order; versions start at 1 and have no gaps.
pub const MIGRATIONS: &[Migration] =
    &[Migration { version: 1, name: "kv", sql: include_str!("../../migrations/0001_kv.sql") }];

/// The schema version this relay needs (and the newest it knows).
pub fn latest() -> u32 {
    MIGRATIONS.last().map_or(0, |m| m.version)
}

/// One SQL file of `server/migrations/`.
#[derive(Debug, Clone, Copy)]
pub struct Migration {
    pub version: u32,
    pub name: &'static str,
    pub sql: &'static str,
}

impl Migration {
    fn checksum(&self) -> Vec<u8> {
        Sha256::digest(self.sql.as_bytes()).to_vec()
    }
}

/// An arbitrary constant naming the migration lock among the database's advisory locks.
const MIGRATION_LOCK: i64 = 0x6c69_6169_736f_6e01;

const CREATE_TABLE: &str = "CREATE TABLE IF NOT EXISTS schema_migrations (
    version    integer PRIMARY KEY,
    name       text NOT NULL,
    checksum   bytea NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
)";

/// What a run of [`run`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Migrated {
    pub from: u32,
    pub to: u32,
}

/// Brings the schema up to [`latest`], over `client` (a connection of its own: the advisory
/// lock is the session's and goes with it).
pub(crate) async fn run(client: &mut tokio_postgres::Client) -> Result<Migrated, DbError> {
    let pg = |e: tokio_postgres::Error| DbError::Storage(map_pg_err(&e));
    client.execute("SELECT pg_advisory_lock($1)", &[&MIGRATION_LOCK]).await.map_err(pg)?;
    let outcome = apply_missing(client).await;
    // Released with the session anyway; unlocked now for a connection that lives on.
    let _ = client.execute("SELECT pg_advisory_unlock($1)", &[&MIGRATION_LOCK]).await;
    outcome
}

async fn apply_missing(client: &mut tokio_postgres::Client) -> Result<Migrated, DbError> {
    let pg = |e: tokio_postgres::Error| DbError::Storage(map_pg_err(&e));
    client.batch_execute(CREATE_TABLE).await.map_err(pg)?;
    let applied = applied(client).await?;
    let from = applied.last().map_or(0, |(v, _)| *v);
    check_applied(&applied)?;
    for migration in MIGRATIONS.iter().filter(|m| m.version > from) {
        let tx = client.transaction().await.map_err(pg)?;
        tx.batch_execute(migration.sql)
            .await
            .map_err(|e| DbError::Migration { version: migration.version, reason: map_pg_err(&e).to_string() })?;
        tx.execute(
            "INSERT INTO schema_migrations (version, name, checksum) VALUES ($1, $2, $3)",
            &[&(migration.version as i32), &migration.name, &migration.checksum()],
        )
        .await
        .map_err(pg)?;
        tx.commit().await.map_err(pg)?;
        tracing::info!(version = migration.version, name = migration.name, "migration applied");
    }
    Ok(Migrated { from, to: latest().max(from) })
}

/// Refuses a database whose schema `serve` cannot use: older than [`latest`] (run `migrate`),
/// newer (upgrade the relay), or with an applied migration changed since.
pub(crate) async fn check(client: &tokio_postgres::Client) -> Result<(), DbError> {
    let applied = match applied(client).await {
        Ok(applied) => applied,
        // No schema_migrations table: nothing was ever migrated.
        Err(DbError::Storage(_)) if !has_table(client).await? => Vec::new(),
        Err(e) => return Err(e),
    };
    check_applied(&applied)?;
    let have = applied.last().map_or(0, |(v, _)| *v);
    if have < latest() {
        return Err(DbError::SchemaTooOld { have, need: latest() });
    }
    Ok(())
}

async fn has_table(client: &tokio_postgres::Client) -> Result<bool, DbError> {
    let row = client
        .query_one("SELECT to_regclass('schema_migrations') IS NOT NULL", &[])
        .await
        .map_err(|e| DbError::Storage(map_pg_err(&e)))?;
    row.try_get(0).map_err(|e| DbError::Storage(map_pg_err(&e)))
}

/// The applied migrations' versions and checksums, in order.
async fn applied(client: &tokio_postgres::Client) -> Result<Vec<(u32, Vec<u8>)>, DbError> {
    let rows = client
        .query("SELECT version, checksum FROM schema_migrations ORDER BY version", &[])
        .await
        .map_err(|e| DbError::Storage(map_pg_err(&e)))?;
    rows.iter()
        .map(|r| {
            let version: i32 = r.try_get(0).map_err(|e| DbError::Storage(map_pg_err(&e)))?;
            let checksum: Vec<u8> = r.try_get(1).map_err(|e| DbError::Storage(map_pg_err(&e)))?;
            Ok((u32::try_from(version).unwrap_or(0), checksum))
        })
        .collect()
}

fn check_applied(applied: &[(u32, Vec<u8>)]) -> Result<(), DbError> {
    let have = applied.last().map_or(0, |(v, _)| *v);
    if have > latest() {
        return Err(DbError::SchemaTooNew { have, known: latest() });
    }
    for (version, checksum) in applied {
        let ours = MIGRATIONS.iter().find(|m| m.version == *version);
        if ours.is_none_or(|m| m.checksum() != *checksum) {
            return Err(DbError::MigrationChanged { version: *version });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_start_at_one_without_gaps() {
        for (i, m) in MIGRATIONS.iter().enumerate() {
            assert_eq!(m.version as usize, i + 1, "{}", m.name);
        }
        assert_eq!(latest(), MIGRATIONS.len() as u32);
    }

    #[test]
    fn a_newer_or_changed_schema_is_refused() {
        let ours: Vec<_> = MIGRATIONS.iter().map(|m| (m.version, m.checksum())).collect();
        check_applied(&ours).unwrap();
        let mut newer = ours.clone();
        newer.push((latest() + 1, vec![0; 32]));
        assert!(matches!(check_applied(&newer), Err(DbError::SchemaTooNew { .. })));
        let mut changed = ours;
        changed[0].1[0] ^= 1;
        assert!(matches!(check_applied(&changed), Err(DbError::MigrationChanged { version: 1 })));
    }
}
