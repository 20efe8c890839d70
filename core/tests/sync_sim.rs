//! A deterministic simulator: devices and a relay running the real engine and real stores,
//! exchanging frames through a fake network that delays, duplicates, reorders, drops
//! (a drop kills the connection; reconnecting makes a new one) and partitions, with storage
//! tasks that complete late and a relay that crashes with writes in flight.
//!
//! Checked on every step: a device never learns relay heads whose changes the relay has not
//! stored. Checked at the end, after the network heals: every node has every document with
//! identical heads, and no edit is missing.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;

use automerge::{ChangeHash, ReadDoc};
use liaison_core::model::*;
use liaison_core::storage::MemoryKv;
use liaison_core::store::{ManualClock, StoreOptions};
use liaison_core::sync::engine::Event;
use liaison_core::sync::store_tasks::{execute, execute_group};
use liaison_core::sync::wire::StorageId;
use liaison_core::sync::{ConnId, Engine, EngineConfig, Input, OpenPolicy, Output, Side, StorageTask, TaskId};
use liaison_core::{DocStore, DocumentId, Role};
use proptest::prelude::*;

/// Small deterministic RNG so a failing seed replays exactly.
#[derive(Debug, Clone)]
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
    fn chance(&mut self, per_mille: u32) -> bool {
        (self.next() % 1000) < u64::from(per_mille)
    }
}

#[derive(Debug, Clone, Copy, Default)]
pub struct Faults {
    /// Per mille of frames that are lost, killing their connection.
    pub drop: u32,
    pub duplicate: u32,
    pub reorder: u32,
}

#[derive(Debug)]
struct Node {
    engine: Engine,
    store: DocStore,
    tasks: Vec<(TaskId, StorageTask)>,
    config: EngineConfig,
}

#[derive(Debug)]
struct Link {
    dev: usize,
    relay_conn: ConnId,
    dev_conn: ConnId,
    to_relay: VecDeque<Vec<u8>>,
    to_dev: VecDeque<Vec<u8>>,
}

#[derive(Debug)]
pub struct Sim {
    nodes: Vec<Node>,
    links: Vec<Link>,
    rng: Rng,
    now: i64,
    next_conn: u64,
    pub faults: Faults,
    /// Document -> hashes of the changes devices made to it.
    made: BTreeMap<DocumentId, BTreeSet<ChangeHash>>,
    pub docs: Vec<DocumentId>,
    tokens: BTreeMap<DocumentId, Vec<String>>,
    pub acks_checked: u64,
    /// (device, document) -> the last relay heads the device was told.
    last_acks: BTreeMap<(usize, DocumentId), Vec<ChangeHash>>,
    pub frames: u64,
    pub bytes: u64,
}

const RELAY: usize = 0;

fn store(user: &str, compact_after_chunks: u64) -> DocStore {
    DocStore::with_kv(
        Arc::new(MemoryKv::new()),
        common::identity(user, &format!("{user}-device"), Role::Msl),
        Arc::new(ManualClock::new(1_700_000_000_000)),
        StoreOptions { compact_after_chunks, ..StoreOptions::default() },
    )
    .unwrap()
}

impl Sim {
    pub fn new(devices: usize, seed: u64, resident_cap: usize) -> Self {
        let mut nodes = Vec::new();
        for i in 0..=devices {
            let mut config = EngineConfig::new(if i == RELAY { "relay".to_owned() } else { format!("device-{i}") });
            config.storage_id = Some(StorageId(format!("storage-{i}")));
            config.announce = i != RELAY;
            config.resident_cap = if i == RELAY { resident_cap } else { 100_000 };
            let engine = Engine::new(config.clone(), Box::new(OpenPolicy), format!("session-{i}-0"));
            // The relay compacts often, so group commits that compact are exercised.
            let compact = if i == RELAY { 4 } else { 64 };
            nodes.push(Node { engine, store: store(&format!("user{i}"), compact), tasks: Vec::new(), config });
        }
        Self {
            nodes,
            links: Vec::new(),
            rng: Rng(seed | 1),
            now: 0,
            next_conn: 1,
            faults: Faults::default(),
            made: BTreeMap::new(),
            docs: Vec::new(),
            tokens: BTreeMap::new(),
            acks_checked: 0,
            last_acks: BTreeMap::new(),
            frames: 0,
            bytes: 0,
        }
    }

    fn handle(&mut self, node: usize, input: Input) {
        self.now += 1;
        let outputs = self.nodes[node].engine.handle(self.now, input);
        for o in outputs {
            match o {
                Output::Send { conn, frame } => {
                    if let Some(l) = self.links.iter_mut().find(|l| Self::owns(l, node, conn)) {
                        self.frames += 1;
                        self.bytes += frame.len() as u64;
                        if node == RELAY { l.to_dev.push_back(frame) } else { l.to_relay.push_back(frame) }
                    }
                }
                Output::Close { conn, .. } => self.cut_conn(node, conn),
                Output::Storage { task, op } => self.nodes[node].tasks.push((task, op)),
                Output::Event(e) => self.on_event(node, e),
            }
        }
    }

