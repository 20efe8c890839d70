//! What the store promises about the disk: committed edits survive a killed process, a damaged
//! chunk is reported by document and spares the others, a full disk loses nothing.
#![allow(clippy::unwrap_used)]

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::Arc;

use common::identity;
use liaison_core::model::*;
use liaison_core::storage::{KvStore, MemoryKv, StorageError};
use liaison_core::store::{ManualClock, StoreError, StoreOptions};
use liaison_core::sync::testing::faulty_kv::{self, Fault, FaultyKv};
use liaison_core::{DocStore, DocumentId, Role, SyncWrite};

const CHILD_ENV: &str = "LIAISON_CRASH_CHILD_DIR";
const DOCS: usize = 4;

/// Runs only as the child of `killed_writer_loses_no_committed_edit`: writes edits forever,
/// printing each one once the store has reported it committed.
#[test]
fn crash_child() {
    let Ok(dir) = std::env::var(CHILD_ENV) else {
        return;
    };
    let store = DocStore::open(dir.as_ref(), identity("sato", "phone-a", Role::Msl)).unwrap();
    let kol = store.create("t", &KolProfile::new("Dr. Lee", "Kyoto Univ")).unwrap();
    let mut plans = Vec::new();
    for i in 0..DOCS {
        let id = store.create("t", &EngagementPlan::new(&kol, format!("plan {i}"))).unwrap();
        println!("@@doc {id}");
        plans.push(id);
    }
    for n in 0u64.. {
        let id = &plans[n as usize % DOCS];
        store
            .update(id, |p: &mut EngagementPlan| {
                let end = p.notes.as_str().len();
                p.notes.splice(end, 0, format!("<{n}>"));
                p.activities.push(Activity {
                    id: format!("a{n}"),
                    description: format!("activity {n}"),
                    owner: "sato".into(),
                    due: None,
                    status: TaskStatus::Open,
                });
            })
            .unwrap();
        println!("@@committed {n}");
    }
}

fn run_and_kill(dir: &std::path::Path, kill_after: u64) -> (Vec<DocumentId>, Vec<u64>) {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "crash_child", "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut docs = Vec::new();
    let mut committed = Vec::new();
    // libtest may print "test crash_child ... " before the child's first line: look for the marker.
    let marked = |line: &str| line.find("@@").map(|i| line[i + 2..].to_owned());
    for line in lines.by_ref() {
        let Some(line) = marked(&line.unwrap()) else { continue };
        if let Some(id) = line.strip_prefix("doc ") {
            docs.push(id.parse().unwrap());
        } else if let Some(n) = line.strip_prefix("committed ") {
            committed.push(n.parse().unwrap());
            if committed.len() as u64 == kill_after {
                child.kill().unwrap(); // SIGKILL: no destructor, no flush, no goodbye.
                break;
            }
        }
    }
    // Lines the child printed before it died were committed too.
    for line in lines {
        if let Some(n) = marked(&line.unwrap()).as_deref().and_then(|l| l.strip_prefix("committed ")) {
            committed.push(n.parse().unwrap());
        }
    }
    let status = child.wait().unwrap();
    assert!(!status.success(), "the child was killed, it did not finish");
    (docs, committed)
}

#[test]
fn killed_writer_loses_no_committed_edit() {
    for kill_after in [1, 37, 160] {
        let dir = tempfile::tempdir().unwrap();
        let (docs, committed) = run_and_kill(dir.path(), kill_after);
        assert_eq!(docs.len(), DOCS);
        assert!(committed.len() as u64 >= kill_after);

        let store = DocStore::open(dir.path(), identity("sato", "phone-a", Role::Msl)).unwrap();
        for n in &committed {
            let plan: EngagementPlan = store.get(&docs[*n as usize % DOCS]).unwrap();
            assert!(plan.notes.as_str().contains(&format!("<{n}>")), "edit {n} was reported committed, then lost");
            assert!(plan.activities.iter().any(|a| a.id == format!("a{n}")));
        }
        // The reopened store is whole: it lists, and it takes new edits.
        assert_eq!(store.list(Kind::EngagementPlan).unwrap().len(), DOCS);
        assert_eq!(store.list_kols().unwrap().len(), 1);
        store.update(&docs[0], |p: &mut EngagementPlan| p.title = "after the crash".into()).unwrap();
    }
}

