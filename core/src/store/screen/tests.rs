//! The screen entries' disk format (fixtures: changing one means bumping the index version) and
//! the key order the queries rely on.

#![allow(clippy::unwrap_used)]

use super::*;
use crate::model::Channel;

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn round_trip<T: Encode<()> + for<'b> Decode<'b, ()> + PartialEq + std::fmt::Debug>(v: &T, fixture: &str) {
    let bytes = encode(v);
    assert_eq!(hex(&bytes), fixture, "the stored format changed: bump the index version and this fixture");
    assert_eq!(minicbor::decode::<T>(&bytes).ok().as_ref(), Some(v));
}

#[test]
fn stored_screen_entries_format_is_stable() {
    let interaction = StoredInteraction {
        kol: "k".into(),
        start: 1_000,
        channel: "phone".into(),
        status: "draft".into(),
        open_follow_ups: 2,
        author: Some("u".into()),
    };
    round_trip(&interaction, "86616b1903e86570686f6e65656472616674026175");
    let task = StoredTask {
        kind: "interaction".into(),
        record: [7; 16],
        item: "f".into(),
        description: "d".into(),
        owner: "u".into(),
        due: Some(-1),
        status: "open".into(),
        kol: "k".into(),
    };
    round_trip(&task, "886b696e746572616374696f6e500707070707070707070707070707070761666164617520646f70656e616b");
    let mir = StoredMir { kol: "k".into(), fulfilment: "open".into(), status: "draft".into(), created: Some(5) };
    round_trip(&mir, "84616b646f70656e65647261667405");
    let draft = StoredDraft { kind: "interaction".into(), author: None, created: Some(5), kols: vec!["k".into()] };
    round_trip(&draft, "846b696e746572616374696f6ef60581616b");
    let unreadable = StoredUnreadable { kind: Some("kol_event".into()), schema: Some(2) };
    round_trip(&unreadable, "82696b6f6c5f6576656e7402");
    let backref: Vec<minicbor::bytes::ByteVec> = vec![vec![1, 2].into()];
    assert_eq!(hex(&encode(&backref)), "81420102");
}

#[test]
fn times_sort_in_order_and_newest_first_and_read_back() {
    let times = [i64::MIN, -1_000, -1, 0, 1, 1_700_000_000_000, i64::MAX];
    for pair in times.windows(2) {
        assert!(keys::time_ascending(pair[0]) < keys::time_ascending(pair[1]), "{pair:?}");
        assert!(keys::time_descending(pair[0]) > keys::time_descending(pair[1]), "{pair:?}");
    }
    for t in times {
        assert_eq!(keys::time_from_ascending(keys::time_ascending(t)), t);
        assert_eq!(keys::time_from_descending(keys::time_descending(t)), t);
    }
}

#[test]
fn a_task_is_keyed_open_dated_open_undated_or_closed() {
    let id = DocumentId::from_bytes([1; 16]);
    let entry = |status: TaskStatus, due: Option<i64>| {
        let Entry::Task(t) = task(Kind::EngagementPlan, "a", "d", "sato", due, status, "k") else { unreachable!() };
        key_values(&id, &[Entry::Task(t)]).remove(0).0
    };
    let in_range = |key: &[u8], range| key.starts_with(&keys::screen_tasks_of("sato", range));
    assert!(in_range(&entry(TaskStatus::Open, Some(5)), TaskRange::OpenDated));
    assert!(in_range(&entry(TaskStatus::InProgress, Some(5)), TaskRange::OpenDated));
    assert!(in_range(&entry(TaskStatus::Open, None), TaskRange::OpenUndated));
    assert!(in_range(&entry(TaskStatus::Done, Some(5)), TaskRange::Closed));
    assert!(in_range(&entry(TaskStatus::Cancelled, None), TaskRange::Closed));
    assert!(!in_range(&entry(TaskStatus::Open, Some(5)), TaskRange::Closed));
    assert!(entry(TaskStatus::Open, Some(4)) < entry(TaskStatus::Open, Some(5)), "sooner first");
    // The record id is filled in from the document.
    let (_, value) =
        key_values(&id, &[task(Kind::EngagementPlan, "a", "d", "o", None, TaskStatus::Open, "k")]).remove(0);
    assert_eq!(minicbor::decode::<StoredTask>(&value).unwrap().record, [1; 16]);
}

#[test]
fn enum_names_are_the_documents_own_and_read_back() {
    for s in [RecordStatus::Draft, RecordStatus::Submitted] {
        assert_eq!(status_named(status_name(s)), Some(s));
    }
    for c in Channel::known() {
        assert_eq!(Channel::parse(&open_name(c.name())), *c);
    }
    // A value a newer app wrote is indexed as "" and listed as unknown, open until known closed.
    assert_eq!(Channel::parse(&open_name(Channel::Unknown.name())), Channel::Unknown);
    assert!(task_is_open(TaskStatus::Unknown) && mir_is_open(Fulfilment::Unknown));
    assert!(!task_is_open(TaskStatus::Done) && !mir_is_open(Fulfilment::Closed));
}
