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

use minicbor::data::{Tag, Type};
use minicbor::{Decoder, Encoder};

use crate::DocumentId;

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
    e.map(1 + u64::from(m.storage_id.is_some()))?;
    if let Some(s) = &m.storage_id {
        e.str("storageId")?.str(s.as_str())?;
    }
    e.str("isEphemeral")?.bool(m.is_ephemeral)?;
    Ok(())
}

/// Why a frame could not be decoded. Carries no part of the frame.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The frame is longer than the limit; it was refused unread.
    #[error("frame of {size} bytes is over the {limit}-byte limit")]
    TooLarge {
        /// The frame's length in bytes.
        size: usize,
        /// The limit in bytes.
        limit: usize,
    },
    /// The frame is not well-formed CBOR, or ends early.
    #[error("frame is not valid CBOR")]
    Cbor,
    /// The frame's top level is not a map.
    #[error("frame is not a CBOR map")]
    NotAMap,
    /// Maps or arrays nest deeper than the decoder allows (32 levels).
    #[error("frame nests deeper than {MAX_DEPTH} levels")]
    TooDeep,
    /// The map has no `type` field.
    #[error("message has no type")]
    NoType,
    /// A known message type lacks a field it requires.
    #[error("{message} message is missing {field}")]
    Missing {
        /// The message type, for example `sync`.
        message: &'static str,
        /// The missing field's wire name, for example `documentId`.
        field: &'static str,
    },
    /// A document id field is not a bs58check-encoded 16-byte id.
    #[error("{field} is not a valid document id")]
    BadDocumentId {
        /// The field's wire name.
        field: &'static str,
    },
    /// A field has the wrong CBOR type (the field's wire name).
    #[error("{0} has the wrong CBOR type")]
    WrongType(&'static str),
    /// Bytes follow the message's map.
    #[error("frame has bytes after the message")]
    Trailing,
    /// A text field is longer than [`MAX_TEXT`] bytes (the field's wire name).
    #[error("{0} is longer than {MAX_TEXT} bytes")]
    TooLong(&'static str),
}

impl From<minicbor::decode::Error> for DecodeError {
    fn from(_: minicbor::decode::Error) -> Self {
        DecodeError::Cbor
    }
}

/// Every field any message type may carry; filled while walking the map once.
#[derive(Default)]
struct Fields {
    type_name: Option<String>,
    sender_id: Option<String>,
    target_id: Option<String>,
    document_id: Option<String>,
    data: Option<Vec<u8>>,
    supported: Option<Vec<String>>,
    selected: Option<String>,
    metadata: Option<PeerMetadata>,
    message: Option<String>,
    count: Option<u64>,
    session_id: Option<String>,
    add: Option<Vec<String>>,
    remove: Option<Vec<String>>,
    new_heads: Option<BTreeMap<StorageId, HeadsAt>>,
}

/// Decodes one frame, refusing it unread if it is longer than `max_frame`.
pub fn decode(frame: &[u8], max_frame: usize) -> Result<Message, DecodeError> {
    if frame.len() > max_frame {
        return Err(DecodeError::TooLarge { size: frame.len(), limit: max_frame });
    }
    let mut d = Decoder::new(frame);
    let mut f = Fields::default();
    for_each_entry(&mut d, 0, |d, key| {
        match key {
            "type" => f.type_name = Some(text(d, "type")?),
            "senderId" => f.sender_id = Some(text(d, "senderId")?),
            "targetId" => f.target_id = Some(text(d, "targetId")?),
            "documentId" => f.document_id = Some(text(d, "documentId")?),
            "data" => f.data = Some(bytes(d)?),
            "supportedProtocolVersions" => f.supported = Some(texts(d, "supportedProtocolVersions")?),
            "selectedProtocolVersion" => f.selected = Some(text(d, "selectedProtocolVersion")?),
            "peerMetadata" | "metadata" => f.metadata = Some(metadata(d)?),
            "message" => f.message = Some(text(d, "message")?),
            "count" => f.count = Some(d.u64().map_err(|_| DecodeError::WrongType("count"))?),
            "sessionId" => f.session_id = Some(text(d, "sessionId")?),
            "add" => f.add = Some(texts(d, "add")?),
            "remove" => f.remove = Some(texts(d, "remove")?),
            "newHeads" => f.new_heads = Some(new_heads(d)?),
            _ => skip(d, 1)?,
        }
        Ok(())
    })?;
    if d.position() != frame.len() {
        return Err(DecodeError::Trailing);
    }
    build(f)
}

fn build(f: Fields) -> Result<Message, DecodeError> {
    let type_name = f.type_name.ok_or(DecodeError::NoType)?;
    let t: &'static str = match type_name.as_str() {
        "join" => "join",
        "peer" => "peer",
        "leave" => "leave",
        "error" => "error",
        "request" => "request",
        "sync" => "sync",
        "doc-unavailable" => "doc-unavailable",
        "ephemeral" => "ephemeral",
        "remote-subscription-change" => "remote-subscription-change",
        "remote-heads-changed" => "remote-heads-changed",
        _ => return Ok(Message::Unknown { type_name }),
    };
    let need = |v: Option<String>, field: &'static str| v.ok_or(DecodeError::Missing { message: t, field });
    let peer = |v: Option<String>, field: &'static str| need(v, field).map(PeerId);
    let doc = |v: Option<String>| -> Result<DocumentId, DecodeError> {
        need(v, "documentId")?.parse().map_err(|_| DecodeError::BadDocumentId { field: "documentId" })
    };
    let data = |v: Option<Vec<u8>>| v.ok_or(DecodeError::Missing { message: t, field: "data" });
    Ok(match t {
        "join" => Message::Join {
            sender_id: peer(f.sender_id, "senderId")?,
            // A join without versions is treated as version 1, as JavaScript servers do.
            supported_protocol_versions: f.supported.unwrap_or_else(|| vec![PROTOCOL_V1.to_owned()]),
            metadata: f.metadata,
        },
        "peer" => Message::Peer {
            sender_id: peer(f.sender_id, "senderId")?,
            target_id: peer(f.target_id, "targetId")?,
            selected_protocol_version: need(f.selected, "selectedProtocolVersion")?,
            metadata: f.metadata,
        },
        "leave" => Message::Leave { sender_id: peer(f.sender_id, "senderId")? },
        "error" => Message::Error {
            sender_id: f.sender_id.map(PeerId),
            target_id: f.target_id.map(PeerId),
            message: f.message.unwrap_or_default(),
        },
        "request" | "sync" => {
            let sender_id = peer(f.sender_id, "senderId")?;
            let target_id = peer(f.target_id, "targetId")?;
            let document_id = doc(f.document_id)?;
            let data = data(f.data)?;
            if t == "request" {
                Message::Request { sender_id, target_id, document_id, data }
            } else {
                Message::Sync { sender_id, target_id, document_id, data }
            }
        }
        "doc-unavailable" => Message::DocUnavailable {
            sender_id: peer(f.sender_id, "senderId")?,
            target_id: peer(f.target_id, "targetId")?,
            document_id: doc(f.document_id)?,
        },
        "ephemeral" => Message::Ephemeral {
            sender_id: peer(f.sender_id, "senderId")?,
            target_id: peer(f.target_id, "targetId")?,
            count: f.count.ok_or(DecodeError::Missing { message: t, field: "count" })?,
            session_id: need(f.session_id, "sessionId")?,
            document_id: doc(f.document_id)?,
            data: data(f.data)?,
        },
        "remote-subscription-change" => Message::RemoteSubscriptionChange {
            sender_id: peer(f.sender_id, "senderId")?,
            target_id: peer(f.target_id, "targetId")?,
            add: f.add.unwrap_or_default().into_iter().map(StorageId).collect(),
            remove: f.remove.unwrap_or_default().into_iter().map(StorageId).collect(),
        },
        _ => Message::RemoteHeadsChanged {
            sender_id: peer(f.sender_id, "senderId")?,
            target_id: peer(f.target_id, "targetId")?,
            document_id: doc(f.document_id)?,
            new_heads: f.new_heads.ok_or(DecodeError::Missing { message: t, field: "newHeads" })?,
        },
    })
}

