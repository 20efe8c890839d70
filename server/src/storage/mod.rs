//! The relay's storage backends behind core's `KvStore`: sled in the data directory (core's
//! `SledKv`), or PostgreSQL ([`PgKv`], `[storage] backend = "postgres"`).
//!
//! **Architecture Invariant:** only this module knows PostgreSQL. tokio-postgres, its pool and
//! its TLS are dependencies of the relay, never of core, and everything above `KvStore` (the
//! document store, the relay's keys) is the same on both backends.
//!
//! - [`bridge`]: the store's own runtime, and how synchronous calls wait on it.
//! - [`pg_kv`]: the `KvStore` over one table; [`pg_batch`]: a batch as one transaction.
//! - [`connect`]: URL, TLS to the database, the pool.
//! - [`migrate`]: versioned migrations (`liaison-relay migrate`) and the check `serve` makes.
//! - [`hints`]: what relays sharing one database tell each other (the cluster mode): a small
//!   trait, an in-process hub for tests, and PostgreSQL's `LISTEN`/`NOTIFY`.
//! - `testing` (feature `testing`): a private PostgreSQL for tests.

mod bridge;
mod connect;
pub mod hints;
pub mod migrate;
mod pg_batch;
mod pg_kv;
#[cfg(feature = "testing")]
pub mod testing;

use liaison_core::storage::StorageError;
pub use pg_kv::PgKv;

use crate::config::StorageConfig;

/// Errors of the storage layer's set-up: configuration, schema, TLS. Messages never show the
/// URL (it may hold the password), keys or values.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("backend \"postgres\" needs storage.url (or LIAISON_STORAGE_URL)")]
    MissingUrl,
    #[error("storage.url is not a valid PostgreSQL URL or connection string")]
    InvalidUrl,
    #[error("{0}")]
    Invalid(String),
    #[error("cannot set up TLS to PostgreSQL: {0}")]
    Tls(String),
    #[error(
        "the database schema is at version {have}, this relay needs version {need}: run `liaison-relay migrate` first"
    )]
    SchemaTooOld { have: u32, need: u32 },
    #[error("the database schema is at version {have}, newer than this relay knows ({known}): upgrade the relay")]
    SchemaTooNew { have: u32, known: u32 },
    #[error("migration {version} applied to this database differs from this relay's: the schema cannot be trusted")]
    MigrationChanged { version: u32 },
    #[error("migration {version} failed, nothing of it was applied: {reason}")]
    Migration { version: u32, reason: String },
    #[error(
        "synchronous_commit is off for this database: a crash would lose edits the relay acknowledged; set it to \
         on (or local, remote_write, remote_apply)"
    )]
    NotDurable,
    #[error(
        "another relay (or `liaison-relay admin` while a relay runs) is using this database: one relay per \
         database, unless every relay on it runs with storage.cluster = true"
    )]
    InUse,
    #[error(transparent)]
    Storage(#[from] StorageError),
}

/// Checks `[storage]` for PostgreSQL without connecting (`check-config`, `serve`'s start).
pub fn check_config(storage: &StorageConfig) -> Result<(), DbError> {
    connect::pg_config(storage).map(drop)
}

/// An arbitrary constant naming the one-relay-per-database lock among the database's advisory
/// locks (the migration lock is `...01`).
const SINGLE_RELAY_LOCK: i64 = 0x6c69_6169_736f_6e02;

/// Opens the PostgreSQL store for `serve` and the admin CLI: connects, refuses a schema other
/// than the one this relay needs and a database that does not make commits durable, and takes
/// the database for this process alone.
///
/// **One relay per database** until the cluster mode lands: the document store keeps a
/// document's meta, its chunk numbers and the change feed's counter in memory, so two relays
/// writing one database would overwrite each other's chunks. The relay holds a session-level
/// advisory lock on a connection of its own for as long as the store is open (a killed relay's
/// session ends, and the lock with it); a second relay, or the admin CLI while a relay runs, is
/// refused with [`DbError::InUse`], as sled refuses a second process on its directory.
pub fn open_postgres(storage: &StorageConfig) -> Result<PgKv, DbError> {
    open(storage, Some(Hold::Alone))
}

