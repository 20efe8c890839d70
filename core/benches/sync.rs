//! Sync figures the engine is judged by, printed as a table (counts and bytes, not timings):
//!
//! 1. Reconnect after offline edits to 200 documents: round trips, bytes on the wire, and the
//!    ratio of wire bytes to the size of the new changes alone; with sync state resumed from
//!    storage (the normal case) and from scratch (a peer with no storage id), in the same run.
//! 2. Heap of a relay-side engine that has served 10,000 documents, with a resident cap of 500
//!    and, as the peer, with no effective cap.
//!
//! Run: `cargo bench -p liaison-core --bench sync`. Under `cargo test` it runs on small sizes.
#![allow(clippy::unwrap_used, clippy::print_stdout)]

use std::collections::VecDeque;
use std::sync::Arc;

use automerge::sync::SyncDoc;
use liaison_core::model::*;
use liaison_core::storage::MemoryKv;
use liaison_core::store::{ManualClock, StoreOptions};
use liaison_core::sync::testing::{Driver, Storage};
use liaison_core::sync::wire::{Message, StorageId};
use liaison_core::sync::{ConnId, Engine, EngineConfig, Input, OpenPolicy, Output, Side};
use liaison_core::{DocStore, DocumentId, Identity, Role};

#[global_allocator]
static ALLOC: dhat::Alloc = dhat::Alloc;

fn full() -> bool {
    std::env::args().any(|a| a == "--bench")
}

fn store(user: &str) -> DocStore {
    let who = Identity { tenant: "t".into(), user: user.into(), device: "d".into(), role: Role::Msl, install: [0; 8] };
    DocStore::with_kv(
        Arc::new(MemoryKv::new()),
        who,
        Arc::new(ManualClock::new(1_700_000_000_000)),
        StoreOptions::default(),
    )
    .unwrap()
}

/// A device and a relay on one lossless link, pumped in waves to count round trips.
struct Pair {
    nodes: [Driver; 2],
    conns: [ConnId; 2],
    queues: [VecDeque<Vec<u8>>; 2],
    now: i64,
    bytes: u64,
    frames: u64,
    connected: bool,
}

const DEV: usize = 0;
const RELAY: usize = 1;

impl Pair {
    /// With `persistent` false neither side has a storage id: nothing is resumed.
    fn new(persistent: bool) -> Self {
        let device_storage = persistent;
        let mut dc = EngineConfig::new("device-0123456789");
        dc.announce = true;
        dc.storage_id = device_storage.then(|| StorageId("device-storage-0123456789".into()));
        let mut rc = EngineConfig::new("relay");
        rc.storage_id = device_storage.then(|| StorageId("relay-storage".into()));
        Self {
            nodes: [
                Driver::new(Engine::new(dc, Box::new(OpenPolicy), "d".into()), store("dev"), Storage::Immediate),
                Driver::new(Engine::new(rc, Box::new(OpenPolicy), "r".into()), store("relay"), Storage::Immediate),
            ],
            conns: [ConnId(1), ConnId(2)],
            queues: [VecDeque::new(), VecDeque::new()],
            now: 0,
            bytes: 0,
            frames: 0,
            connected: false,
        }
    }

    fn handle(&mut self, node: usize, input: Input) {
        self.now += 1;
        let outs = self.nodes[node].handle_at(self.now, input);
        for o in outs {
            match o {
                Output::Send { frame, .. } => {
                    if self.connected {
                        self.bytes += frame.len() as u64;
                        self.frames += 1;
                        self.queues[1 - node].push_back(frame);
                    }
                }
                Output::Storage { .. } | Output::Close { .. } | Output::Event(_) => {}
            }
        }
    }

    fn connect(&mut self) {
        self.connected = true;
        self.conns = [ConnId(self.conns[0].0 + 2), ConnId(self.conns[1].0 + 2)];
        self.handle(RELAY, Input::Connected { conn: self.conns[RELAY], side: Side::Receiver });
        self.handle(DEV, Input::Connected { conn: self.conns[DEV], side: Side::Initiator });
    }

    fn disconnect(&mut self) {
        self.connected = false;
        self.queues = [VecDeque::new(), VecDeque::new()];
        self.handle(DEV, Input::Disconnected { conn: self.conns[DEV] });
        self.handle(RELAY, Input::Disconnected { conn: self.conns[RELAY] });
    }

    /// Delivers everything queued, wave by wave; returns the number of waves that carried frames.
    fn settle(&mut self) -> u32 {
        let mut waves = 0;
        loop {
            let pending: Vec<(usize, Vec<u8>)> =
                (0..2).flat_map(|n| std::mem::take(&mut self.queues[n]).into_iter().map(move |f| (n, f))).collect();
            if pending.is_empty() {
                return waves;
            }
            waves += 1;
            for (n, frame) in pending {
                let conn = self.conns[n];
                self.handle(n, Input::Frame { conn, frame });
            }
        }
    }
}

struct Reconnect {
    docs: usize,
    change_bytes: u64,
    wire_bytes: u64,
    frames: u64,
    waves: u32,
}

