//! An older build meeting a newer app's records: an enum value it does not know is read as
//! `Unknown`, listed, and saved back unchanged; a field it does not know survives its saves; a
//! record of a newer schema or an unknown kind is counted as unreadable, never silently lost.
//!
//! The "newer app" here writes raw automerge changes under its own actor, as a later build of
//! liaison would, and they reach the older device as a sync would bring them (`merge_remote`).
#![allow(clippy::unwrap_used)]

mod common;

use automerge::transaction::Transactable;
use automerge::{ActorId, AutoCommit, ObjId, ObjType, ReadDoc, ScalarValue, Value};
use common::device;
use liaison_core::model::*;
use liaison_core::store::StoreError;
use liaison_core::{DocStore, DocumentId, Role};

const T0: i64 = 1_700_000_000_000;

/// The document as the newer app holds it, writing under its own actor.
fn newer_app(store: &DocStore, id: &DocumentId) -> AutoCommit {
    let mut doc = AutoCommit::load(&store.export(id).unwrap()).unwrap();
    doc.set_actor(ActorId::from(&[0xAB; 16][..]));
    doc
}

fn map_at(doc: &AutoCommit, parent: &ObjId, key: &str) -> ObjId {
    match doc.get(parent, key).unwrap() {
        Some((Value::Object(ObjType::Map), id)) => id,
        other => panic!("{key} is not a map: {other:?}"),
    }
}

fn record(doc: &AutoCommit) -> ObjId {
    map_at(doc, &automerge::ROOT, "record")
}

fn first_follow_up(doc: &AutoCommit) -> ObjId {
    let list = match doc.get(record(doc), "follow_ups").unwrap() {
        Some((Value::Object(ObjType::List), id)) => id,
        other => panic!("no follow-ups: {other:?}"),
    };
    match doc.get(&list, 0).unwrap() {
        Some((Value::Object(ObjType::Map), id)) => id,
        other => panic!("no first follow-up: {other:?}"),
    }
}

fn text_at(doc: &AutoCommit, obj: &ObjId, key: &str) -> Option<String> {
    match doc.get(obj, key).unwrap() {
        Some((Value::Scalar(s), _)) => match s.as_ref() {
            ScalarValue::Str(v) => Some(v.to_string()),
            _ => None,
        },
        _ => None,
    }
}

fn interaction_with_follow_up(store: &DocStore) -> (DocumentId, DocumentId) {
    let kol = store.create("east", &KolProfile::new("Dr. A", "Univ")).unwrap();
    let follow_up = FollowUp {
        id: "f1".into(),
        description: "send the paper".into(),
        owner: "sato".into(),
        due: Some(T0 + 1_000),
        status: TaskStatus::Open,
    };
    let interaction = Interaction { follow_ups: vec![follow_up], ..Interaction::new(&kol, T0, Channel::InPerson) };
    (kol, store.create("east", &interaction).unwrap())
}

#[test]
fn a_newer_apps_values_are_listed_as_unknown_and_survive_an_older_apps_save() {
    let old = device("sato", "old-phone", Role::Msl);
    let (kol, id) = interaction_with_follow_up(&old);
    let (_, stale) = old.get_versioned::<Interaction>(&id).unwrap();

    // The newer app: an "sms" channel, a "blocked" follow-up, and fields the old build lacks.
    let mut newer = newer_app(&old, &id);
    let rec = record(&newer);
    newer.put(&rec, "channel", "sms").unwrap();
    newer.put(&rec, "priority", "high").unwrap();
    let item = first_follow_up(&newer);
    newer.put(&item, "status", "blocked").unwrap();
    newer.put(&item, "escalated_to", "medical director").unwrap();
    old.merge_remote(&id, &newer.save()).unwrap();

    // The older build reads on, and its screens show the record with unknown values.
    let read: Interaction = old.get(&id).unwrap();
    assert_eq!(read.channel, Channel::Unknown);
    assert_eq!(read.follow_ups[0].status, TaskStatus::Unknown);
    let rows = old.interactions_of_kol(&kol).unwrap();
    assert_eq!(rows.len(), 1, "listed, not dropped");
    assert_eq!(rows[0].channel, Channel::Unknown);
    assert_eq!(rows[0].open_follow_ups, 1, "a status it does not know counts as open");
    let tasks = old.open_tasks_due_before("sato", T0 + 2_000).unwrap();
    assert_eq!(tasks.len(), 1, "the blocked follow-up is still on sato's list");
    assert_eq!(tasks[0].status, TaskStatus::Unknown);

    // A save from a form read before the newer app's edit, and one from a fresh read.
    old.update_at(&id, &stale, |i: &mut Interaction| {
        i.summary = autosurgeon::Text::with_value("Discussed the phase III data.");
        i.follow_ups[0].description = "send the phase III paper".into();
    })
    .unwrap();
    old.update(&id, |i: &mut Interaction| i.location = Some("Kyoto".into())).unwrap();

    let after = newer_app(&old, &id);
    let rec = record(&after);
    let item = first_follow_up(&after);
    assert_eq!(text_at(&after, &rec, "channel").as_deref(), Some("sms"), "saved back unchanged");
    assert_eq!(text_at(&after, &rec, "priority").as_deref(), Some("high"), "a field it does not know is kept");
    assert_eq!(text_at(&after, &item, "status").as_deref(), Some("blocked"));
    assert_eq!(text_at(&after, &item, "escalated_to").as_deref(), Some("medical director"));
    assert_eq!(text_at(&after, &item, "description").as_deref(), Some("send the phase III paper"));
    let read: Interaction = old.get(&id).unwrap();
    assert_eq!(read.summary.as_str(), "Discussed the phase III data.");
    assert_eq!(read.location.as_deref(), Some("Kyoto"));

    // Choosing a value it knows replaces the unknown one.
    old.update(&id, |i: &mut Interaction| i.channel = Channel::Phone).unwrap();
    assert_eq!(text_at(&newer_app(&old, &id), &record(&newer_app(&old, &id)), "channel").as_deref(), Some("phone"));
}

