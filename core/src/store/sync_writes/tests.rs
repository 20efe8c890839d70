//! The group commit ([`DocStore::append_sync_batch`]) on its own: one batch and one flush for
//! the group, one outcome per write, a write that cannot be read failing alone, several writes
//! to one document stored in order, and compaction inside a group.

#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use automerge::ChangeHash;

use crate::model::{EngagementPlan, Kind, KolProfile};
use crate::storage::{Batch, KeyValue, KvStore, MemoryKv, StorageError};
use crate::store::{DocChange, DocStore, ManualClock, Origin, StoreError, StoreOptions, SyncWrite, keys};
use crate::{DocumentId, Identity, Role};

/// A memory store that counts what reaches it: a group commit is one `apply` and one `flush`.
#[derive(Debug, Default)]
struct CountingKv {
    inner: MemoryKv,
    batches: AtomicUsize,
    flushes: AtomicUsize,
    single_writes: AtomicUsize,
}

/// Batches, flushes and single puts or deletes.
type Counts = (usize, usize, usize);

impl CountingKv {
    fn counts(&self) -> Counts {
        (
            self.batches.load(Ordering::SeqCst),
            self.flushes.load(Ordering::SeqCst),
            self.single_writes.load(Ordering::SeqCst),
        )
    }

    fn since(&self, before: Counts) -> Counts {
        let now = self.counts();
        (now.0 - before.0, now.1 - before.1, now.2 - before.2)
    }
}

impl KvStore for CountingKv {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StorageError> {
        self.inner.get(key)
    }
    fn put(&self, key: &[u8], value: &[u8]) -> Result<(), StorageError> {
        self.single_writes.fetch_add(1, Ordering::SeqCst);
        self.inner.put(key, value)
    }
    fn delete(&self, key: &[u8]) -> Result<(), StorageError> {
        self.single_writes.fetch_add(1, Ordering::SeqCst);
        self.inner.delete(key)
    }
    fn scan_prefix(&self, prefix: &[u8]) -> Result<Vec<KeyValue>, StorageError> {
        self.inner.scan_prefix(prefix)
    }
    fn apply(&self, batch: Batch) -> Result<(), StorageError> {
        self.batches.fetch_add(1, Ordering::SeqCst);
        self.inner.apply(batch)
    }
    fn flush(&self) -> Result<(), StorageError> {
        self.flushes.fetch_add(1, Ordering::SeqCst);
        self.inner.flush()
    }
}

fn identity(user: &str, role: Role) -> Identity {
    Identity { tenant: "t".into(), user: user.into(), device: format!("{user}-device"), role, install: [7; 8] }
}

/// The device whose edits the relay receives.
fn device() -> DocStore {
    let clock = Arc::new(ManualClock::new(1_700_000_000_000));
    DocStore::with_kv(Arc::new(MemoryKv::new()), identity("sato", Role::Msl), clock, StoreOptions::default()).unwrap()
}

fn relay_over(kv: Arc<CountingKv>, compact_after_chunks: u64) -> DocStore {
    let options = StoreOptions { compact_after_chunks, ..StoreOptions::default() };
    DocStore::with_kv(kv, identity("relay", Role::Admin), Arc::new(ManualClock::new(0)), options).unwrap()
}

fn relay(compact_after_chunks: u64) -> (DocStore, Arc<CountingKv>) {
    let kv = Arc::new(CountingKv::default());
    (relay_over(kv.clone(), compact_after_chunks), kv)
}

/// What one sync message carries for one document: changes and the heads after them.
struct Received {
    doc: DocumentId,
    changes: Vec<u8>,
    heads: Vec<ChangeHash>,
}

impl Received {
    fn write<'a>(&'a self, sync_states: &'a [(String, Vec<u8>)]) -> SyncWrite<'a> {
        SyncWrite { base: None, doc: self.doc, changes: &self.changes, heads: &self.heads, sync_states }
    }
}

/// A new plan on the device, as the relay first receives it.
fn new_plan(device: &DocStore, title: &str) -> Received {
    let doc = device.create("onc-east", &EngagementPlan::new(&DocumentId::from_bytes([2; 16]), title)).unwrap();
    Received { doc, changes: device.export(&doc).unwrap(), heads: device.load(&doc).unwrap().get_heads() }
}

/// An edit of a plan on the device: the changes since the relay last received it.
fn retitle(device: &DocStore, doc: DocumentId, title: &str) -> Received {
    let before = device.load(&doc).unwrap().get_heads();
    device.update(&doc, |p: &mut EngagementPlan| p.title = title.into()).unwrap();
    Received {
        doc,
        changes: device.changes_since(&doc, &before).unwrap(),
        heads: device.load(&doc).unwrap().get_heads(),
    }
}

