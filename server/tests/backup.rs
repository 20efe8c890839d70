//! Backups while serving, and the erasure and purge a restore must not undo.
//!
//! A live backup copies the database page by page while writes go on; the writes made meanwhile
//! are journaled and replayed, so the copy is the database at one instant. Here writes are made
//! between pages, from another thread, and must complete while the copy is paused mid-way (no
//! lock is held over the copy, so no acknowledgement waits for it).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use liaison_core::storage::{Batch, KvStore, MemoryKv, SledKv, StorageError};
use liaison_core::{DocStore, DocumentId, Identity, Role, store::StoreOptions, store::SystemClock};
use liaison_server::backup::{self, tap::TappedKv};
use liaison_server::config::Config;
use liaison_server::ledger::{Ledger, LedgerEvent};
use liaison_server::{erasure, open_data};

fn everything(kv: &dyn KvStore) -> Vec<(Vec<u8>, Vec<u8>)> {
    kv.scan_prefix(b"").unwrap()
}

#[test]
fn writes_go_on_during_a_live_backup_and_the_copy_is_the_database_at_one_instant() {
    let dir = tempfile::tempdir().unwrap();
    let config = Config { data_dir: dir.path().join("data"), ..Config::default() };
    let data = open_data(&config).unwrap();
    // ~12 MB: several pages of 4 MiB.
    let mut batch = Batch::new();
    for i in 0u32..3_000 {
        batch.put(format!("k/{i:05}").into_bytes(), vec![(i % 251) as u8; 4_000]);
    }
    data.kv.apply(batch).unwrap();

    let kv = data.kv.clone();
    let mut page = 0;
    let mut between_pages = || {
        page += 1;
        let kv = kv.clone();
        let round = page;
        // A writer on another thread: it must finish while the copy waits here.
        let (done_tx, done_rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut b = Batch::new();
            // Overwrite keys already copied and keys still to come, delete some, add new ones.
            b.put(format!("k/{:05}", round * 10).into_bytes(), b"changed".to_vec());
            b.put(format!("k/{:05}", 2_999 - round).into_bytes(), b"changed ahead".to_vec());
            b.delete(format!("k/{:05}", round * 10 + 1).into_bytes());
            b.put(format!("new/{round}").into_bytes(), vec![round as u8; 10]);
            kv.apply(b).unwrap();
            kv.put(format!("a/{round}").as_bytes(), b"single put").unwrap();
            done_tx.send(()).unwrap();
        });
        done_rx.recv_timeout(Duration::from_secs(10)).expect("a write completed while the backup was copying");
    };
    let dest = dir.path().join("backup");
    std::fs::create_dir(&dest).unwrap();
    let manifest = backup::backup_live(&data.kv, &data.ledger, &dest, 0, &mut between_pages).unwrap();
    assert!(page >= 3, "the copy went page by page ({page})");

    let copy = SledKv::open(&dest.join("db")).unwrap();
    let source = everything(data.kv.as_ref());
    assert_eq!(everything(&copy), source, "the copy is the database as it was when the copy ended");
    assert_eq!(manifest.entries, source.len() as u64);
    assert!(!dest.join("journal").exists(), "the journal is replayed and removed");
    // Writes after the backup are not journaled anywhere (the tap is off).
    data.kv.put(b"after", b"x").unwrap();
    assert!(copy.get(b"after").unwrap().is_none());
}

#[test]
fn a_second_backup_at_once_is_refused_and_the_first_is_unharmed() {
    let dir = tempfile::tempdir().unwrap();
    let kv = TappedKv::new(Arc::new(MemoryKv::new()));
    kv.put(b"k", b"v").unwrap();
    let ledger = Ledger::open(&dir.path().join("ledger")).unwrap();
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    std::fs::create_dir(&a).unwrap();
    std::fs::create_dir(&b).unwrap();
    let mut second = None;
    backup::backup_live(&kv, &ledger, &a, 0, &mut || {
        second = Some(backup::backup_live(&kv, &ledger, &b, 0, &mut || {}).map(|_| ()));
    })
    .unwrap();
    assert!(matches!(second, Some(Err(_))), "{second:?}");
    assert_eq!(SledKv::open(&a.join("db")).unwrap().get(b"k").unwrap(), Some(b"v".to_vec()));
}

/// Counts the writes made through it.
#[derive(Debug)]
struct Counting(MemoryKv, std::sync::atomic::AtomicUsize);

