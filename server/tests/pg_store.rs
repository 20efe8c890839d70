//! The PostgreSQL store: core's conformance suite, then what only a database server can do
//! wrong (a batch failing midway, a full disk, a restart, two relays writing the same keys),
//! the schema's migrations and the checks `serve` makes. Each test has a database of its own on
//! the private PostgreSQL (`storage::testing`).
#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use liaison_core::model::{EngagementPlan, KolProfile};
use liaison_core::storage::{Batch, KvStore as _, MemoryKv, StorageError, WritersLock};
use liaison_core::store::{StoreOptions, SystemClock};
use liaison_core::{DocStore, DocumentId, Identity, Role, SyncWrite};
use liaison_server::config::{Backend, DbTls, Secret, StorageConfig};
use liaison_server::storage::{self, DbError, PgKv, testing};

fn storage_at(url: String) -> StorageConfig {
    StorageConfig {
        backend: Backend::Postgres,
        url: Some(Secret::new(url)),
        pool_size: 4,
        tls: DbTls::Disable,
        ..StorageConfig::default()
    }
}

/// An empty, migrated database of its own.
fn pg_store() -> PgKv {
    let storage = storage_at(testing::fresh_database().unwrap());
    storage::migrate(&storage).unwrap();
    storage::open_postgres(&storage).unwrap()
}

liaison_core::kv_conformance!(pg_store());

#[test]
fn a_batch_that_fails_midway_leaves_nothing_and_a_full_disk_is_full() {
    let url = testing::fresh_database().unwrap();
    let storage = storage_at(url.clone());
    storage::migrate(&storage).unwrap();
    let kv = storage::open_postgres(&storage).unwrap();
    kv.put(b"keep", b"1").unwrap();
    // Fails on the key `boom` (hex 626f6f6d), after the batch's delete ran; disk full on `full`.
    testing::psql(
        &url,
        r"CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS $$
          BEGIN
            IF NEW.key = '\x626f6f6d'::bytea THEN RAISE EXCEPTION 'refused by the test'; END IF;
            IF NEW.key = '\x66756c6c'::bytea THEN RAISE EXCEPTION 'no space' USING ERRCODE = 'disk_full'; END IF;
            RETURN NEW;
          END $$;
          CREATE TRIGGER refuse BEFORE INSERT OR UPDATE ON kv FOR EACH ROW EXECUTE FUNCTION refuse();",
    )
    .unwrap();
    let mut b = Batch::new();
    b.delete(b"keep".to_vec()).put(b"a".to_vec(), b"secret-value".to_vec()).put(b"boom".to_vec(), b"x".to_vec());
    let e = kv.apply(b).unwrap_err();
    assert!(matches!(&e, StorageError::Backend(m) if m.contains("refused by the test") && m.contains("P0001")), "{e}");
    assert!(!e.to_string().contains("secret-value"));
    assert_eq!(kv.get(b"keep").unwrap(), Some(b"1".to_vec()), "the delete before the failure was rolled back");
    assert_eq!(kv.get(b"a").unwrap(), None);

    assert!(matches!(kv.put(b"full", b"x"), Err(StorageError::Full)));
    let mut b = Batch::new();
    b.put(b"a".to_vec(), b"1".to_vec()).put(b"full".to_vec(), b"x".to_vec());
    assert!(matches!(kv.apply(b), Err(StorageError::Full)));
    assert_eq!(kv.get(b"a").unwrap(), None);
}

#[test]
fn a_stopped_database_is_a_clear_error_and_work_goes_on_after_a_restart() {
    // Its own instance: stopping the shared one would fail every other test.
    let pg = testing::PrivatePostgres::start().unwrap();
    let storage = storage_at(pg.fresh_database().unwrap());
    storage::migrate(&storage).unwrap();
    let kv = storage::open_postgres(&storage).unwrap();
    kv.put(b"before", b"1").unwrap();

    pg.stop_fast().unwrap();
    let e = kv.put(b"during", b"secret-value").unwrap_err();
    let shown = e.to_string();
    assert!(matches!(e, StorageError::Backend(_)) && shown.contains("PostgreSQL"), "{shown}");
    assert!(!shown.contains("secret-value"), "{shown}");
    pg.start_again().unwrap();
    kv.put(b"after", b"1").unwrap();

    // A restart under a stream of writes: each write either failed with a clear error or is
    // there afterwards; writes go on once the server is back.
    let acknowledged = std::thread::scope(|scope| {
        let writer = scope.spawn(|| {
            let mut acknowledged = Vec::new();
            for i in 0u32..400 {
                let mut b = Batch::new();
                b.put([b"w/".as_slice(), &i.to_be_bytes()].concat(), i.to_be_bytes().to_vec());
                match kv.apply(b) {
                    Ok(()) => acknowledged.push(i),
                    Err(StorageError::Backend(m)) => assert!(m.contains("PostgreSQL"), "{m}"),
                    Err(e) => panic!("{e}"),
                }
            }
            acknowledged
        });
        pg.restart_fast().unwrap();
        writer.join().unwrap()
    });
    kv.put(b"after-restart", b"1").unwrap();
    let stored = kv.scan_keys(b"w/").unwrap();
    for i in &acknowledged {
        assert!(stored.contains(&[b"w/".as_slice(), &i.to_be_bytes()].concat()), "acknowledged write {i} lost");
    }
    assert_eq!(kv.get(b"before").unwrap(), Some(b"1".to_vec()));
}

