//! The store's error type.

use crate::id::DocumentId;
use crate::model::{Kind, ModelError};
use crate::storage::StorageError;

/// Errors of the document store. They name documents by id (random, not personal) and never
/// include field values.
///
/// When a write fails, the change feed is not told, and the documents it was editing are dropped
/// from memory and reloaded from disk on their next use.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The key-value backend failed (see [`StorageError`]). If the flush after a write's batch
    /// failed, the batch is applied (later reads see it) but may not survive a crash.
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// A rule of the record model refused the operation or the document does not fit it: for
    /// example an edit of a submitted record ([`ModelError::Locked`]), an action the caller's
    /// role may not take ([`ModelError::NotPermitted`]), a record read as the wrong type
    /// ([`ModelError::WrongKind`]), a document that is not a liaison record, or a failed
    /// Automerge operation.
    #[error(transparent)]
    Model(#[from] ModelError),
    /// No document with this id is stored: never created or received here, or deleted.
    #[error("document {0} not found")]
    NotFound(DocumentId),
    /// [`DocStore::create_with`](super::DocStore::create_with) was given an id that is already
    /// stored.
    #[error("document {0} already exists")]
    AlreadyExists(DocumentId),
    /// A stored document does not read back: a chunk fails its checksum, is truncated or has an
    /// unknown format, its metadata does not decode, or its chunks do not load as Automerge (in
    /// [`DocStore::append_sync_batch`](super::DocStore::append_sync_batch), together with the
    /// received changes, so there bad input also lands here). Only this document is affected.
    #[error("document {id} is corrupt on disk: {reason}")]
    Corrupt {
        /// The damaged document.
        id: DocumentId,
        /// Which check failed (fixed text, never stored data).
        reason: &'static str,
    },
    /// Store-wide metadata is unreadable; the text names the entry. Today only the install id
    /// (`!install`), when it is not 8 bytes, on [`DocStore::with_kv`](super::DocStore::with_kv).
    #[error("store metadata is unreadable: {0}")]
    BadMeta(&'static str),
    /// The input was refused; the text says why: received bytes or changes that do not load as
    /// Automerge ([`DocStore::merge_remote`](super::DocStore::merge_remote),
    /// [`DocStore::apply_sync_changes`](super::DocStore::apply_sync_changes)), or a merge of a
    /// KOL profile already merged into another ([`DocStore::merge_kols`](super::DocStore::merge_kols)).
    #[error("{0}")]
    Invalid(&'static str),
    /// Submit or unlock asked of a record whose kind does not lock ([`Kind::locks_on_submit`]),
    /// or of a document that is not a liaison record (`kind` is `None`).
    #[error("records of this kind do not lock")]
    NotLockable {
        /// The document asked about.
        id: DocumentId,
        /// Its kind; `None` if it is not a liaison record.
        kind: Option<Kind>,
    },
}

impl StoreError {
    /// Another writer of a shared store ([`StoreOptions::shared`](super::StoreOptions::shared))
    /// changed a document this write was built on: nothing was written; read and try again.
    pub fn is_conflict(&self) -> bool {
        matches!(self, StoreError::Storage(StorageError::Conflict))
    }
}
