//! The sans-IO sync engine: automerge-repo's protocol over many connections and documents.
//!
//! Inputs are [`Input`]s with the current time; outputs are [`Output`]s: frames to send,
//! connections to close, storage tasks to run, and events for the application. The engine never
//! touches a socket, a clock or a disk. A driver (the relay, the mobile client, a test
//! simulator) runs the storage tasks and feeds their completion back.
//!
//! Rules the engine keeps:
//! - **Durable acknowledgement.** No sync message for a document is generated while it holds
//!   changes whose storage task has not completed, so the heads a peer sees from us are on disk.
//! - **Unavailable means unavailable.** A document a peer may not see is answered exactly like a
//!   document that does not exist.
//! - **Refused changes are not applied**, are reported to the application (to quarantine them)
//!   and to the sender (an ephemeral message its client understands), and are not re-announced.
//! - **Bounded memory.** At most `resident_cap` documents stay loaded; idle ones are evicted and
//!   reloaded on demand. A peer's sync state survives eviction (persisted, or kept encoded).

use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};

use automerge::sync::{self, SyncDoc};
use automerge::{Automerge, Change, ChangeHash};

use super::inflation;
use super::screen::{ScreenError, ScreenInput, Screened, screen};
use super::wire::{self, Message, PROTOCOL_V1, PeerId, PeerMetadata, StorageId};
use crate::DocumentId;

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

/// What a peer may do with a document.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Access {
    None,
    Read,
    ReadWrite,
}

/// A connected peer, as the policy sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerInfo {
    pub conn: ConnId,
    pub peer_id: PeerId,
    pub metadata: PeerMetadata,
}

/// Why a change was refused. Sent to the peer, so it must not carry personal data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// A stable machine-readable code, such as `locked` or `read-only`.
    pub code: String,
    pub message: String,
}

impl Refusal {
    pub fn new(code: &str, message: &str) -> Self {
        Self { code: code.to_owned(), message: message.to_owned() }
    }
}

/// The relay's decisions, asked synchronously (implementations keep their grants in memory).
pub trait Policy: Send {
    /// Whether a peer that completed the handshake may stay; `Err` closes the connection.
    fn accept_peer(&mut self, _peer: &PeerInfo) -> Result<(), String> {
        Ok(())
    }

    /// What `peer` may do with `doc`. May change over time: call [`Engine::access_changed`].
    fn access(&mut self, _peer: &PeerInfo, _doc: &DocumentId) -> Access {
        Access::ReadWrite
    }

    /// Whether a document was erased here: peers that still sync it are told to delete their copy.
    fn erased(&mut self, _doc: &DocumentId) -> bool {
        false
    }

    /// Whether `peer` may be told that `doc` was erased (it could read it). Others get
    /// "unavailable", as for an id that never existed.
    fn may_know_erased(&mut self, _peer: &PeerInfo, _doc: &DocumentId) -> bool {
        true
    }

    /// Checks changes a peer sent before they are applied. `before` is the document without
    /// them, `after` with all of them. Returns the refused changes; their descendants among
    /// `new` are refused too.
    fn validate(
        &mut self,
        _peer: &PeerInfo,
        _doc: &DocumentId,
        _before: &Automerge,
        _after: &Automerge,
        _new: &[Change],
    ) -> Vec<(ChangeHash, Refusal)> {
        Vec::new()
    }
}

/// Grants everything: a device's engine, or tests.
#[derive(Debug, Default, Clone, Copy)]
pub struct OpenPolicy;

impl Policy for OpenPolicy {}

#[derive(Debug, Clone)]
pub struct EngineConfig {
    pub peer_id: PeerId,
    /// Our storage id, advertised so peers keep sync state for us across connections.
    pub storage_id: Option<StorageId>,
    pub is_ephemeral: bool,
    pub max_frame: usize,
    /// Loaded documents kept at most; the least recently used idle ones are evicted past it.
    pub resident_cap: usize,
    /// A document unused for this long is evicted on the next tick.
    pub idle_evict_ms: i64,
    /// A connection that has not completed the handshake by then is closed.
    pub handshake_timeout_ms: i64,
    /// Sync every document we are told about with every peer (a device). A relay leaves this off
    /// and answers what peers ask.
    pub announce: bool,
    /// Distinct documents one connection may touch; past it the connection is closed.
    pub max_docs_per_conn: usize,
    /// Bytes the changes of one sync message may inflate to (and a quarter as many column
    /// items they may decode to, see [`super::inflation::Bounds::for_max_bytes`]); past it the
    /// connection is closed before anything is inflated or expanded.
    pub max_inflated_bytes: u64,
    /// Messages exchanged for one document with one peer without either side's heads moving,
    /// after which the sync state is reset (guards a known automerge sync loop).
    pub loop_guard: u32,
}

