//! Two stores over one key-value store, as two relay nodes over one PostgreSQL
//! ([`StoreOptions::shared`]): a write that lost the race conflicts instead of overwriting the
//! other's chunk, and a cached copy another process made stale is not used.

#![allow(clippy::unwrap_used)]

use std::sync::{Arc, Mutex};

use super::test_stores::{heads, identity, plan, retitle};
use super::{DocStore, ManualClock, StoreOptions, SyncWrite};
use crate::model::EngagementPlan;
use crate::storage::{Batch, KeyValue, KvStore, MemoryKv, StorageError};

type Hook = Box<dyn FnOnce() + Send>;

/// A key-value store that runs a hook (another node's write) just before the next batch is
/// applied: the interleaving two nodes produce when both edit one document at once.
struct RaceKv {
    inner: Arc<MemoryKv>,
    before_apply: Mutex<Option<Hook>>,
}

impl std::fmt::Debug for RaceKv {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RaceKv")
    }
}

impl RaceKv {
    fn race(&self, hook: impl FnOnce() + Send + 'static) {
        *self.before_apply.lock().unwrap() = Some(Box::new(hook));
    }
}

impl KvStore for RaceKv {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StorageError> {
        self.inner.get(key)
    }
    fn put(&self, key: &[u8], value: &[u8]) -> Result<(), StorageError> {
        self.inner.put(key, value)
    }
    fn delete(&self, key: &[u8]) -> Result<(), StorageError> {
        self.inner.delete(key)
    }
    fn scan_prefix(&self, prefix: &[u8]) -> Result<Vec<KeyValue>, StorageError> {
        self.inner.scan_prefix(prefix)
    }
    fn apply(&self, batch: Batch) -> Result<(), StorageError> {
        let hook = self.before_apply.lock().unwrap().take();
        if let Some(hook) = hook {
            hook();
        }
        self.inner.apply(batch)
    }
    fn flush(&self) -> Result<(), StorageError> {
        self.inner.flush()
    }
}

fn options(shared: bool) -> StoreOptions {
    StoreOptions { shared, ..StoreOptions::default() }
}

/// Node A over a racing view of the store, node B over the store itself.
fn two_nodes(shared: bool) -> (DocStore, Arc<RaceKv>, Arc<DocStore>) {
    let inner = Arc::new(MemoryKv::new());
    let race = Arc::new(RaceKv { inner: inner.clone(), before_apply: Mutex::new(None) });
    let clock = Arc::new(ManualClock::new(1_700_000_000_000));
    let a = DocStore::with_kv(race.clone(), identity("t", "sato"), clock.clone(), options(shared)).unwrap();
    let b = DocStore::with_kv(inner, identity("t", "suzuki"), clock, options(shared)).unwrap();
    (a, race, Arc::new(b))
}

fn notes(store: &DocStore, id: &crate::DocumentId) -> String {
    store.get::<EngagementPlan>(id).unwrap().notes.as_str().to_owned()
}

fn append_note(store: &DocStore, id: &crate::DocumentId, text: &'static str) -> Result<(), super::StoreError> {
    store
        .update(id, move |p: &mut EngagementPlan| {
            let end = p.notes.as_str().len();
            p.notes.splice(end, 0, text)
        })
        .map(drop)
}

#[test]
fn a_write_that_lost_the_race_conflicts_writes_nothing_and_succeeds_when_tried_again() {
    let (a, race, b) = two_nodes(true);
    let id = plan(&a, "east", "FY27");
    assert_eq!(notes(&b, &id), "");
    let other = b.clone();
    race.race(move || append_note(&other, &id, "[b]").unwrap());
    let lost = append_note(&a, &id, "[a]").unwrap_err();
    assert!(lost.is_conflict(), "{lost}");
    assert_eq!(notes(&b, &id), "[b]", "nothing of the losing write was stored");
    // Tried again, A builds on B's write: both edits kept, on both nodes.
    append_note(&a, &id, "[a]").unwrap();
    for node in [&a, &*b] {
        let n = notes(node, &id);
        assert!(n.contains("[a]") && n.contains("[b]"), "{n}");
    }
    assert_eq!(heads(&a, &id), heads(&b, &id));
}

#[test]
fn without_shared_the_same_race_overwrites_the_other_nodes_chunk() {
    // Why the option exists: both nodes take the same chunk number, the later write wins.
    let (a, race, b) = two_nodes(false);
    let id = plan(&a, "east", "FY27");
    assert_eq!(notes(&b, &id), "");
    let other = b.clone();
    race.race(move || append_note(&other, &id, "[b]").unwrap());
    append_note(&a, &id, "[a]").unwrap();
    let fresh =
        DocStore::with_kv(a.kv().clone(), identity("t", "tanaka"), Arc::new(ManualClock::new(1)), options(true))
            .unwrap();
    assert!(!notes(&fresh, &id).contains("[b]"), "B's acknowledged edit is gone: {}", notes(&fresh, &id));
}

#[test]
fn a_cached_copy_another_node_made_stale_is_not_used() {
    let (a, _race, b) = two_nodes(true);
    let id = plan(&a, "east", "FY27");
    assert_eq!(notes(&a, &id), "", "A caches the plan");
    append_note(&b, &id, "[b]").unwrap();
    assert_eq!(notes(&a, &id), "[b]", "a read sees B's write");
    retitle(&a, &id, "FY28");
    let fresh =
        DocStore::with_kv(a.kv().clone(), identity("t", "tanaka"), Arc::new(ManualClock::new(1)), options(true))
            .unwrap();
    let p: EngagementPlan = fresh.get(&id).unwrap();
    assert_eq!((p.title.as_str(), p.notes.as_str()), ("FY28", "[b]"), "A's edit was built on B's");
    assert_eq!(heads(&fresh, &id), heads(&a, &id));
}

