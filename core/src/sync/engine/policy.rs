//! What the relay decides: access, erasure and validation, asked synchronously.

use automerge::{Automerge, Change, ChangeHash};

use super::{ConnId, Engine};
use crate::DocumentId;
use crate::sync::wire::{PeerId, PeerMetadata};

/// What a peer may do with a document.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Access {
    /// Nothing: the document is answered as unavailable, as if it did not exist.
    None,
    /// The peer may receive the document; changes it sends are refused (`read-only`).
    Read,
    /// The peer may receive the document and send changes, which [`Policy::validate`] still
    /// checks.
    ReadWrite,
}

/// A connected peer, as the policy sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerInfo {
    /// The connection the peer is on.
    pub conn: ConnId,
    /// The id the peer gave in its handshake; the engine does not check it (a policy's
    /// [`Policy::accept_peer`] may).
    pub peer_id: PeerId,
    /// Its storage id and whether it is ephemeral, as it announced them.
    pub metadata: PeerMetadata,
}

/// Why a change was refused. Sent to the peer, so it must not carry personal data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// A stable machine-readable code, such as `locked` or `read-only`.
    pub code: String,
    /// A short explanation for people, shown on the device.
    pub message: String,
}

impl Refusal {
    /// A refusal with this code and message.
    pub fn new(code: &str, message: &str) -> Self {
        Self { code: code.to_owned(), message: message.to_owned() }
    }
}

/// The relay's decisions, asked synchronously (implementations keep their grants in memory).
pub trait Policy: Send {
    /// Whether a peer that completed the handshake may stay; `Err` closes the connection.
    fn accept_peer(&mut self, _peer: &PeerInfo) -> Result<(), String> {
        Ok(())
    }

    /// What `peer` may do with `doc`. May change over time: then send
    /// [`Input::AccessChanged`](super::Input::AccessChanged).
    fn access(&mut self, _peer: &PeerInfo, _doc: &DocumentId) -> Access {
        Access::ReadWrite
    }

    /// Whether a document was erased here: peers that still sync it are told to delete their copy.
    fn erased(&mut self, _doc: &DocumentId) -> bool {
        false
    }

    /// Whether the last `erased` or `access` answer for `doc` was a "no" only because the policy
    /// could not tell (its store unreachable: it fails closed). The message is then held and
    /// judged again later (see `unjudged`) instead of answered "unavailable", which a device
    /// takes to heart: it stops syncing the document with this peer until it reconnects.
    fn cannot_tell(&mut self, _doc: &DocumentId) -> bool {
        false
    }

    /// Whether `peer` may be told that `doc` was erased (it could read it). Others get
    /// "unavailable", as for an id that never existed.
    fn may_know_erased(&mut self, _peer: &PeerInfo, _doc: &DocumentId) -> bool {
        true
    }

    /// Whether to take (and pass on) ephemeral data `peer` sent about `doc` itself, such as
    /// presence (see [`crate::sync::presence`]): a relay checks the user and device it names
    /// are the peer's own. The engine has already checked the peer sends under its own id.
    fn accept_ephemeral(&mut self, _peer: &PeerInfo, _doc: &DocumentId, _data: &[u8]) -> bool {
        true
    }

    /// Checks changes a peer sent before they are applied. `before` is the document without
    /// them, `after` with all of them. Returns the refused changes; their descendants among
    /// `new` are refused too.
    fn validate(
        &mut self,
        _peer: &PeerInfo,
        _doc: &DocumentId,
        _before: &Automerge,
        _after: &Automerge,
        _new: &[Change],
    ) -> Vec<(ChangeHash, Refusal)> {
        Vec::new()
    }
}

/// Grants everything: a device's engine, or tests.
#[derive(Debug, Default, Clone, Copy)]
pub struct OpenPolicy;

impl Policy for OpenPolicy {}

/// The lock rule ([`crate::model::check_unlocked`]) as refusals: every change to a submitted
/// record is refused until an admin unlocks it on the relay.
pub fn refuse_changes_to_locked(before: &Automerge, new: &[Change]) -> Vec<(ChangeHash, Refusal)> {
    let Err(v) = crate::model::check_unlocked(before) else { return Vec::new() };
    new.iter().map(|c| (c.hash(), Refusal::new(v.code(), &v.to_string()))).collect()
}

impl Engine {
    pub(super) fn on_access_changed(&mut self, only: Option<ConnId>) {
        let pairs: Vec<(DocumentId, ConnId)> = self
            .docs
            .iter()
            .flat_map(|(id, d)| d.peers.keys().map(move |c| (*id, *c)))
            .filter(|(_, c)| only.is_none_or(|o| o == *c))
            .collect();
        for (doc, conn) in pairs {
            let Some(peer) = self.peer_of(conn) else { continue };
            if self.policy.access(&peer, &doc) == Access::None {
                self.unavailable(conn, doc);
            }
        }
    }
}
