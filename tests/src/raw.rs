//! A raw automerge-repo peer for attack tests: hand-made frames over a real WebSocket, with
//! stock automerge and core's wire codec only (no engine, no store, no client), so a test can
//! send exactly what a hostile device would.

use std::sync::Arc;
use std::time::Duration;

use automerge::sync::{self, ChunkList, MessageVersion, SyncDoc};
use automerge::{Automerge, Change, ChangeHash, ReadDoc};
use futures::{SinkExt, StreamExt};
use liaison_core::DocumentId;
use liaison_core::client::{Trust, tls_config};
use liaison_core::sync::wire::{Message, PeerId};
use tokio_tungstenite::tungstenite::Message as Ws;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

use crate::{Relay, WAIT};

pub type Socket = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// What the relay did with a raw peer's connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Heard {
    Frame(Message),
    Closed(u16, String),
}

/// A connected, joined raw peer.
pub struct RawPeer {
    pub ws: Socket,
    pub peer_id: String,
    pub relay_id: PeerId,
}

/// Opens a WebSocket to the relay with `token`, without joining.
pub async fn connect(relay: &Relay, token: &str) -> Socket {
    let mut req = relay.url.as_str().into_client_request().unwrap();
    req.headers_mut().insert("authorization", format!("Bearer {token}").parse().unwrap());
    let tls = Arc::new(tls_config(&Trust::PinnedKeys { pins: vec![relay.spki_pin] }).unwrap());
    let connector = tokio_tungstenite::Connector::Rustls(tls);
    let config = tokio_tungstenite::tungstenite::protocol::WebSocketConfig::default().max_message_size(Some(64 << 20));
    let (ws, _) =
        tokio_tungstenite::connect_async_tls_with_config(req, Some(config), true, Some(connector)).await.unwrap();
    ws
}

/// A join frame for `peer`.
pub fn join_frame(peer: &str) -> Vec<u8> {
    Message::Join { sender_id: peer.into(), supported_protocol_versions: vec!["1".into()], metadata: None }.encode()
}

/// A join frame for `peer` presenting a storage id (so the relay keeps sync state for it).
pub fn join_frame_with_storage(peer: &str, storage_id: &str) -> Vec<u8> {
    let metadata = liaison_core::sync::wire::PeerMetadata {
        storage_id: Some(liaison_core::sync::wire::StorageId(storage_id.to_owned())),
        is_ephemeral: false,
        catalog: None,
    };
    Message::Join { sender_id: peer.into(), supported_protocol_versions: vec!["1".into()], metadata: Some(metadata) }
        .encode()
}

/// A sync message carrying `changes` (raw change chunks) and announcing `heads`.
pub fn sync_message(heads: Vec<ChangeHash>, chunks: Vec<Vec<u8>>) -> Vec<u8> {
    sync::Message {
        heads,
        need: Vec::new(),
        have: Vec::new(),
        changes: ChunkList::from(chunks),
        flags: None,
        version: MessageVersion::V1,
    }
    .encode()
}

/// The raw bytes of changes.
pub fn raw(changes: &[&Change]) -> Vec<Vec<u8>> {
    changes.iter().map(|c| c.raw_bytes().to_vec()).collect()
}

/// The last change of a document.
pub fn last_change(doc: &Automerge) -> Change {
    let heads = doc.get_heads();
    doc.get_change_by_hash(&heads[0]).unwrap()
}

impl RawPeer {
    /// Connects and completes the join/peer handshake as `peer`.
    pub async fn join(relay: &Relay, token: &str, peer: &str) -> Self {
        let mut ws = connect(relay, token).await;
        ws.send(Ws::Binary(join_frame(peer).into())).await.unwrap();
        let mut p = Self { ws, peer_id: peer.into(), relay_id: PeerId(String::new()) };
        match p.next().await {
            Heard::Frame(Message::Peer { sender_id, .. }) => p.relay_id = sender_id,
            other => panic!("{peer}: expected the relay's peer message, got {other:?}"),
        }
        p
    }

    /// Connects and sends a join presenting `storage_id`; returns the peer without waiting.
    pub async fn join_with_storage(relay: &Relay, token: &str, peer: &str, storage_id: &str) -> Self {
        let mut ws = connect(relay, token).await;
        ws.send(Ws::Binary(join_frame_with_storage(peer, storage_id).into())).await.unwrap();
        Self { ws, peer_id: peer.into(), relay_id: PeerId(String::new()) }
    }

    pub async fn send_frame(&mut self, frame: Vec<u8>) {
        let _ = self.ws.send(Ws::Binary(frame.into())).await;
    }

    /// Sends a sync message for `doc`.
    pub async fn sync(&mut self, doc: DocumentId, heads: Vec<ChangeHash>, chunks: Vec<Vec<u8>>) {
        let m = Message::Sync {
            sender_id: self.peer_id.as_str().into(),
            target_id: self.relay_id.clone(),
            document_id: doc,
            data: sync_message(heads, chunks),
        };
        self.send_frame(m.encode()).await;
    }

