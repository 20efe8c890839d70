//! The relay's engine actor: one task owns the sync engine; connection tasks send it frames;
//! storage tasks run on blocking threads and report back; once a second it re-checks every
//! connection's credential and grants.

use crate::now_ms;
use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use liaison_core::DocStore;
use liaison_core::sync::engine::Event;
use liaison_core::sync::store_tasks::execute;
use liaison_core::sync::wire::StorageId;
use liaison_core::sync::{ConnId, Engine, EngineConfig, Input, Output, Side};
use tokio::sync::{mpsc, oneshot};

use crate::auth::{AuthStore, Principal};
use crate::error::{ActorGone, MaintenanceError};
use crate::ledger::Ledger;
use crate::metrics::Metrics;
use crate::policy::{PendingOwners, PolicyCache, Principals, RelayPolicy};

/// WebSocket close codes the relay uses (4000-4999 are for applications).
pub mod close {
    pub const GOING_AWAY: u16 = 1001;
    pub const PROTOCOL: u16 = 1002;
    pub const TOO_BIG: u16 = 1009;
    pub const INTERNAL: u16 = 1011;
    pub const TRY_LATER: u16 = 1013;
    pub const AUTH: u16 = 4001;
    pub const RATE: u16 = 4029;
    pub const IDLE: u16 = 4008;
    pub const SLOW: u16 = 4013;
    pub const LIMIT: u16 = 4014;
}

pub use crate::outbox::{Outbox, Outgoing};

mod catalog;
mod cluster;
mod ending;
mod maintenance;
mod positions;
#[cfg(test)]
pub(crate) mod testing;
#[cfg(test)]
mod tests;
mod writer;

pub use cluster::Elsewhere;
use ending::{Ending, close_reason};
use maintenance::{Erasing, Loads, Maintenance};

#[derive(Debug)]
pub enum ActorMsg {
    Open {
        conn: ConnId,
        principal: Principal,
        outbox: Outbox,
    },
    Frame {
        conn: ConnId,
        frame: Vec<u8>,
        /// The frame's room in the actor's inbound byte budget, given back once handled.
        permit: Option<tokio::sync::OwnedSemaphorePermit>,
    },
    Closed {
        conn: ConnId,
    },
    /// The connection's outbox drained while the engine waited for room (`Outbox::want_room`).
    Room {
        conn: ConnId,
    },
    StorageDone {
        task: liaison_core::sync::TaskId,
        result: liaison_core::sync::StorageResult,
    },
    /// Grants or tokens changed: re-check every connection now.
    Recheck,
    /// Erase a document everywhere: tombstone, delete, tell every device syncing it.
    Erase {
        doc: liaison_core::DocumentId,
        reply: MaintenanceReply,
    },
    /// Contract end: revoke the tenant's credentials and cut its connections, then erase every
    /// document and quarantine entry it owns.
    PurgeTenant {
        tenant: String,
        reply: MaintenanceReply,
    },
    /// A purge's credentials are revoked and its documents listed: cut, then erase these.
    PurgeListed {
        docs: Vec<liaison_core::DocumentId>,
    },
    MaintenanceDone {
        erased: Vec<liaison_core::DocumentId>,
    },
    /// A refused change's quarantine write finished.
    Quarantined {
        doc: liaison_core::DocumentId,
    },
    /// The relay changed a document itself (an admin unlock), already stored.
    LocalChanges {
        doc: liaison_core::DocumentId,
        changes: Vec<u8>,
    },
    /// Catalog pages are ready for a connection (or it has room for more).
    CatalogPages {
        conn: ConnId,
    },
    /// Another relay of the cluster stored or erased a document, or changed tokens or grants.
    Hint(crate::storage::hints::HintEvent),
    /// What the catch-up found: resident documents another relay changed, and change-feed
    /// entries past `read`, each with its tenant (see `cluster`).
    Stale {
        docs: Vec<liaison_core::DocumentId>,
        entries: Vec<(String, liaison_core::store::FeedEntry)>,
        read: u64,
    },
    /// The once-a-second re-check's reads, done off the actor.
    Rechecked(Vec<ending::Checked>),
    /// What another relay of the cluster did to a document, read off the actor.
    Elsewhere(Box<Elsewhere>),
    /// Liveness: the actor answers (for `/readyz`).
    Ping(oneshot::Sender<()>),
    Shutdown(oneshot::Sender<()>),
}