fn memory_store(kv: Arc<MemoryKv>, options: StoreOptions) -> DocStore {
    DocStore::with_kv(kv, identity("sato", "phone-a", Role::Msl), Arc::new(ManualClock::new(0)), options).unwrap()
}

fn chunk_keys(kv: &MemoryKv, id: &DocumentId) -> Vec<Vec<u8>> {
    let prefix = [b"c/".as_slice(), id.as_bytes(), b"/"].concat();
    kv.scan_keys(&prefix).unwrap()
}

#[test]
fn a_damaged_chunk_names_its_document_and_spares_the_others() {
    let kv = Arc::new(MemoryKv::new());
    let store = memory_store(kv.clone(), StoreOptions::default());
    let damaged = store.create("t", &KolProfile::new("A", "X")).unwrap();
    let healthy = store.create("t", &KolProfile::new("B", "Y")).unwrap();
    store.update(&damaged, |p: &mut KolProfile| p.tier = Some("1".into())).unwrap();

    let keys = chunk_keys(&kv, &damaged);
    assert_eq!(keys.len(), 2, "a create and an incremental save");
    let original = kv.get(&keys[1]).unwrap().unwrap();

    let cases: Vec<(Vec<u8>, &str)> = vec![
        (original[..original.len() / 2].to_vec(), "checksum"), // truncated payload
        (original[..5].to_vec(), "truncated"),                 // truncated inside the header
        (
            {
                let mut v = original.clone();
                let last = v.len() - 1;
                v[last] ^= 0x40;
                v
            },
            "checksum",
        ),
        (vec![], "truncated"),
        (
            {
                let mut v = original.clone();
                v[0] = 99;
                v
            },
            "unknown chunk format",
        ),
    ];
    for (bytes, reason) in cases {
        kv.put(&keys[1], &bytes).unwrap();
        // A fresh store: nothing cached, everything read from "disk".
        let store = memory_store(kv.clone(), StoreOptions::default());
        let err = store.get::<KolProfile>(&damaged).unwrap_err();
        match &err {
            StoreError::Corrupt { id, reason: r } => {
                assert_eq!(*id, damaged);
                assert!(r.contains(reason), "{r} should say {reason}");
            }
            other => panic!("expected Corrupt, got {other:?}"),
        }
        assert!(err.to_string().contains(&damaged.to_string()), "the error names the document: {err}");
        assert_eq!(store.get::<KolProfile>(&healthy).unwrap().name, "B");
        assert_eq!(store.list_kols().unwrap().len(), 2, "listing does not need the damaged document");
        assert!(store.update(&damaged, |p: &mut KolProfile| p.tier = None).is_err(), "no edit on a damaged doc");
    }

    // A chunk whose frame is intact but whose automerge data is not.
    kv.put(&keys[1], &liaison_frame(b"not automerge")).unwrap();
    let store = memory_store(kv.clone(), StoreOptions::default());
    assert!(matches!(
        store.get::<KolProfile>(&damaged),
        Err(StoreError::Corrupt { reason: "automerge data does not load", .. })
    ));
    kv.put(&keys[1], &original).unwrap();
    assert_eq!(store.get::<KolProfile>(&damaged).unwrap().tier.as_deref(), Some("1"));
}

fn liaison_frame(payload: &[u8]) -> Vec<u8> {
    use sha2::Digest;
    let mut v = vec![1u8];
    v.extend_from_slice(&sha2::Sha256::digest(payload)[..8]);
    v.extend_from_slice(payload);
    v
}

