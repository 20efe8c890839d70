//! Each screen's answer after every kind of write: create, update, status change, a follow-up
//! completed, an interaction moved to another KOL, merges, removals, and documents arriving by
//! sync on a device.

#![allow(clippy::unwrap_used)]

use std::sync::Arc;

use super::*;
use crate::model::{
    Activity, EngagementPlan, FollowUp, Interaction, KolProfile, MedicalInformationRequest, MedicalInsight,
    PrivacyState, RequestOrigin,
};
use crate::storage::MemoryKv;
use crate::store::{ManualClock, StoreOptions, SyncWrite};
use crate::{Identity, Role};

const T0: i64 = 1_700_000_000_000;
const DAY: i64 = 86_400_000;

fn device(user: &str, role: Role) -> (DocStore, Arc<ManualClock>) {
    let clock = Arc::new(ManualClock::new(T0));
    let who = Identity { tenant: "t".into(), user: user.into(), device: format!("{user}-d"), role, install: [4; 8] };
    let store = DocStore::with_kv(Arc::new(MemoryKv::new()), who, clock.clone(), StoreOptions::default()).unwrap();
    (store, clock)
}

fn kol(store: &DocStore, name: &str) -> DocumentId {
    store.create("east", &KolProfile::new(name, "Univ")).unwrap()
}

fn follow_up(id: &str, owner: &str, due: Option<i64>) -> FollowUp {
    FollowUp { id: id.into(), description: format!("do {id}"), owner: owner.into(), due, status: TaskStatus::Open }
}

fn interaction(store: &DocStore, kol: &DocumentId, start: i64, follow_ups: Vec<FollowUp>) -> DocumentId {
    store.create("east", &Interaction { follow_ups, ..Interaction::new(kol, start, Channel::Video) }).unwrap()
}

fn mir(store: &DocStore, kol: &DocumentId) -> DocumentId {
    let request = MedicalInformationRequest {
        kol_id: kol.to_string(),
        interaction_id: None,
        question: "q".into(),
        products: Vec::new(),
        origin: RequestOrigin::Unsolicited,
        origin_detail: String::new(),
        recipient: "r".into(),
        delivery_method: crate::model::DeliveryMethod::Email,
        answer: Default::default(),
        signature: None,
        fulfilment: Fulfilment::Open,
        status: RecordStatus::Draft,
        submission: None,
        unlocks: Vec::new(),
    };
    store.create("east", &request).unwrap()
}

fn ids<T>(rows: &[T], id: impl Fn(&T) -> DocumentId) -> Vec<DocumentId> {
    rows.iter().map(id).collect()
}

fn items(rows: &[TaskRow]) -> Vec<&str> {
    rows.iter().map(|r| r.item.as_str()).collect()
}

#[test]
fn a_kols_interactions_follow_edits_submission_follow_ups_moves_and_removals() {
    let (s, clock) = device("sato", Role::Admin);
    let (a, b) = (kol(&s, "Dr. A"), kol(&s, "Dr. B"));
    let old = interaction(&s, &a, T0, vec![follow_up("f1", "sato", Some(T0)), follow_up("f2", "sato", None)]);
    let new = interaction(&s, &a, T0 + DAY, vec![]);
    let rows = s.interactions_of_kol(&a).unwrap();
    assert_eq!(ids(&rows, |r| r.id), [new, old], "newest first");
    let first = &rows[1];
    assert_eq!((first.kol, first.start, first.channel), (a, T0, Channel::Video));
    assert_eq!((first.status, first.open_follow_ups, first.author.as_deref()), (RecordStatus::Draft, 2, Some("sato")));

    // An edit of the start reorders; completing a follow-up counts one fewer open.
    s.update(&old, |i: &mut Interaction| {
        i.start = T0 + 2 * DAY;
        i.follow_ups[0].status = TaskStatus::Done;
    })
    .unwrap();
    let rows = s.interactions_of_kol(&a).unwrap();
    assert_eq!(ids(&rows, |r| r.id), [old, new]);
    assert_eq!((rows[0].start, rows[0].open_follow_ups), (T0 + 2 * DAY, 1));

    // Submitted: its status, and the submitter as author.
    clock.advance(1);
    s.submit::<Interaction>(&old).unwrap();
    assert_eq!(s.interactions_of_kol(&a).unwrap()[0].status, RecordStatus::Submitted);
    s.unlock::<Interaction>(&old, "typo").unwrap();
    assert_eq!(s.interactions_of_kol(&a).unwrap()[0].status, RecordStatus::Draft);

    // Moved to another KOL: gone from the first list, in the second.
    s.update(&new, |i: &mut Interaction| i.kol_id = b.to_string()).unwrap();
    assert_eq!(ids(&s.interactions_of_kol(&a).unwrap(), |r| r.id), [old]);
    assert_eq!(ids(&s.interactions_of_kol(&b).unwrap(), |r| r.id), [new]);
    assert_eq!(s.interactions_of_kol(&b).unwrap()[0].kol, b);

    // Erased, and removed for access: gone.
    s.delete(&old).unwrap();
    assert!(s.remove_for_access(&new).unwrap());
    assert!(s.interactions_of_kol(&a).unwrap().is_empty() && s.interactions_of_kol(&b).unwrap().is_empty());
    assert!(s.kv.scan_prefix(keys::SCREEN_PREFIX).unwrap().is_empty(), "no screen entry left behind");
}

