//! [`PgKv`]: core's `KvStore` over one PostgreSQL table, `kv(key bytea primary key, value
//! bytea not null)` (see `server/migrations/`).
//!
//! - Every write is a committed transaction before it returns: a batch is one transaction, and
//!   a `put` or `delete` outside a batch is its own. With `synchronous_commit` at its default
//!   (`on`), a committed transaction is on disk, so `flush` has nothing left to do and an edit
//!   the relay acknowledges after its batch returned is durable.
//! - A batch is reduced to each key's final state (later writes win, as the trait says), then
//!   written with two statements whatever its size: one `DELETE ... = ANY`, one upsert from
//!   `unnest`, keys in order. Two batches touching the same keys in another order can still
//!   deadlock; PostgreSQL then aborts one, which is retried whole (nothing of it was written).
//! - Preconditions ([`Batch::expect`]) are checked inside the same transaction before any write:
//!   rows expected present are read `FOR UPDATE`; keys expected absent are inserted first (a
//!   placeholder the batch overwrites or deletes), which takes the key's lock so a concurrent
//!   writer of it waits. A failed one rolls back and returns [`StorageError::Conflict`].
//! - Errors name the SQLSTATE and PostgreSQL's message, never its DETAIL (which quotes values).

use deadpool_postgres::Pool;
use liaison_core::storage::{Batch, KeyValue, KvStore, StorageError, WritersLock};
use tokio_postgres::error::SqlState;

use super::bridge::{Bridge, run_on};
use super::pg_batch::{Failed, Plan, is_retryable};

/// Rows a page query asks for first; doubled while the page still has room, up to the max.
const FIRST_PAGE_ROWS: i64 = 64;
const MAX_PAGE_ROWS: i64 = 4096;
/// Times a batch is tried when PostgreSQL aborts it for a deadlock or a serialization failure.
const BATCH_ATTEMPTS: usize = 5;

/// The relay's store on PostgreSQL. Cheap to share (`Arc`); see [`super::bridge`] for how its
/// synchronous calls reach the async client.
#[derive(Debug)]
pub struct PgKv {
    pool: Pool,
    bridge: Bridge,
    /// The connection holding the one-relay-per-database lock (see `super::open_postgres`),
    /// kept out of the pool for the store's life: dropping it releases the lock.
    _single: Option<deadpool_postgres::ClientWrapper>,
}

impl PgKv {
    pub(crate) fn new(pool: Pool, bridge: Bridge, single: Option<deadpool_postgres::ClientWrapper>) -> Self {
        Self { pool, bridge, _single: single }
    }

    /// Runs `work` with a pooled connection on the store's runtime.
    fn with_client<T, F, Fut>(&self, work: F) -> Result<T, StorageError>
    where
        F: FnOnce(deadpool_postgres::Object) -> Fut + Send + 'static,
        Fut: Future<Output = Result<T, tokio_postgres::Error>> + Send,
        T: Send + 'static,
    {
        let pool = self.pool.clone();
        self.bridge.run(async move {
            let client = pool.get().await.map_err(map_pool_err)?;
            work(client).await.map_err(|e| map_pg_err(&e))
        })
    }
}

/// An arbitrary constant naming the cluster's writers' lock among the database's advisory
/// locks (see [`KvStore::lock_writers`]; the one-relay lock is `...02`).
const WRITERS_LOCK: i64 = 0x6c69_6169_736f_6e03;

/// The writers' lock, held by a pooled connection's session until dropped.
struct HeldWriters {
    client: Option<deadpool_postgres::Object>,
    runtime: tokio::runtime::Handle,
}

impl Drop for HeldWriters {
    fn drop(&mut self) {
        let Some(client) = self.client.take() else { return };
        let released = run_on(&self.runtime, async move {
            match client.query_one("SELECT pg_advisory_unlock($1)", &[&WRITERS_LOCK]).await {
                Ok(row) if row.try_get::<_, bool>(0).unwrap_or(false) => Ok(()),
                _ => {
                    // Closing the connection ends its session, and the lock with it; never
                    // hand a session that may still hold it back to the pool.
                    drop(deadpool_postgres::Object::take(client));
                    Err(StorageError::Backend("the writers' lock was not released".into()))
                }
            }
        });
        if released.is_err() {
            tracing::warn!("the cluster's writers' lock was released by closing its connection");
        }
    }
}