/// The fewest documents the policy remembers answers for (see `PolicyCache::new`), whatever
/// the resident cap.
const MIN_POLICY_CACHE: usize = 1024;

/// Where an erasure's or purge's outcome goes: the number of documents erased, or why it failed.
pub type MaintenanceReply = oneshot::Sender<Result<u64, MaintenanceError>>;

#[derive(Debug, Clone)]
pub struct RelayHandle {
    tx: mpsc::Sender<ActorMsg>,
    next_conn: Arc<std::sync::atomic::AtomicU64>,
    /// Bytes of received frames queued for the actor (`max_inbound_queue_bytes`).
    inbound: Arc<tokio::sync::Semaphore>,
    inbound_max: usize,
}

impl RelayHandle {
    /// Waits for room for a received frame of `len` bytes in the actor's inbound budget.
    pub async fn inbound_permit(&self, len: usize) -> Option<tokio::sync::OwnedSemaphorePermit> {
        let n = u32::try_from(len.clamp(1, self.inbound_max.max(1))).unwrap_or(u32::MAX);
        self.inbound.clone().acquire_many_owned(n).await.ok()
    }

    pub fn next_conn(&self) -> ConnId {
        ConnId(self.next_conn.fetch_add(1, std::sync::atomic::Ordering::Relaxed))
    }

    pub async fn send(&self, msg: ActorMsg) {
        let _ = self.tx.send(msg).await;
    }

    /// A round trip: sends the message `request` makes around a reply channel, and waits for
    /// the actor's answer.
    pub async fn ask<T>(&self, request: impl FnOnce(oneshot::Sender<T>) -> ActorMsg) -> Result<T, ActorGone> {
        let (reply, answer) = oneshot::channel();
        self.tx.send(request(reply)).await.map_err(|_| ActorGone)?;
        answer.await.map_err(|_| ActorGone)
    }

    /// Whether the actor answers within `timeout` (it is alive and not stuck).
    pub async fn alive(&self, timeout: Duration) -> bool {
        matches!(tokio::time::timeout(timeout, self.ask(ActorMsg::Ping)).await, Ok(Ok(())))
    }

    /// Closes every connection with "going away" and waits until storage work is done.
    pub async fn shutdown(&self) {
        let _ = self.ask(ActorMsg::Shutdown).await;
    }
}

#[derive(Debug, Clone)]
pub struct RelaySettings {
    pub peer_id: String,
    pub resident_cap: usize,
    pub max_frame: usize,
    pub max_docs_per_conn: usize,
    pub handshake_timeout: Duration,
    pub max_inbound_queue_bytes: usize,
    pub max_loading_documents: usize,
}

impl RelaySettings {
    /// The actor's settings from the relay's configuration.
    pub fn from_config(config: &crate::config::Config) -> Self {
        Self {
            peer_id: config.peer_id.clone(),
            resident_cap: config.resident_documents,
            max_frame: config.limits.max_frame_bytes,
            max_docs_per_conn: config.limits.max_documents_per_connection,
            handshake_timeout: Duration::from_secs(config.limits.handshake_timeout_secs),
            max_inbound_queue_bytes: config.limits.max_inbound_queue_bytes,
            max_loading_documents: config.limits.max_loading_documents.max(1),
        }
    }
}

fn task_doc(op: &liaison_core::sync::StorageTask) -> &liaison_core::DocumentId {
    use liaison_core::sync::StorageTask;
    match op {
        StorageTask::Load { doc } | StorageTask::Append { doc, .. } | StorageTask::SaveSyncStates { doc, .. } => doc,
    }
}

