//! The per-tenant change feed: every document of a tenant, in the order they were last
//! written, so the relay's catalog (and a device catching up) reads what changed since a
//! sequence number with one range scan instead of every meta.
//!
//! A store-wide sequence number (`!feed`, the last one assigned) is assigned under the cache
//! lock, which serialises writes. Each write of a document whose meta names a tenant moves the
//! document to the end of its tenant's feed in the write's own batch: the old entry (the meta
//! remembers its number) is deleted and `f/TENANTHASH/SEQ/ID` put. Deleting a document leaves
//! an entry marked `erased` for good (offline devices learn of the erasure from it), unless it
//! was only dropped for access ([`DocStore::remove_for_access`]). A failed batch leaves a gap
//! in the sequence, which is harmless; [`DocStore::feed_cursor`] only moves past entries once
//! their batch is applied and flushed, and pages never go past it.

use std::sync::atomic::{AtomicU64, Ordering};

use automerge::ChangeHash;
use minicbor::{Decode, Encode};

use super::cache::Cache;
use super::index::{DocMeta, encode, heads_cbor};
use super::{DocStore, StoreError, keys};
use crate::id::DocumentId;
use crate::model::Kind;
use crate::storage::{Batch, KvStore, WritersLock};

/// One document's entry in its tenant's feed: what it was after its last write here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FeedEntry {
    /// Its place in the feed (store-wide, increasing).
    pub seq: u64,
    /// The document.
    pub doc: DocumentId,
    /// The team that owns it, from its envelope.
    pub team: Option<String>,
    /// Its kind; `None` if it is not a liaison record.
    pub kind: Option<Kind>,
    /// Its heads after that write; empty when erased.
    pub heads: Vec<ChangeHash>,
    /// The document was erased; it will not come back.
    pub erased: bool,
}

/// On-disk form of a feed entry (tenant, sequence number and id are in the key). Field
/// numbers are the format: never reuse one.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
struct FeedValue {
    #[n(0)]
    team: Option<String>,
    #[n(1)]
    kind: Option<String>,
    #[cbor(n(2), with = "heads_cbor", has_nil)]
    heads: Vec<ChangeHash>,
    #[n(3)]
    erased: bool,
}

/// Bytes a page of the scan is asked for per entry wanted: a 42-byte key and a value with a
/// team, a kind and a head or two.
const ENTRY_BYTES: usize = 160;

/// The feed's sequence numbers, in memory. Written only under the cache lock; read without it.
#[derive(Debug, Default)]
pub(super) struct FeedCounter {
    /// The last number assigned by a batch that was (or may have been) applied.
    last: AtomicU64,
    /// The last number of a batch known applied.
    applied: AtomicU64,
    /// Every entry at or below it is applied and flushed.
    committed: AtomicU64,
}

impl FeedCounter {
    /// The counter of a store being opened: what `!feed` says (all of it on disk, so
    /// committed). An unreadable `!feed` is rebuilt from the highest entry.
    pub(super) fn load(kv: &dyn KvStore) -> Result<Self, StoreError> {
        let last = match read_last(kv)? {
            Some(last) => last,
            None => highest_entry(kv)?,
        };
        Ok(Self { last: AtomicU64::new(last), applied: AtomicU64::new(last), committed: AtomicU64::new(last) })
    }

    pub(super) fn applied(&self) -> u64 {
        self.applied.load(Ordering::SeqCst)
    }

    /// Everything applied up to `applied` (read before the flush) is now flushed.
    pub(super) fn flushed_through(&self, applied: u64) {
        self.committed.fetch_max(applied, Ordering::SeqCst);
    }

    /// After a batch that failed (it may or may not have been applied): the numbers continue
    /// from what the store holds, so a batch that left nothing behind leaves no gap. If that
    /// cannot be read, they continue after the failed batch's.
    fn resync(&self, kv: &dyn KvStore, attempted: u64) {
        match read_last(kv) {
            Ok(Some(on_disk)) => {
                let last = on_disk.max(self.committed.load(Ordering::SeqCst));
                self.last.store(last, Ordering::SeqCst);
                self.applied.store(last, Ordering::SeqCst);
            }
            _ => {
                self.last.fetch_max(attempted, Ordering::SeqCst);
            }
        }
    }
}