#[test]
fn a_winners_interactions_and_last_date_include_its_merged_losers() {
    let (s, _) = device("sato", Role::Msl);
    let (winner, loser) = (kol(&s, "Dr. A"), kol(&s, "Dr. A."));
    let on_winner = interaction(&s, &winner, T0, vec![]);
    let on_loser = interaction(&s, &loser, T0 + DAY, vec![]);
    s.merge_kols(&winner, &loser).unwrap();
    let expected = s.records_for_kol(&winner, Kind::Interaction).unwrap();
    let mut got = ids(&s.interactions_of_kol(&winner).unwrap(), |r| r.id);
    assert_eq!(got, [on_loser, on_winner], "newest first across both profiles");
    got.sort();
    assert_eq!(got, expected, "the same records as records_for_kol");
    assert_eq!(s.interactions_of_kol(&loser).unwrap().len(), 2, "a loser resolves to its winner");
    let listed = s.list_kols().unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].last_interaction, Some(T0 + DAY), "the loser's newer interaction counts");
}

#[test]
fn the_kol_list_carries_the_profile_fields_and_the_newest_interaction() {
    let (s, _) = device("sato", Role::Msl);
    let (a, b) = (kol(&s, "Dr. A"), kol(&s, "Dr. B"));
    s.update(&a, |p: &mut KolProfile| {
        p.contact.do_not_contact = true;
        p.privacy = PrivacyState::OptedOut;
        p.tier = Some("1".into());
        p.therapeutic_areas = vec!["oncology".into()];
    })
    .unwrap();
    let row = |id: DocumentId| s.list_kols().unwrap().into_iter().find(|k| k.id == id).unwrap();
    let listed = row(a);
    assert!(listed.do_not_contact);
    assert_eq!((listed.privacy, listed.tier.as_deref()), (PrivacyState::OptedOut, Some("1")));
    assert_eq!((listed.therapeutic_areas.as_slice(), listed.last_interaction), (&["oncology".to_owned()][..], None));
    assert_eq!(s.search_kols("dr. a").unwrap()[0].tier.as_deref(), Some("1"), "search returns the same rows");

    let older = interaction(&s, &a, T0, vec![]);
    let newer = interaction(&s, &a, T0 + DAY, vec![]);
    assert_eq!(row(a).last_interaction, Some(T0 + DAY));
    s.update(&newer, |i: &mut Interaction| i.kol_id = b.to_string()).unwrap();
    assert_eq!((row(a).last_interaction, row(b).last_interaction), (Some(T0), Some(T0 + DAY)), "moved");
    s.delete(&older).unwrap();
    assert_eq!(row(a).last_interaction, None, "removed");
}

