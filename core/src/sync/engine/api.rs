//! The engine's vocabulary: ids, inputs, outputs, events, storage tasks.

use automerge::ChangeHash;

use super::{PeerInfo, Refusal};
use crate::DocumentId;
use crate::sync::catalog::CatalogPage;
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
    Load {
        /// The document to load.
        doc: DocumentId,
    },
    /// Append changes (`save_after` output) and sync states, in one atomic, flushed batch.
    Append {
        /// The document the changes belong to.
        doc: DocumentId,
        /// The changes since the last write that completed, as Automerge incremental-save bytes.
        changes: Vec<u8>,
        /// The document's heads once `changes` are applied.
        heads: Vec<ChangeHash>,
        /// Encoded Automerge sync states, per peer storage id, to store in the same batch.
        sync_states: Vec<(StorageId, Vec<u8>)>,
        /// The stored heads `changes` follow and were judged against (empty: the document is
        /// not stored yet). A store shared with other writers refuses the write with
        /// [`StorageResult::Conflict`] unless it holds the document exactly so.
        base: Vec<ChangeHash>,
    },
    /// Store sync states only.
    SaveSyncStates {
        /// The document the sync states are for.
        doc: DocumentId,
        /// Encoded Automerge sync states, per peer storage id.
        sync_states: Vec<(StorageId, Vec<u8>)>,
    },
}

/// The outcome of a [`StorageTask`], fed back as [`Input::StorageDone`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StorageResult {
    /// The answer to [`StorageTask::Load`].
    Loaded {
        /// The whole document, as bytes `Automerge::load` accepts; `None` when it is not stored.
        data: Option<Vec<u8>>,
        /// The sync states stored for it, per peer storage id.
        sync_states: Vec<(StorageId, Vec<u8>)>,
    },
    /// An `Append` or `SaveSyncStates` is durable (flushed).
    Stored,
    /// An `Append` lost the race to another writer of a shared store (relay nodes on one
    /// database): nothing of it was written, and the document changed under it. The engine
    /// loads the document as stored and judges its unstored changes again on it, so they are
    /// judged against the other writer's (see `Input::Reload`).
    Conflict,
    /// The task failed; the message must not contain personal data.
    Failed(String),
}

/// Why the engine closes a connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CloseReason {
    /// A frame did not decode, or a sync message did not decode or apply (the text says which).
    Malformed(String),
    /// A frame was longer than `max_frame`.
    FrameTooLarge,
    /// A sync message's changes would inflate past `max_inflated_bytes`.
    ChangesTooLarge,
    /// automerge panicked on the peer's changes (caught; only this connection fails).
    Crashed,
    /// The peer broke the protocol: a message before the handshake, a second handshake, or a
    /// `senderId` other than the one it joined with.
    ProtocolViolation(&'static str),
    /// The peer speaks no protocol version this build does.
    UnsupportedVersion,
    /// The handshake did not complete within `handshake_timeout_ms`.
    HandshakeTimeout,
    /// The connection asked about more than `max_docs_per_conn` documents.
    TooManyDocuments,
    /// The connection's messages waiting for their documents' loads passed
    /// `max_waiting_bytes` (see `engine::admission`).
    TooMuchWaiting,
    /// [`Policy::accept_peer`](super::Policy::accept_peer) refused the peer, for this reason.
    Rejected(String),
    /// The peer sent an `error` message; its text, cut to 200 characters.
    PeerError(String),
    /// The peer sent `leave`.
    PeerLeft,
    /// The driver asked, with [`Input::Close`]; its reason.
    ByApplication(String),
    /// The policy could not judge the peer's messages (its store unreachable) and no more may
    /// wait for it (see `max_unjudged_bytes`). The peer should reconnect later and sends them
    /// again.
    StoreUnavailable,
}

/// Events for the application.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A connection completed the handshake.
    PeerReady {
        /// The peer, as the policy sees it.
        peer: PeerInfo,
    },
    /// A connection's room ran out (see [`Input::Room`]): its sync messages wait until the
    /// driver says there is room again.
    Backlogged {
        /// The connection.
        conn: ConnId,
    },
    /// A connection closed or was closed.
    PeerGone {
        /// The connection.
        conn: ConnId,
        /// The peer's id, if the handshake had completed.
        peer_id: Option<PeerId>,
    },
    /// Changes from a peer were applied and stored.
    DocChanged {
        /// The document that changed.
        doc: DocumentId,
        /// Its heads, now on disk.
        heads: Vec<ChangeHash>,
    },
    /// The heads a peer has told us it has (for "acknowledged by the relay" status).
    PeerHeads {
        /// The connection the peer is on.
        conn: ConnId,
        /// The document.
        doc: DocumentId,
        /// The heads the peer reported in its latest sync message.
        heads: Vec<ChangeHash>,
    },
    /// Every connected peer said it does not have the document (or we may not see it).
    DocUnavailable {
        /// The document asked for.
        doc: DocumentId,
    },
    /// We refused changes from a peer. `changes[i]` holds the raw bytes of the change
    /// `refused[i]` names, to quarantine under its hash.
    Refused {
        /// The connection the changes came on.
        conn: ConnId,
        /// The document they were for.
        doc: DocumentId,
        /// Each refused change's hash and why it was refused.
        refused: Vec<(ChangeHash, Refusal)>,
        /// The refused changes' raw bytes, in the order of `refused`.
        changes: Vec<Vec<u8>>,
    },
    /// A peer refused changes we sent.
    RefusedByPeer {
        /// The connection the notice came on.
        conn: ConnId,
        /// The document the changes were for.
        doc: DocumentId,
        /// The refused changes.
        hashes: Vec<ChangeHash>,
        /// The peer's stable code, such as `locked` or `read-only`.
        code: String,
        /// The peer's explanation, for people.
        message: String,
    },
    /// Ephemeral data (presence and the like) from a peer; liaison's own notices are reported
    /// as other events instead.
    Ephemeral {
        /// The connection it came on.
        conn: ConnId,
        /// The document it is about.
        doc: DocumentId,
        /// The peer that wrote it (forwarded messages keep their author).
        sender: PeerId,
        /// The payload, as sent.
        data: Vec<u8>,
    },
    /// A peer erased the document (GDPR / APPI erasure): delete the local copy.
    ErasedByPeer {
        /// The connection the notice came on (the relay this device dialled).
        conn: ConnId,
        /// The erased document.
        doc: DocumentId,
    },
    /// A catalog page from the relay this device dialled (see [`crate::sync::catalog`]).
    Catalog {
        /// The connection it came on.
        conn: ConnId,
        /// The page.
        page: CatalogPage,
    },
    /// A storage task failed, or stored or local bytes did not load. A failed write's changes
    /// stay in memory, unadvertised, and the write is retried on a later change or tick.
    StorageFailed {
        /// The document concerned.
        doc: DocumentId,
        /// What went wrong, free of personal data.
        message: String,
    },
}

