//! The `engine_changes` harness: a small program decoded from fuzz input (with `arbitrary`) runs
//! several principals of two tenants against ONE relay-side engine with the relay's real policy
//! (`RelayPolicy` over a `DocStore` on `MemoryKv`), and checks after every step what must hold
//! whatever devices send:
//!
//! 1. no panic escapes `Engine::handle` (nor a storage task run as `store_tasks::execute` does);
//! 2. a document the relay holds keeps the owner (tenant, team) and kind it was accepted with;
//! 3. every change in it was made under an actor id of a principal of its tenant;
//! 4. no `Sync` or `Request` revealing a document (its heads or changes) reaches a connection
//!    whose principal has no access to it (`policy::access_for`): in particular never another
//!    tenant's.
//!
//! Devices make VALID automerge changes on their own copies (typed model calls and raw
//! puts/deletes/splices/list edits, under their own, another principal's or a random actor),
//! optionally mutate the raw change bytes (bit flips with or without a fixed checksum, inserted
//! bytes, wrong deps, fake compressed chunks, document chunks) and send them in sync frames.
//!
//! Shared by `fuzz/fuzz_targets/engine_changes.rs` and the workspace replay test
//! `server/tests/engine_changes_replay.rs` (included there by path), so kept regressions run on
//! every `cargo test` without cargo-fuzz.

use std::collections::HashMap;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::{Arc, Mutex, Once};

use arbitrary::Arbitrary;
use automerge::sync::{self, ChunkList, MessageVersion, SyncDoc};
use automerge::transaction::Transactable;
use automerge::{ActorId, Automerge, ObjId, ObjType, ReadDoc, ScalarValue, Value};
use liaison_core::id::{actor_belongs_to, actor_principal};
use liaison_core::model::{self, EngagementPlan, Interaction, KolProfile, MedicalInsight, NewDocument};
use liaison_core::storage::MemoryKv;
use liaison_core::store::{ManualClock, StoreOptions};
use liaison_core::sync::testing::{Driver, Storage};
use liaison_core::sync::wire::{self, Message, PeerId, StorageId};
use liaison_core::sync::{Access, ConnId, Engine, EngineConfig, Event, Input, Output, Side, StorageResult};
use liaison_core::{DocStore, DocumentId, Identity, Role};
use liaison_server::auth::{Principal, RoleName};
use liaison_server::policy::{PendingOwners, Principals, RelayPolicy, access_for};
use sha2::{Digest, Sha256};

/// Steps run at most per input (keeps one execution fast).
const MAX_STEPS: usize = 24;
/// Document slots: ids `[slot + 1; 16]`.
const SLOTS: usize = 3;
const TENANTS: [&str; 2] = ["pharma-a", "pharma-b"];
const TEAMS: [&str; 3] = ["east", "west", "north"];

/// (tenant index, user, role, teams): two tenants, MSL / manager / admin / medical information.
const PRINCIPALS: [(usize, &str, RoleName, &[&str]); 6] = [
    (0, "sato", RoleName::Msl, &["east"]),
    (0, "mori", RoleName::Manager, &["east"]),
    (0, "ito", RoleName::Admin, &[]),
    (0, "west", RoleName::Msl, &["west"]),
    (1, "kim", RoleName::Msl, &["east"]),
    (1, "lee", RoleName::Admin, &[]),
];

#[derive(Debug, Arbitrary)]
pub struct Program {
    /// Storage tasks wait for `Step::Storage` (and the end) instead of running at once.
    pub defer_storage: bool,
    pub steps: Vec<Step>,
}

#[derive(Debug, Arbitrary)]
pub enum Step {
    /// `who` creates a record in `slot` as `as_whom` (identity: envelope and actor), for `team`.
    Create {
        who: u8,
        as_whom: u8,
        slot: u8,
        kind: KindSel,
        team: u8,
        send: Send,
    },
    /// `who` edits its copy of `slot` and sends the result.
    Edit {
        who: u8,
        slot: u8,
        actor: ActorSel,
        edit: Edit,
        send: Send,
    },
    /// `who` asks for `slot` (an empty first sync message).
    Request {
        who: u8,
        slot: u8,
    },
    /// Arbitrary sync-message bytes for `slot`.
    RawSync {
        who: u8,
        slot: u8,
        data: Vec<u8>,
    },
    Disconnect {
        who: u8,
    },
    /// Time passes (evictions, timeouts).
    Tick {
        advance_s: u16,
    },
    /// Completes deferred storage tasks.
    Storage {
        count: u8,
        fail: bool,
        from_back: bool,
    },
}

#[derive(Debug, Arbitrary, Clone, Copy)]
pub enum KindSel {
    KolProfile,
    Interaction,
    MedicalInsight,
    EngagementPlan,
}

