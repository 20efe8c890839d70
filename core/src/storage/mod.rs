//! The key-value storage trait under the document store, with a memory and a sled backend.
//!
//! The trait is deliberately small (get, put, delete, scan by prefix, atomic batch, flush) so
//! that sled, which calls itself beta, can be replaced without touching anything above it.

// Declared first: its macro is used by the backends' tests. Behind `testing` it is exported
// (`liaison_core::kv_conformance!`) so backends in other crates (the relay's PostgreSQL store)
// pass the same suite.
#[cfg(any(test, feature = "testing"))]
#[macro_use]
pub mod conformance;

mod memory;
mod sled_kv;

use std::ops::Bound;

pub use memory::MemoryKv;
pub use sled_kv::SledKv;

/// Errors from a storage backend. Messages never include keys or values: keys name documents
/// and values hold personal data.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// No space left: the operating system reported [`std::io::ErrorKind::StorageFull`], or
    /// [`MemoryKv::set_full`] is on.
    #[error("storage is full")]
    Full,
    /// [`SledKv::open`] could not take the data directory's lock within 3 seconds: another
    /// process, or another open [`SledKv`] in this one, has the directory.
    #[error("the data directory is in use by another process")]
    InUse,
    /// The backend found its files damaged (sled's corruption error).
    #[error("storage backend reported corruption")]
    Corrupt,
    /// Any other I/O error from the operating system.
    #[error("storage I/O failed: {0}")]
    Io(#[source] std::io::Error),
    /// Any other failure the backend reports, with its message.
    #[error("storage backend failed: {0}")]
    Backend(String),
    /// A precondition of the batch ([`Batch::expect`]) did not hold when it was applied: nothing
    /// of the batch was written. Another writer changed a key first; read again and retry.
    #[error("a batch's precondition did not hold; nothing was written")]
    Conflict,
}

impl StorageError {
    pub(crate) fn from_io(e: std::io::Error) -> Self {
        if e.kind() == std::io::ErrorKind::StorageFull { Self::Full } else { Self::Io(e) }
    }
}

/// One write inside an atomic [`Batch`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BatchOp {
    /// Sets a key (the first field) to a value (the second), replacing any value it had.
    Put(Vec<u8>, Vec<u8>),
    /// Removes a key; removing a key that is not there is not an error.
    Delete(Vec<u8>),
}

/// A precondition of a [`Batch`]: the key holds this value (`None`: the key is absent).
pub type Expectation = (Vec<u8>, Option<Vec<u8>>);

/// Writes applied all together or not at all, by [`KvStore::apply`]. They are applied in the
/// order they were added, so of two writes to one key the later wins.
///
/// A batch may also carry preconditions ([`Batch::expect`]): they are checked atomically with
/// the writes, against every other writer of the store (another thread, or with PostgreSQL
/// another process), and if one does not hold nothing is written and `apply` fails with
/// [`StorageError::Conflict`]. That is the compare-and-set a store shared by several relays
/// needs.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Batch {
    ops: Vec<BatchOp>,
    expected: Vec<Expectation>,
}

impl Batch {
    /// An empty batch.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a write setting `key` to `value`.
    pub fn put(&mut self, key: impl Into<Vec<u8>>, value: impl Into<Vec<u8>>) -> &mut Self {
        self.ops.push(BatchOp::Put(key.into(), value.into()));
        self
    }

    /// Adds a write removing `key`.
    pub fn delete(&mut self, key: impl Into<Vec<u8>>) -> &mut Self {
        self.ops.push(BatchOp::Delete(key.into()));
        self
    }

    /// Adds a precondition: when the batch is applied, `key` must hold `value` (`None`: must be
    /// absent), or nothing is written and [`KvStore::apply`] fails with
    /// [`StorageError::Conflict`]. Checked before any write of the batch, so it sees the store
    /// as it was, not as the batch's own writes leave it.
    pub fn expect(&mut self, key: impl Into<Vec<u8>>, value: Option<Vec<u8>>) -> &mut Self {
        self.expected.push((key.into(), value));
        self
    }

    /// The preconditions, in the order they were added.
    pub fn expectations(&self) -> &[Expectation] {
        &self.expected
    }

    /// Whether the batch holds no writes and no preconditions.
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty() && self.expected.is_empty()
    }

    /// How many writes the batch holds, each put and delete counted, to the same key or not.
    pub fn len(&self) -> usize {
        self.ops.len()
    }

    /// The writes, in the order they were added.
    pub fn ops(&self) -> &[BatchOp] {
        &self.ops
    }

    /// The writes, in the order they were added, taking the batch apart.
    pub fn into_ops(self) -> Vec<BatchOp> {
        self.ops
    }

    /// Appends another batch's writes after this one's, and adds its preconditions.
    pub fn extend(&mut self, other: Batch) {
        self.ops.extend(other.ops);
        self.expected.extend(other.expected);
    }
}

/// For backends that check preconditions under their own lock: [`StorageError::Conflict`]
/// unless every expectation of `batch` holds, reading current values with `get`.
pub(crate) fn check_expectations(
    batch: &Batch,
    mut get: impl FnMut(&[u8]) -> Result<Option<Vec<u8>>, StorageError>,
) -> Result<(), StorageError> {
    for (key, want) in batch.expectations() {
        if get(key)? != *want {
            return Err(StorageError::Conflict);
        }
    }
    Ok(())
}