/// Starts the actor; returns its handle.
pub fn spawn(
    store: Arc<DocStore>,
    auth: AuthStore,
    ledger: Arc<Ledger>,
    metrics: Arc<Metrics>,
    settings: RelaySettings,
    hints: Option<Arc<dyn crate::storage::hints::Hints>>,
) -> RelayHandle {
    let (tx, rx) = mpsc::channel(8192);
    let inbound_max = settings.max_inbound_queue_bytes.min(tokio::sync::Semaphore::MAX_PERMITS).min(u32::MAX as usize);
    let handle = RelayHandle {
        tx: tx.clone(),
        next_conn: Arc::new(std::sync::atomic::AtomicU64::new(1)),
        inbound: Arc::new(tokio::sync::Semaphore::new(inbound_max)),
        inbound_max,
    };
    let principals = Principals::default();
    let mut config = EngineConfig::new(settings.peer_id.clone());
    config.storage_id = Some(StorageId(format!("{}-storage", settings.peer_id)));
    config.resident_cap = settings.resident_cap;
    config.max_frame = settings.max_frame;
    config.max_docs_per_conn = settings.max_docs_per_conn;
    // Twice the loads that run at once, so the next are queued when one completes; a phone's
    // other requests wait in the engine as messages, not as document entries.
    config.max_loading = settings.max_loading_documents.max(1).saturating_mul(2);
    config.handshake_timeout_ms = settings.handshake_timeout.as_millis() as i64;
    config.max_inflated_bytes = (settings.max_frame as u64).saturating_mul(4);
    let pending_owners = PendingOwners::default();
    // The documents the policy is asked about are those connections sync: the resident ones,
    // and as many again evicted but still asked for (see `PolicyCache`).
    let policy_cache = PolicyCache::new(settings.resident_cap.max(MIN_POLICY_CACHE));
    let policy =
        RelayPolicy::with_cache(store.clone(), principals.clone(), pending_owners.clone(), policy_cache.clone());
    let engine = Engine::new(config, Box::new(policy), uuid::Uuid::new_v4().to_string());
    let writer = writer::spawn_writer(store.clone(), tx.clone(), metrics.clone());
    let store_cursor = store.feed_cursor();
    if let Some(hints) = &hints {
        cluster::forward(hints, tx.clone());
    }
    let actor = Actor {
        engine,
        writer,
        store,
        auth,
        ledger,
        metrics,
        principals,
        pending_owners,
        policy_cache,
        outboxes: HashMap::new(),
        room_due: Vec::new(),
        tx,
        pending: 0,
        running: HashMap::new(),
        busy_docs: HashMap::new(),
        loads: Loads { max: settings.max_loading_documents.max(1), running: HashSet::new(), waiting: VecDeque::new() },
        shutdown: None,
        maintenance: None,
        held: Vec::new(),
        catalog: catalog::Subscriptions::default(),
        feed_read: if hints.is_some() { store_cursor } else { 0 },
        positions: positions::Positions::default(),
        rechecking: false,
        hints,
    };
    tokio::spawn(actor.run(rx));
    handle
}

struct Actor {
    engine: Engine,
    /// Writes go to the writer thread (group commit); loads run on blocking threads.
    writer: std::sync::mpsc::Sender<(liaison_core::sync::TaskId, liaison_core::sync::StorageTask)>,
    store: Arc<DocStore>,
    auth: AuthStore,
    ledger: Arc<Ledger>,
    metrics: Arc<Metrics>,
    principals: Principals,
    /// New documents accepted but not yet committed (see `PendingOwners`).
    pending_owners: PendingOwners,
    /// What the policy remembers of owners and tombstones; told here what may have changed.
    policy_cache: PolicyCache,
    outboxes: HashMap<ConnId, Outbox>,
    /// Connections whose engine waits for room their outbox has (`give_room`), given after the
    /// message at hand: giving it at once would recurse once per outbox-full on a fast reader.
    room_due: Vec<ConnId>,
    tx: mpsc::Sender<ActorMsg>,
    /// Storage tasks running; shutdown waits for them.
    pending: usize,
    /// The document of each running storage task.
    running: HashMap<liaison_core::sync::TaskId, liaison_core::DocumentId>,
    /// Storage tasks and quarantine writes running per document; an erasure waits for its own.
    busy_docs: HashMap<liaison_core::DocumentId, usize>,
    loads: Loads,
    shutdown: Option<oneshot::Sender<()>>,
    /// An erasure or purge waiting for its documents' running tasks, or running.
    maintenance: Option<Maintenance>,
    held: Vec<(liaison_core::sync::TaskId, liaison_core::sync::StorageTask)>,
    /// Devices that asked for the catalog.
    catalog: catalog::Subscriptions,
    /// In a cluster: the channel to the other relays on the database (see `cluster`).
    hints: Option<Arc<dyn crate::storage::hints::Hints>>,
    /// In a cluster: how far the catch-up has read the change feed.
    feed_read: u64,
    /// In a cluster, where this node last saw its resident documents in the store.
    positions: positions::Positions,
    /// The once-a-second re-check is reading (see `ending::recheck_in_background`).
    rechecking: bool,
}

