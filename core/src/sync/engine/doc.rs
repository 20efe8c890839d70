//! Documents: loading, local changes, storage results and durable writes.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use automerge::{Automerge, ChangeHash};

use super::{
    Conn, ConnId, ConnPhase, Engine, Event, OnDisk, Output, PeerDoc, Refusal, StorageResult, StorageTask, TaskId,
    Write, persistent_storage,
};
use crate::DocumentId;
use crate::sync::wire::{Message, StorageId};

#[derive(Debug)]
pub(super) enum DocPhase {
    Loading {
        task: TaskId,
        queued: VecDeque<(ConnId, Message)>,
    },
    /// Storage does not have it. We may be asking peers for it.
    Missing,
    Ready,
}

#[derive(Debug)]
pub(super) struct DocEntry {
    pub(super) phase: DocPhase,
    pub(super) am: Automerge,
    /// What is on disk and what is being written.
    pub(super) disk: OnDisk,
    pub(super) peers: BTreeMap<ConnId, PeerDoc>,
    /// Sync states loaded from storage for storage ids not connected now.
    pub(super) stored_states: BTreeMap<StorageId, Vec<u8>>,
    pub(super) refused: BTreeMap<ChangeHash, Refusal>,
    pub(super) last_used: i64,
    /// We want this document from peers (Find).
    pub(super) wanted: bool,
    /// A device's document: sync it with every peer.
    pub(super) announced: bool,
    /// Peers that asked while we did not have it; they hear from us once it arrives.
    pub(super) waiting: BTreeSet<ConnId>,
    /// Another writer changed the document while a load or write of ours was in flight: load
    /// it again once that is done (see `reload`).
    pub(super) reload_after: bool,
    /// Peers that were syncing the copy a reload dropped: their next state starts with a sync
    /// reset, so they send again what we lack.
    pub(super) reset_peers: BTreeSet<ConnId>,
    /// The changes received and not yet stored, each with the connection that sent it, in the
    /// order they were applied: judged again if another writer's write wins (see `reload`).
    pub(super) senders: Vec<(ChangeHash, ConnId)>,
    /// How many of `senders` the write in flight covers (they were applied when it began).
    pub(super) senders_in_write: usize,
    /// Loading the stored document to judge the unstored changes again (see `reload`).
    pub(super) rebase: Rebase,
    /// Sync messages that came while a rebase was owed or loading: screened once the copy is
    /// the stored document, not twice (against the stale copy, then again).
    pub(super) held: VecDeque<(ConnId, Message)>,
    /// Changes another node stored while a write of ours was in flight: taken in once it is
    /// done (`Input::StoredElsewhere`).
    pub(super) elsewhere: Vec<Vec<u8>>,
    /// Writes lost to another writer since the last one stored (see `reload`).
    pub(super) conflicts_in_row: u32,
}

/// Where a document stands on taking in another writer's stored changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Rebase {
    /// Nothing to take in.
    Idle,
    /// Loading the stored document, as this task.
    Loading(TaskId),
    /// A load failed (the store was unreachable): tried again on the next tick.
    Owed,
}

impl DocEntry {
    pub(super) fn new(phase: DocPhase, now: i64) -> Self {
        Self {
            phase,
            am: Automerge::new(),
            disk: OnDisk::default(),
            peers: BTreeMap::new(),
            stored_states: BTreeMap::new(),
            refused: BTreeMap::new(),
            last_used: now,
            wanted: false,
            announced: false,
            waiting: BTreeSet::new(),
            reload_after: false,
            reset_peers: BTreeSet::new(),
            senders: Vec::new(),
            senders_in_write: 0,
            rebase: Rebase::Idle,
            held: VecDeque::new(),
            elsewhere: Vec::new(),
            conflicts_in_row: 0,
        }
    }
}

/// A peer's state for a document (`d.peers`), made on first use: resumed from its parked or
/// stored state, with a sync reset if a reload dropped the copy it was syncing. A function of
/// the entry's fields, so the caller may go on using the others.
pub(super) fn peer_entry<'a>(
    peers: &'a mut BTreeMap<ConnId, PeerDoc>,
    stored: &BTreeMap<StorageId, Vec<u8>>,
    reset: &mut BTreeSet<ConnId>,
    conn: ConnId,
    peer: &super::PeerInfo,
    parked: Option<Vec<u8>>,
) -> &'a mut PeerDoc {
    peers.entry(conn).or_insert_with(|| {
        let mut pd = PeerDoc::resume(stored, peer, parked);
        if reset.remove(&conn) {
            pd.sync.needs_reset = true;
        }
        pd
    })
}

