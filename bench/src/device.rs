//! One simulated device: a WebSocket (TLS or plain) speaking automerge-repo v1 with the CBOR
//! codec of `liaison_core::sync::wire`, holding its documents and one automerge sync state per
//! document. It works against any relay that speaks the protocol.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use automerge::sync::{self, SyncDoc};
use automerge::transaction::Transactable;
use automerge::{ActorId, Automerge, ChangeHash, ObjId, ReadDoc};
use futures::{SinkExt, StreamExt};
use liaison_core::DocumentId;
use liaison_core::sync::wire::{self, Message, PeerId, PeerMetadata, StorageId};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Where devices connect, and how.
#[derive(Debug, Clone)]
pub struct Target {
    /// One URL per node of the relay (one for a single relay); device i connects to
    /// `urls[i % urls.len()]` ([`crate::servers::node_for`]).
    pub urls: Vec<String>,
    /// Trusts every node's certificate.
    pub tls: Option<Arc<rustls::ClientConfig>>,
    /// Device name to bearer token (liaison's relay); `None` for relays without authentication.
    pub tokens: Option<Arc<HashMap<String, String>>>,
    /// Each team's devices on one node ([`crate::servers::node_for`]).
    pub routed_by_team: bool,
}

impl Target {
    /// The URL device (or connection) number `index` connects to.
    pub fn url_for(&self, index: usize) -> &str {
        self.urls.get(crate::servers::node_for(index, self.urls.len(), self.routed_by_team)).map_or("", String::as_str)
    }
}

/// Counters shared by every device of a run; the load generator's view of the wire.
#[derive(Debug, Default)]
pub struct Wire {
    pub bytes_out: AtomicU64,
    pub bytes_in: AtomicU64,
    pub frames_out: AtomicU64,
    pub frames_in: AtomicU64,
    pub errors: AtomicU64,
    pub unavailable: AtomicU64,
    pub refused: AtomicU64,
}

impl Wire {
    pub fn bytes(&self) -> u64 {
        self.bytes_out.load(Ordering::Relaxed) + self.bytes_in.load(Ordering::Relaxed)
    }
    pub fn error(&self, what: &str, e: &dyn std::fmt::Display) {
        let n = self.errors.fetch_add(1, Ordering::Relaxed);
        if n < 5 {
            tracing::warn!(%e, "{what}");
        }
    }
    pub fn errors(&self) -> u64 {
        self.errors.load(Ordering::Relaxed)
            + self.unavailable.load(Ordering::Relaxed)
            + self.refused.load(Ordering::Relaxed)
    }
}

/// A document as a device holds it.
#[derive(Debug)]
pub struct Doc {
    pub am: Automerge,
    pub sync: sync::State,
    /// The record's `notes` text, where edits go (found once).
    notes: Option<ObjId>,
}

impl Doc {
    pub fn new(actor: &ActorId) -> Self {
        Self { am: Automerge::new().with_actor(actor.clone()), sync: sync::State::new(), notes: None }
    }

    /// Whether the relay is known to have every change we have.
    pub fn acknowledged(&self) -> bool {
        let ours = self.am.get_heads();
        self.sync.their_heads.as_ref().is_some_and(|theirs| ours.iter().all(|h| theirs.contains(h)))
    }
}

/// What a received frame did.
#[derive(Debug)]
pub enum Event {
    /// New changes arrived for a document (their hashes).
    Changed(DocumentId, Vec<ChangeHash>),
    /// A sync message that brought no new change (acknowledgements).
    Synced(DocumentId),
    Unavailable(DocumentId),
    /// A liaison catalog page (a device that asked in its join).
    Catalog(liaison_core::sync::catalog::CatalogPage),
    Other,
}

/// A connected device.
#[derive(Debug)]
pub struct Device {
    pub name: String,
    /// Which device (or connection) of the run: picks the node of a cluster it connects to.
    pub index: usize,
    pub peer_id: String,
    pub actor: ActorId,
    pub docs: HashMap<DocumentId, Doc>,
    /// Documents done with: frames about them are ignored, so they are not pulled again.
    forgotten: std::collections::HashSet<DocumentId>,
    ws: Option<Ws>,
    server: PeerId,
    wire: Arc<Wire>,
    /// liaison's catalog request, sent in the join when set.
    pub catalog: Option<liaison_core::sync::catalog::CatalogRequest>,
}

/// How long connecting and the join/peer handshake may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(60);

impl Device {
    /// A device with no connection yet; `name` picks its token, `peer_id` is what it claims,
    /// `index` the node of a cluster it connects to ([`Target::url_for`]).
    pub fn new(name: &str, peer_id: &str, index: usize, wire: Arc<Wire>) -> Self {
        Self {
            name: name.to_owned(),
            index,
            peer_id: peer_id.to_owned(),
            actor: ActorId::random(),
            docs: HashMap::new(),
            forgotten: Default::default(),
            ws: None,
            server: PeerId(String::new()),
            wire,
            catalog: None,
        }
    }