impl EngineConfig {
    pub fn new(peer_id: impl Into<String>) -> Self {
        Self {
            peer_id: PeerId(peer_id.into()),
            storage_id: None,
            is_ephemeral: false,
            max_frame: wire::DEFAULT_MAX_FRAME,
            resident_cap: 10_000,
            idle_evict_ms: 10 * 60 * 1000,
            handshake_timeout_ms: 10_000,
            announce: false,
            max_docs_per_conn: usize::MAX,
            max_inflated_bytes: 4 * wire::DEFAULT_MAX_FRAME as u64,
            loop_guard: 16,
        }
    }
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

/// The `data` of a refusal notice: an ephemeral message the liaison client understands and
/// other automerge-repo clients surface as an ordinary ephemeral message.
pub const REFUSAL_KIND: &str = "liaison/refused";

/// The `data` of an erasure notice: `{"liaison": "liaison/erased"}` on the erased document.
pub const ERASED_KIND: &str = "liaison/erased";

#[derive(Debug)]
enum ConnPhase {
    AwaitingJoin,
    AwaitingPeer,
    Ready(PeerInfo),
}

#[derive(Debug)]
struct Conn {
    phase: ConnPhase,
    side: Side,
    opened_at: i64,
    /// Ephemeral sync states of documents evicted while this connection syncs them.
    parked: HashMap<DocumentId, Vec<u8>>,
    /// Documents this connection has asked about, for the per-connection limit.
    touched: HashSet<DocumentId>,
    /// The last ephemeral count seen per (sender, session) on this connection: repeats are
    /// dropped. Kept per connection and bounded, so it goes with the socket and one sender can
    /// neither grow it for good nor silence another sender (the relay's notices included).
    seen_ephemeral: HashMap<(PeerId, String), u64>,
}

/// Most (sender, session) pairs one connection remembers; past it the memory starts afresh
/// (a repeat may then pass once, which costs nothing but a duplicate).
const MAX_EPHEMERAL_SESSIONS: usize = 1024;

#[derive(Debug)]
struct PeerDoc {
    sync: sync::State,
    /// Whether we have ever answered this peer for this document.
    active: bool,
    /// Messages sent without either side's heads moving.
    stalled: u32,
    last_heads: (Vec<ChangeHash>, Vec<ChangeHash>),
    /// Shared heads last written to storage for this peer's storage id.
    persisted_shared: Vec<ChangeHash>,
    said_unavailable: bool,
    refusals_notified: HashSet<ChangeHash>,
    /// Heads of the last message we actually sent this peer.
    advertised: Vec<ChangeHash>,
}

impl PeerDoc {
    fn new(sync: sync::State) -> Self {
        Self {
            persisted_shared: sync.shared_heads.clone(),
            sync,
            active: false,
            stalled: 0,
            last_heads: (Vec::new(), Vec::new()),
            said_unavailable: false,
            refusals_notified: HashSet::new(),
            advertised: Vec::new(),
        }
    }
}

#[derive(Debug)]
enum DocPhase {
    Loading {
        task: TaskId,
        queued: VecDeque<(ConnId, Message)>,
    },
    /// Storage does not have it. We may be asking peers for it.
    Missing,
    Ready,
}

#[derive(Debug)]
struct DocEntry {
    phase: DocPhase,
    am: Automerge,
    /// Heads that are on disk; never advertise beyond them.
    durable: Vec<ChangeHash>,
    write_in_flight: Option<(TaskId, Vec<ChangeHash>)>,
    peers: HashMap<ConnId, PeerDoc>,
    /// Sync states loaded from storage for storage ids not connected now.
    stored_states: HashMap<StorageId, Vec<u8>>,
    refused: HashMap<ChangeHash, Refusal>,
    last_used: i64,
    /// We want this document from peers (Find).
    wanted: bool,
    /// A device's document: sync it with every peer.
    announced: bool,
    /// Peers that asked while we did not have it; they hear from us once it arrives.
    waiting: HashSet<ConnId>,
}

impl DocEntry {
    fn new(phase: DocPhase, now: i64) -> Self {
        Self {
            phase,
            am: Automerge::new(),
            durable: Vec::new(),
            write_in_flight: None,
            peers: HashMap::new(),
            stored_states: HashMap::new(),
            refused: HashMap::new(),
            last_used: now,
            wanted: false,
            announced: false,
            waiting: HashSet::new(),
        }
    }

    fn dirty(&self) -> bool {
        self.am.get_heads() != self.durable
    }
}

/// The engine. See the module docs.
pub struct Engine {
    config: EngineConfig,
    policy: Box<dyn Policy>,
    conns: HashMap<ConnId, Conn>,
    docs: HashMap<DocumentId, DocEntry>,
    tasks: HashMap<TaskId, DocumentId>,
    next_task: u64,
    now: i64,
    out: Vec<Output>,
    /// Documents a device announces to every peer, resident or not.
    announced: BTreeSet<DocumentId>,
    session_id: String,
    ephemeral_count: u64,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("peer_id", &self.config.peer_id)
            .field("conns", &self.conns.len())
            .field("resident", &self.docs.len())
            .finish_non_exhaustive()
    }
}

impl Engine {
    /// `session_id` names this run for ephemeral messages; pass randomness in (a UUID string).
    pub fn new(config: EngineConfig, policy: Box<dyn Policy>, session_id: String) -> Self {
        Self {
            config,
            policy,
            conns: HashMap::new(),
            docs: HashMap::new(),
            tasks: HashMap::new(),
            next_task: 0,
            now: 0,
            out: Vec::new(),
            announced: BTreeSet::new(),
            session_id,
            ephemeral_count: 0,
        }
    }

    pub fn config(&self) -> &EngineConfig {
        &self.config
    }

    /// Documents loaded now.
    pub fn resident(&self) -> usize {
        self.docs.len()
    }

    /// Connections that completed the handshake.
    pub fn ready_peers(&self) -> Vec<PeerInfo> {
        self.conns
            .values()
            .filter_map(|c| match &c.phase {
                ConnPhase::Ready(p) => Some(p.clone()),
                _ => None,
            })
            .collect()
    }

    /// The document as the engine holds it, if resident.
    pub fn document(&self, doc: &DocumentId) -> Option<&Automerge> {
        self.docs.get(doc).filter(|d| matches!(d.phase, DocPhase::Ready)).map(|d| &d.am)
    }

    /// Handles one input at time `now` (milliseconds) and returns what to do.
    pub fn handle(&mut self, now: i64, input: Input) -> Vec<Output> {
        self.now = self.now.max(now);
        match input {
            Input::Connected { conn, side } => self.on_connected(conn, side),
            Input::Frame { conn, frame } => self.on_frame(conn, &frame),
            Input::Disconnected { conn } => self.on_disconnected(conn),
            Input::StorageDone { task, result } => self.on_storage(task, result),
            Input::Tick => self.on_tick(),
            Input::Announce { doc } => self.on_announce(doc),
            Input::Find { doc } => self.on_find(doc),
            Input::LocalChanges { doc, changes } => self.on_local_changes(doc, &changes),
            Input::SendEphemeral { doc, data } => self.on_send_ephemeral(doc, data),
            Input::AccessChanged { conn } => self.on_access_changed(conn),
            Input::Close { conn, reason } => self.close(conn, CloseReason::ByApplication(reason)),
            Input::Erase { doc, notify } => self.on_erase(doc, notify),
        }
        std::mem::take(&mut self.out)
    }

    // -----------------------------------------------------------------------------------------
    // Connections

    fn on_connected(&mut self, conn: ConnId, side: Side) {
        let phase = match side {
            Side::Initiator => ConnPhase::AwaitingPeer,
            Side::Receiver => ConnPhase::AwaitingJoin,
        };
        self.conns.insert(
            conn,
            Conn {
                phase,
                side,
                opened_at: self.now,
                parked: HashMap::new(),
                touched: HashSet::new(),
                seen_ephemeral: HashMap::new(),
            },
        );
        if side == Side::Initiator {
            let join = Message::Join {
                sender_id: self.config.peer_id.clone(),
                supported_protocol_versions: vec![PROTOCOL_V1.to_owned()],
                metadata: Some(self.metadata()),
            };
            self.send(conn, &join);
        }
    }

    fn metadata(&self) -> PeerMetadata {
        PeerMetadata { storage_id: self.config.storage_id.clone(), is_ephemeral: self.config.is_ephemeral }
    }

    fn send(&mut self, conn: ConnId, msg: &Message) {
        self.out.push(Output::Send { conn, frame: msg.encode() });
    }

