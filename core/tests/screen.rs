//! Screening (`core/src/sync/screen.rs`) through `Engine::handle`: a relay engine with a policy
//! that records every `validate` call, fed hand-made sync messages by raw peers. What the policy
//! refuses, what it is asked again, and what the engine's document ends up holding.
#![allow(clippy::unwrap_used)]

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};

use automerge::sync::{ChunkList, MessageVersion};
use automerge::transaction::{CommitOptions, Transactable};
use automerge::{ActorId, Automerge, Change, ChangeHash, ReadDoc};
use liaison_core::storage::MemoryKv;
use liaison_core::store::{ManualClock, StoreOptions};
use liaison_core::sync::engine::{CloseReason, Event, decode_refusal};
use liaison_core::sync::testing::{Driver, Storage};
use liaison_core::sync::wire::{self, Message};
use liaison_core::sync::*;
use liaison_core::{DocStore, DocumentId, Identity, Role};

/// What the test policy refuses and what it was asked.
#[derive(Debug, Default)]
struct Judge {
    /// Refused whenever they are among the changes judged, with this code.
    table: HashMap<ChangeHash, &'static str>,
    /// The changes of every `validate` call, in order.
    calls: Vec<BTreeSet<ChangeHash>>,
}

/// Refuses what the table says, and every change of a set that moves the root `owner` key (a
/// rule on the document's state, like the relay's envelope rules).
#[derive(Debug, Clone, Default)]
struct CountingPolicy(Arc<Mutex<Judge>>);

impl CountingPolicy {
    fn refuse(&self, change: &Change, code: &'static str) {
        self.0.lock().unwrap().table.insert(change.hash(), code);
    }

    fn calls(&self) -> Vec<BTreeSet<ChangeHash>> {
        self.0.lock().unwrap().calls.clone()
    }

    /// How many `validate` calls were shown `change`.
    fn calls_with(&self, change: &Change) -> usize {
        self.calls().iter().filter(|c| c.contains(&change.hash())).count()
    }
}

fn owner(doc: &Automerge) -> Option<String> {
    doc.get(automerge::ROOT, "owner").unwrap().and_then(|(v, _)| v.into_string().ok())
}

impl Policy for CountingPolicy {
    fn validate(
        &mut self,
        _: &PeerInfo,
        _: &DocumentId,
        before: &Automerge,
        after: &Automerge,
        new: &[Change],
    ) -> Vec<(ChangeHash, Refusal)> {
        let mut judge = self.0.lock().unwrap();
        judge.calls.push(new.iter().map(Change::hash).collect());
        let mut refused: Vec<(ChangeHash, Refusal)> = new
            .iter()
            .filter_map(|c| {
                judge.table.get(&c.hash()).map(|code| (c.hash(), Refusal::new(code, "refused by the table")))
            })
            .collect();
        if refused.is_empty() && owner(before).is_some() && owner(after) != owner(before) {
            refused = new.iter().map(|c| (c.hash(), Refusal::new("owner-change", "the owner moved"))).collect();
        }
        refused
    }
}

/// An `Event::Refused`: the refused hashes with their refusals, and the changes' raw bytes.
type RefusedEvent = (Vec<(ChangeHash, Refusal)>, Vec<Vec<u8>>);

/// A relay engine on a memory store, driven input by input; storage tasks run at once.
struct Relay {
    d: Driver,
    events: Vec<Event>,
    sent: Vec<(ConnId, Message)>,
    closed: Vec<(ConnId, CloseReason)>,
    next_conn: u64,
}

impl Relay {
    fn new(policy: &CountingPolicy) -> Self {
        let identity = Identity {
            tenant: "t".into(),
            user: "relay".into(),
            device: "relay".into(),
            role: Role::Admin,
            install: [0; 8],
        };
        let clock = Arc::new(ManualClock::new(1_700_000_000_000));
        let store = DocStore::with_kv(Arc::new(MemoryKv::new()), identity, clock, StoreOptions::default()).unwrap();
        let engine = Engine::new(EngineConfig::new("relay"), Box::new(policy.clone()), "relay-session".into());
        let d = Driver::new(engine, store, Storage::Immediate);
        Self { d, events: Vec::new(), sent: Vec::new(), closed: Vec::new(), next_conn: 1 }
    }

    fn handle(&mut self, input: Input) {
        for output in self.d.handle(input) {
            match output {
                Output::Send { conn, frame } => self.sent.push((conn, wire::decode(&frame, usize::MAX).unwrap())),
                Output::Close { conn, reason } => self.closed.push((conn, reason)),
                Output::Storage { .. } => unreachable!("the driver runs storage tasks"),
                Output::Event(e) => self.events.push(e),
            }
        }
    }

    /// A peer that joined; returns its connection.
    fn join(&mut self, peer: &str) -> ConnId {
        let conn = ConnId(self.next_conn);
        self.next_conn += 1;
        self.handle(Input::Connected { conn, side: Side::Receiver });
        let join =
            Message::Join { sender_id: peer.into(), supported_protocol_versions: vec!["1".into()], metadata: None };
        self.handle(Input::Frame { conn, frame: join.encode() });
        conn
    }

