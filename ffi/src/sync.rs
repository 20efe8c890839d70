//! Sync configuration and status as the apps see them, and the notifier: the one long-lived
//! thread that calls the app's observer (JNA and Swift attach a thread once, not per call, and
//! the app never runs inside a store lock).

use std::collections::HashMap;
use std::sync::mpsc::{Receiver, Sender};
use std::sync::{Arc, Mutex};

use liaison_core::client::{self, ConnState, Trust};
use liaison_core::store::{DocChange, Origin};

use crate::error::{CallbackError, LiaisonError};
use crate::status::{SyncProblem, WipeReason};
use crate::types::{ChangeReason, DocumentChange};

/// Which server certificates the device trusts. Pins are public-key pins: the SHA-256 of a
/// certificate's SubjectPublicKeyInfo, base64 (as the relay prints it, HPKP's `pin-sha256`) or
/// hex. Give the current key's pin and at least one backup pin (a key IT keeps offline for the
/// next rotation).
#[derive(Debug, Clone, uniffi::Enum)]
pub enum TrustConfig {
    /// The platform's verifier (Android TrustManager, Apple Security.framework: MDM-installed
    /// CAs count); with pins, the chain must also hold a pinned key. Empty `spki_pins`: no pins.
    System { spki_pins: Vec<String> },
    /// The platform's verifier, or IT's private certificate authority (PEM text); pins as above.
    SystemPlusCa { ca_pem: String, spki_pins: Vec<String> },
    /// No certificate authority (a self-signed relay): the leaf's public key must be pinned.
    PinnedKeys { spki_pins: Vec<String> },
}

fn pins(texts: Vec<String>) -> Result<Vec<client::SpkiPin>, LiaisonError> {
    texts
        .iter()
        .map(|t| {
            client::parse_spki_pin(t)
                .ok_or_else(|| LiaisonError::InvalidInput("a public-key pin is not 32 bytes of base64 or hex".into()))
        })
        .collect()
}

impl TrustConfig {
    pub(crate) fn into_trust(self) -> Result<Trust, LiaisonError> {
        Ok(match self {
            Self::System { spki_pins } => Trust::System { pins: pins(spki_pins)? },
            Self::SystemPlusCa { ca_pem, spki_pins } => {
                Trust::SystemPlus { ca_pem: ca_pem.into_bytes(), pins: pins(spki_pins)? }
            }
            Self::PinnedKeys { spki_pins } if spki_pins.is_empty() => {
                return Err(LiaisonError::InvalidInput("PinnedKeys needs at least one pin".into()));
            }
            Self::PinnedKeys { spki_pins } => Trust::PinnedKeys { pins: pins(spki_pins)? },
        })
    }
}

/// Where and how to sync.
#[derive(Debug, Clone, uniffi::Record)]
pub struct SyncConfig {
    /// `wss://host:port/v1/sync`.
    pub url: String,
    /// The device credential IT issued (`start_sync`); empty with `start_sync_with_sign_in`.
    /// Kept in memory only; never logged.
    #[uniffi(default)]
    pub token: String,
    pub trust: TrustConfig,
    /// Shortest and longest wait between reconnection attempts (at least 10 ms; negative is
    /// `InvalidInput`).
    #[uniffi(default = 500)]
    pub backoff_min_ms: i64,
    #[uniffi(default = 60000)]
    pub backoff_max_ms: i64,
}

/// What the app knows about the network.
#[derive(Debug, Clone, Copy, PartialEq, Eq, uniffi::Enum)]
pub enum NetworkState {
    Up,
    Down,
    /// The app went to the background: no connection attempts until it comes back.
    Background,
}

impl From<NetworkState> for client::Network {
    fn from(n: NetworkState) -> Self {
        match n {
            NetworkState::Up => Self::Up,
            NetworkState::Down => Self::Down,
            NetworkState::Background => Self::Background,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, uniffi::Enum)]
pub enum SyncState {
    /// Not syncing: no network, in the background, sync not started, or waiting to retry.
    Offline,
    Connecting,
    Syncing,
    /// Everything local is acknowledged by the relay and nothing is arriving.
    UpToDate,
}

/// A change the relay refused (for example an edit to a submitted record): it will not sync.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct RefusedChange {
    pub document_id: String,
    pub code: String,
    pub message: String,
}

