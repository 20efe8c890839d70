//! The automerge-repo wire protocol, version 1: CBOR maps with string keys, one per frame.
//!
//! Spec: automerge-repo `packages/automerge-repo-network-websocket/README.md`; the JavaScript
//! types in `packages/automerge-repo/src/network/messages.ts`. Where the two differ we follow
//! what JavaScript clients actually send: `peerMetadata` (not the spec's `metadata`, which we also
//! accept) and `supportedProtocolVersions` as an array.
//!
//! Decoding never panics, refuses a frame over the size limit before parsing it, skips unknown
//! keys, and returns [`Message::Unknown`] for unknown message types so newer peers are not cut off.

use std::collections::BTreeMap;

use minicbor::Encoder;

use crate::DocumentId;

mod decode;

pub use decode::{DecodeError, MAX_TEXT, decode};

/// The only protocol version there is.
pub const PROTOCOL_V1: &str = "1";

/// Frames larger than this are refused unless a driver sets its own limit.
pub const DEFAULT_MAX_FRAME: usize = 8 * 1024 * 1024;

/// Nesting deeper than this inside a frame is refused (skipping unknown values recurses).
const MAX_DEPTH: u32 = 32;

/// A peer id: an opaque string chosen by the peer (automerge-repo uses random strings).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PeerId(pub String);

impl PeerId {
    /// The id as text, as sent on the wire.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for PeerId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<&str> for PeerId {
    fn from(s: &str) -> Self {
        Self(s.to_owned())
    }
}

/// A storage id: names a peer's persistent storage, shared by all its peer ids over time.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StorageId(pub String);

impl StorageId {
    /// The id as text, as sent on the wire.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// What a peer says about itself in `join` and `peer` (`peerMetadata` on the wire).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PeerMetadata {
    /// The peer's storage id, if it has persistent storage; sync state is kept per storage id.
    pub storage_id: Option<StorageId>,
    /// Whether the peer will not come back with this storage id (no sync state worth keeping).
    pub is_ephemeral: bool,
    /// liaison's extension (`liaisonCatalog`): a device asks the relay for the documents it may
    /// read, changed since this position (see [`crate::sync::catalog`]). Other peers ignore it.
    pub catalog: Option<crate::sync::catalog::CatalogRequest>,
}

/// Heads a peer with a given storage id has, as gossiped in `remote-heads-changed`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeadsAt {
    /// Base64 (JavaScript) or hex encoded change hashes, passed through as received.
    pub heads: Vec<String>,
    /// Change hashes, encoded as the sender chose.
    pub timestamp: u64,
}