    fn owns(l: &Link, node: usize, conn: ConnId) -> bool {
        (node == RELAY && l.relay_conn == conn) || (node == l.dev && l.dev_conn == conn)
    }

    fn on_event(&mut self, node: usize, e: Event) {
        if node == RELAY {
            return;
        }
        if let Event::PeerHeads { doc, heads, .. } = e {
            // The durable-acknowledgement invariant: what the relay advertised, it has stored.
            if heads.is_empty() {
                return;
            }
            let relay_doc = self.nodes[RELAY]
                .store
                .load(&doc)
                .unwrap_or_else(|e| panic!("device {node} saw relay heads for {doc} the relay has not stored: {e}"));
            for h in &heads {
                assert!(
                    relay_doc.get_change_by_hash(h).is_some(),
                    "device {node} saw relay head {h} for {doc} that the relay has not stored"
                );
            }
            self.acks_checked += 1;
            let mut sorted = heads;
            sorted.sort();
            self.last_acks.insert((node, doc), sorted);
        }
    }

    pub fn connect(&mut self, dev: usize) {
        if self.links.iter().any(|l| l.dev == dev) {
            return;
        }
        let relay_conn = ConnId(self.next_conn);
        let dev_conn = ConnId(self.next_conn + 1);
        self.next_conn += 2;
        self.links.push(Link { dev, relay_conn, dev_conn, to_relay: VecDeque::new(), to_dev: VecDeque::new() });
        self.handle(RELAY, Input::Connected { conn: relay_conn, side: Side::Receiver });
        self.handle(dev, Input::Connected { conn: dev_conn, side: Side::Initiator });
    }

    pub fn disconnect(&mut self, dev: usize) {
        if let Some(i) = self.links.iter().position(|l| l.dev == dev) {
            let l = self.links.remove(i);
            self.handle(RELAY, Input::Disconnected { conn: l.relay_conn });
            self.handle(dev, Input::Disconnected { conn: l.dev_conn });
        }
    }

    fn cut_conn(&mut self, node: usize, conn: ConnId) {
        if let Some(l) = self.links.iter().find(|l| Self::owns(l, node, conn)) {
            let dev = l.dev;
            self.disconnect(dev);
        }
    }

    /// The relay dies: writes in flight are lost, every connection drops, and it restarts.
    pub fn crash_relay(&mut self) {
        let devs: Vec<usize> = self.links.iter().map(|l| l.dev).collect();
        for dev in devs {
            if let Some(i) = self.links.iter().position(|l| l.dev == dev) {
                let l = self.links.remove(i);
                self.handle(dev, Input::Disconnected { conn: l.dev_conn });
            }
        }
        let n = &mut self.nodes[RELAY];
        n.tasks.clear();
        let session = format!("session-relay-{}", self.now);
        n.engine = Engine::new(n.config.clone(), Box::new(OpenPolicy), session);
    }

    pub fn create_plan(&mut self, dev: usize) -> DocumentId {
        let s = &self.nodes[dev].store;
        let kol = DocumentId::from_bytes([1; 16]);
        let id = s.create("team", &EngagementPlan::new(&kol, format!("plan by {dev}"))).unwrap();
        let h: BTreeSet<ChangeHash> = s.load(&id).unwrap().get_heads().into_iter().collect();
        self.made.entry(id).or_default().extend(h);
        self.docs.push(id);
        self.handle(dev, Input::Announce { doc: id });
        id
    }

    /// Device edits a document it has: a unique token into the notes, and a new activity.
    pub fn edit(&mut self, dev: usize, doc: DocumentId) -> bool {
        let s = &self.nodes[dev].store;
        let Ok(before) = s.load(&doc) else { return false };
        let before = before.get_heads();
        let token = format!("<{dev}.{}>", self.now);
        let t = token.clone();
        if s.update(&doc, move |p: &mut EngagementPlan| {
            let at = p.notes.as_str().rfind('>').map_or(0, |i| i + 1);
            p.notes.splice(at, 0, &t);
            p.activities.push(Activity {
                id: t.clone(),
                description: "visit".into(),
                owner: "x".into(),
                due: None,
                status: TaskStatus::Open,
            });
        })
        .is_err()
        {
            return false;
        }
        let after = s.load(&doc).unwrap().get_heads();
        self.made.entry(doc).or_default().extend(after.iter().copied());
        let changes = s.changes_since(&doc, &before).unwrap();
        self.tokens.entry(doc).or_default().push(token);
        self.handle(dev, Input::LocalChanges { doc, changes });
        true
    }