#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct SyncStatus {
    pub state: SyncState,
    /// What is wrong, typed: what the app switches on (see mobile-bindings/README.md).
    pub problem: Option<SyncProblem>,
    /// When the library tries again (ms since the epoch), while it waits to.
    pub next_attempt_ms: Option<i64>,
    /// Set once the library erased the local records (remote wipe or retired tenant).
    pub wiped: Option<WipeReason>,
    /// Documents with local changes the relay has not yet acknowledged.
    pub pending_documents: i32,
    /// When everything local was last acknowledged (ms since the epoch).
    pub last_all_acknowledged_ms: Option<i64>,
    pub refused: Vec<RefusedChange>,
    /// The last connection problem as text for logs, free of tokens and personal data.
    pub last_error: Option<String>,
    /// First-sync progress: documents the relay listed that this device lacked or had older.
    pub documents_known: i64,
    /// Of those, the ones received.
    pub documents_received: i64,
    /// Every document the user may read has arrived at least once (a new phone's first sync
    /// is over).
    pub first_sync_complete: bool,
    /// The relay's answer on this connection has arrived in full: everything new is here.
    pub catalog_current: bool,
    /// Records on this device that this version of the app cannot read: written by a newer app
    /// (a newer schema, a new kind of record). They are in no list until the app is updated;
    /// show "N records need an app update" (`unreadable_records` lists them). Counted whether
    /// sync runs or not.
    pub needs_newer_app: i32,
}

impl SyncStatus {
    pub(crate) fn stopped() -> Self {
        Self {
            state: SyncState::Offline,
            problem: None,
            next_attempt_ms: None,
            wiped: None,
            pending_documents: 0,
            last_all_acknowledged_ms: None,
            refused: Vec::new(),
            last_error: None,
            documents_known: 0,
            documents_received: 0,
            first_sync_complete: false,
            catalog_current: false,
            needs_newer_app: 0,
        }
    }
}

impl From<&client::SyncStatus> for SyncStatus {
    fn from(s: &client::SyncStatus) -> Self {
        Self {
            state: match s.state {
                ConnState::Offline => SyncState::Offline,
                ConnState::Connecting => SyncState::Connecting,
                ConnState::Syncing => SyncState::Syncing,
                ConnState::UpToDate => SyncState::UpToDate,
            },
            problem: s.problem.clone().map(Into::into),
            next_attempt_ms: s.next_attempt_ms,
            wiped: s.wiped.map(Into::into),
            pending_documents: i32::try_from(s.pending_documents).unwrap_or(i32::MAX),
            last_all_acknowledged_ms: s.last_all_acknowledged_ms,
            refused: s
                .refused
                .iter()
                .map(|r| RefusedChange {
                    document_id: r.doc.to_string(),
                    code: r.code.clone(),
                    message: r.message.clone(),
                })
                .collect(),
            last_error: s.last_error.clone(),
            documents_known: i64::try_from(s.documents_known).unwrap_or(i64::MAX),
            documents_received: i64::try_from(s.documents_received).unwrap_or(i64::MAX),
            first_sync_complete: s.first_sync_complete,
            catalog_current: s.catalog_current,
            // Filled in from the store by `Unreadable::stamp`.
            needs_newer_app: 0,
        }
    }
}

/// The app's observer. Called from one library thread, never while the store is locked; keep
/// the calls short (hand the work to the UI thread). A call that throws is logged (a warning,
/// without the exception's text) and the next notification comes as usual.
#[uniffi::export(with_foreign)]
pub trait LiaisonObserver: Send + Sync {
    /// Documents changed, locally or from the relay. Several changes to one document arrive as one.
    fn documents_changed(&self, changes: Vec<DocumentChange>) -> Result<(), CallbackError>;
    /// The sync status changed.
    fn sync_status_changed(&self, status: SyncStatus) -> Result<(), CallbackError>;
    /// The library erased every local record (remote wipe: the device was revoked, or the
    /// tenant purged). Sign out (`sign_out`) to remove the files, and show the sign-in screen.
    fn local_data_wiped(&self, reason: WipeReason) -> Result<(), CallbackError>;
}

/// Calls the app's observer: an exception it threw (an `Err`) or a panic on the way is
/// reported and swallowed, so the notifier thread lives on.
fn notify(what: &'static str, call: impl FnOnce() -> Result<(), CallbackError>) {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(call)) {
        Ok(Ok(())) => {}
        Ok(Err(_)) | Err(_) => {
            tracing::warn!(callback = what, "the app's observer threw; later notifications still come");
        }
    }
}

pub(crate) enum Note {
    Doc(DocChange),
    Status(SyncStatus),
    Wiped(WipeReason),
    /// A live query just made: answered first here, then after each change (`watch.rs`).
    Watch(Arc<crate::watch::Watch>),
    Stop,
}

pub(crate) type Observer = Arc<Mutex<Option<Arc<dyn LiaisonObserver>>>>;

