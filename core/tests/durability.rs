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
use liaison_core::{DocStore, DocumentId, Role};

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
    let left: Vec<_> = kv.scan_keys(b"").unwrap().into_iter().filter(|key| key.as_slice() != b"!install").collect();
    assert!(left.is_empty(), "nothing of either document is left: {left:?}");
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

/// The relay's group commit: many documents' appends in one batch, without loading them;
/// compaction inside a batch; owner indexed at first sight; a full disk stores none of it.
#[test]
fn group_commits_append_without_loading_and_store_all_or_nothing() {
    use automerge::{Automerge, ChangeHash};
    use liaison_core::SyncWrite;

    // A device makes the documents; the "relay" store receives them as sync writes.
    let device = memory_store(Arc::new(MemoryKv::new()), StoreOptions::default());
    let k = device.create("east", &KolProfile::new("A", "X")).unwrap();
    let plans: Vec<DocumentId> =
        (0..3).map(|i| device.create("east", &EngagementPlan::new(&k, format!("p{i}"))).unwrap()).collect();
    let kv = Arc::new(MemoryKv::new());
    let options = StoreOptions { compact_after_chunks: 4, ..StoreOptions::default() };
    let relay = memory_store(kv.clone(), options.clone());
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
            .map(|(doc, changes, heads, states)| SyncWrite { doc: *doc, changes, heads, sync_states: states })
            .collect();
        let outcomes = relay.append_sync_batch(&writes).unwrap();
        assert!(outcomes.iter().all(|o| o.is_ok()), "{outcomes:?}");
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
    let write = [SyncWrite { doc: plans[1], changes: &changes, heads: &heads, sync_states: &state }];
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
    let garbage =
        [SyncWrite { doc: stranger, changes: b"not automerge", heads: &[], sync_states: &[] }, write[0].clone()];
    let outcomes = relay.append_sync_batch(&garbage).unwrap();
    assert!(matches!(outcomes[0], Err(StoreError::Corrupt { .. })), "{:?}", outcomes[0]);
    assert!(outcomes[1].is_ok());
    assert!(relay.load_for_sync(&stranger).unwrap().is_none(), "nothing of the failed write");
    let (data, _) = relay.load_for_sync(&plans[1]).unwrap().unwrap();
    assert_eq!(Automerge::load(&data).unwrap().get_heads(), heads);
}
