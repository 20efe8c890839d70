//! The network side of a device (feature `client`): the sync engine over a WebSocket with
//! rustls, reconnecting with jittered backoff, obeying the app's network state, getting its
//! credential from the app, and reporting a typed status a UI can show. The engine and the
//! store stay the source of truth; this is a driver.
//!
//! Files: this one is the API an app calls and the driver's state; `reconnect.rs` the loop
//! that owns the connection (credential, connect, backoff); `session.rs` one connection's
//! frames through the engine; `auth.rs` the credential's state machine (no IO, unit-tested);
//! `credentials.rs` the provider contract and enrolment; `connect.rs` opening the socket and
//! reading its failures; `tls.rs` trust and pins; `status.rs` what the UI sees; `wipe.rs`
//! erasing the local records (remote wipe, retired tenant); `catalog.rs` the team catalog.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{broadcast, mpsc, watch};

use crate::store::DocStore;
use crate::sync::engine::Event;
use crate::sync::wire::StorageId;
use crate::sync::{Engine, EngineConfig, Input, OpenPolicy};
use crate::{DocumentId, StoreError};

mod auth;
mod catalog;
mod connect;
mod credentials;
mod reconnect;
mod session;
mod status;
mod tls;
mod wipe;

pub use connect::{CLOSE_AUTH, Refusal};
pub use credentials::{Credential, CredentialProvider, CredentialReason, IssuedCredential, ProviderFailed};
pub use status::{AuthProblem, ConnState, RefusedChange, SyncProblem, SyncStatus, WipeReason};
pub use tls::{SpkiPin, Trust, parse_fingerprint, parse_spki_pin, spki_pin_of, tls_config};

/// Frames read at most before their storage work runs (one batch, one flush).
const GROUP_FRAMES: usize = 256;

/// How to reach and authenticate to the relay.
#[derive(Clone, Debug)]
pub struct ClientOptions {
    /// `wss://host:port/v1/sync`.
    pub url: String,
    /// A static device credential (installations without an identity provider; empty when
    /// `credentials` supplies them). Sent only in the Authorization header; never logged.
    pub token: String,
    /// The app's credential provider (enterprise sign-in), asked on first connect and whenever
    /// the relay refuses the credential; see [`CredentialProvider`]. Wins over `token` once
    /// `token` is refused.
    pub credentials: Option<Arc<dyn CredentialProvider>>,
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
    /// The relay revoked the device's credential and no new one came: the local records were
    /// erased.
    #[error("the relay revoked this device's credential; the local records were erased")]
    Revoked,
    /// The local store failed (listing the documents to sync at start).
    #[error(transparent)]
    Store(#[from] StoreError),
}

enum Cmd {
    LocalChange(DocumentId),
    Announce(DocumentId),
    Find(DocumentId),
    Subscribe(DocumentId),
    Ephemeral(DocumentId, Vec<u8>),
    DiscardRefused(DocumentId),
    Network(Network),
    RetrySignIn,
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
        let (status_tx, status) = watch::channel(SyncStatus::new(store.catalog_position()?.is_some()));
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

    /// Syncs `doc` with the relay on every connection from now on, though nothing of it is
    /// pending (a record the app shows, whose presence it follows).
    pub fn subscribe(&self, doc: DocumentId) {
        let _ = self.cmds.send(Cmd::Subscribe(doc));
    }

    /// Sends ephemeral data about `doc` (presence: [`crate::sync::presence`]) to the relay,
    /// which passes it to the document's other peers. Nothing is stored; offline it is lost.
    pub fn send_ephemeral(&self, doc: DocumentId, data: Vec<u8>) {
        let _ = self.cmds.send(Cmd::Ephemeral(doc, data));
    }

    /// Tells the client the app's network state; see [`Network`].
    pub fn set_network(&self, network: Network) {
        let _ = self.cmds.send(Cmd::Network(network));
    }

    /// Asks the credential provider again and reconnects: after the user signed in
    /// interactively (the status said `Unauthorized`), or to resume after `Revoked`.
    pub fn retry_sign_in(&self) {
        let _ = self.cmds.send(Cmd::RetrySignIn);
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
    /// The relay closed the socket for its credential (code 4001).
    Refused(Refusal),
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
    /// The credential's state machine.
    auth: auth::AuthState,
    /// Where the last refusal came from (HTTP status, close code), for the typed status.
    refused_by: (Option<u16>, Option<u16>),
    /// Revoked or retired: nothing is tried until the app retries sign-in.
    halted: bool,
}

impl Driver {
    fn new(
        store: Arc<DocStore>,
        options: ClientOptions,
        tls: Arc<rustls::ClientConfig>,
        shared: Arc<Shared>,
        events: broadcast::Sender<Event>,
    ) -> Result<Self, ClientError> {
        let (options_token, has_provider) = (options.token.clone(), options.credentials.is_some());
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
            auth: auth::AuthState::new(&options_token, has_provider),
            refused_by: (None, None),
            halted: false,
        })
    }

    fn publish(&self, f: impl FnOnce(&mut SyncStatus)) {
        self.shared.status.send_modify(f);
    }

    fn pending(&self) -> std::sync::MutexGuard<'_, HashSet<DocumentId>> {
        self.shared.pending.lock().unwrap_or_else(|e| e.into_inner())
    }
}