/// Walks a definite or indefinite map with string keys, calling `f` to consume each value.
fn for_each_entry<'b>(
    d: &mut Decoder<'b>,
    depth: u32,
    mut f: impl FnMut(&mut Decoder<'b>, &str) -> Result<(), DecodeError>,
) -> Result<(), DecodeError> {
    if depth > MAX_DEPTH {
        return Err(DecodeError::TooDeep);
    }
    if d.datatype().map_err(|_| DecodeError::Cbor)? != Type::Map && d.datatype()? != Type::MapIndef {
        return Err(DecodeError::NotAMap);
    }
    let len = d.map()?;
    let mut seen = 0u64;
    loop {
        match len {
            Some(n) if seen == n => break,
            None if d.datatype()? == Type::Break => {
                d.skip()?; // consume the break
                break;
            }
            _ => {}
        }
        let key = match d.datatype()? {
            Type::String => d.str()?.to_owned(),
            _ => {
                // Non-string keys are not ours; skip key and value.
                skip(d, depth + 1)?;
                skip(d, depth + 1)?;
                seen += 1;
                continue;
            }
        };
        f(d, &key)?;
        seen += 1;
    }
    Ok(())
}

/// Walks a definite or indefinite array, calling `f` to consume each item.
fn for_each_item<'b>(
    d: &mut Decoder<'b>,
    mut f: impl FnMut(&mut Decoder<'b>) -> Result<(), DecodeError>,
) -> Result<(), DecodeError> {
    let len = d.array()?;
    let mut seen = 0u64;
    loop {
        match len {
            Some(n) if seen == n => return Ok(()),
            None if d.datatype()? == Type::Break => {
                d.skip()?; // consume the break
                return Ok(());
            }
            _ => {}
        }
        f(d)?;
        seen += 1;
    }
}

