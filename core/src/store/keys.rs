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

// The screen indexes (see `screen`): one namespace, so a rebuild deletes it whole.

/// Every screen index key.
pub const SCREEN_PREFIX: &[u8] = b"x/";
/// The version of the derived indexes this store holds (u32, big-endian); see `index_version`.
pub const INDEX_VERSION: &[u8] = b"!index-v";
/// A rebuild of the derived indexes under way: its version and how far it got (`index_version`).
pub const INDEX_REBUILD: &[u8] = b"!index-rebuild";
const SCREEN_BACKREF: &[u8] = b"x/b/";
const SCREEN_INTERACTIONS: &[u8] = b"x/i/";
const SCREEN_TASKS: &[u8] = b"x/t/";
const SCREEN_MIRS: &[u8] = b"x/q/";
const SCREEN_DRAFTS: &[u8] = b"x/d/";
/// Profiles merged into another (`x/g/ID`, the other's 16 id bytes).
pub const SCREEN_MERGED: &[u8] = b"x/g/";
/// Documents this build cannot read (`x/u/ID`, see `screen::StoredUnreadable`).
pub const SCREEN_UNREADABLE: &[u8] = b"x/u/";

/// A time as 8 bytes that sort in time order (i64 with its sign bit flipped, big-endian).
pub fn time_ascending(ms: i64) -> [u8; 8] {
    ((ms as u64) ^ (1 << 63)).to_be_bytes()
}
/// A time as 8 bytes that sort newest first.
pub fn time_descending(ms: i64) -> [u8; 8] {
    (!((ms as u64) ^ (1 << 63))).to_be_bytes()
}
/// The time of [`time_ascending`] bytes.
pub fn time_from_ascending(bytes: [u8; 8]) -> i64 {
    (u64::from_be_bytes(bytes) ^ (1 << 63)) as i64
}
/// The time of [`time_descending`] bytes.
pub fn time_from_descending(bytes: [u8; 8]) -> i64 {
    (!u64::from_be_bytes(bytes) ^ (1 << 63)) as i64
}
/// A user name as 16 bytes (SHA-256 prefix): fixed length, so a user's entries are one range
/// and no name is a prefix of another's.
pub fn user_hash(user: &str) -> [u8; 16] {
    let digest = Sha256::digest(user.as_bytes());
    let mut out = [0; 16];
    out.copy_from_slice(&digest[..16]);
    out
}
/// The screen keys a document wrote (a CBOR list), so its next write or removal finds them.
pub fn screen_backref(id: &DocumentId) -> Vec<u8> {
    join(&[SCREEN_BACKREF, id.as_bytes()])
}
/// Interactions of one KOL, newest first: `x/i/KOL START↓ ID`.
pub fn screen_interactions_of(kol: &DocumentId) -> Vec<u8> {
    join(&[SCREEN_INTERACTIONS, kol.as_bytes()])
}
pub fn screen_interaction(kol: &DocumentId, start: i64, id: &DocumentId) -> Vec<u8> {
    join(&[&screen_interactions_of(kol), &time_descending(start), id.as_bytes()])
}
/// Where a task is in its owner's range: open ones first, and among those dated ones first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TaskRange {
    /// Open or in progress, with a due date: sorted by due date.
    OpenDated = 0,
    /// Open or in progress, without a due date.
    OpenUndated = 1,
    /// Done or cancelled.
    Closed = 2,
}
/// One owner's tasks in one [`TaskRange`]: `x/t/OWNER RANGE`.
pub fn screen_tasks_of(owner: &str, range: TaskRange) -> Vec<u8> {
    join(&[SCREEN_TASKS, &user_hash(owner), &[range as u8]])
}
/// `x/t/OWNER RANGE DUE↑ RECORD ITEM` (an undated task's DUE is zeros).
pub fn screen_task(owner: &str, range: TaskRange, due: Option<i64>, record: &DocumentId, item: &str) -> Vec<u8> {
    let due = due.map(time_ascending).unwrap_or_default();
    join(&[&screen_tasks_of(owner, range), &due, record.as_bytes(), item.as_bytes()])
}
/// MIRs, open ones (`x/q/0`) or the others (`x/q/1`), oldest first: `x/q/OPEN CREATED↑ ID`.
pub fn screen_mirs(open: bool) -> Vec<u8> {
    join(&[SCREEN_MIRS, &[u8::from(!open)]])
}
pub fn screen_mir(open: bool, created: i64, id: &DocumentId) -> Vec<u8> {
    join(&[&screen_mirs(open), &time_ascending(created), id.as_bytes()])
}
/// Drafts of the kinds that lock, every author's (`x/d/`) or one author's: `x/d/AUTHOR ID`.
pub fn screen_drafts() -> Vec<u8> {
    SCREEN_DRAFTS.to_vec()
}
pub fn screen_drafts_of(author: &str) -> Vec<u8> {
    join(&[SCREEN_DRAFTS, &user_hash(author)])
}
pub fn screen_draft(author: &str, id: &DocumentId) -> Vec<u8> {
    join(&[&screen_drafts_of(author), id.as_bytes()])
}
pub fn screen_merged(id: &DocumentId) -> Vec<u8> {
    join(&[SCREEN_MERGED, id.as_bytes()])
}
/// A document this build cannot read.
pub fn screen_unreadable(id: &DocumentId) -> Vec<u8> {
    join(&[SCREEN_UNREADABLE, id.as_bytes()])
}
