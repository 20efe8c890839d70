//! Per-peer sync state of one document, and the messages generated from it.

use std::collections::{HashMap, HashSet};

use automerge::ChangeHash;
use automerge::sync::{self, SyncDoc};

use super::{Access, ConnId, DocPhase, Engine, PeerInfo};
use crate::DocumentId;
use crate::sync::wire::{Message, PeerMetadata, StorageId};

#[derive(Debug)]
pub(super) struct PeerDoc {
    pub(super) sync: sync::State,
    /// Whether we have ever answered this peer for this document.
    pub(super) active: bool,
    /// Messages sent without either side's heads moving.
    pub(super) stalled: u32,
    pub(super) last_heads: (Vec<ChangeHash>, Vec<ChangeHash>),
    /// Shared heads last written to storage for this peer's storage id.
    pub(super) persisted_shared: Vec<ChangeHash>,
    pub(super) said_unavailable: bool,
    pub(super) refusals_notified: HashSet<ChangeHash>,
    /// Heads of the last message we actually sent this peer.
    pub(super) advertised: Vec<ChangeHash>,
}

impl PeerDoc {
    pub(super) fn new(sync: sync::State) -> Self {
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

impl Engine {
    /// Begins syncing `doc` with `conn` if the peer may read it.
    pub(super) fn start_sync_with(&mut self, doc: DocumentId, conn: ConnId) {
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
    pub(super) fn generate(&mut self, doc: DocumentId, conn: ConnId) {
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

    pub(super) fn unavailable(&mut self, conn: ConnId, doc: DocumentId) {
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
}

/// automerge's `receive_sync_message` records the peer's heads as "last sent" when they equal
/// ours and the message carries no changes: the peer already knows them. Under durable
/// acknowledgement our heads may include changes not yet stored, so the peer does *not* know
/// they are safe; without this, the acknowledgement owed after the write is never sent.
pub(super) fn keep_ack_owed(unstored: bool, pd: &mut PeerDoc) {
    if unstored && pd.sync.last_sent_heads != pd.advertised {
        pd.sync.last_sent_heads.clone_from(&pd.advertised);
    }
}

/// Storage ids come from peers and become part of store keys: absurd ones are not kept.
pub(super) const MAX_STORAGE_ID: usize = 128;

pub(super) fn persistent_storage(m: &PeerMetadata) -> Option<StorageId> {
    if m.is_ephemeral { None } else { m.storage_id.clone().filter(|s| !s.0.is_empty() && s.0.len() <= MAX_STORAGE_ID) }
}

pub(super) fn initial_state(
    stored: &HashMap<StorageId, Vec<u8>>,
    peer: &PeerInfo,
    parked: Option<Vec<u8>>,
) -> sync::State {
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