#[test]
fn my_open_tasks_due_before_a_date_come_from_follow_ups_and_plan_activities() {
    let (s, _) = device("sato", Role::Msl);
    let a = kol(&s, "Dr. A");
    let it = interaction(
        &s,
        &a,
        T0,
        vec![
            follow_up("overdue", "sato", Some(T0 - DAY)),
            follow_up("this-week", "sato", Some(T0 + 3 * DAY)),
            follow_up("next-month", "sato", Some(T0 + 30 * DAY)),
            follow_up("someday", "sato", None),
            follow_up("not-mine", "tanaka", Some(T0)),
        ],
    );
    let mut plan = EngagementPlan::new(&a, "FY27");
    let activity = |id: &str, due| Activity {
        id: id.into(),
        description: "visit".into(),
        owner: "sato".into(),
        due,
        status: TaskStatus::InProgress,
    };
    plan.activities = vec![activity("plan-visit", Some(T0 + DAY))];
    let plan = s.create("east", &plan).unwrap();

    let week = s.open_tasks_due_before("sato", T0 + 7 * DAY).unwrap();
    assert_eq!(items(&week), ["overdue", "plan-visit", "this-week"], "soonest first, overdue included");
    let visit = &week[1];
    assert_eq!((visit.record, visit.kind, visit.kol), (plan, Kind::EngagementPlan, Some(a)));
    assert_eq!((visit.status, visit.due, visit.owner.as_str()), (TaskStatus::InProgress, Some(T0 + DAY), "sato"));
    assert_eq!(week[0].description, "do overdue");
    assert_eq!(items(&s.undated_open_tasks("sato").unwrap()), ["someday"]);
    assert_eq!(items(&s.open_tasks_due_before("tanaka", T0 + DAY).unwrap()), ["not-mine"]);
    assert!(s.open_tasks_due_before("sato", T0 - DAY).unwrap().is_empty(), "before, not at");

    // Done, handed over, dated: each moves.
    s.update(&it, |i: &mut Interaction| {
        i.follow_ups[0].status = TaskStatus::Done;
        i.follow_ups[1].owner = "tanaka".into();
        i.follow_ups[3].due = Some(T0 + 2 * DAY);
    })
    .unwrap();
    s.update(&plan, |p: &mut EngagementPlan| p.activities[0].status = TaskStatus::Cancelled).unwrap();
    assert_eq!(items(&s.open_tasks_due_before("sato", T0 + 7 * DAY).unwrap()), ["someday"]);
    assert!(s.undated_open_tasks("sato").unwrap().is_empty());
    assert_eq!(items(&s.open_tasks_due_before("tanaka", T0 + 7 * DAY).unwrap()), ["not-mine", "this-week"]);

    s.delete(&it).unwrap();
    assert!(s.open_tasks_due_before("tanaka", T0 + 7 * DAY).unwrap().is_empty());
}

#[test]
fn open_requests_are_those_not_answered_or_closed_oldest_first() {
    let (s, clock) = device("sato", Role::Msl);
    let a = kol(&s, "Dr. A");
    let first = mir(&s, &a);
    clock.advance(1_000);
    let second = mir(&s, &a);
    let rows = s.open_mirs().unwrap();
    assert_eq!(ids(&rows, |r| r.id), [first, second]);
    assert_eq!((rows[0].kol, rows[0].fulfilment, rows[0].created), (Some(a), Fulfilment::Open, Some(T0)));
    s.update(&first, |m: &mut MedicalInformationRequest| m.fulfilment = Fulfilment::SentToMedicalInformation).unwrap();
    s.update(&second, |m: &mut MedicalInformationRequest| m.fulfilment = Fulfilment::Answered).unwrap();
    let rows = s.open_mirs().unwrap();
    assert_eq!(ids(&rows, |r| r.id), [first]);
    assert_eq!(rows[0].fulfilment, Fulfilment::SentToMedicalInformation);
    s.submit::<MedicalInformationRequest>(&first).unwrap();
    assert_eq!(s.open_mirs().unwrap()[0].status, RecordStatus::Submitted, "submitted and still open");
    s.remove_for_access(&first).unwrap();
    assert!(s.open_mirs().unwrap().is_empty());
}

#[test]
fn drafts_are_the_unsubmitted_records_that_lock_by_author() {
    let (s, clock) = device("sato", Role::Admin);
    let a = kol(&s, "Dr. A");
    let it = interaction(&s, &a, T0, vec![]);
    clock.advance(1);
    let insight = s.create("east", &MedicalInsight::new("x", &[a])).unwrap();
    clock.advance(1);
    let request = mir(&s, &a);
    s.create("east", &EngagementPlan::new(&a, "plans never lock")).unwrap();
    let drafts = s.drafts().unwrap();
    assert_eq!(ids(&drafts, |r| r.id), [request, insight, it], "newest first; no profile or plan");
    assert_eq!((drafts[1].kind, drafts[1].kols.as_slice()), (Kind::MedicalInsight, &[a][..]));
    assert_eq!(drafts[2].author.as_deref(), Some("sato"));
    assert_eq!(s.drafts_of("sato").unwrap().len(), 3);
    assert!(s.drafts_of("tanaka").unwrap().is_empty());
    s.submit_any(&insight).unwrap();
    assert_eq!(ids(&s.drafts().unwrap(), |r| r.id), [request, it]);
    s.unlock_any(&insight, "fix").unwrap();
    assert_eq!(s.drafts().unwrap().len(), 3, "unlocked is a draft again");
}

