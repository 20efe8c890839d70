//! Refused changes are kept, never dropped: the relay's actor writes each change of an
//! `Event::Refused` under `q/DOC/HASH` (`on_event` in `server/src/relay.rs`), and
//! `relay::erase_stored` deletes them with their document, leaving a tombstone that keeps the
//! owner. Here a real engine with the relay's policy refuses the changes and the quarantine is
//! written from its event exactly as the actor writes it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::VecDeque;

use automerge::sync::{ChunkList, MessageVersion};
use automerge::transaction::Transactable;
use automerge::{Automerge, Change, ChangeHash};
use common::*;
use liaison_core::DocumentId;
use liaison_core::model::Kind;
use liaison_core::sync::engine::Event;
use liaison_core::sync::store_tasks::execute;
use liaison_core::sync::wire::Message;
use liaison_core::sync::{ConnId, Engine, EngineConfig, Input, Output, Policy, Side};
use liaison_server::erasure::{self, quarantine_key};
use liaison_server::policy::{Owner, PendingOwners, RelayPolicy, encode_tombstone, tombstone_key};

/// The relay's engine over `relay`'s store and principals; storage tasks run at once.
struct Driver {
    engine: Engine,
    events: Vec<Event>,
    now: i64,
}

impl Driver {
    fn new(relay: &Relay) -> Self {
        let policy = RelayPolicy::new(relay.store.clone(), relay.principals.clone(), PendingOwners::default());
        Self {
            engine: Engine::new(EngineConfig::new("relay"), Box::new(policy), "s".into()),
            events: Vec::new(),
            now: 0,
        }
    }

    fn handle(&mut self, relay: &Relay, input: Input) {
        let mut inputs = VecDeque::from([input]);
        while let Some(input) = inputs.pop_front() {
            self.now += 1;
            for output in self.engine.handle(self.now, input) {
                match output {
                    Output::Storage { task, op } => {
                        inputs.push_back(Input::StorageDone { task, result: execute(&relay.store, &op) })
                    }
                    Output::Event(e) => self.events.push(e),
                    Output::Send { .. } | Output::Close { .. } => {}
                }
            }
        }
    }

    fn sync(&mut self, relay: &Relay, conn: ConnId, peer: &str, doc: DocumentId, to: &Automerge, changes: &[&Change]) {
        let mut heads = to.get_heads();
        heads.sort();
        let chunks: Vec<Vec<u8>> = changes.iter().map(|c| c.raw_bytes().to_vec()).collect();
        let data = automerge::sync::Message {
            heads,
            need: Vec::new(),
            have: Vec::new(),
            changes: ChunkList::from(chunks),
            flags: None,
            version: MessageVersion::V1,
        }
        .encode();
        let frame = Message::Sync { sender_id: peer.into(), target_id: "relay".into(), document_id: doc, data };
        self.handle(relay, Input::Frame { conn, frame: frame.encode() });
    }
}

fn quarantine_prefix(doc: &DocumentId) -> Vec<u8> {
    [b"q/".as_slice(), doc.as_bytes()].concat()
}

/// What the actor's `on_event` does with a `Refused` event from a device of `tenant`.
fn quarantine(relay: &Relay, tenant: &str, event: &Event) {
    let Event::Refused { doc, refused, changes, .. } = event else { return };
    let mut batch = liaison_core::storage::Batch::new();
    for ((hash, _), raw) in refused.iter().zip(changes) {
        erasure::quarantine(&mut batch, tenant, doc, hash.as_ref(), raw.clone());
    }
    relay.store.kv().apply(batch).unwrap();
}

fn erase_stored(
    store: &liaison_core::DocStore,
    doc: &DocumentId,
) -> Result<(), liaison_server::error::MaintenanceError> {
    erasure::erase_stored(store, doc, 0)
}