    fn close(&mut self, conn: ConnId, reason: CloseReason) {
        if self.conns.contains_key(&conn) {
            self.out.push(Output::Close { conn, reason });
            self.on_disconnected(conn);
        }
    }

    fn protocol_error(&mut self, conn: ConnId, reason: CloseReason, text: &str) {
        let target_id = self.peer_of(conn).map(|p| p.peer_id);
        self.send(
            conn,
            &Message::Error { sender_id: Some(self.config.peer_id.clone()), target_id, message: text.to_owned() },
        );
        self.close(conn, reason);
    }

    fn peer_of(&self, conn: ConnId) -> Option<PeerInfo> {
        match &self.conns.get(&conn)?.phase {
            ConnPhase::Ready(p) => Some(p.clone()),
            _ => None,
        }
    }

    fn on_disconnected(&mut self, conn: ConnId) {
        let Some(c) = self.conns.remove(&conn) else { return };
        let peer = match c.phase {
            ConnPhase::Ready(p) => Some(p),
            _ => None,
        };
        // Keep what the peer's storage id lets us resume from; the in-flight part of a sync state
        // is dropped, as automerge prescribes after a lost connection (encode keeps shared heads).
        let storage = peer.as_ref().and_then(|p| persistent_storage(&p.metadata));
        let mut saves = Vec::new();
        for (id, d) in self.docs.iter_mut() {
            d.waiting.remove(&conn);
            if let Some(pd) = d.peers.remove(&conn)
                && let Some(s) = &storage
            {
                let encoded = pd.sync.encode();
                d.stored_states.insert(s.clone(), encoded.clone());
                if pd.sync.shared_heads != pd.persisted_shared {
                    saves.push((*id, vec![(s.clone(), encoded)]));
                }
            }
        }
        for (doc, sync_states) in saves {
            self.task(doc, StorageTask::SaveSyncStates { doc, sync_states });
        }
        self.out.push(Output::Event(Event::PeerGone { conn, peer_id: peer.map(|p| p.peer_id) }));
    }

    fn on_frame(&mut self, conn: ConnId, frame: &[u8]) {
        let Some(c) = self.conns.get(&conn) else { return };
        let msg = match wire::decode(frame, self.config.max_frame) {
            Ok(m) => m,
            Err(wire::DecodeError::TooLarge { .. }) => {
                self.protocol_error(conn, CloseReason::FrameTooLarge, "frame too large");
                return;
            }
            Err(e) => {
                let text = e.to_string();
                self.protocol_error(conn, CloseReason::Malformed(text.clone()), &text);
                return;
            }
        };
        match (&c.phase, msg) {
            (ConnPhase::AwaitingJoin, Message::Join { sender_id, supported_protocol_versions, metadata }) => {
                if !supported_protocol_versions.iter().any(|v| v == PROTOCOL_V1) {
                    self.protocol_error(conn, CloseReason::UnsupportedVersion, "unsupported protocol version");
                    return;
                }
                let peer = PeerInfo { conn, peer_id: sender_id.clone(), metadata: metadata.unwrap_or_default() };
                if let Err(reason) = self.policy.accept_peer(&peer) {
                    self.protocol_error(conn, CloseReason::Rejected(reason.clone()), &reason);
                    return;
                }
                let reply = Message::Peer {
                    sender_id: self.config.peer_id.clone(),
                    target_id: sender_id,
                    selected_protocol_version: PROTOCOL_V1.to_owned(),
                    metadata: Some(self.metadata()),
                };
                self.send(conn, &reply);
                self.peer_ready(conn, peer);
            }
            (ConnPhase::AwaitingPeer, Message::Peer { sender_id, selected_protocol_version, metadata, .. }) => {
                if selected_protocol_version != PROTOCOL_V1 {
                    self.protocol_error(conn, CloseReason::UnsupportedVersion, "unsupported protocol version");
                    return;
                }
                let peer = PeerInfo { conn, peer_id: sender_id, metadata: metadata.unwrap_or_default() };
                if let Err(reason) = self.policy.accept_peer(&peer) {
                    self.protocol_error(conn, CloseReason::Rejected(reason.clone()), &reason);
                    return;
                }
                self.peer_ready(conn, peer);
            }
            (_, Message::Error { message, .. }) => {
                self.close(conn, CloseReason::PeerError(message.chars().take(200).collect()));
            }
            (ConnPhase::AwaitingJoin | ConnPhase::AwaitingPeer, _) => {
                self.protocol_error(
                    conn,
                    CloseReason::ProtocolViolation("message before handshake"),
                    "handshake first",
                );
            }
            (ConnPhase::Ready(_), Message::Leave { .. }) => self.close(conn, CloseReason::PeerLeft),
            (ConnPhase::Ready(_), Message::Join { .. } | Message::Peer { .. }) => {
                self.protocol_error(conn, CloseReason::ProtocolViolation("second handshake"), "already joined");
            }
            (ConnPhase::Ready(p), m) => {
                let sender = match &m {
                    Message::Request { sender_id, .. }
                    | Message::Sync { sender_id, .. }
                    | Message::DocUnavailable { sender_id, .. }
                    | Message::RemoteSubscriptionChange { sender_id, .. }
                    | Message::RemoteHeadsChanged { sender_id, .. } => Some(sender_id),
                    // Forwarded ephemera keep their author's id (as in JavaScript and samod). A
                    // peer that dialled us has nobody behind it, so it may only speak for itself:
                    // that stops a device from faking a teammate's presence.
                    Message::Ephemeral { sender_id, .. } if c.side == Side::Receiver => Some(sender_id),
                    _ => None,
                };
                if sender.is_some_and(|s| *s != p.peer_id) {
                    self.protocol_error(conn, CloseReason::ProtocolViolation("sender id changed"), "wrong senderId");
                    return;
                }
                self.on_doc_message(conn, m);
            }
        }
    }

    fn peer_ready(&mut self, conn: ConnId, peer: PeerInfo) {
        if let Some(c) = self.conns.get_mut(&conn) {
            c.phase = ConnPhase::Ready(peer.clone());
        }
        self.out.push(Output::Event(Event::PeerReady { peer }));
        // A device syncs its documents with the new peer, all at once (pipelined).
        let announced: Vec<DocumentId> = self.announced.iter().copied().collect();
        for doc in announced {
            match self.docs.get(&doc).map(|d| &d.phase) {
                Some(DocPhase::Ready) => self.start_sync_with(doc, conn),
                // A load in progress syncs with every ready peer when it completes.
                Some(DocPhase::Loading { .. } | DocPhase::Missing) => {}
                None => self.start_load(doc),
            }
        }
        let wanted: Vec<DocumentId> = self.docs.iter().filter(|(_, d)| d.wanted).map(|(id, _)| *id).collect();
        for doc in wanted {
            self.start_sync_with(doc, conn);
        }
    }