/// Skips one value, refusing deep nesting instead of recursing without bound.
fn skip(d: &mut Decoder<'_>, depth: u32) -> Result<(), DecodeError> {
    if depth > MAX_DEPTH {
        return Err(DecodeError::TooDeep);
    }
    match d.datatype()? {
        Type::Array | Type::ArrayIndef => for_each_item(d, |d| skip(d, depth + 1))?,
        Type::Map | Type::MapIndef => for_each_entry(d, depth + 1, |d, _| skip(d, depth + 2))?,
        Type::Tag => {
            d.tag()?;
            skip(d, depth + 1)?;
        }
        _ => d.skip()?,
    }
    Ok(())
}

/// Longest text field accepted (peer, storage and session ids, versions, error messages). Ids
/// become map keys and are repeated in every frame to a peer: a 1 MiB peer id would pin a
/// megabyte per queued frame.
pub const MAX_TEXT: usize = 1024;

fn text(d: &mut Decoder<'_>, field: &'static str) -> Result<String, DecodeError> {
    let s = match d.datatype()? {
        Type::String => {
            let s = d.str()?;
            if s.len() > MAX_TEXT {
                return Err(DecodeError::TooLong(field));
            }
            s.to_owned()
        }
        Type::StringIndef => {
            let mut s = String::new();
            for part in d.str_iter()? {
                s.push_str(part?);
                if s.len() > MAX_TEXT {
                    return Err(DecodeError::TooLong(field));
                }
            }
            s
        }
        _ => return Err(DecodeError::WrongType(field)),
    };
    Ok(s)
}

fn texts(d: &mut Decoder<'_>, field: &'static str) -> Result<Vec<String>, DecodeError> {
    let mut out = Vec::new();
    match d.datatype()? {
        Type::Array | Type::ArrayIndef => for_each_item(d, |d| {
            out.push(text(d, field)?);
            Ok(())
        })?,
        // The spec's CDDL shows a single string; accept it.
        Type::String | Type::StringIndef => out.push(text(d, field)?),
        _ => return Err(DecodeError::WrongType(field)),
    }
    Ok(out)
}

/// A byte string, plain or tagged as a typed array (tag 64), as JavaScript encoders may send.
fn bytes(d: &mut Decoder<'_>) -> Result<Vec<u8>, DecodeError> {
    if d.datatype()? == Type::Tag {
        let tag = d.tag()?;
        if tag != Tag::new(64) {
            return Err(DecodeError::WrongType("data"));
        }
    }
    match d.datatype()? {
        Type::Bytes => Ok(d.bytes()?.to_vec()),
        Type::BytesIndef => {
            let mut v = Vec::new();
            for part in d.bytes_iter()? {
                v.extend_from_slice(part?);
            }
            Ok(v)
        }
        _ => Err(DecodeError::WrongType("data")),
    }
}

fn metadata(d: &mut Decoder<'_>) -> Result<PeerMetadata, DecodeError> {
    let mut m = PeerMetadata::default();
    if d.datatype()? == Type::Null || d.datatype()? == Type::Undefined {
        d.skip()?;
        return Ok(m);
    }
    for_each_entry(d, 1, |d, key| {
        match key {
            "storageId" => {
                if matches!(d.datatype()?, Type::Null | Type::Undefined) {
                    d.skip()?;
                } else {
                    m.storage_id = Some(StorageId(text(d, "storageId")?));
                }
            }
            "isEphemeral" => m.is_ephemeral = d.bool().map_err(|_| DecodeError::WrongType("isEphemeral"))?,
            _ => skip(d, 2)?,
        }
        Ok(())
    })?;
    Ok(m)
}

fn new_heads(d: &mut Decoder<'_>) -> Result<BTreeMap<StorageId, HeadsAt>, DecodeError> {
    let mut out = BTreeMap::new();
    for_each_entry(d, 1, |d, storage| {
        let mut heads = Vec::new();
        let mut timestamp = 0;
        for_each_entry(d, 2, |d, key| {
            match key {
                "heads" => heads = texts(d, "heads")?,
                "timestamp" => {
                    // JavaScript numbers may arrive as floats.
                    timestamp = match d.datatype()? {
                        Type::F16 | Type::F32 | Type::F64 => d.f64()?.max(0.0) as u64,
                        _ => d.u64().map_err(|_| DecodeError::WrongType("timestamp"))?,
                    }
                }
                _ => skip(d, 3)?,
            }
            Ok(())
        })?;
        out.insert(StorageId(storage.to_owned()), HeadsAt { heads, timestamp });
        Ok(())
    })?;
    Ok(out)
}

#[cfg(test)]
mod tests;