#[test]
fn a_value_it_does_not_know_cannot_be_written_where_none_is_stored() {
    let store = device("sato", "phone", Role::Msl);
    let (kol, id) = interaction_with_follow_up(&store);
    let created = store.create("east", &Interaction::new(&kol, T0, Channel::Unknown));
    assert!(matches!(created, Err(StoreError::Model(ModelError::Invalid { .. }))), "{created:?}");

    let before = store.export(&id).unwrap();
    let added = store.update(&id, |i: &mut Interaction| {
        i.follow_ups.push(FollowUp {
            id: "f2".into(),
            description: "call back".into(),
            owner: "sato".into(),
            due: None,
            status: TaskStatus::Unknown,
        });
    });
    assert!(matches!(added, Err(StoreError::Model(ModelError::Invalid { .. }))), "{added:?}");
    assert_eq!(store.export(&id).unwrap(), before, "nothing written");
}

#[test]
fn records_of_a_newer_schema_or_an_unknown_kind_are_counted_not_lost() {
    let newer_store = device("suzuki", "new-phone", Role::Msl);
    let (_, schema_two) = interaction_with_follow_up(&newer_store);
    let (_, new_kind) = interaction_with_follow_up(&newer_store);
    let mut doc = newer_app(&newer_store, &schema_two);
    doc.put(automerge::ROOT, "schema", 2_u64).unwrap();
    let mut other = newer_app(&newer_store, &new_kind);
    other.put(automerge::ROOT, "kind", "kol_event").unwrap();

    let old = device("sato", "old-phone", Role::Msl);
    old.merge_remote(&schema_two, &doc.save()).unwrap();
    old.merge_remote(&new_kind, &other.save()).unwrap();

    assert!(old.list(Kind::Interaction).unwrap().is_empty(), "neither reads as an interaction here");
    let mut unreadable = old.unreadable().unwrap();
    unreadable.sort_by_key(|r| r.schema);
    assert_eq!(old.unreadable_count().unwrap(), 2);
    assert_eq!(
        (unreadable[0].id, unreadable[0].kind.as_deref(), unreadable[0].schema),
        (new_kind, Some("kol_event"), None)
    );
    assert_eq!(
        (unreadable[1].id, unreadable[1].kind.as_deref(), unreadable[1].schema),
        (schema_two, Some("interaction"), Some(2))
    );
    let got = old.get::<Interaction>(&schema_two);
    assert!(matches!(got, Err(StoreError::Model(ModelError::UnsupportedSchema(2)))), "{got:?}");
    // Kept and synced all the same: the document is whole on the older device.
    assert_eq!(AutoCommit::load(&old.export(&schema_two).unwrap()).unwrap().get_heads(), doc.get_heads());
}

