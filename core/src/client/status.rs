//! What the device's sync looks like, for a UI: the connection's state, and when something is
//! wrong, a typed [`SyncProblem`] the app switches on (the text in `last_error` is for logs).

use crate::DocumentId;

/// The connection to the relay, as a UI shows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConnState {
    /// Not connected: the network is down or backgrounded, or the client waits to retry (or
    /// stopped for good: see [`SyncStatus::problem`]).
    Offline,
    /// Opening the WebSocket (TCP, TLS and the HTTP upgrade), or getting a credential first.
    Connecting,
    /// Connected (or completing the handshake), with local changes the relay has not
    /// acknowledged yet.
    Syncing,
    /// Connected, and the relay has acknowledged (stored) every local change; refused changes
    /// are listed in [`SyncStatus::refused`] instead.
    UpToDate,
}

/// Why the relay (or the credential provider) left the device without a working credential.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AuthProblem {
    /// The credential's lifetime is over and no new one came.
    Expired,
    /// The relay does not know the credential (mistyped, or issued by another relay).
    Unknown,
    /// The credential provider had none to give (the user must sign in interactively), or the
    /// client has neither a provider nor a token.
    NoCredential,
    /// The credential provider failed (the identity provider unreachable, say); asked again
    /// after the backoff.
    ProviderFailed,
    /// The relay refused the identity provider's token at enrolment, with its reason code
    /// (`expired`, `wrong-audience`, ... see the relay's `oidc::Refusal`).
    EnrolmentRefused(String),
}

/// What is wrong, typed for a UI (what it shows and offers is in mobile-bindings/README.md).
/// `None` in [`SyncStatus::problem`] while all is well.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SyncProblem {
    /// No network: the app said `Down`, or the connection found no route to the relay.
    NoNetwork,
    /// No working credential; the client backs off and asks the credential provider again
    /// (at most once per attempt: it never hammers the identity provider).
    Unauthorized {
        /// The relay's HTTP status at connect (401), if that is where it was refused.
        http_status: Option<u16>,
        /// The WebSocket close code (4001) if a live connection was cut.
        close_code: Option<u16>,
        /// What went wrong.
        reason: AuthProblem,
    },
    /// The relay revoked this device's credential and no new one came: sync has stopped until
    /// the app calls `retry_sign_in`. When `wiped`, the local records were erased (remote
    /// wipe), including edits the relay had not acknowledged.
    Revoked {
        /// The relay's HTTP status (401) if refused at connect (or at enrolment).
        http_status: Option<u16>,
        /// The WebSocket close code (4001) if a live connection was cut.
        close_code: Option<u16>,
        /// The local records were erased.
        wiped: bool,
    },
    /// The relay's certificate is not trusted (unknown CA, pin mismatch, wrong host).
    TlsUntrusted,
    /// Connecting failed for another reason (the relay down, a timeout, a 5xx); retrying.
    BackingOff {
        /// The wait before the next attempt.
        retry_in_ms: u64,
        /// When the next attempt starts (ms since the epoch).
        next_attempt_ms: i64,
    },
    /// The tenant was purged at its contract's end (HTTP 410): the local records were erased
    /// and the client stopped.
    Retired,
}

/// Why the library erased the local records on its own.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WipeReason {
    /// The relay revoked the device and the credential provider had no new credential.
    Revoked,
    /// The tenant was purged (410 Gone).
    Retired,
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
    /// What is wrong, if anything: what the app switches on.
    pub problem: Option<SyncProblem>,
    /// When the client tries again (ms since the epoch), while it waits to.
    pub next_attempt_ms: Option<i64>,
    /// Set once the library erased the local records (remote wipe, or a purged tenant).
    pub wiped: Option<WipeReason>,
    /// Documents with local changes the relay has not acknowledged (stored).
    pub pending_documents: usize,
    /// When everything local was last acknowledged (ms since the epoch).
    pub last_all_acknowledged_ms: Option<i64>,
    /// Changes the relay refused, kept until [`SyncClient::discard_refused`] gives them up.
    ///
    /// [`SyncClient::discard_refused`]: super::SyncClient::discard_refused
    pub refused: Vec<RefusedChange>,
    /// The last connection problem as text, for logs: free of tokens and personal data.
    pub last_error: Option<String>,
    /// Catalog progress: documents the relay listed in its current answer (or since connecting,
    /// for live updates) that this device lacked or had older.
    pub documents_known: u64,
    /// Of those, the ones received since.
    pub documents_received: u64,
    /// Every document the device may read has been received at least once (set for good after
    /// the first complete answer; a new phone shows its first-sync screen until then).
    pub first_sync_complete: bool,
    /// The relay's catalog answer on this connection has arrived in full: every document it
    /// listed as new or newer is here (what a background sync waits for). False again at each
    /// new connection.
    pub catalog_current: bool,
}

impl SyncStatus {
    pub(super) fn new(first_sync_complete: bool) -> Self {
        Self {
            state: ConnState::Offline,
            problem: None,
            next_attempt_ms: None,
            wiped: None,
            pending_documents: 0,
            last_all_acknowledged_ms: None,
            refused: Vec::new(),
            last_error: None,
            documents_known: 0,
            documents_received: 0,
            first_sync_complete,
            catalog_current: false,
        }
    }
}

impl std::fmt::Display for SyncProblem {
    /// A line for logs: names the problem, never a credential.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::NoNetwork => f.write_str("no network"),
            Self::Unauthorized { reason, http_status, close_code } => {
                write!(f, "unauthorized ({reason:?}")?;
                if let Some(s) = http_status {
                    write!(f, ", HTTP {s}")?;
                }
                if let Some(c) = close_code {
                    write!(f, ", close code {c}")?;
                }
                f.write_str(")")
            }
            Self::Revoked { wiped, .. } => {
                write!(f, "credential revoked{}", if *wiped { "; local records erased" } else { "" })
            }
            Self::TlsUntrusted => f.write_str("TLS failed (certificate not trusted)"),
            Self::BackingOff { retry_in_ms, .. } => write!(f, "retrying in {retry_in_ms} ms"),
            Self::Retired => {
                f.write_str("the relay retired this workspace (its tenant was purged); the local records were erased")
            }
        }
    }
}