/// `!feed`: `Some(0)` when absent (nothing assigned yet), `None` when malformed.
fn read_last(kv: &dyn KvStore) -> Result<Option<u64>, StoreError> {
    Ok(parse_last(kv.get(keys::FEED)?.as_deref()))
}

/// `!feed` as read: `Some(0)` when absent, `None` when malformed.
fn parse_last(raw: Option<&[u8]>) -> Option<u64> {
    match raw {
        None => Some(0),
        Some(v) => match <[u8; 8]>::try_from(v) {
            Ok(bytes) => Some(u64::from_be_bytes(bytes)),
            Err(_) => {
                tracing::warn!("the feed's sequence number is unreadable; taking the highest entry's");
                None
            }
        },
    }
}

fn highest_entry(kv: &dyn KvStore) -> Result<u64, StoreError> {
    Ok(kv
        .scan_keys(keys::FEED_PREFIX)?
        .iter()
        .filter_map(|k| keys::feed_entry(k))
        .map(|(seq, _)| seq)
        .max()
        .unwrap_or(0))
}

/// The sequence numbers one batch assigns, from the last one assigned.
#[derive(Debug)]
pub(super) struct FeedSeqs {
    start: u64,
    last: u64,
    /// In a shared store, `!feed` as read when the numbers were taken: a batch that assigns
    /// numbers expects it, so two nodes never hand out one number twice, and numbers commit in
    /// order (a later batch read the earlier one's counter).
    expect: Option<Option<Vec<u8>>>,
    /// In a shared store, the other nodes' writers wait while it is held: taken with the
    /// numbers, released once the batch is written (this is dropped).
    _writers: WritersLock,
}

impl FeedSeqs {
    fn next(&mut self) -> u64 {
        self.last += 1;
        self.last
    }
}

impl DocStore {
    /// Highest sequence number whose entries are all committed (applied and flushed): pages
    /// never go past it, so a reader that remembers it misses nothing written later.
    ///
    /// In a shared store it is the counter other nodes move too, read from the store (numbers
    /// commit in order there, see `FeedSeqs`); if that read fails, this store's own.
    pub fn feed_cursor(&self) -> u64 {
        let own = self.feed.committed.load(Ordering::SeqCst);
        if !self.options.shared {
            return own;
        }
        match read_last(self.kv.as_ref()) {
            Ok(Some(stored)) => stored.max(own),
            _ => own,
        }
    }

    /// Up to `limit` entries of `tenant`'s feed with `after < seq <= feed_cursor()`, in seq
    /// order (a range scan of `f/TENANTHASH/` from `after + 1`). A stored document appears
    /// once, at its last write; an erased one keeps its erased entry (also if the same id is
    /// stored again later, which then has an entry of its own). An unreadable entry is skipped
    /// with a warning.
    pub fn feed_page(&self, tenant: &str, after: u64, limit: usize) -> Result<Vec<FeedEntry>, StoreError> {
        let cursor = self.feed_cursor();
        let mut out = Vec::new();
        if limit == 0 || after >= cursor {
            return Ok(out);
        }
        let prefix = keys::feed_prefix(tenant);
        // Sorts after every key of `after`, before every key of `after + 1`.
        let mut from = [prefix.as_slice(), &after.to_be_bytes(), &[0xff; 17]].concat();
        let page_bytes = limit.saturating_mul(ENTRY_BYTES).min(1 << 20);
        loop {
            let page = self.kv.scan_page(&prefix, Some(&from), page_bytes)?;
            let Some((last_key, _)) = page.last() else {
                return Ok(out);
            };
            from = last_key.clone();
            for (key, value) in page {
                let Some((seq, doc)) = keys::feed_entry(&key) else {
                    tracing::warn!("skipping a malformed feed key");
                    continue;
                };
                if seq > cursor {
                    return Ok(out);
                }
                match minicbor::decode::<FeedValue>(&value) {
                    Ok(v) => out.push(FeedEntry {
                        seq,
                        doc,
                        team: v.team,
                        kind: v.kind.as_deref().and_then(Kind::parse),
                        heads: v.heads,
                        erased: v.erased,
                    }),
                    Err(_) => tracing::warn!(document = %doc, seq, "skipping an unreadable feed entry"),
                }
                if out.len() == limit {
                    return Ok(out);
                }
            }
        }
    }

