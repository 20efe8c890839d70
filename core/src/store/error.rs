//! The store's error type.

use crate::id::DocumentId;
use crate::model::{Kind, ModelError};
use crate::storage::StorageError;

/// Errors of the document store. They name documents by id (random, not personal) and never
/// include field values.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error("document {0} not found")]
    NotFound(DocumentId),
    #[error("document {0} already exists")]
    AlreadyExists(DocumentId),
    #[error("document {id} is corrupt on disk: {reason}")]
    Corrupt { id: DocumentId, reason: &'static str },
    #[error("store metadata is unreadable: {0}")]
    BadMeta(&'static str),
    #[error("{0}")]
    Invalid(&'static str),
    /// Submit or unlock asked of a record whose kind does not lock ([`Kind::locks_on_submit`]),
    /// or of a document that is not a liaison record (`kind` is `None`).
    #[error("records of this kind do not lock")]
    NotLockable { id: DocumentId, kind: Option<Kind> },
}