#[derive(Debug, Arbitrary, Clone)]
pub enum ActorSel {
    Own,
    /// The actor of another principal.
    Other(u8),
    Random(Vec<u8>),
}

#[derive(Debug, Arbitrary)]
pub enum Edit {
    /// One transaction of raw operations.
    Raw(Vec<RawOp>),
    Submit,
    LegalHold(bool),
    Title(String),
}

#[derive(Debug, Arbitrary)]
pub enum RawOp {
    Put { obj: ObjSel, key: KeySel, value: ValSel },
    PutObject { obj: ObjSel, key: KeySel, list: bool },
    Delete { obj: ObjSel, key: KeySel },
    Splice { pos: u16, del: u8, text: String },
    ListInsert { list: u8, index: u8, value: ValSel },
    ListDelete { list: u8, index: u8 },
}

#[derive(Debug, Arbitrary, Clone, Copy)]
pub enum ObjSel {
    Root,
    Envelope,
    CreatedBy,
    Record,
    Authors,
    /// An entry of `authors`, by index.
    Author(u8),
    Submission,
}

#[derive(Debug, Arbitrary)]
pub enum KeySel {
    Known(u8),
    /// The hex actor id of a principal (an `authors` key).
    ActorOf(u8),
    Other(String),
}

#[derive(Debug, Arbitrary)]
pub enum ValSel {
    Known(u8),
    Str(String),
    Int(i64),
    Uint(u64),
    Bool(bool),
    Null,
    Timestamp(i64),
}

#[derive(Debug, Arbitrary)]
pub struct Send {
    pub what: SendWhat,
    /// A `Request` frame instead of `Sync`.
    pub as_request: bool,
    pub mutations: Vec<Mutation>,
}

#[derive(Debug, Arbitrary, Clone, Copy)]
pub enum SendWhat {
    /// The changes this step made, announcing the copy's heads.
    New,
    /// Every change of the copy.
    All,
    /// What automerge's sync protocol generates from the device's sync state.
    Protocol,
}

#[derive(Debug, Arbitrary)]
pub enum Mutation {
    FlipBit {
        chunk: u8,
        pos: u16,
        bit: u8,
        fix_checksum: bool,
    },
    Insert {
        chunk: u8,
        pos: u16,
        bytes: Vec<u8>,
    },
    Truncate {
        chunk: u8,
        len: u16,
    },
    /// Replaces (or adds) the first dependency hash, with a valid checksum.
    WrongDep {
        chunk: u8,
        dep: [u8; 32],
    },
    /// Marks the chunk as compressed (type 2), with a valid checksum.
    FakeCompressed {
        chunk: u8,
    },
    /// Adds the whole document, saved, as a chunk.
    AddDocumentChunk,
    Duplicate {
        chunk: u8,
    },
    Drop {
        chunk: u8,
    },
    Reverse,
    /// Announces heads the device does not have.
    BogusHeads([u8; 32]),
}

const KNOWN_KEYS: [&str; 24] = [
    "tenant",
    "team",
    "created_by",
    "created_at",
    "retention_class",
    "legal_hold",
    "user",
    "device",
    "install",
    "kind",
    "schema",
    "status",
    "submission",
    "unlocks",
    "title",
    "notes",
    "kol_id",
    "name",
    "at",
    "objectives",
    "envelope",
    "record",
    "authors",
    "summary",
];

const KNOWN_VALUES: [&str; 12] =
    ["pharma-a", "pharma-b", "east", "west", "north", "draft", "submitted", "", "sato", "kim", "interaction", "x"];

fn tenant_name(tenant: usize) -> &'static str {
    TENANTS[tenant % TENANTS.len()]
}

fn principal(index: usize) -> Principal {
    let (tenant, user, role, teams) = PRINCIPALS[index % PRINCIPALS.len()];
    Principal {
        tenant: tenant_name(tenant).into(),
        user: user.into(),
        device: format!("{user}-phone"),
        role,
        teams: teams.iter().map(|t| (*t).to_owned()).collect(),
        token_id: format!("tok-{user}"),
        token_hash: String::new(),
        support: Vec::new(),
    }
}

fn identity(index: usize) -> Identity {
    let p = principal(index);
    Identity { tenant: p.tenant, user: p.user, device: p.device, role: p.role.into(), install: [index as u8 + 1; 8] }
}

fn slot_id(slot: usize) -> DocumentId {
    DocumentId::from_bytes([slot as u8 + 1; 16])
}

/// A panic's message, kept by the hook so a panic that escapes is reported with it.
static LAST_PANIC: Mutex<Option<String>> = Mutex::new(None);

