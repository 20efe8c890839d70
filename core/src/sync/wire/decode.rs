//! Decoding frames: never panics, refuses a frame over the size limit before parsing it, caps
//! nesting, skips unknown keys.

use std::collections::BTreeMap;

use minicbor::Decoder;
use minicbor::data::{Tag, Type};

use super::{HeadsAt, MAX_DEPTH, Message, PROTOCOL_V1, PeerId, PeerMetadata, StorageId};
use crate::DocumentId;

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
            "liaisonCatalog" => {
                let mut c = crate::sync::catalog::CatalogRequest::default();
                for_each_entry(d, 2, |d, key| {
                    match key {
                        "cursor" => c.cursor = d.u64().map_err(|_| DecodeError::WrongType("cursor"))?,
                        "scope" => c.scope = text(d, "scope")?,
                        _ => skip(d, 3)?,
                    }
                    Ok(())
                })?;
                m.catalog = Some(c);
            }
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