    // -----------------------------------------------------------------------------------------
    // Documents

    fn task(&mut self, doc: DocumentId, op: StorageTask) -> TaskId {
        let task = TaskId(self.next_task);
        self.next_task += 1;
        self.tasks.insert(task, doc);
        self.out.push(Output::Storage { task, op });
        task
    }

    fn start_load(&mut self, doc: DocumentId) {
        if self.docs.contains_key(&doc) {
            return;
        }
        let task = self.task(doc, StorageTask::Load { doc });
        self.docs.insert(doc, DocEntry::new(DocPhase::Loading { task, queued: VecDeque::new() }, self.now));
        self.evict_over_cap();
    }

    fn on_announce(&mut self, doc: DocumentId) {
        self.announced.insert(doc);
        let conns: Vec<ConnId> = self.ready_conns();
        match self.docs.get_mut(&doc) {
            Some(d) => {
                d.announced = true;
                if matches!(d.phase, DocPhase::Ready) {
                    for c in conns {
                        self.start_sync_with(doc, c);
                    }
                }
            }
            None if !conns.is_empty() => self.start_load(doc),
            None => {}
        }
    }

    fn on_find(&mut self, doc: DocumentId) {
        match self.docs.get_mut(&doc) {
            Some(d) => {
                d.wanted = true;
                if matches!(d.phase, DocPhase::Missing) {
                    for c in self.ready_conns() {
                        self.start_sync_with(doc, c);
                    }
                }
            }
            None => {
                self.start_load(doc);
                if let Some(d) = self.docs.get_mut(&doc) {
                    d.wanted = true;
                }
            }
        }
    }

    fn ready_conns(&self) -> Vec<ConnId> {
        let mut v: Vec<ConnId> =
            self.conns.iter().filter(|(_, c)| matches!(c.phase, ConnPhase::Ready(_))).map(|(id, _)| *id).collect();
        v.sort();
        v
    }

    fn on_local_changes(&mut self, doc: DocumentId, changes: &[u8]) {
        tracing::debug!(document = %doc, bytes = changes.len(), resident = self.docs.contains_key(&doc), "local changes");
        let Some(d) = self.docs.get_mut(&doc) else {
            // Not resident: the next load reads the stored changes. Make sure peers hear of it.
            if self.announced.contains(&doc) && !self.ready_conns().is_empty() {
                self.start_load(doc);
            }
            return;
        };
        if !matches!(d.phase, DocPhase::Ready | DocPhase::Missing) {
            return;
        }
        let was_durable = !d.dirty();
        if d.am.load_incremental(changes).is_err() {
            self.out.push(Output::Event(Event::StorageFailed { doc, message: "local changes do not load".into() }));
            return;
        }
        d.phase = DocPhase::Ready;
        d.last_used = self.now;
        // They are already stored by the caller: durable as they are.
        if was_durable {
            d.durable = d.am.get_heads();
        }
        self.after_change(doc);
    }

    fn on_storage(&mut self, task: TaskId, result: StorageResult) {
        let Some(doc) = self.tasks.remove(&task) else { return };
        let Some(d) = self.docs.get_mut(&doc) else { return };
        match (&mut d.phase, result) {
            (DocPhase::Loading { task: t, queued }, StorageResult::Loaded { data, sync_states }) if *t == task => {
                let queued = std::mem::take(queued);
                match data {
                    Some(bytes) => match Automerge::load(&bytes) {
                        Ok(am) => {
                            d.am = am;
                            d.durable = d.am.get_heads();
                            d.phase = DocPhase::Ready;
                        }
                        Err(_) => {
                            d.phase = DocPhase::Missing;
                            self.out.push(Output::Event(Event::StorageFailed {
                                doc,
                                message: "stored document does not load".into(),
                            }));
                        }
                    },
                    None => d.phase = DocPhase::Missing,
                }
                d.stored_states = sync_states.into_iter().collect();
                d.announced = self.announced.contains(&doc);
                let announce = d.announced && matches!(d.phase, DocPhase::Ready);
                let want = d.wanted;
                for (conn, msg) in queued {
                    self.on_doc_message(conn, msg);
                }
                if announce || want {
                    for c in self.ready_conns() {
                        self.start_sync_with(doc, c);
                    }
                }
                // Eviction drops per-peer state, not subscriptions: every live connection that
                // has synced this document hears from it again, so none misses later changes.
                if self.docs.get(&doc).is_some_and(|d| matches!(d.phase, DocPhase::Ready)) {
                    let subscribed: Vec<ConnId> = self
                        .ready_conns()
                        .into_iter()
                        .filter(|c| self.conns.get(c).is_some_and(|x| x.touched.contains(&doc)))
                        .filter(|c| self.docs.get(&doc).is_some_and(|d| !d.peers.contains_key(c)))
                        .collect();
                    for c in subscribed {
                        self.start_sync_with(doc, c);
                    }
                }
                self.evict_over_cap();
            }
            (DocPhase::Loading { .. }, StorageResult::Failed(message)) => {
                self.docs.remove(&doc);
                self.out.push(Output::Event(Event::StorageFailed { doc, message }));
            }
            (_, StorageResult::Stored) => {
                tracing::debug!(document = %doc, task = task.0, in_flight = ?d.write_in_flight.as_ref().map(|w| w.0.0), "stored");
                if let Some((t, heads)) = d.write_in_flight.take_if(|(t, _)| *t == task) {
                    let _ = t;
                    d.durable = heads;
                    let changed_heads = d.durable.clone();
                    self.out.push(Output::Event(Event::DocChanged { doc, heads: changed_heads }));
                    self.after_change(doc);
                }
            }
            // Changes stay in memory but are never advertised; the next change or tick retries.
            // The sender still has them: nothing is lost.
            (_, StorageResult::Failed(message)) if d.write_in_flight.take_if(|(t, _)| *t == task).is_some() => {
                self.out.push(Output::Event(Event::StorageFailed { doc, message }));
            }
            _ => {}
        }
    }

    /// After the document changed or became durable: write what is not durable, else sync.
    fn after_change(&mut self, doc: DocumentId) {
        let Some(d) = self.docs.get_mut(&doc) else { return };
        if d.write_in_flight.is_some() {
            return;
        }
        if d.dirty() {
            let changes = d.am.save_after(&d.durable);
            let heads = d.am.get_heads();
            let sync_states = collect_sync_states(d, &self.conns);
            let task = TaskId(self.next_task);
            d.write_in_flight = Some((task, heads.clone()));
            self.task(doc, StorageTask::Append { doc, changes, heads, sync_states });
            return;
        }
        let conns: Vec<ConnId> = {
            let mut v: Vec<ConnId> = d.peers.iter().filter(|(_, p)| p.active).map(|(c, _)| *c).collect();
            v.sort();
            v
        };
        for c in conns {
            self.generate(doc, c);
        }
        self.persist_sync_states(doc);
    }