fn install_panic_hook() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // Quiet: automerge panics on crafted changes and the engine catches those by design.
        std::panic::set_hook(Box::new(|info| {
            let backtrace = if std::env::var_os("LIAISON_FUZZ_BACKTRACE").is_some() {
                format!("\n{}", std::backtrace::Backtrace::force_capture())
            } else {
                String::new()
            };
            *LAST_PANIC.lock().unwrap_or_else(|p| p.into_inner()) = Some(format!("{info}{backtrace}"));
        }));
    });
}

fn take_panic() -> String {
    LAST_PANIC.lock().unwrap_or_else(|p| p.into_inner()).take().unwrap_or_default()
}

/// Runs `f` on the device side: automerge panicking there is not the relay's problem.
fn device<T>(f: impl FnOnce() -> T) -> Option<T> {
    let r = catch_unwind(AssertUnwindSafe(f)).ok();
    if r.is_none() {
        take_panic();
    }
    r
}

/// A device's copy of one document and its sync state with the relay.
struct Copy {
    doc: Automerge,
    state: sync::State,
}

struct Conn {
    id: ConnId,
    open: bool,
}

/// What the relay accepted a document as.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Accepted {
    tenant: String,
    team: String,
    kind: model::Kind,
}

pub struct Harness {
    d: Driver,
    principals: Principals,
    pending: PendingOwners,
    conns: Vec<Option<Conn>>,
    next_conn: u64,
    copies: HashMap<(usize, usize), Copy>,
    accepted: HashMap<DocumentId, Accepted>,
    now: i64,
}

/// Runs a program; `Err` names the invariant that broke.
pub fn run(program: &Program) -> Result<(), String> {
    install_panic_hook();
    let mut h = Harness::new(program.defer_storage);
    for (i, step) in program.steps.iter().take(MAX_STEPS).enumerate() {
        h.now += 1_000;
        h.step(step).map_err(|e| format!("step {i} ({step:?}): {e}"))?;
        h.check().map_err(|e| format!("after step {i} ({step:?}): {e}"))?;
    }
    h.d.storage = Storage::Immediate;
    h.drain_storage(usize::MAX, false, false)?;
    h.check().map_err(|e| format!("at the end: {e}"))?;
    if std::env::var_os("LIAISON_FUZZ_DUMP").is_some() {
        let changes: Vec<usize> =
            (0..SLOTS).map(|s| h.d.engine.document(&slot_id(s)).map_or(0, |d| d.get_changes(&[]).len())).collect();
        eprintln!("{program:#?}\naccepted: {:?}\nchanges held per slot: {changes:?}", h.accepted);
    }
    Ok(())
}

impl Harness {
    fn new(defer_storage: bool) -> Self {
        let kv = Arc::new(MemoryKv::new());
        let relay_identity = Identity {
            tenant: liaison_server::auth::SYSTEM_TENANT.into(),
            user: "relay".into(),
            device: "relay".into(),
            role: Role::Admin,
            install: [0; 8],
        };
        let store = Arc::new(
            DocStore::with_kv(
                kv,
                relay_identity,
                Arc::new(ManualClock::new(1_700_000_000_000)),
                StoreOptions::default(),
            )
            .unwrap_or_else(|e| panic!("memory store: {e}")),
        );
        let principals = Principals::default();
        let pending = PendingOwners::default();
        let policy = RelayPolicy::new(store.clone(), principals.clone(), pending.clone());
        let mut config = EngineConfig::new("relay");
        config.storage_id = Some(StorageId("relay-storage".into()));
        // Small, so documents are evicted and loaded back from the store.
        config.resident_cap = 2;
        let engine = Engine::new(config, Box::new(policy), "session".into());
        let storage = if defer_storage { Storage::Deferred } else { Storage::Immediate };
        Self {
            d: Driver::new(engine, store, storage),
            principals,
            pending,
            conns: (0..PRINCIPALS.len()).map(|_| None).collect(),
            next_conn: 1,
            copies: HashMap::new(),
            accepted: HashMap::new(),
            now: 0,
        }
    }

    fn handle(&mut self, input: Input) -> Result<(), String> {
        let now = self.now;
        let outs = catch_unwind(AssertUnwindSafe(|| self.d.handle_at(now, input)))
            .map_err(|_| format!("panic escaped Engine::handle or a storage task: {}", take_panic()))?;
        self.pump(outs)
    }

    fn pump(&mut self, outs: Vec<Output>) -> Result<(), String> {
        for out in outs {
            match out {
                Output::Send { conn, frame } => self.on_send(conn, &frame)?,
                Output::Close { conn, .. } => {
                    for slot in self.conns.iter_mut().flatten() {
                        if slot.id == conn {
                            slot.open = false;
                        }
                    }
                    self.principals.remove(conn);
                }
                Output::Storage { .. } => return Err("the driver runs storage tasks".into()),
                Output::Event(Event::DocChanged { doc, .. }) => self.pending.forget(&doc),
                Output::Event(_) => {}
            }
        }
        Ok(())
    }

