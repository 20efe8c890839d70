//! Saves that merge, through the ffi API: a form saved from a stale read keeps what a colleague
//! did meanwhile (issue 13). Two stores, synced by copying documents as sync would.
#![allow(clippy::unwrap_used)]

mod common;

use common::{open, send};
use futures::executor::block_on;
use liaison_core::model::{Activity, Channel, FollowUp, KolProfile, PlanItem, TaskStatus};
use liaison_ffi::LiaisonError;

#[test]
fn a_stale_plan_form_keeps_the_colleagues_title_activity_and_notes() {
    let dir = tempfile::tempdir().unwrap();
    let (alice, bob) = (open(&dir, "alice"), open(&dir, "bob"));
    let kol = block_on(alice.create_kol(KolProfile::new("Dr. A", "Osaka"))).unwrap();
    let mut draft = common::new_plan(kol, "FY27");
    draft.notes = autosurgeon::Text::with_value("Agenda");
    let id = block_on(alice.create_plan(draft)).unwrap();
    send(&alice, &bob, &id);

    // Alice opens the plan's form.
    let form = block_on(alice.get_plan(id.clone())).unwrap();

    // Meanwhile Bob retitles, adds an activity and types into the notes; it reaches Alice.
    let read = block_on(bob.get_plan(id.clone())).unwrap();
    let mut edited = read.plan;
    edited.title = "FY27, Bob's title".into();
    edited.activities.push(Activity {
        id: "bob-visit".into(),
        description: "Visit in March".into(),
        owner: "bob".into(),
        due: None,
        status: TaskStatus::Open,
    });
    block_on(bob.update_plan(id.clone(), edited, read.version)).unwrap();
    block_on(bob.splice_plan_notes(id.clone(), 6, 0, " for Bob".into())).unwrap();
    send(&bob, &alice, &id);

    // Alice saves her stale form with one objective added.
    let mut mine = form.plan;
    mine.objectives.push(PlanItem { id: "alice-1".into(), text: "Alice's objective".into() });
    block_on(alice.update_plan(id.clone(), mine, form.version)).unwrap();

    let plan = block_on(alice.get_plan(id.clone())).unwrap().plan;
    assert_eq!(plan.title, "FY27, Bob's title", "Bob's title survives");
    assert_eq!(plan.activities.iter().map(|a| a.id.as_str()).collect::<Vec<_>>(), ["bob-visit"]);
    assert_eq!(plan.notes.as_str(), "Agenda for Bob", "Bob's text survives");
    assert_eq!(plan.objectives.iter().map(|o| o.text.as_str()).collect::<Vec<_>>(), ["Alice's objective"]);
    send(&alice, &bob, &id);
    assert_eq!(block_on(bob.get_plan(id)).unwrap().plan, plan, "both devices agree");
}

#[test]
fn a_stale_interaction_form_keeps_the_colleagues_summary_and_location() {
    let dir = tempfile::tempdir().unwrap();
    let (alice, bob) = (open(&dir, "alice"), open(&dir, "bob"));
    let kol = block_on(alice.create_kol(KolProfile::new("Dr. A", "Osaka"))).unwrap();
    let mut draft = common::new_interaction(kol, 1_700_000_000_000, Channel::InPerson);
    draft.summary = autosurgeon::Text::with_value("Discussed the trial.");
    let id = block_on(alice.create_interaction(draft)).unwrap();
    send(&alice, &bob, &id);

    let form = block_on(alice.get_interaction(id.clone())).unwrap();

    let read = block_on(bob.get_interaction(id.clone())).unwrap();
    let mut edited = read.interaction;
    edited.summary = autosurgeon::Text::with_value("Discussed the trial and its endpoints.");
    edited.location = Some("Ward 3".into());
    block_on(bob.update_interaction(id.clone(), edited, read.version)).unwrap();
    send(&bob, &alice, &id);

    // Alice's stale form adds a follow-up and the end time.
    let mut mine = form.interaction;
    mine.end = Some(1_700_000_900_000);
    mine.follow_ups.push(FollowUp {
        id: "send-paper".into(),
        description: "Send the paper".into(),
        owner: "alice".into(),
        due: None,
        status: TaskStatus::Open,
    });
    block_on(alice.update_interaction(id.clone(), mine, form.version)).unwrap();

    let visit = block_on(alice.get_interaction(id)).unwrap().interaction;
    assert_eq!(visit.summary.as_str(), "Discussed the trial and its endpoints.", "Bob's summary survives");
    assert_eq!(visit.location.as_deref(), Some("Ward 3"), "Bob's location survives");
    assert_eq!(visit.end, Some(1_700_000_900_000));
    assert_eq!(visit.follow_ups.iter().map(|f| f.id.as_str()).collect::<Vec<_>>(), ["send-paper"]);
}

#[test]
fn a_version_from_another_record_is_stale_and_junk_is_invalid() {
    let dir = tempfile::tempdir().unwrap();
    let alice = open(&dir, "alice");
    let kol = block_on(alice.create_kol(KolProfile::new("Dr. A", "Osaka"))).unwrap();
    let a = block_on(alice.create_plan(common::new_plan(kol.clone(), "a"))).unwrap();
    let b = block_on(alice.create_plan(common::new_plan(kol, "b"))).unwrap();
    let (read_a, read_b) = (block_on(alice.get_plan(a.clone())).unwrap(), block_on(alice.get_plan(b)).unwrap());
    let err = block_on(alice.update_plan(a.clone(), read_a.plan.clone(), read_b.version)).unwrap_err();
    assert!(matches!(err, LiaisonError::StaleVersion(_)), "{err:?}");
    let err = block_on(alice.update_plan(a, read_a.plan, "not a version".into())).unwrap_err();
    assert!(matches!(err, LiaisonError::InvalidInput(_)), "{err:?}");
}