    fn persist_sync_states(&mut self, doc: DocumentId) {
        let Some(d) = self.docs.get_mut(&doc) else { return };
        let states = collect_sync_states(d, &self.conns);
        if !states.is_empty() && d.write_in_flight.is_none() {
            self.task(doc, StorageTask::SaveSyncStates { doc, sync_states: states });
        }
    }

    /// Begins syncing `doc` with `conn` if the peer may read it.
    fn start_sync_with(&mut self, doc: DocumentId, conn: ConnId) {
        let Some(peer) = self.peer_of(conn) else { return };
        if self.policy.access(&peer, &doc) == Access::None {
            return;
        }
        let parked = self.conns.get_mut(&conn).and_then(|c| c.parked.remove(&doc));
        let Some(d) = self.docs.get_mut(&doc) else { return };
        let pd = d.peers.entry(conn).or_insert_with(|| PeerDoc::new(initial_state(&d.stored_states, &peer, parked)));
        pd.active = true;
        self.generate(doc, conn);
    }

    /// Generates and sends the next sync message for (`doc`, `conn`), if any and if allowed.
    fn generate(&mut self, doc: DocumentId, conn: ConnId) {
        let Some(peer) = self.peer_of(conn) else { return };
        let loop_guard = self.config.loop_guard;
        let Some(d) = self.docs.get_mut(&doc) else { return };
        if d.dirty() || d.write_in_flight.is_some() {
            tracing::debug!(document = %doc, "not generating: unstored changes");
            return; // Durable acknowledgement: advertise only what is on disk.
        }
        let missing = matches!(d.phase, DocPhase::Missing);
        let Some(pd) = d.peers.get_mut(&conn) else { return };
        if pd.said_unavailable {
            return;
        }
        let heads_now = (d.am.get_heads(), pd.sync.their_heads.clone().unwrap_or_default());
        if heads_now == pd.last_heads {
            pd.stalled += 1;
        } else {
            pd.stalled = 0;
            pd.last_heads = heads_now;
        }
        if pd.stalled > loop_guard * 2 {
            tracing::debug!(document = %doc, "not generating: stalled");
            return; // Give up until something changes.
        }
        if pd.stalled == loop_guard {
            tracing::warn!(document = %doc, "sync made no progress; resetting the sync state");
            pd.sync = sync::State::new();
        }
        let Some(msg) = d.am.generate_sync_message(&mut pd.sync) else {
            tracing::debug!(document = %doc, peer = %peer.peer_id, in_flight = pd.sync.in_flight, heads = ?d.am.get_heads(), last_sent = ?pd.sync.last_sent_heads, their = ?pd.sync.their_heads, "nothing to send");
            return;
        };
        tracing::debug!(document = %doc, peer = %peer.peer_id, changes = msg.changes.len(), heads = ?msg.heads, "sending sync");
        pd.advertised.clone_from(&msg.heads);
        let data = msg.encode();
        let m = if missing && d.wanted {
            Message::Request { sender_id: self.config.peer_id.clone(), target_id: peer.peer_id, document_id: doc, data }
        } else {
            Message::Sync { sender_id: self.config.peer_id.clone(), target_id: peer.peer_id, document_id: doc, data }
        };
        self.send(conn, &m);
    }

    fn unavailable(&mut self, conn: ConnId, doc: DocumentId) {
        let Some(peer) = self.peer_of(conn) else { return };
        self.send(
            conn,
            &Message::DocUnavailable {
                sender_id: self.config.peer_id.clone(),
                target_id: peer.peer_id,
                document_id: doc,
            },
        );
        if let Some(d) = self.docs.get_mut(&doc) {
            d.peers.remove(&conn);
        }
    }

    fn on_doc_message(&mut self, conn: ConnId, msg: Message) {
        let Some(peer) = self.peer_of(conn) else { return };
        let Some(doc) = msg.document_id().copied() else {
            return; // remote-subscription-change and unknown types: nothing to do for now.
        };
        let max = self.config.max_docs_per_conn;
        if let Some(c) = self.conns.get_mut(&conn)
            && !c.touched.contains(&doc)
        {
            if c.touched.len() >= max {
                self.protocol_error(conn, CloseReason::TooManyDocuments, "too many documents on one connection");
                return;
            }
            c.touched.insert(doc);
        }
        if matches!(msg, Message::Request { .. } | Message::Sync { .. }) && self.policy.erased(&doc) {
            if self.policy.may_know_erased(&peer, &doc) {
                self.send_erasure(conn, doc);
            }
            self.unavailable(conn, doc);
            return;
        }
        let access = self.policy.access(&peer, &doc);
        if access == Access::None {
            if matches!(msg, Message::Request { .. } | Message::Sync { .. }) {
                self.unavailable(conn, doc);
            }
            return;
        }
        match self.docs.get_mut(&doc) {
            None => {
                self.start_load(doc);
                if let Some(DocEntry { phase: DocPhase::Loading { queued, .. }, .. }) = self.docs.get_mut(&doc) {
                    queued.push_back((conn, msg));
                }
                return;
            }
            Some(DocEntry { phase: DocPhase::Loading { queued, .. }, .. }) => {
                queued.push_back((conn, msg));
                return;
            }
            Some(d) => d.last_used = self.now,
        }
        match msg {
            Message::Request { data, .. } | Message::Sync { data, .. } => self.on_sync(conn, &peer, doc, access, &data),
            Message::DocUnavailable { .. } => self.on_unavailable(conn, doc),
            Message::Ephemeral { sender_id, count, session_id, data, .. } => {
                self.on_ephemeral(conn, doc, sender_id, count, session_id, data)
            }
            _ => {}
        }
    }