impl Actor {
    async fn run(mut self, mut rx: mpsc::Receiver<ActorMsg>) {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_count = Instant::now() - Duration::from_secs(60);
        let mut last_catch_up = Instant::now();
        loop {
            tokio::select! {
                msg = rx.recv() => {
                    let Some(msg) = msg else { break };
                    self.on_msg(msg);
                }
                _ = tick.tick() => {
                    self.input(Input::Tick);
                    self.recheck_in_background();
                    self.catalog_tick();
                    if last_catch_up.elapsed() >= cluster::CATCH_UP {
                        last_catch_up = Instant::now();
                        self.catch_up();
                    }
                    if last_count.elapsed() > Duration::from_secs(10) {
                        last_count = Instant::now();
                        let n = self.store.all_documents().map(|d| d.len() as u64).unwrap_or(0);
                        self.metrics.stored_documents.store(n, std::sync::atomic::Ordering::Relaxed);
                    }
                }
            }
            self.give_room_due();
            self.metrics.resident_documents.store(self.engine.resident() as u64, std::sync::atomic::Ordering::Relaxed);
            if self.pending == 0
                && let Some(done) = self.shutdown.take()
            {
                let _ = self.store.flush();
                let _ = done.send(());
                break;
            }
        }
    }

    fn on_msg(&mut self, msg: ActorMsg) {
        match msg {
            ActorMsg::Open { conn, principal, outbox } => {
                if self.shutdown.is_some() {
                    outbox.close(close::GOING_AWAY, "relay shutting down");
                    return;
                }
                self.principals.set(conn, principal);
                self.outboxes.insert(conn, outbox);
                Metrics::add(&self.metrics.connections_open, 1);
                Metrics::add(&self.metrics.connections_total, 1);
                self.input(Input::Connected { conn, side: Side::Receiver });
                self.give_room(conn);
            }
            ActorMsg::Room { conn } => {
                if let Some(bytes) = self.outboxes.get(&conn).map(Outbox::room) {
                    self.input(Input::Room { conn, bytes });
                }
            }
            ActorMsg::Frame { conn, frame, permit } => {
                Metrics::add(&self.metrics.frames_in, 1);
                Metrics::add(&self.metrics.bytes_in, frame.len() as u64);
                self.input(Input::Frame { conn, frame });
                drop(permit);
            }
            ActorMsg::Closed { conn } => self.forget(conn),
            ActorMsg::StorageDone { task, result } => {
                self.pending = self.pending.saturating_sub(1);
                self.positions.done(task, &result);
                if let Some(doc) = self.running.remove(&task) {
                    self.not_busy(doc);
                    // A load (the copy may now be "missing": erased elsewhere) or a write that
                    // lost to another node's: the next message for it asks whether it was erased.
                    use liaison_core::sync::StorageResult;
                    if matches!(result, StorageResult::Loaded { .. } | StorageResult::Conflict) {
                        self.policy_cache.forget_not_erased(&doc);
                    }
                }
                if self.loads.done(task) {
                    self.metrics
                        .loading_documents
                        .store(self.loads.running.len() as u64, std::sync::atomic::Ordering::Relaxed);
                    if let Some((task, op)) = self.loads.waiting.pop_front() {
                        self.run_storage(task, op);
                    }
                }
                self.input(Input::StorageDone { task, result });
                self.maybe_start_maintenance();
            }
            ActorMsg::Quarantined { doc } => {
                self.not_busy(doc);
                self.maybe_start_maintenance();
            }
            ActorMsg::Erase { doc, reply } => {
                self.begin(Erasing::Document(doc), Some(HashSet::from([doc])), reply);
            }
            ActorMsg::PurgeTenant { tenant, reply } => self.purge_requested(tenant, reply),
            ActorMsg::PurgeListed { docs } => self.purge_listed(docs),
            ActorMsg::MaintenanceDone { erased } => {
                self.maintenance = None;
                let mut held = std::mem::take(&mut self.held);
                // Writes held for erased documents would bring them back: drop them.
                held.retain(|(_, op)| !erased.contains(task_doc(op)));
                // Whether it worked or not, what was erased is read again from the store.
                self.policy_cache.forget_all_not_erased();
                for doc in erased {
                    self.policy_cache.erased(&doc);
                    self.pending_owners.forget(&doc);
                    self.input(Input::Erase { doc, notify: true });
                    self.catalog_erased(doc);
                    self.hint_stored(doc);
                    tracing::info!(document = %doc, "document erased");
                }
                self.hint_security();
                // A purged tenant's connections go now, not at the next tick.
                self.recheck();
                for (task, op) in held {
                    self.run_storage(task, op);
                }
            }
            ActorMsg::Recheck => {
                self.recheck();
                self.catalog_tick();
                self.hint_security();
            }
            ActorMsg::CatalogPages { conn } => self.drain_catalog(conn),
            ActorMsg::Ping(reply) => {
                let _ = reply.send(());
            }
            ActorMsg::LocalChanges { doc, changes } => {
                self.input(Input::LocalChanges { doc, changes });
                self.hint_stored(doc);
            }
            ActorMsg::Hint(event) => self.on_hint(event),
            ActorMsg::Elsewhere(news) => self.on_elsewhere(*news),
            ActorMsg::Rechecked(checked) => {
                self.rechecking = false;
                self.apply_recheck(checked);
            }
            ActorMsg::Stale { docs, entries, read } => self.on_stale(docs, entries, read),
            ActorMsg::Shutdown(done) => {
                let conns: Vec<ConnId> = self.outboxes.keys().copied().collect();
                for conn in conns {
                    if self.end(conn, Ending::Close(close::GOING_AWAY, "relay shutting down")) {
                        self.input(Input::Disconnected { conn });
                    }
                }
                self.shutdown = Some(done);
            }
        }
    }

