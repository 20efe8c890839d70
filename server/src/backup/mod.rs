//! Backups and restore.
//!
//! A live backup never stops the relay: writes, and their acknowledgements, go on while the
//! database is copied page by page (bounded in bytes, never the whole database in memory), and
//! a [`tap`] journals every write made meanwhile; replaying the journal over the copy gives the
//! database as it was at one instant, batch by batch. The relay chooses each backup's directory
//! name under the configured backup root.
//!
//! A backup records how far the security [`ledger`](crate::ledger) went. A restore refuses to
//! run without a ledger that continues that one, and carries every ledger entry out again on
//! the restored database, so no revoked token, erased document or purged tenant comes back. It
//! also drops the relay's install bytes, so the restored relay writes under a new actor and never
//! reuses an (actor, seq) pair that devices already hold.

pub mod tap;

use std::path::{Path, PathBuf};

use liaison_core::storage::{Batch, KvStore, SledKv};
use serde::{Deserialize, Serialize};

use crate::ledger::{self, LedgerEntry, LedgerEvent, LedgerMark};

/// The manifest written beside a backup's database.
pub const MANIFEST: &str = "backup.json";
/// The key of the relay's install bytes, the random part of the actor it writes under.
pub const INSTALL_KEY: &[u8] = crate::keys::INSTALL;
/// Bytes of keys and values copied per page (and per batch into the copy).
const PAGE_BYTES: usize = 4 << 20;