impl KvStore for PgKv {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StorageError> {
        let key = key.to_vec();
        self.with_client(move |client| async move {
            let statement = client.prepare_cached("SELECT value FROM kv WHERE key = $1").await?;
            let row = client.query_opt(&statement, &[&key]).await?;
            row.map(|r| r.try_get::<_, Vec<u8>>(0)).transpose()
        })
    }

    fn put(&self, key: &[u8], value: &[u8]) -> Result<(), StorageError> {
        let (key, value) = (key.to_vec(), value.to_vec());
        self.with_client(move |client| async move {
            let statement = client.prepare_cached(UPSERT_ONE).await?;
            client.execute(&statement, &[&key, &value]).await.map(drop)
        })
    }

    fn delete(&self, key: &[u8]) -> Result<(), StorageError> {
        let key = key.to_vec();
        self.with_client(move |client| async move {
            let statement = client.prepare_cached("DELETE FROM kv WHERE key = $1").await?;
            client.execute(&statement, &[&key]).await.map(drop)
        })
    }

    fn scan_prefix(&self, prefix: &[u8]) -> Result<Vec<KeyValue>, StorageError> {
        let range = Range::prefix(prefix);
        self.with_client(move |client| async move {
            let statement = client.prepare_cached(&range.select("key, value", None)).await?;
            let rows = client.query(&statement, &range.params(None)).await?;
            rows.iter().map(|r| Ok((r.try_get(0)?, r.try_get(1)?))).collect()
        })
    }

    fn scan_keys(&self, prefix: &[u8]) -> Result<Vec<Vec<u8>>, StorageError> {
        let range = Range::prefix(prefix);
        self.with_client(move |client| async move {
            let statement = client.prepare_cached(&range.select("key", None)).await?;
            let rows = client.query(&statement, &range.params(None)).await?;
            rows.iter().map(|r| r.try_get(0)).collect()
        })
    }

    fn scan_page(&self, prefix: &[u8], after: Option<&[u8]>, max_bytes: usize) -> Result<Vec<KeyValue>, StorageError> {
        let mut range = Range::prefix(prefix);
        if let Some(after) = after.filter(|a| *a >= prefix) {
            range.start = after.to_vec();
            range.start_inclusive = false;
        }
        self.with_client(move |client| async move {
            let (mut page, mut bytes, mut rows_wanted) = (Vec::new(), 0usize, FIRST_PAGE_ROWS);
            loop {
                let statement = client.prepare_cached(&range.select("key, value", Some(rows_wanted))).await?;
                let rows = client.query(&statement, &range.params(Some(&rows_wanted))).await?;
                let got = rows.len();
                for row in rows {
                    if bytes >= max_bytes && !page.is_empty() {
                        return Ok(page);
                    }
                    let (key, value): (Vec<u8>, Vec<u8>) = (row.try_get(0)?, row.try_get(1)?);
                    bytes += key.len() + value.len();
                    range.start.clone_from(&key);
                    range.start_inclusive = false;
                    page.push((key, value));
                }
                if (got as i64) < rows_wanted || bytes >= max_bytes {
                    return Ok(page);
                }
                rows_wanted = (rows_wanted * 2).min(MAX_PAGE_ROWS);
            }
        })
    }

    fn apply(&self, batch: Batch) -> Result<(), StorageError> {
        if batch.is_empty() {
            return Ok(());
        }
        let plan = Plan::of(batch)?;
        let pool = self.pool.clone();
        self.bridge.run(async move {
            let mut client = pool.get().await.map_err(map_pool_err)?;
            let mut attempt = 1;
            loop {
                match plan.run(&mut client).await {
                    Err(Failed::Pg(e)) if attempt < BATCH_ATTEMPTS && is_retryable(&e) => attempt += 1,
                    Err(Failed::Pg(e)) => return Err(map_pg_err(&e)),
                    Err(Failed::Conflict) => return Err(StorageError::Conflict),
                    Ok(()) => return Ok(()),
                }
            }
        })
    }

