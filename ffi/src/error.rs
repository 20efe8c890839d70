//! The one error type the apps see. Flat: Kotlin and Swift get one exception/case per variant with
//! a message; the messages come from core's errors, which name documents by their random id and
//! fields by name, never values, tokens or personal data.

use liaison_core::StoreError;
use liaison_core::client::ClientError;
use liaison_core::model::ModelError;
use liaison_core::storage::StorageError;

#[derive(Debug, thiserror::Error, uniffi::Error)]
#[uniffi(flat_error)]
pub enum LiaisonError {
    /// No document with this id on the device.
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    AlreadyExists(String),
    /// The record is submitted; an admin must unlock it first.
    #[error("{0}")]
    Locked(String),
    /// The user's role does not allow this.
    #[error("{0}")]
    NotPermitted(String),
    /// An argument is malformed (an id, an index, a URL, a certificate, a version).
    #[error("{0}")]
    InvalidInput(String),
    /// An update's base version is not one this device has for the record (it was read from
    /// another record, or the changes it names were discarded). Read the record again
    /// (`get_*`), re-apply the user's edit to it and save with the new version.
    #[error("{0}")]
    StaleVersion(String),
    /// The document is not the kind asked for, or not a liaison record at all.
    #[error("{0}")]
    WrongKind(String),
    /// The record was written by a newer version of the app (a newer schema): kept and synced
    /// as it is, readable once the app is updated. `SyncStatus.needs_newer_app` counts them.
    #[error("{0}")]
    NeedsNewerApp(String),
    /// The phone's storage is full: the edit was not saved, and nothing stored was lost.
    #[error("storage is full: the change was not saved")]
    StorageFull,
    /// Another process (or another open store) holds the data directory.
    #[error("the data directory is in use by another process")]
    StoreInUse,
    /// A document (or the store) is damaged on disk; other documents stay readable.
    #[error("{0}")]
    Corrupt(String),
    /// Any other storage failure.
    #[error("{0}")]
    Storage(String),
    /// Sync is not running, or cannot start.
    #[error("{0}")]
    Sync(String),
    /// A wait ran out of time.
    #[error("timed out after {0} ms")]
    Timeout(i64),
    /// The store was closed.
    #[error("the store is closed")]
    Closed,
    /// The user signed out: the store's files are gone; open a new store to sign in again.
    #[error("signed out: this store was erased; open a new one")]
    SignedOut,
}

impl From<StoreError> for LiaisonError {
    fn from(e: StoreError) -> Self {
        let msg = e.to_string();
        match e {
            StoreError::NotFound(_) => Self::NotFound(msg),
            StoreError::AlreadyExists(_) => Self::AlreadyExists(msg),
            StoreError::Corrupt { .. } | StoreError::BadMeta(_) => Self::Corrupt(msg),
            StoreError::Invalid(_) => Self::InvalidInput(msg),
            StoreError::NotLockable { .. } => Self::WrongKind(msg),
            StoreError::Storage(StorageError::Full) => Self::StorageFull,
            StoreError::Storage(StorageError::InUse) => Self::StoreInUse,
            StoreError::Storage(StorageError::Corrupt) => Self::Corrupt(msg),
            StoreError::Storage(_) => Self::Storage(msg),
            StoreError::Model(m) => m.into(),
        }
    }
}

impl From<ModelError> for LiaisonError {
    fn from(e: ModelError) -> Self {
        let msg = e.to_string();
        match e {
            ModelError::Locked => Self::Locked(msg),
            ModelError::NotPermitted(_) => Self::NotPermitted(msg),
            ModelError::Invalid { .. } => Self::InvalidInput(msg),
            ModelError::UnknownVersion => Self::StaleVersion(msg),
            ModelError::WrongKind { .. } | ModelError::NotLiaison(_) => Self::WrongKind(msg),
            ModelError::UnsupportedSchema(_) => Self::NeedsNewerApp(msg),
            ModelError::Hydrate(_) | ModelError::Reconcile(_) | ModelError::Automerge(_) => Self::Corrupt(msg),
        }
    }
}

impl From<ClientError> for LiaisonError {
    fn from(e: ClientError) -> Self {
        match e {
            ClientError::Store(s) => s.into(),
            ClientError::BadUrl | ClientError::BadCertificate => Self::InvalidInput(e.to_string()),
            ClientError::Connect(_) | ClientError::Retired | ClientError::Revoked => Self::Sync(e.to_string()),
        }
    }
}

impl From<automerge::AutomergeError> for LiaisonError {
    fn from(e: automerge::AutomergeError) -> Self {
        ModelError::from(e).into()
    }
}

pub(crate) fn bad_id(what: &str) -> LiaisonError {
    LiaisonError::InvalidInput(format!("{what} is not a document id"))
}

/// What an app's callback (observer, log sink, credential provider) may throw. Whatever the
/// app throws arrives as this (uniffi converts unexpected exceptions through the `From` below)
/// instead of a panic on the library's thread: the library reports it in its log, without the
/// exception's text (it may hold anything), and goes on calling.
#[derive(Debug, thiserror::Error, uniffi::Error)]
pub enum CallbackError {
    /// The callback threw.
    #[error("the app's callback threw")]
    Failed,
}

impl From<uniffi::UnexpectedUniFFICallbackError> for CallbackError {
    fn from(_: uniffi::UnexpectedUniFFICallbackError) -> Self {
        CallbackError::Failed
    }
}
