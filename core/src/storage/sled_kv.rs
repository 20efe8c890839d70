use std::path::Path;
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};

use super::{Batch, BatchOp, KeyValue, KvStore, StorageError, check_expectations};

/// The on-device and relay backend: one sled database in a directory.
///
/// A batch with preconditions ([`Batch::expect`]) is checked and applied under `writers`
/// taken exclusively; every other write takes it shared, so plain writes still run side by
/// side and none slips between a precondition's check and its batch. One lock per process is
/// enough: sled's directory lock keeps other processes out.
#[derive(Debug, Clone)]
pub struct SledKv {
    db: sled::Db,
    writers: Arc<RwLock<()>>,
}

/// sled's page cache unless told otherwise: 64 MiB.
pub const DEFAULT_CACHE_BYTES: u64 = 64 << 20;

impl SledKv {
    /// Opens (or creates) the database in `dir`.
    ///
    /// sled's background threads can keep a just-closed database's file lock for a few
    /// milliseconds, so a lock conflict is retried for up to 3 seconds (`LOCK_WAIT`) before it
    /// is reported as [`StorageError::InUse`] (most likely another process has the directory
    /// open).
    pub fn open(dir: &Path) -> Result<Self, StorageError> {
        Self::open_with_cache(dir, DEFAULT_CACHE_BYTES)
    }

    /// Like [`SledKv::open`], with sled's page cache capped at `cache_bytes` (sled's own default,
    /// 1 GiB, is more than a phone should give and lets a relay's memory follow its data).
    pub fn open_with_cache(dir: &Path, cache_bytes: u64) -> Result<Self, StorageError> {
        let started = std::time::Instant::now();
        let mut pause = std::time::Duration::from_millis(1);
        loop {
            let opened = sled::Config::new()
                .path(dir)
                // Durability comes from our explicit flush after each commit, not from a timer.
                .flush_every_ms(None)
                .cache_capacity(cache_bytes)
                .open();
            match opened {
                Ok(db) => return Ok(Self::wrap(db)),
                Err(sled::Error::Io(e)) if is_lock_conflict(&e) => {
                    if started.elapsed() >= LOCK_WAIT {
                        return Err(StorageError::InUse);
                    }
                    std::thread::sleep(pause);
                    pause = (pause * 2).min(std::time::Duration::from_millis(100));
                }
                Err(e) => return Err(map_err(e)),
            }
        }
    }

    /// A database that lives only in memory and temporary files; for tests of sled itself.
    pub fn temporary() -> Result<Self, StorageError> {
        let db = sled::Config::new().temporary(true).open().map_err(map_err)?;
        Ok(Self::wrap(db))
    }

    fn wrap(db: sled::Db) -> Self {
        Self { db, writers: Arc::new(RwLock::new(())) }
    }

    // A poisoned lock guards no data (`()`): a writer that panicked left nothing half-done.
    fn plain_write(&self) -> RwLockReadGuard<'_, ()> {
        self.writers.read().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn conditional_write(&self) -> RwLockWriteGuard<'_, ()> {
        self.writers.write().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Bytes the database occupies on disk.
    pub fn size_on_disk(&self) -> Result<u64, StorageError> {
        self.db.size_on_disk().map_err(map_err)
    }
}

/// How long [`SledKv::open`] waits for another holder of the directory's lock.
pub const LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(3);

fn is_lock_conflict(e: &std::io::Error) -> bool {
    // sled wraps the flock failure (EWOULDBLOCK) in an `Other` error whose text says so.
    e.kind() == std::io::ErrorKind::WouldBlock || e.to_string().contains("could not acquire lock")
}

fn map_err(e: sled::Error) -> StorageError {
    match e {
        sled::Error::Io(io) => StorageError::from_io(io),
        sled::Error::Corruption { .. } => StorageError::Corrupt,
        other => StorageError::Backend(other.to_string()),
    }
}

impl KvStore for SledKv {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StorageError> {
        Ok(self.db.get(key).map_err(map_err)?.map(|v| v.to_vec()))
    }

    fn put(&self, key: &[u8], value: &[u8]) -> Result<(), StorageError> {
        let _writing = self.plain_write();
        self.db.insert(key, value).map_err(map_err)?;
        Ok(())
    }

    fn delete(&self, key: &[u8]) -> Result<(), StorageError> {
        let _writing = self.plain_write();
        self.db.remove(key).map_err(map_err)?;
        Ok(())
    }

    fn scan_prefix(&self, prefix: &[u8]) -> Result<Vec<KeyValue>, StorageError> {
        self.db.scan_prefix(prefix).map(|r| r.map(|(k, v)| (k.to_vec(), v.to_vec())).map_err(map_err)).collect()
    }

    fn scan_keys(&self, prefix: &[u8]) -> Result<Vec<Vec<u8>>, StorageError> {
        self.db.scan_prefix(prefix).keys().map(|r| r.map(|k| k.to_vec()).map_err(map_err)).collect()
    }

    fn scan_page(&self, prefix: &[u8], after: Option<&[u8]>, max_bytes: usize) -> Result<Vec<KeyValue>, StorageError> {
        use std::ops::Bound;
        let start = match after {
            Some(a) if a >= prefix => Bound::Excluded(a.to_vec()),
            _ => Bound::Included(prefix.to_vec()),
        };
        let mut page = Vec::new();
        let mut bytes = 0;
        for entry in self.db.range::<Vec<u8>, _>((start, Bound::Unbounded)) {
            let (k, v) = entry.map_err(map_err)?;
            if !k.starts_with(prefix) || (bytes >= max_bytes && !page.is_empty()) {
                break;
            }
            bytes += k.len() + v.len();
            page.push((k.to_vec(), v.to_vec()));
        }
        Ok(page)
    }

    fn apply(&self, batch: Batch) -> Result<(), StorageError> {
        let _writing = if batch.expectations().is_empty() {
            (Some(self.plain_write()), None)
        } else {
            let exclusive = self.conditional_write();
            check_expectations(&batch, |key| Ok(self.db.get(key).map_err(map_err)?.map(|v| v.to_vec())))?;
            (None, Some(exclusive))
        };
        let mut b = sled::Batch::default();
        for op in batch.into_ops() {
            match op {
                BatchOp::Put(k, v) => b.insert(k, v),
                BatchOp::Delete(k) => b.remove(k),
            }
        }
        self.db.apply_batch(b).map_err(map_err)
    }

    fn flush(&self) -> Result<(), StorageError> {
        self.db.flush().map_err(map_err)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    kv_conformance!(SledKv::temporary().unwrap());

    #[test]
    fn data_survives_reopen_after_flush() {
        let dir = tempfile::tempdir().unwrap();
        {
            let kv = SledKv::open(dir.path()).unwrap();
            let mut b = Batch::new();
            b.put(b"k1".to_vec(), b"v1".to_vec()).put(b"k2".to_vec(), b"v2".to_vec());
            kv.apply(b).unwrap();
            kv.flush().unwrap();
        }
        let kv = SledKv::open(dir.path()).unwrap();
        assert_eq!(kv.get(b"k1").unwrap(), Some(b"v1".to_vec()));
        assert_eq!(kv.scan_keys(b"k").unwrap().len(), 2);
    }

    #[test]
    fn a_directory_held_open_is_reported_in_use() {
        let dir = tempfile::tempdir().unwrap();
        let _held = SledKv::open(dir.path()).unwrap();
        let started = std::time::Instant::now();
        assert!(matches!(SledKv::open(dir.path()), Err(StorageError::InUse)));
        assert!(started.elapsed() >= LOCK_WAIT);
    }
}