#[test]
fn two_stores_writing_the_same_keys_never_tear_a_batch() {
    let storage = storage_at(testing::fresh_database().unwrap());
    storage::migrate(&storage).unwrap();
    let (one, two) =
        (storage::open_postgres_shared(&storage).unwrap(), storage::open_postgres_shared(&storage).unwrap());
    let keys: Vec<Vec<u8>> = (0u8..16).map(|i| vec![b'k', i]).collect();
    std::thread::scope(|scope| {
        for (kv, name, reversed) in [(&one, b'A', false), (&two, b'B', true)] {
            let keys = &keys;
            scope.spawn(move || {
                for round in 0u32..60 {
                    let value = [&[name], round.to_be_bytes().as_slice()].concat();
                    let mut b = Batch::new();
                    let order: Vec<_> = if reversed { keys.iter().rev().collect() } else { keys.iter().collect() };
                    for key in order {
                        b.put(key.clone(), value.clone());
                    }
                    kv.apply(b).unwrap();
                }
            });
        }
        scope.spawn(|| {
            for _ in 0..200 {
                let seen = one.scan_prefix(b"k").unwrap();
                if let Some((_, first)) = seen.first() {
                    assert_eq!(seen.len(), keys.len());
                    assert!(seen.iter().all(|(_, v)| v == first), "a torn batch: {seen:?}");
                }
            }
        });
    });
    let end = two.scan_prefix(b"k").unwrap();
    assert!(end.iter().all(|(_, v)| *v == end[0].1));
}

#[test]
fn migrate_makes_the_schema_once_and_serve_refuses_what_it_cannot_use() {
    let url = testing::fresh_database().unwrap();
    let storage = storage_at(url.clone());
    let e = storage::open_postgres(&storage).unwrap_err();
    assert!(matches!(e, DbError::SchemaTooOld { have: 0, .. }), "{e}");
    assert!(e.to_string().contains("run `liaison-relay migrate`"), "{e}");

    let first = storage::migrate(&storage).unwrap();
    assert_eq!((first.from, first.to), (0, storage::migrate::latest()));
    let again = storage::migrate(&storage).unwrap();
    assert_eq!((again.from, again.to), (first.to, first.to), "idempotent");
    storage::open_postgres(&storage).unwrap();

    let database = url.rsplit_once('/').unwrap().1;
    testing::psql(&url, &format!("ALTER DATABASE {database} SET synchronous_commit = off")).unwrap();
    let e = storage::open_postgres(&storage).unwrap_err();
    assert!(matches!(e, DbError::NotDurable), "{e}");
    testing::psql(&url, &format!("ALTER DATABASE {database} RESET synchronous_commit")).unwrap();

    testing::psql(&url, "INSERT INTO schema_migrations (version, name, checksum) VALUES (999, 'future', '\\x00')")
        .unwrap();
    assert!(matches!(storage::migrate(&storage), Err(DbError::SchemaTooNew { have: 999, .. })));
    assert!(matches!(storage::open_postgres(&storage), Err(DbError::SchemaTooNew { have: 999, .. })));
}

#[test]
fn a_second_relay_on_one_database_is_refused_until_the_first_closes() {
    let storage = storage_at(testing::fresh_database().unwrap());
    storage::migrate(&storage).unwrap();
    let first = storage::open_postgres(&storage).unwrap();
    first.put(b"k", b"1").unwrap();
    let e = storage::open_postgres(&storage).unwrap_err();
    assert!(matches!(e, DbError::InUse), "{e}");
    assert!(e.to_string().contains("one relay per database"), "{e}");
    // The first relay goes (as a killed one's session ends): the database is free again, and
    // an open right after waits the moment PostgreSQL takes to end that session (back-to-back
    // `liaison-relay admin` commands failed "in use" once in a while without that wait).
    drop(first);
    let second = storage::open_postgres(&storage).expect("free once the first relay's session ended");
    assert_eq!(second.get(b"k").unwrap(), Some(b"1".to_vec()));
}