#[test]
fn a_relay_group_commit_refuses_a_write_judged_against_a_version_another_node_replaced() {
    let (a, race, b) = two_nodes(true);
    let (device, _) = super::test_stores::memory_store("t");
    let id = plan(&device, "east", "FY27");
    let first = plan(&device, "east", "one");
    for doc in [id, first] {
        let changes = device.changes_since(&doc, &[]).unwrap();
        let h = heads(&device, &doc);
        let w = SyncWrite { base: Some(&[]), doc, changes: &changes, heads: &h, sync_states: &[] };
        assert!(b.append_sync_batch(&[w]).unwrap().iter().all(Result::is_ok));
    }
    let known = heads(&device, &id);
    append_note(&device, &id, "[device]").unwrap();
    let changes = device.changes_since(&id, &known).unwrap();
    let h = heads(&device, &id);
    let other = b.clone();
    race.race(move || append_note(&other, &id, "[b]").unwrap());
    let states = [("s".to_owned(), vec![1])];
    let writes = [
        SyncWrite { base: None, doc: first, changes: &[], heads: &[], sync_states: &states },
        SyncWrite { base: Some(&known), doc: id, changes: &changes, heads: &h, sync_states: &[] },
    ];
    let outcomes = a.append_sync_batch(&writes).unwrap();
    assert!(outcomes[0].is_ok(), "{outcomes:?}");
    assert!(outcomes[1].as_ref().is_err_and(super::StoreError::is_conflict), "{outcomes:?}");
    assert_eq!(notes(&b, &id), "[b]", "the write judged against the old version stored nothing");
    assert_eq!(a.load_for_sync(&first).unwrap().unwrap().1, states, "the rest of the group is stored");
    // Judged again against the document as stored now (the engine reloads it), it goes in.
    let now = heads(&b, &id);
    let again = [SyncWrite { base: Some(&now), doc: id, changes: &changes, heads: &h, sync_states: &[] }];
    assert!(a.append_sync_batch(&again).unwrap().iter().all(Result::is_ok));
    let n = notes(&a, &id);
    assert!(n.contains("[device]") && n.contains("[b]"), "{n}");
}

#[test]
fn an_erasure_racing_another_nodes_write_leaves_nothing_of_the_document() {
    let (a, race, b) = two_nodes(true);
    let id = plan(&a, "east", "FY27");
    assert_eq!(notes(&b, &id), "");
    let other = b.clone();
    race.race(move || append_note(&other, &id, "[written during the erasure]").unwrap());
    let mut tombstone = Batch::new();
    tombstone.put(b"z/tombstone".to_vec(), b"1".to_vec());
    assert!(a.delete_with(&id, tombstone).unwrap());
    assert!(a.kv().scan_prefix(&super::keys::chunk_prefix(&id)).unwrap().is_empty(), "no chunk outlived it");
    assert!(a.kv().get(&super::keys::meta(&id)).unwrap().is_none());
    assert_eq!(a.kv().get(b"z/tombstone").unwrap(), Some(b"1".to_vec()));
    assert!(b.get::<EngagementPlan>(&id).is_err(), "B no longer reads it");
}

fn feed_seqs(store: &DocStore) -> Vec<u64> {
    store.feed_page("t", 0, 1000).unwrap().iter().map(|e| e.seq).collect()
}

#[test]
fn two_nodes_never_hand_out_one_feed_number_twice_even_when_racing() {
    let (a, race, b) = two_nodes(true);
    let mut made = vec![plan(&a, "east", "a1"), plan(&b, "east", "b1"), plan(&a, "east", "a2")];
    // B takes a feed number between A reading the counter and A's batch: only `!feed` moved,
    // so A's write is numbered again, not refused.
    let other = b.clone();
    let from_b = Arc::new(Mutex::new(None));
    let slot = from_b.clone();
    race.race(move || *slot.lock().unwrap() = Some(plan(&other, "east", "b2")));
    made.push(plan(&a, "east", "a3"));
    made.push(from_b.lock().unwrap().unwrap());
    // And a relay group commit racing the same way.
    let (device, _) = super::test_stores::memory_store("t");
    let synced = plan(&device, "east", "synced");
    let changes = device.changes_since(&synced, &[]).unwrap();
    let h = heads(&device, &synced);
    let other = b.clone();
    let slot = from_b.clone();
    race.race(move || *slot.lock().unwrap() = Some(plan(&other, "east", "b3")));
    let w = SyncWrite { base: Some(&[]), doc: synced, changes: &changes, heads: &h, sync_states: &[] };
    assert!(a.append_sync_batch(&[w]).unwrap().iter().all(Result::is_ok));
    made.push(synced);
    made.push(from_b.lock().unwrap().unwrap());

    for node in [&a, &*b] {
        let seqs = feed_seqs(node);
        assert_eq!(seqs, (1..=made.len() as u64).collect::<Vec<_>>(), "one number each, no gap, in order");
        assert_eq!(node.feed_cursor(), made.len() as u64, "each node's cursor is the cluster's");
        let listed: std::collections::HashSet<_> =
            node.feed_page("t", 0, 1000).unwrap().iter().map(|e| e.doc).collect();
        assert_eq!(listed, made.iter().copied().collect(), "every document listed once");
    }
}