fn reconnect(docs: usize, edit_chars: usize, resume: bool) -> Reconnect {
    let mut p = Pair::new(resume);
    let kol = DocumentId::from_bytes([1; 16]);
    let mut ids = Vec::new();
    for i in 0..docs {
        let mut plan = EngagementPlan::new(&kol, format!("plan {i}"));
        plan.notes = "Quarterly review of unmet needs in second-line therapy.".into();
        plan.activities.push(Activity {
            id: "a1".into(),
            description: "Share subgroup data".into(),
            owner: "sato".into(),
            due: None,
            status: TaskStatus::Open,
        });
        let id = p.nodes[DEV].store.create("team", &plan).unwrap();
        p.handle(DEV, Input::Announce { doc: id });
        ids.push(id);
    }
    p.connect();
    p.settle();
    p.disconnect();

    // Offline: every document gets a note and a status change.
    let text: String =
        "Discussed biomarker testing; KOL asked for the renal subgroup. ".chars().cycle().take(edit_chars).collect();
    let mut change_bytes = 0u64;
    for id in &ids {
        let s = &p.nodes[DEV].store;
        let before = s.load(id).unwrap().get_heads();
        let t = text.clone();
        s.update(id, move |pl: &mut EngagementPlan| {
            let end = pl.notes.as_str().len();
            pl.notes.splice(end, 0, &t);
            pl.activities[0].status = TaskStatus::Done;
        })
        .unwrap();
        let doc = s.load(id).unwrap();
        change_bytes += doc.get_changes(&before).iter().map(|c| c.raw_bytes().len() as u64).sum::<u64>();
        let changes = s.changes_since(id, &before).unwrap();
        p.handle(DEV, Input::LocalChanges { doc: *id, changes });
    }

    p.bytes = 0;
    p.frames = 0;
    p.connect();
    let waves = p.settle();
    let heads_match = ids.iter().all(|id| {
        p.nodes[DEV].store.load(id).unwrap().get_heads() == p.nodes[RELAY].store.load(id).unwrap().get_heads()
    });
    assert!(heads_match, "the relay has every offline edit");
    Reconnect { docs, change_bytes, wire_bytes: p.bytes, frames: p.frames, waves }
}

/// Heap (bytes) of a relay engine after serving `n` documents once each, with `cap` resident.
fn relay_heap(n: usize, cap: usize) -> (u64, usize) {
    let relay_store = store("relay");
    let kol = DocumentId::from_bytes([1; 16]);
    let mut ids = Vec::with_capacity(n);
    for i in 0..n {
        let plan = EngagementPlan {
            notes: format!("notes for plan {i}, with enough text to matter.").into(),
            ..EngagementPlan::new(&kol, format!("plan {i}"))
        };
        ids.push(relay_store.create("team", &plan).unwrap());
    }
    let mut config = EngineConfig::new("relay");
    config.resident_cap = cap;
    let before = dhat::HeapStats::get().curr_bytes as u64;
    let mut e = Driver::new(Engine::new(config, Box::new(OpenPolicy), "s".into()), relay_store, Storage::Immediate);
    let conn = ConnId(1);
    let _ = e.handle_at(0, Input::Connected { conn, side: Side::Receiver });
    let join =
        Message::Join { sender_id: "client".into(), supported_protocol_versions: vec!["1".into()], metadata: None };
    let _ = e.handle_at(1, Input::Frame { conn, frame: join.encode() });
    let empty = automerge::Automerge::new();
    for (i, id) in ids.iter().enumerate() {
        let data = empty.generate_sync_message(&mut automerge::sync::State::new()).unwrap().encode();
        let req = Message::Request { sender_id: "client".into(), target_id: "relay".into(), document_id: *id, data };
        let _ = e.handle_at(2 + i as i64, Input::Frame { conn, frame: req.encode() });
    }
    let _ = e.handle_at(3 + n as i64, Input::Tick);
    let after = dhat::HeapStats::get().curr_bytes as u64;
    let resident = e.engine.resident();
    drop(e);
    (after.saturating_sub(before), resident)
}

fn main() {
    let _profiler = dhat::Profiler::builder().testing().build();
    let (docs, heap_docs, cap) = if full() { (200, 10_000, 500) } else { (10, 200, 20) };

    println!("## Reconnect after offline edits to {docs} documents (one run, this machine)");
    println!("| edit | sync state | round trips | frames | wire bytes | new-change bytes | wire / changes |");
    println!("|---|---|---|---|---|---|---|");
    for edit in [40, 400, 2000] {
        for resume in [true, false] {
            let r = reconnect(docs, edit, resume);
            assert_eq!(r.docs, docs);
            println!(
                "| {edit} chars | {} | {} | {} | {} | {} | {:.2} |",
                if resume { "resumed" } else { "from scratch" },
                r.waves.div_ceil(2),
                r.frames,
                r.wire_bytes,
                r.change_bytes,
                r.wire_bytes as f64 / r.change_bytes as f64
            );
        }
    }

    println!();
    println!("## Relay-side engine heap after serving {heap_docs} documents once each");
    let (capped, resident_capped) = relay_heap(heap_docs, cap);
    let (uncapped, resident_uncapped) = relay_heap(heap_docs, usize::MAX);
    println!("| resident cap | resident after | engine heap | per served doc |");
    println!("|---|---|---|---|");
    println!("| {cap} | {resident_capped} | {:.1} MiB | {} B |", capped as f64 / 1048576.0, capped / heap_docs as u64);
    println!(
        "| none | {resident_uncapped} | {:.1} MiB | {} B |",
        uncapped as f64 / 1048576.0,
        uncapped / heap_docs as u64
    );
    println!("capped / uncapped heap: {:.3}", capped as f64 / uncapped as f64);
    assert!(resident_capped <= cap);
}
