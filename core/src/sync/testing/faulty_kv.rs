//! A key-value store that fails on command, for testing what sits on top when storage fails.
//!
//! It keeps two maps: `live` (what reads see) and `disk` (what survives a crash). Writes go to
//! `live`; a flush copies `live` to `disk`. [`Fault::Write`] refuses the n-th write (put, delete
//! or batch) and changes nothing, as a full or failing disk would; [`Fault::Flush`] fails the n-th
//! flush as a power cut would: everything written since the last flush is gone from `live` too.

use std::collections::BTreeMap;
use std::sync::{Mutex, MutexGuard};

use crate::storage::{Batch, BatchOp, KeyValue, KvStore, StorageError, page_range, take_page};

pub type Map = BTreeMap<Vec<u8>, Vec<u8>>;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// The n-th write (from 1, counting puts, deletes and batches) fails and changes nothing.
    Write(u64),
    /// The n-th flush (from 1) fails and loses every write since the previous flush.
    Flush(u64),
}

#[derive(Debug, Default)]
struct State {
    live: Map,
    disk: Map,
    writes: u64,
    flushes: u64,
    fault: Option<Fault>,
    tripped: bool,
}

#[derive(Debug, Default)]
pub struct FaultyKv {
    state: Mutex<State>,
}

impl FaultyKv {
    /// A store whose disk (and so what it reads) starts as `disk`.
    pub fn new(disk: Map) -> Self {
        Self { state: Mutex::new(State { live: disk.clone(), disk, ..State::default() }) }
    }

    /// Arms one fault (or none); counting starts again from zero.
    pub fn fail(&self, fault: Option<Fault>) {
        let mut s = self.lock();
        (s.fault, s.tripped, s.writes, s.flushes) = (fault, false, 0, 0);
    }

    /// Whether the armed fault has happened.
    pub fn tripped(&self) -> bool {
        self.lock().tripped
    }

    /// What reads see now.
    pub fn live(&self) -> Map {
        self.lock().live.clone()
    }

    /// What a crash now would leave.
    pub fn disk(&self) -> Map {
        self.lock().disk.clone()
    }

    /// Writes and flushes made since the last [`FaultyKv::fail`].
    pub fn counts(&self) -> (u64, u64) {
        let s = self.lock();
        (s.writes, s.flushes)
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self, apply: impl FnOnce(&mut Map)) -> Result<(), StorageError> {
        let mut s = self.lock();
        s.writes += 1;
        if s.fault == Some(Fault::Write(s.writes)) {
            s.tripped = true;
            return Err(StorageError::Backend("injected write failure".into()));
        }
        apply(&mut s.live);
        Ok(())
    }
}

impl KvStore for FaultyKv {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StorageError> {
        Ok(self.lock().live.get(key).cloned())
    }

    fn put(&self, key: &[u8], value: &[u8]) -> Result<(), StorageError> {
        self.write(|m| {
            m.insert(key.to_vec(), value.to_vec());
        })
    }

    fn delete(&self, key: &[u8]) -> Result<(), StorageError> {
        self.write(|m| {
            m.remove(key);
        })
    }

    fn scan_prefix(&self, prefix: &[u8]) -> Result<Vec<KeyValue>, StorageError> {
        let s = self.lock();
        Ok(s.live
            .range(prefix.to_vec()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect())
    }

    fn scan_page(&self, prefix: &[u8], after: Option<&[u8]>, max_bytes: usize) -> Result<Vec<KeyValue>, StorageError> {
        Ok(take_page(self.lock().live.range(page_range(prefix, after)), prefix, max_bytes))
    }

    fn apply(&self, batch: Batch) -> Result<(), StorageError> {
        self.write(|m| {
            for op in batch.into_ops() {
                match op {
                    BatchOp::Put(k, v) => {
                        m.insert(k, v);
                    }
                    BatchOp::Delete(k) => {
                        m.remove(&k);
                    }
                }
            }
        })
    }

    fn flush(&self) -> Result<(), StorageError> {
        let mut s = self.lock();
        s.flushes += 1;
        if s.fault == Some(Fault::Flush(s.flushes)) {
            s.tripped = true;
            s.live = s.disk.clone();
            return Err(StorageError::Io(std::io::Error::other("injected power cut during flush")));
        }
        s.disk = s.live.clone();
        Ok(())
    }
}