fn states(tag: u8) -> Vec<(String, Vec<u8>)> {
    vec![("storage-of-sato".to_owned(), vec![tag; 4])]
}

fn stored_states(relay: &DocStore, doc: &DocumentId) -> Vec<KeyValue> {
    relay.kv().scan_prefix(&keys::sync_prefix(doc)).unwrap()
}

#[test]
fn a_group_is_one_batch_and_one_flush_with_an_outcome_per_write() {
    let device = device();
    let (relay, kv) = relay(64);
    let kol = device.create("onc-east", &KolProfile::new("Dr. Lee", "Kyoto Univ")).unwrap();
    let kol =
        Received { doc: kol, changes: device.export(&kol).unwrap(), heads: device.load(&kol).unwrap().get_heads() };
    let plans = [new_plan(&device, "a"), new_plan(&device, "b")];
    let st = states(1);
    let mut writes = vec![kol.write(&st)];
    writes.extend(plans.iter().map(|p| p.write(&st)));
    let feed = relay.subscribe();

    let before = kv.counts();
    let outcomes = relay.append_sync_batch(&writes).unwrap();
    assert_eq!(outcomes.len(), 3);
    assert!(outcomes.iter().all(Result::is_ok), "{outcomes:?}");
    assert_eq!(kv.since(before), (1, 1, 0), "one batch, one flush, nothing written alone");

    for r in plans.iter().chain([&kol]) {
        assert_eq!(relay.load(&r.doc).unwrap().get_heads(), r.heads);
        assert_eq!(stored_states(&relay, &r.doc).len(), 1, "sync states go with the chunks");
        assert_eq!(
            relay.owner_of(&r.doc).unwrap(),
            Some(("t".into(), "onc-east".into(), relay.kind_of(&r.doc).unwrap()))
        );
    }
    // New documents are loaded once, so their kind, owner and summary are indexed.
    assert_eq!(relay.list(Kind::EngagementPlan).unwrap().len(), 2);
    assert_eq!(relay.list_kols().unwrap().iter().map(|s| s.id).collect::<Vec<_>>(), vec![kol.doc]);
    let events: Vec<DocChange> = feed.try_iter().collect();
    let expected: Vec<_> = writes.iter().map(|w| (w.doc, Origin::Remote, w.heads.to_vec())).collect();
    assert_eq!(events.into_iter().map(|e| (e.id, e.origin, e.heads)).collect::<Vec<_>>(), expected);
}

#[test]
fn an_empty_group_writes_and_flushes_nothing() {
    let (relay, kv) = relay(64);
    let before = kv.counts();
    assert!(relay.append_sync_batch(&[]).unwrap().is_empty());
    assert_eq!(kv.since(before), (0, 0, 0));
}

#[test]
fn a_write_that_cannot_be_read_fails_alone_and_leaves_nothing_behind() {
    let device = device();
    let (relay, kv) = relay(64);
    let good = [new_plan(&device, "a"), new_plan(&device, "b")];
    let bad = Received { doc: DocumentId::from_bytes([9; 16]), changes: b"not automerge".to_vec(), heads: vec![] };
    let st = states(1);
    let feed = relay.subscribe();

    let before = kv.counts();
    let outcomes = relay.append_sync_batch(&[good[0].write(&st), bad.write(&st), good[1].write(&st)]).unwrap();
    assert_eq!(kv.since(before), (1, 1, 0), "the others still go in one batch");
    assert!(outcomes[0].is_ok() && outcomes[2].is_ok(), "{outcomes:?}");
    assert!(matches!(&outcomes[1], Err(StoreError::Corrupt { id, .. }) if *id == bad.doc), "{outcomes:?}");
    for r in &good {
        assert_eq!(relay.load(&r.doc).unwrap().get_heads(), r.heads);
    }
    // Nothing of the failed write is stored: no chunk, no meta, not even its sync states.
    assert!(relay.load_for_sync(&bad.doc).unwrap().is_none());
    assert!(matches!(relay.kind_of(&bad.doc), Err(StoreError::NotFound(_))));
    assert!(stored_states(&relay, &bad.doc).is_empty());
    assert_eq!(feed.try_iter().map(|e| e.id).collect::<Vec<_>>(), vec![good[0].doc, good[1].doc]);

    // A group whose only write fails writes nothing at all.
    let before = kv.counts();
    let outcomes = relay.append_sync_batch(&[bad.write(&st)]).unwrap();
    assert!(outcomes[0].is_err());
    assert_eq!(kv.since(before), (0, 0, 0));
}

