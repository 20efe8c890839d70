//! The network side of a device (feature `client`): the sync engine over a WebSocket with
//! rustls, reconnecting with jittered backoff, obeying the app's network state, and reporting a
//! status a UI can show. The engine and the store stay the source of truth; this is a driver.

use std::collections::{HashSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use automerge::ReadDoc;
use futures::{FutureExt, SinkExt, StreamExt};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use sha2::{Digest, Sha256};
use tokio::sync::{broadcast, mpsc, watch};
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

use crate::store::DocStore;
use crate::sync::engine::Event;
use crate::sync::store_tasks::execute_device_group;
use crate::sync::wire::StorageId;
use crate::sync::{ConnId, Engine, EngineConfig, Input, OpenPolicy, Output, Side};
use crate::{DocumentId, StoreError};

mod catalog;

/// Frames read at most before their storage work runs (one batch, one flush).
const GROUP_FRAMES: usize = 256;

/// Which server certificates a device trusts.
#[derive(Clone, Debug)]
pub enum Trust {
    /// The operating system's roots.
    System,
    /// The system's roots plus IT's private certificate authority (PEM).
    SystemPlus {
        /// One or more PEM certificates; at least one must parse.
        ca_pem: Vec<u8>,
    },
    /// Exactly one server certificate, by the SHA-256 of its DER (what the relay prints).
    Pinned {
        /// The SHA-256 of the certificate's DER encoding ([`parse_fingerprint`] reads the relay's
        /// printout). Only this certificate is accepted, whatever its host name or validity dates;
        /// the handshake signature is still verified.
        sha256: [u8; 32],
    },
}

/// How to reach and authenticate to the relay.
#[derive(Clone, Debug)]
pub struct ClientOptions {
    /// `wss://host:port/v1/sync`.
    pub url: String,
    /// The device's credential. Sent only in the Authorization header; never logged.
    pub token: String,
    /// The peer id, which the relay checks against the credential's device.
    pub peer_id: String,
    /// Names this device's store, so the relay keeps sync state for it across connections.
    pub storage_id: String,
    /// Which server certificates to trust.
    pub trust: Trust,
    /// Delay before the first reconnect after a lost connection; it doubles with each failed
    /// attempt, and each delay is scaled by a random 50-100 %.
    pub backoff_min: Duration,
    /// The longest delay between reconnect attempts (before the random scaling).
    pub backoff_max: Duration,
}

/// What the app says about the network.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Network {
    /// Connected: (re)connect now, cutting short any backoff wait.
    Up,
    /// No network: disconnect and stay offline until it is `Up` again.
    Down,
    /// The app went to the background: stay disconnected until it returns.
    Background,
}

/// The connection to the relay, as a UI shows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConnState {
    /// Not connected: the network is down or backgrounded, or the client waits to retry.
    Offline,
    /// Opening the WebSocket (TCP, TLS and the HTTP upgrade).
    Connecting,
    /// Connected (or completing the handshake), with local changes the relay has not
    /// acknowledged yet.
    Syncing,
    /// Connected, and the relay has acknowledged (stored) every local change; refused changes
    /// are listed in [`SyncStatus::refused`] instead.
    UpToDate,
}

/// A change the relay refused, for the UI.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RefusedChange {
    /// The document the changes were for.
    pub doc: DocumentId,
    /// The refused changes.
    pub hashes: Vec<automerge::ChangeHash>,
    /// The relay's stable reason code, such as `locked`, `read-only` or an [`EditViolation`]
    /// code.
    ///
    /// [`EditViolation`]: crate::model::EditViolation
    pub code: String,
    /// The relay's explanation, for people; free of personal data.
    pub message: String,
}

/// What the device's sync looks like now: what a UI shows.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SyncStatus {
    /// The connection's state.
    pub state: ConnState,
    /// Documents with local changes the relay has not acknowledged (stored).
    pub pending_documents: usize,
    /// When everything local was last acknowledged (ms since the epoch).
    pub last_all_acknowledged_ms: Option<i64>,
    /// Changes the relay refused, kept until [`SyncClient::discard_refused`] gives them up.
    pub refused: Vec<RefusedChange>,
    /// The last connection problem, free of tokens and personal data.
    pub last_error: Option<String>,
    /// Catalog progress: documents the relay listed in its current answer (or since connecting,
    /// for live updates) that this device lacked or had older.
    pub documents_known: u64,
    /// Of those, the ones received since.
    pub documents_received: u64,
    /// Every document the device may read has been received at least once (set for good after
    /// the first complete answer; a new phone shows its first-sync screen until then).
    pub first_sync_complete: bool,
}

