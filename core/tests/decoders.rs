//! Every decoder of bytes that come from disk or from other peers, fed arbitrary bytes: it
//! returns an error, never panics, and never takes another document down with it.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;

use common::identity;
use liaison_core::model::*;
use liaison_core::storage::{KvStore, MemoryKv};
use liaison_core::store::{ManualClock, StoreError, StoreOptions};
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

/// Replays the fuzz corpora and every kept crasher through the frame decoder and a relay engine.
#[test]
fn fuzz_corpora_and_kept_crashers_replay_cleanly() {
    use liaison_core::sync::wire::{DEFAULT_MAX_FRAME, Message, decode};
    use liaison_core::sync::{ConnId, Engine, EngineConfig, Input, OpenPolicy, Side};
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz");
    let mut replayed = 0;
    // `regressions/engine_changes/` holds typed programs, not frames: server/tests replays those.
    let dirs = [
        "seeds/wire_decode",
        "seeds/engine_frames",
        "regressions",
        "regressions/wire_decode",
        "regressions/engine_frames",
    ];
    for dir in dirs {
        let Ok(entries) = std::fs::read_dir(root.join(dir)) else { continue };
        for entry in entries {
            let path = entry.unwrap().path();
            if !path.is_file() {
                continue;
            }
            let bytes = std::fs::read(&path).unwrap();
            if let Ok(m) = decode(&bytes, DEFAULT_MAX_FRAME) {
                assert_eq!(decode(&m.encode(), DEFAULT_MAX_FRAME).unwrap(), m, "{}", path.display());
            }
            let mut e = Engine::new(EngineConfig::new("relay"), Box::new(OpenPolicy), "s".into());
            let conn = ConnId(1);
            e.handle(0, Input::Connected { conn, side: Side::Receiver });
            let join =
                Message::Join { sender_id: "p".into(), supported_protocol_versions: vec!["1".into()], metadata: None };
            e.handle(1, Input::Frame { conn, frame: join.encode() });
            e.handle(2, Input::Frame { conn, frame: bytes });
            replayed += 1;
        }
    }
    assert!(replayed >= 10, "the seed corpora are there ({replayed} files)");
}