    /// Sequence numbers for one batch. The cache lock must be held (`_held` is its contents)
    /// until the batch is written with [`DocStore::write_batch`].
    ///
    /// In a shared store the numbers continue from `!feed` as stored now, which the batch then
    /// expects (see `FeedSeqs::expect`).
    pub(super) fn feed_seqs(&self, _held: &Cache) -> Result<FeedSeqs, StoreError> {
        if self.options.shared {
            // Other nodes wait from here until this batch is written (or given up), so what
            // it reads now is still true then: it does not conflict on `!feed` or on a meta
            // another node's batch moved meanwhile.
            let writers = self.kv.lock_writers()?;
            let raw = self.kv.get(keys::FEED)?;
            let last = match parse_last(raw.as_deref()) {
                Some(last) => last,
                None => highest_entry(self.kv.as_ref())?,
            };
            return Ok(FeedSeqs { start: last, last, expect: Some(raw), _writers: writers });
        }
        let last = self.feed.last.load(Ordering::SeqCst);
        Ok(FeedSeqs { start: last, last, expect: None, _writers: WritersLock::none() })
    }

    /// Applies a write's batch, with `!feed` if it assigned numbers, and makes it durable;
    /// keeps the feed's counters right whether it succeeds or not. Under the cache lock.
    pub(super) fn write_batch(&self, mut batch: Batch, seqs: FeedSeqs) -> Result<(), StoreError> {
        let assigned = seqs.last > seqs.start;
        if assigned {
            batch.put(keys::FEED, seqs.last.to_be_bytes());
            if let Some(stored) = seqs.expect {
                batch.expect(keys::FEED, stored);
            }
        }
        let result = self.kv.apply(batch).map_err(StoreError::from).and_then(|()| {
            self.feed.last.fetch_max(seqs.last, Ordering::SeqCst);
            self.feed.applied.fetch_max(seqs.last, Ordering::SeqCst);
            self.durable()
        });
        if result.is_err() && assigned {
            self.feed.resync(self.kv.as_ref(), seqs.last);
        }
        result
    }
}

/// Moves a document to the end of its tenant's feed, in a write's batch, if its meta names a
/// tenant: its old entry goes, a new one holds the meta's team, kind and heads.
pub(super) fn move_to_end(batch: &mut Batch, id: &DocumentId, meta: &mut DocMeta, seqs: &mut FeedSeqs) {
    let Some(tenant) = meta.tenant.as_deref() else { return };
    let value =
        FeedValue { team: meta.team.clone(), kind: meta.kind.clone(), heads: meta.heads.clone(), erased: false };
    meta.feed = Some(put_entry(batch, tenant, id, meta.feed, &value, seqs));
}

/// A deleted document's last entry, marked erased, with its team and kind and no heads.
pub(super) fn erase(batch: &mut Batch, id: &DocumentId, meta: &DocMeta, seqs: &mut FeedSeqs) {
    let Some(tenant) = meta.tenant.as_deref() else { return };
    let value = FeedValue { team: meta.team.clone(), kind: meta.kind.clone(), heads: Vec::new(), erased: true };
    put_entry(batch, tenant, id, meta.feed, &value, seqs);
}

/// A document leaving the feed without a trace (dropped for access, not erased).
pub(super) fn leave(batch: &mut Batch, id: &DocumentId, meta: &DocMeta) {
    if let (Some(tenant), Some(old)) = (meta.tenant.as_deref(), meta.feed) {
        batch.delete(keys::feed(tenant, old, id));
    }
}

