//! Sending: starting to sync a document with a peer, generating its next message, and
//! "unavailable".

use super::{Access, ConnId, DocPhase, Engine, Progress};
use crate::DocumentId;
use crate::sync::wire::Message;

impl Engine {
    /// Begins syncing `doc` with `conn` if the peer may read it.
    pub(super) fn start_sync_with(&mut self, doc: DocumentId, conn: ConnId) {
        let Some(peer) = self.peer_of(conn) else { return };
        if self.policy.access(&peer, &doc) == Access::None {
            return;
        }
        let parked = self.conns.get_mut(&conn).and_then(|c| c.parked.remove(&doc));
        let Some(d) = self.docs.get_mut(&doc) else { return };
        let pd = super::doc::peer_entry(&mut d.peers, &d.stored_states, &mut d.reset_peers, conn, &peer, parked);
        pd.active = true;
        self.generate(doc, conn);
    }

    /// Generates and sends the next sync message for (`doc`, `conn`), if any and if allowed.
    pub(super) fn generate(&mut self, doc: DocumentId, conn: ConnId) {
        let Some(peer) = self.peer_of(conn) else { return };
        if self.wait_for_room(doc, conn) {
            return;
        }
        let loop_guard = self.config.loop_guard;
        let Some(d) = self.docs.get_mut(&doc) else { return };
        if d.disk.unstored(&d.am) {
            tracing::debug!(document = %doc, "not generating: unstored changes");
            return; // Durable acknowledgement: advertise only what is on disk.
        }
        let missing = matches!(d.phase, DocPhase::Missing);
        let Some(pd) = d.peers.get_mut(&conn) else { return };
        if pd.said_unavailable {
            return;
        }
        match pd.progress(d.am.get_heads(), loop_guard) {
            Progress::Stalled => {
                tracing::debug!(document = %doc, "not generating: stalled");
                return; // Give up until something changes.
            }
            Progress::Reset => tracing::warn!(document = %doc, "sync made no progress; resetting the sync state"),
            Progress::Moving => {}
        }
        let Some(msg) = pd.generate(&d.am) else {
            tracing::debug!(document = %doc, peer = %peer.peer_id, in_flight = pd.sync.in_flight, heads = ?d.am.get_heads(), last_sent = ?pd.sync.last_sent_heads, their = ?pd.sync.their_heads, "nothing to send");
            return;
        };
        tracing::debug!(document = %doc, peer = %peer.peer_id, changes = msg.changes.len(), heads = ?msg.heads, "sending sync");
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