    /// One random step. Returns false when nothing is left to do.
    pub fn step(&mut self) -> bool {
        let mut choices: Vec<(usize, bool)> = Vec::new(); // (link, towards relay)
        for (i, l) in self.links.iter().enumerate() {
            if !l.to_relay.is_empty() {
                choices.push((i, true));
            }
            if !l.to_dev.is_empty() {
                choices.push((i, false));
            }
        }
        let task_nodes: Vec<usize> = (0..self.nodes.len()).filter(|n| !self.nodes[*n].tasks.is_empty()).collect();
        let total = choices.len() + task_nodes.len();
        if total == 0 {
            return false;
        }
        if self.now % 97 == 0 {
            for n in 0..self.nodes.len() {
                self.handle(n, Input::Tick);
            }
        }
        let pick = self.rng.below(total);
        if pick < choices.len() {
            let (li, to_relay) = choices[pick];
            self.deliver(li, to_relay);
        } else {
            let node = task_nodes[pick - choices.len()];
            let n = &mut self.nodes[node];
            let i = self.rng.below(n.tasks.len());
            if node == RELAY && !matches!(n.tasks[i].1, StorageTask::Load { .. }) {
                // As the relay's writer thread does: writes in the order issued, the ones queued
                // so far (some of them) committed as one group.
                let writes: Vec<usize> =
                    (0..n.tasks.len()).filter(|j| !matches!(n.tasks[*j].1, StorageTask::Load { .. })).collect();
                let take = 1 + self.rng.below(writes.len());
                let mut group: Vec<(TaskId, StorageTask)> =
                    writes[..take].iter().rev().map(|j| n.tasks.remove(*j)).collect();
                group.reverse();
                let ops: Vec<StorageTask> = group.iter().map(|(_, op)| op.clone()).collect();
                let results = execute_group(&n.store, &ops);
                for ((task, _), result) in group.into_iter().zip(results) {
                    self.handle(node, Input::StorageDone { task, result });
                }
                return true;
            }
            let (task, op) = n.tasks.remove(i);
            let result = execute(&n.store, &op);
            self.handle(node, Input::StorageDone { task, result });
        }
        true
    }

    fn deliver(&mut self, li: usize, to_relay: bool) {
        let f = self.faults;
        let reorder = self.rng.chance(f.reorder);
        let l = &mut self.links[li];
        let q = if to_relay { &mut l.to_relay } else { &mut l.to_dev };
        let idx = if reorder && q.len() > 1 { 1 } else { 0 };
        let Some(frame) = q.remove(idx) else { return };
        let (dev, relay_conn, dev_conn) = (l.dev, l.relay_conn, l.dev_conn);
        if self.rng.chance(f.drop) {
            self.disconnect(dev);
            return;
        }
        let (node, conn) = if to_relay { (RELAY, relay_conn) } else { (dev, dev_conn) };
        let dup = self.rng.chance(f.duplicate);
        self.handle(node, Input::Frame { conn, frame: frame.clone() });
        if dup && self.links.iter().any(|l| l.dev == dev) {
            self.handle(node, Input::Frame { conn, frame });
        }
    }

    pub fn run(&mut self, max_steps: usize) -> usize {
        let mut n = 0;
        while n < max_steps && self.step() {
            n += 1;
        }
        n
    }

    /// Heals the network: no faults, every device connected and told about every document, and
    /// the simulation run until nothing is left to do.
    pub fn heal(&mut self) {
        self.faults = Faults::default();
        let devices: Vec<usize> = (1..self.nodes.len()).collect();
        for d in &devices {
            self.disconnect(*d);
        }
        // Finish outstanding storage work first, as a restarted process would have on disk.
        self.run(1_000_000);
        for d in &devices {
            self.connect(*d);
        }
        self.run(1_000_000);
        let docs = self.docs.clone();
        for d in devices {
            for doc in &docs {
                if self.nodes[d].store.load(doc).is_ok() {
                    self.handle(d, Input::Announce { doc: *doc });
                } else {
                    self.handle(d, Input::Find { doc: *doc });
                }
            }
        }
        let steps = self.run(5_000_000);
        assert!(steps < 5_000_000, "the simulation did not settle");
        // Then, still connected, devices keep editing while exchanges are in flight, and the
        // network settles without any reconnect: acknowledgements must still all arrive.
        if !self.docs.is_empty() {
            for _ in 0..12 {
                let dev = 1 + self.rng.below(self.nodes.len() - 1);
                let doc = self.docs[self.rng.below(self.docs.len())];
                self.edit(dev, doc);
                let n = self.rng.below(12);
                self.run(n);
            }
            let steps = self.run(5_000_000);
            assert!(steps < 5_000_000, "the simulation did not settle");
        }
    }

