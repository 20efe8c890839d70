//! A deterministic simulator: devices and a relay running the real engine and real stores,
//! exchanging frames through a fake network that delays, duplicates, reorders, drops (a drop
//! kills the connection; reconnecting makes a new one) and partitions. Storage answers late, in
//! any order, and fails on command (a key-value store whose writes and flushes fail); any node
//! crashes, losing its storage tasks in flight and every write not flushed, and restarts on
//! what its key-value store kept, with a new engine and a new store object (no cache survives).
//!
//! Checked on every step, both ways: a device never learns relay heads whose changes the relay
//! has not stored, and the relay never learns device heads the device has not stored (durable
//! acknowledgement, for device engines too). Checked at the end, after the network heals: every
//! node has every document with identical heads, and no edit is missing (see `records.rs`).
//!
//! The relay runs the open policy unless a [`Setup`] gives it another: `server/tests` runs the
//! same simulation with the relay's real policy, whose refusals devices then discard, as an app
//! does.

mod acts;
mod records;
mod run;

pub use acts::{Act, random_acts};
pub use records::Expected;

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;

use automerge::{ChangeHash, ReadDoc};

use super::faulty_kv::{Fault, FaultyKv, Map};
use super::{Driver, Storage};
use crate::DocumentId;
use crate::id::{Identity, Role};
use crate::store::{DocStore, ManualClock, StoreOptions};
use crate::sync::engine::{ConnId, Engine, EngineConfig, Event, Input, OpenPolicy, Output, Policy, Side};
use crate::sync::wire::StorageId;

/// Small deterministic RNG so a failing seed replays exactly.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n.max(1) as u64) as usize
    }
    pub fn chance(&mut self, per_mille: u32) -> bool {
        (self.next_u64() % 1000) < u64::from(per_mille)
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
    d: Driver,
    kv: Arc<FaultyKv>,
    config: EngineConfig,
    compact: u64,
    restarts: u64,
}

#[derive(Debug)]
struct Link {
    dev: usize,
    relay_conn: ConnId,
    dev_conn: ConnId,
    to_relay: VecDeque<Vec<u8>>,
    to_dev: VecDeque<Vec<u8>>,
}

/// Makes the relay's policy over its store.
pub type PolicyFactory = Box<dyn Fn(&Arc<DocStore>) -> Box<dyn Policy>>;

/// Who the nodes are and how the relay decides.
pub struct Setup {
    /// The identity node `i` writes as (node 0 is the relay).
    pub identity: Box<dyn Fn(usize) -> Identity>,
    /// The relay's policy over its store; made again each time the relay restarts.
    pub relay_policy: PolicyFactory,
    /// Told of every connection the relay accepts from a device (to authenticate it).
    pub on_connect: Box<dyn FnMut(usize, ConnId)>,
    /// Told of every event of the relay's engine.
    pub on_relay_event: Box<dyn FnMut(&Event)>,
}

impl Default for Setup {
    /// MSLs of one tenant and an open relay.
    fn default() -> Self {
        Self {
            identity: Box::new(|i| {
                let user = format!("user{i}");
                let device = format!("{user}-device");
                Identity { tenant: "pharma-a".into(), user, device, role: Role::Msl, install: [0; 8] }
            }),
            relay_policy: Box::new(|_| Box::new(OpenPolicy)),
            on_connect: Box::new(|_, _| {}),
            on_relay_event: Box::new(|_| {}),
        }
    }
}

impl std::fmt::Debug for Setup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Setup").finish_non_exhaustive()
    }
}

#[derive(Debug)]
pub struct Sim {
    setup: Setup,
    nodes: Vec<Node>,
    links: Vec<Link>,
    pub rng: Rng,
    now: i64,
    next_conn: u64,
    pub faults: Faults,
    /// Document -> hashes of the changes devices made to it.
    made: BTreeMap<DocumentId, BTreeSet<ChangeHash>>,
    pub docs: Vec<DocumentId>,
    pub records: Expected,
    pub acks_checked: u64,
    /// (device, document) -> the last relay heads the device was told.
    last_acks: BTreeMap<(usize, DocumentId), Vec<ChangeHash>>,
    pub frames: u64,
    pub bytes: u64,
    /// Every input and what came of it, when asked for (to compare two runs of one seed).
    pub trace: Option<Vec<String>>,
    /// Changes the relay refused, which devices discarded.
    pub refused: BTreeSet<ChangeHash>,
}