/// What the engine asks the driver to do, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// Send this frame on the connection.
    Send {
        /// The connection.
        conn: ConnId,
        /// One encoded protocol message.
        frame: Vec<u8>,
    },
    /// Close the connection (after sending the frames before this output). The engine has
    /// already forgotten it.
    Close {
        /// The connection.
        conn: ConnId,
        /// Why, for logs and metrics.
        reason: CloseReason,
    },
    /// Run a storage task and feed its result back as [`Input::StorageDone`].
    Storage {
        /// The task's id, to quote in the result.
        task: TaskId,
        /// What to do.
        op: StorageTask,
    },
    /// Tell the application.
    Event(Event),
}

/// What happens to the engine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input {
    /// A connection opened. An initiator's engine sends `join` at once.
    Connected {
        /// The driver's number for it, unique among open connections.
        conn: ConnId,
        /// Whether we dialled or accepted it.
        side: Side,
    },
    /// A frame arrived on a connection.
    Frame {
        /// The connection.
        conn: ConnId,
        /// One protocol message, as received.
        frame: Vec<u8>,
    },
    /// A connection closed (the peer went away or the socket failed).
    Disconnected {
        /// The connection.
        conn: ConnId,
    },
    /// A storage task finished.
    StorageDone {
        /// The task, from [`Output::Storage`].
        task: TaskId,
        /// Its outcome.
        result: StorageResult,
    },
    /// Time passed: evictions and timeouts.
    Tick,
    /// Another writer of the store changed this document (a hint from another relay node):
    /// if resident, the engine loads it as stored, once any write or load of it in flight is
    /// done, and takes the stored document as its copy, with the changes it held unstored
    /// judged again on it (each against the policy, for the peer that sent it), so every
    /// change is judged against the document as stored. Nothing happens for a document not
    /// resident.
    Reload {
        /// The document.
        doc: DocumentId,
    },
    /// Sync this document with peers (a device: its local documents).
    Announce {
        /// The document.
        doc: DocumentId,
    },
    /// Ask peers for a document we do not have.
    Find {
        /// The document wanted.
        doc: DocumentId,
    },
    /// Changes made locally and already stored (for example by the `DocStore`).
    LocalChanges {
        /// The document changed.
        doc: DocumentId,
        /// The new changes, as bytes `Automerge::load_incremental` accepts.
        changes: Vec<u8>,
    },
    /// Changes another writer of a shared store stored (what a hint from another relay node
    /// brings). Taken in as stored when the copy holds nothing unstored; otherwise the copy is
    /// rebased once its write is done (`Input::Reload`): applied beside unstored changes they
    /// would only make the next write conflict.
    StoredElsewhere {
        /// The document changed.
        doc: DocumentId,
        /// The changes, as bytes `Automerge::load_incremental` accepts.
        changes: Vec<u8>,
    },
    /// Send presence or other ephemeral data about a document to peers syncing it.
    SendEphemeral {
        /// The document it is about.
        doc: DocumentId,
        /// The payload, opaque to the engine.
        data: Vec<u8>,
    },
    /// The policy's answers may have changed for this connection (or all, if `None`).
    AccessChanged {
        /// The connection whose grants changed; `None` for every connection.
        conn: Option<ConnId>,
    },
    /// Close a connection (for example: its token was revoked).
    Close {
        /// The connection.
        conn: ConnId,
        /// Why, passed back in [`CloseReason::ByApplication`]; not sent to the peer.
        reason: String,
    },
    /// Forget a document entirely; with `notify`, tell every peer syncing it to delete its copy.
    Erase {
        /// The document.
        doc: DocumentId,
        /// Send an erasure notice to the peers that synced it and may know it was erased.
        notify: bool,
    },
    /// Send a liaison notice (an encoded [`CatalogPage`]) to one connection, on the catalog id.
    SendNotice {
        /// The connection.
        conn: ConnId,
        /// The notice, as [`crate::sync::catalog::encode_page`] makes it.
        data: Vec<u8>,
    },
    /// A device: the relay holds every local change of this document, so later connections
    /// need not offer it (the catalog tells of changes made elsewhere).
    Settled {
        /// The document.
        doc: DocumentId,
    },
    /// The driver's queue for a connection may take this many more bytes. Say it when the
    /// connection opens and after [`Event::Backlogged`] once the queue has drained; sync messages
    /// for the connection are generated only while there is room (see `engine::room`). Never
    /// said, a connection is unbounded.
    Room {
        /// The connection.
        conn: ConnId,
        /// Bytes the queue may still take.
        bytes: usize,
    },
}