    pub fn wire(&self) -> &Arc<Wire> {
        &self.wire
    }

    /// Opens the WebSocket and completes the join/peer handshake.
    pub async fn connect(&mut self, target: &Target) -> Result<()> {
        tokio::time::timeout(CONNECT_TIMEOUT, self.connect_inner(target)).await.context("connect timed out")?
    }

    async fn connect_inner(&mut self, target: &Target) -> Result<()> {
        let mut req = target.url_for(self.index).into_client_request().context("bad url")?;
        if let Some(tokens) = &target.tokens {
            let token = tokens.get(&self.name).with_context(|| format!("no token for {}", self.name))?;
            req.headers_mut().insert("authorization", format!("Bearer {token}").parse().context("token header")?);
        }
        let connector = target.tls.clone().map(tokio_tungstenite::Connector::Rustls);
        let mut config = WebSocketConfig::default();
        config.max_message_size = Some(64 << 20);
        config.max_frame_size = Some(64 << 20);
        // 128 KiB per connection by default; 10,000 idle connections need not reserve 1.3 GB.
        config.read_buffer_size = 8 * 1024;
        let (ws, _) = tokio_tungstenite::connect_async_tls_with_config(req, Some(config), true, connector)
            .await
            .context("connecting")?;
        self.ws = Some(ws);
        self.send(&Message::Join {
            sender_id: PeerId(self.peer_id.clone()),
            supported_protocol_versions: vec![wire::PROTOCOL_V1.into()],
            metadata: Some(PeerMetadata {
                storage_id: Some(StorageId(format!("{}-storage", self.peer_id))),
                is_ephemeral: false,
                catalog: self.catalog.clone(),
            }),
        })
        .await?;
        loop {
            match self.recv_message().await? {
                Message::Peer { sender_id, .. } => {
                    self.server = sender_id;
                    return Ok(());
                }
                Message::Error { message, .. } => bail!("relay refused the handshake: {message}"),
                _ => continue,
            }
        }
    }

    /// Closes the connection (the device goes offline). Sync states keep only what survives a
    /// lost connection, as automerge says to do.
    pub async fn disconnect(&mut self) {
        if let Some(mut ws) = self.ws.take() {
            let _ = tokio::time::timeout(Duration::from_secs(2), ws.close(None)).await;
        }
        for d in self.docs.values_mut() {
            d.sync = sync::State::decode(&d.sync.encode()).unwrap_or_default();
        }
    }

    /// Drops a document the device is done with (bounded memory in the load generator).
    pub fn forget(&mut self, doc: DocumentId) {
        self.docs.remove(&doc);
        self.forgotten.insert(doc);
    }

    pub fn connected(&self) -> bool {
        self.ws.is_some()
    }

    async fn send(&mut self, msg: &Message) -> Result<()> {
        let frame = msg.encode();
        let ws = self.ws.as_mut().context("not connected")?;
        self.wire.bytes_out.fetch_add(frame.len() as u64, Ordering::Relaxed);
        self.wire.frames_out.fetch_add(1, Ordering::Relaxed);
        ws.send(WsMessage::Binary(frame.into())).await.context("sending")?;
        Ok(())
    }

    /// Waits for the next protocol message. Cancel-safe (a frame is either taken whole or left
    /// in the socket), so it can race timers in `select!`; [`Device::handle`] then acts on it.
    pub async fn recv_message(&mut self) -> Result<Message> {
        let ws = self.ws.as_mut().context("not connected")?;
        loop {
            match ws.next().await {
                Some(Ok(WsMessage::Binary(b))) => {
                    self.wire.bytes_in.fetch_add(b.len() as u64, Ordering::Relaxed);
                    self.wire.frames_in.fetch_add(1, Ordering::Relaxed);
                    return wire::decode(&b, 64 << 20).map_err(|e| anyhow::anyhow!("undecodable frame: {e}"));
                }
                Some(Ok(WsMessage::Close(f))) => bail!("closed by the relay: {f:?}"),
                Some(Ok(_)) => continue,
                Some(Err(e)) => bail!("receiving: {e}"),
                None => bail!("connection ended"),
            }
        }
    }

    /// Asks for a document we do not have (`request`), or syncs one we have (`sync`).
    pub async fn open(&mut self, doc: DocumentId) -> Result<()> {
        let actor = self.actor.clone();
        let d = self.docs.entry(doc).or_insert_with(|| Doc::new(&actor));
        let Some(m) = d.am.generate_sync_message(&mut d.sync) else { return Ok(()) };
        let empty = d.am.get_heads().is_empty();
        let data = m.encode();
        let (sender_id, target_id) = (PeerId(self.peer_id.clone()), self.server.clone());
        let msg = if empty {
            Message::Request { sender_id, target_id, document_id: doc, data }
        } else {
            Message::Sync { sender_id, target_id, document_id: doc, data }
        };
        self.send(&msg).await
    }