    /// Completes up to `count` deferred storage tasks, oldest or newest first, or fails them.
    fn drain_storage(&mut self, count: usize, fail: bool, from_back: bool) -> Result<(), String> {
        for _ in 0..count {
            let Some(last) = self.d.pending.len().checked_sub(1) else { break };
            let i = if from_back { last } else { 0 };
            let answer = fail.then(|| StorageResult::Failed("disk full".into()));
            self.d.now = self.now;
            let outs = catch_unwind(AssertUnwindSafe(|| self.d.complete(i, answer)))
                .map_err(|_| format!("panic in a storage task or in Engine::handle(StorageDone): {}", take_panic()))?;
            self.pump(outs.unwrap_or_default())?;
        }
        Ok(())
    }

    /// What the relay accepted `doc` as, if anything: recorded, held, or stored.
    fn owner_now(&self, doc: &DocumentId) -> Option<Accepted> {
        if let Some(a) = self.accepted.get(doc) {
            return Some(a.clone());
        }
        if let Some(held) = self.d.engine.document(doc)
            && !held.get_heads().is_empty()
            && let (Ok((tenant, team)), Ok(kind)) = (model::read_owner(held), model::document_kind(held))
        {
            return Some(Accepted { tenant, team, kind });
        }
        match self.d.store.owner_of(doc) {
            Ok(Some((tenant, team, Some(kind)))) => Some(Accepted { tenant, team, kind }),
            _ => None,
        }
    }

    /// Invariant 4, and delivery of the relay's sync messages to the device's copy.
    fn on_send(&mut self, conn: ConnId, frame: &[u8]) -> Result<(), String> {
        let Some(who) = self.conns.iter().position(|c| c.as_ref().is_some_and(|c| c.id == conn)) else {
            return Ok(());
        };
        let message =
            wire::decode(frame, usize::MAX).map_err(|e| format!("the relay sent an undecodable frame: {e}"))?;
        // Ephemeral messages from the relay are refusal notices about the peer's own changes.
        let (doc, data) = match &message {
            Message::Sync { document_id, data, .. } | Message::Request { document_id, data, .. } => {
                (*document_id, data.clone())
            }
            _ => return Ok(()),
        };
        // The owner is looked up after `handle` returned, so a reply made while the document
        // did not exist yet (heads and changes empty) may be checked against an owner accepted
        // later in the same call: only a message that reveals something about the document
        // (heads or changes) counts.
        let reveals = sync::Message::decode(&data).map_or(true, |m| !m.heads.is_empty() || !m.changes.is_empty());
        if reveals && let Some(owner) = self.owner_now(&doc) {
            let p = principal(who);
            if access_for(&p, &owner.tenant, &owner.team, Some(owner.kind)) == Access::None {
                let (heads, changes) =
                    sync::Message::decode(&data).map_or((0, 0), |m| (m.heads.len(), m.changes.len()));
                return Err(format!(
                    "document {doc} of ({}, {}, {:?}) was sent to {} of {} (no access): a {} with {heads} heads and {changes} changes",
                    owner.tenant,
                    owner.team,
                    owner.kind,
                    p.user,
                    p.tenant,
                    if matches!(message, Message::Sync { .. }) { "sync" } else { "request" },
                ));
            }
        }
        if let Some(slot) = (0..SLOTS).find(|s| slot_id(*s) == doc) {
            let copy = self.copy(who, slot);
            device(|| {
                if let Ok(m) = sync::Message::decode(&data) {
                    let _ = copy.doc.receive_sync_message(&mut copy.state, m);
                }
            });
        }
        Ok(())
    }

    /// Invariants 2 and 3 over every document slot.
    fn check(&mut self) -> Result<(), String> {
        for slot in 0..SLOTS {
            let id = slot_id(slot);
            let Some(held) = self.d.engine.document(&id) else { continue };
            if held.get_heads().is_empty() {
                continue;
            }
            let (tenant, team) =
                model::read_owner(held).map_err(|e| format!("the relay holds {id}, which names no owner: {e}"))?;
            let kind = model::document_kind(held).map_err(|e| format!("the relay holds {id} of no kind: {e}"))?;
            let now = Accepted { tenant, team, kind };
            match self.accepted.get(&id) {
                Some(first) if *first != now => {
                    return Err(format!("{id} was accepted as {first:?} and is now {now:?}"));
                }
                Some(_) => {}
                None => {
                    self.accepted.insert(id, now.clone());
                }
            }
            let tenant_principals: Vec<[u8; 16]> = (0..PRINCIPALS.len())
                .map(principal)
                .filter(|p| p.tenant == now.tenant)
                .map(|p| actor_principal(&p.tenant, &p.user, &p.device))
                .collect();
            for change in held.get_changes(&[]) {
                if !tenant_principals.iter().any(|p| actor_belongs_to(change.actor_id(), p)) {
                    return Err(format!(
                        "{id} of {} holds change {} by actor {}, no principal of that tenant",
                        now.tenant,
                        change.hash(),
                        change.actor_id()
                    ));
                }
            }
            if let Ok(Some((tenant, team, _))) = self.d.store.owner_of(&id)
                && (tenant != now.tenant || team != now.team)
            {
                return Err(format!("{id} is stored as ({tenant}, {team}) but was accepted as {now:?}"));
            }
        }
        Ok(())
    }