/// Runs the notifier until `Note::Stop` or every sender is gone.
pub(crate) fn spawn_notifier(rx: Receiver<Note>, observer: Observer, unreadable: Unreadable) -> std::io::Result<()> {
    std::thread::Builder::new().name("liaison-notify".into()).spawn(move || {
        let watches = crate::watch::Watches::default();
        let mut last_status = SyncStatus::stopped();
        while let Ok(first) = rx.recv() {
            // Coalesce what is already queued into one call of each kind.
            let mut docs: Vec<DocumentChange> = Vec::new();
            let mut index: HashMap<String, usize> = HashMap::new();
            let mut status = None;
            let mut wiped = None;
            let mut stop = false;
            let mut changed = std::collections::HashSet::new();
            let mut started = Vec::new();
            for note in std::iter::once(first).chain(std::iter::from_fn(|| rx.try_recv().ok())) {
                match note {
                    Note::Doc(c) => {
                        changed.insert(c.id);
                        let change = DocumentChange {
                            id: c.id.to_string(),
                            kind: c.kind.map(Into::into),
                            remote: c.origin == Origin::Remote,
                            deleted: c.deleted,
                            reason: c.reason.into(),
                        };
                        match index.get(&change.id) {
                            Some(&i) => {
                                let prev = &mut docs[i];
                                prev.remote |= change.remote;
                                prev.deleted = change.deleted;
                                // Created stays created when it is edited in the same breath.
                                if prev.reason != ChangeReason::Created || change.deleted {
                                    prev.reason = change.reason;
                                }
                                prev.kind = prev.kind.or(change.kind);
                            }
                            None => {
                                index.insert(change.id.clone(), docs.len());
                                docs.push(change);
                            }
                        }
                    }
                    Note::Status(s) => status = Some(s),
                    Note::Wiped(reason) => wiped = Some(reason),
                    Note::Watch(w) => started.push(w),
                    Note::Stop => stop = true,
                }
            }
            // Documents arrived or went: the count of unreadable ones may have moved, and with
            // it the status.
            let recounted = !changed.is_empty() && unreadable.recount();
            if let Some(s) = status.as_mut() {
                unreadable.stamp(s);
                last_status = s.clone();
            } else if recounted {
                unreadable.stamp(&mut last_status);
                status = Some(last_status.clone());
            }
            let current = observer.lock().unwrap_or_else(|e| e.into_inner()).clone();
            if let Some(obs) = current {
                if !docs.is_empty() {
                    notify("documents_changed", || obs.documents_changed(docs));
                }
                if let Some(s) = status.clone() {
                    notify("sync_status_changed", || obs.sync_status_changed(s));
                }
                if let Some(reason) = wiped {
                    notify("local_data_wiped", || obs.local_data_wiped(reason));
                }
            }
            watches.refresh(&changed, status.as_ref());
            for w in started {
                watches.start(w);
            }
            if stop {
                return;
            }
        }
    })?;
    Ok(())
}

/// How many documents the store cannot read (`DocStore::unreadable_count`), kept in memory so
/// `sync_status` stays a memory read; the notifier counts again after documents change.
#[derive(Debug, Clone)]
pub(crate) struct Unreadable {
    store: std::sync::Weak<liaison_core::DocStore>,
    count: Arc<std::sync::atomic::AtomicI32>,
}

impl Unreadable {
    pub(crate) fn new(store: &Arc<liaison_core::DocStore>) -> Self {
        let this = Self { store: Arc::downgrade(store), count: Arc::default() };
        this.recount();
        this
    }

    /// Counts again from the store; `true` if the count changed.
    pub(crate) fn recount(&self) -> bool {
        let Some(store) = self.store.upgrade() else { return false };
        match store.unreadable_count() {
            Ok(n) => {
                let n = i32::try_from(n).unwrap_or(i32::MAX);
                self.count.swap(n, std::sync::atomic::Ordering::SeqCst) != n
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot count the documents this build cannot read");
                false
            }
        }
    }

    /// Puts the count into a status.
    pub(crate) fn stamp(&self, status: &mut SyncStatus) {
        status.needs_newer_app = self.count.load(std::sync::atomic::Ordering::SeqCst);
    }
}

/// Forwards the store's change feed to the notifier until either side goes away.
pub(crate) fn spawn_forwarder(feed: Receiver<DocChange>, tx: Sender<Note>) -> std::io::Result<()> {
    std::thread::Builder::new().name("liaison-feed".into()).spawn(move || {
        for change in feed {
            if tx.send(Note::Doc(change)).is_err() {
                return;
            }
        }
    })?;
    Ok(())
}