impl KvStore for Counting {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StorageError> {
        self.0.get(key)
    }
    fn put(&self, key: &[u8], value: &[u8]) -> Result<(), StorageError> {
        self.1.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        self.0.put(key, value)
    }
    fn delete(&self, key: &[u8]) -> Result<(), StorageError> {
        self.1.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        self.0.delete(key)
    }
    fn scan_prefix(&self, prefix: &[u8]) -> Result<Vec<(Vec<u8>, Vec<u8>)>, StorageError> {
        self.0.scan_prefix(prefix)
    }
    fn apply(&self, batch: Batch) -> Result<(), StorageError> {
        self.1.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        self.0.apply(batch)
    }
    fn flush(&self) -> Result<(), StorageError> {
        self.0.flush()
    }
}

fn relay_store(kv: Arc<dyn KvStore>) -> DocStore {
    let relay = Identity {
        tenant: "system".into(),
        user: "relay".into(),
        device: "r".into(),
        role: Role::Admin,
        install: [7; 8],
    };
    DocStore::with_kv(kv, relay, Arc::new(SystemClock), StoreOptions::default()).unwrap()
}

fn plan_of(store: &DocStore, tenant: &str, team: &str) -> DocumentId {
    let device = DocStore::with_kv(
        Arc::new(MemoryKv::new()),
        Identity { tenant: tenant.into(), user: "u".into(), device: "d".into(), role: Role::Msl, install: [1; 8] },
        Arc::new(SystemClock),
        StoreOptions::default(),
    )
    .unwrap();
    let kol = DocumentId::from_bytes([9; 16]);
    let doc = device.create(team, &liaison_core::model::EngagementPlan::new(&kol, "plan")).unwrap();
    store.merge_remote(&doc, &device.export(&doc).unwrap()).unwrap();
    doc
}

#[test]
fn an_erasure_is_one_atomic_write_tombstone_document_and_quarantine_together() {
    let counting = Arc::new(Counting(MemoryKv::new(), Default::default()));
    let store = relay_store(counting.clone());
    let store_own: Vec<_> = counting.scan_prefix(b"").unwrap().into_iter().map(|(k, _)| k).collect();
    let doc = plan_of(&store, "pharma-a", "east");
    let mut q = Batch::new();
    erasure::quarantine(&mut q, "pharma-a", &doc, &[1; 32], b"refused".to_vec());
    counting.apply(q).unwrap();
    let before = counting.1.load(std::sync::atomic::Ordering::SeqCst);
    erasure::erase_stored(&store, &doc, 5).unwrap();
    assert_eq!(counting.1.load(std::sync::atomic::Ordering::SeqCst) - before, 1, "one batch, so never half erased");
    // The store-wide feed counter moves, and the erased document's feed entry stays (devices
    // offline now learn of the erasure from it): nothing else.
    let left: Vec<_> = counting
        .scan_prefix(b"")
        .unwrap()
        .into_iter()
        .map(|(k, _)| k)
        .filter(|k| !store_own.contains(k) && !k.starts_with(b"!") && !k.starts_with(b"f/"))
        .collect();
    assert_eq!(left, vec![liaison_server::policy::tombstone_key(&doc)], "only the tombstone stays");
    let feed = store.feed_page("pharma-a", 0, 10).unwrap();
    assert!(feed.len() == 1 && feed[0].doc == doc && feed[0].erased && feed[0].heads.is_empty(), "{feed:?}");
}