fn put_entry(
    batch: &mut Batch,
    tenant: &str,
    id: &DocumentId,
    old: Option<u64>,
    value: &FeedValue,
    seqs: &mut FeedSeqs,
) -> u64 {
    if let Some(old) = old {
        batch.delete(keys::feed(tenant, old, id));
    }
    let seq = seqs.next();
    batch.put(keys::feed(tenant, seq, id), encode(value));
    seq
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::sync::Arc;
    use std::sync::atomic::AtomicBool;

    use super::super::test_stores::{heads, kol, memory_store, plan, retitle, store_over, sync_write};
    use super::super::{Durability, ManualClock, StoreOptions};
    use super::*;
    use crate::storage::{KeyValue, MemoryKv, SledKv, StorageError};

    /// Every entry of a tenant's feed, as (document, seq).
    fn feed(store: &DocStore, tenant: &str) -> Vec<(DocumentId, u64)> {
        store.feed_page(tenant, 0, usize::MAX).unwrap().into_iter().map(|e| (e.doc, e.seq)).collect()
    }

    /// Feed keys on disk, of every tenant.
    fn feed_keys(kv: &dyn KvStore) -> usize {
        kv.scan_keys(keys::FEED_PREFIX).unwrap().len()
    }

    #[test]
    fn a_create_an_update_and_a_sync_write_move_the_document_to_the_end_of_its_tenants_feed() {
        let (device, kv) = memory_store("a");
        let p1 = plan(&device, "east", "p1");
        let p2 = plan(&device, "east", "p2");
        assert_eq!(feed(&device, "a"), [(p1, 1), (p2, 2)]);
        retitle(&device, &p1, "p1 again");
        assert_eq!(feed(&device, "a"), [(p2, 2), (p1, 3)], "an update moves it to the end");
        assert_eq!(feed_keys(kv.as_ref()), 2, "its old entry is gone");
        let entry = device.feed_page("a", 2, 1).unwrap().remove(0);
        assert_eq!(
            entry,
            FeedEntry {
                seq: 3,
                doc: p1,
                team: Some("east".into()),
                kind: Some(Kind::EngagementPlan),
                heads: heads(&device, &p1),
                erased: false,
            }
        );

        // The relay receives both tenants' documents through group commits.
        let (other, _) = memory_store("b");
        let q = kol(&other, "west", "Dr. B");
        let (relay, relay_kv) = memory_store("relay");
        sync_write(&device, &relay, &p1, &[]);
        sync_write(&device, &relay, &p2, &[]);
        sync_write(&other, &relay, &q, &[]);
        assert_eq!(feed(&relay, "a"), [(p1, 1), (p2, 2)]);
        let b_before = relay.feed_page("b", 0, 10).unwrap();
        assert_eq!(b_before.iter().map(|e| (e.doc, e.seq)).collect::<Vec<_>>(), [(q, 3)]);
        let known = heads(&device, &p1);
        retitle(&device, &p1, "p1 third");
        sync_write(&device, &relay, &p1, &known);
        assert_eq!(feed(&relay, "a"), [(p2, 2), (p1, 4)], "a sync write moves it too");
        assert_eq!(relay.feed_page("a", 3, 1).unwrap()[0].heads, heads(&device, &p1), "with the heads it was told");
        assert_eq!(relay.feed_page("b", 0, 10).unwrap(), b_before, "another tenant's feed is untouched");
        assert_eq!(feed_keys(relay_kv.as_ref()), 3);
        assert!(feed(&relay, "relay").is_empty(), "the relay's own tenant has written nothing");

        // Received whole (merge_remote) on a device: also a write.
        device.merge_remote(&q, &other.export(&q).unwrap()).unwrap();
        assert_eq!(feed(&device, "b"), [(q, 5)]);
        assert_eq!(feed(&device, "a"), [(p2, 2), (p1, 4)]);
    }

    #[test]
    fn pages_continue_after_the_last_seq_read() {
        let (store, _) = memory_store("a");
        let ids: Vec<DocumentId> = (0..5).map(|n| plan(&store, "east", &format!("p{n}"))).collect();
        let (mut after, mut read) = (0, Vec::new());
        loop {
            let page = store.feed_page("a", after, 2).unwrap();
            assert!(page.len() <= 2);
            let Some(last) = page.last() else { break };
            after = last.seq;
            read.extend(page.iter().map(|e| e.doc));
        }
        assert_eq!(read, ids);
        assert_eq!(store.feed_page("a", 3, 1).unwrap()[0].seq, 4, "from after + 1");
        assert!(store.feed_page("a", 0, 0).unwrap().is_empty());
        assert!(store.feed_page("a", store.feed_cursor(), 10).unwrap().is_empty());
        assert!(store.feed_page("a", u64::MAX, 10).unwrap().is_empty());
    }

    #[test]
    fn an_erased_document_leaves_an_erased_entry_and_one_dropped_for_access_none() {
        let (store, kv) = memory_store("a");
        let erased = plan(&store, "east", "erased");
        let dropped = plan(&store, "east", "dropped");
        let kept = kol(&store, "west", "Dr. K");
        store.delete_with(&erased, Batch::new()).unwrap();
        assert!(store.remove_for_access(&dropped).unwrap());
        let entries = store.feed_page("a", 0, 10).unwrap();
        assert_eq!(entries.iter().map(|e| (e.doc, e.seq)).collect::<Vec<_>>(), [(kept, 3), (erased, 4)]);
        assert_eq!(
            entries[1],
            FeedEntry {
                seq: 4,
                doc: erased,
                team: Some("east".into()),
                kind: Some(Kind::EngagementPlan),
                heads: vec![],
                erased: true
            }
        );
        assert_eq!(feed_keys(kv.as_ref()), 2, "neither deleted document keeps its earlier entry");
        assert_eq!(store.feed_cursor(), 4, "dropping for access takes no number");
    }

    #[test]
    fn the_cursor_survives_reopening_and_never_goes_backwards() {
        let dir = tempfile::tempdir().unwrap();
        let open = || store_over(Arc::new(SledKv::open(dir.path()).unwrap()), "a");
        let mut cursors = Vec::new();
        let (p, k) = {
            let store = open();
            cursors.push(store.feed_cursor());
            let p = plan(&store, "east", "p");
            cursors.push(store.feed_cursor());
            let k = kol(&store, "east", "Dr. K");
            retitle(&store, &p, "again");
            cursors.push(store.feed_cursor());
            (p, k)
        };
        let store = open();
        cursors.push(store.feed_cursor());
        assert_eq!(feed(&store, "a"), [(k, 2), (p, 3)], "the feed is on disk");
        store.delete(&k).unwrap();
        cursors.push(store.feed_cursor());
        drop(store);
        let store = open();
        cursors.push(store.feed_cursor());
        assert_eq!(cursors, [0, 1, 3, 3, 4, 4]);
        assert_eq!(feed(&store, "a"), [(p, 3), (k, 4)]);
        plan(&store, "east", "after");
        assert_eq!(store.feed_cursor(), 5, "numbers go on from the last one stored");
    }

    /// A memory store whose flushes fail on command (writes still apply, as sled's do).
    #[derive(Debug, Default)]
    struct FlushFails {
        inner: MemoryKv,
        fail: AtomicBool,
    }

    impl KvStore for FlushFails {
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
            self.inner.apply(batch)
        }
        fn flush(&self) -> Result<(), StorageError> {
            if self.fail.load(Ordering::SeqCst) { Err(StorageError::Backend("flush failed".into())) } else { Ok(()) }
        }
    }

    #[test]
    fn a_failed_batch_or_flush_does_not_advance_the_cursor() {
        let kv = Arc::new(FlushFails::default());
        let store = store_over(kv.clone(), "a");
        let p = plan(&store, "east", "p");
        assert_eq!(store.feed_cursor(), 1);

        // A batch refused: nothing applied, no number used.
        kv.inner.set_full(true);
        assert!(store.update(&p, |x: &mut crate::model::EngagementPlan| x.title = "refused".into()).is_err());
        assert!(store.delete(&p).is_err());
        kv.inner.set_full(false);
        assert_eq!(store.feed_cursor(), 1);
        assert_eq!(feed(&store, "a"), [(p, 1)]);
        retitle(&store, &p, "stored");
        assert_eq!((store.feed_cursor(), feed(&store, "a")), (2, vec![(p, 2)]), "no gap left by a refused batch");

        // A batch applied but not flushed: its entry is there, but not past the cursor.
        kv.fail.store(true, Ordering::SeqCst);
        let q = store.create("east", &crate::model::EngagementPlan::new(&p, "q"));
        assert!(q.is_err());
        assert_eq!(store.feed_cursor(), 2);
        assert_eq!(feed(&store, "a"), [(p, 2)], "pages stop at the cursor");
        assert_eq!(feed_keys(kv.as_ref()), 2, "the entry was applied");
        kv.fail.store(false, Ordering::SeqCst);
        retitle(&store, &p, "later");
        assert_eq!(store.feed_cursor(), 4, "the next flush commits both; numbers are not reused");
        let entries = feed(&store, "a");
        assert_eq!(entries.len(), 2);
        assert_eq!(entries[1], (p, 4));
    }

    #[test]
    fn with_deferred_durability_the_cursor_waits_for_the_flush() {
        let clock = Arc::new(ManualClock::new(0));
        let options = StoreOptions { durability: Durability::Deferred, ..StoreOptions::default() };
        let store = DocStore::with_kv(
            Arc::new(MemoryKv::new()),
            super::super::test_stores::identity("a", "sato"),
            clock,
            options,
        )
        .unwrap();
        let p = plan(&store, "east", "p");
        assert_eq!(store.feed_cursor(), 0);
        assert!(feed(&store, "a").is_empty());
        store.flush().unwrap();
        assert_eq!(feed(&store, "a"), [(p, 1)]);
    }

    #[test]
    fn unreadable_entries_and_sequence_are_skipped_or_rebuilt() {
        let (store, kv) = memory_store("a");
        let p = plan(&store, "east", "p");
        let q = plan(&store, "east", "q");
        kv.put(&keys::feed("a", 1, &p), b"\xff not cbor").unwrap();
        kv.put(&[keys::feed_prefix("a").as_slice(), b"short"].concat(), b"").unwrap();
        assert_eq!(feed(&store, "a"), [(q, 2)], "the damaged entry is skipped");
        kv.put(keys::FEED, b"bad").unwrap();
        let reopened = store_over(kv.clone(), "a");
        assert_eq!(reopened.feed_cursor(), 2, "rebuilt from the highest entry");
        retitle(&reopened, &p, "p again");
        assert_eq!(feed(&reopened, "a"), [(q, 2), (p, 3)]);
    }

    #[test]
    fn feed_value_format_is_stable() {
        let v = FeedValue {
            team: Some("e".into()),
            kind: Some("kol_profile".into()),
            heads: vec![ChangeHash([1; 32])],
            erased: false,
        };
        let mut expected = vec![0x84, 0x61, b'e', 0x6b];
        expected.extend_from_slice(b"kol_profile");
        expected.extend_from_slice(&[0x58, 32]);
        expected.extend_from_slice(&[1; 32]);
        expected.push(0xf4);
        assert_eq!(encode(&v), expected);
        assert_eq!(minicbor::decode::<FeedValue>(&expected).ok(), Some(v));
        let erased = FeedValue { team: None, kind: None, heads: vec![], erased: true };
        assert_eq!(encode(&erased), [0x84, 0xf6, 0xf6, 0xf6, 0xf5]);
        assert_eq!(minicbor::decode::<FeedValue>(&[0x84, 0xf6, 0xf6, 0xf6, 0xf5]).ok(), Some(erased));
    }
}
