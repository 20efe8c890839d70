//! Connections: the handshake, closing, and what each connection remembers.

use std::collections::{BTreeMap, BTreeSet};

use super::{CloseReason, ConnId, DocPhase, Engine, Event, Output, PeerInfo, Side, StorageTask, persistent_storage};
use crate::DocumentId;
use crate::sync::wire::{self, Message, PROTOCOL_V1, PeerId, PeerMetadata};

#[derive(Debug)]
pub(super) enum ConnPhase {
    AwaitingJoin,
    AwaitingPeer,
    Ready(PeerInfo),
}

#[derive(Debug)]
pub(super) struct Conn {
    pub(super) phase: ConnPhase,
    pub(super) side: Side,
    pub(super) opened_at: i64,
    /// Ephemeral sync states of documents evicted while this connection syncs them.
    pub(super) parked: BTreeMap<DocumentId, Vec<u8>>,
    /// Documents this connection has asked about, for the per-connection limit.
    pub(super) touched: BTreeSet<DocumentId>,
    /// The last ephemeral count seen per (sender, session) on this connection: repeats are
    /// dropped. Kept per connection and bounded, so it goes with the socket and one sender can
    /// neither grow it for good nor silence another sender (the relay's notices included).
    pub(super) seen_ephemeral: BTreeMap<(PeerId, String), u64>,
    /// Messages waiting for a policy that could not tell (see `unjudged`).
    pub(super) unjudged: super::unjudged::Unjudged,
    /// Room in the driver's queue for this connection (see `room`).
    pub(super) room: super::room::Room,
}

/// Most (sender, session) pairs one connection remembers; past it the memory starts afresh
/// (a repeat may then pass once, which costs nothing but a duplicate).
pub(super) const MAX_EPHEMERAL_SESSIONS: usize = 1024;

impl Engine {
    pub(super) fn on_connected(&mut self, conn: ConnId, side: Side) {
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
                parked: BTreeMap::new(),
                touched: BTreeSet::new(),
                seen_ephemeral: BTreeMap::new(),
                unjudged: Default::default(),
                room: Default::default(),
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

    pub(super) fn metadata(&self) -> PeerMetadata {
        PeerMetadata {
            storage_id: self.config.storage_id.clone(),
            is_ephemeral: self.config.is_ephemeral,
            catalog: self.config.catalog.clone(),
        }
    }

    pub(super) fn send(&mut self, conn: ConnId, msg: &Message) {
        let frame = msg.encode();
        if let Some(c) = self.conns.get_mut(&conn) {
            c.room.spend(frame.len());
        }
        self.out.push(Output::Send { conn, frame });
    }

    pub(super) fn close(&mut self, conn: ConnId, reason: CloseReason) {
        if self.conns.contains_key(&conn) {
            self.out.push(Output::Close { conn, reason });
            self.on_disconnected(conn);
        }
    }

    pub(super) fn protocol_error(&mut self, conn: ConnId, reason: CloseReason, text: &str) {
        let target_id = self.peer_of(conn).map(|p| p.peer_id);
        self.send(
            conn,
            &Message::Error { sender_id: Some(self.config.peer_id.clone()), target_id, message: text.to_owned() },
        );
        self.close(conn, reason);
    }

    pub(super) fn peer_of(&self, conn: ConnId) -> Option<PeerInfo> {
        match &self.conns.get(&conn)?.phase {
            ConnPhase::Ready(p) => Some(p.clone()),
            _ => None,
        }
    }

    pub(super) fn on_disconnected(&mut self, conn: ConnId) {
        let Some(c) = self.conns.remove(&conn) else { return };
        self.forget_unjudged(&c.unjudged);
        self.forget_waiting_loads(conn);
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
                let (encoded, moved) = pd.leave();
                d.stored_states.insert(s.clone(), encoded.clone());
                if moved {
                    saves.push((*id, vec![(s.clone(), encoded)]));
                }
            }
        }
        for (doc, sync_states) in saves {
            self.task(doc, StorageTask::SaveSyncStates { doc, sync_states });
        }
        self.out.push(Output::Event(Event::PeerGone { conn, peer_id: peer.map(|p| p.peer_id) }));
    }

    pub(super) fn on_frame(&mut self, conn: ConnId, frame: &[u8]) {
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

    pub(super) fn peer_ready(&mut self, conn: ConnId, peer: PeerInfo) {
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

    pub(super) fn ready_conns(&self) -> Vec<ConnId> {
        self.conns.iter().filter(|(_, c)| matches!(c.phase, ConnPhase::Ready(_))).map(|(id, _)| *id).collect()
    }
}
