//! Every decoder of bytes that come from disk or from other peers, fed arbitrary bytes: it
//! returns an error, never panics, and never takes another document down with it.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;

use common::identity;
use liaison_core::model::*;
use liaison_core::storage::{KvStore, MemoryKv};
use liaison_core::store::{ManualClock, StoreError, StoreOptions};
use liaison_core::sync::testing::fuzz;
use liaison_core::{DocStore, DocumentId, Role};
use proptest::prelude::*;

fn store_with_two_kols() -> (Arc<MemoryKv>, DocStore, DocumentId, DocumentId) {
    let kv = Arc::new(MemoryKv::new());
    let store = DocStore::with_kv(
        kv.clone(),
        identity("sato", "p", Role::Msl),
        Arc::new(ManualClock::new(0)),
        StoreOptions { cache_docs: 0, ..StoreOptions::default() },
    )
    .unwrap();
    let a = store.create("t", &KolProfile::new("A", "X")).unwrap();
    let b = store.create("t", &KolProfile::new("B", "Y")).unwrap();
    (kv, store, a, b)
}

fn key(prefix: &[u8], id: &DocumentId, suffix: &[u8]) -> Vec<u8> {
    [prefix, id.as_bytes(), suffix].concat()
}

proptest! {
    #[test]
    fn document_ids_parse_or_refuse(s in ".{0,64}", bytes in prop::collection::vec(any::<u8>(), 0..40)) {
        let _ = s.parse::<DocumentId>();
        let _ = String::from_utf8_lossy(&bytes).parse::<DocumentId>();
        let as_b58 = bs58::encode(&bytes).into_string();
        prop_assert!(as_b58.parse::<DocumentId>().is_err() || bytes.len() == 20);
    }

    #[test]
    fn arbitrary_chunk_bytes_fail_only_their_document(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        let (kv, store, a, b) = store_with_two_kols();
        kv.put(&key(b"c/", &a, b"/\0\0\0\0\0\0\0\0"), &bytes).unwrap();
        match store.get::<KolProfile>(&a) {
            Err(StoreError::Corrupt { id, .. }) => prop_assert_eq!(id, a),
            Ok(_) => {}
            Err(other) => prop_assert!(false, "unexpected error {other}"),
        }
        prop_assert_eq!(store.get::<KolProfile>(&b).unwrap().name, "B");
    }

    #[test]
    fn arbitrary_meta_bytes_are_an_error_naming_the_document(bytes in prop::collection::vec(any::<u8>(), 0..128)) {
        let (kv, store, a, b) = store_with_two_kols();
        kv.put(&key(b"m/", &a, b""), &bytes).unwrap();
        if let Err(e) = store.kind_of(&a) {
            let named = matches!(e, StoreError::Corrupt { id, .. } if id == a);
            prop_assert!(named, "bad meta must name its document");
        }
        let _ = store.update(&a, |p: &mut KolProfile| p.tier = Some("x".into()));
        prop_assert_eq!(store.kind_of(&b).unwrap(), Some(Kind::KolProfile));
    }

    #[test]
    fn arbitrary_summary_bytes_hide_one_kol_at_most(bytes in prop::collection::vec(any::<u8>(), 0..128)) {
        let (kv, store, a, b) = store_with_two_kols();
        kv.put(&key(b"s/", &a, b""), &bytes).unwrap();
        kv.put(b"s/short", &bytes).unwrap();
        let listed = store.list_kols().unwrap();
        prop_assert!(listed.iter().any(|s| s.id == b));
        let _ = store.search_kols("a");
        let _ = store.resolve_kol(&a);
    }

    #[test]
    fn arbitrary_remote_bytes_are_refused_cleanly(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        let (_kv, store, a, _b) = store_with_two_kols();
        let _ = store.merge_remote(&a, &bytes);
        let _ = store.merge_remote(&DocumentId::from_bytes([5; 16]), &bytes);
        prop_assert_eq!(store.get::<KolProfile>(&a).unwrap().name, "A");
    }
}

#[test]
fn a_foreign_document_is_stored_and_synced_but_not_indexed() {
    let (_kv, store, _a, _b) = store_with_two_kols();
    let mut doc = automerge::AutoCommit::new();
    automerge::transaction::Transactable::put(&mut doc, automerge::ROOT, "hello", "world").unwrap();
    let id = DocumentId::from_bytes([8; 16]);
    assert!(store.merge_remote(&id, &doc.save()).unwrap());
    assert_eq!(store.kind_of(&id).unwrap(), None);
    assert!(store.all_documents().unwrap().contains(&id));
    assert_eq!(store.list_kols().unwrap().len(), 2);
    let err = store.get::<KolProfile>(&id).unwrap_err();
    assert!(matches!(err, StoreError::Model(ModelError::NotLiaison(_))), "{err}");
}

/// The fuzz targets' inputs in `fuzz/` replayed through exactly the targets' harnesses.
fn replay(dirs: &[&str], harness: fn(&[u8])) -> usize {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz");
    let mut replayed = 0;
    for dir in dirs {
        let Ok(entries) = std::fs::read_dir(root.join(dir)) else { continue };
        for entry in entries {
            let path = entry.unwrap().path();
            if path.is_file() {
                let bytes = std::fs::read(&path).unwrap();
                let caught = std::panic::catch_unwind(|| harness(&bytes));
                assert!(caught.is_ok(), "{} fails its fuzz target", path.display());
                replayed += 1;
            }
        }
    }
    replayed
}

