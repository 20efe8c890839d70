//! Backups: a copy of every key of the relay's store into a fresh sled database.
//!
//! While serving, the relay's actor holds new storage tasks and waits for running ones before
//! copying, so the copy is a consistent snapshot (every batch either in it or not).

use std::path::Path;

use liaison_core::storage::{Batch, KvStore, SledKv};

#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    #[error("the backup destination {0} already holds a database; choose an empty directory")]
    NotEmpty(String),
    #[error("the backup source {0} holds no relay database")]
    NoSource(String),
    #[error(transparent)]
    Storage(#[from] liaison_core::storage::StorageError),
    #[error("cannot create the destination: {0}")]
    Io(#[from] std::io::Error),
}

/// Copies every entry of `src` into a new database under `dest_dir/db`; returns the count.
pub fn copy_to(src: &dyn KvStore, dest_dir: &Path) -> Result<u64, BackupError> {
    let db_dir = dest_dir.join("db");
    if db_dir.exists() {
        return Err(BackupError::NotEmpty(dest_dir.display().to_string()));
    }
    std::fs::create_dir_all(dest_dir)?;
    let dest = SledKv::open(&db_dir)?;
    let mut count = 0u64;
    let mut batch = Batch::new();
    for (k, v) in src.scan_prefix(b"")? {
        batch.put(k, v);
        count += 1;
        if batch.len() >= 1000 {
            dest.apply(std::mem::take(&mut batch))?;
        }
    }
    dest.apply(batch)?;
    dest.flush()?;
    Ok(count)
}

/// Restores a backup made by [`copy_to`] into `data_dir` (which must hold no database).
pub fn restore(backup_dir: &Path, data_dir: &Path) -> Result<u64, BackupError> {
    if !backup_dir.join("db").exists() {
        return Err(BackupError::NoSource(backup_dir.display().to_string()));
    }
    let src = SledKv::open(&backup_dir.join("db"))?;
    copy_to(&src, data_dir)
}