/// Why the client cannot start or connect. [`SyncClient::start`] returns `BadCertificate` and
/// `Store`; the others happen while connecting and reach the app as
/// [`SyncStatus::last_error`].
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The URL is not a WebSocket URL, or the token cannot be sent as an HTTP header.
    #[error("the relay URL is not valid")]
    BadUrl,
    /// The `SystemPlus` PEM holds no certificate (or rustls refused its protocol defaults).
    #[error("the certificate authority PEM holds no certificate")]
    BadCertificate,
    /// The connection failed or timed out (after 20 s); the text names the failure, never the
    /// request.
    #[error("cannot connect: {0}")]
    Connect(String),
    /// The relay answered 410 Gone: the tenant's contract ended and its data was purged.
    #[error("the relay retired this workspace (its tenant was purged); the local records were erased")]
    Retired,
    /// The local store failed (listing the documents to sync at start).
    #[error(transparent)]
    Store(#[from] StoreError),
}

enum Cmd {
    LocalChange(DocumentId),
    Announce(DocumentId),
    Find(DocumentId),
    DiscardRefused(DocumentId),
    Network(Network),
    Shutdown,
}

/// State the app's calls and the driver share: a change is pending from the moment the app
/// reports it, not from when the driver gets to it.
#[derive(Debug)]
struct Shared {
    pending: std::sync::Mutex<HashSet<DocumentId>>,
    status: watch::Sender<SyncStatus>,
}

impl Shared {
    fn mark_pending(&self, doc: DocumentId) {
        let n = {
            let mut p = self.pending.lock().unwrap_or_else(|e| e.into_inner());
            p.insert(doc);
            p.len()
        };
        self.status.send_modify(|s| {
            s.pending_documents = n;
            if s.state == ConnState::UpToDate {
                s.state = ConnState::Syncing;
            }
        });
    }
}

/// A running client. Dropping it stops the background task.
#[derive(Debug)]
pub struct SyncClient {
    cmds: mpsc::UnboundedSender<Cmd>,
    shared: Arc<Shared>,
    status: watch::Receiver<SyncStatus>,
    events: broadcast::Sender<Event>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl std::fmt::Debug for Cmd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Cmd")
    }
}

impl SyncClient {
    /// Starts syncing every document in `store` with the relay. Call inside a tokio runtime.
    pub fn start(store: Arc<DocStore>, options: ClientOptions) -> Result<Self, ClientError> {
        let tls = tls_config(&options.trust)?;
        let (cmds, rx) = mpsc::unbounded_channel();
        let (status_tx, status) = watch::channel(SyncStatus {
            state: ConnState::Offline,
            pending_documents: 0,
            last_all_acknowledged_ms: None,
            refused: Vec::new(),
            last_error: None,
            documents_known: 0,
            documents_received: 0,
            first_sync_complete: store.catalog_position()?.is_some(),
        });
        let (events, _) = broadcast::channel(1024);
        let shared = Arc::new(Shared { pending: std::sync::Mutex::new(HashSet::new()), status: status_tx });
        let driver = Driver::new(store, options, Arc::new(tls), shared.clone(), events.clone())?;
        let task = tokio::spawn(driver.run(rx));
        Ok(Self { cmds, shared, status, events, task: Some(task) })
    }

    /// Tells the client a document changed locally (after `DocStore::update` and friends).
    pub fn local_change(&self, doc: DocumentId) {
        self.shared.mark_pending(doc);
        let _ = self.cmds.send(Cmd::LocalChange(doc));
    }

    /// Syncs a document that is in the store (for example one just created).
    pub fn announce(&self, doc: DocumentId) {
        self.shared.mark_pending(doc);
        let _ = self.cmds.send(Cmd::Announce(doc));
    }

    /// Gives up the changes the relay refused on `doc` (and the edits built on them, which it
    /// would refuse too), so the device continues from the relay's state: later edits sync
    /// again. The refusals leave `SyncStatus::refused`.
    pub fn discard_refused(&self, doc: DocumentId) {
        self.shared.mark_pending(doc);
        let _ = self.cmds.send(Cmd::DiscardRefused(doc));
    }