    fn on_sync(&mut self, conn: ConnId, peer: &PeerInfo, doc: DocumentId, access: Access, data: &[u8]) {
        let Ok(msg) = sync::Message::decode(data) else {
            self.protocol_error(conn, CloseReason::Malformed("bad sync message".into()), "bad sync message");
            return;
        };
        // Nothing inflates past the bound before it is checked (a compressed chunk of zeros is
        // a few KiB on the wire and gigabytes in memory).
        if let Err(e) =
            inflation::check_sync_message(&msg, inflation::Bounds::for_max_bytes(self.config.max_inflated_bytes))
        {
            tracing::info!(document = %doc, error = %e, "refusing a sync message that inflates past the limit");
            self.protocol_error(conn, CloseReason::ChangesTooLarge, "changes too large");
            return;
        }
        let parked = self.conns.get_mut(&conn).and_then(|c| c.parked.remove(&doc));
        let Some(d) = self.docs.get_mut(&doc) else { return };
        if matches!(d.phase, DocPhase::Missing) && !d.wanted {
            // We do not have it. A peer that has it (heads) and may write creates it here;
            // anyone else hears "unavailable", as for a document it may not see.
            if msg.heads.is_empty() || access < Access::ReadWrite {
                d.waiting.insert(conn);
                self.unavailable(conn, doc);
                return;
            }
        }
        let pd = d.peers.entry(conn).or_insert_with(|| PeerDoc::new(initial_state(&d.stored_states, peer, parked)));
        pd.active = true;
        pd.said_unavailable = false;
        let before = d.am.get_heads();
        let screened = if msg.changes.is_empty() {
            Screened { apply: Some(msg), trial: None, refused: Vec::new(), refused_raw: Vec::new() }
        } else {
            let input = ScreenInput {
                policy: self.policy.as_mut(),
                peer,
                doc_id: &doc,
                doc: &d.am,
                sync_state: &pd.sync,
                access,
                remembered: &d.refused,
            };
            match screen(input, msg) {
                Ok(s) => s,
                Err(ScreenError::Malformed) => {
                    self.protocol_error(
                        conn,
                        CloseReason::Malformed("sync message does not apply".into()),
                        "bad changes",
                    );
                    return;
                }
                Err(ScreenError::Crashed) => {
                    tracing::warn!(document = %doc, "changes from a peer crashed automerge; closing that connection");
                    self.protocol_error(conn, CloseReason::Crashed, "changes could not be applied");
                    return;
                }
            }
        };
        let Screened { apply, trial, refused, refused_raw } = screened;
        if let Some((am, state)) = trial {
            d.am = am;
            pd.sync = state;
        }
        if let Some(apply) = apply
            && d.am.receive_sync_message(&mut pd.sync, apply).is_err()
        {
            self.protocol_error(conn, CloseReason::Malformed("sync message does not apply".into()), "bad changes");
            return;
        }
        keep_ack_owed(d.am.get_heads() != d.durable || d.write_in_flight.is_some(), pd);
        let their = pd.sync.their_heads.clone().unwrap_or_default();
        self.out.push(Output::Event(Event::PeerHeads { conn, doc, heads: their }));
        if !refused.is_empty() {
            self.refuse(conn, doc, refused, refused_raw);
        }
        self.finish_receive(conn, doc, before);
    }

    fn finish_receive(&mut self, conn: ConnId, doc: DocumentId, before: Vec<ChangeHash>) {
        let Some(d) = self.docs.get_mut(&doc) else { return };
        tracing::debug!(document = %doc, before = ?before, after = ?d.am.get_heads(), durable = ?d.durable, in_flight = ?d.write_in_flight.as_ref().map(|w| w.0.0), "received");
        if d.am.get_heads() != before {
            d.phase = DocPhase::Ready;
            d.wanted = false;
            // A device keeps what it found: from now on it syncs it with every peer, on every
            // connection, like the documents it made (else a reconnect would leave it stale).
            if self.config.announce {
                d.announced = true;
                self.announced.insert(doc);
            }
            let waiting: Vec<ConnId> = d.waiting.drain().filter(|c| *c != conn).collect();
            if before.is_empty() {
                // The document exists from now on: peers that talked about the id before (their
                // own creation was refused, say) were never asked about access to *this*
                // document. Those who may not read it leave it, and hear "unavailable".
                self.drop_peers_without_access(doc, conn);
            }
            self.after_change(doc);
            // Peers that asked before it existed get it now, subject to access.
            for c in waiting {
                self.start_sync_with(doc, c);
            }
        } else {
            self.generate(doc, conn);
        }
    }

    /// Removes the document's peers (other than `except`) that may not read it.
    fn drop_peers_without_access(&mut self, doc: DocumentId, except: ConnId) {
        let Some(d) = self.docs.get(&doc) else { return };
        let mut others: Vec<ConnId> = d.peers.keys().copied().filter(|c| *c != except).collect();
        others.sort();
        for c in others {
            let Some(peer) = self.peer_of(c) else { continue };
            if self.policy.access(&peer, &doc) == Access::None {
                self.unavailable(c, doc);
            }
        }
    }

    fn refuse(&mut self, conn: ConnId, doc: DocumentId, refused: Vec<(ChangeHash, Refusal)>, raw: Vec<Vec<u8>>) {
        let Some(peer) = self.peer_of(conn) else { return };
        let Some(d) = self.docs.get_mut(&doc) else { return };
        for (h, r) in &refused {
            d.refused.insert(*h, r.clone());
        }
        let Some(pd) = d.peers.get_mut(&conn) else { return };
        let fresh: Vec<&(ChangeHash, Refusal)> =
            refused.iter().filter(|(h, _)| !pd.refusals_notified.contains(h)).collect();
        if fresh.is_empty() {
            return;
        }
        for (h, _) in &fresh {
            pd.refusals_notified.insert(*h);
        }
        // One notice per reason, so each change is reported with its own.
        let mut by_code: std::collections::BTreeMap<&str, (&str, Vec<ChangeHash>)> = std::collections::BTreeMap::new();
        for (h, r) in &fresh {
            by_code.entry(r.code.as_str()).or_insert((r.message.as_str(), Vec::new())).1.push(*h);
        }
        let notices: Vec<Vec<u8>> =
            by_code.into_iter().map(|(code, (message, hashes))| encode_refusal(&hashes, code, message)).collect();
        for data in notices {
            self.send_own_ephemeral(conn, peer.peer_id.clone(), doc, data);
        }
        self.out.push(Output::Event(Event::Refused { conn, doc, refused, changes: raw }));
    }

    fn on_unavailable(&mut self, conn: ConnId, doc: DocumentId) {
        let conns = self.ready_conns();
        let Some(d) = self.docs.get_mut(&doc) else { return };
        if let Some(pd) = d.peers.get_mut(&conn) {
            pd.said_unavailable = true;
            pd.active = false;
        }
        let all_said = conns.iter().all(|c| d.peers.get(c).is_some_and(|p| p.said_unavailable));
        if all_said {
            d.wanted = false;
            self.out.push(Output::Event(Event::DocUnavailable { doc }));
        }
    }

