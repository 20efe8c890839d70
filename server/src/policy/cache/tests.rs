//! The cache's rules alone (answers counted by the `read` closures), then the relay's policy over
//! a store that counts its reads and can fail.
#![allow(clippy::unwrap_used)]

use std::cell::Cell;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use liaison_core::model::{Kind, KolProfile};
use liaison_core::storage::{Batch, KeyValue, KvStore, MemoryKv, StorageError};
use liaison_core::sync::wire::{PeerId, PeerMetadata};
use liaison_core::sync::{Access, ConnId, PeerInfo, Policy};
use liaison_core::{DocStore, DocumentId, Identity, Role};

use super::*;
use crate::auth::{Principal, RoleName};
use crate::policy::{PendingOwners, Principals, RelayPolicy, encode_tombstone, tombstone_key};

fn doc(n: u8) -> DocumentId {
    DocumentId::from_bytes([n; 16])
}

fn owner() -> Owner {
    Owner { tenant: "pharma-a".into(), team: "tokyo".into(), kind: Some(Kind::KolProfile) }
}

/// A `read` that counts its calls and answers `answer`.
fn counted<'a, T: 'a>(calls: &'a Cell<u32>, answer: T) -> impl FnOnce() -> T + 'a {
    move || {
        calls.set(calls.get() + 1);
        answer
    }
}

#[test]
fn a_stored_owner_is_read_once_and_not_stored_or_an_error_every_time() {
    let cache = PolicyCache::new(16);
    let reads = Cell::new(0);
    for _ in 0..3 {
        assert_eq!(cache.owner(&doc(1), counted(&reads, Ok::<_, ()>(Some(owner())))), Ok(Some(owner())));
    }
    assert_eq!(reads.get(), 1, "read once, then remembered");

    reads.set(0);
    for _ in 0..3 {
        assert_eq!(cache.owner(&doc(2), counted(&reads, Ok::<_, ()>(None))), Ok(None));
        assert_eq!(cache.owner(&doc(3), counted(&reads, Err::<Option<Owner>, _>(()))), Err(()));
    }
    assert_eq!(reads.get(), 6, "not stored (it may be created any moment) and errors are read again");

    // An owner without a kind is not a record's: not kept.
    reads.set(0);
    let kindless = Owner { kind: None, ..owner() };
    for _ in 0..2 {
        cache.owner(&doc(4), counted(&reads, Ok::<_, ()>(Some(kindless.clone())))).unwrap();
    }
    assert_eq!(reads.get(), 2);
}

#[test]
fn erased_is_kept_and_not_erased_only_for_a_stored_document_until_forgotten() {
    let cache = PolicyCache::new(16);
    let reads = Cell::new(0);
    let erased = Some(("pharma-a".to_owned(), "tokyo".to_owned()));
    for _ in 0..3 {
        let t = cache.tombstone(&doc(1), counted(&reads, Ok::<_, ()>(Some(erased.clone())))).unwrap();
        assert_eq!(t, Tombstone::Erased(erased.clone()));
    }
    assert_eq!(reads.get(), 1, "a tombstone stays");
    cache.forget_all_not_erased();
    cache.tombstone(&doc(1), counted(&reads, Ok::<_, ()>(None))).unwrap();
    assert_eq!(reads.get(), 1, "and is not forgotten with the \"not erased\" answers");

    // Not stored (no owner known): asked every time.
    reads.set(0);
    for _ in 0..2 {
        assert_eq!(cache.tombstone(&doc(2), counted(&reads, Ok::<_, ()>(None))).unwrap(), Tombstone::NotErased);
    }
    assert_eq!(reads.get(), 2);

    // Stored: kept, until forgotten for this document, for all, or erased.
    let forgets: [&dyn Fn(&PolicyCache); 3] =
        [&|c| c.forget_not_erased(&doc(2)), &|c| c.forget_all_not_erased(), &|c| c.erased(&doc(2))];
    for forget in forgets {
        let cache = PolicyCache::new(16);
        cache.owner(&doc(2), || Ok::<_, ()>(Some(owner()))).unwrap();
        reads.set(0);
        for _ in 0..3 {
            cache.tombstone(&doc(2), counted(&reads, Ok::<_, ()>(None))).unwrap();
        }
        assert_eq!(reads.get(), 1, "read once, then remembered");
        forget(&cache);
        let t = cache.tombstone(&doc(2), counted(&reads, Ok::<_, ()>(Some(None)))).unwrap();
        assert_eq!(t, Tombstone::Erased(None), "asked again once forgotten");
        assert_eq!(reads.get(), 2);
    }
}

#[test]
fn a_tombstone_read_error_is_not_kept() {
    let cache = PolicyCache::new(16);
    cache.owner(&doc(1), || Ok::<_, ()>(Some(owner()))).unwrap();
    assert_eq!(cache.tombstone(&doc(1), || Err::<Option<TombstoneOwner>, _>("down")), Err("down"));
    let reads = Cell::new(0);
    assert_eq!(cache.tombstone(&doc(1), counted(&reads, Ok::<_, ()>(None))).unwrap(), Tombstone::NotErased);
    assert_eq!(reads.get(), 1, "asked again after the error");
}

#[test]
fn each_answer_is_kept_for_at_most_twice_half_documents_the_recent_ones() {
    let mut g = Generations::new(4);
    for n in 0..40u8 {
        g.insert(doc(n), n);
        // doc(0) is used all along: it stays.
        assert_eq!(g.get(&doc(0)), Some(&0));
        assert!(g.len() <= 8, "{} entries", g.len());
    }
    assert_eq!(g.get(&doc(39)), Some(&39));
    assert_eq!(g.get(&doc(1)), None, "an answer not used for two generations goes");
    let mut none = Generations::new(0);
    none.insert(doc(1), 1);
    assert_eq!(none.get(&doc(1)), None, "half 0 keeps nothing");
}

/// A store that counts its reads and fails them while `failing` is on.
#[derive(Debug, Default)]
struct Flaky {
    inner: MemoryKv,
    reads: AtomicU64,
    failing: AtomicBool,
}

impl Flaky {
    fn read(&self) -> Result<(), StorageError> {
        self.reads.fetch_add(1, Ordering::Relaxed);
        if self.failing.load(Ordering::Relaxed) { Err(StorageError::Corrupt) } else { Ok(()) }
    }
}

impl KvStore for Flaky {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StorageError> {
        self.read()?;
        self.inner.get(key)
    }
    fn put(&self, key: &[u8], value: &[u8]) -> Result<(), StorageError> {
        self.inner.put(key, value)
    }
    fn delete(&self, key: &[u8]) -> Result<(), StorageError> {
        self.inner.delete(key)
    }
    fn scan_prefix(&self, prefix: &[u8]) -> Result<Vec<KeyValue>, StorageError> {
        self.read()?;
        self.inner.scan_prefix(prefix)
    }
    fn apply(&self, batch: Batch) -> Result<(), StorageError> {
        self.inner.apply(batch)
    }
    fn flush(&self) -> Result<(), StorageError> {
        self.inner.flush()
    }
}

/// The relay's policy (remembering, as the actor's does) over a store holding one profile of
/// pharma-a/tokyo, and a connected MSL of that team.
fn policy_over_flaky() -> (RelayPolicy, Arc<Flaky>, PolicyCache, PeerInfo, DocumentId) {
    let kv = Arc::new(Flaky::default());
    let identity = Identity {
        tenant: "pharma-a".into(),
        user: "sato".into(),
        device: "sato-phone".into(),
        role: Role::Msl,
        install: [1; 8],
    };
    let clock = Arc::new(liaison_core::store::ManualClock::new(1_700_000_000_000));
    let store = DocStore::with_kv(kv.clone(), identity, clock, Default::default()).unwrap();
    let profile = store.create("tokyo", &KolProfile::new("山田 太郎", "東京大学病院")).unwrap();
    let principals = Principals::default();
    let conn = ConnId(1);
    principals.set(
        conn,
        Principal {
            tenant: "pharma-a".into(),
            user: "sato".into(),
            device: "sato-phone".into(),
            role: RoleName::Msl,
            teams: vec!["tokyo".into()],
            token_id: "tok".into(),
            token_hash: "h".into(),
            support: Vec::new(),
        },
    );
    let cache = PolicyCache::new(16);
    let policy = RelayPolicy::with_cache(Arc::new(store), principals, PendingOwners::default(), cache.clone());
    let peer = PeerInfo { conn, peer_id: PeerId("sato-phone".into()), metadata: PeerMetadata::default() };
    (policy, kv, cache, peer, profile)
}

/// What the engine asks for each sync message of a document: erased, then access.
fn message(policy: &mut RelayPolicy, peer: &PeerInfo, doc: &DocumentId) -> (bool, Access) {
    (policy.erased(doc), policy.access(peer, doc))
}

#[test]
fn repeated_messages_for_a_stored_document_do_not_read_the_store() {
    let (mut policy, kv, _, peer, profile) = policy_over_flaky();
    kv.reads.store(0, Ordering::Relaxed);
    assert_eq!(message(&mut policy, &peer, &profile), (false, Access::ReadWrite));
    assert_eq!(message(&mut policy, &peer, &profile), (false, Access::ReadWrite));
    let warm = kv.reads.load(Ordering::Relaxed);
    assert!(warm <= 3, "warming up: {warm} reads");
    for _ in 0..100 {
        assert_eq!(message(&mut policy, &peer, &profile), (false, Access::ReadWrite));
    }
    assert_eq!(kv.reads.load(Ordering::Relaxed), warm, "no read once warm");

    // The uncached policy reads for every message (what the cache saves).
    let (store, principals) = (policy.store.clone(), policy.principals.clone());
    let mut uncached = RelayPolicy::new(store, principals, PendingOwners::default());
    for _ in 0..10 {
        message(&mut uncached, &peer, &profile);
    }
    assert!(kv.reads.load(Ordering::Relaxed) >= warm + 20);
}

#[test]
fn a_store_error_fails_closed_and_is_not_remembered() {
    let (mut policy, kv, _, peer, profile) = policy_over_flaky();
    kv.failing.store(true, Ordering::Relaxed);
    for _ in 0..2 {
        assert_eq!(message(&mut policy, &peer, &profile), (true, Access::None), "fails closed");
        assert!(policy.cannot_tell(&profile), "a no because the store could not be read: held for later");
        assert!(!policy.cannot_tell(&profile), "asked once per answer");
    }
    kv.failing.store(false, Ordering::Relaxed);
    assert_eq!(message(&mut policy, &peer, &profile), (false, Access::ReadWrite), "the store answers again");
    assert!(!policy.cannot_tell(&profile));
}

#[test]
fn an_erasure_the_cache_is_told_of_is_seen_at_once() {
    let (mut policy, kv, cache, peer, profile) = policy_over_flaky();
    for _ in 0..3 {
        message(&mut policy, &peer, &profile);
    }
    kv.inner.put(&tombstone_key(&profile), &encode_tombstone(0, Some(&owner()))).unwrap();
    assert!(!policy.erased(&profile), "remembered as not erased: the cache must be told");
    cache.forget_not_erased(&profile);
    assert!(policy.erased(&profile));
    assert!(policy.may_know_erased(&peer, &profile), "sato could read it");
}