    pub fn check_converged(&self) {
        for doc in &self.docs {
            let relay = self.nodes[RELAY].store.load(doc).unwrap_or_else(|e| panic!("relay lacks {doc}: {e}"));
            let heads = relay.get_heads();
            for (i, n) in self.nodes.iter().enumerate().skip(1) {
                let d = n.store.load(doc).unwrap_or_else(|e| panic!("device {i} lacks {doc}: {e}"));
                assert_eq!(d.get_heads(), heads, "device {i} differs from the relay on {doc}");
            }
            // Liveness of acknowledgements: once quiet, every device has been told the relay holds
            // exactly what it holds (a device's "everything is stored" indicator depends on it).
            for i in 1..self.nodes.len() {
                let mut heads = heads.clone();
                heads.sort();
                assert_eq!(
                    self.last_acks.get(&(i, *doc)),
                    Some(&heads),
                    "device {i} was never told the relay stored {doc}"
                );
            }
            let plan: EngagementPlan = self.nodes[RELAY].store.get(doc).unwrap();
            for t in self.tokens.get(doc).into_iter().flatten() {
                assert!(plan.notes.as_str().contains(t.as_str()), "edit {t} lost from {doc}");
                assert!(plan.activities.iter().any(|a| &a.id == t), "activity {t} lost from {doc}");
            }
        }
        for (doc, hashes) in &self.made {
            let relay = self.nodes[RELAY].store.load(doc).unwrap();
            for h in hashes {
                assert!(relay.get_change_by_hash(h).is_some(), "change {h} made on a device is missing from {doc}");
            }
        }
    }

    pub fn device_count(&self) -> usize {
        self.nodes.len() - 1
    }

    pub fn relay_resident(&self) -> usize {
        self.nodes[RELAY].engine.resident()
    }
}

#[derive(Debug, Clone)]
enum Act {
    Create(usize),
    Edit(usize, usize),
    Connect(usize),
    Disconnect(usize),
    CrashRelay,
    Run(usize),
}

fn act(devices: usize) -> impl Strategy<Value = Act> {
    let d = 1..=devices;
    prop_oneof![
        2 => d.clone().prop_map(Act::Create),
        5 => (d.clone(), any::<usize>()).prop_map(|(d, i)| Act::Edit(d, i)),
        2 => d.clone().prop_map(Act::Connect),
        1 => d.prop_map(Act::Disconnect),
        1 => Just(Act::CrashRelay),
        4 => (1usize..60).prop_map(Act::Run),
    ]
}

fn play(seed: u64, faults: Faults, acts: &[Act], devices: usize, resident_cap: usize) -> Sim {
    let mut sim = Sim::new(devices, seed, resident_cap);
    sim.faults = faults;
    for a in acts {
        match *a {
            Act::Create(d) => {
                sim.create_plan(d);
            }
            Act::Edit(d, i) => {
                if !sim.docs.is_empty() {
                    let doc = sim.docs[i % sim.docs.len()];
                    sim.edit(d, doc);
                }
            }
            Act::Connect(d) => sim.connect(d),
            Act::Disconnect(d) => sim.disconnect(d),
            Act::CrashRelay => sim.crash_relay(),
            Act::Run(n) => {
                sim.run(n);
            }
        }
    }
    sim.heal();
    sim.check_converged();
    sim
}

proptest! {
    #![proptest_config(ProptestConfig { cases: common::proptest_cases(40), ..ProptestConfig::default() })]

    #[test]
    fn devices_converge_through_a_faulty_network_and_a_crashing_relay(
        seed in any::<u64>(),
        drop in 0u32..40,
        duplicate in 0u32..80,
        reorder in 0u32..80,
        acts in prop::collection::vec(act(3), 1..60),
    ) {
        let sim = play(seed, Faults { drop, duplicate, reorder }, &acts, 3, 4);
        prop_assert!(sim.device_count() == 3);
    }
}

#[test]
fn a_thousand_documents_reach_a_device_that_joins_later() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    let mut sim = Sim::new(2, 7, 500);
    sim.connect(1);
    for _ in 0..1000 {
        sim.create_plan(1);
    }
    sim.run(10_000_000);
    let docs = sim.docs.clone();
    for doc in docs.iter().step_by(10) {
        sim.edit(1, *doc);
    }
    sim.faults = Faults { drop: 1, duplicate: 20, reorder: 20 };
    sim.connect(2);
    sim.run(200_000);
    sim.heal();
    sim.check_converged();
    assert!(sim.acks_checked > 1000, "acks checked: {}", sim.acks_checked);
    assert!(sim.relay_resident() <= 500 + 1, "the relay kept {} documents resident", sim.relay_resident());
}
