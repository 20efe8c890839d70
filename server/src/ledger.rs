//! The security ledger: an append-only file of the revocations, erasures and purges the relay has
//! carried out, kept apart from the database so that restoring a backup can carry them out again.
//!
//! A backup is the database as it was; everything revoked or erased after it would come back with
//! it (a lost phone's token, a KOL's erased record). Each such act is written here, durably,
//! *before* it is carried out, so the ledger never misses one that happened. Carrying an entry out
//! again is harmless (a revoked token stays revoked, an erased id stays tombstoned), so a restore
//! re-applies the whole ledger. A backup records how long the ledger was and a digest of it; a
//! restore refuses a ledger that does not continue that one (see [`crate::backup`]).
//!
//! Format: one JSON object per line. A last line without its newline is an append a crash cut
//! short; its act was never carried out: reading ignores it and opening cuts it off.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    #[error("cannot write the security ledger {path}: {source}")]
    Write { path: String, source: std::io::Error },
    #[error("cannot read the security ledger {path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("the security ledger {path} is damaged at line {line}")]
    Damaged { path: String, line: usize },
}

/// One act the relay carried out that a restore must not undo.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case", deny_unknown_fields)]
pub enum LedgerEvent {
    TokenRevoked { token: String },
    DocumentErased { document: String },
    TenantPurged { tenant: String },
    SupportGrantRevoked { tenant: String, grant: String },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LedgerEntry {
    pub at_ms: i64,
    #[serde(flatten)]
    pub event: LedgerEvent,
}

/// How far a ledger went: its number of entries and the SHA-256 of those lines.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LedgerMark {
    pub entries: usize,
    pub sha256: String,
}

/// The ledger of a running relay.
#[derive(Debug)]
pub struct Ledger {
    path: PathBuf,
    file: Mutex<std::fs::File>,
}

impl Ledger {
    /// Opens the ledger for appending, creating it (readable by the relay's user only).
    pub fn open(path: &Path) -> Result<Self, LedgerError> {
        let write_err = |source| LedgerError::Write { path: path.display().to_string(), source };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(write_err)?;
        }
        use std::os::unix::fs::OpenOptionsExt as _;
        let file = std::fs::OpenOptions::new().create(true).append(true).mode(0o600).open(path).map_err(write_err)?;
        // A line a crash cut short (its act never happened) would run into the next append:
        // cut it off.
        let text = std::fs::read(path).map_err(write_err)?;
        if text.last().is_some_and(|b| *b != b'\n') {
            let keep = text.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
            file.set_len(keep as u64).and_then(|()| file.sync_data()).map_err(write_err)?;
        }
        Ok(Self { path: path.to_owned(), file: Mutex::new(file) })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Writes `event` durably; call before carrying it out.
    pub fn append(&self, at_ms: i64, event: LedgerEvent) -> Result<(), LedgerError> {
        let line = serde_json::to_vec(&LedgerEntry { at_ms, event }).map_err(|e| LedgerError::Write {
            path: self.path.display().to_string(),
            source: std::io::Error::other(e),
        })?;
        self.write_line(&line)
    }

    fn write_line(&self, line: &[u8]) -> Result<(), LedgerError> {
        let mut file = self.file.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut buf = line.to_vec();
        buf.push(b'\n');
        file.write_all(&buf)
            .and_then(|()| file.sync_data())
            .map_err(|source| LedgerError::Write { path: self.path.display().to_string(), source })
    }

    /// How far the ledger goes now.
    pub fn mark(&self) -> Result<LedgerMark, LedgerError> {
        let _held = self.file.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let entries = read(&self.path)?;
        Ok(mark_of(&entries, entries.len()))
    }
}

/// Every complete entry of the ledger at `path`, in order (blank lines skipped).
pub fn read(path: &Path) -> Result<Vec<LedgerEntry>, LedgerError> {
    let text = std::fs::read(path).map_err(|source| LedgerError::Read { path: path.display().to_string(), source })?;
    let complete = match text.iter().rposition(|b| *b == b'\n') {
        Some(end) => &text[..=end],
        None => &[][..],
    };
    let mut out = Vec::new();
    for (i, line) in complete.split(|b| *b == b'\n').enumerate() {
        if line.is_empty() {
            continue;
        }
        let entry = serde_json::from_slice(line)
            .map_err(|_| LedgerError::Damaged { path: path.display().to_string(), line: i + 1 })?;
        out.push(entry);
    }
    Ok(out)
}

/// The mark of the first `n` entries (their canonical lines hashed in order).
pub fn mark_of(entries: &[LedgerEntry], n: usize) -> LedgerMark {
    let mut h = Sha256::new();
    for e in entries.iter().take(n) {
        h.update(serde_json::to_vec(e).unwrap_or_default());
        h.update(b"\n");
    }
    let sha256 = h.finalize().iter().map(|b| format!("{b:02x}")).collect();
    LedgerMark { entries: n.min(entries.len()), sha256 }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_survive_reopen_and_a_torn_last_line_is_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ledger.jsonl");
        let l = Ledger::open(&path).unwrap();
        l.append(1, LedgerEvent::TokenRevoked { token: "t1".into() }).unwrap();
        l.append(2, LedgerEvent::DocumentErased { document: "d1".into() }).unwrap();
        let before = l.mark().unwrap();
        drop(l);
        // A crash in the middle of an append.
        std::fs::OpenOptions::new().append(true).open(&path).unwrap().write_all(b"{\"at_ms\":3,\"ev").unwrap();
        assert_eq!(read(&path).unwrap().len(), 2);
        let l = Ledger::open(&path).unwrap();
        assert_eq!(l.mark().unwrap(), before, "the torn line is not an entry");
        l.append(4, LedgerEvent::TenantPurged { tenant: "pharma-b".into() }).unwrap();
        let all = read(&path).unwrap();
        assert_eq!(all.len(), 3);
        assert_eq!(all[2].event, LedgerEvent::TenantPurged { tenant: "pharma-b".into() });
        assert_eq!(mark_of(&all, 2), before, "a longer ledger continues the shorter one");
        use std::os::unix::fs::PermissionsExt as _;
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
    }

    #[test]
    fn a_damaged_line_is_reported_not_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ledger.jsonl");
        std::fs::write(&path, "{\"at_ms\":1,\"event\":\"token_revoked\",\"token\":\"a\"}\nnot json\n").unwrap();
        assert!(matches!(read(&path), Err(LedgerError::Damaged { line: 2, .. })));
    }
}