#[test]
fn a_full_disk_refuses_the_edit_and_loses_nothing() {
    let kv = Arc::new(MemoryKv::new());
    let store = memory_store(kv.clone(), StoreOptions::default());
    let k = store.create("t", &KolProfile::new("A", "X")).unwrap();
    let plan = store.create("t", &EngagementPlan { notes: "kept".into(), ..EngagementPlan::new(&k, "p") }).unwrap();

    kv.set_full(true);
    let err = store.update(&plan, |p: &mut EngagementPlan| p.notes.splice(0, 0, "lost? ")).unwrap_err();
    assert!(matches!(err, StoreError::Storage(StorageError::Full)));
    assert_eq!(err.to_string(), "storage is full");
    assert!(store.create("t", &KolProfile::new("B", "Y")).is_err());
    // Reading still works while the disk is full, and shows only committed state.
    assert_eq!(store.get::<EngagementPlan>(&plan).unwrap().notes.as_str(), "kept");

    kv.set_full(false);
    store.update(&plan, |p: &mut EngagementPlan| p.notes.splice(4, 0, "!")).unwrap();
    assert_eq!(store.get::<EngagementPlan>(&plan).unwrap().notes.as_str(), "kept!");
    let reopened = memory_store(kv, StoreOptions::default());
    assert_eq!(reopened.get::<EngagementPlan>(&plan).unwrap().notes.as_str(), "kept!");
    assert_eq!(reopened.history(&plan).unwrap().len(), 2, "the refused edit left no change behind");
}

#[test]
fn incremental_saves_append_only_new_changes_and_compaction_bounds_chunks() {
    let kv = Arc::new(MemoryKv::new());
    let options = StoreOptions { compact_after_chunks: 8, ..StoreOptions::default() };
    let store = memory_store(kv.clone(), options.clone());
    let k = store.create("t", &KolProfile::new("A", "X")).unwrap();
    let big = "Long-standing interest in renal outcomes. ".repeat(200);
    let plan =
        store.create("t", &EngagementPlan { notes: big.as_str().into(), ..EngagementPlan::new(&k, "p") }).unwrap();
    let first = kv.get(&chunk_keys(&kv, &plan)[0]).unwrap().unwrap().len();

    store.update(&plan, |p: &mut EngagementPlan| p.notes.splice(0, 0, "X")).unwrap();
    let keys = chunk_keys(&kv, &plan);
    let second = kv.get(&keys[1]).unwrap().unwrap().len();
    assert!(second < 300, "an edit of one character appends a small chunk ({second} bytes; the doc is {first})");

    for i in 0..30 {
        store.update(&plan, |p: &mut EngagementPlan| p.title = format!("p{i}")).unwrap();
        assert!(store.chunk_count(&plan).unwrap() <= 8);
        assert_eq!(chunk_keys(&kv, &plan).len() as u64, store.chunk_count(&plan).unwrap());
    }
    let reopened = memory_store(kv.clone(), options);
    let p: EngagementPlan = reopened.get(&plan).unwrap();
    assert_eq!(p.title, "p29");
    assert!(p.notes.as_str().starts_with("XLong-standing"));
    assert_eq!(reopened.history(&plan).unwrap().len(), 32, "compaction keeps the whole history");
    reopened.compact(&plan).unwrap();
    assert_eq!(reopened.chunk_count(&plan).unwrap(), 1);
    assert_eq!(memory_store(kv, StoreOptions::default()).get::<EngagementPlan>(&plan).unwrap(), p);
}