    /// `peer` sends `changes` of `doc` in one sync message announcing `heads`.
    fn send(&mut self, conn: ConnId, peer: &str, doc: DocumentId, mut heads: Vec<ChangeHash>, changes: &[&Change]) {
        heads.sort();
        let data = automerge::sync::Message {
            heads,
            need: Vec::new(),
            have: Vec::new(),
            changes: ChunkList::from(changes.iter().map(|c| c.raw_bytes().to_vec()).collect::<Vec<_>>()),
            flags: None,
            version: MessageVersion::V1,
        }
        .encode();
        let sync = Message::Sync { sender_id: peer.into(), target_id: "relay".into(), document_id: doc, data };
        self.handle(Input::Frame { conn, frame: sync.encode() });
        assert!(self.closed.is_empty(), "the relay closed a connection: {:?}", self.closed);
    }

    fn heads(&self, doc: DocumentId) -> Vec<ChangeHash> {
        let mut heads = self.d.engine.document(&doc).expect("the document is loaded").get_heads();
        heads.sort();
        heads
    }

    fn holds(&self, doc: DocumentId, change: &Change) -> bool {
        self.d.engine.document(&doc).is_some_and(|d| d.get_change_by_hash(&change.hash()).is_some())
    }

    /// The `Refused` events so far: (refused hashes with codes, raw bytes).
    fn refused_events(&self) -> Vec<RefusedEvent> {
        self.events
            .iter()
            .filter_map(|e| match e {
                Event::Refused { refused, changes, .. } => Some((refused.clone(), changes.clone())),
                _ => None,
            })
            .collect()
    }

    /// The refusal notices sent on `conn`: (code, hashes), one per ephemeral message.
    fn notices(&self, conn: ConnId) -> Vec<(String, BTreeSet<ChangeHash>)> {
        self.sent
            .iter()
            .filter(|(c, _)| *c == conn)
            .filter_map(|(_, m)| match m {
                Message::Ephemeral { data, .. } => decode_refusal(data),
                _ => None,
            })
            .map(|(hashes, code, _)| (code, hashes.into_iter().collect()))
            .collect()
    }
}

fn actor(n: u8) -> ActorId {
    ActorId::from(vec![n; 24])
}

/// One change to a copy of `base` (so changes made from one base are concurrent) under `actor`.
fn change_on(base: &Automerge, actor_n: u8, key: &str, value: &str) -> (Automerge, Change) {
    let mut doc = base.clone();
    doc.set_actor(actor(actor_n));
    let mut tx = doc.transaction();
    tx.put(automerge::ROOT, key, value).unwrap();
    let (hash, _) = tx.commit_with(CommitOptions::default().with_time(1_000));
    let change = doc.get_change_by_hash(&hash.unwrap()).unwrap();
    (doc, change)
}

/// A relay holding a new document (`owner` = "a") created by `peer`, accepted and stored.
fn relay_with_document(policy: &CountingPolicy, peer: &str) -> (Relay, ConnId, DocumentId, Automerge) {
    let mut relay = Relay::new(policy);
    let conn = relay.join(peer);
    let doc = DocumentId::from_bytes([3; 16]);
    let (base, created) = change_on(&Automerge::new(), 1, "owner", "a");
    relay.send(conn, peer, doc, base.get_heads(), &[&created]);
    assert_eq!(relay.heads(doc), base.get_heads(), "the creation was applied");
    (relay, conn, doc, base)
}

#[test]
fn a_refused_change_is_refused_again_from_memory_without_asking_the_policy() {
    let policy = CountingPolicy::default();
    let (mut relay, conn, doc, base) = relay_with_document(&policy, "dev");
    let (_, bad) = change_on(&base, 1, "note", "refused");
    policy.refuse(&bad, "bad-note");
    relay.send(conn, "dev", doc, vec![bad.hash()], &[&bad]);
    assert_eq!(policy.calls_with(&bad), 1, "judged once");
    assert!(!relay.holds(doc, &bad));

    // The same change again, alone, then beside an honest concurrent one.
    let calls_before = policy.calls().len();
    relay.send(conn, "dev", doc, vec![bad.hash()], &[&bad]);
    assert_eq!(policy.calls().len(), calls_before, "nothing new to judge: validate is not called");
    let (_, honest) = change_on(&base, 2, "other", "fine");
    relay.send(conn, "dev", doc, vec![bad.hash(), honest.hash()], &[&bad, &honest]);
    assert_eq!(policy.calls_with(&bad), 1, "the refused change is never judged again");
    assert_eq!(policy.calls().last(), Some(&BTreeSet::from([honest.hash()])), "only the honest change is judged");
    assert!(!relay.holds(doc, &bad));
    assert_eq!(relay.heads(doc), vec![honest.hash()]);
}