    fn copy(&mut self, who: usize, slot: usize) -> &mut Copy {
        self.copies.entry((who, slot)).or_insert_with(|| Copy { doc: Automerge::new(), state: sync::State::new() })
    }

    /// The connection of `who`, connecting and joining first if needed.
    fn connect(&mut self, who: usize) -> Result<ConnId, String> {
        if let Some(c) = &self.conns[who]
            && c.open
        {
            return Ok(c.id);
        }
        let conn = ConnId(self.next_conn);
        self.next_conn += 1;
        let p = principal(who);
        let device = p.device.clone();
        self.principals.set(conn, p);
        self.conns[who] = Some(Conn { id: conn, open: true });
        // A new connection starts a new sync session with the relay.
        for ((w, _), copy) in self.copies.iter_mut() {
            if *w == who {
                copy.state = sync::State::new();
            }
        }
        self.handle(Input::Connected { conn, side: Side::Receiver })?;
        let join =
            Message::Join { sender_id: PeerId(device), supported_protocol_versions: vec!["1".into()], metadata: None };
        self.handle(Input::Frame { conn, frame: join.encode() })?;
        Ok(conn)
    }

    fn step(&mut self, step: &Step) -> Result<(), String> {
        match step {
            Step::Create { who, as_whom, slot, kind, team, send } => {
                let (who, slot) = (*who as usize % PRINCIPALS.len(), *slot as usize % SLOTS);
                let as_whom = identity(*as_whom as usize % PRINCIPALS.len());
                let new = NewDocument {
                    team: TEAMS[*team as usize % TEAMS.len()].into(),
                    retention_class: "standard".into(),
                };
                let kol = slot_id(SLOTS + 1);
                let now = self.now;
                let created = device(|| match kind {
                    KindSel::KolProfile => model::create_document(&as_whom, &new, &KolProfile::new("A", "X"), now),
                    KindSel::Interaction => {
                        model::create_document(&as_whom, &new, &Interaction::new(&kol, now, model::Channel::Phone), now)
                    }
                    KindSel::MedicalInsight => {
                        model::create_document(&as_whom, &new, &MedicalInsight::new("insight", &[kol]), now)
                    }
                    KindSel::EngagementPlan => {
                        model::create_document(&as_whom, &new, &EngagementPlan::new(&kol, "plan"), now)
                    }
                });
                let Some(Ok(doc)) = created else { return Ok(()) };
                let copy = self.copy(who, slot);
                let before = copy.doc.get_heads();
                let Some(Ok(())) = device(|| copy.doc.merge(&mut doc.clone()).map(|_| ())) else { return Ok(()) };
                self.send(who, slot, &before, send)
            }
            Step::Edit { who, slot, actor, edit, send } => {
                let (who, slot) = (*who as usize % PRINCIPALS.len(), *slot as usize % SLOTS);
                let me = identity(who);
                let (actor_id, as_whom) = match actor {
                    ActorSel::Own => (me.actor_id(), me.clone()),
                    ActorSel::Other(i) => {
                        let other = identity(*i as usize % PRINCIPALS.len());
                        (other.actor_id(), other)
                    }
                    ActorSel::Random(bytes) => {
                        let bytes: Vec<u8> = bytes.iter().copied().take(32).collect();
                        (ActorId::from(bytes), me.clone())
                    }
                };
                let now = self.now;
                let copy = self.copy(who, slot);
                let before = copy.doc.get_heads();
                device(|| edit_copy(&mut copy.doc, actor_id, &as_whom, now, edit));
                self.send(who, slot, &before, send)
            }
            Step::Request { who, slot } => {
                let (who, slot) = (*who as usize % PRINCIPALS.len(), *slot as usize % SLOTS);
                let conn = self.connect(who)?;
                let data = Automerge::new().generate_sync_message(&mut sync::State::new()).map(sync::Message::encode);
                let frame = Message::Request {
                    sender_id: PeerId(principal(who).device),
                    target_id: PeerId("relay".into()),
                    document_id: slot_id(slot),
                    data: data.unwrap_or_default(),
                };
                self.handle(Input::Frame { conn, frame: frame.encode() })
            }
            Step::RawSync { who, slot, data } => {
                let (who, slot) = (*who as usize % PRINCIPALS.len(), *slot as usize % SLOTS);
                let conn = self.connect(who)?;
                let frame = Message::Sync {
                    sender_id: PeerId(principal(who).device),
                    target_id: PeerId("relay".into()),
                    document_id: slot_id(slot),
                    data: data.clone(),
                };
                self.handle(Input::Frame { conn, frame: frame.encode() })
            }
            Step::Disconnect { who } => {
                let who = *who as usize % PRINCIPALS.len();
                let Some(c) = self.conns[who].take() else { return Ok(()) };
                self.principals.remove(c.id);
                if c.open { self.handle(Input::Disconnected { conn: c.id }) } else { Ok(()) }
            }
            Step::Tick { advance_s } => {
                self.now += i64::from(*advance_s) * 1_000;
                self.handle(Input::Tick)
            }
            Step::Storage { count, fail, from_back } => self.drain_storage(usize::from(*count % 8), *fail, *from_back),
        }
    }

