//! The rebuild at open: a store written before the screen indexes (or by another derivation)
//! reopens with complete answers; a current store and a relay's open load no document.

#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use super::*;
use crate::model::{Channel, FollowUp, Interaction, KolProfile, TaskStatus};
use crate::storage::{KeyValue, KvStore, MemoryKv, StorageError};
use crate::store::index::StoredKolSummary;
use crate::store::{ManualClock, StoreOptions};
use crate::{Identity, Role};

const T0: i64 = 1_700_000_000_000;

/// A memory store counting chunk reads: each is a document load.
#[derive(Debug)]
struct LoadCountingKv {
    inner: MemoryKv,
    chunk_scans: AtomicUsize,
    /// Batches still allowed before every apply fails (the process "killed" mid-rebuild).
    applies_left: AtomicUsize,
}

impl Default for LoadCountingKv {
    fn default() -> Self {
        Self { inner: MemoryKv::new(), chunk_scans: AtomicUsize::new(0), applies_left: AtomicUsize::new(usize::MAX) }
    }
}

impl KvStore for LoadCountingKv {
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
        if prefix.starts_with(b"c/") {
            self.chunk_scans.fetch_add(1, Ordering::SeqCst);
        }
        self.inner.scan_prefix(prefix)
    }
    fn scan_page(&self, prefix: &[u8], after: Option<&[u8]>, max_bytes: usize) -> Result<Vec<KeyValue>, StorageError> {
        self.inner.scan_page(prefix, after, max_bytes)
    }
    fn apply(&self, batch: Batch) -> Result<(), StorageError> {
        if self.applies_left.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1)).is_err() {
            return Err(StorageError::Backend("killed".into()));
        }
        self.inner.apply(batch)
    }
    fn flush(&self) -> Result<(), StorageError> {
        self.inner.flush()
    }
}

fn open(kv: &Arc<LoadCountingKv>, screen_indexes: bool) -> DocStore {
    let who =
        Identity { tenant: "t".into(), user: "sato".into(), device: "d".into(), role: Role::Msl, install: [5; 8] };
    let options = StoreOptions { screen_indexes, ..StoreOptions::default() };
    DocStore::with_kv(kv.clone(), who, Arc::new(ManualClock::new(T0)), options).unwrap()
}

/// A KOL (do-not-contact, tier 1) with one interaction holding one open follow-up of sato's.
fn populate(store: &DocStore) -> (DocumentId, DocumentId) {
    let mut profile = KolProfile::new("Dr. A", "Univ");
    profile.contact.do_not_contact = true;
    profile.tier = Some("1".into());
    let kol = store.create("east", &profile).unwrap();
    let follow_up = FollowUp {
        id: "f".into(),
        description: "send paper".into(),
        owner: "sato".into(),
        due: Some(T0),
        status: TaskStatus::Open,
    };
    let it = store
        .create("east", &Interaction { follow_ups: vec![follow_up], ..Interaction::new(&kol, T0, Channel::Phone) })
        .unwrap();
    (kol, it)
}

/// What a store shows on its screens.
fn answers(store: &DocStore, kol: &DocumentId) -> (usize, usize, usize, bool, Option<String>, Option<i64>) {
    let listed = store.list_kols().unwrap();
    let row = listed.iter().find(|k| k.id == *kol).unwrap();
    (
        store.interactions_of_kol(kol).unwrap().len(),
        store.open_tasks_due_before("sato", T0 + 1).unwrap().len(),
        store.drafts().unwrap().len(),
        row.do_not_contact,
        row.tier.clone(),
        row.last_interaction,
    )
}

/// Turns a store's disk into what a build before the screen indexes left: no `x/`, no
/// `!index-v`, summaries without their new fields.
fn make_old(kv: &LoadCountingKv) {
    let mut batch = Batch::new();
    for (k, _) in kv.scan_prefix(keys::SCREEN_PREFIX).unwrap() {
        batch.delete(k);
    }
    batch.delete(keys::INDEX_VERSION);
    for (k, v) in kv.scan_prefix(keys::SUMMARY_PREFIX).unwrap() {
        let new: StoredKolSummary = minicbor::decode(&v).unwrap();
        let old = StoredKolSummary { do_not_contact: None, privacy: None, tier: None, therapeutic_areas: None, ..new };
        batch.put(k, encode(&old));
    }
    kv.apply(batch).unwrap();
}