#[test]
fn cluster_nodes_share_a_database_and_exclude_a_relay_that_is_not_one() {
    let storage = storage_at(testing::fresh_database().unwrap());
    storage::migrate(&storage).unwrap();
    let a = storage::open_postgres_cluster(&storage).unwrap();
    let b = storage::open_postgres_cluster(&storage).unwrap();
    a.put(b"k", b"1").unwrap();
    assert_eq!(b.get(b"k").unwrap(), Some(b"1".to_vec()));
    let alone = storage::open_postgres(&storage).unwrap_err();
    assert!(matches!(alone, DbError::InUse), "a relay not in cluster mode is refused while nodes run: {alone}");
    drop((a, b));
    let single = wait_free(|| storage::open_postgres(&storage));
    let node = storage::open_postgres_cluster(&storage).unwrap_err();
    assert!(matches!(node, DbError::InUse), "and a node while a relay has the database alone: {node}");
    drop(single);
    let _node = wait_free(|| storage::open_postgres_cluster(&storage));
}

/// Opens again until the advisory lock of a store just dropped is released (its session ends
/// a moment after the drop).
fn wait_free(open: impl Fn() -> Result<PgKv, DbError>) -> PgKv {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        match open() {
            Ok(kv) => return kv,
            Err(DbError::InUse) if std::time::Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(50));
            }
            Err(e) => panic!("the lock outlived its holder: {e}"),
        }
    }
}

#[test]
fn migrations_run_at_once_by_several_relays_apply_once() {
    let storage = storage_at(testing::fresh_database().unwrap());
    let results: Vec<_> = std::thread::scope(|scope| {
        let runs: Vec<_> = (0..3).map(|_| scope.spawn(|| storage::migrate(&storage))).collect();
        runs.into_iter().map(|r| r.join().unwrap().unwrap()).collect()
    });
    assert_eq!(results.iter().filter(|m| m.from == 0).count(), 1, "{results:?}");
    storage::open_postgres(&storage).unwrap();
}

