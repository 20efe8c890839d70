//! The engine's vocabulary: ids, inputs, outputs, events, storage tasks.

use automerge::ChangeHash;

use super::{PeerInfo, Refusal};
use crate::DocumentId;
use crate::sync::wire::{PeerId, StorageId};

/// A connection, numbered by the driver.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnId(pub u64);

/// A storage task, numbered by the engine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TaskId(pub u64);

/// Which side of the handshake we are on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// We dialled: we send `join` (a device connecting to the relay).
    Initiator,
    /// We accepted: we wait for `join` (the relay).
    Receiver,
}

/// A storage task for the driver. Results come back as [`StorageResult`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StorageTask {
    /// Load a document and the sync states kept for it.
    Load { doc: DocumentId },
    /// Append changes (`save_after` output) and sync states, in one atomic, flushed batch.
    Append { doc: DocumentId, changes: Vec<u8>, heads: Vec<ChangeHash>, sync_states: Vec<(StorageId, Vec<u8>)> },
    /// Store sync states only.
    SaveSyncStates { doc: DocumentId, sync_states: Vec<(StorageId, Vec<u8>)> },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StorageResult {
    /// `data` is `None` when the document is not stored.
    Loaded {
        data: Option<Vec<u8>>,
        sync_states: Vec<(StorageId, Vec<u8>)>,
    },
    Stored,
    /// The task failed; the message must not contain personal data.
    Failed(String),
}

/// Why the engine closes a connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CloseReason {
    Malformed(String),
    FrameTooLarge,
    /// A sync message's changes would inflate past `max_inflated_bytes`.
    ChangesTooLarge,
    /// automerge panicked on the peer's changes (caught; only this connection fails).
    Crashed,
    ProtocolViolation(&'static str),
    UnsupportedVersion,
    HandshakeTimeout,
    TooManyDocuments,
    Rejected(String),
    PeerError(String),
    PeerLeft,
    ByApplication(String),
}

/// Events for the application.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    PeerReady {
        peer: PeerInfo,
    },
    PeerGone {
        conn: ConnId,
        peer_id: Option<PeerId>,
    },
    /// Changes from a peer were applied and stored.
    DocChanged {
        doc: DocumentId,
        heads: Vec<ChangeHash>,
    },
    /// The heads a peer has told us it has (for "acknowledged by the relay" status).
    PeerHeads {
        conn: ConnId,
        doc: DocumentId,
        heads: Vec<ChangeHash>,
    },
    /// Every connected peer said it does not have the document (or we may not see it).
    DocUnavailable {
        doc: DocumentId,
    },
    /// We refused changes from a peer. `changes[i]` holds the raw bytes of the change
    /// `refused[i]` names, to quarantine under its hash.
    Refused {
        conn: ConnId,
        doc: DocumentId,
        refused: Vec<(ChangeHash, Refusal)>,
        changes: Vec<Vec<u8>>,
    },
    /// A peer refused changes we sent.
    RefusedByPeer {
        conn: ConnId,
        doc: DocumentId,
        hashes: Vec<ChangeHash>,
        code: String,
        message: String,
    },
    Ephemeral {
        conn: ConnId,
        doc: DocumentId,
        sender: PeerId,
        data: Vec<u8>,
    },
    /// A peer erased the document (GDPR / APPI erasure): delete the local copy.
    ErasedByPeer {
        conn: ConnId,
        doc: DocumentId,
    },
    StorageFailed {
        doc: DocumentId,
        message: String,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    Send { conn: ConnId, frame: Vec<u8> },
    Close { conn: ConnId, reason: CloseReason },
    Storage { task: TaskId, op: StorageTask },
    Event(Event),
}

/// What happens to the engine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input {
    Connected {
        conn: ConnId,
        side: Side,
    },
    Frame {
        conn: ConnId,
        frame: Vec<u8>,
    },
    Disconnected {
        conn: ConnId,
    },
    StorageDone {
        task: TaskId,
        result: StorageResult,
    },
    /// Time passed: evictions and timeouts.
    Tick,
    /// Sync this document with peers (a device: its local documents).
    Announce {
        doc: DocumentId,
    },
    /// Ask peers for a document we do not have.
    Find {
        doc: DocumentId,
    },
    /// Changes made locally and already stored (for example by the `DocStore`).
    LocalChanges {
        doc: DocumentId,
        changes: Vec<u8>,
    },
    /// Send presence or other ephemeral data about a document to peers syncing it.
    SendEphemeral {
        doc: DocumentId,
        data: Vec<u8>,
    },
    /// The policy's answers may have changed for this connection (or all, if `None`).
    AccessChanged {
        conn: Option<ConnId>,
    },
    /// Close a connection (for example: its token was revoked).
    Close {
        conn: ConnId,
        reason: String,
    },
    /// Forget a document entirely; with `notify`, tell every peer syncing it to delete its copy.
    Erase {
        doc: DocumentId,
        notify: bool,
    },
}