#[test]
fn documents_received_by_sync_on_a_device_are_on_its_screens() {
    let (sato, _) = device("sato", Role::Msl);
    let (tanaka, _) = device("tanaka", Role::Msl);
    let a = kol(&sato, "Dr. A");
    let it = interaction(&sato, &a, T0, vec![follow_up("f", "tanaka", Some(T0))]);
    let request = mir(&sato, &a);
    let saved: Vec<(DocumentId, Vec<u8>)> = [a, it, request].iter().map(|id| (*id, sato.export(id).unwrap())).collect();
    let writes: Vec<SyncWrite<'_>> = saved
        .iter()
        .map(|(doc, bytes)| SyncWrite { doc: *doc, changes: bytes, heads: &[], sync_states: &[], base: None })
        .collect();
    assert!(tanaka.apply_sync_group(&writes).unwrap().iter().all(Result::is_ok));
    assert_eq!(ids(&tanaka.interactions_of_kol(&a).unwrap(), |r| r.id), [it]);
    assert_eq!(tanaka.interactions_of_kol(&a).unwrap()[0].author.as_deref(), Some("sato"));
    assert_eq!(items(&tanaka.open_tasks_due_before("tanaka", T0 + 1).unwrap()), ["f"]);
    assert_eq!(ids(&tanaka.open_mirs().unwrap(), |r| r.id), [request]);
    assert_eq!(tanaka.list_kols().unwrap()[0].last_interaction, Some(T0));

    // A later change, one message at a time: the follow-up is done.
    let before = sato.load(&it).unwrap().get_heads();
    sato.update(&it, |i: &mut Interaction| i.follow_ups[0].status = TaskStatus::Done).unwrap();
    tanaka.apply_sync_changes(&it, &sato.changes_since(&it, &before).unwrap(), &[]).unwrap();
    assert!(tanaka.open_tasks_due_before("tanaka", T0 + 1).unwrap().is_empty());
    assert_eq!(tanaka.interactions_of_kol(&a).unwrap()[0].open_follow_ups, 0);

    // Discarding a refused change takes its entries back out.
    let refused_base = tanaka.load(&it).unwrap().get_heads();
    tanaka.update(&it, |i: &mut Interaction| i.kol_id = DocumentId::from_bytes([9; 16]).to_string()).unwrap();
    let refused: Vec<_> = tanaka.load(&it).unwrap().get_heads();
    assert!(tanaka.interactions_of_kol(&a).unwrap().is_empty());
    assert_eq!(tanaka.discard_changes(&it, &refused).unwrap(), 1);
    assert_eq!(tanaka.load(&it).unwrap().get_heads(), refused_base);
    assert_eq!(ids(&tanaka.interactions_of_kol(&a).unwrap(), |r| r.id), [it]);

    // Submitted here: the submitter is its author now.
    tanaka.submit::<Interaction>(&it).unwrap();
    assert_eq!(tanaka.interactions_of_kol(&a).unwrap()[0].author.as_deref(), Some("tanaka"));
}

#[test]
fn a_store_without_screen_indexes_writes_none_and_answers_empty() {
    let who =
        Identity { tenant: "t".into(), user: "relay".into(), device: "r".into(), role: Role::Admin, install: [4; 8] };
    let kv = Arc::new(MemoryKv::new());
    let options = StoreOptions { screen_indexes: false, ..StoreOptions::default() };
    let s = DocStore::with_kv(kv.clone(), who, Arc::new(ManualClock::new(T0)), options).unwrap();
    let a = kol(&s, "Dr. A");
    interaction(&s, &a, T0, vec![follow_up("f", "relay", Some(T0))]);
    assert!(s.kv.scan_prefix(keys::SCREEN_PREFIX).unwrap().is_empty());
    assert!(s.interactions_of_kol(&a).unwrap().is_empty());
    assert_eq!(s.list_kols().unwrap()[0].last_interaction, None);
    assert_eq!(s.stored_index_version().unwrap(), None, "nothing to version");
}

#[test]
fn a_damaged_back_reference_blocks_no_write_or_removal() {
    let (s, _) = device("sato", Role::Msl);
    let a = kol(&s, "Dr. A");
    let it = interaction(&s, &a, T0, vec![]);
    s.kv.put(&keys::screen_backref(&it), b"\xff not cbor").unwrap();
    s.update(&it, |i: &mut Interaction| i.start = T0 + DAY).unwrap();
    assert_eq!(s.interactions_of_kol(&a).unwrap()[0].start, T0 + DAY, "the new entry is written");
    s.kv.put(&keys::screen_backref(&it), b"\xff not cbor").unwrap();
    s.delete(&it).unwrap();
    assert_eq!(s.kv.get(&keys::screen_backref(&it)).unwrap(), None);
}
