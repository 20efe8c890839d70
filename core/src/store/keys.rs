//! The key layout (see the table in the module doc of [`super`]).

use sha2::{Digest, Sha256};

use crate::DocumentId;
use crate::model::Kind;

pub const INSTALL: &[u8] = b"!install";
pub const META_PREFIX: &[u8] = b"m/";
pub const SUMMARY_PREFIX: &[u8] = b"s/";
pub const PENDING_PREFIX: &[u8] = b"p/";
/// The change feed's last assigned sequence number (u64, big-endian).
pub const FEED: &[u8] = b"!feed";
pub const FEED_PREFIX: &[u8] = b"f/";
/// `f/` and 16 bytes of the tenant's hash.
const FEED_TENANT_LEN: usize = 2 + 16;
/// Present once every document with local writes not yet acknowledged has a `p/` entry: written
/// when a store is made, or when an older store's documents are all marked pending.
pub const PENDING_MARKER: &[u8] = b"!pending-v1";

fn join(parts: &[&[u8]]) -> Vec<u8> {
    parts.concat()
}
pub fn meta(id: &DocumentId) -> Vec<u8> {
    join(&[META_PREFIX, id.as_bytes()])
}
pub fn chunk_prefix(id: &DocumentId) -> Vec<u8> {
    join(&[b"c/", id.as_bytes(), b"/"])
}
pub fn chunk(id: &DocumentId, seq: u64) -> Vec<u8> {
    join(&[&chunk_prefix(id), &seq.to_be_bytes()])
}
pub fn kind_prefix(kind: Kind) -> Vec<u8> {
    join(&[b"k/", kind.as_str().as_bytes(), b"/"])
}
pub fn kind(kind: Kind, id: &DocumentId) -> Vec<u8> {
    join(&[&kind_prefix(kind), id.as_bytes()])
}
pub fn summary(id: &DocumentId) -> Vec<u8> {
    join(&[SUMMARY_PREFIX, id.as_bytes()])
}
pub fn kol_ref_prefix(kol: &DocumentId, kind: Kind) -> Vec<u8> {
    join(&[b"r/", kol.as_bytes(), b"/", kind.as_str().as_bytes(), b"/"])
}
pub fn kol_ref(kol: &DocumentId, kind: Kind, id: &DocumentId) -> Vec<u8> {
    join(&[&kol_ref_prefix(kol, kind), id.as_bytes()])
}
pub fn sync_prefix(id: &DocumentId) -> Vec<u8> {
    join(&[b"y/", id.as_bytes(), b"/"])
}
pub fn sync_state(id: &DocumentId, storage_id: &str) -> Vec<u8> {
    join(&[&sync_prefix(id), storage_id.as_bytes()])
}
pub fn pending(id: &DocumentId) -> Vec<u8> {
    join(&[PENDING_PREFIX, id.as_bytes()])
}
/// A tenant's change feed: `f/` and the first 16 bytes of SHA-256 of the tenant (tenant names
/// have any length and characters; the hash keeps the key fixed-size and the name out of it).
pub fn feed_prefix(tenant: &str) -> Vec<u8> {
    join(&[FEED_PREFIX, &Sha256::digest(tenant.as_bytes())[..16]])
}
pub fn feed(tenant: &str, seq: u64, id: &DocumentId) -> Vec<u8> {
    join(&[&feed_prefix(tenant), &seq.to_be_bytes(), id.as_bytes()])
}
/// Sequence number and document of a feed key; `None` if it is not one.
pub fn feed_entry(key: &[u8]) -> Option<(u64, DocumentId)> {
    if key.len() != FEED_TENANT_LEN + 8 + 16 || !key.starts_with(FEED_PREFIX) {
        return None;
    }
    let seq: [u8; 8] = key.get(FEED_TENANT_LEN..FEED_TENANT_LEN + 8)?.try_into().ok()?;
    Some((u64::from_be_bytes(seq), trailing_id(key)?))
}
/// The id at the end of an index key.
pub fn trailing_id(key: &[u8]) -> Option<DocumentId> {
    let tail: [u8; 16] = key.get(key.len().checked_sub(16)?..)?.try_into().ok()?;
    Some(DocumentId::from_bytes(tail))
}