    /// Asks the relay for a document this device does not have.
    pub fn find(&self, doc: DocumentId) {
        let _ = self.cmds.send(Cmd::Find(doc));
    }

    /// Tells the client the app's network state; see [`Network`].
    pub fn set_network(&self, network: Network) {
        let _ = self.cmds.send(Cmd::Network(network));
    }

    /// The status now.
    pub fn status(&self) -> SyncStatus {
        self.status.borrow().clone()
    }

    /// A receiver that sees every status change, for a UI to follow.
    pub fn watch_status(&self) -> watch::Receiver<SyncStatus> {
        self.status.clone()
    }

    /// The engine's events, after the client has acted on them (for example deleting an erased
    /// document). The channel holds 1024 events: a receiver that falls further behind loses the
    /// oldest and gets `RecvError::Lagged`.
    pub fn events(&self) -> broadcast::Receiver<Event> {
        self.events.subscribe()
    }

    /// Stops the client, closing its connection.
    pub async fn shutdown(mut self) {
        let _ = self.cmds.send(Cmd::Shutdown);
        if let Some(t) = self.task.take() {
            let _ = t.await;
        }
    }
}

impl Drop for SyncClient {
    fn drop(&mut self) {
        let _ = self.cmds.send(Cmd::Shutdown);
    }
}

fn now_ms() -> i64 {
    use crate::clock::Clock as _;
    crate::clock::SystemClock.now_ms()
}

/// Why a session ended.
enum Ended {
    Lost(String),
    Network(Network),
    Shutdown,
}

struct Driver {
    store: Arc<DocStore>,
    options: ClientOptions,
    tls: Arc<rustls::ClientConfig>,
    engine: Engine,
    shared: Arc<Shared>,
    events: broadcast::Sender<Event>,
    network: Network,
    next_conn: u64,
    /// Inputs events asked for, fed after the current one.
    followups: Vec<Input>,
    /// What the relay's current catalog answer still owes.
    catalog: catalog::CatalogProgress,
}

type Ws = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

impl Driver {
    fn new(
        store: Arc<DocStore>,
        options: ClientOptions,
        tls: Arc<rustls::ClientConfig>,
        shared: Arc<Shared>,
        events: broadcast::Sender<Event>,
    ) -> Result<Self, ClientError> {
        let mut config = EngineConfig::new(options.peer_id.clone());
        config.storage_id = Some(StorageId(options.storage_id.clone()));
        // The catalog tells what changed elsewhere; a connection offers only local changes the
        // relay has not acknowledged, so a reconnect costs what changed, not what exists.
        config.announce = false;
        let session = uuid::Uuid::new_v4().to_string();
        let mut engine = Engine::new(config, Box::new(OpenPolicy), session);
        for doc in store.pending_documents()? {
            engine.handle(now_ms(), Input::Announce { doc });
            shared.mark_pending(doc);
        }
        Ok(Self {
            store,
            options,
            tls,
            engine,
            shared,
            events,
            network: Network::Up,
            next_conn: 1,
            followups: Vec::new(),
            catalog: catalog::CatalogProgress::default(),
        })
    }

    fn publish(&self, f: impl FnOnce(&mut SyncStatus)) {
        self.shared.status.send_modify(f);
    }