    /// Sends what the device's copy of `slot` has (per `send`), mutated, to the relay.
    fn send(&mut self, who: usize, slot: usize, before: &[automerge::ChangeHash], send: &Send) -> Result<(), String> {
        let conn = self.connect(who)?;
        let copy = self.copy(who, slot);
        let built = device(|| {
            let mut message = match send.what {
                SendWhat::New | SendWhat::All => {
                    let since: &[automerge::ChangeHash] = if matches!(send.what, SendWhat::New) { before } else { &[] };
                    let chunks: Vec<Vec<u8>> =
                        copy.doc.get_changes(since).iter().map(|c| c.raw_bytes().to_vec()).collect();
                    sync::Message {
                        heads: copy.doc.get_heads(),
                        need: Vec::new(),
                        have: Vec::new(),
                        changes: ChunkList::from(chunks),
                        flags: None,
                        version: MessageVersion::V1,
                    }
                }
                SendWhat::Protocol => copy.doc.generate_sync_message(&mut copy.state)?,
            };
            if !send.mutations.is_empty() {
                let mut chunks: Vec<Vec<u8>> = message.changes.iter().map(<[u8]>::to_vec).collect();
                for m in send.mutations.iter().take(4) {
                    mutate(&mut chunks, &mut message.heads, &copy.doc, m);
                }
                message.changes = ChunkList::from(chunks);
            }
            Some(message.encode())
        });
        let Some(Some(data)) = built else { return Ok(()) };
        let sender_id = PeerId(principal(who).device);
        let frame = if send.as_request {
            Message::Request { sender_id, target_id: PeerId("relay".into()), document_id: slot_id(slot), data }
        } else {
            Message::Sync { sender_id, target_id: PeerId("relay".into()), document_id: slot_id(slot), data }
        };
        self.handle(Input::Frame { conn, frame: frame.encode() })
    }
}

fn key_name(key: &KeySel) -> String {
    match key {
        KeySel::Known(i) => KNOWN_KEYS[*i as usize % KNOWN_KEYS.len()].into(),
        KeySel::ActorOf(i) => identity(*i as usize % PRINCIPALS.len()).actor_id().to_hex_string(),
        KeySel::Other(s) => s.chars().take(16).collect(),
    }
}

fn scalar(value: &ValSel) -> ScalarValue {
    match value {
        ValSel::Known(i) => ScalarValue::Str(KNOWN_VALUES[*i as usize % KNOWN_VALUES.len()].into()),
        ValSel::Str(s) => ScalarValue::Str(s.chars().take(32).collect::<String>().into()),
        ValSel::Int(v) => ScalarValue::Int(*v),
        ValSel::Uint(v) => ScalarValue::Uint(*v),
        ValSel::Bool(v) => ScalarValue::Boolean(*v),
        ValSel::Null => ScalarValue::Null,
        ValSel::Timestamp(v) => ScalarValue::Timestamp(*v),
    }
}

fn map_at<R: ReadDoc>(doc: &R, parent: &ObjId, key: &str) -> Option<ObjId> {
    match doc.get(parent, key) {
        Ok(Some((Value::Object(ObjType::Map), id))) => Some(id),
        _ => None,
    }
}