/// One automerge-repo protocol message (one frame). Every message except `join`, `leave`,
/// `error` and unknown types names its sender and its target peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// The first message of a connection, from the connecting peer: who it is and which protocol
    /// versions it speaks.
    Join {
        /// The connecting peer's id.
        sender_id: PeerId,
        /// Protocol versions it speaks; a `join` without them is read as `["1"]`.
        supported_protocol_versions: Vec<String>,
        /// Its storage id and whether it is ephemeral.
        metadata: Option<PeerMetadata>,
    },
    /// The accepting peer's reply to `join`: the handshake is done and documents may sync.
    Peer {
        /// The accepting peer's id.
        sender_id: PeerId,
        /// The connecting peer, echoed from its `join`.
        target_id: PeerId,
        /// The version both will speak; this build speaks only [`PROTOCOL_V1`].
        selected_protocol_version: String,
        /// The accepting peer's storage id and whether it is ephemeral.
        metadata: Option<PeerMetadata>,
    },
    /// The sender is closing the connection.
    Leave {
        /// The peer that leaves.
        sender_id: PeerId,
    },
    /// The sender hit a protocol error and closes the connection.
    Error {
        /// The sender, when it says.
        sender_id: Option<PeerId>,
        /// The peer the error is addressed to, when the sender says.
        target_id: Option<PeerId>,
        /// A short human-readable reason (at most [`MAX_TEXT`] bytes on receipt).
        message: String,
    },
    /// An Automerge sync message for a document the sender does not have yet, asking the target for
    /// it. The target answers with `sync` messages, or `doc-unavailable` if it neither has the document
    /// nor may give it.
    Request {
        /// The requesting peer.
        sender_id: PeerId,
        /// The peer asked.
        target_id: PeerId,
        /// The document wanted.
        document_id: DocumentId,
        /// An encoded Automerge sync message (`automerge::sync::Message`).
        data: Vec<u8>,
    },
    /// An Automerge sync message for a document both peers are syncing: the sender's heads, what it
    /// needs, a bloom filter of what it has, and any changes the target lacks.
    Sync {
        /// The sending peer.
        sender_id: PeerId,
        /// The receiving peer.
        target_id: PeerId,
        /// The document being synced.
        document_id: DocumentId,
        /// An encoded Automerge sync message (`automerge::sync::Message`).
        data: Vec<u8>,
    },
    /// Reply to a `request`: the sender does not have the document (or will not say that it has).
    DocUnavailable {
        /// The peer that was asked.
        sender_id: PeerId,
        /// The peer that asked.
        target_id: PeerId,
        /// The document that is unavailable.
        document_id: DocumentId,
    },
    /// A message about a document that is passed on to its peers but never stored (presence, for
    /// example). liaison also sends its erasure and refusal notices this way ([`super::notice`]).
    Ephemeral {
        /// The peer that wrote the message; relays forward it unchanged.
        sender_id: PeerId,
        /// The peer it is addressed to (each hop rewrites it).
        target_id: PeerId,
        /// Increases with each ephemeral message the sender's session writes; a receiver drops a
        /// message whose count is not above the last it saw from that sender and session.
        count: u64,
        /// The sender's session: a new id each time its repo (or engine) starts.
        session_id: String,
        /// The document the message is about.
        document_id: DocumentId,
        /// The payload, opaque to the protocol.
        data: Vec<u8>,
    },
    /// Asks the target to start or stop telling the sender the heads that peers with the given storage
    /// ids have (answered with `remote-heads-changed`). liaison decodes it but does not act on it.
    RemoteSubscriptionChange {
        /// The subscribing peer.
        sender_id: PeerId,
        /// The peer asked.
        target_id: PeerId,
        /// Storage ids to start following.
        add: Vec<StorageId>,
        /// Storage ids to stop following.
        remove: Vec<StorageId>,
    },
    /// Tells the target which heads of a document peers with the given storage ids now have (gossip
    /// for subscribers). liaison decodes it but does not act on it.
    RemoteHeadsChanged {
        /// The peer that reports.
        sender_id: PeerId,
        /// The peer informed.
        target_id: PeerId,
        /// The document.
        document_id: DocumentId,
        /// Per storage id, its heads and when they were seen.
        new_heads: BTreeMap<StorageId, HeadsAt>,
    },
    /// A message type this build does not know. Ignored, not fatal.
    Unknown {
        /// The `type` field as received.
        type_name: String,
    },
}

impl Message {
    /// The wire name of the message type.
    pub fn type_name(&self) -> &str {
        match self {
            Message::Join { .. } => "join",
            Message::Peer { .. } => "peer",
            Message::Leave { .. } => "leave",
            Message::Error { .. } => "error",
            Message::Request { .. } => "request",
            Message::Sync { .. } => "sync",
            Message::DocUnavailable { .. } => "doc-unavailable",
            Message::Ephemeral { .. } => "ephemeral",
            Message::RemoteSubscriptionChange { .. } => "remote-subscription-change",
            Message::RemoteHeadsChanged { .. } => "remote-heads-changed",
            Message::Unknown { type_name } => type_name,
        }
    }

    /// The document the message is about, if any.
    pub fn document_id(&self) -> Option<&DocumentId> {
        match self {
            Message::Request { document_id, .. }
            | Message::Sync { document_id, .. }
            | Message::DocUnavailable { document_id, .. }
            | Message::Ephemeral { document_id, .. }
            | Message::RemoteHeadsChanged { document_id, .. } => Some(document_id),
            _ => None,
        }
    }

    /// Encodes to one frame.
    pub fn encode(&self) -> Vec<u8> {
        let mut buf = Vec::new();
        // Writing into a Vec cannot fail.
        let _ = self.encode_into(&mut Encoder::new(&mut buf));
        buf
    }