    fn pending(&self) -> std::sync::MutexGuard<'_, HashSet<DocumentId>> {
        self.shared.pending.lock().unwrap_or_else(|e| e.into_inner())
    }

    async fn run(mut self, mut cmds: mpsc::UnboundedReceiver<Cmd>) {
        let mut attempt: u32 = 0;
        loop {
            if self.network != Network::Up {
                self.publish(|s| s.state = ConnState::Offline);
                match cmds.recv().await {
                    None | Some(Cmd::Shutdown) => return,
                    Some(c) => {
                        self.offline_cmd(c).await;
                        continue;
                    }
                }
            }
            self.publish(|s| s.state = ConnState::Connecting);
            let ended = match self.connect().await {
                Ok(ws) => {
                    attempt = 0;
                    self.session(ws, &mut cmds).await
                }
                Err(ClientError::Retired) => {
                    self.retire();
                    return;
                }
                Err(e) => Ended::Lost(e.to_string()),
            };
            self.publish(|s| s.state = ConnState::Offline);
            match ended {
                Ended::Shutdown => return,
                Ended::Network(n) => {
                    self.network = n;
                    continue;
                }
                Ended::Lost(why) => {
                    tracing::info!(reason = %why, "connection to the relay lost");
                    self.publish(|s| s.last_error = Some(why));
                }
            }
            // Jittered exponential backoff, interrupted by commands (a network change retries now).
            let base = self.options.backoff_min.saturating_mul(1 << attempt.min(16)).min(self.options.backoff_max);
            let jitter = f64::from(uuid::Uuid::new_v4().as_bytes()[0]) / 255.0;
            let delay = base.mul_f64(0.5 + 0.5 * jitter);
            attempt = attempt.saturating_add(1);
            let sleep = tokio::time::sleep(delay);
            tokio::pin!(sleep);
            loop {
                tokio::select! {
                    _ = &mut sleep => break,
                    c = cmds.recv() => match c {
                        None | Some(Cmd::Shutdown) => return,
                        Some(Cmd::Network(n)) => {
                            self.network = n;
                            attempt = 0;
                            break;
                        }
                        Some(c) => self.offline_cmd(c).await,
                    }
                }
            }
        }
    }

    /// Commands while not connected: the engine keeps their effect for the next connection
    /// (its storage tasks still run; frames have nowhere to go).
    async fn offline_cmd(&mut self, c: Cmd) {
        let input = match c {
            Cmd::Network(n) => {
                self.network = n;
                None
            }
            Cmd::LocalChange(doc) => self.local_input(doc),
            Cmd::Announce(doc) => Some(Input::Announce { doc }),
            Cmd::Find(doc) => Some(Input::Find { doc }),
            Cmd::DiscardRefused(doc) => self.discard_refused(doc),
            Cmd::Shutdown => None,
        };
        if let Some(input) = input {
            let _ = self.feed(None, ConnId(0), input).await;
        }
    }

    /// Takes the refused changes out of the stored document; the engine then drops its copy
    /// and loads the stored one again (`Erase` without notice, then `Announce`).
    fn discard_refused(&mut self, doc: DocumentId) -> Option<Input> {
        let hashes: Vec<automerge::ChangeHash> = self
            .shared
            .status
            .borrow()
            .refused
            .iter()
            .filter(|r| r.doc == doc)
            .flat_map(|r| r.hashes.iter().copied())
            .collect();
        match self.store.discard_changes(&doc, &hashes) {
            Ok(n) => tracing::info!(document = %doc, discarded = n, "discarded refused changes"),
            Err(e) => {
                tracing::error!(document = %doc, error = %e, "cannot discard refused changes");
                return None;
            }
        }
        self.publish(|s| s.refused.retain(|r| r.doc != doc));
        self.followups.push(Input::Announce { doc });
        Some(Input::Erase { doc, notify: false })
    }

    /// The tenant was purged at its contract's end: every local record goes, as the relay's
    /// copies went, and the client stops (its credentials no longer work anywhere).
    fn retire(&mut self) {
        let docs = self.store.all_documents().unwrap_or_default();
        for doc in &docs {
            match self.store.delete(doc) {
                Ok(()) | Err(StoreError::NotFound(_)) => {}
                Err(e) => tracing::error!(document = %doc, error = %e, "cannot erase a local record"),
            }
        }
        tracing::warn!(documents = docs.len(), "the relay retired this workspace; local records erased");
        self.pending().clear();
        self.publish(|s| {
            s.state = ConnState::Offline;
            s.pending_documents = 0;
            s.last_error = Some(ClientError::Retired.to_string());
        });
    }

    /// A local change: the engine takes the new changes, and the document is offered on this
    /// connection and every later one until the relay acknowledges it (`Settled`): a change
    /// made offline to a document synced earlier must go out when the network returns.
    fn local_input(&mut self, doc: DocumentId) -> Option<Input> {
        tracing::debug!(document = %doc, resident = self.engine.document(&doc).is_some(), "local change");
        match self.engine.document(&doc) {
            Some(am) => {
                let heads = am.get_heads();
                let changes = self.store.changes_since(&doc, &heads).ok();
                self.followups.push(Input::Announce { doc });
                changes.map(|changes| Input::LocalChanges { doc, changes })
            }
            None => Some(Input::Announce { doc }),
        }
    }

    fn connect(&self) -> impl Future<Output = Result<Ws, ClientError>> + Send + 'static {
        connect(self.options.url.clone(), self.options.token.clone(), self.tls.clone())
    }

    async fn session(&mut self, mut ws: Ws, cmds: &mut mpsc::UnboundedReceiver<Cmd>) -> Ended {
        let conn = ConnId(self.next_conn);
        self.next_conn += 1;
        self.publish(|s| {
            s.state = ConnState::Syncing;
            s.last_error = None;
        });
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        self.catalog_reset();
        let request = self.catalog_request();
        self.engine.set_catalog_request(Some(request));
        if let Err(e) = self.feed(Some(&mut ws), conn, Input::Connected { conn, side: Side::Initiator }).await {
            return e;
        }
        let ended = loop {
            tokio::select! {
                frame = ws.next() => match frame {
                    Some(Ok(WsMessage::Binary(b))) => {
                        // Frames already received go through the engine together, so their
                        // writes share one batch and one flush (a first sync is thousands).
                        let mut frames = vec![Input::Frame { conn, frame: b.to_vec() }];
                        let mut ended = None;
                        while frames.len() < GROUP_FRAMES {
                            match ws.next().now_or_never() {
                                Some(Some(Ok(WsMessage::Binary(b)))) => frames.push(Input::Frame { conn, frame: b.to_vec() }),
                                Some(Some(Ok(WsMessage::Close(_))) | None) => {
                                    ended = Some(Ended::Lost("closed by the relay".into()));
                                    break;
                                }
                                Some(Some(Ok(_))) => {}
                                Some(Some(Err(e))) => {
                                    ended = Some(Ended::Lost(describe(&e)));
                                    break;
                                }
                                None => break,
                            }
                        }
                        if let Err(e) = self.feed_all(Some(&mut ws), conn, frames).await {
                            break e;
                        }
                        if let Some(e) = ended {
                            break e;
                        }
                    }
                    Some(Ok(WsMessage::Close(f))) => {
                        break Ended::Lost(f.map_or_else(|| "closed by the relay".to_owned(), |f| format!("closed by the relay: {}", f.reason)));
                    }
                    Some(Ok(_)) => {}
                    Some(Err(e)) => break Ended::Lost(describe(&e)),
                    None => break Ended::Lost("connection ended".into()),
                },
                c = cmds.recv() => {
                    let input = match c {
                        None | Some(Cmd::Shutdown) => break Ended::Shutdown,
                        Some(Cmd::Network(Network::Up)) => continue,
                        Some(Cmd::Network(n)) => break Ended::Network(n),
                        Some(Cmd::LocalChange(doc)) => self.local_input(doc),
                        Some(Cmd::Announce(doc)) => Some(Input::Announce { doc }),
                        Some(Cmd::Find(doc)) => Some(Input::Find { doc }),
                        Some(Cmd::DiscardRefused(doc)) => self.discard_refused(doc),
                    };
                    if let Some(input) = input
                        && let Err(e) = self.feed(Some(&mut ws), conn, input).await
                    {
                        break e;
                    }
                }
                _ = tick.tick() => {
                    if let Err(e) = self.feed(Some(&mut ws), conn, Input::Tick).await {
                        break e;
                    }
                }
            }
        };
        let _ = ws.close(None).await;
        let _ = self.engine.handle(now_ms(), Input::Disconnected { conn });
        ended
    }

    /// Runs one input through the engine and carries out what it says.
    async fn feed(&mut self, ws: Option<&mut Ws>, conn: ConnId, input: Input) -> Result<(), Ended> {
        self.feed_all(ws, conn, vec![input]).await
    }

    /// Runs inputs through the engine and carries out what they say: frames are sent (flushed
    /// once per round), and the storage tasks of a round run together on a blocking thread,
    /// their writes as one batch with one flush, before their results go in as the next round.
    async fn feed_all(&mut self, mut ws: Option<&mut Ws>, conn: ConnId, inputs: Vec<Input>) -> Result<(), Ended> {
        let mut queue = VecDeque::from(inputs);
        loop {
            let mut tasks = Vec::new();
            let mut sent = false;
            while let Some(input) = queue.pop_front() {
                for out in self.engine.handle(now_ms(), input) {
                    match out {
                        Output::Send { frame, .. } => {
                            if let Some(ws) = ws.as_deref_mut() {
                                ws.feed(WsMessage::Binary(frame.into()))
                                    .await
                                    .map_err(|e| Ended::Lost(describe(&e)))?;
                                sent = true;
                            }
                        }
                        Output::Close { reason, .. } => return Err(Ended::Lost(format!("{reason:?}"))),
                        Output::Storage { task, op } => tasks.push((task, op)),
                        Output::Event(e) => self.on_event(conn, e),
                    }
                }
                queue.extend(self.followups.drain(..));
            }
            if sent && let Some(ws) = ws.as_deref_mut() {
                ws.flush().await.map_err(|e| Ended::Lost(describe(&e)))?;
            }
            if tasks.is_empty() {
                return Ok(());
            }
            let store = self.store.clone();
            let ids: Vec<crate::sync::TaskId> = tasks.iter().map(|(t, _)| *t).collect();
            let results = tokio::task::spawn_blocking(move || {
                let ops: Vec<_> = tasks.into_iter().map(|(_, op)| op).collect();
                execute_device_group(&store, &ops)
            })
            .await
            .unwrap_or_else(|_| vec![crate::sync::StorageResult::Failed("storage task panicked".into()); ids.len()]);
            queue.extend(ids.into_iter().zip(results).map(|(task, result)| Input::StorageDone { task, result }));
        }
    }

    fn on_event(&mut self, _conn: ConnId, e: Event) {
        match &e {
            Event::Catalog { page, .. } => self.on_catalog(page),
            Event::DocChanged { doc, .. } => self.catalog_progress(doc, false),
            Event::DocUnavailable { doc } => self.catalog_progress(doc, true),
            Event::PeerHeads { doc, heads, .. } if self.pending().contains(doc) && self.covered(doc, heads) => {
                self.followups.push(Input::Settled { doc: *doc });
                let pending = {
                    let mut p = self.pending();
                    p.remove(doc);
                    p.len()
                };
                let now = now_ms();
                self.publish(|s| {
                    s.pending_documents = pending;
                    if pending == 0 {
                        s.last_all_acknowledged_ms = Some(now);
                        s.state = ConnState::UpToDate;
                    }
                });
            }
            Event::RefusedByPeer { doc, hashes, code, message, .. } => {
                let r =
                    RefusedChange { doc: *doc, hashes: hashes.clone(), code: code.clone(), message: message.clone() };
                // A refused change will never be acknowledged: it is reported, not pending.
                let pending = {
                    let mut p = self.pending();
                    p.remove(doc);
                    p.len()
                };
                self.publish(|s| {
                    s.refused.push(r);
                    s.pending_documents = pending;
                });
            }
            // Erasure reaches the device: the local copy and its history go.
            Event::ErasedByPeer { doc, .. } => self.delete_local(doc, false),
            Event::PeerReady { .. } if self.pending().is_empty() => {
                self.publish(|s| s.state = ConnState::UpToDate);
            }
            _ => {}
        }
        let _ = self.events.send(e);
    }

    /// Whether the relay's heads include every local change of `doc`: each head of the local
    /// store must be an ancestor of the relay's heads. Ancestry is read from the engine's copy,
    /// which already holds what the relay sent (the store may still be writing it), while the
    /// store may hold an edit the engine has not been told about yet (then: not covered).
    /// When covered, the store's pending mark goes, unless a local write came meanwhile.
    fn covered(&self, doc: &DocumentId, relay_heads: &[automerge::ChangeHash]) -> bool {
        let Ok(local) = self.store.load(doc) else { return false };
        let graph = self.engine.document(doc).unwrap_or(&local);
        if !relay_heads.iter().all(|h| graph.get_change_by_hash(h).is_some()) {
            return false;
        }
        let unacknowledged: HashSet<automerge::ChangeHash> =
            graph.get_changes(relay_heads).iter().map(|c| c.hash()).collect();
        let covered =
            local.get_heads().iter().all(|h| graph.get_change_by_hash(h).is_some() && !unacknowledged.contains(h));
        tracing::debug!(document = %doc, covered, relay_heads = relay_heads.len(), "relay heads");
        covered
            // The mark's heads are in the copy just checked: the relay holds them.
            && match self.store.acknowledge(doc, |mark| mark.iter().all(|h| local.get_change_by_hash(h).is_some())) {
                Ok(removed) => removed,
                Err(e) => {
                    tracing::warn!(document = %doc, error = %e, "cannot record the acknowledgement");
                    false
                }
            }
    }
}