    fn on_ephemeral(
        &mut self,
        conn: ConnId,
        doc: DocumentId,
        sender: PeerId,
        count: u64,
        session: String,
        data: Vec<u8>,
    ) {
        let Some(c) = self.conns.get_mut(&conn) else { return };
        let ConnPhase::Ready(direct) = &c.phase else { return };
        // Notices (erasure, refusal) count only from the peer we dialled, in its own name: the
        // relay. Forwarded ephemera keep their author's id, so a teammate cannot make a device
        // delete a record or hide a refusal; and a relay never takes notices from devices.
        let from_our_relay = c.side == Side::Initiator && sender == direct.peer_id;
        // Drop repeats: a (sender, session)'s counts only increase.
        if c.seen_ephemeral.len() >= MAX_EPHEMERAL_SESSIONS
            && !c.seen_ephemeral.contains_key(&(sender.clone(), session.clone()))
        {
            c.seen_ephemeral.clear();
        }
        let last = c.seen_ephemeral.entry((sender.clone(), session.clone())).or_insert(0);
        if count <= *last && *last != 0 {
            return;
        }
        *last = count;
        if is_liaison_notice(&data) {
            if !from_our_relay {
                tracing::debug!(document = %doc, "dropping a liaison notice not sent by our relay");
                return;
            }
            if is_erasure(&data) {
                self.out.push(Output::Event(Event::ErasedByPeer { conn, doc }));
            } else if let Some((hashes, code, message)) = decode_refusal(&data) {
                self.out.push(Output::Event(Event::RefusedByPeer { conn, doc, hashes, code, message }));
            }
            return;
        }
        self.out.push(Output::Event(Event::Ephemeral { conn, doc, sender: sender.clone(), data: data.clone() }));
        // Pass it on to the other peers syncing this document that may read it.
        let Some(d) = self.docs.get(&doc) else { return };
        let mut targets: Vec<ConnId> =
            d.peers.iter().filter(|(c, p)| **c != conn && p.active).map(|(c, _)| *c).collect();
        targets.sort();
        for t in targets {
            let Some(p) = self.peer_of(t) else { continue };
            if self.policy.access(&p, &doc) == Access::None {
                continue;
            }
            let m = Message::Ephemeral {
                sender_id: sender.clone(),
                target_id: p.peer_id,
                count,
                session_id: session.clone(),
                document_id: doc,
                data: data.clone(),
            };
            self.send(t, &m);
        }
    }

    fn on_send_ephemeral(&mut self, doc: DocumentId, data: Vec<u8>) {
        let Some(d) = self.docs.get(&doc) else { return };
        let mut targets: Vec<ConnId> = d.peers.iter().filter(|(_, p)| p.active).map(|(c, _)| *c).collect();
        targets.sort();
        for t in targets {
            let Some(p) = self.peer_of(t) else { continue };
            self.send_own_ephemeral(t, p.peer_id, doc, data.clone());
        }
    }

    fn send_erasure(&mut self, conn: ConnId, doc: DocumentId) {
        let Some(peer) = self.peer_of(conn) else { return };
        self.send_own_ephemeral(conn, peer.peer_id, doc, encode_erasure());
    }

    /// Sends an ephemeral message of our own session (counts increase per session).
    fn send_own_ephemeral(&mut self, conn: ConnId, target_id: PeerId, doc: DocumentId, data: Vec<u8>) {
        self.ephemeral_count += 1;
        let m = Message::Ephemeral {
            sender_id: self.config.peer_id.clone(),
            target_id,
            count: self.ephemeral_count,
            session_id: self.session_id.clone(),
            document_id: doc,
            data,
        };
        self.send(conn, &m);
    }

    fn on_erase(&mut self, doc: DocumentId, notify: bool) {
        let entry = self.docs.remove(&doc);
        self.announced.remove(&doc);
        if !notify {
            return;
        }
        let mut conns: Vec<ConnId> = self
            .ready_conns()
            .into_iter()
            .filter(|c| {
                entry.as_ref().is_some_and(|d| d.peers.contains_key(c) || d.waiting.contains(c))
                    || self.conns.get(c).is_some_and(|x| x.touched.contains(&doc))
            })
            .collect();
        conns.sort();
        conns.dedup();
        for c in conns {
            let Some(peer) = self.peer_of(c) else { continue };
            if self.policy.may_know_erased(&peer, &doc) {
                self.send_erasure(c, doc);
            }
        }
    }

    fn on_access_changed(&mut self, only: Option<ConnId>) {
        let mut pairs: Vec<(DocumentId, ConnId)> = self
            .docs
            .iter()
            .flat_map(|(id, d)| d.peers.keys().map(move |c| (*id, *c)))
            .filter(|(_, c)| only.is_none_or(|o| o == *c))
            .collect();
        pairs.sort();
        for (doc, conn) in pairs {
            let Some(peer) = self.peer_of(conn) else { continue };
            if self.policy.access(&peer, &doc) == Access::None {
                self.unavailable(conn, doc);
            }
        }
    }

    // -----------------------------------------------------------------------------------------
    // Time

    fn on_tick(&mut self) {
        let now = self.now;
        let late: Vec<ConnId> = self
            .conns
            .iter()
            .filter(|(_, c)| {
                !matches!(c.phase, ConnPhase::Ready(_)) && now - c.opened_at > self.config.handshake_timeout_ms
            })
            .map(|(id, _)| *id)
            .collect();
        for conn in late {
            self.protocol_error(conn, CloseReason::HandshakeTimeout, "handshake timed out");
        }
        let idle: Vec<DocumentId> = self
            .docs
            .iter()
            .filter(|(_, d)| evictable(d) && now - d.last_used > self.config.idle_evict_ms)
            .map(|(id, _)| *id)
            .collect();
        for doc in idle {
            self.evict(doc);
        }
        // Writes that failed are retried.
        let retry: Vec<DocumentId> = self
            .docs
            .iter()
            .filter(|(_, d)| d.dirty() && d.write_in_flight.is_none() && matches!(d.phase, DocPhase::Ready))
            .map(|(id, _)| *id)
            .collect();
        for doc in retry {
            self.after_change(doc);
        }
        self.evict_over_cap();
    }

    fn evict_over_cap(&mut self) {
        if self.docs.len() <= self.config.resident_cap {
            return;
        }
        let mut candidates: Vec<(i64, DocumentId)> =
            self.docs.iter().filter(|(_, d)| evictable(d)).map(|(id, d)| (d.last_used, *id)).collect();
        candidates.sort();
        let excess = self.docs.len() - self.config.resident_cap;
        for (_, doc) in candidates.into_iter().take(excess) {
            self.evict(doc);
        }
    }

    fn evict(&mut self, doc: DocumentId) {
        let Some(d) = self.docs.remove(&doc) else { return };
        // Sync states of peers without a persistent storage id are parked, encoded, on their
        // connection; the others are already in storage.
        for (conn, pd) in d.peers {
            let Some(c) = self.conns.get_mut(&conn) else { continue };
            if let ConnPhase::Ready(p) = &c.phase
                && persistent_storage(&p.metadata).is_none()
            {
                c.parked.insert(doc, pd.sync.encode());
            }
        }
    }
}

