//! The in-process change feed ([`DocStore::subscribe`]): why each write says a document changed.

#![allow(clippy::unwrap_used)]

use std::sync::mpsc::Receiver;

use super::test_stores::{heads, kol, memory_store, plan, retitle, sync_write};
use super::{ChangeReason, DocChange};
use crate::DocumentId;
use crate::storage::Batch;

fn reasons(events: &Receiver<DocChange>) -> Vec<(DocumentId, ChangeReason, bool)> {
    events.try_iter().map(|e| (e.id, e.reason, e.deleted)).collect()
}

#[test]
fn a_document_is_created_then_updated_locally() {
    let (store, _) = memory_store("t");
    let events = store.subscribe();
    let id = plan(&store, "east", "a");
    retitle(&store, &id, "b");
    store.discard_changes(&id, &heads(&store, &id)).unwrap();
    assert_eq!(
        reasons(&events),
        [
            (id, ChangeReason::Created, false),
            (id, ChangeReason::UpdatedLocally, false),
            (id, ChangeReason::UpdatedLocally, false)
        ]
    );
}

#[test]
fn received_documents_are_created_then_updated_remotely_by_every_remote_path() {
    let (device, _) = memory_store("t");
    let (other, _) = memory_store("t");
    let a = plan(&device, "east", "a");
    let b = plan(&device, "east", "b");
    let events = other.subscribe();
    other.merge_remote(&a, &device.export(&a).unwrap()).unwrap();
    sync_write(&device, &other, &b, &[]);
    let (a_before, b_before) = (heads(&device, &a), heads(&device, &b));
    retitle(&device, &a, "a2");
    retitle(&device, &b, "b2");
    other.apply_sync_changes(&a, &device.changes_since(&a, &a_before).unwrap(), &[]).unwrap();
    sync_write(&device, &other, &b, &b_before);
    // The other store's own edit of a received document is local.
    retitle(&other, &a, "a3");
    assert_eq!(
        reasons(&events),
        [
            (a, ChangeReason::Created, false),
            (b, ChangeReason::Created, false),
            (a, ChangeReason::UpdatedRemotely, false),
            (b, ChangeReason::UpdatedRemotely, false),
            (a, ChangeReason::UpdatedLocally, false),
        ]
    );
}

#[test]
fn a_merge_reports_the_loser_merged_away_and_the_winner_updated() {
    let (store, _) = memory_store("t");
    let winner = kol(&store, "east", "Dr. A");
    let loser = kol(&store, "east", "Dr. A.");
    let events = store.subscribe();
    store.merge_kols(&winner, &loser).unwrap();
    let mut got = reasons(&events);
    got.sort_by_key(|(id, ..)| *id != loser);
    assert_eq!(got, [(loser, ChangeReason::MergedAway, false), (winner, ChangeReason::UpdatedLocally, false)]);
}

#[test]
fn deletes_are_erasures_and_access_removals_are_not() {
    let (store, _) = memory_store("t");
    let erased = plan(&store, "east", "a");
    let erased_with = plan(&store, "east", "b");
    let dropped = plan(&store, "east", "c");
    let events = store.subscribe();
    store.delete(&erased).unwrap();
    assert!(store.delete_with(&erased_with, Batch::new()).unwrap());
    assert!(store.remove_for_access(&dropped).unwrap());
    assert!(!store.remove_for_access(&dropped).unwrap(), "no longer stored");
    assert!(store.load(&dropped).is_err());
    assert_eq!(
        reasons(&events),
        [
            (erased, ChangeReason::Erased, true),
            (erased_with, ChangeReason::Erased, true),
            (dropped, ChangeReason::AccessRemoved, true)
        ]
    );
}