fn object<R: ReadDoc>(doc: &R, sel: ObjSel) -> Option<ObjId> {
    let root = automerge::ROOT;
    match sel {
        ObjSel::Root => Some(root),
        ObjSel::Envelope => map_at(doc, &root, "envelope"),
        ObjSel::CreatedBy => map_at(doc, &map_at(doc, &root, "envelope")?, "created_by"),
        ObjSel::Record => map_at(doc, &root, "record"),
        ObjSel::Authors => map_at(doc, &root, "authors"),
        ObjSel::Author(i) => {
            let authors = map_at(doc, &root, "authors")?;
            let keys: Vec<String> = doc.keys(&authors).collect();
            let key = keys.get(i as usize % keys.len().max(1))?;
            map_at(doc, &authors, key)
        }
        ObjSel::Submission => map_at(doc, &map_at(doc, &root, "record")?, "submission"),
    }
}

/// The first text object of the record (`notes`, `summary`, `answer` or `text`).
fn record_text<R: ReadDoc>(doc: &R) -> Option<ObjId> {
    let record = map_at(doc, &automerge::ROOT, "record")?;
    ["notes", "summary", "answer", "text"].into_iter().find_map(|k| match doc.get(&record, k) {
        Ok(Some((Value::Object(ObjType::Text), id))) => Some(id),
        _ => None,
    })
}

/// The record's lists, in key order.
fn record_lists<R: ReadDoc>(doc: &R) -> Vec<ObjId> {
    let Some(record) = map_at(doc, &automerge::ROOT, "record") else { return Vec::new() };
    doc.keys(&record)
        .filter_map(|k| match doc.get(&record, k.as_str()) {
            Ok(Some((Value::Object(ObjType::List), id))) => Some(id),
            _ => None,
        })
        .collect()
}

fn edit_copy(doc: &mut Automerge, actor: ActorId, as_whom: &Identity, now: i64, edit: &Edit) {
    match edit {
        Edit::Raw(ops) => {
            doc.set_actor(actor);
            let mut tx = doc.transaction();
            for op in ops.iter().take(6) {
                let _ = raw_op(&mut tx, op);
            }
            tx.commit();
        }
        Edit::Submit => {
            let _ = match model::document_kind(doc) {
                Ok(model::Kind::Interaction) => model::submit_record::<Interaction>(doc, as_whom, now),
                Ok(model::Kind::MedicalInsight) => model::submit_record::<MedicalInsight>(doc, as_whom, now),
                Ok(model::Kind::MedicalInformationRequest) => {
                    model::submit_record::<model::MedicalInformationRequest>(doc, as_whom, now)
                }
                _ => return,
            };
        }
        Edit::LegalHold(hold) => {
            let _ = model::set_legal_hold(doc, as_whom, now, *hold);
        }
        Edit::Title(title) => {
            let title: String = title.chars().take(32).collect();
            let _ = match model::document_kind(doc) {
                Ok(model::Kind::EngagementPlan) => {
                    model::update_record(doc, as_whom, now, |p: &mut EngagementPlan| p.title = title).map(|r| r.0)
                }
                Ok(model::Kind::KolProfile) => {
                    model::update_record(doc, as_whom, now, |p: &mut KolProfile| p.name = title).map(|r| r.0)
                }
                Ok(model::Kind::Interaction) => {
                    model::update_record(doc, as_whom, now, |p: &mut Interaction| p.location = Some(title)).map(|r| r.0)
                }
                _ => return,
            };
        }
    }
}

fn raw_op(tx: &mut automerge::transaction::Transaction<'_>, op: &RawOp) -> Result<(), automerge::AutomergeError> {
    match op {
        RawOp::Put { obj, key, value } => {
            if let Some(obj) = object(tx, *obj) {
                tx.put(&obj, key_name(key), scalar(value))?;
            }
        }
        RawOp::PutObject { obj, key, list } => {
            if let Some(obj) = object(tx, *obj) {
                tx.put_object(&obj, key_name(key), if *list { ObjType::List } else { ObjType::Map })?;
            }
        }
        RawOp::Delete { obj, key } => {
            if let Some(obj) = object(tx, *obj) {
                tx.delete(&obj, key_name(key))?;
            }
        }
        RawOp::Splice { pos, del, text } => {
            if let Some(text_obj) = record_text(tx) {
                let len = tx.length(&text_obj);
                let pos = usize::from(*pos) % (len + 1);
                let del = usize::from(*del).min(len - pos) as isize;
                let text: String = text.chars().take(32).collect();
                tx.splice_text(&text_obj, pos, del, &text)?;
            }
        }
        RawOp::ListInsert { list, index, value } => {
            let lists = record_lists(tx);
            if let Some(l) = lists.get(*list as usize % lists.len().max(1)) {
                let len = tx.length(l);
                tx.insert(l, usize::from(*index) % (len + 1), scalar(value))?;
            }
        }
        RawOp::ListDelete { list, index } => {
            let lists = record_lists(tx);
            if let Some(l) = lists.get(*list as usize % lists.len().max(1)) {
                let len = tx.length(l);
                if len > 0 {
                    tx.delete(l, usize::from(*index) % len)?;
                }
            }
        }
    }
    Ok(())
}