async fn connect(url: String, token: String, tls: Arc<rustls::ClientConfig>) -> Result<Ws, ClientError> {
    let mut req = url.as_str().into_client_request().map_err(|_| ClientError::BadUrl)?;
    let auth = format!("Bearer {token}").parse().map_err(|_| ClientError::BadUrl)?;
    req.headers_mut().insert("authorization", auth);
    let connector = tokio_tungstenite::Connector::Rustls(tls);
    let connecting = tokio_tungstenite::connect_async_tls_with_config(req, None, true, Some(connector));
    match tokio::time::timeout(Duration::from_secs(20), connecting).await {
        Ok(Ok((ws, _))) => Ok(ws),
        Ok(Err(tokio_tungstenite::tungstenite::Error::Http(resp))) if resp.status().as_u16() == 410 => {
            Err(ClientError::Retired)
        }
        // Errors name the failure (refused, TLS, HTTP status), never the request.
        Ok(Err(e)) => Err(ClientError::Connect(describe(&e))),
        Err(_) => Err(ClientError::Connect("timed out".into())),
    }
}

fn describe(e: &tokio_tungstenite::tungstenite::Error) -> String {
    use tokio_tungstenite::tungstenite::Error as E;
    match e {
        E::Http(resp) => format!("the relay answered HTTP {}", resp.status().as_u16()),
        E::Tls(_) => "TLS failed (certificate not trusted?)".into(),
        // tokio-rustls reports a rejected certificate as InvalidData during the handshake.
        E::Io(io) if io.kind() == std::io::ErrorKind::InvalidData => "TLS failed (certificate not trusted?)".into(),
        E::Io(io) => format!("network error: {}", io.kind()),
        E::ConnectionClosed | E::AlreadyClosed => "connection closed".into(),
        E::Capacity(_) => "message too large".into(),
        E::Protocol(_) => "WebSocket protocol error".into(),
        _ => "connection failed".into(),
    }
}