    fn input(&mut self, input: Input) {
        let outputs = self.engine.handle(now_ms(), input);
        for o in outputs {
            match o {
                Output::Send { conn, frame } => {
                    let Some(out) = self.outboxes.get(&conn) else { continue };
                    Metrics::add(&self.metrics.frames_out, 1);
                    Metrics::add(&self.metrics.bytes_out, frame.len() as u64);
                    // The client does not read fast enough (its outbox is full, in bytes or
                    // frames); dropping frames would break sync, so the connection goes at once
                    // (the device reconnects and resumes), its task with it.
                    if !out.frame(frame) && self.end(conn, Ending::Cut("client too slow")) {
                        self.input(Input::Disconnected { conn });
                    }
                }
                Output::Close { conn, reason } => {
                    // The engine has let the connection go already.
                    let (code, text) = close_reason(&reason);
                    if self.end(conn, Ending::Close(code, text)) {
                        tracing::info!(conn = conn.0, reason = text, "closing connection");
                    }
                }
                Output::Storage { task, op } => {
                    if self.held_back(task_doc(&op)) {
                        self.held.push((task, op));
                    } else {
                        self.run_storage(task, op);
                    }
                }
                Output::Event(e) => self.on_event(e),
            }
        }
    }

    fn run_storage(&mut self, task: liaison_core::sync::TaskId, op: liaison_core::sync::StorageTask) {
        if matches!(op, liaison_core::sync::StorageTask::Load { .. }) {
            if self.loads.running.len() >= self.loads.max {
                self.loads.waiting.push_back((task, op));
                return;
            }
            self.loads.running.insert(task);
            let now = self.loads.running.len() as u64;
            self.metrics.loading_documents.store(now, std::sync::atomic::Ordering::Relaxed);
            self.metrics.loading_documents_peak.fetch_max(now, std::sync::atomic::Ordering::Relaxed);
        }
        self.pending += 1;
        let doc = *task_doc(&op);
        if self.hints.is_some()
            && let liaison_core::sync::StorageTask::Append { base, heads, .. } = &op
        {
            self.positions.writing(task, doc, base.clone(), heads.clone());
        }
        self.running.insert(task, doc);
        self.busy(doc);
        let tx = self.tx.clone();
        if !matches!(op, liaison_core::sync::StorageTask::Load { .. }) {
            if let Err(std::sync::mpsc::SendError((task, _))) = self.writer.send((task, op)) {
                // The writer is gone: fail the task so the engine keeps the changes unacknowledged.
                Metrics::add(&self.metrics.storage_failures, 1);
                let failed = liaison_core::sync::StorageResult::Failed("storage writer stopped".into());
                tokio::spawn(async move {
                    let _ = tx.send(ActorMsg::StorageDone { task, result: failed }).await;
                });
            }
            return;
        }
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || {
            let result = execute(&store, &op);
            let _ = tx.blocking_send(ActorMsg::StorageDone { task, result });
        });
    }

    /// The engine's sync messages for `conn` wait for room in its outbox: given after the
    /// message at hand if it has drained, else by the connection's task once it has
    /// (`ActorMsg::Room`).
    fn give_room(&mut self, conn: ConnId) {
        if self.outboxes.get(&conn).is_some_and(Outbox::want_room) {
            self.room_due.push(conn);
        }
    }

    /// Gives the room owed (`give_room`), in a loop: what the engine then generates may fill an
    /// outbox again and owe more.
    fn give_room_due(&mut self) {
        while let Some(conn) = self.room_due.pop() {
            if let Some(bytes) = self.outboxes.get(&conn).map(Outbox::room) {
                self.input(Input::Room { conn, bytes });
            }
        }
    }

    fn on_event(&mut self, e: Event) {
        match e {
            Event::Refused { conn, doc, refused, changes } => {
                for (_, r) in &refused {
                    self.metrics.refused(&r.code);
                }
                tracing::info!(document = %doc, count = refused.len(), code = %refused[0].1.code, "refused changes");
                // Quarantine: refused changes are kept, never silently dropped, indexed by the
                // sender's tenant (a purge finds them). Counted as work on the document, so an
                // erasure waits for it rather than leaving an entry behind.
                let tenant = self.principals.get(conn).map(|p| p.tenant).unwrap_or_default();
                let (store, tx) = (self.store.clone(), self.tx.clone());
                self.busy(doc);
                tokio::task::spawn_blocking(move || {
                    let mut batch = liaison_core::storage::Batch::new();
                    for ((hash, _), raw) in refused.iter().zip(changes) {
                        crate::erasure::quarantine(&mut batch, &tenant, &doc, hash.as_ref(), raw);
                    }
                    if let Err(e) = store.kv().apply(batch).and_then(|()| store.kv().flush()) {
                        tracing::error!(document = %doc, error = %e, "cannot quarantine refused changes");
                    }
                    let _ = tx.blocking_send(ActorMsg::Quarantined { doc });
                });
            }
            Event::Backlogged { conn } => {
                Metrics::add(&self.metrics.backlogged, 1);
                self.give_room(conn);
            }
            Event::StorageFailed { doc, message } => {
                tracing::error!(document = %doc, error = %message, "storage task failed; changes stay unacknowledged");
            }
            Event::PeerReady { peer } => {
                tracing::debug!(conn = peer.conn.0, "peer ready");
                if let Some(request) = &peer.metadata.catalog {
                    self.subscribe(peer.conn, request);
                }
            }
            // Stored: the store's meta names the owner from now on.
            Event::DocChanged { doc, heads } => {
                self.pending_owners.forget(&doc);
                self.catalog_stored(doc, &heads);
                self.hint_stored(doc);
            }
            _ => {}
        }
    }
}