#[test]
fn a_submitted_record_refuses_a_change_to_what_this_build_does_not_know_behind_a_legal_hold() {
    let store = device("sato", "phone", Role::Msl);
    let (_, id) = interaction_with_follow_up(&store);
    let mut newer = newer_app(&store, &id);
    let rec = record(&newer);
    newer.put(&rec, "channel", "sms").unwrap();
    newer.put(&rec, "priority", "high").unwrap();
    store.merge_remote(&id, &newer.save()).unwrap();
    store.submit::<Interaction>(&id).unwrap();
    let before = store.load(&id).unwrap();

    let hold = |edit: &dyn Fn(&mut AutoCommit)| {
        let mut doc = newer_app(&store, &id);
        let envelope = map_at(&doc, &automerge::ROOT, "envelope");
        doc.put(&envelope, "legal_hold", true).unwrap();
        edit(&mut doc);
        automerge::Automerge::load(&doc.save()).unwrap()
    };
    assert_eq!(check_locked_edit(&before, &hold(&|_| {})), Ok(()), "a legal hold alone passes");
    let channel = hold(&|doc| {
        let rec = record(doc);
        doc.put(&rec, "channel", "fax").unwrap();
    });
    assert_eq!(check_locked_edit(&before, &channel), Err(EditViolation::Locked), "sms to fax, both unknown here");
    let field = hold(&|doc| {
        let rec = record(doc);
        doc.put(&rec, "priority", "low").unwrap();
    });
    assert_eq!(check_locked_edit(&before, &field), Err(EditViolation::Locked), "a field this build does not know");
}

/// The envelope never changes after creation, and that holds for what this build does not know
/// too: a key added under it or under `created_by`, or the envelope replaced by an identical
/// copy, is refused (the typed comparison saw none of them). A legal hold set by someone allowed to stays the one change that passes.
#[test]
fn nothing_this_build_does_not_know_can_be_added_to_the_envelope() {
    let store = device("sato", "phone", Role::Msl);
    let (_, id) = interaction_with_follow_up(&store);
    let before = automerge::Automerge::load(&store.export(&id).unwrap()).unwrap();
    let tenant = store.envelope(&id).unwrap().tenant;
    let edited = |edit: &dyn Fn(&mut AutoCommit)| {
        let mut doc = newer_app(&store, &id);
        edit(&mut doc);
        automerge::Automerge::load(&doc.save()).unwrap()
    };
    let check = |after: &automerge::Automerge, role: Role| {
        check_update(&before, after, &RemoteWriter { tenant: &tenant, user: "sato", device: "phone", role })
    };
    let envelope = |doc: &AutoCommit| map_at(doc, &automerge::ROOT, "envelope");

    let added = edited(&|doc| {
        let env = envelope(doc);
        doc.put(&env, "region", "eu-west").unwrap();
    });
    assert_eq!(check(&added, Role::Admin), Err(EditViolation::EnvelopeChange), "a key under the envelope");
    let nested = edited(&|doc| {
        let by = map_at(doc, &envelope(doc), "created_by");
        doc.put(&by, "on_behalf_of", "someone").unwrap();
    });
    assert_eq!(check(&nested, Role::Admin), Err(EditViolation::EnvelopeChange), "a key under created_by");
    let copy = edited(&|doc| {
        let old = envelope(doc);
        let fields: Vec<(String, ScalarValue)> = ["tenant", "team", "created_at", "retention_class", "legal_hold"]
            .iter()
            .map(|k| match doc.get(&old, *k).unwrap() {
                Some((Value::Scalar(s), _)) => ((*k).to_owned(), s.into_owned()),
                other => panic!("{k}: {other:?}"),
            })
            .collect();
        let by = map_at(doc, &old, "created_by");
        let (user, device) = (text_at(doc, &by, "user").unwrap(), text_at(doc, &by, "device").unwrap());
        let new = doc.put_object(automerge::ROOT, "envelope", ObjType::Map).unwrap();
        for (k, v) in fields {
            doc.put(&new, k, v).unwrap();
        }
        let by = doc.put_object(&new, "created_by", ObjType::Map).unwrap();
        doc.put(&by, "user", user).unwrap();
        doc.put(&by, "device", device).unwrap();
    });
    assert_eq!(store.envelope(&id).ok(), read_envelope(&copy).ok(), "the copy reads the same");
    assert_eq!(check(&copy, Role::Admin), Err(EditViolation::EnvelopeChange), "the envelope replaced by a copy");

    let hold = edited(&|doc| {
        let env = envelope(doc);
        doc.put(&env, "legal_hold", true).unwrap();
    });
    assert_eq!(check(&hold, Role::Admin), Ok(()), "a legal hold set by an admin");
    assert_eq!(check(&hold, Role::Msl), Err(EditViolation::LegalHold), "but not by an MSL");
    let field = edited(&|doc| {
        let rec = record(doc);
        doc.put(&rec, "priority", "high").unwrap();
    });
    assert_eq!(check(&field, Role::Msl), Ok(()), "a record field this build does not know still passes");
}