/// Replays the seeds and every kept crasher of the byte-level targets, as the fuzzer ran them.
#[test]
fn fuzz_corpora_and_kept_crashers_replay_cleanly() {
    // `regressions/engine_changes/` holds typed programs: server/tests replays those.
    let wire = replay(&["seeds/wire_decode", "regressions/wire_decode"], fuzz::wire_decode);
    let frames = replay(&["seeds/engine_frames", "regressions/engine_frames"], |b| {
        fuzz::engine_frames(b);
    });
    assert!(wire >= 5 && frames >= 4, "the seed corpora are there ({wire} and {frames} files)");
}

/// Seeds written from real messages: sync messages carrying real changes of real liaison
/// records, a request for a document the relay lacks, ephemeral data and a leave, so the
/// fuzzer starts from inputs that reach deep into the engine. Checked against the files in
/// `fuzz/seeds/`; `LIAISON_WRITE_SEEDS=1` rewrites them.
#[test]
fn fuzz_seeds_are_real_messages() {
    use automerge::sync::SyncDoc;
    use liaison_core::sync::wire::{Message, PeerId};

    // The store's install id (the random part of its actor ids, under its own key) is fixed,
    // so the seeds are the same bytes on every run.
    let kv = Arc::new(MemoryKv::new());
    kv.put(b"!install", &[7; 8]).unwrap();
    let store =
        DocStore::with_kv(kv, identity("sato", "p", Role::Msl), Arc::new(ManualClock::new(0)), StoreOptions::default())
            .unwrap();
    let (kol, plan) = (DocumentId::from_bytes([1; 16]), DocumentId::from_bytes([2; 16]));
    store.create_with(kol, &team(), &KolProfile::new("Dr A", "Univ")).unwrap();
    store.create_with(plan, &team(), &EngagementPlan::new(&kol, "plan")).unwrap();
    store.update(&plan, |p: &mut EngagementPlan| p.notes.splice(0, 0, "met at the congress")).unwrap();
    let (me, relay) = (PeerId("p".into()), PeerId("relay".into()));
    let sync = |id: DocumentId, request: bool| {
        let doc = store.load(&id).unwrap();
        let mut state = automerge::sync::State::new();
        // First message (heads and a bloom filter), then the one carrying every change, as
        // after the relay's reply naming nothing in common.
        let first = doc.generate_sync_message(&mut state).unwrap();
        let empty = automerge::Automerge::new();
        let reply = empty.generate_sync_message(&mut automerge::sync::State::new()).unwrap();
        let mut state2 = automerge::sync::State::new();
        let _ = doc.generate_sync_message(&mut state2);
        let mut d2 = doc.clone();
        d2.receive_sync_message(&mut state2, reply).unwrap();
        let with_changes = d2.generate_sync_message(&mut state2).unwrap();
        assert!(!with_changes.changes.is_empty(), "a seed carries real changes");
        [first, with_changes]
            .into_iter()
            .map(|m| {
                let (sender_id, target_id, document_id, data) = (me.clone(), relay.clone(), id, m.encode());
                if request {
                    Message::Request { sender_id, target_id, document_id, data }.encode()
                } else {
                    Message::Sync { sender_id, target_id, document_id, data }.encode()
                }
            })
            .collect::<Vec<_>>()
    };
    let changes = sync(plan, false);
    let ephemeral = Message::Ephemeral {
        sender_id: me.clone(),
        target_id: relay.clone(),
        count: 1,
        session_id: "s".into(),
        document_id: plan,
        data: vec![0xa1, 0x61, 0x78, 0x01],
    }
    .encode();
    let leave = Message::Leave { sender_id: me.clone() }.encode();
    let wire_seeds: Vec<(&str, Vec<u8>)> =
        vec![("sync_with_changes", changes[1].clone()), ("ephemeral", ephemeral.clone())];
    let mut two_docs = sync(kol, true);
    two_docs.extend(sync(plan, false));
    let frame_seeds: Vec<(&str, Vec<u8>)> = vec![
        ("create_a_plan", fuzz::join_frames(&changes)),
        ("request_then_create_two_documents", fuzz::join_frames(&two_docs)),
        ("create_then_ephemeral_then_leave", fuzz::join_frames(&[changes.clone(), vec![ephemeral, leave]].concat())),
        ("same_changes_twice", fuzz::join_frames(&[changes.clone(), changes].concat())),
    ];
    // The seeds reach the store: the relay keeps the documents they create.
    for (name, stored) in [(0, 1), (1, 2), (2, 1), (3, 1)] {
        assert_eq!(fuzz::engine_frames(&frame_seeds[name].1), stored, "{}", frame_seeds[name].0);
    }
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/seeds");
    let write = std::env::var_os("LIAISON_WRITE_SEEDS").is_some();
    for (dir, seeds) in [("wire_decode", wire_seeds), ("engine_frames", frame_seeds)] {
        for (name, bytes) in seeds {
            let path = root.join(dir).join(name);
            if write {
                std::fs::write(&path, &bytes).unwrap();
            }
            assert_eq!(std::fs::read(&path).ok(), Some(bytes), "{} is stale: LIAISON_WRITE_SEEDS=1", path.display());
        }
    }
}

fn team() -> NewDocument {
    NewDocument { team: "team".into(), retention_class: "standard".into() }
}