    fn encode_into(
        &self,
        e: &mut Encoder<&mut Vec<u8>>,
    ) -> Result<(), minicbor::encode::Error<std::convert::Infallible>> {
        match self {
            Message::Join { sender_id, supported_protocol_versions, metadata } => {
                e.map(3 + u64::from(metadata.is_some()))?;
                e.str("type")?.str("join")?;
                e.str("senderId")?.str(sender_id.as_str())?;
                e.str("supportedProtocolVersions")?.array(supported_protocol_versions.len() as u64)?;
                for v in supported_protocol_versions {
                    e.str(v)?;
                }
                if let Some(m) = metadata {
                    e.str("peerMetadata")?;
                    encode_metadata(e, m)?;
                }
            }
            Message::Peer { sender_id, target_id, selected_protocol_version, metadata } => {
                e.map(4 + u64::from(metadata.is_some()))?;
                e.str("type")?.str("peer")?;
                e.str("senderId")?.str(sender_id.as_str())?;
                e.str("targetId")?.str(target_id.as_str())?;
                e.str("selectedProtocolVersion")?.str(selected_protocol_version)?;
                if let Some(m) = metadata {
                    e.str("peerMetadata")?;
                    encode_metadata(e, m)?;
                }
            }
            Message::Leave { sender_id } => {
                e.map(2)?.str("type")?.str("leave")?.str("senderId")?.str(sender_id.as_str())?;
            }
            Message::Error { sender_id, target_id, message } => {
                e.map(2 + u64::from(sender_id.is_some()) + u64::from(target_id.is_some()))?;
                e.str("type")?.str("error")?;
                if let Some(s) = sender_id {
                    e.str("senderId")?.str(s.as_str())?;
                }
                if let Some(t) = target_id {
                    e.str("targetId")?.str(t.as_str())?;
                }
                e.str("message")?.str(message)?;
            }
            Message::Request { sender_id, target_id, document_id, data }
            | Message::Sync { sender_id, target_id, document_id, data } => {
                e.map(5)?;
                e.str("type")?.str(self.type_name())?;
                e.str("senderId")?.str(sender_id.as_str())?;
                e.str("targetId")?.str(target_id.as_str())?;
                e.str("documentId")?.str(&document_id.to_string())?;
                e.str("data")?.bytes(data)?;
            }
            Message::DocUnavailable { sender_id, target_id, document_id } => {
                e.map(4)?;
                e.str("type")?.str("doc-unavailable")?;
                e.str("senderId")?.str(sender_id.as_str())?;
                e.str("targetId")?.str(target_id.as_str())?;
                e.str("documentId")?.str(&document_id.to_string())?;
            }
            Message::Ephemeral { sender_id, target_id, count, session_id, document_id, data } => {
                e.map(7)?;
                e.str("type")?.str("ephemeral")?;
                e.str("senderId")?.str(sender_id.as_str())?;
                e.str("targetId")?.str(target_id.as_str())?;
                e.str("count")?.u64(*count)?;
                e.str("sessionId")?.str(session_id)?;
                e.str("documentId")?.str(&document_id.to_string())?;
                e.str("data")?.bytes(data)?;
            }
            Message::RemoteSubscriptionChange { sender_id, target_id, add, remove } => {
                e.map(5)?;
                e.str("type")?.str("remote-subscription-change")?;
                e.str("senderId")?.str(sender_id.as_str())?;
                e.str("targetId")?.str(target_id.as_str())?;
                e.str("add")?.array(add.len() as u64)?;
                for s in add {
                    e.str(s.as_str())?;
                }
                e.str("remove")?.array(remove.len() as u64)?;
                for s in remove {
                    e.str(s.as_str())?;
                }
            }
            Message::RemoteHeadsChanged { sender_id, target_id, document_id, new_heads } => {
                e.map(5)?;
                e.str("type")?.str("remote-heads-changed")?;
                e.str("senderId")?.str(sender_id.as_str())?;
                e.str("targetId")?.str(target_id.as_str())?;
                e.str("documentId")?.str(&document_id.to_string())?;
                e.str("newHeads")?.map(new_heads.len() as u64)?;
                for (storage, at) in new_heads {
                    e.str(storage.as_str())?.map(2)?;
                    e.str("heads")?.array(at.heads.len() as u64)?;
                    for h in &at.heads {
                        e.str(h)?;
                    }
                    e.str("timestamp")?.u64(at.timestamp)?;
                }
            }
            Message::Unknown { type_name } => {
                e.map(1)?.str("type")?.str(type_name)?;
            }
        }
        Ok(())
    }
}

fn encode_metadata(
    e: &mut Encoder<&mut Vec<u8>>,
    m: &PeerMetadata,
) -> Result<(), minicbor::encode::Error<std::convert::Infallible>> {
    e.map(1 + u64::from(m.storage_id.is_some()) + u64::from(m.catalog.is_some()))?;
    if let Some(s) = &m.storage_id {
        e.str("storageId")?.str(s.as_str())?;
    }
    e.str("isEphemeral")?.bool(m.is_ephemeral)?;
    if let Some(c) = &m.catalog {
        e.str("liaisonCatalog")?.map(2)?.str("cursor")?.u64(c.cursor)?.str("scope")?.str(&c.scope)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests;
