//! Stores and documents for the store's unit tests (heads, pending, feed, reasons).

#![allow(clippy::unwrap_used)]

use std::sync::Arc;

use automerge::ChangeHash;

use super::{DocStore, ManualClock, StoreOptions, SyncWrite};
use crate::model::{EngagementPlan, KolProfile};
use crate::storage::{KvStore, MemoryKv};
use crate::{DocumentId, Identity, Role};

pub(super) fn identity(tenant: &str, user: &str) -> Identity {
    Identity { tenant: tenant.into(), user: user.into(), device: format!("{user}-d"), role: Role::Msl, install: [3; 8] }
}

/// A store of `tenant` over `kv`, with a fixed clock.
pub(super) fn store_over(kv: Arc<dyn KvStore>, tenant: &str) -> DocStore {
    let clock = Arc::new(ManualClock::new(1_700_000_000_000));
    DocStore::with_kv(kv, identity(tenant, "sato"), clock, StoreOptions::default()).unwrap()
}

/// A device of `tenant` with an in-memory store.
pub(super) fn memory_store(tenant: &str) -> (DocStore, Arc<MemoryKv>) {
    let kv = Arc::new(MemoryKv::new());
    (store_over(kv.clone(), tenant), kv)
}

/// A new engagement plan of team `team`.
pub(super) fn plan(store: &DocStore, team: &str, title: &str) -> DocumentId {
    store.create(team, &EngagementPlan::new(&DocumentId::from_bytes([2; 16]), title)).unwrap()
}

/// A new KOL profile of team `team`.
pub(super) fn kol(store: &DocStore, team: &str, name: &str) -> DocumentId {
    store.create(team, &KolProfile::new(name, "Univ")).unwrap()
}

/// Retitles a plan locally.
pub(super) fn retitle(store: &DocStore, id: &DocumentId, title: &str) {
    store.update(id, |p: &mut EngagementPlan| p.title = title.into()).unwrap();
}

pub(super) fn heads(store: &DocStore, id: &DocumentId) -> Vec<ChangeHash> {
    store.load(id).unwrap().get_heads()
}

/// Stores what `from` has of `id` in `to` as the relay's group commit would, changes since
/// `known` (empty: everything).
pub(super) fn sync_write(from: &DocStore, to: &DocStore, id: &DocumentId, known: &[ChangeHash]) {
    let changes = from.changes_since(id, known).unwrap();
    let heads = heads(from, id);
    let write = SyncWrite { base: None, doc: *id, changes: &changes, heads: &heads, sync_states: &[] };
    let outcomes = to.append_sync_batch(&[write]).unwrap();
    assert!(outcomes.iter().all(Result::is_ok), "{outcomes:?}");
}