#[test]
fn deleting_a_document_erases_it_and_its_index_entries() {
    let kv = Arc::new(MemoryKv::new());
    let store = memory_store(kv.clone(), StoreOptions::default());
    let k = store.create("t", &KolProfile::new("A", "X")).unwrap();
    let i = store.create("t", &Interaction::new(&k, 0, Channel::Phone)).unwrap();
    let feed = store.subscribe();
    store.delete(&k).unwrap();
    assert!(matches!(store.get::<KolProfile>(&k), Err(StoreError::NotFound(_))));
    assert!(store.list_kols().unwrap().is_empty());
    assert!(feed.try_recv().unwrap().deleted);
    store.delete(&i).unwrap();
    assert!(store.records_for_kol(&k, Kind::Interaction).unwrap().is_empty());
    // Store-wide entries (`!install`, `!pending-v1`, `!feed`) belong to no document, and each
    // erased document leaves one entry in its tenant's change feed saying so (no content).
    let erased: Vec<_> = store.feed_page("pharma-a", 0, 10).unwrap();
    assert_eq!(
        erased.iter().map(|e| (e.doc, e.erased, e.heads.len())).collect::<Vec<_>>(),
        [(k, true, 0), (i, true, 0)]
    );
    let left: Vec<_> = kv
        .scan_keys(b"")
        .unwrap()
        .into_iter()
        .filter(|key| !key.starts_with(b"!") && !key.starts_with(b"f/"))
        .collect();
    assert!(left.is_empty(), "nothing of either document is left: {left:?}");
    assert_eq!(kv.scan_keys(b"f/").unwrap().len(), erased.len(), "no other feed entry");
}

#[test]
fn reopening_keeps_the_install_id_and_so_the_actor() {
    let dir = tempfile::tempdir().unwrap();
    let first = DocStore::open(dir.path(), identity("sato", "phone-a", Role::Msl)).unwrap();
    let actor = first.identity().actor_id();
    let id = first.create("t", &KolProfile::new("A", "X")).unwrap();
    drop(first);
    let again = DocStore::open(dir.path(), identity("sato", "phone-a", Role::Msl)).unwrap();
    assert_eq!(again.identity().actor_id(), actor);
    again.update(&id, |p: &mut KolProfile| p.tier = Some("2".into())).unwrap();
    let h = again.history(&id).unwrap();
    assert_eq!(h[0].actor, h[1].actor);
    // A reinstall (a new, empty store) gets a new actor for the same user and device.
    let other = tempfile::tempdir().unwrap();
    let fresh = DocStore::open(other.path(), identity("sato", "phone-a", Role::Msl)).unwrap();
    assert_ne!(fresh.identity().actor_id(), actor);
}

/// A memory store that counts reads of documents' chunks (scans of a chunk prefix).
#[derive(Debug)]
struct CountingKv {
    inner: Arc<MemoryKv>,
    chunk_scans: std::sync::atomic::AtomicU64,
}

impl CountingKv {
    fn chunk_scans(&self) -> u64 {
        self.chunk_scans.load(std::sync::atomic::Ordering::SeqCst)
    }
}