/// The rustls configuration for a trust choice.
pub fn tls_config(trust: &Trust) -> Result<rustls::ClientConfig, ClientError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|_| ClientError::BadCertificate)?;
    let config = match trust {
        Trust::Pinned { sha256 } => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(Pinned { sha256: *sha256, provider }))
            .with_no_client_auth(),
        Trust::System | Trust::SystemPlus { .. } => {
            let mut roots = rustls::RootCertStore::empty();
            let native = rustls_native_certs::load_native_certs();
            for c in native.certs {
                let _ = roots.add(c);
            }
            if let Trust::SystemPlus { ca_pem } = trust {
                let mut added = 0;
                for c in CertificateDer::pem_slice_iter(ca_pem).flatten() {
                    if roots.add(c).is_ok() {
                        added += 1;
                    }
                }
                if added == 0 {
                    return Err(ClientError::BadCertificate);
                }
            }
            builder.with_root_certificates(roots).with_no_client_auth()
        }
    };
    Ok(config)
}

/// Parses a fingerprint as the relay prints it (`AB:CD:...`, 32 bytes).
pub fn parse_fingerprint(s: &str) -> Option<[u8; 32]> {
    // As the relay prints it (`AB:CD:...`) or as plain hex.
    let hex: Vec<u8> = s.bytes().filter(|b| *b != b':').collect();
    if hex.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (o, pair) in out.iter_mut().zip(hex.chunks_exact(2)) {
        *o = u8::from_str_radix(std::str::from_utf8(pair).ok()?, 16).ok()?;
    }
    Some(out)
}

/// Trusts exactly one certificate; signatures are still verified.
#[derive(Debug)]
struct Pinned {
    sha256: [u8; 32],
    provider: Arc<rustls::crypto::CryptoProvider>,
}

impl ServerCertVerifier for Pinned {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if Sha256::digest(end_entity.as_ref()).as_slice() == self.sha256 {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::InvalidCertificate(rustls::CertificateError::ApplicationVerificationFailure))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::parse_fingerprint;

    #[test]
    fn fingerprints_parse_with_or_without_colons() {
        let plain = "00112233445566778899aabbccddeeff00112233445566778899AABBCCDDEEFF";
        let colons: String =
            plain.as_bytes().chunks(2).map(|c| std::str::from_utf8(c).unwrap()).collect::<Vec<_>>().join(":");
        let a = parse_fingerprint(plain).unwrap();
        assert_eq!(a[1], 0x11);
        assert_eq!(Some(a), parse_fingerprint(&colons));
        assert_eq!(parse_fingerprint(&plain[2..]), None, "too short");
        assert_eq!(parse_fingerprint(&plain.replace('0', "g")), None, "not hex");
        assert_eq!(parse_fingerprint("日本語"), None);
    }
}
