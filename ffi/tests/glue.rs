//! The glue the apps depend on, tested from Rust: whole-record updates still merge per character,
//! fields only core operations may change survive an update, indexes are UTF-16, errors are typed.
#![allow(clippy::unwrap_used)]

mod common;

use common::{open, send};
use futures::executor::block_on;
use liaison_core::model::KolProfile;
use liaison_ffi::{LiaisonError, LiaisonStore, SharedTextField, StoreConfig};

#[test]
fn a_whole_plan_update_merges_per_character_with_a_concurrent_splice() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (open(&dir, "alice"), open(&dir, "bob"));
    let kol = block_on(a.create_kol(KolProfile::new("Dr. A", "Osaka"))).unwrap();
    let mut plan = common::new_plan(kol, "FY27");
    plan.notes = autosurgeon::Text::with_value("hello world");
    let id = block_on(a.create_plan(plan)).unwrap();
    send(&a, &b, &id);

    // Alice's app sends the whole record back with one word added; Bob splices at the end.
    let read = block_on(a.get_plan(id.clone())).unwrap();
    let mut edited = read.plan;
    edited.notes = autosurgeon::Text::with_value("hello brave world");
    block_on(a.update_plan(id.clone(), edited, read.version)).unwrap();
    block_on(b.splice_plan_notes(id.clone(), 11, 0, "!".into())).unwrap();
    send(&a, &b, &id);
    send(&b, &a, &id);
    assert_eq!(block_on(a.get_plan(id.clone())).unwrap().plan.notes.as_str(), "hello brave world!");
    assert_eq!(block_on(b.get_plan(id)).unwrap().plan.notes.as_str(), "hello brave world!");
}

#[test]
fn splices_and_cursors_count_utf16_units() {
    let dir = tempfile::tempdir().unwrap();
    let a = open(&dir, "alice");
    let kol = block_on(a.create_kol(KolProfile::new("Dr. A", "Osaka"))).unwrap();
    let id = block_on(a.create_plan(common::new_plan(kol, "FY27"))).unwrap();
    block_on(a.splice_plan_notes(id.clone(), 0, 0, "😀患者 notes".into())).unwrap();
    // "😀" is two UTF-16 units, "患" and "者" one each: index 4 is the space.
    let cursor = block_on(a.plan_notes_cursor(id.clone(), 4)).unwrap();
    block_on(a.splice_plan_notes(id.clone(), 2, 2, "KOL".into())).unwrap();
    assert_eq!(block_on(a.get_plan(id.clone())).unwrap().plan.notes.as_str(), "😀KOL notes");
    assert_eq!(
        block_on(a.plan_notes_cursor_position(id.clone(), cursor)).unwrap(),
        5,
        "the cursor stayed on the space"
    );
    let end = block_on(a.plan_notes_cursor(id.clone(), 11)).unwrap();
    block_on(a.splice_plan_notes(id.clone(), 11, 0, " +".into())).unwrap();
    assert_eq!(block_on(a.plan_notes_cursor_position(id.clone(), end)).unwrap(), 13, "an end cursor follows the end");
    assert!(matches!(block_on(a.splice_plan_notes(id.clone(), 1, 0, "x".into())), Err(LiaisonError::InvalidInput(_))));
    assert!(matches!(block_on(a.splice_plan_notes(id.clone(), 0, 99, "".into())), Err(LiaisonError::InvalidInput(_))));
    assert!(matches!(block_on(a.plan_notes_cursor_position(id, "garbage".into())), Err(LiaisonError::InvalidInput(_))));
}

