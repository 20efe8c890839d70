//! End-to-end: a newer app and an older app on one team, through a real relay. The newer app
//! writes a channel and a field the older one does not know; the relay takes them (they are a
//! record that reads), the older phone shows the channel as unknown and saves its own edit, and
//! the newer app's values come back untouched.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use automerge::transaction::Transactable;
use automerge::{ObjType, ReadDoc, ScalarValue, Value};
use liaison_core::model::*;
use liaison_core::{DocStore, DocumentId, Role};
use liaison_e2e::*;

fn phone(relay: &Relay, user: &str) -> Device {
    let name = format!("{user}-phone");
    let (_, token) = relay.issue_live("pharma-a", user, &name);
    Device::new(relay, "pharma-a", user, &name, &token, Role::Msl)
}

/// The record's `key` as stored, if it is text.
fn stored(store: &DocStore, id: &DocumentId, key: &str) -> Option<String> {
    let doc = store.load(id).unwrap();
    let Some((Value::Object(ObjType::Map), record)) = doc.get(automerge::ROOT, "record").unwrap() else {
        return None;
    };
    match doc.get(&record, key).unwrap() {
        Some((Value::Scalar(s), _)) => match s.as_ref() {
            ScalarValue::Str(v) => Some(v.to_string()),
            _ => None,
        },
        _ => None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_newer_apps_channel_crosses_the_relay_to_an_older_phone_and_survives_its_save() {
    let data = tempfile::tempdir().unwrap();
    setup_tenant(data.path(), "pharma-a", "onc-east", &[("sato", "msl"), ("suzuki", "msl")]);
    let relay = Relay::start(data.path(), &[]).unwrap();

    // sato's phone runs the newer app: an "sms" channel and a "priority" field, as its own edit.
    let newer = phone(&relay, "sato");
    let kol = newer.store.create("onc-east", &KolProfile::new("Dr. Yamada", "Osaka University")).unwrap();
    let visit = newer.store.create("onc-east", &Interaction::new(&kol, 1_700_000_000_000, Channel::Video)).unwrap();
    newer
        .store
        .edit_raw(&visit, |tx| {
            let Some((_, record)) = tx.get(automerge::ROOT, "record")? else { unreachable!("a record") };
            tx.put(&record, "channel", "sms")?;
            tx.put(&record, "priority", "high")
        })
        .unwrap();
    newer.created(kol);
    newer.created(visit);
    newer.synced().await;
    assert!(newer.client().status().refused.is_empty(), "the relay took it: {:?}", newer.client().status().refused);

    // suzuki's phone runs the older app: it lists the visit with an unknown channel and edits it.
    let older = phone(&relay, "suzuki");
    older.until_store("the visit arrives", |s| s.get::<Interaction>(&visit).is_ok()).await;
    assert_eq!(older.store.get::<Interaction>(&visit).unwrap().channel, Channel::Unknown);
    let rows = older.store.interactions_of_kol(&kol).unwrap();
    assert_eq!(rows.iter().map(|r| (r.id, r.channel)).collect::<Vec<_>>(), [(visit, Channel::Unknown)]);
    older.store.update(&visit, |i: &mut Interaction| i.location = Some("Osaka".into())).unwrap();
    older.client().local_change(visit);
    older.synced().await;
    assert!(older.client().status().refused.is_empty());

    newer
        .until_store("the older phone's edit arrives", |s| {
            s.get::<Interaction>(&visit).is_ok_and(|i| i.location.as_deref() == Some("Osaka"))
        })
        .await;
    for store in [&newer.store, &older.store] {
        assert_eq!(stored(store, &visit, "channel").as_deref(), Some("sms"));
        assert_eq!(stored(store, &visit, "priority").as_deref(), Some("high"));
    }
}