impl KvStore for CountingKv {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StorageError> {
        self.inner.get(key)
    }
    fn put(&self, key: &[u8], value: &[u8]) -> Result<(), StorageError> {
        self.inner.put(key, value)
    }
    fn delete(&self, key: &[u8]) -> Result<(), StorageError> {
        self.inner.delete(key)
    }
    fn scan_prefix(&self, prefix: &[u8]) -> Result<Vec<liaison_core::storage::KeyValue>, StorageError> {
        if prefix.starts_with(b"c/") {
            self.chunk_scans.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
        self.inner.scan_prefix(prefix)
    }
    fn apply(&self, batch: liaison_core::storage::Batch) -> Result<(), StorageError> {
        self.inner.apply(batch)
    }
    fn flush(&self) -> Result<(), StorageError> {
        self.inner.flush()
    }
}

/// The relay's group commit: many documents' appends in one batch, without loading them;
/// compaction inside a batch; owner indexed at first sight; a full disk stores none of it.
#[test]
fn group_commits_append_without_loading_and_store_all_or_nothing() {
    use automerge::{Automerge, ChangeHash};

    // A device makes the documents; the "relay" store receives them as sync writes.
    let device = memory_store(Arc::new(MemoryKv::new()), StoreOptions::default());
    let k = device.create("east", &KolProfile::new("A", "X")).unwrap();
    let plans: Vec<DocumentId> =
        (0..3).map(|i| device.create("east", &EngagementPlan::new(&k, format!("p{i}"))).unwrap()).collect();
    let kv = Arc::new(MemoryKv::new());
    let counting = Arc::new(CountingKv { inner: kv.clone(), chunk_scans: Default::default() });
    let options = StoreOptions { compact_after_chunks: 4, ..StoreOptions::default() };
    let relay = DocStore::with_kv(
        counting.clone(),
        identity("sato", "phone-a", Role::Msl),
        Arc::new(ManualClock::new(0)),
        options.clone(),
    )
    .unwrap();
    // A document's chunks are read only when it is new here and when it is compacted (every
    // fourth append after that); the other appends are written without reading anything.
    let mut writes_per_doc = vec![0u64; plans.len()];
    let mut expected_loads = 0u64;
    let mut batch_scans = 0u64;
    let mut stored: Vec<Vec<ChangeHash>> = vec![Vec::new(); plans.len()];
    let bytes_of = |id: &DocumentId| {
        let (data, _) = device.load_for_sync(id).unwrap().unwrap();
        Automerge::load(&data).unwrap()
    };
    // Round r: every plan gets an edit; all plans' writes (twice for plan 0) go in one batch.
    for r in 0..7 {
        let mut owned = Vec::new();
        for (i, plan) in plans.iter().enumerate() {
            device.update(plan, |p: &mut EngagementPlan| p.notes.splice(0, 0, format!("{r}{i} "))).unwrap();
            let doc = bytes_of(plan);
            owned.push((
                *plan,
                doc.save_after(&stored[i]),
                doc.get_heads(),
                vec![(format!("peer-{r}"), vec![r as u8])],
            ));
            stored[i] = doc.get_heads();
            // Plan 0 comes three times per batch, so some batches compact chunks they added.
            for n in 0..if i == 0 { 2 } else { 0 } {
                device.update(plan, |p: &mut EngagementPlan| p.title = format!("t{r}{n}")).unwrap();
                let doc = bytes_of(plan);
                owned.push((*plan, doc.save_after(&stored[0]), doc.get_heads(), Vec::new()));
                stored[0] = doc.get_heads();
            }
        }
        let writes: Vec<SyncWrite<'_>> = owned
            .iter()
            .map(|(doc, changes, heads, states)| SyncWrite {
                base: None,
                doc: *doc,
                changes,
                heads,
                sync_states: states,
            })
            .collect();
        for (doc, ..) in &owned {
            let i = plans.iter().position(|p| p == doc).unwrap();
            writes_per_doc[i] += 1;
            expected_loads += u64::from(writes_per_doc[i] % 4 == 1);
        }
        let scans_before = counting.chunk_scans();
        let outcomes = relay.append_sync_batch(&writes).unwrap();
        assert!(outcomes.iter().all(|o| o.is_ok()), "{outcomes:?}");
        // A load reads the chunks once and a compaction lists them once to delete them.
        batch_scans += counting.chunk_scans() - scans_before;
        assert!(
            batch_scans <= 2 * expected_loads,
            "round {r}: {batch_scans} chunk reads for {expected_loads} loads ({} writes so far)",
            writes_per_doc.iter().sum::<u64>(),
        );
        for (i, plan) in plans.iter().enumerate() {
            let chunks = relay.chunk_count(plan).unwrap();
            assert!(chunks <= 4, "compaction bounds chunks ({chunks})");
            assert_eq!(chunk_keys(&kv, plan).len() as u64, chunks, "no chunk left behind by compaction");
            let (data, states) = relay.load_for_sync(plan).unwrap().unwrap();
            assert_eq!(Automerge::load(&data).unwrap().get_heads(), stored[i], "round {r}, plan {i}");
            assert!(states.iter().any(|(s, v)| *s == format!("peer-{r}") && *v == vec![r as u8]));
        }
    }
    let reopened = memory_store(kv.clone(), options.clone());
    let p: EngagementPlan = reopened.get(&plans[0]).unwrap();
    assert_eq!(p.title, "t61");
    assert!(p.notes.as_str().starts_with("60 50 40 30 20 10 00 "));
    assert_eq!(
        reopened.owner_of(&plans[1]).unwrap().map(|(_, team, kind)| (team, kind)),
        Some(("east".into(), Some(Kind::EngagementPlan)))
    );

    // A full disk: the whole batch is refused, nothing of it stored, the next batch works.
    device.update(&plans[1], |p: &mut EngagementPlan| p.notes.splice(0, 0, "late ")).unwrap();
    let doc = bytes_of(&plans[1]);
    let changes = doc.save_after(&stored[1]);
    let heads = doc.get_heads();
    let state = vec![("peer-x".to_owned(), vec![9u8])];
    let write = [SyncWrite { base: None, doc: plans[1], changes: &changes, heads: &heads, sync_states: &state }];
    kv.set_full(true);
    let err = relay.append_sync_batch(&write).unwrap_err();
    assert!(matches!(err, StoreError::Storage(StorageError::Full)));
    kv.set_full(false);
    let (data, states) = relay.load_for_sync(&plans[1]).unwrap().unwrap();
    assert_eq!(Automerge::load(&data).unwrap().get_heads(), stored[1], "nothing of the refused batch");
    assert!(!states.iter().any(|(s, _)| s == "peer-x"));
    // Beside a write that cannot be stored (a new document whose bytes are not automerge), the
    // rest of the group is stored: one damaged document never holds back the others.
    let stranger = DocumentId::random();
    let garbage = [
        SyncWrite { base: None, doc: stranger, changes: b"not automerge", heads: &[], sync_states: &[] },
        write[0].clone(),
    ];
    let outcomes = relay.append_sync_batch(&garbage).unwrap();
    assert!(matches!(outcomes[0], Err(StoreError::Corrupt { .. })), "{:?}", outcomes[0]);
    assert!(outcomes[1].is_ok());
    assert!(relay.load_for_sync(&stranger).unwrap().is_none(), "nothing of the failed write");
    let (data, _) = relay.load_for_sync(&plans[1]).unwrap().unwrap();
    assert_eq!(Automerge::load(&data).unwrap().get_heads(), heads);
}

/// One step of `a_failed_write_or_flush_leaves_each_step_whole_or_undone`.
type Step = (&'static str, Box<dyn Fn(&DocStore) -> Result<(), StoreError>>);

fn fixed_id(n: u8) -> DocumentId {
    DocumentId::from_bytes([n; 16])
}

/// Every kind of write the store makes, on fixed ids with a fixed clock and install, so two runs
/// write the same bytes. Documents `x` and `y` come from another device, as sync would bring them.
fn store_steps() -> (Vec<Step>, Vec<DocumentId>) {
    use automerge::transaction::Transactable;

    let (k1, k2, visit) = (fixed_id(1), fixed_id(2), fixed_id(3));
    let other = common::device("ito", "tablet", Role::Msl);
    let kx = other.create("t", &KolProfile::new("Endo", "Sendai")).unwrap();
    let x = other.create("t", &EngagementPlan::new(&kx, "x")).unwrap();
    let y = other.create("t", &EngagementPlan::new(&kx, "y")).unwrap();
    let x_first = other.export(&x).unwrap();
    let x_heads_first = other.load(&x).unwrap().get_heads();
    other.update(&x, |p: &mut EngagementPlan| p.title = "x2".into()).unwrap();
    let x_more = other.changes_since(&x, &x_heads_first).unwrap();
    let x_heads = other.load(&x).unwrap().get_heads();
    let y_first = other.export(&y).unwrap();
    let y_heads = other.load(&y).unwrap().get_heads();
    other.update(&y, |p: &mut EngagementPlan| p.notes.splice(0, 0, "from the tablet")).unwrap();
    let y_later = other.export(&y).unwrap();

    let new = || NewDocument { team: "t".into(), retention_class: "standard".into() };
    let state = |peer: &str, n: u8| vec![(peer.to_owned(), vec![n; 4])];
    let steps: Vec<Step> = vec![
        ("create a KOL", Box::new(move |s| s.create_with(k1, &new(), &KolProfile::new("Aoki", "Osaka")))),
        ("create another", Box::new(move |s| s.create_with(k2, &new(), &KolProfile::new("Baba", "Kobe")))),
        ("create a visit", Box::new(move |s| s.create_with(visit, &new(), &Interaction::new(&k1, 0, Channel::Phone)))),
        ("refile the visit", Box::new(move |s| s.update(&visit, |i: &mut Interaction| i.kol_id = k2.to_string()))),
        ("edit the summary", Box::new(move |s| s.update(&k1, |p: &mut KolProfile| p.institution = "Kyoto".into()))),
        ("edit again", Box::new(move |s| s.update(&k1, |p: &mut KolProfile| p.specialty = Some("Onc".into())))),
        ("edit and compact", Box::new(move |s| s.update(&k1, |p: &mut KolProfile| p.name = "Aoki T.".into()))),
        ("merge the KOLs", Box::new(move |s| s.merge_kols(&k1, &k2))),
        ("receive a document", Box::new(move |s| s.apply_sync_changes(&x, &x_first, &state("peer-a", 1)))),
        (
            "group commit",
            Box::new(move |s| {
                let a = state("peer-b", 2);
                let writes = [
                    SyncWrite { base: None, doc: x, changes: &x_more, heads: &x_heads, sync_states: &a },
                    SyncWrite { base: None, doc: y, changes: &y_first, heads: &y_heads, sync_states: &[] },
                ];
                let outcomes = s.append_sync_batch(&writes)?;
                assert!(outcomes.iter().all(Result::is_ok), "{outcomes:?}");
                Ok(())
            }),
        ),
        ("compact", Box::new(move |s| s.compact(&visit))),
        ("save sync states", Box::new(move |s| s.save_sync_states(&x, &state("peer-c", 3)))),
        ("merge a remote copy", Box::new(move |s| s.merge_remote(&y, &y_later).map(|_| ()))),
        ("raw edit", Box::new(move |s| s.edit_raw(&y, |tx| tx.put(automerge::ROOT, "raw", "yes").map(|_| ())))),
        (
            "erase with a tombstone",
            Box::new(move |s| {
                let mut tombstone = liaison_core::storage::Batch::new();
                tombstone.put([b"e/".as_slice(), k2.as_bytes()].concat(), b"gone".to_vec());
                s.delete_with(&k2, tombstone).map(|_| ())
            }),
        ),
        ("delete", Box::new(move |s| s.delete(&visit))),
    ];
    (steps, vec![k1, k2, visit, x, y])
}

/// What the store shows of `ids`: heads, sync states, listings and KOL references.
fn store_view(store: &DocStore, ids: &[DocumentId]) -> Vec<String> {
    let mut view = Vec::new();
    for id in ids {
        let heads = store.load(id).map(|d| d.get_heads()).map_err(|e| e.to_string());
        let states = store.load_for_sync(id).map(|s| s.map(|(_, states)| states)).map_err(|e| e.to_string());
        view.push(format!("{id}: {heads:?} {states:?} {:?}", store.kind_of(id).map_err(|e| e.to_string())));
        for kind in Kind::ALL {
            view.push(format!("{id} {kind:?} records: {:?}", store.records_for_kol(id, kind).unwrap()));
        }
    }
    for kind in Kind::ALL {
        view.push(format!("{kind:?}: {:?}", store.list(kind).unwrap()));
    }
    view.push(format!("KOLs: {:?}", store.list_kols().unwrap()));
    view
}

/// Every chunk, index entry, summary and sync state belongs to a document whose meta is there,
/// every such document loads, and it has as many chunks as its meta says.
fn assert_whole(disk: &faulty_kv::Map, step: &str) {
    let key = |k: &[u8], at: usize| DocumentId::from_bytes(k[at..at + 16].try_into().unwrap());
    let metas: Vec<DocumentId> = disk.keys().filter(|k| k.starts_with(b"m/")).map(|k| key(k, 2)).collect();
    let store = faulty_store(disk.clone());
    for k in disk.keys() {
        let owner = match &k[..2] {
            b"c/" | b"s/" | b"y/" => key(k, 2),
            b"k/" | b"r/" => key(k, k.len() - 16),
            _ => continue,
        };
        assert!(metas.contains(&owner), "after {step}: {:?} belongs to no document", String::from_utf8_lossy(k));
    }
    for id in &metas {
        store.load(id).unwrap_or_else(|e| panic!("after {step}: {e}"));
        let chunks = disk.keys().filter(|k| k.starts_with(&[b"c/".as_slice(), id.as_bytes()].concat())).count();
        assert_eq!(chunks as u64, store.chunk_count(id).unwrap(), "after {step}: chunks of {id}");
    }
}

fn faulty_store(disk: faulty_kv::Map) -> DocStore {
    let options = StoreOptions { compact_after_chunks: 3, ..StoreOptions::default() };
    let clock = Arc::new(ManualClock::new(1_700_000_000_000));
    DocStore::with_kv(Arc::new(FaultyKv::new(disk)), identity("sato", "phone-a", Role::Msl), clock, options).unwrap()
}

/// Architecture Invariants "chunks and their indexes change together" and "memory never holds
/// an edit the disk does not". Every kind of write runs once cleanly, keeping the disk after each
/// step; then again once per write and once per flush of the clean run, with that one failing.
/// After the failure the disk is, byte for byte, the disk before the step or after it (never
/// half of it); the failing store shows exactly what a store reopened on that disk shows; and
/// the step retried on the same store brings the run back to the clean one.
#[test]
fn a_failed_write_or_flush_leaves_each_step_whole_or_undone() {
    let install: faulty_kv::Map = [(b"!install".to_vec(), vec![7; 8])].into();
    let options = StoreOptions { compact_after_chunks: 3, ..StoreOptions::default() };
    let clock = Arc::new(ManualClock::new(1_700_000_000_000));
    let (steps, ids) = store_steps();

    let kv = Arc::new(FaultyKv::new(install.clone()));
    let store =
        DocStore::with_kv(kv.clone(), identity("sato", "phone-a", Role::Msl), clock.clone(), options.clone()).unwrap();
    let mut clean = vec![kv.disk()];
    for (name, step) in &steps {
        step(&store).unwrap_or_else(|e| panic!("{name}: {e}"));
        clean.push(kv.disk());
        assert_whole(clean.last().unwrap(), name);
    }
    let (writes, flushes) = kv.counts();
    assert!(writes >= steps.len() as u64 && flushes >= steps.len() as u64, "{writes} writes, {flushes} flushes");
    assert_eq!(store_view(&store, &ids), store_view(&faulty_store(kv.disk()), &ids));

    let faults = (1..=writes).map(Fault::Write).chain((1..=flushes).map(Fault::Flush));
    for fault in faults {
        let kv = Arc::new(FaultyKv::new(install.clone()));
        let store =
            DocStore::with_kv(kv.clone(), identity("sato", "phone-a", Role::Msl), clock.clone(), options.clone())
                .unwrap();
        kv.fail(Some(fault));
        for (n, (name, step)) in steps.iter().enumerate() {
            let result = step(&store);
            assert_eq!(result.is_err(), kv.tripped(), "{fault:?} in {name}: {result:?}");
            if result.is_err() {
                let disk = kv.disk();
                assert!(disk == clean[n] || disk == clean[n + 1], "{fault:?} left {name} half done on disk");
                assert!(kv.live() == disk, "{fault:?} in {name}: writes left behind for the next flush to store");
                let reopened = faulty_store(disk);
                assert_eq!(
                    store_view(&store, &ids),
                    store_view(&reopened, &ids),
                    "{fault:?} in {name}: the store shows what its disk does not hold"
                );
                kv.fail(None);
                step(&store).unwrap_or_else(|e| panic!("{name} retried after {fault:?}: {e}"));
            }
            assert!(kv.disk() == clean[n + 1], "{fault:?}: after {name} the disk differs from the clean run's");
        }
        assert_eq!(store_view(&store, &ids), store_view(&faulty_store(kv.disk()), &ids));
    }
}