#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    #[error("{0} already holds a database; choose an empty directory")]
    NotEmpty(String),
    #[error("{0} holds no liaison backup (no {MANIFEST})")]
    NoSource(String),
    #[error(
        "the security ledger {0} is missing: a restore without it would bring back revoked \
         credentials and erased documents. Give the ledger the relay wrote (`ledger_path`)"
    )]
    LedgerMissing(String),
    #[error(
        "the security ledger does not continue the one this backup was taken with (it had {0} \
         entries); give the ledger of the relay the backup came from"
    )]
    LedgerMismatch(usize),
    #[error("the backup journal is damaged")]
    Journal,
    #[error("the backup's manifest is unreadable: {0}")]
    Manifest(String),
    #[error(transparent)]
    Ledger(#[from] ledger::LedgerError),
    #[error(transparent)]
    Storage(#[from] liaison_core::storage::StorageError),
    /// A ledger entry that a restore could not carry out again.
    #[error("cannot carry out a ledger entry again: {0}")]
    Reapply(#[source] Box<crate::error::MaintenanceError>),
    #[error("the ledger's entry {0:?} names no document id")]
    NotADocumentId(String),
    #[error("backup I/O failed: {0}")]
    Io(#[from] std::io::Error),
    #[error(
        "this relay stores its data in PostgreSQL: back it up and restore it with PostgreSQL's tools \
         (pg_dump and pg_restore, or pg_basebackup), as the operator guide describes"
    )]
    OnPostgres,
}

/// The relay's own backups copy a sled database; on PostgreSQL, PostgreSQL's tools do it.
pub fn supported(backend: crate::config::Backend) -> Result<(), BackupError> {
    match backend {
        crate::config::Backend::Sled => Ok(()),
        crate::config::Backend::Postgres => Err(BackupError::OnPostgres),
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    pub format: u32,
    pub made_at_ms: i64,
    /// Entries in the backup's database.
    pub entries: u64,
    /// How far the security ledger went when the copy began.
    pub ledger: LedgerMark,
}

/// Creates a new directory under `root` named by the relay (`{what}-{UTC time}-{random}`),
/// readable by the relay's user only; returns its name and path.
pub fn fresh_dir(root: &Path, what: &str, now_ms: i64) -> Result<(String, PathBuf), BackupError> {
    std::fs::create_dir_all(root)?;
    let stamp = utc_stamp(now_ms);
    let suffix: String = crate::auth::random_bytes::<3>().iter().map(|b| format!("{b:02x}")).collect();
    let name = format!("{what}-{stamp}-{suffix}");
    let path = root.join(&name);
    use std::os::unix::fs::DirBuilderExt as _;
    std::fs::DirBuilder::new().mode(0o700).create(&path)?;
    Ok((name, path))
}

/// `YYYYMMDDTHHMMSSZ` for a time in milliseconds since the epoch.
fn utc_stamp(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}{m:02}{d:02}T{:02}{:02}{:02}Z", rem / 3600, rem % 3600 / 60, rem % 60)
}

/// A backup of a serving relay's database into `dest` (a fresh directory, see [`fresh_dir`]):
/// writes go on meanwhile. `between_pages` runs after each page copied (tests write there).
pub fn backup_live(
    kv: &tap::TappedKv,
    ledger: &ledger::Ledger,
    dest: &Path,
    now_ms: i64,
    between_pages: &mut dyn FnMut(),
) -> Result<Manifest, BackupError> {
    let mark = ledger.mark()?;
    let db_dir = dest.join("db");
    if db_dir.exists() {
        return Err(BackupError::NotEmpty(dest.display().to_string()));
    }
    let copy = SledKv::open(&db_dir)?;
    let journal_path = dest.join("journal");
    use std::os::unix::fs::OpenOptionsExt as _;
    let journal = std::fs::OpenOptions::new().create_new(true).write(true).mode(0o600).open(&journal_path)?;
    kv.start(journal)?;
    let copied = copy_pages(kv.inner().as_ref(), &copy, between_pages);
    // Stop the tap whatever happened to the copy: it must not outlive its backup.
    let stopped = kv.stop();
    copied?;
    stopped?;
    tap::replay(&journal_path, &copy)?;
    std::fs::remove_file(&journal_path)?;
    finish(copy, dest, mark, now_ms)
}

/// A backup of a stopped relay's database (the admin CLI).
pub fn backup_stopped(
    src: &dyn KvStore,
    ledger_path: &Path,
    dest: &Path,
    now_ms: i64,
) -> Result<Manifest, BackupError> {
    let entries = match ledger::read(ledger_path) {
        Ok(e) => e,
        Err(ledger::LedgerError::Read { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(e.into()),
    };
    let mark = ledger::mark_of(&entries, entries.len());
    let db_dir = dest.join("db");
    if db_dir.exists() || dest.join(MANIFEST).exists() {
        return Err(BackupError::NotEmpty(dest.display().to_string()));
    }
    std::fs::create_dir_all(dest)?;
    let copy = SledKv::open(&db_dir)?;
    copy_pages(src, &copy, &mut || {})?;
    finish(copy, dest, mark, now_ms)
}

fn finish(copy: SledKv, dest: &Path, ledger: LedgerMark, now_ms: i64) -> Result<Manifest, BackupError> {
    copy.flush()?;
    let entries = copy.scan_keys(b"")?.len() as u64;
    drop(copy);
    let manifest = Manifest { format: 1, made_at_ms: now_ms, entries, ledger };
    let text = serde_json::to_vec_pretty(&manifest).map_err(|e| BackupError::Manifest(e.to_string()))?;
    std::fs::write(dest.join(MANIFEST), text)?;
    restrict(dest)?;
    Ok(manifest)
}

/// Copies every entry of `src` into `dest`, a page at a time.
fn copy_pages(src: &dyn KvStore, dest: &dyn KvStore, between_pages: &mut dyn FnMut()) -> Result<u64, BackupError> {
    let mut after: Option<Vec<u8>> = None;
    let mut count = 0u64;
    loop {
        let page = src.scan_page(b"", after.as_deref(), PAGE_BYTES)?;
        let Some((last, _)) = page.last() else { break };
        after = Some(last.clone());
        count += page.len() as u64;
        let mut batch = Batch::new();
        for (k, v) in page {
            batch.put(k, v);
        }
        dest.apply(batch)?;
        between_pages();
    }
    Ok(count)
}

/// Directories 0700 and files 0600 under `dir`: records of every tenant are inside.
pub fn restrict(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        if entry.file_type()?.is_dir() {
            restrict(&entry.path())?;
        } else {
            std::fs::set_permissions(entry.path(), std::fs::Permissions::from_mode(0o600))?;
        }
    }
    Ok(())
}

/// The manifest of the backup in `backup_dir`.
pub fn read_manifest(backup_dir: &Path) -> Result<Manifest, BackupError> {
    let text = std::fs::read(backup_dir.join(MANIFEST))
        .map_err(|_| BackupError::NoSource(backup_dir.display().to_string()))?;
    serde_json::from_slice(&text).map_err(|e| BackupError::Manifest(e.to_string()))
}

/// First step of a restore: checks the ledger against the backup and copies the backup's
/// database into `data_dir` (which must hold none), without the relay's install bytes. Returns
/// the ledger's entries, which [`reapply`] must then carry out on the opened data.
pub fn restore_database(
    backup_dir: &Path,
    data_dir: &Path,
    ledger_path: &Path,
) -> Result<Vec<LedgerEntry>, BackupError> {
    let manifest = read_manifest(backup_dir)?;
    let entries = match ledger::read(ledger_path) {
        Ok(e) => e,
        Err(ledger::LedgerError::Read { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
            return Err(BackupError::LedgerMissing(ledger_path.display().to_string()));
        }
        Err(e) => return Err(e.into()),
    };
    if entries.len() < manifest.ledger.entries || ledger::mark_of(&entries, manifest.ledger.entries) != manifest.ledger
    {
        return Err(BackupError::LedgerMismatch(manifest.ledger.entries));
    }
    let db_dir = data_dir.join("db");
    if db_dir.exists() {
        return Err(BackupError::NotEmpty(data_dir.display().to_string()));
    }
    std::fs::create_dir_all(data_dir)?;
    let src = SledKv::open(&backup_dir.join("db"))?;
    let dest = SledKv::open(&db_dir)?;
    copy_pages(&src, &dest, &mut || {})?;
    // A new install: the restored relay must not write under the actor of the one backed up.
    dest.delete(INSTALL_KEY)?;
    dest.flush()?;
    drop(dest);
    restrict(data_dir)?;
    Ok(entries)
}

/// Second step of a restore: carries every ledger entry out again (each is idempotent).
pub fn reapply(
    store: &liaison_core::DocStore,
    auth: &crate::auth::AuthStore,
    entries: &[LedgerEntry],
) -> Result<usize, BackupError> {
    for e in entries {
        match &e.event {
            LedgerEvent::TokenRevoked { token } => match auth.revoke_token(token, e.at_ms) {
                Ok(_) | Err(crate::auth::AuthError::NotFound(_)) => {}
                Err(err) => return Err(reapply_failed(err)),
            },
            LedgerEvent::DocumentErased { document } => {
                let doc = document.parse().map_err(|_| BackupError::NotADocumentId(document.clone()))?;
                crate::erasure::erase_stored(store, &doc, e.at_ms).map_err(reapply_failed)?;
            }
            LedgerEvent::SupportGrantRevoked { tenant, grant } => {
                auth.revoke_support_grant_again(tenant, grant, e.at_ms).map_err(reapply_failed)?;
            }
            LedgerEvent::TenantPurged { tenant } => {
                crate::erasure::purge_stored(store, auth, tenant, e.at_ms).map_err(reapply_failed)?;
            }
        }
    }
    Ok(entries.len())
}

fn reapply_failed(e: impl Into<crate::error::MaintenanceError>) -> BackupError {
    BackupError::Reapply(Box::new(e.into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamps_are_utc() {
        assert_eq!(utc_stamp(0), "19700101T000000Z");
        // 2026-11-29 19:16:15 UTC
        assert_eq!(utc_stamp(1_795_979_775_000), "20261129T191615Z");
    }
}