/// Indexes, counts and timeouts are signed in the API (Kotlin's and Swift's `Int`, not `UInt`):
/// a negative one is `InvalidInput`, and changes nothing.
#[test]
fn negative_indexes_counts_and_timeouts_are_invalid_input() {
    let dir = tempfile::tempdir().unwrap();
    let a = open(&dir, "alice");
    let kol = block_on(a.create_kol(KolProfile::new("Dr. A", "Osaka"))).unwrap();
    let id = block_on(a.create_plan(common::new_plan(kol, "FY27"))).unwrap();
    block_on(a.splice_plan_notes(id.clone(), 0, 0, "notes".into())).unwrap();
    let invalid =
        |r: Result<_, LiaisonError>| matches!(r, Err(LiaisonError::InvalidInput(m)) if m.contains("negative"));
    assert!(invalid(block_on(a.splice_plan_notes(id.clone(), -1, 0, "x".into())).map(drop)), "a negative index");
    assert!(invalid(block_on(a.splice_plan_notes(id.clone(), 0, -1, "x".into())).map(drop)), "a negative delete count");
    assert!(invalid(
        block_on(a.splice_text(id.clone(), SharedTextField::PlanNotes, i32::MIN, 0, "x".into())).map(drop)
    ));
    assert!(invalid(block_on(a.plan_notes_cursor(id.clone(), -1)).map(drop)), "a cursor at a negative index");
    assert_eq!(block_on(a.get_plan(id)).unwrap().plan.notes.as_str(), "notes", "nothing changed");
    assert!(invalid(block_on(a.wait_until_synced(-1)).map(drop)), "a negative timeout");
    assert!(invalid(block_on(a.wait_for_first_sync(-5)).map(drop)));
}

#[test]
fn updates_cannot_unlock_or_unmerge() {
    let dir = tempfile::tempdir().unwrap();
    let a = open(&dir, "alice");
    let kol = block_on(a.create_kol(KolProfile::new("Dr. A", "Osaka"))).unwrap();
    let dup = block_on(a.create_kol(KolProfile::new("Dr A.", "Osaka"))).unwrap();
    block_on(a.merge_kols(kol.clone(), dup.clone())).unwrap();
    let read = block_on(a.get_kol(kol.clone())).unwrap();
    let mut p = read.profile;
    p.merged_from.clear();
    p.specialty = Some("Oncology".into());
    block_on(a.update_kol(kol.clone(), p, read.version)).unwrap();
    let after = block_on(a.get_kol(kol.clone())).unwrap().profile;
    assert_eq!(after.specialty.as_deref(), Some("Oncology"));
    assert_eq!(after.merged_from, vec![dup], "merge links are kept");

    let visit =
        block_on(a.create_interaction(common::new_interaction(kol, 1, liaison_core::model::Channel::Phone))).unwrap();
    block_on(a.submit(visit.clone())).unwrap();
    let read = block_on(a.get_interaction(visit.clone())).unwrap();
    let mut draft = read.interaction;
    draft.status = liaison_core::model::RecordStatus::Draft;
    assert!(matches!(block_on(a.update_interaction(visit.clone(), draft, read.version)), Err(LiaisonError::Locked(_))));
    assert!(matches!(block_on(a.submit(visit)), Err(LiaisonError::Locked(_))));
}

#[test]
fn errors_are_typed_and_name_no_values() {
    let dir = tempfile::tempdir().unwrap();
    let a = open(&dir, "alice");
    assert!(matches!(block_on(a.get_kol("nope".into())), Err(LiaisonError::InvalidInput(_))));
    let kol = block_on(a.create_kol(KolProfile::new("Dr. Secret Name", "Osaka"))).unwrap();
    let e = block_on(a.get_plan(kol.clone())).unwrap_err();
    assert!(matches!(e, LiaisonError::WrongKind(_)), "{e:?}");
    assert!(!e.to_string().contains("Secret"));
    let missing = liaison_core::DocumentId::random().to_string();
    assert!(matches!(block_on(a.get_kol(missing)), Err(LiaisonError::NotFound(_))));
    assert!(matches!(block_on(a.submit(kol)), Err(LiaisonError::WrongKind(_))));
    let err = block_on(LiaisonStore::open(StoreConfig {
        path: dir.path().join("x").display().to_string(),
        tenant: " ".into(),
        user: "u".into(),
        device: "d".into(),
        role: liaison_core::Role::Msl,
        team: "t".into(),
    }))
    .unwrap_err();
    assert!(matches!(err, LiaisonError::InvalidInput(_)));
}