#[test]
fn a_group_that_cannot_be_written_stores_nothing_and_says_so() {
    let device = device();
    let (relay, kv) = relay(64);
    let plans = [new_plan(&device, "a"), new_plan(&device, "b")];
    let st = states(1);
    kv.inner.set_full(true);
    let err = relay.append_sync_batch(&[plans[0].write(&st), plans[1].write(&st)]).unwrap_err();
    assert!(matches!(err, StoreError::Storage(StorageError::Full)), "{err}");
    kv.inner.set_full(false);
    for p in &plans {
        assert!(relay.load_for_sync(&p.doc).unwrap().is_none());
    }
}

#[test]
fn writes_to_one_document_in_a_group_are_stored_in_order() {
    let device = device();
    let (relay, kv) = relay(64);
    let first = new_plan(&device, "v1");
    let second = retitle(&device, first.doc, "v2");
    let third = retitle(&device, first.doc, "v3");
    let feed = relay.subscribe();

    let before = kv.counts();
    let outcomes =
        relay.append_sync_batch(&[first.write(&states(1)), second.write(&states(2)), third.write(&states(3))]).unwrap();
    assert!(outcomes.iter().all(Result::is_ok), "{outcomes:?}");
    assert_eq!(kv.since(before), (1, 1, 0));
    assert_eq!(relay.get::<EngagementPlan>(&first.doc).unwrap().title, "v3");
    assert_eq!(relay.load(&first.doc).unwrap().get_heads(), third.heads);
    assert_eq!(relay.chunk_count(&first.doc).unwrap(), 3, "one chunk per write");
    // The last sync state wins, and the feed tells each step in order.
    assert_eq!(stored_states(&relay, &first.doc)[0].1, vec![3; 4]);
    let heads: Vec<Vec<ChangeHash>> = feed.try_iter().map(|e| e.heads).collect();
    assert_eq!(heads, vec![first.heads, second.heads, third.heads]);
}

#[test]
fn a_write_with_only_sync_states_stores_them_and_tells_no_one() {
    let device = device();
    let (relay, kv) = relay(64);
    let plan = new_plan(&device, "a");
    relay.append_sync_batch(&[plan.write(&states(1))]).unwrap();
    let feed = relay.subscribe();
    let before = kv.counts();
    let st = states(2);
    let outcomes = relay
        .append_sync_batch(&[SyncWrite { base: None, doc: plan.doc, changes: &[], heads: &[], sync_states: &st }])
        .unwrap();
    assert!(outcomes[0].is_ok());
    assert_eq!(kv.since(before), (1, 1, 0));
    assert_eq!(stored_states(&relay, &plan.doc)[0].1, vec![2; 4]);
    assert_eq!(relay.chunk_count(&plan.doc).unwrap(), 1);
    assert!(feed.try_recv().is_err(), "no change, no event");
}

/// Compaction inside a group: the group's own earlier chunks are replaced too, and a document
/// compacted twice in one group keeps every change (the second compaction must start from the
/// first one's result, not from what the disk held before the group).
#[test]
fn compacting_inside_a_group_keeps_every_change() {
    for stored_before in [false, true] {
        let device = device();
        let kv = Arc::new(CountingKv::default());
        let relay = relay_over(kv.clone(), 2);
        let first = new_plan(&device, "v0");
        if stored_before {
            relay.append_sync_batch(&[first.write(&[])]).unwrap();
        }
        let edits: Vec<Received> = (1..=6).map(|n| retitle(&device, first.doc, &format!("v{n}"))).collect();
        let mut writes: Vec<SyncWrite<'_>> = Vec::new();
        if !stored_before {
            writes.push(first.write(&[]));
        }
        writes.extend(edits.iter().map(|e| e.write(&[])));

        let before = kv.counts();
        let outcomes = relay.append_sync_batch(&writes).unwrap();
        assert!(outcomes.iter().all(Result::is_ok), "{outcomes:?}");
        assert_eq!(kv.since(before), (1, 1, 0));
        let last = edits.last().unwrap();
        let case = if stored_before { "stored before the group" } else { "new in the group" };
        assert_eq!(relay.load(&first.doc).unwrap().get_heads(), last.heads, "{case}");
        assert!(relay.chunk_count(&first.doc).unwrap() <= 2, "{case}: compacted");
        // And so it is on disk, for a store opened afresh on it.
        let reopened = relay_over(kv.clone(), 2);
        assert_eq!(reopened.get::<EngagementPlan>(&first.doc).unwrap().title, "v6", "{case}");
        assert_eq!(reopened.list(Kind::EngagementPlan).unwrap(), vec![first.doc], "{case}: still indexed");
    }
}
