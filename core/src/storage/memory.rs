use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use super::{Batch, BatchOp, KeyValue, KvStore, StorageError, check_expectations, page_range, take_page};

/// An in-memory store: tests, simulations, and ephemeral peers.
///
/// [`MemoryKv::set_full`] makes every write fail as a full disk would, so the layers above can be
/// tested for losing nothing when storage refuses a write.
///
/// Nothing survives the process: [`KvStore::flush`] does nothing. Writes are visible to reads as
/// soon as they return, and a batch is applied under one lock, so readers never see half of it.
#[derive(Debug, Default)]
pub struct MemoryKv {
    map: Mutex<BTreeMap<Vec<u8>, Vec<u8>>>,
    full: AtomicBool,
}

impl MemoryKv {
    /// An empty store that accepts writes.
    pub fn new() -> Self {
        Self::default()
    }

    /// While `full` is true, writes fail with [`StorageError::Full`] and change nothing.
    pub fn set_full(&self, full: bool) {
        self.full.store(full, Ordering::SeqCst);
    }

    fn map(&self) -> std::sync::MutexGuard<'_, BTreeMap<Vec<u8>, Vec<u8>>> {
        // A poisoned lock only means another thread panicked mid-call; the map is still whole
        // because every mutation below is a single insert/remove or a prepared batch.
        self.map.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn check_space(&self) -> Result<(), StorageError> {
        if self.full.load(Ordering::SeqCst) { Err(StorageError::Full) } else { Ok(()) }
    }
}

impl KvStore for MemoryKv {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StorageError> {
        Ok(self.map().get(key).cloned())
    }

    fn put(&self, key: &[u8], value: &[u8]) -> Result<(), StorageError> {
        self.check_space()?;
        self.map().insert(key.to_vec(), value.to_vec());
        Ok(())
    }

    fn delete(&self, key: &[u8]) -> Result<(), StorageError> {
        self.check_space()?;
        self.map().remove(key);
        Ok(())
    }

    fn scan_prefix(&self, prefix: &[u8]) -> Result<Vec<KeyValue>, StorageError> {
        Ok(self
            .map()
            .range(prefix.to_vec()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect())
    }

    fn scan_page(&self, prefix: &[u8], after: Option<&[u8]>, max_bytes: usize) -> Result<Vec<KeyValue>, StorageError> {
        Ok(take_page(self.map().range(page_range(prefix, after)), prefix, max_bytes))
    }

    fn apply(&self, batch: Batch) -> Result<(), StorageError> {
        self.check_space()?;
        let mut map = self.map();
        check_expectations(&batch, |key| Ok(map.get(key).cloned()))?;
        for op in batch.into_ops() {
            match op {
                BatchOp::Put(k, v) => {
                    map.insert(k, v);
                }
                BatchOp::Delete(k) => {
                    map.remove(&k);
                }
            }
        }
        Ok(())
    }

    fn flush(&self) -> Result<(), StorageError> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    kv_conformance!(MemoryKv::new());

    #[test]
    fn full_store_refuses_writes_and_keeps_old_data() {
        let kv = MemoryKv::new();
        kv.put(b"a", b"1").unwrap();
        kv.set_full(true);
        assert!(matches!(kv.put(b"a", b"2"), Err(StorageError::Full)));
        let mut b = Batch::new();
        b.put(b"b".to_vec(), b"x".to_vec());
        assert!(matches!(kv.apply(b), Err(StorageError::Full)));
        assert_eq!(kv.get(b"a").unwrap(), Some(b"1".to_vec()));
        assert_eq!(kv.get(b"b").unwrap(), None);
    }
}
