//! Hints between relays sharing one database (the cluster mode): "this document changed",
//! "tokens, grants or tombstones changed", so a node that holds the document, or a device
//! whose access may have ended, acts on it now instead of at its next catch-up.
//!
//! A hint carries ids and versions only, never data: the receiving node reads what changed
//! from the store. Hints are best effort. A node can miss some (its listener was reconnecting,
//! it subscribed late, it fell behind), and then it is told so with [`HintEvent::Resync`]: it
//! must compare what it holds with the store, as it also does on a timer of its own. Hints are
//! idempotent, so one delivered twice costs a reload, never a wrong state.
//!
//! **Each node has a random [`NodeId`]** that travels with its hints, and a node never receives
//! its own: [`HintReceiver`] drops them, whatever carried them.
//!
//! The channel is a small trait, [`Hints`], so it can move from PostgreSQL to NATS without
//! touching the store:
//! - [`MemoryHints`] ([`memory`]): nodes in one process sharing a [`MemoryHub`], for tests.
//! - [`PgHints`] ([`pg`]): PostgreSQL's `LISTEN`/`NOTIFY` on one dedicated connection.
//! - `payload`: the text a `NOTIFY` carries, and its decoder, which treats every payload as
//!   hostile (anyone who can connect to the database can `NOTIFY`).

pub mod memory;
pub(crate) mod payload;
pub mod pg;

use std::fmt;

use liaison_core::DocumentId;
use liaison_core::storage::StorageError;
use tokio::sync::broadcast;

pub use memory::{MemoryHints, MemoryHub};
pub use pg::PgHints;

use super::DbError;

/// Events a receiver holds before it falls behind; a receiver that falls further behind is
/// told to [`HintEvent::Resync`] instead of being buffered without bound.
const EVENTS_CAPACITY: usize = 4096;

/// What one node tells the others.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hint {
    /// The document changed. `version` is meant to grow with each change of the document, so
    /// a node that already holds it (or a later one) could ignore the hint; the relay sends 0
    /// (unknown) today, since its store does not report the chunk number a write took, and a
    /// receiver reads the store whatever the version (cheaply: `relay/positions.rs`).
    Doc { id: DocumentId, version: u64 },
    /// Tokens, grants or tombstones changed: re-check every connected device's access now.
    Security,
}

/// What a [`HintReceiver`] hands its consumer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HintEvent {
    /// A hint from another node.
    Hint(Hint),
    /// Hints may have been lost (the receiver is new, the listener reconnected, or the
    /// consumer fell behind): compare everything held with the store.
    Resync,
}

/// A node's identity in the hint channel: 16 random bytes, shown as 32 hex digits.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct NodeId([u8; 16]);

impl NodeId {
    /// A fresh id from the operating system's randomness.
    pub fn random() -> Self {
        Self(*uuid::Uuid::new_v4().as_bytes())
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&payload::hex(&self.0))
    }
}

impl fmt::Debug for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "NodeId({self})")
    }
}

/// Errors of the hint channel. Messages never show the database URL or a payload's text.
#[derive(Debug, thiserror::Error)]
pub enum HintError {
    #[error(transparent)]
    Config(#[from] DbError),
    #[error("cannot listen for other relays' hints: {0}")]
    Listen(StorageError),
    #[error("the hint channel needs a tokio runtime")]
    NoRuntime,
    #[error("the hint channel has stopped")]
    Stopped,
    #[error("not a hint payload: {0}")]
    Payload(&'static str),
}

/// The channel between the relays of one cluster.
pub trait Hints: Send + Sync + fmt::Debug {
    /// Sends `hints` to every other node. Never blocks: hints may be queued (and coalesced, a
    /// document's highest version kept) until the channel can send them. Fails only when the
    /// channel has stopped.
    fn publish(&self, hints: &[Hint]) -> Result<(), HintError>;

    /// A new receiver of the other nodes' hints. Its first event is [`HintEvent::Resync`]:
    /// nothing sent before it existed reaches it.
    fn subscribe(&self) -> HintReceiver;
}

/// What travels inside a node between the channel and its receivers.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Arrival {
    Hint { from: NodeId, hint: Hint },
    Resync,
}

/// One consumer's stream of [`HintEvent`]s, without the node's own hints.
#[derive(Debug)]
pub struct HintReceiver {
    events: broadcast::Receiver<Arrival>,
    own: NodeId,
    resync_owed: bool,
}

impl HintReceiver {
    pub(crate) fn new(events: broadcast::Receiver<Arrival>, own: NodeId) -> Self {
        Self { events, own, resync_owed: true }
    }

    /// The next event; `None` once the channel has stopped. Cancel-safe (for `select!`).
    pub async fn recv(&mut self) -> Option<HintEvent> {
        if std::mem::take(&mut self.resync_owed) {
            return Some(HintEvent::Resync);
        }
        loop {
            match self.events.recv().await {
                Ok(Arrival::Hint { from, .. }) if from == self.own => {}
                Ok(Arrival::Hint { hint, .. }) => return Some(HintEvent::Hint(hint)),
                Ok(Arrival::Resync) => return Some(HintEvent::Resync),
                Err(broadcast::error::RecvError::Lagged(missed)) => {
                    tracing::debug!(missed, "a hint receiver fell behind; it resyncs");
                    return Some(HintEvent::Resync);
                }
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    }
}

fn events_channel() -> broadcast::Sender<Arrival> {
    broadcast::channel(EVENTS_CAPACITY).0
}