pub const RELAY: usize = 0;

fn open_store(kv: &Arc<FaultyKv>, identity: Identity, compact_after_chunks: u64) -> Arc<DocStore> {
    let store = DocStore::with_kv(
        kv.clone(),
        identity,
        Arc::new(ManualClock::new(1_700_000_000_000)),
        StoreOptions { compact_after_chunks, ..StoreOptions::default() },
    )
    .expect("a store opens on what its key-value store kept");
    Arc::new(store)
}

/// The store's install id (the actor-id part a store makes at random on first open), made
/// from the seed instead, under the store's key for it: a seed replays the same actors.
fn install_id(seed: u64, node: usize) -> Map {
    let bytes = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15).wrapping_add(node as u64).to_le_bytes();
    [(b"!install".to_vec(), bytes.to_vec())].into()
}

impl Sim {
    /// Devices of one tenant and an open relay (see [`Setup::default`]).
    pub fn new(devices: usize, seed: u64, resident_cap: usize) -> Self {
        Self::with_setup(devices, seed, resident_cap, Setup::default())
    }

    pub fn with_setup(devices: usize, seed: u64, resident_cap: usize, setup: Setup) -> Self {
        let mut nodes = Vec::new();
        for i in 0..=devices {
            // A device's peer id is its device id, as the relay's policy requires.
            let identity = (setup.identity)(i);
            let mut config = EngineConfig::new(if i == RELAY { "relay".to_owned() } else { identity.device.clone() });
            config.storage_id = Some(StorageId(format!("storage-{i}")));
            config.announce = i != RELAY;
            config.resident_cap = if i == RELAY { resident_cap } else { 100_000 };
            // The relay compacts often, so group commits that compact are exercised.
            let compact = if i == RELAY { 4 } else { 64 };
            let kv = Arc::new(FaultyKv::new(install_id(seed, i)));
            let store = open_store(&kv, identity, compact);
            let policy = if i == RELAY { (setup.relay_policy)(&store) } else { Box::new(OpenPolicy) };
            let engine = Engine::new(config.clone(), policy, format!("session-{i}-0"));
            let d = Driver::new(engine, store, Storage::Deferred);
            nodes.push(Node { d, kv, config, compact, restarts: 0 });
        }
        Self {
            setup,
            nodes,
            links: Vec::new(),
            rng: Rng(seed | 1),
            now: 0,
            next_conn: 1,
            faults: Faults::default(),
            made: BTreeMap::new(),
            docs: Vec::new(),
            records: Expected::default(),
            acks_checked: 0,
            last_acks: BTreeMap::new(),
            frames: 0,
            bytes: 0,
            trace: None,
            refused: BTreeSet::new(),
        }
    }

    pub fn store(&self, node: usize) -> &DocStore {
        &self.nodes[node].d.store
    }

    pub fn nodes(&self) -> usize {
        self.nodes.len()
    }

    pub fn handle(&mut self, node: usize, input: Input) {
        self.now += 1;
        let label = self.trace.is_some().then(|| format!("{node} @{} {input:?}", self.now));
        let outputs = self.nodes[node].d.handle_at(self.now, input);
        self.route(node, label, outputs);
    }

