//! Tombstones: an erased document's id is never served or accepted again, and the owner it
//! had is kept so that only those who could read it are told it was erased.

use liaison_core::{DocStore, DocumentId};

use super::Owner;

/// The owner an erased document had, from its tombstone: (tenant, team).
pub fn erased_owner(store: &DocStore, doc: &DocumentId) -> Option<(String, String)> {
    let value = store.kv().get(&tombstone_key(doc)).ok()??;
    tombstone_owner(&value)
}

/// Key of an erased document's tombstone: its id is never served or accepted again.
pub fn tombstone_key(doc: &DocumentId) -> Vec<u8> {
    crate::keys::tombstone(doc)
}

/// A tombstone's value: when, and whose document it was (so only those who could read it are
/// told it was erased; to everyone else the id is simply unavailable).
pub fn encode_tombstone(at_ms: i64, owner: Option<&Owner>) -> Vec<u8> {
    let mut v = at_ms.to_be_bytes().to_vec();
    if let Some(o) = owner {
        v.extend_from_slice(o.tenant.as_bytes());
        v.push(0);
        v.extend_from_slice(o.team.as_bytes());
    }
    v
}

pub(super) fn tombstone_owner(value: &[u8]) -> Option<(String, String)> {
    let rest = value.get(8..)?;
    let split = rest.iter().position(|b| *b == 0)?;
    let tenant = std::str::from_utf8(&rest[..split]).ok()?;
    let team = std::str::from_utf8(&rest[split + 1..]).ok()?;
    Some((tenant.to_owned(), team.to_owned()))
}