#[test]
fn a_purge_erases_what_the_tenant_owned_and_its_quarantine_and_nothing_of_another_tenant() {
    let dir = tempfile::tempdir().unwrap();
    let config = Config { data_dir: dir.path().join("data"), ..Config::default() };
    let data = open_data(&config).unwrap();
    for t in ["pharma-a", "pharma-b"] {
        data.auth.add_tenant(t, 0).unwrap();
    }
    let (a, b) = (plan_of(&data.store, "pharma-a", "east"), plan_of(&data.store, "pharma-b", "west"));
    // pharma-b's devices left refused changes on its own plan and on a record never stored.
    let never_stored = DocumentId::from_bytes([3; 16]);
    let mut q = Batch::new();
    erasure::quarantine(&mut q, "pharma-b", &b, &[1; 32], b"x".to_vec());
    erasure::quarantine(&mut q, "pharma-b", &never_stored, &[2; 32], b"y".to_vec());
    erasure::quarantine(&mut q, "pharma-a", &a, &[3; 32], b"z".to_vec());
    data.kv.apply(q).unwrap();

    let erased = erasure::purge_stored(&data.store, &data.auth, "pharma-b", 9).unwrap();
    assert_eq!(erased, vec![b]);
    assert!(data.store.load(&b).is_err());
    assert!(data.auth.tenant("pharma-b").unwrap().unwrap().purged_at.is_some(), "credentials revoked");
    for prefix in [b"qt/pharma-b/".as_slice(), &erasure::quarantine_key(&never_stored, b"")] {
        assert!(data.kv.scan_keys(prefix).unwrap().is_empty(), "{}", String::from_utf8_lossy(prefix));
    }
    assert!(data.store.feed_page("pharma-b", 0, 100).unwrap().is_empty(), "not even an erased feed entry stays");
    assert!(data.store.load(&a).is_ok(), "the other tenant's record stays");
    assert_eq!(data.kv.scan_keys(b"qt/pharma-a/").unwrap().len(), 1, "and its quarantine");
    assert_eq!(data.store.feed_page("pharma-a", 0, 100).unwrap().len(), 1, "and its feed");
    // Idempotent: a restore carries it out again.
    assert!(erasure::purge_stored(&data.store, &data.auth, "pharma-b", 10).unwrap().is_empty());
}

#[test]
fn a_restore_carries_the_ledger_out_again_on_the_restored_data() {
    let dir = tempfile::tempdir().unwrap();
    let config = Config { data_dir: dir.path().join("data"), ..Config::default() };
    let data = open_data(&config).unwrap();
    data.auth.add_tenant("pharma-a", 0).unwrap();
    data.auth.put_user("pharma-a", "sato", liaison_server::auth::RoleName::Msl, &[]).unwrap();
    let (tok, secret) = data.auth.issue_token("pharma-a", "sato", "phone", None, 0).unwrap();
    data.auth.put_user("pharma-a", "admin-a", liaison_server::auth::RoleName::Admin, &[]).unwrap();
    let (_, admin_secret) = data.auth.issue_token("pharma-a", "admin-a", "laptop", None, 0).unwrap();
    let admin = data.auth.authenticate(&admin_secret, 0).unwrap();
    data.auth.bootstrap_admin("console", 0).unwrap(); // the system tenant and its admin
    let grant = data.auth.add_support_grant(&admin, "pharma-a", "admin", 3_600, "ticket 42", 0).unwrap();
    let doc = plan_of(&data.store, "pharma-a", "east");
    let dest = dir.path().join("backup");
    std::fs::create_dir(&dest).unwrap();
    backup::backup_live(&data.kv, &data.ledger, &dest, 0, &mut || {}).unwrap();
    // After the backup: all go through the ledger first.
    data.auth.revoke_support_grant(&admin, "pharma-a", &grant.id, 1).unwrap();
    data.auth.revoke_token(&tok.id, 1).unwrap();
    data.ledger.append(2, LedgerEvent::DocumentErased { document: doc.to_string() }).unwrap();
    erasure::erase_stored(&data.store, &doc, 2).unwrap();

    let target = dir.path().join("restored");
    let entries = backup::restore_database(&dest, &target, &config.ledger_path()).unwrap();
    assert_eq!(entries.len(), 3);
    let restored = open_data(&Config { data_dir: target.clone(), ..Config::default() }).unwrap();
    assert!(restored.auth.authenticate(&secret, 3).is_ok(), "the backup alone would bring the token back");
    assert!(restored.store.load(&doc).is_ok(), "and the erased record");
    let active = |a: &liaison_server::auth::AuthStore| a.support_grants("pharma-a").unwrap()[0].revoked_at.is_none();
    assert!(active(&restored.auth), "and the revoked support grant");
    let plain = liaison_server::auth::AuthStore::new(restored.kv.clone());
    backup::reapply(&restored.store, &plain, &entries).unwrap();
    assert!(restored.auth.authenticate(&secret, 3).is_err(), "revoked again");
    assert!(restored.store.load(&doc).is_err(), "erased again");
    assert!(!active(&restored.auth), "the grant revoked again");
    assert!(restored.kv.get(&liaison_server::policy::tombstone_key(&doc)).unwrap().is_some());
}