/// A key and its value, as returned by [`KvStore::scan_prefix`].
pub type KeyValue = (Vec<u8>, Vec<u8>);

/// For backends over an ordered map: the range a [`KvStore::scan_page`] reads from, and the
/// page taken from the entries in that range, so a page costs what it returns rather than a
/// scan of the whole prefix.
pub(crate) fn page_range(prefix: &[u8], after: Option<&[u8]>) -> (Bound<Vec<u8>>, Bound<Vec<u8>>) {
    let start = match after {
        Some(a) if a >= prefix => Bound::Excluded(a.to_vec()),
        _ => Bound::Included(prefix.to_vec()),
    };
    (start, Bound::Unbounded)
}

/// See [`page_range`]: `entries` are those of the range, in key order.
pub(crate) fn take_page<'a>(
    entries: impl Iterator<Item = (&'a Vec<u8>, &'a Vec<u8>)>,
    prefix: &[u8],
    max_bytes: usize,
) -> Vec<KeyValue> {
    let mut page = Vec::new();
    let mut bytes = 0;
    for (k, v) in entries {
        if !k.starts_with(prefix) || (bytes >= max_bytes && !page.is_empty()) {
            break;
        }
        bytes += k.len() + v.len();
        page.push((k.clone(), v.clone()));
    }
    page
}

/// An ordered key-value store. Keys sort bytewise.
///
/// Every write is visible to reads as soon as it returns `Ok`, but survives a crash only once a
/// later [`KvStore::flush`] has returned `Ok`: until then a killed process or a power cut may
/// lose it. A write that returns an error may or may not have been applied (a batch still all
/// or nothing).
pub trait KvStore: Send + Sync + std::fmt::Debug {
    /// The value stored under `key`, or `None` if there is none.
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StorageError>;
    /// Sets `key` to `value`, replacing any value it had. Durable only after [`KvStore::flush`].
    fn put(&self, key: &[u8], value: &[u8]) -> Result<(), StorageError>;
    /// Removes `key`; removing a key that is not there is not an error. Durable only after
    /// [`KvStore::flush`].
    fn delete(&self, key: &[u8]) -> Result<(), StorageError>;
    /// Every entry whose key starts with `prefix`, in key order.
    fn scan_prefix(&self, prefix: &[u8]) -> Result<Vec<KeyValue>, StorageError>;
    /// Keys only; cheaper where values are large.
    fn scan_keys(&self, prefix: &[u8]) -> Result<Vec<Vec<u8>>, StorageError> {
        Ok(self.scan_prefix(prefix)?.into_iter().map(|(k, _)| k).collect())
    }
    /// One page of a scan in key order: entries whose key starts with `prefix` and sorts after
    /// `after` (from the first if `None`), stopping once the page holds `max_bytes` of keys and
    /// values (at least one entry, if any is left). An empty page means the scan is done. For
    /// walking a whole database (backups) in bounded memory.
    fn scan_page(&self, prefix: &[u8], after: Option<&[u8]>, max_bytes: usize) -> Result<Vec<KeyValue>, StorageError> {
        let mut page = Vec::new();
        let mut bytes = 0;
        for (k, v) in self.scan_prefix(prefix)? {
            if after.is_some_and(|a| k.as_slice() <= a) {
                continue;
            }
            if bytes >= max_bytes && !page.is_empty() {
                break;
            }
            bytes += k.len() + v.len();
            page.push((k, v));
        }
        Ok(page)
    }
    /// Applies every write of `batch` atomically: after a crash either all are visible or none.
    /// Like any write, durable only after [`KvStore::flush`]. If a precondition of the batch
    /// ([`Batch::expect`]) does not hold, writes nothing and fails with
    /// [`StorageError::Conflict`].
    fn apply(&self, batch: Batch) -> Result<(), StorageError>;
    /// Makes every write applied so far durable (survives a killed process and a power cut).
    fn flush(&self) -> Result<(), StorageError>;
    /// Makes the writers of a store that several processes share take turns: until the
    /// returned lock is dropped, no other process's `lock_writers` returns. A writer that
    /// reads, builds and applies a batch under it finds its reads still true when the batch
    /// is applied, so the batch's expectations hold instead of conflicting and being built
    /// again. A store one process owns (sled, memory) needs none, since the process's own
    /// locks order its writers: the default holds nothing.
    fn lock_writers(&self) -> Result<WritersLock, StorageError> {
        Ok(WritersLock::none())
    }
}

/// Held while a writer of a shared store reads, builds and applies a batch
/// ([`KvStore::lock_writers`]); dropping it lets the next writer in.
pub struct WritersLock(Option<Box<dyn Send>>);

impl WritersLock {
    /// Nothing held: the store has one process.
    pub fn none() -> Self {
        Self(None)
    }

    /// Held until `guard` is dropped (its `Drop` releases the lock).
    pub fn held(guard: Box<dyn Send>) -> Self {
        Self(Some(guard))
    }

    /// Whether a lock is held.
    pub fn is_held(&self) -> bool {
        self.0.is_some()
    }
}

impl std::fmt::Debug for WritersLock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("WritersLock").field(&self.is_held()).finish()
    }
}