/// automerge's `receive_sync_message` records the peer's heads as "last sent" when they equal
/// ours and the message carries no changes: the peer already knows them. Under durable
/// acknowledgement our heads may include changes not yet stored, so the peer does *not* know
/// they are safe; without this, the acknowledgement owed after the write is never sent.
fn keep_ack_owed(unstored: bool, pd: &mut PeerDoc) {
    if unstored && pd.sync.last_sent_heads != pd.advertised {
        pd.sync.last_sent_heads.clone_from(&pd.advertised);
    }
}

fn evictable(d: &DocEntry) -> bool {
    match &d.phase {
        DocPhase::Ready | DocPhase::Missing => !d.dirty() && d.write_in_flight.is_none() && !d.wanted,
        DocPhase::Loading { .. } => false,
    }
}

/// Storage ids come from peers and become part of store keys: absurd ones are not kept.
const MAX_STORAGE_ID: usize = 128;

fn persistent_storage(m: &PeerMetadata) -> Option<StorageId> {
    if m.is_ephemeral { None } else { m.storage_id.clone().filter(|s| !s.0.is_empty() && s.0.len() <= MAX_STORAGE_ID) }
}

fn initial_state(stored: &HashMap<StorageId, Vec<u8>>, peer: &PeerInfo, parked: Option<Vec<u8>>) -> sync::State {
    let bytes = parked.or_else(|| persistent_storage(&peer.metadata).and_then(|s| stored.get(&s).cloned()));
    let Some(mut state) = bytes.and_then(|b| sync::State::decode(&b).ok()) else {
        return sync::State::new();
    };
    // Optimistic resume: the peer had exactly the shared heads when we last synced, so our
    // first message can already carry what we made since, instead of waiting a round trip for
    // its bloom filter. If it has more (an acknowledgement we never saw) it gets a duplicate,
    // which automerge ignores; if it has less, its reply asks for what is missing.
    if !state.shared_heads.is_empty() {
        let shared = state.shared_heads.clone();
        state.their_heads = Some(shared.clone());
        state.their_need = Some(Vec::new());
        state.their_have = Some(vec![sync::Have { last_sync: shared, bloom: sync::BloomFilter::default() }]);
    }
    state
}

/// Sync states worth persisting: peers with a persistent storage id whose shared heads moved.
fn collect_sync_states(d: &mut DocEntry, conns: &HashMap<ConnId, Conn>) -> Vec<(StorageId, Vec<u8>)> {
    let mut out = Vec::new();
    for (conn, pd) in d.peers.iter_mut() {
        let Some(Conn { phase: ConnPhase::Ready(p), .. }) = conns.get(conn) else { continue };
        let Some(s) = persistent_storage(&p.metadata) else { continue };
        if pd.sync.shared_heads != pd.persisted_shared {
            pd.persisted_shared = pd.sync.shared_heads.clone();
            let encoded = pd.sync.encode();
            d.stored_states.insert(s.clone(), encoded.clone());
            out.push((s, encoded));
        }
    }
    out.sort();
    out
}

/// The validation every relay applies: a submitted record refuses all further changes until an
/// admin unlocks it on the relay. Changes that submit a draft are accepted.
pub fn refuse_changes_to_locked(before: &Automerge, new: &[Change]) -> Vec<(ChangeHash, Refusal)> {
    if !crate::model::is_locked(before) {
        return Vec::new();
    }
    new.iter()
        .map(|c| (c.hash(), Refusal::new("locked", "the record is submitted and locked; an admin must unlock it")))
        .collect()
}

/// Encodes a refusal notice: `{"liaison": "liaison/refused", "changes": [hex], "code", "message"}`.
pub fn encode_refusal(hashes: &[ChangeHash], code: &str, message: &str) -> Vec<u8> {
    let mut buf = Vec::new();
    let mut e = minicbor::Encoder::new(&mut buf);
    let _ = e.map(4).and_then(|e| e.str("liaison")).and_then(|e| e.str(REFUSAL_KIND));
    let _ = e.str("changes").and_then(|e| e.array(hashes.len() as u64));
    for h in hashes {
        let _ = e.str(&h.to_string());
    }
    let _ = e.str("code").and_then(|e| e.str(code));
    let _ = e.str("message").and_then(|e| e.str(message));
    buf
}

/// Encodes an erasure notice.
pub fn encode_erasure() -> Vec<u8> {
    let mut buf = Vec::new();
    let _ = minicbor::Encoder::new(&mut buf).map(1).and_then(|e| e.str("liaison")).and_then(|e| e.str(ERASED_KIND));
    buf
}

/// Whether ephemeral data is a liaison notice of any kind (a CBOR map with a `liaison` key).
pub fn is_liaison_notice(data: &[u8]) -> bool {
    let mut d = minicbor::Decoder::new(data);
    let Ok(Some(n)) = d.map() else { return false };
    for _ in 0..n.min(16) {
        match d.str() {
            Ok("liaison") => return true,
            Ok(_) => {
                if d.skip().is_err() {
                    return false;
                }
            }
            Err(_) => return false,
        }
    }
    false
}

/// Whether ephemeral data is an erasure notice.
pub fn is_erasure(data: &[u8]) -> bool {
    let mut d = minicbor::Decoder::new(data);
    let Ok(Some(n)) = d.map() else { return false };
    for _ in 0..n.min(16) {
        match d.str() {
            Ok("liaison") => return d.str().is_ok_and(|k| k == ERASED_KIND),
            Ok(_) => {
                if d.skip().is_err() {
                    return false;
                }
            }
            Err(_) => return false,
        }
    }
    false
}

/// Decodes a refusal notice; `None` for any other ephemeral data.
pub fn decode_refusal(data: &[u8]) -> Option<(Vec<ChangeHash>, String, String)> {
    let mut d = minicbor::Decoder::new(data);
    let n = d.map().ok()??;
    let mut kind = None;
    let mut hashes = Vec::new();
    let mut code = String::new();
    let mut message = String::new();
    for _ in 0..n.min(16) {
        match d.str().ok()? {
            "liaison" => kind = Some(d.str().ok()?.to_owned()),
            "changes" => {
                let len = d.array().ok()??;
                for _ in 0..len.min(100_000) {
                    hashes.push(d.str().ok()?.parse::<ChangeHash>().ok()?);
                }
            }
            "code" => code = d.str().ok()?.to_owned(),
            "message" => message = d.str().ok()?.to_owned(),
            _ => d.skip().ok()?,
        }
    }
    (kind.as_deref() == Some(REFUSAL_KIND)).then_some((hashes, code, message))
}