    /// Sends all of `doc`'s changes, as a device that made it would.
    pub async fn push(&mut self, id: DocumentId, doc: &Automerge) {
        let changes = doc.get_changes(&[]);
        self.sync(id, doc.get_heads(), changes.iter().map(|c| c.raw_bytes().to_vec()).collect()).await;
    }

    /// Asks for a document (an empty first sync message, as automerge-repo's `find`).
    pub async fn request(&mut self, doc: DocumentId) {
        let mut state = sync::State::new();
        let data = Automerge::new().generate_sync_message(&mut state).map(sync::Message::encode).unwrap_or_default();
        let m = Message::Request {
            sender_id: self.peer_id.as_str().into(),
            target_id: self.relay_id.clone(),
            document_id: doc,
            data,
        };
        self.send_frame(m.encode()).await;
    }

    /// The next frame or the close, within [`WAIT`].
    pub async fn next(&mut self) -> Heard {
        self.next_within(WAIT).await.unwrap_or_else(|| panic!("{}: nothing heard from the relay", self.peer_id))
    }

    /// The next frame or the close, or `None` if nothing comes within `wait`.
    pub async fn next_within(&mut self, wait: Duration) -> Option<Heard> {
        let r = tokio::time::timeout(wait, async {
            loop {
                match self.ws.next().await {
                    Some(Ok(Ws::Binary(b))) => {
                        return Heard::Frame(liaison_core::sync::wire::decode(&b, 64 << 20).unwrap());
                    }
                    Some(Ok(Ws::Close(Some(f)))) => return Heard::Closed(u16::from(f.code), f.reason.to_string()),
                    Some(Ok(Ws::Close(None))) | Some(Err(_)) | None => return Heard::Closed(0, String::new()),
                    Some(Ok(_)) => {}
                }
            }
        })
        .await;
        r.ok()
    }

    /// Reads until `pick` returns something, failing on a close or after [`WAIT`].
    pub async fn until<T>(&mut self, what: &str, mut pick: impl FnMut(&Message) -> Option<T>) -> T {
        loop {
            match self.next().await {
                Heard::Frame(m) => {
                    if let Some(t) = pick(&m) {
                        return t;
                    }
                }
                Heard::Closed(code, reason) => {
                    panic!("{}: closed ({code} {reason}) while waiting for {what}", self.peer_id)
                }
            }
        }
    }

    /// Reads until the relay closes the connection; returns its code and reason.
    pub async fn closed(&mut self) -> (u16, String) {
        loop {
            if let Heard::Closed(code, reason) = self.next().await {
                return (code, reason);
            }
        }
    }

    /// Waits for a refusal notice on `doc` that names `change`; returns its code.
    pub async fn refusal_of(&mut self, doc: DocumentId, change: ChangeHash) -> String {
        self.until("a refusal notice naming the change", |m| match m {
            Message::Ephemeral { document_id, data, .. } if *document_id == doc => {
                liaison_core::sync::engine::decode_refusal(data)
                    .filter(|(hashes, _, _)| hashes.contains(&change))
                    .map(|(_, code, _)| code)
            }
            _ => None,
        })
        .await
    }

    /// Waits for a refusal notice on `doc`; returns its code.
    pub async fn refusal(&mut self, doc: DocumentId) -> String {
        self.until("a refusal notice", |m| match m {
            Message::Ephemeral { document_id, data, .. } if *document_id == doc => {
                liaison_core::sync::engine::decode_refusal(data).map(|(_, code, _)| code)
            }
            _ => None,
        })
        .await
    }

    /// Waits until the relay acknowledges `heads` of `doc` (its sync message lists them).
    pub async fn acked(&mut self, doc: DocumentId, heads: &[ChangeHash]) {
        let mut want = heads.to_vec();
        want.sort();
        self.until("the relay's acknowledgement", |m| match m {
            Message::Sync { document_id, data, .. } if *document_id == doc => {
                let msg = sync::Message::decode(data).ok()?;
                let mut got = msg.heads.clone();
                got.sort();
                (got == want).then_some(())
            }
            _ => None,
        })
        .await
    }

    /// Asks for `doc` and returns whether the relay answered "unavailable" before saying
    /// anything else about it (a sync message, even one without changes, tells its heads).
    pub async fn unavailable(&mut self, doc: DocumentId) -> bool {
        self.request(doc).await;
        self.until("an answer to a request", |m| match m {
            Message::DocUnavailable { document_id, .. } if *document_id == doc => Some(true),
            Message::Sync { document_id, .. } | Message::Request { document_id, .. } if *document_id == doc => {
                Some(false)
            }
            _ => None,
        })
        .await
    }
}