    fn route(&mut self, node: usize, label: Option<String>, outputs: Vec<Output>) {
        if let (Some(trace), Some(label)) = (self.trace.as_mut(), label) {
            trace.push(format!("{label} => {outputs:?}"));
        }
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
                Output::Storage { .. } => unreachable!("deferred storage tasks wait in the driver"),
                Output::Event(e) => self.on_event(node, e),
            }
        }
    }

    fn owns(l: &Link, node: usize, conn: ConnId) -> bool {
        (node == RELAY && l.relay_conn == conn) || (node == l.dev && l.dev_conn == conn)
    }

    fn on_event(&mut self, node: usize, e: Event) {
        if node == RELAY {
            (self.setup.on_relay_event)(&e);
        }
        if let Event::RefusedByPeer { doc, hashes, .. } = &e
            && node != RELAY
        {
            // As an app does: the refused changes (and what builds on them) leave the local
            // copy, and the engine syncs the copy as stored from now on.
            self.refused.extend(hashes.iter().copied());
            self.store(node).discard_changes(doc, hashes).expect("discards refused changes");
            self.handle(node, Input::Erase { doc: *doc, notify: false });
            self.handle(node, Input::Announce { doc: *doc });
            return;
        }
        let Event::PeerHeads { conn, doc, heads } = e else { return };
        if heads.is_empty() {
            return;
        }
        // The durable-acknowledgement rule, both ways: heads a peer advertises are stored there.
        let peer = if node == RELAY {
            match self.links.iter().find(|l| l.relay_conn == conn) {
                Some(l) => l.dev,
                None => return,
            }
        } else {
            RELAY
        };
        let stored = self
            .store(peer)
            .load(&doc)
            .unwrap_or_else(|e| panic!("node {node} saw heads for {doc} that node {peer} has not stored: {e}"));
        for h in &heads {
            assert!(
                stored.get_change_by_hash(h).is_some(),
                "node {node} saw head {h} for {doc} that node {peer} has not stored"
            );
        }
        self.acks_checked += 1;
        if node != RELAY {
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
        (self.setup.on_connect)(dev, relay_conn);
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

    /// The node's process dies: its connections drop (the peers notice), its storage tasks in
    /// flight are lost, and so is every write its key-value store had not flushed. It restarts
    /// on what is on disk, with a new store object and a new engine; a device announces its
    /// documents again, as the client does at start.
    pub fn crash(&mut self, node: usize) {
        let gone: Vec<usize> = self.links.iter().filter(|l| node == RELAY || l.dev == node).map(|l| l.dev).collect();
        for dev in gone {
            if let Some(i) = self.links.iter().position(|l| l.dev == dev) {
                let l = self.links.remove(i);
                let (survivor, conn) = if node == RELAY { (dev, l.dev_conn) } else { (RELAY, l.relay_conn) };
                self.handle(survivor, Input::Disconnected { conn });
            }
        }
        let identity = (self.setup.identity)(node);
        let n = &mut self.nodes[node];
        n.restarts += 1;
        n.kv = Arc::new(FaultyKv::new(n.kv.disk()));
        let store = open_store(&n.kv, identity, n.compact);
        let policy = if node == RELAY { (self.setup.relay_policy)(&store) } else { Box::new(OpenPolicy) };
        let engine = Engine::new(n.config.clone(), policy, format!("session-{node}-{}", n.restarts));
        n.d = Driver::new(engine, store, Storage::Deferred);
        if node != RELAY {
            let docs = self.store(node).all_documents().expect("lists documents");
            for doc in docs {
                self.handle(node, Input::Announce { doc });
            }
        }
    }

    /// The device learns every document id there is (as from the relay's catalog) and asks for
    /// those it lacks.
    pub fn share(&mut self, dev: usize) {
        for doc in self.docs.clone() {
            if self.store(dev).load(&doc).is_err() {
                self.handle(dev, Input::Find { doc });
            }
        }
    }

    /// Arms a storage fault on a node's key-value store (none disarms).
    pub fn fail_storage(&mut self, node: usize, fault: Option<Fault>) {
        self.nodes[node].kv.fail(fault);
    }

    /// Records the changes a device made (now stored in its store) and tells its engine.
    fn made_locally(&mut self, dev: usize, doc: DocumentId, before: &[ChangeHash]) {
        let s = self.store(dev);
        let after = s.load(&doc).expect("just written").get_heads();
        let changes = s.changes_since(&doc, before).expect("reads changes");
        self.made.entry(doc).or_default().extend(after);
        self.handle(dev, Input::LocalChanges { doc, changes });
    }

    pub fn device_count(&self) -> usize {
        self.nodes.len() - 1
    }

    pub fn relay_resident(&self) -> usize {
        self.nodes[RELAY].d.engine.resident()
    }
}