#[test]
fn tls_to_the_database_verifies_its_certificate() {
    use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
    let ca = |name: &str| {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(rcgen::DnType::CommonName, name);
        CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap()
    };
    let (ours, theirs) = (ca("liaison test CA"), ca("another CA"));
    let server_key = KeyPair::generate().unwrap();
    let server_cert =
        CertificateParams::new(vec!["127.0.0.1".to_owned()]).unwrap().signed_by(&server_key, &ours).unwrap();

    let pg = testing::PrivatePostgres::start().unwrap();
    pg.enable_tls(&server_cert.pem(), &server_key.serialize_pem()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (our_ca, their_ca) = (dir.path().join("ours.pem"), dir.path().join("theirs.pem"));
    std::fs::write(&our_ca, ours.pem()).unwrap();
    std::fs::write(&their_ca, theirs.pem()).unwrap();

    let url = pg.fresh_database().unwrap().replace("postgres@", "postgres:not-the-password@");
    let storage =
        StorageConfig { tls: DbTls::VerifyFull, ca_file: Some(our_ca), pool_size: 2, ..storage_at(url.clone()) };
    storage::migrate(&storage).unwrap();
    let kv = storage::open_postgres(&storage).unwrap();
    kv.put(b"over", b"tls").unwrap();
    assert_eq!(kv.get(b"over").unwrap(), Some(b"tls".to_vec()));

    // A server whose certificate the configured CA did not sign is refused, and the error
    // shows neither the URL nor its password.
    let wrong = StorageConfig { ca_file: Some(their_ca), ..storage };
    let e = storage::open_postgres(&wrong).unwrap_err().to_string();
    assert!(e.contains("PostgreSQL connection") && !e.contains("not-the-password"), "{e}");
}

#[test]
fn the_writers_lock_makes_another_node_wait_until_it_is_released() {
    let storage = storage_at(testing::fresh_database().unwrap());
    storage::migrate(&storage).unwrap();
    let (one, two) =
        (storage::open_postgres_shared(&storage).unwrap(), storage::open_postgres_shared(&storage).unwrap());
    let held = one.lock_writers().unwrap();
    assert!(held.is_held());
    let (got, waited) = std::sync::mpsc::channel();
    std::thread::scope(|scope| {
        scope.spawn(|| {
            let lock = two.lock_writers().unwrap();
            got.send(()).unwrap();
            drop(lock);
        });
        assert!(waited.recv_timeout(Duration::from_millis(500)).is_err(), "the other node waits while it is held");
        drop(held);
        waited.recv_timeout(Duration::from_secs(10)).expect("the other node goes on once it is released");
    });
    // Released, the connection went back to the pool and the lock can be taken again.
    drop(one.lock_writers().unwrap());
    drop(two.lock_writers().unwrap());
}

/// A shared store's view of PostgreSQL that counts the batches refused for a conflict.
#[derive(Debug)]
struct CountsConflicts(PgKv, AtomicUsize);

impl liaison_core::storage::KvStore for CountsConflicts {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StorageError> {
        self.0.get(key)
    }
    fn put(&self, key: &[u8], value: &[u8]) -> Result<(), StorageError> {
        self.0.put(key, value)
    }
    fn delete(&self, key: &[u8]) -> Result<(), StorageError> {
        self.0.delete(key)
    }
    fn scan_prefix(&self, prefix: &[u8]) -> Result<Vec<(Vec<u8>, Vec<u8>)>, StorageError> {
        self.0.scan_prefix(prefix)
    }
    fn apply(&self, batch: Batch) -> Result<(), StorageError> {
        let applied = self.0.apply(batch);
        if matches!(applied, Err(StorageError::Conflict)) {
            self.1.fetch_add(1, Ordering::SeqCst);
        }
        applied
    }
    fn flush(&self) -> Result<(), StorageError> {
        self.0.flush()
    }
    fn lock_writers(&self) -> Result<WritersLock, StorageError> {
        self.0.lock_writers()
    }
}

#[test]
fn two_nodes_group_committing_different_documents_take_turns_instead_of_conflicting() {
    // Every write of a cluster takes a number from the one change-feed counter. Read outside
    // the writers' lock, the other node's commit in between made the batch conflict and be
    // built again (with every meta read again), over and over under load.
    let storage = storage_at(testing::fresh_database().unwrap());
    storage::migrate(&storage).unwrap();
    let node = |name: &str| {
        let kv = Arc::new(CountsConflicts(storage::open_postgres_shared(&storage).unwrap(), AtomicUsize::new(0)));
        let who = Identity {
            tenant: "system".into(),
            user: "relay".into(),
            device: name.into(),
            role: Role::Admin,
            install: [7; 8],
        };
        let options = StoreOptions { shared: true, ..StoreOptions::default() };
        (DocStore::with_kv(kv.clone(), who, Arc::new(SystemClock), options).unwrap(), kv)
    };
    let (one, two) = (node("r1"), node("r2"));
    let device = DocStore::with_kv(
        Arc::new(MemoryKv::new()),
        Identity { tenant: "t".into(), user: "u".into(), device: "d".into(), role: Role::Msl, install: [1; 8] },
        Arc::new(SystemClock),
        StoreOptions::default(),
    )
    .unwrap();
    let kol = device.create("east", &KolProfile::new("Dr. Yamada", "Osaka")).unwrap();
    let docs: Vec<(DocumentId, Vec<u8>, Vec<automerge::ChangeHash>)> = (0..40)
        .map(|i| {
            let id = device.create("east", &EngagementPlan::new(&kol, format!("FY{i}"))).unwrap();
            (id, device.changes_since(&id, &[]).unwrap(), device.stored_heads(&id).unwrap().unwrap())
        })
        .collect();
    let (first, second) = docs.split_at(docs.len() / 2);
    std::thread::scope(|scope| {
        for (store, mine) in [(&one.0, first), (&two.0, second)] {
            scope.spawn(move || {
                for (id, changes, heads) in mine {
                    let w = SyncWrite { base: Some(&[]), doc: *id, changes, heads, sync_states: &[] };
                    let outcomes = store.append_sync_batch(&[w]).unwrap();
                    assert!(outcomes.iter().all(Result::is_ok), "{outcomes:?}");
                }
            });
        }
    });
    let conflicts = one.1.1.load(Ordering::SeqCst) + two.1.1.load(Ordering::SeqCst);
    assert_eq!(conflicts, 0, "batches refused and built again");
    let listed: Vec<u64> = one.0.feed_page("t", 0, 100).unwrap().iter().map(|e| e.seq).collect();
    assert_eq!(listed, (1..=docs.len() as u64).collect::<Vec<_>>(), "one feed number each, in order");
}