impl Engine {
    pub(super) fn task(&mut self, doc: DocumentId, op: StorageTask) -> TaskId {
        let task = TaskId(self.next_task);
        self.next_task += 1;
        self.tasks.insert(task, doc);
        self.out.push(Output::Storage { task, op });
        task
    }

    pub(super) fn start_load(&mut self, doc: DocumentId) {
        if self.docs.contains_key(&doc) {
            return;
        }
        let task = self.task(doc, StorageTask::Load { doc });
        self.docs.insert(doc, DocEntry::new(DocPhase::Loading { task, queued: VecDeque::new() }, self.now));
        self.evict_over_cap();
    }

    pub(super) fn on_announce(&mut self, doc: DocumentId) {
        self.announced.insert(doc);
        let conns: Vec<ConnId> = self.ready_conns();
        match self.docs.get_mut(&doc) {
            Some(d) => {
                d.announced = true;
                if matches!(d.phase, DocPhase::Ready) {
                    for c in conns {
                        self.start_sync_with(doc, c);
                    }
                }
            }
            None if !conns.is_empty() => self.start_load(doc),
            None => {}
        }
    }

    pub(super) fn on_find(&mut self, doc: DocumentId) {
        match self.docs.get_mut(&doc) {
            Some(d) => {
                d.wanted = true;
                if matches!(d.phase, DocPhase::Missing) {
                    for c in self.ready_conns() {
                        self.start_sync_with(doc, c);
                    }
                }
            }
            None => {
                self.start_load(doc);
                if let Some(d) = self.docs.get_mut(&doc) {
                    d.wanted = true;
                }
            }
        }
    }

    pub(super) fn on_local_changes(&mut self, doc: DocumentId, changes: &[u8]) {
        tracing::debug!(document = %doc, bytes = changes.len(), resident = self.docs.contains_key(&doc), "local changes");
        let Some(d) = self.docs.get_mut(&doc) else {
            // Not resident: the next load reads the stored changes. Make sure peers hear of it.
            if self.announced.contains(&doc) && !self.ready_conns().is_empty() {
                self.start_load(doc);
            }
            return;
        };
        if !matches!(d.phase, DocPhase::Ready | DocPhase::Missing) {
            return;
        }
        let was_durable = !d.disk.dirty(&d.am);
        if d.am.load_incremental(changes).is_err() {
            self.out.push(Output::Event(Event::StorageFailed { doc, message: "local changes do not load".into() }));
            return;
        }
        d.phase = DocPhase::Ready;
        d.last_used = self.now;
        // They are already stored by the caller: durable as they are.
        d.disk.applied_stored(&d.am, was_durable);
        self.after_change(doc);
    }