#[test]
fn what_is_applied_is_what_was_validated_even_when_the_whole_message_passes() {
    let policy = CountingPolicy::default();
    let (mut relay, conn, doc, base) = relay_with_document(&policy, "dev");
    // R1 moves the owner and is refused by the table; X, concurrent, moves it elsewhere; R2,
    // built on both, moves it back. All three together leave the owner as it was.
    let (after_r1, r1) = change_on(&base, 1, "owner", "b");
    let (after_x, x) = change_on(&base, 2, "owner", "c");
    let mut merged = after_r1.clone();
    merged.apply_changes([x.clone()]).unwrap();
    let (whole, r2) = change_on(&merged, 1, "owner", "a");
    assert_eq!(owner(&whole).as_deref(), Some("a"), "the whole message keeps the owner");
    assert_eq!(owner(&after_x).as_deref(), Some("c"), "X alone moves it");
    policy.refuse(&r1, "bad-r1");

    relay.send(conn, "dev", doc, whole.get_heads(), &[&r1, &x, &r2]);

    assert_eq!(relay.heads(doc), base.get_heads(), "none of the three was applied");
    for c in [&r1, &x, &r2] {
        assert!(!relay.holds(doc, c));
    }
    let calls = policy.calls();
    assert_eq!(calls[calls.len() - 2], BTreeSet::from([r1.hash(), x.hash(), r2.hash()]), "the message, whole");
    assert_eq!(calls[calls.len() - 1], BTreeSet::from([x.hash()]), "then what would remain: X, alone");
    let (refused, _) = relay.refused_events().pop().expect("a Refused event");
    let codes: HashMap<ChangeHash, String> = refused.into_iter().map(|(h, r)| (h, r.code)).collect();
    let want: HashMap<ChangeHash, String> =
        [(r1.hash(), "bad-r1"), (r2.hash(), "depends-on-refused"), (x.hash(), "owner-change")]
            .into_iter()
            .map(|(h, c)| (h, c.to_owned()))
            .collect();
    assert_eq!(codes, want);
}

#[test]
fn a_change_with_missing_dependencies_is_never_applied_even_once_they_arrive() {
    let policy = CountingPolicy::default();
    let (mut relay, first, doc, base) = relay_with_document(&policy, "first");
    let second = relay.join("second");
    // B is the second peer's; M, built on B, reaches the relay first, from the first peer.
    let (after_b, b) = change_on(&base, 2, "b", "from the second peer");
    let (after_m, m) = change_on(&after_b, 1, "m", "sent before its dependency");
    relay.send(first, "first", doc, after_m.get_heads(), &[&m]);
    assert!(!relay.holds(doc, &m));
    assert_eq!(relay.heads(doc), base.get_heads());

    relay.send(second, "second", doc, after_b.get_heads(), &[&b]);
    assert!(relay.holds(doc, &b), "the dependency itself is applied");
    assert!(!relay.holds(doc, &m), "M did not ride along with its dependency");
    assert_eq!(relay.heads(doc), vec![b.hash()]);
    assert_eq!(policy.calls_with(&m), 0, "M was never judged, so it must never be applied");
    let stored = relay.d.store.load(&doc).unwrap();
    assert!(stored.get_change_by_hash(&m.hash()).is_none(), "nor stored");
}

#[test]
fn a_refusal_reports_the_refused_bytes_and_tells_the_peer_once_per_code() {
    let policy = CountingPolicy::default();
    let (mut relay, conn, doc, base) = relay_with_document(&policy, "dev");
    let (after_c1, c1) = change_on(&base, 1, "c1", "x");
    let (_, c2) = change_on(&base, 2, "c2", "y");
    let (_, c3) = change_on(&after_c1, 1, "c3", "built on c1");
    let (_, c4) = change_on(&base, 3, "c4", "x as well");
    let (_, honest) = change_on(&base, 4, "honest", "kept");
    policy.refuse(&c1, "code-x");
    policy.refuse(&c4, "code-x");
    policy.refuse(&c2, "code-y");
    let heads = vec![c2.hash(), c3.hash(), c4.hash(), honest.hash()];
    relay.send(conn, "dev", doc, heads, &[&c1, &c2, &c3, &c4, &honest]);

    assert!(relay.holds(doc, &honest) && !relay.holds(doc, &c1), "the honest change alone is applied");
    let events = relay.refused_events();
    assert_eq!(events.len(), 1, "one Refused event for the message");
    let (refused, raw) = &events[0];
    let refused_hashes: BTreeSet<ChangeHash> = refused.iter().map(|(h, _)| *h).collect();
    assert_eq!(refused_hashes, BTreeSet::from([c1.hash(), c2.hash(), c3.hash(), c4.hash()]));
    assert_eq!(raw.len(), refused.len());
    // The relay stores `raw[i]` under the hash `refused[i]` names (its quarantine keys).
    for ((hash, _), bytes) in refused.iter().zip(raw) {
        assert_eq!(Change::from_bytes(bytes.clone()).unwrap().hash(), *hash, "bytes and hash are paired");
    }

    let mut notices = relay.notices(conn);
    notices.sort();
    let want = vec![
        ("code-x".to_owned(), BTreeSet::from([c1.hash(), c4.hash()])),
        ("code-y".to_owned(), BTreeSet::from([c2.hash()])),
        ("depends-on-refused".to_owned(), BTreeSet::from([c3.hash()])),
    ];
    assert_eq!(notices, want, "one notice per code, naming exactly its changes");
}
