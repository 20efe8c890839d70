//! Ephemeral messages (presence, notices) and erasure.

use super::{
    Access, ConnId, ConnPhase, Engine, Event, MAX_EPHEMERAL_SESSIONS, Output, Side, decode_refusal, encode_erasure,
    is_erasure, is_liaison_notice,
};
use crate::DocumentId;
use crate::sync::wire::{Message, PeerId};

impl Engine {
    pub(super) fn on_ephemeral(
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
        // A peer that dialled us (a device, at a relay) sends ephemera in its own name only:
        // what it passes on to others must not speak for another device.
        if c.side == Side::Receiver && sender != direct.peer_id {
            tracing::debug!(document = %doc, "dropping ephemeral data sent under another peer's id");
            return;
        }
        let direct_peer = direct.clone();
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
        // Only a message its sender wrote itself can be judged against the sender's identity.
        if sender == direct_peer.peer_id && !self.policy.accept_ephemeral(&direct_peer, &doc, &data) {
            tracing::debug!(document = %doc, "the policy refused ephemeral data from its author");
            return;
        }
        self.out.push(Output::Event(Event::Ephemeral { conn, doc, sender: sender.clone(), data: data.clone() }));
        // Pass it on to the other peers syncing this document that may read it: those with a
        // sync state for it now, and those that synced it on this connection before it was
        // evicted (they hear of it again at the next change, and should of presence now).
        let Some(d) = self.docs.get(&doc) else { return };
        let mut targets: std::collections::BTreeSet<ConnId> =
            d.peers.iter().filter(|(c, p)| **c != conn && p.active).map(|(c, _)| *c).collect();
        targets.extend(
            self.conns
                .iter()
                .filter(|(c, x)| **c != conn && matches!(x.phase, ConnPhase::Ready(_)) && x.touched.contains(&doc))
                .map(|(c, _)| *c),
        );
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

    pub(super) fn on_send_ephemeral(&mut self, doc: DocumentId, data: Vec<u8>) {
        // To the peers syncing the document, or, while it is not resident here or still
        // loading, to every peer ready (a device's: its relay, which checks access).
        let active: Vec<ConnId> = self
            .docs
            .get(&doc)
            .map(|d| d.peers.iter().filter(|(_, p)| p.active).map(|(c, _)| *c).collect())
            .unwrap_or_default();
        let targets = if active.is_empty() { self.ready_conns() } else { active };
        for t in targets {
            let Some(p) = self.peer_of(t) else { continue };
            self.send_own_ephemeral(t, p.peer_id, doc, data.clone());
        }
    }

    pub(super) fn send_erasure(&mut self, conn: ConnId, doc: DocumentId) {
        let Some(peer) = self.peer_of(conn) else { return };
        self.send_own_ephemeral(conn, peer.peer_id, doc, encode_erasure());
    }

    /// Sends an ephemeral message of our own session (counts increase per session).
    pub(super) fn send_own_ephemeral(&mut self, conn: ConnId, target_id: PeerId, doc: DocumentId, data: Vec<u8>) {
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

    pub(super) fn on_erase(&mut self, doc: DocumentId, notify: bool) {
        let entry = self.docs.remove(&doc);
        self.announced.remove(&doc);
        if !notify {
            return;
        }
        let conns: Vec<ConnId> = self
            .ready_conns()
            .into_iter()
            .filter(|c| {
                entry.as_ref().is_some_and(|d| d.peers.contains_key(c) || d.waiting.contains(c))
                    || self.conns.get(c).is_some_and(|x| x.touched.contains(&doc))
            })
            .collect();
        for c in conns {
            let Some(peer) = self.peer_of(c) else { continue };
            if self.policy.may_know_erased(&peer, &doc) {
                self.send_erasure(c, doc);
            }
        }
    }
}