#[test]
fn refused_changes_are_quarantined_under_their_hashes_and_erased_with_their_document() {
    let mut relay = Relay::new();
    let mut driver = Driver::new(&relay);
    let sato = relay.peer(&SATO);
    driver.handle(&relay, Input::Connected { conn: sato.conn, side: Side::Receiver });
    let join = Message::Join {
        sender_id: sato.peer_id.clone(),
        supported_protocol_versions: vec!["1".into()],
        metadata: None,
    };
    driver.handle(&relay, Input::Frame { conn: sato.conn, frame: join.encode() });

    // Sato creates a plan (accepted and stored), then sends three concurrent envelope changes
    // from three installs of her app: all refused in one message.
    let doc = DocumentId::from_bytes([4; 16]);
    let plan = created(&SATO, "east", Kind::EngagementPlan);
    driver.sync(&relay, sato.conn, &sato.peer_id.0, doc, &plan, &[&plan.get_changes(&[])[0]]);
    let owner = Owner { tenant: "pharma-a".into(), team: "east".into(), kind: Some(Kind::EngagementPlan) };
    assert_eq!(relay.store.owner_of(&doc).unwrap(), Some((owner.tenant.clone(), owner.team.clone(), owner.kind)));
    let mut all = plan.clone();
    let mut refused = Vec::new();
    for (install, (key, value)) in
        [(1, ("team", "west")), (2, ("retention_class", "short")), (3, ("tenant", "pharma-b"))]
    {
        let mut edited = plan.clone();
        raw_change(&mut edited, &SATO.actor_of_install(&[install; 8]), |tx, d| {
            tx.put(obj(d, &["envelope"]), key, value).unwrap();
        });
        let change = edited.get_changes(&plan.get_heads())[0].clone();
        all.apply_changes([change.clone()]).unwrap();
        refused.push(change);
    }
    driver.sync(&relay, sato.conn, &sato.peer_id.0, doc, &all, &refused.iter().collect::<Vec<_>>());
    let event = driver.events.iter().find(|e| matches!(e, Event::Refused { .. })).expect("the changes were refused");
    quarantine(&relay, "pharma-a", event);

    // Each refused change is kept whole, under its own hash.
    let kept = relay.store.kv().scan_prefix(&quarantine_prefix(&doc)).unwrap();
    let mut kept_hashes = Vec::new();
    for (key, bytes) in &kept {
        let hash = Change::from_bytes(bytes.clone()).unwrap().hash();
        assert_eq!(*key, quarantine_key(&doc, hash.as_ref()), "the bytes under a key are the change it names");
        kept_hashes.push(hash);
    }
    let mut want: Vec<ChangeHash> = refused.iter().map(Change::hash).collect();
    want.sort();
    kept_hashes.sort();
    assert_eq!(kept_hashes, want);

    // Another document's quarantine stays when this one is erased.
    let other = DocumentId::from_bytes([5; 16]);
    let mut batch = liaison_core::storage::Batch::new();
    erasure::quarantine(&mut batch, "pharma-a", &other, refused[0].hash().as_ref(), refused[0].raw_bytes().to_vec());
    relay.store.kv().apply(batch).unwrap();
    assert_eq!(relay.store.kv().scan_keys(b"qt/pharma-a/").unwrap().len(), 4, "indexed by the sender's tenant");

    erase_stored(&relay.store, &doc).unwrap();
    assert!(relay.store.kv().scan_keys(&quarantine_prefix(&doc)).unwrap().is_empty(), "the quarantine is erased");
    assert_eq!(relay.store.kv().scan_keys(b"qt/pharma-a/").unwrap().len(), 1, "with its index entries");
    assert_eq!(relay.store.kv().scan_keys(&quarantine_prefix(&other)).unwrap().len(), 1, "not another document's");
    assert!(relay.store.load(&doc).is_err(), "the document is gone");
    let tombstone = relay.store.kv().get(&tombstone_key(&doc)).unwrap().expect("a tombstone");
    assert_eq!(tombstone[8..], encode_tombstone(0, Some(&owner))[8..], "the tombstone keeps the owner");

    // Erasing again (the document is gone now) keeps the tombstone as it was.
    erase_stored(&relay.store, &doc).unwrap();
    assert_eq!(relay.store.kv().get(&tombstone_key(&doc)).unwrap(), Some(tombstone));

    // Only those who could read the document are told it was erased.
    assert!(relay.policy.erased(&doc));
    for (who, told) in [(SATO, true), (KATO, true), (ADMIN_A, true), (WEST_MSL, false), (KIM, false), (SYSTEM, false)] {
        let peer = relay.peer(&who);
        assert_eq!(relay.policy.may_know_erased(&peer, &doc), told, "{}", who.user);
    }
}