    pub(super) fn on_storage(&mut self, task: TaskId, result: StorageResult) {
        let Some(doc) = self.tasks.remove(&task) else { return };
        let Some(d) = self.docs.get_mut(&doc) else { return };
        if d.rebase == Rebase::Loading(task) {
            self.on_rebase_loaded(doc, result);
            return;
        }
        match (&mut d.phase, result) {
            (DocPhase::Loading { task: t, queued }, StorageResult::Loaded { data, sync_states }) if *t == task => {
                let queued = std::mem::take(queued);
                match data {
                    Some(bytes) => match Automerge::load(&bytes) {
                        Ok(am) => {
                            d.disk = OnDisk::stored(&am);
                            d.am = am;
                            d.phase = DocPhase::Ready;
                        }
                        Err(_) => {
                            d.phase = DocPhase::Missing;
                            self.out.push(Output::Event(Event::StorageFailed {
                                doc,
                                message: "stored document does not load".into(),
                            }));
                        }
                    },
                    None => d.phase = DocPhase::Missing,
                }
                d.stored_states = sync_states.into_iter().collect();
                d.announced = self.announced.contains(&doc);
                let announce = d.announced && matches!(d.phase, DocPhase::Ready);
                let want = d.wanted;
                for (conn, msg) in queued {
                    self.on_doc_message(conn, msg);
                }
                if announce || want {
                    for c in self.ready_conns() {
                        self.start_sync_with(doc, c);
                    }
                }
                // Eviction drops per-peer state, not subscriptions: every live connection that
                // has synced this document hears from it again, so none misses later changes.
                if self.docs.get(&doc).is_some_and(|d| matches!(d.phase, DocPhase::Ready)) {
                    let subscribed: Vec<ConnId> = self
                        .ready_conns()
                        .into_iter()
                        .filter(|c| self.conns.get(c).is_some_and(|x| x.touched.contains(&doc)))
                        .filter(|c| self.docs.get(&doc).is_some_and(|d| !d.peers.contains_key(c)))
                        .collect();
                    for c in subscribed {
                        self.start_sync_with(doc, c);
                    }
                }
                if self.docs.get(&doc).is_some_and(|d| d.reload_after) {
                    // Another writer's change may have come after what this load read.
                    self.reload(doc);
                }
                self.evict_over_cap();
            }
            (DocPhase::Loading { .. }, StorageResult::Failed(message)) => {
                if let Some(entry) = self.docs.remove(&doc)
                    && !entry.reset_peers.is_empty()
                {
                    // A reload: its peers wait for the document as stored; tried again.
                    self.reloads_owed.insert(doc, entry);
                }
                self.out.push(Output::Event(Event::StorageFailed { doc, message }));
            }
            (_, StorageResult::Stored) => {
                tracing::debug!(document = %doc, task = task.0, in_flight = ?d.disk.in_flight_task(), "stored");
                if let Some(heads) = d.disk.write_done(task) {
                    d.conflicts_in_row = 0;
                    let covered = std::mem::take(&mut d.senders_in_write).min(d.senders.len());
                    d.senders.drain(..covered);
                    self.out.push(Output::Event(Event::DocChanged { doc, heads: heads.to_vec() }));
                    let elsewhere = std::mem::take(&mut d.elsewhere);
                    if d.reload_after {
                        self.reload(doc);
                    } else {
                        for changes in elsewhere {
                            self.on_stored_elsewhere(doc, &changes);
                        }
                        self.after_change(doc);
                    }
                }
            }
            (_, StorageResult::Conflict) if d.disk.write_failed(task) => {
                tracing::info!(document = %doc, "another writer changed the document first; judging again on it");
                d.senders_in_write = 0;
                d.elsewhere.clear(); // The rebase loads them.
                d.conflicts_in_row += 1;
                if d.conflicts_in_row > 1 {
                    // Lost again: the nodes race on this document faster than a rebase
                    // completes. Give way: drop the copy, and the devices send again later.
                    self.reload_whole(doc);
                } else {
                    self.reload(doc);
                }
            }
            // Changes stay in memory but are never advertised; the next change or tick retries.
            // The sender still has them: nothing is lost.
            (_, StorageResult::Failed(message)) if d.disk.write_failed(task) => {
                d.senders_in_write = 0;
                if !d.elsewhere.is_empty() {
                    // Whether they came before or after what failed, the stored document has them.
                    d.elsewhere.clear();
                    d.reload_after = true;
                }
                self.out.push(Output::Event(Event::StorageFailed { doc, message }));
            }
            _ => {}
        }
    }

    /// After the document changed or became durable: write what is not durable, else sync.
    pub(super) fn after_change(&mut self, doc: DocumentId) {
        let Some(d) = self.docs.get_mut(&doc) else { return };
        if d.disk.writing() || d.rebase != Rebase::Idle {
            return;
        }
        if let Some(Write { changes, heads, base }) = d.disk.begin_write(&d.am, TaskId(self.next_task)) {
            d.senders_in_write = d.senders.len();
            let sync_states = collect_sync_states(d, &self.conns);
            self.task(doc, StorageTask::Append { doc, changes, heads, sync_states, base });
            return;
        }
        let conns: Vec<ConnId> = d.peers.iter().filter(|(_, p)| p.active).map(|(c, _)| *c).collect();
        for c in conns {
            self.generate(doc, c);
        }
        self.persist_sync_states(doc);
    }

    pub(super) fn persist_sync_states(&mut self, doc: DocumentId) {
        let Some(d) = self.docs.get_mut(&doc) else { return };
        let states = collect_sync_states(d, &self.conns);
        if !states.is_empty() && !d.disk.writing() {
            self.task(doc, StorageTask::SaveSyncStates { doc, sync_states: states });
        }
    }
}

/// Sync states worth persisting: peers with a persistent storage id whose shared heads moved.
pub(super) fn collect_sync_states(d: &mut DocEntry, conns: &BTreeMap<ConnId, Conn>) -> Vec<(StorageId, Vec<u8>)> {
    let mut out = Vec::new();
    for (conn, pd) in d.peers.iter_mut() {
        let Some(Conn { phase: ConnPhase::Ready(p), .. }) = conns.get(conn) else { continue };
        let Some(s) = persistent_storage(&p.metadata) else { continue };
        if let Some(encoded) = pd.persist_due() {
            d.stored_states.insert(s.clone(), encoded.clone());
            out.push((s, encoded));
        }
    }
    out
}