    /// Nothing to do: every write returned only once its transaction committed, and a commit
    /// with `synchronous_commit = on` is on disk.
    fn lock_writers(&self) -> Result<WritersLock, StorageError> {
        let pool = self.pool.clone();
        let client = self.bridge.run(async move {
            let client = pool.get().await.map_err(map_pool_err)?;
            let statement = client.prepare_cached("SELECT pg_advisory_lock($1)").await.map_err(|e| map_pg_err(&e))?;
            client.execute(&statement, &[&WRITERS_LOCK]).await.map_err(|e| map_pg_err(&e))?;
            Ok(client)
        })?;
        Ok(WritersLock::held(Box::new(HeldWriters { client: Some(client), runtime: self.bridge.handle() })))
    }

    fn flush(&self) -> Result<(), StorageError> {
        Ok(())
    }
}

const UPSERT_ONE: &str =
    "INSERT INTO kv (key, value) VALUES ($1, $2) ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value";

/// Keys from `start` up to `end` (excluded; `None`: to the last key).
#[derive(Debug, Clone)]
struct Range {
    start: Vec<u8>,
    start_inclusive: bool,
    end: Option<Vec<u8>>,
}

impl Range {
    fn prefix(prefix: &[u8]) -> Self {
        Self { start: prefix.to_vec(), start_inclusive: true, end: successor(prefix) }
    }

    /// The query of `columns` over the range in key order, with a `LIMIT` parameter if `limit`.
    /// A handful of distinct texts, so each is prepared once per connection.
    fn select(&self, columns: &str, limit: Option<i64>) -> String {
        let lower = if self.start_inclusive { ">=" } else { ">" };
        let mut sql = format!("SELECT {columns} FROM kv WHERE key {lower} $1");
        let mut next = 2;
        if self.end.is_some() {
            sql.push_str(" AND key < $2");
            next = 3;
        }
        sql.push_str(" ORDER BY key");
        if limit.is_some() {
            sql.push_str(&format!(" LIMIT ${next}"));
        }
        sql
    }

    fn params<'a>(&'a self, limit: Option<&'a i64>) -> Vec<&'a (dyn tokio_postgres::types::ToSql + Sync)> {
        let mut params: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> = vec![&self.start];
        if let Some(end) = &self.end {
            params.push(end);
        }
        if let Some(limit) = limit {
            params.push(limit);
        }
        params
    }
}

/// The smallest key greater than every key starting with `prefix`: the prefix with trailing
/// 0xFF bytes dropped and its last byte incremented. `None` when there is none (an empty prefix,
/// or only 0xFF bytes): the range then runs to the last key.
pub(crate) fn successor(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < u8::MAX {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}

/// PostgreSQL's error as a storage error: disk full is [`StorageError::Full`]; otherwise the
/// SQLSTATE and message, never the DETAIL or the statement's parameters (keys and values).
pub(crate) fn map_pg_err(e: &tokio_postgres::Error) -> StorageError {
    if let Some(db) = e.as_db_error() {
        if *db.code() == SqlState::DISK_FULL {
            return StorageError::Full;
        }
        return StorageError::Backend(format!("PostgreSQL: {} (SQLSTATE {})", db.message(), db.code().code()));
    }
    if e.is_closed() {
        return StorageError::Backend("the connection to PostgreSQL was lost".into());
    }
    // Connection and protocol errors (refused, reset, TLS): their text holds no data.
    StorageError::Backend(format!("PostgreSQL connection: {e}"))
}

pub(crate) fn map_pool_err(e: deadpool_postgres::PoolError) -> StorageError {
    match e {
        deadpool_postgres::PoolError::Backend(e) => map_pg_err(&e),
        deadpool_postgres::PoolError::Timeout(_) => {
            StorageError::Backend("no connection to PostgreSQL within the pool's timeout".into())
        }
        other => StorageError::Backend(format!("PostgreSQL pool: {other}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_successor_of_a_prefix_bounds_exactly_its_keys() {
        assert_eq!(successor(b"b/"), Some(b"b0".to_vec()));
        assert_eq!(successor(&[1, 255]), Some(vec![2]));
        assert_eq!(successor(&[1, 255, 255]), Some(vec![2]));
        assert_eq!(successor(&[255, 255]), None);
        assert_eq!(successor(&[]), None);
        assert_eq!(successor(&[0]), Some(vec![1]));
    }
}
