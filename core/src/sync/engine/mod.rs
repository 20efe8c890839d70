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

mod admission;
mod api;
mod catalog;
mod config;
mod conn;
mod disk;
mod doc;
mod ephemeral;
mod eviction;
mod generate;
mod peer;
mod policy;
mod receive;
mod reload;
mod room;
mod unjudged;

use std::collections::{BTreeMap, BTreeSet};

use automerge::Automerge;

pub use super::notice::{
    ERASED_KIND, REFUSAL_KIND, decode_refusal, encode_erasure, encode_refusal, is_erasure, is_liaison_notice,
};
pub use api::{CloseReason, ConnId, Event, Input, Output, Side, StorageResult, StorageTask, TaskId};
pub use config::EngineConfig;
use conn::{Conn, ConnPhase, MAX_EPHEMERAL_SESSIONS};
use disk::{OnDisk, Write};
use doc::{DocEntry, DocPhase};
use peer::{PeerDoc, Progress, persistent_storage};
pub use policy::{Access, OpenPolicy, PeerInfo, Policy, Refusal, refuse_changes_to_locked};

use crate::DocumentId;

/// The engine. See the module docs.
pub struct Engine {
    config: EngineConfig,
    policy: Box<dyn Policy>,
    conns: BTreeMap<ConnId, Conn>,
    docs: BTreeMap<DocumentId, DocEntry>,
    tasks: BTreeMap<TaskId, DocumentId>,
    next_task: u64,
    now: i64,
    out: Vec<Output>,
    /// Documents a device announces to every peer, resident or not.
    announced: BTreeSet<DocumentId>,
    session_id: String,
    ephemeral_count: u64,
    /// `evict_over_cap` scans again only once this many documents are resident (0: always).
    evict_rescan_at: usize,
    /// Reloads whose load failed (the store unreachable), tried again on the next tick with
    /// the peers they must reset (see `reload`).
    reloads_owed: BTreeMap<DocumentId, DocEntry>,
    eviction_scans: u64,
    /// Bytes of messages held on all connections for a policy that cannot tell (`unjudged`).
    unjudged_bytes: usize,
    /// Loads for peers' messages, admitted a few at a time (`admission`).
    admission: admission::Admission,
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
            conns: BTreeMap::new(),
            docs: BTreeMap::new(),
            tasks: BTreeMap::new(),
            next_task: 0,
            now: 0,
            out: Vec::new(),
            announced: BTreeSet::new(),
            session_id,
            ephemeral_count: 0,
            evict_rescan_at: 0,
            reloads_owed: BTreeMap::new(),
            eviction_scans: 0,
            unjudged_bytes: 0,
            admission: Default::default(),
        }
    }

    /// The configuration the engine was made with.
    pub fn config(&self) -> &EngineConfig {
        &self.config
    }

    /// Documents loaded now.
    pub fn resident(&self) -> usize {
        self.docs.len()
    }

    /// The durable heads of a resident, loaded document with nothing unstored (what this engine
    /// knows is stored); `None` otherwise.
    pub fn durable_heads(&self, doc: &DocumentId) -> Option<Vec<automerge::ChangeHash>> {
        self.docs
            .get(doc)
            .filter(|d| matches!(d.phase, DocPhase::Ready) && !d.disk.unstored(&d.am))
            .map(|d| d.disk.durable().to_vec())
    }

    /// Whether this engine has anything to do with `doc`: it is resident, announced, or a
    /// connection asked for it. A change stored elsewhere to a document it does not concern
    /// needs nothing from it (a later request loads the document as stored).
    pub fn concerns(&self, doc: &DocumentId) -> bool {
        self.docs.contains_key(doc)
            || self.announced.contains(doc)
            || self.conns.values().any(|c| c.touched.contains(doc))
    }

    /// Every resident document with its durable heads (what this engine knows is stored),
    /// loaded ones with nothing unstored only (a write of the others is on its way, and
    /// conflicts if another writer changed them): for comparing with the store.
    pub fn resident_heads(&self) -> Vec<(DocumentId, Vec<automerge::ChangeHash>)> {
        self.docs
            .iter()
            .filter(|(_, d)| matches!(d.phase, DocPhase::Ready) && !d.disk.unstored(&d.am))
            .map(|(id, d)| (*id, d.disk.durable().to_vec()))
            .collect()
    }

    /// How many times the resident set was scanned for documents to evict (a diagnostic: each
    /// scan reads every resident document).
    pub fn eviction_scans(&self) -> u64 {
        self.eviction_scans
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
            Input::StorageDone { task, result } => {
                self.on_storage(task, result);
                self.admit_loads();
            }
            Input::Tick => self.on_tick(),
            Input::Reload { doc } => self.reload(doc),
            Input::Announce { doc } => self.on_announce(doc),
            Input::Find { doc } => self.on_find(doc),
            Input::LocalChanges { doc, changes } => self.on_local_changes(doc, &changes),
            Input::StoredElsewhere { doc, changes } => self.on_stored_elsewhere(doc, &changes),
            Input::SendEphemeral { doc, data } => self.on_send_ephemeral(doc, data),
            Input::AccessChanged { conn } => self.on_access_changed(conn),
            Input::Close { conn, reason } => self.close(conn, CloseReason::ByApplication(reason)),
            Input::Erase { doc, notify } => self.on_erase(doc, notify),
            Input::SendNotice { conn, data } => self.on_send_notice(conn, data),
            Input::Settled { doc } => self.on_settled(doc),
            Input::Room { conn, bytes } => self.on_room(conn, bytes),
        }
        std::mem::take(&mut self.out)
    }
}
