//! Receiving: document messages from peers, screening and applying their changes.

use std::collections::BTreeSet;

use automerge::ChangeHash;
use automerge::sync::{self, SyncDoc};

use super::{
    Access, CloseReason, ConnId, DocEntry, DocPhase, Engine, Event, Output, PeerInfo, Refusal, encode_refusal,
};
use crate::DocumentId;
use crate::sync::inflation;
use crate::sync::screen::{ScreenError, ScreenInput, Screened, screen};
use crate::sync::wire::Message;

impl Engine {
    /// A document message from `conn`: judged after what the connection holds for a policy that
    /// could not tell, and held behind it if it is for the same document.
    pub(super) fn on_doc_message(&mut self, conn: ConnId, msg: Message) {
        self.judge_unjudged(conn);
        if let Some(doc) = msg.document_id().copied()
            && self.behind_unjudged(conn, &doc)
        {
            self.hold_unjudged(conn, doc, msg);
            return;
        }
        self.on_doc_message_now(conn, msg);
    }

    pub(super) fn on_doc_message_now(&mut self, conn: ConnId, msg: Message) {
        let Some(peer) = self.peer_of(conn) else { return };
        let Some(doc) = msg.document_id().copied() else {
            return; // remote-subscription-change and unknown types: nothing to do for now.
        };
        if doc == crate::sync::catalog::catalog_doc() {
            self.on_catalog_message(conn, msg);
            return;
        }
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
            if self.policy.cannot_tell(&doc) {
                self.hold_unjudged(conn, doc, msg);
                return;
            }
            if self.policy.may_know_erased(&peer, &doc) {
                self.send_erasure(conn, doc);
            }
            self.unavailable(conn, doc);
            return;
        }
        let access = self.policy.access(&peer, &doc);
        if access == Access::None {
            if matches!(msg, Message::Request { .. } | Message::Sync { .. }) {
                if self.policy.cannot_tell(&doc) {
                    self.hold_unjudged(conn, doc, msg);
                } else {
                    self.unavailable(conn, doc);
                }
            }
            return;
        }
        match self.docs.get_mut(&doc) {
            None => {
                let Some(msg) = self.wait_for_load(doc, conn, msg) else { return };
                self.start_load(doc);
                self.admitted(doc);
                if let Some(DocEntry { phase: DocPhase::Loading { queued, .. }, .. }) = self.docs.get_mut(&doc) {
                    queued.push_back((conn, msg));
                }
                return;
            }
            Some(DocEntry { phase: DocPhase::Loading { queued, .. }, .. }) => {
                queued.push_back((conn, msg));
                return;
            }
            Some(d)
                if d.rebase != super::doc::Rebase::Idle
                    && matches!(msg, Message::Request { .. } | Message::Sync { .. }) =>
            {
                d.held.push_back((conn, msg));
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

    pub(super) fn on_sync(&mut self, conn: ConnId, peer: &PeerInfo, doc: DocumentId, access: Access, data: &[u8]) {
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
        let pd = super::doc::peer_entry(&mut d.peers, &d.stored_states, &mut d.reset_peers, conn, peer, parked);
        pd.active = true;
        pd.said_unavailable = false;
        let before = d.am.get_heads();
        let screened = if msg.changes.is_empty() {
            Screened {
                apply: Some(msg),
                trial: None,
                refused: Vec::new(),
                refused_raw: Vec::new(),
                accepted: Vec::new(),
                missing: Vec::new(),
            }
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
        let Screened { apply, trial, refused, refused_raw, accepted, missing } = screened;
        let their_before = pd.sync.their_heads.clone().unwrap_or_default();
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
        // Who sent what is not stored yet: judged again if another node's write wins (`reload`).
        d.senders.extend(accepted.into_iter().map(|h| (h, conn)));
        pd.left_out(&missing);
        pd.keep_ack_owed(d.disk.unstored(&d.am));
        let their = pd.sync.their_heads.clone().unwrap_or_default();
        pd.answer_withdrawn_heads(&d.am, &their_before, &their);
        self.out.push(Output::Event(Event::PeerHeads { conn, doc, heads: their }));
        if !refused.is_empty() {
            self.refuse(conn, doc, refused, refused_raw);
        }
        self.finish_receive(conn, doc, before);
    }

    pub(super) fn finish_receive(&mut self, conn: ConnId, doc: DocumentId, before: Vec<ChangeHash>) {
        let Some(d) = self.docs.get_mut(&doc) else { return };
        tracing::debug!(document = %doc, before = ?before, after = ?d.am.get_heads(), durable = ?d.disk.durable(), in_flight = ?d.disk.in_flight_task(), "received");
        if d.am.get_heads() != before {
            d.phase = DocPhase::Ready;
            d.wanted = false;
            // A device keeps what it found: from now on it syncs it with every peer, on every
            // connection, like the documents it made (else a reconnect would leave it stale).
            if self.config.announce {
                d.announced = true;
                self.announced.insert(doc);
            }
            let mut waiting: BTreeSet<ConnId> = std::mem::take(&mut d.waiting);
            if before.is_empty() {
                // The document exists from now on: peers that talked about the id before (their
                // own creation was refused, say) were never asked about access to *this*
                // document. Those who may not read it leave it, and hear "unavailable".
                self.drop_peers_without_access(doc, conn);
                // Every connection that asked about the id is waiting for it, even if the entry
                // that remembered it was evicted while the document did not exist.
                waiting.extend(
                    self.ready_conns()
                        .into_iter()
                        .filter(|c| self.conns.get(c).is_some_and(|x| x.touched.contains(&doc))),
                );
            }
            waiting.remove(&conn);
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
    pub(super) fn drop_peers_without_access(&mut self, doc: DocumentId, except: ConnId) {
        let Some(d) = self.docs.get(&doc) else { return };
        let others: Vec<ConnId> = d.peers.keys().copied().filter(|c| *c != except).collect();
        for c in others {
            let Some(peer) = self.peer_of(c) else { continue };
            if self.policy.access(&peer, &doc) == Access::None {
                self.unavailable(c, doc);
            }
        }
    }

    pub(super) fn refuse(
        &mut self,
        conn: ConnId,
        doc: DocumentId,
        refused: Vec<(ChangeHash, Refusal)>,
        raw: Vec<Vec<u8>>,
    ) {
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

    pub(super) fn on_unavailable(&mut self, conn: ConnId, doc: DocumentId) {
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
}