    /// Takes a whole document the device already holds (`save()` bytes).
    pub fn hold(&mut self, doc: DocumentId, bytes: &[u8]) -> Result<()> {
        let am = Automerge::load(bytes)?.with_actor(self.actor.clone());
        self.docs.insert(doc, Doc { am, sync: sync::State::new(), notes: None });
        Ok(())
    }

    /// Sends whatever the sync protocol has for a document now.
    pub async fn flush(&mut self, doc: DocumentId) -> Result<()> {
        let Some(d) = self.docs.get_mut(&doc) else { return Ok(()) };
        if let Some(m) = d.am.generate_sync_message(&mut d.sync) {
            let msg = Message::Sync {
                sender_id: PeerId(self.peer_id.clone()),
                target_id: self.server.clone(),
                document_id: doc,
                data: m.encode(),
            };
            self.send(&msg).await?;
        }
        Ok(())
    }

    /// Inserts `text` into the record's notes as one change; returns its hash and size.
    pub fn edit(&mut self, doc: DocumentId, text: &str) -> Result<(ChangeHash, usize)> {
        let d = self.docs.get_mut(&doc).context("editing a document we do not hold")?;
        if d.notes.is_none() {
            let (_, record) = d.am.get(automerge::ROOT, "record")?.context("no record")?;
            let (_, notes) = d.am.get(&record, "notes")?.context("no notes")?;
            d.notes = Some(notes);
        }
        let notes = d.notes.clone().context("no notes")?;
        let len = d.am.length(&notes);
        let at = if len == 0 { 0 } else { fastrand::usize(..=len) };
        let mut tx = d.am.transaction();
        tx.splice_text(&notes, at, 0, text)?;
        let (hash, _) = tx.commit();
        let hash = hash.context("empty change")?;
        let size = d.am.get_change_by_hash(&hash).map_or(0, |c| c.raw_bytes().len());
        Ok((hash, size))
    }

    /// Receives and handles one frame: applies sync messages and answers them. Not cancel-safe
    /// (an answer may be half sent): in `select!`, race [`Device::recv_message`] instead.
    pub async fn next_event(&mut self) -> Result<Event> {
        let msg = self.recv_message().await?;
        self.handle(msg).await
    }

    /// Acts on one received message: applies sync messages and answers them.
    pub async fn handle(&mut self, msg: Message) -> Result<Event> {
        match msg {
            Message::Sync { document_id, .. } | Message::Request { document_id, .. }
                if self.forgotten.contains(&document_id) =>
            {
                Ok(Event::Other)
            }
            Message::Sync { document_id, data, .. } | Message::Request { document_id, data, .. } => {
                let actor = self.actor.clone();
                let d = self.docs.entry(document_id).or_insert_with(|| Doc::new(&actor));
                let m = sync::Message::decode(&data).map_err(|e| anyhow::anyhow!("bad sync message: {e}"))?;
                let before = d.am.get_heads();
                d.am.receive_sync_message(&mut d.sync, m)?;
                let new: Vec<ChangeHash> = if d.am.get_heads() == before {
                    Vec::new()
                } else {
                    d.am.get_changes(&before).iter().map(|c| c.hash()).collect()
                };
                self.flush(document_id).await?;
                Ok(if new.is_empty() { Event::Synced(document_id) } else { Event::Changed(document_id, new) })
            }
            Message::DocUnavailable { document_id, .. } => Ok(Event::Unavailable(document_id)),
            Message::Ephemeral { document_id, data, .. }
                if document_id == liaison_core::sync::catalog::catalog_doc() =>
            {
                match liaison_core::sync::catalog::decode_page(&data) {
                    Some(page) => Ok(Event::Catalog(page)),
                    None => bail!("malformed catalog page"),
                }
            }
            Message::Ephemeral { data, .. } => {
                // liaison's relay tells a writer about refused changes in an ephemeral message.
                if data.windows(b"liaison/refused".len()).any(|w| w == b"liaison/refused") {
                    self.wire.refused.fetch_add(1, Ordering::Relaxed);
                }
                Ok(Event::Other)
            }
            Message::Error { message, .. } => bail!("relay error: {message}"),
            _ => Ok(Event::Other),
        }
    }

    /// Handles frames until `done` holds or `deadline` passes; returns whether it holds.
    pub async fn until(
        &mut self,
        deadline: Instant,
        mut on_event: impl FnMut(&Event),
        done: impl Fn(&Self) -> bool,
    ) -> Result<bool> {
        while !done(self) {
            let left = deadline.saturating_duration_since(Instant::now());
            match tokio::time::timeout(left, self.next_event()).await {
                Ok(ev) => on_event(&ev?),
                Err(_) => return Ok(done(self)),
            }
        }
        Ok(true)
    }
}
