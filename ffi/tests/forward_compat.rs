//! An older app meeting a newer app's records, through the calls the apps make: a channel it
//! does not know reads as `Unknown`, is listed, and a form saved over it leaves it as stored; a
//! record of a newer schema is counted in the sync status (live too), listed by
//! `unreadable_records`, and refused with `NeedsNewerApp`, never silently missing.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::mpsc::{Sender, channel};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use automerge::transaction::Transactable;
use automerge::{ActorId, AutoCommit, ObjType, ReadDoc, ScalarValue, Value};
use futures::executor::block_on;
use liaison_core::DocumentId;
use liaison_core::model::{Channel, KolProfile};
use liaison_ffi::{CallbackError, LiaisonError, LiaisonStore, SyncStatus, SyncStatusObserver};

/// A newer app's edit of `id` in `store`: `edit` on the raw document, under the newer app's
/// actor, merged in as sync would bring it.
fn newer_app_edits(store: &LiaisonStore, id: &str, edit: impl FnOnce(&mut AutoCommit)) {
    let core = store.core().unwrap();
    let doc_id: DocumentId = id.parse().unwrap();
    let mut doc = AutoCommit::load(&core.export(&doc_id).unwrap()).unwrap();
    doc.set_actor(ActorId::from(&[0xCD; 16][..]));
    edit(&mut doc);
    core.merge_remote(&doc_id, &doc.save()).unwrap();
}

fn stored_channel(store: &LiaisonStore, id: &str) -> String {
    let doc = AutoCommit::load(&store.core().unwrap().export(&id.parse().unwrap()).unwrap()).unwrap();
    let Some((Value::Object(ObjType::Map), record)) = doc.get(automerge::ROOT, "record").unwrap() else {
        panic!("no record")
    };
    match doc.get(&record, "channel").unwrap() {
        Some((Value::Scalar(s), _)) => match s.as_ref() {
            ScalarValue::Str(v) => v.to_string(),
            other => panic!("channel is {other:?}"),
        },
        other => panic!("channel is {other:?}"),
    }
}

#[test]
fn a_form_saved_over_a_channel_the_app_does_not_know_keeps_it() {
    let dir = tempfile::tempdir().unwrap();
    let store = common::open(&dir, "sato");
    let kol = block_on(store.create_kol(KolProfile::new("Dr. A", "Osaka"))).unwrap();
    let id = block_on(store.create_interaction(common::new_interaction(kol.clone(), 1_000, Channel::Video))).unwrap();
    newer_app_edits(&store, &id, |doc| {
        let Some((_, record)) = doc.get(automerge::ROOT, "record").unwrap() else { panic!() };
        doc.put(&record, "channel", "sms").unwrap();
    });

    let read = block_on(store.get_interaction(id.clone())).unwrap();
    assert_eq!(read.interaction.channel, Channel::Unknown);
    let rows = block_on(store.interactions_of_kol(kol)).unwrap();
    assert_eq!(rows.iter().map(|r| (r.id.clone(), r.channel)).collect::<Vec<_>>(), [(id.clone(), Channel::Unknown)]);

    let mut form = read.interaction;
    form.location = Some("Osaka".into());
    block_on(store.update_interaction(id.clone(), form, read.version)).unwrap();
    assert_eq!(stored_channel(&store, &id), "sms", "the newer app's channel is saved back unchanged");
    assert_eq!(block_on(store.get_interaction(id)).unwrap().interaction.location.as_deref(), Some("Osaka"));
}

struct Statuses(Mutex<Sender<SyncStatus>>);

impl SyncStatusObserver for Statuses {
    fn on_status(&self, status: SyncStatus) -> Result<(), CallbackError> {
        let _ = self.0.lock().unwrap().send(status);
        Ok(())
    }
}

#[test]
fn a_record_of_a_newer_schema_is_counted_in_the_sync_status_and_listed() {
    let dir = tempfile::tempdir().unwrap();
    let store = common::open(&dir, "sato");
    let (tx, rx) = channel();
    let _handle = store.watch_sync_status(Arc::new(Statuses(Mutex::new(tx)))).unwrap();
    assert_eq!(rx.recv_timeout(Duration::from_secs(10)).unwrap().needs_newer_app, 0);
    assert_eq!(store.sync_status().needs_newer_app, 0);

    let kol = block_on(store.create_kol(KolProfile::new("Dr. A", "Osaka"))).unwrap();
    let id = block_on(store.create_interaction(common::new_interaction(kol.clone(), 1_000, Channel::Video))).unwrap();
    newer_app_edits(&store, &id, |doc| doc.put(automerge::ROOT, "schema", 2_u64).unwrap());

    let counted = loop {
        let s = rx.recv_timeout(Duration::from_secs(10)).expect("the status is sent again with the count");
        if s.needs_newer_app > 0 {
            break s;
        }
    };
    assert_eq!(counted.needs_newer_app, 1);
    assert_eq!(store.sync_status().needs_newer_app, 1);
    let listed = block_on(store.unreadable_records()).unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(
        (listed[0].id.as_str(), listed[0].kind.as_deref(), listed[0].schema),
        (id.as_str(), Some("interaction"), Some(2))
    );
    assert!(block_on(store.interactions_of_kol(kol)).unwrap().is_empty());
    let got = block_on(store.get_interaction(id));
    assert!(matches!(got, Err(LiaisonError::NeedsNewerApp(_))), "{got:?}");
}