#[test]
fn a_store_written_before_the_screen_indexes_reopens_with_complete_answers() {
    let kv = Arc::new(LoadCountingKv::default());
    let store = open(&kv, true);
    let (kol, _) = populate(&store);
    let complete = answers(&store, &kol);
    assert_eq!(complete, (1, 1, 1, true, Some("1".into()), Some(T0)));
    drop(store);
    make_old(&kv);
    let old = open(&kv, false);
    assert_eq!(answers(&old, &kol), (0, 0, 0, false, None, None), "the old disk really lacks them");
    drop(old);

    let loads = kv.chunk_scans.load(Ordering::SeqCst);
    let reopened = open(&kv, true);
    assert_eq!(kv.chunk_scans.load(Ordering::SeqCst) - loads, 2, "each document loaded once");
    assert_eq!(answers(&reopened, &kol), complete);
    assert_eq!(reopened.stored_index_version().unwrap(), Some(INDEX_VERSION));
}

#[test]
fn another_index_version_rebuilds_and_drops_entries_no_document_has() {
    let kv = Arc::new(LoadCountingKv::default());
    let store = open(&kv, true);
    let (kol, it) = populate(&store);
    drop(store);
    let stale = keys::screen_interaction(&kol, T0 - 1, &DocumentId::from_bytes([8; 16]));
    let mut batch = Batch::new();
    batch.put(stale.clone(), b"left by an older derivation".to_vec());
    batch.put(keys::INDEX_VERSION, (INDEX_VERSION - 1).to_be_bytes());
    kv.apply(batch).unwrap();

    let reopened = open(&kv, true);
    assert_eq!(kv.get(&stale).unwrap(), None);
    assert_eq!(reopened.interactions_of_kol(&kol).unwrap().iter().map(|r| r.id).collect::<Vec<_>>(), [it]);
    assert_eq!(reopened.stored_index_version().unwrap(), Some(INDEX_VERSION));
}

#[test]
fn a_current_store_and_a_relay_open_without_loading_a_document() {
    let kv = Arc::new(LoadCountingKv::default());
    let store = open(&kv, true);
    populate(&store);
    drop(store);
    let loads = kv.chunk_scans.load(Ordering::SeqCst);
    drop(open(&kv, true));
    assert_eq!(kv.chunk_scans.load(Ordering::SeqCst), loads, "the version is current");

    // A relay's store: no version, never rebuilt.
    make_old(&kv);
    drop(open(&kv, false));
    assert_eq!(kv.chunk_scans.load(Ordering::SeqCst), loads, "a relay loads nothing at open");
    assert!(kv.scan_prefix(keys::SCREEN_PREFIX).unwrap().is_empty());
    assert_eq!(kv.get(keys::INDEX_VERSION).unwrap(), None);
}

#[test]
fn a_damaged_document_is_skipped_by_the_rebuild_and_the_others_are_indexed() {
    let kv = Arc::new(LoadCountingKv::default());
    let store = open(&kv, true);
    let (kol, it) = populate(&store);
    let (_, broken) = populate(&store);
    drop(store);
    make_old(&kv);
    let chunk = kv.scan_prefix(&keys::chunk_prefix(&broken)).unwrap().remove(0).0;
    kv.put(&chunk, b"not a chunk").unwrap();

    let reopened = open(&kv, true);
    assert_eq!(reopened.interactions_of_kol(&kol).unwrap().iter().map(|r| r.id).collect::<Vec<_>>(), [it]);
    assert_eq!(reopened.stored_index_version().unwrap(), Some(INDEX_VERSION));
}

#[test]
fn the_index_version_names_the_enum_values_it_indexes() {
    use crate::model::{Fulfilment, PrivacyState};
    let names = |known: Vec<Option<&'static str>>| known.into_iter().map(Option::unwrap).collect::<Vec<_>>().join(",");
    let indexed = [
        names(Channel::known().iter().map(|c| c.name()).collect()),
        names(TaskStatus::known().iter().map(|c| c.name()).collect()),
        names(Fulfilment::known().iter().map(|c| c.name()).collect()),
        names(PrivacyState::known().iter().map(|c| c.name()).collect()),
    ];
    // A value added to one of these is indexed as "" (unknown) by every store written before:
    // bump INDEX_VERSION so they rebuild, then update this fixture.
    assert_eq!(
        (INDEX_VERSION, indexed.join(" | ")),
        (
            2,
            "in_person,phone,video,congress,email | open,in_progress,done,cancelled | \
             open,sent_to_medical_information,answered,closed | active,opted_out,anonymised"
                .to_owned()
        )
    );
}

