//! A tap on the relay's key-value store: while a backup copies the database, every write the
//! relay makes is also appended, in order, to a journal file, so writes (and acknowledgements)
//! go on during the copy and the copy is made consistent afterwards by replaying the journal.
//!
//! Each write and its journal record happen under one lock, so every batch is either seen by
//! the copy's scan as it was before the tap started or is in the journal; replaying the journal
//! over the scanned copy gives the database as it was when the tap stopped, batch by batch. The
//! journal is on disk (in the backup's directory), so a busy relay's memory does not grow.

use std::io::{BufWriter, Write as _};
use std::sync::{Arc, Mutex};

use liaison_core::storage::{Batch, BatchOp, KeyValue, KvStore, StorageError, WritersLock};

use super::BackupError;

/// The store the relay writes through.
#[derive(Debug)]
pub struct TappedKv {
    inner: Arc<dyn KvStore>,
    tap: Mutex<Option<Journal>>,
}

#[derive(Debug)]
struct Journal {
    out: BufWriter<std::fs::File>,
    /// The first write error; the backup that owns the tap fails with it.
    failed: Option<std::io::Error>,
}

impl TappedKv {
    pub fn new(inner: Arc<dyn KvStore>) -> Self {
        Self { inner, tap: Mutex::new(None) }
    }

    pub fn inner(&self) -> &Arc<dyn KvStore> {
        &self.inner
    }

    /// Starts journaling every write into `file`; fails if a tap is already on.
    pub fn start(&self, file: std::fs::File) -> Result<(), StorageError> {
        let mut tap = self.lock();
        if tap.is_some() {
            return Err(StorageError::Backend("a backup is already journaling writes".into()));
        }
        *tap = Some(Journal { out: BufWriter::new(file), failed: None });
        Ok(())
    }

    /// Stops journaling; the journal is complete up to this point.
    pub fn stop(&self) -> Result<(), std::io::Error> {
        let Some(mut j) = self.lock().take() else { return Ok(()) };
        if let Some(e) = j.failed.take() {
            return Err(e);
        }
        j.out.flush()?;
        j.out.get_ref().sync_data()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Journal>> {
        self.tap.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Runs a write and, if it succeeded and a tap is on, journals it, under the tap's lock.
    fn write(&self, ops: &[BatchOp], run: impl FnOnce() -> Result<(), StorageError>) -> Result<(), StorageError> {
        let mut tap = self.lock();
        run()?;
        if let Some(j) = tap.as_mut().filter(|j| j.failed.is_none())
            && let Err(e) = encode(ops, &mut j.out)
        {
            // The live write stands; only the backup fails.
            j.failed = Some(e);
        }
        Ok(())
    }
}

impl KvStore for TappedKv {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StorageError> {
        self.inner.get(key)
    }
    fn put(&self, key: &[u8], value: &[u8]) -> Result<(), StorageError> {
        self.write(&[BatchOp::Put(key.to_vec(), value.to_vec())], || self.inner.put(key, value))
    }
    fn delete(&self, key: &[u8]) -> Result<(), StorageError> {
        self.write(&[BatchOp::Delete(key.to_vec())], || self.inner.delete(key))
    }
    fn scan_prefix(&self, prefix: &[u8]) -> Result<Vec<KeyValue>, StorageError> {
        self.inner.scan_prefix(prefix)
    }
    fn scan_keys(&self, prefix: &[u8]) -> Result<Vec<Vec<u8>>, StorageError> {
        self.inner.scan_keys(prefix)
    }
    fn scan_page(&self, prefix: &[u8], after: Option<&[u8]>, max_bytes: usize) -> Result<Vec<KeyValue>, StorageError> {
        self.inner.scan_page(prefix, after, max_bytes)
    }
    fn apply(&self, batch: Batch) -> Result<(), StorageError> {
        let ops = batch.ops().to_vec();
        self.write(&ops, || self.inner.apply(batch))
    }
    fn lock_writers(&self) -> Result<WritersLock, StorageError> {
        self.inner.lock_writers()
    }
    fn flush(&self) -> Result<(), StorageError> {
        self.inner.flush()
    }
}

/// A batch as a journal record: `u32` count, then per op a tag (1 put, 2 delete) and
/// length-prefixed (`u32`) key and value.
fn encode(ops: &[BatchOp], out: &mut impl std::io::Write) -> std::io::Result<()> {
    out.write_all(&(ops.len() as u32).to_le_bytes())?;
    for op in ops {
        let (tag, k, v): (u8, &[u8], &[u8]) = match op {
            BatchOp::Put(k, v) => (1, k, v),
            BatchOp::Delete(k) => (2, k, &[]),
        };
        out.write_all(&[tag])?;
        for part in [k, v] {
            out.write_all(&(part.len() as u32).to_le_bytes())?;
            out.write_all(part)?;
        }
    }
    Ok(())
}

/// Replays a journal into `dest`, one batch per record, in order; returns the records replayed.
pub fn replay(journal: &std::path::Path, dest: &dyn KvStore) -> Result<u64, BackupError> {
    use std::io::Read as _;
    let mut r = std::io::BufReader::new(std::fs::File::open(journal)?);
    let mut records = 0;
    loop {
        let mut count = [0u8; 4];
        match r.read_exact(&mut count) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(records),
            Err(e) => return Err(e.into()),
        }
        let mut batch = Batch::new();
        for _ in 0..u32::from_le_bytes(count) {
            let mut tag = [0u8; 1];
            r.read_exact(&mut tag).map_err(|_| BackupError::Journal)?;
            let k = read_part(&mut r)?;
            let v = read_part(&mut r)?;
            match tag[0] {
                1 => batch.put(k, v),
                2 => batch.delete(k),
                _ => return Err(BackupError::Journal),
            };
        }
        dest.apply(batch)?;
        records += 1;
    }
}

fn read_part(r: &mut impl std::io::Read) -> Result<Vec<u8>, BackupError> {
    use std::io::Read as _;
    let mut len = [0u8; 4];
    r.read_exact(&mut len).map_err(|_| BackupError::Journal)?;
    let mut buf = Vec::new();
    // `take` bounds the read by the bytes really there, whatever the length says.
    r.take(u64::from(u32::from_le_bytes(len))).read_to_end(&mut buf)?;
    if buf.len() != u32::from_le_bytes(len) as usize {
        return Err(BackupError::Journal);
    }
    Ok(buf)
}