/// Parses a chunk's header: (header length including the LEB length, body start, body length).
fn chunk_layout(chunk: &[u8]) -> Option<(usize, usize)> {
    if chunk.len() < 9 {
        return None;
    }
    let mut len: u64 = 0;
    let mut shift = 0;
    let mut i = 9;
    loop {
        let b = *chunk.get(i)?;
        len |= u64::from(b & 0x7f).checked_shl(shift)?;
        i += 1;
        if b & 0x80 == 0 {
            break;
        }
        shift += 7;
        if shift > 63 {
            return None;
        }
    }
    let body_len = usize::try_from(len).ok()?;
    (i.checked_add(body_len)? <= chunk.len()).then_some((i, body_len))
}

/// Rewrites the checksum (bytes 4..8): the first 4 bytes of SHA-256 over type, length and body.
fn fix_checksum(chunk: &mut [u8]) {
    if let Some((body_start, body_len)) = chunk_layout(chunk) {
        let digest = Sha256::digest(&chunk[8..body_start + body_len]);
        chunk[4..8].copy_from_slice(&digest[..4]);
    }
}

/// Rebuilds the header of a chunk whose body changed length.
fn with_body(chunk_type: u8, body: &[u8], magic: &[u8]) -> Vec<u8> {
    let mut out = magic.to_vec();
    out.extend_from_slice(&[0, 0, 0, 0, chunk_type]);
    let mut len = body.len() as u64;
    loop {
        let b = (len & 0x7f) as u8;
        len >>= 7;
        if len == 0 {
            out.push(b);
            break;
        }
        out.push(b | 0x80);
    }
    out.extend_from_slice(body);
    fix_checksum(&mut out);
    out
}

fn pick(chunks: &[Vec<u8>], i: u8) -> Option<usize> {
    (!chunks.is_empty()).then(|| i as usize % chunks.len())
}

fn mutate(chunks: &mut Vec<Vec<u8>>, heads: &mut Vec<automerge::ChangeHash>, doc: &Automerge, m: &Mutation) {
    match m {
        Mutation::FlipBit { chunk, pos, bit, fix_checksum: fix } => {
            if let Some(c) = pick(chunks, *chunk) {
                let c = &mut chunks[c];
                if !c.is_empty() {
                    let p = usize::from(*pos) % c.len();
                    c[p] ^= 1 << (bit % 8);
                    if *fix && p >= 8 {
                        fix_checksum(c);
                    }
                }
            }
        }
        Mutation::Insert { chunk, pos, bytes } => {
            if let Some(c) = pick(chunks, *chunk) {
                let c = &mut chunks[c];
                let p = usize::from(*pos) % (c.len() + 1);
                c.splice(p..p, bytes.iter().copied().take(64));
            }
        }
        Mutation::Truncate { chunk, len } => {
            if let Some(c) = pick(chunks, *chunk) {
                chunks[c].truncate(usize::from(*len));
            }
        }
        Mutation::WrongDep { chunk, dep } => {
            if let Some(c) = pick(chunks, *chunk)
                && let Some((start, len)) = chunk_layout(&chunks[c])
            {
                let old = &chunks[c];
                let body = &old[start..start + len];
                // The body starts with the number of deps (LEB128) and the deps.
                let Some(&count) = body.first() else { return };
                let new_body: Vec<u8> = if count == 0 {
                    [&[1u8][..], &dep[..], &body[1..]].concat()
                } else if count < 0x80 && body.len() >= 33 {
                    [&body[..1], &dep[..], &body[33..]].concat()
                } else {
                    return;
                };
                let rebuilt = with_body(old[8], &new_body, &old[..4]);
                chunks[c] = rebuilt;
            }
        }
        Mutation::FakeCompressed { chunk } => {
            if let Some(c) = pick(chunks, *chunk)
                && chunks[c].len() > 8
            {
                chunks[c][8] = 2;
                fix_checksum(&mut chunks[c]);
            }
        }
        Mutation::AddDocumentChunk => chunks.push(doc.save()),
        Mutation::Duplicate { chunk } => {
            if let Some(c) = pick(chunks, *chunk) {
                let dup = chunks[c].clone();
                chunks.push(dup);
            }
        }
        Mutation::Drop { chunk } => {
            if let Some(c) = pick(chunks, *chunk) {
                chunks.remove(c);
            }
        }
        Mutation::Reverse => chunks.reverse(),
        Mutation::BogusHeads(h) => heads.push(automerge::ChangeHash(*h)),
    }
}