/// What a build that could not read `id` left on disk: no kind, no lists, an `x/u/` entry.
fn make_unreadable_to_an_older_build(kv: &LoadCountingKv, store: &DocStore, id: &DocumentId) {
    let meta = store.read_meta(id).unwrap().unwrap();
    let kind = meta.kind().unwrap();
    let mut batch = Batch::new();
    for key in kv.scan_keys(keys::SCREEN_PREFIX).unwrap() {
        if keys::trailing_id(&key) == Some(*id) || key.windows(16).any(|w| w == id.as_bytes()) {
            batch.delete(key);
        }
    }
    batch.delete(keys::kind(kind, id));
    for kol in &meta.refs {
        batch.delete(keys::kol_ref(&kol.parse().unwrap(), kind, id));
    }
    batch.delete(keys::summary(id));
    batch.put(keys::meta(id), encode(&super::super::index::DocMeta { kind: None, refs: Vec::new(), ..meta }));
    screen::put_new_entries(&mut batch, id, &[screen::unreadable(Some("interaction"), Some(2))]);
    kv.apply(batch).unwrap();
}

#[test]
fn a_document_an_older_build_could_not_read_joins_its_lists_at_the_next_open() {
    let kv = Arc::new(LoadCountingKv::default());
    let store = open(&kv, true);
    let (kol, it) = populate(&store);
    make_unreadable_to_an_older_build(&kv, &store, &it);
    drop(store);
    let before = open(&kv, false);
    assert_eq!(before.unreadable_count().unwrap(), 1);
    assert!(before.list(crate::model::Kind::Interaction).unwrap().is_empty(), "the older build lists nothing");
    drop(before);

    let loads = kv.chunk_scans.load(Ordering::SeqCst);
    let upgraded = open(&kv, true);
    assert_eq!(kv.chunk_scans.load(Ordering::SeqCst) - loads, 1, "only the unreadable document is loaded");
    assert_eq!(upgraded.unreadable_count().unwrap(), 0);
    assert_eq!(upgraded.list(crate::model::Kind::Interaction).unwrap(), [it]);
    assert_eq!(upgraded.interactions_of_kol(&kol).unwrap().iter().map(|r| r.id).collect::<Vec<_>>(), [it]);
    assert_eq!(upgraded.open_tasks_due_before("sato", T0 + 1).unwrap().len(), 1);
}

#[test]
fn a_rebuild_interrupted_goes_on_where_it_stopped_at_the_next_open() {
    let kv = Arc::new(LoadCountingKv::default());
    let store = open(&kv, true);
    let (kol, _) = populate(&store);
    for i in 0..(DOCS_PER_BATCH * 2) {
        store.create("east", &KolProfile::new(format!("Dr. {i}"), "Univ")).unwrap();
    }
    let complete = answers(&store, &kol);
    let documents = store.all_documents().unwrap().len();
    drop(store);
    make_old(&kv);

    // Killed after the marker and one batch of documents.
    kv.applies_left.store(2, Ordering::SeqCst);
    assert!(
        DocStore::with_kv(
            kv.clone(),
            Identity { tenant: "t".into(), user: "sato".into(), device: "d".into(), role: Role::Msl, install: [5; 8] },
            Arc::new(ManualClock::new(T0)),
            StoreOptions::default(),
        )
        .is_err()
    );
    assert_eq!(kv.get(keys::INDEX_VERSION).unwrap(), None, "not done");
    kv.applies_left.store(usize::MAX, Ordering::SeqCst);

    let loads = kv.chunk_scans.load(Ordering::SeqCst);
    let reopened = open(&kv, true);
    let reloaded = kv.chunk_scans.load(Ordering::SeqCst) - loads;
    assert_eq!(reloaded, documents - DOCS_PER_BATCH, "the first batch is not loaded again");
    assert_eq!(answers(&reopened, &kol), complete);
    assert_eq!(reopened.list_kols().unwrap().len(), DOCS_PER_BATCH * 2 + 1);
    assert_eq!(reopened.stored_index_version().unwrap(), Some(INDEX_VERSION));
    assert_eq!(kv.get(keys::INDEX_REBUILD).unwrap(), None, "the marker goes with the version");
}