/// [`open_postgres`] without the one-relay lock: for tests of several stores on one database
/// (what the cluster mode builds on), never for a relay.
pub fn open_postgres_shared(storage: &StorageConfig) -> Result<PgKv, DbError> {
    open(storage, None)
}

/// Opens the PostgreSQL store for one node of a cluster (`[storage] cluster = true`): no
/// one-relay lock, and the caller opens its document store with `StoreOptions::shared`, so
/// every write is conditional on what it was built on. The nodes hold the one-relay lock
/// *shared*: a relay not in cluster mode is refused while any node runs, and a node while such
/// a relay runs ([`DbError::InUse`]), since that relay's in-memory counters would go wrong.
pub fn open_postgres_cluster(storage: &StorageConfig) -> Result<PgKv, DbError> {
    open(storage, Some(Hold::Shared))
}

/// How long opening waits for the one-relay lock a process that just ended may still hold.
const LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(3);

/// How a relay holds the database.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Hold {
    /// One relay alone (the exclusive advisory lock).
    Alone,
    /// One node of a cluster (the same lock, shared).
    Shared,
}

fn open(storage: &StorageConfig, hold: Option<Hold>) -> Result<PgKv, DbError> {
    let pool = connect::pool(storage)?;
    let bridge = bridge::Bridge::start().map_err(|e| DbError::Storage(StorageError::Io(e)))?;
    let checked = pool.clone();
    let single = bridge.run(async move {
        let object = checked.get().await.map_err(pg_kv::map_pool_err)?;
        if let Err(e) = durability(&object).await.and(migrate::check(&object).await) {
            return Ok(Err(e));
        }
        let Some(hold) = hold else {
            return Ok(Ok(None));
        };
        // Out of the pool: the lock lives as long as this session.
        let client = deadpool_postgres::Object::take(object);
        let take = match hold {
            Hold::Alone => "SELECT pg_try_advisory_lock($1)",
            Hold::Shared => "SELECT pg_try_advisory_lock_shared($1)",
        };
        // A process that just ended (the previous `liaison-relay admin` command, a relay
        // restarting) still holds the lock until PostgreSQL has ended its session, which
        // happens a moment after the process is gone: wait that moment before saying "in use".
        let deadline = tokio::time::Instant::now() + LOCK_WAIT;
        loop {
            let row = client.query_one(take, &[&SINGLE_RELAY_LOCK]).await.map_err(|e| pg_kv::map_pg_err(&e))?;
            let taken: bool = row.try_get(0).map_err(|e| pg_kv::map_pg_err(&e))?;
            if taken {
                return Ok(Ok(Some(client)));
            }
            if tokio::time::Instant::now() >= deadline {
                return Ok(Err(DbError::InUse));
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    })??;
    Ok(PgKv::new(pool, bridge, single))
}

/// Creates or upgrades the schema (`liaison-relay migrate`).
pub fn migrate(storage: &StorageConfig) -> Result<migrate::Migrated, DbError> {
    let pool = connect::pool(storage)?;
    let bridge = bridge::Bridge::start().map_err(|e| DbError::Storage(StorageError::Io(e)))?;
    bridge.run(async move {
        let object = pool.get().await.map_err(pg_kv::map_pool_err)?;
        // Out of the pool: the connection (and the session's advisory lock) ends with the run.
        let mut client = deadpool_postgres::Object::take(object);
        Ok(migrate::run(&mut client).await)
    })?
}

/// Acknowledged edits must survive a crash of PostgreSQL's host: refuse `synchronous_commit =
/// off`, keep whatever stronger setting the operator chose (`remote_apply` for a standby).
async fn durability(client: &tokio_postgres::Client) -> Result<(), DbError> {
    let row = client.query_one("SHOW synchronous_commit", &[]).await.map_err(|e| pg_kv::map_pg_err(&e))?;
    let setting: String = row.try_get(0).map_err(|e| pg_kv::map_pg_err(&e))?;
    if setting == "off" { Err(DbError::NotDurable) } else { Ok(()) }
}
