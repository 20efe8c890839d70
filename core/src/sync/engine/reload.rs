//! Taking in what another writer of the store stored: relay nodes sharing one database (the
//! cluster mode).
//!
//! A node's copy of a document goes stale when another node stores changes to it. Changes a
//! device sends meanwhile are judged against the stale copy (a record the other node has just
//! locked still looks editable), so they must not be stored as judged: the store refuses the
//! write (`StorageResult::Conflict`, nothing written), or a hint says the document changed
//! (`Input::Reload`). Either way the engine loads the document as stored and makes it its copy
//! (a *rebase*): the changes it held unstored are judged again on it, each for the peer that
//! sent it (`DocEntry::senders`), exactly as a sync message is screened, and those accepted are
//! applied and written on top. Nothing is lost: a change refused now is reported to its sender
//! like any refusal, and was never acknowledged. Peers keep their sync states: nothing
//! unstored was ever advertised to them, so what they know is in the stored document. Only a
//! peer that had a change refused or left out is reset (automerge's `SYNC_RESET`), since its
//! sync state names a change the copy no longer holds.
//!
//! A document the store no longer holds, or one resident only as "missing", is reloaded whole
//! instead: the copy is dropped and every peer that was syncing it is reset, so it sends again
//! what the node lacks.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use automerge::{Automerge, Change, ChangeHash, ReadDoc};

use super::doc::Rebase;
use super::{Access, ConnId, DocEntry, DocPhase, Engine, Event, OnDisk, Output, StorageResult, StorageTask};
use crate::DocumentId;
use crate::sync::screen::{RejudgeInput, rejudge};
use crate::sync::wire::StorageId;

impl Engine {
    /// Takes in the stored document: loads it and rebases the copy on it, once the load or
    /// write of it in flight is done. Nothing for a document not resident.
    pub(super) fn reload(&mut self, doc: DocumentId) {
        let Some(d) = self.docs.get_mut(&doc) else { return };
        if matches!(d.phase, DocPhase::Loading { .. }) || d.disk.writing() || matches!(d.rebase, Rebase::Loading(_)) {
            d.reload_after = true;
            return;
        }
        if matches!(d.phase, DocPhase::Missing) {
            self.reload_whole(doc);
            return;
        }
        d.reload_after = false;
        let task = self.task(doc, StorageTask::Load { doc });
        if let Some(d) = self.docs.get_mut(&doc) {
            d.rebase = Rebase::Loading(task);
        }
    }

    /// Another writer stored `changes`: taken in as stored if the copy is clean, else the copy
    /// is rebased (see [`Input::StoredElsewhere`](super::Input::StoredElsewhere)).
    pub(super) fn on_stored_elsewhere(&mut self, doc: DocumentId, changes: &[u8]) {
        let Some(d) = self.docs.get_mut(&doc) else { return };
        if !matches!(d.phase, DocPhase::Ready) {
            return; // Loading reads them; a missing document is loaded when asked for.
        }
        if d.disk.writing() {
            // Stored before the write in flight: it conflicts and the rebase reads them.
            // Stored after it: taken in once it is done, on top of what it stored.
            d.elsewhere.push(changes.to_vec());
        } else if d.disk.dirty(&d.am) || d.rebase != Rebase::Idle {
            // The next write conflicts, or the rebase under way loads them: either way the
            // copy is rebased on the stored document. Applied now they only add a conflict.
        } else {
            self.on_local_changes(doc, changes);
        }
    }

    /// Drops the resident copy of `doc` and loads it again; its peers are reset.
    pub(super) fn reload_whole(&mut self, doc: DocumentId) {
        let Some(old) = self.docs.remove(&doc) else { return };
        let task = self.task(doc, StorageTask::Load { doc });
        let mut fresh = DocEntry::new(DocPhase::Loading { task, queued: old.held }, self.now);
        fresh.wanted = old.wanted;
        fresh.announced = old.announced;
        fresh.refused = old.refused;
        fresh.waiting = old.waiting;
        fresh.reset_peers = old.peers.keys().copied().chain(old.reset_peers).collect::<BTreeSet<_>>();
        self.docs.insert(doc, fresh);
    }

    /// The load a rebase asked for is done (or failed).
    pub(super) fn on_rebase_loaded(&mut self, doc: DocumentId, result: StorageResult) {
        let Some(d) = self.docs.get_mut(&doc) else { return };
        d.rebase = Rebase::Idle;
        match result {
            StorageResult::Loaded { data: Some(bytes), sync_states } => match Automerge::load(&bytes) {
                Ok(stored) => self.rebase_onto(doc, stored, sync_states),
                Err(_) => self.reload_whole(doc),
            },
            // Removed by another writer (erased, or no longer anyone's): start from scratch.
            StorageResult::Loaded { data: None, .. } => self.reload_whole(doc),
            StorageResult::Failed(message) => {
                d.rebase = Rebase::Owed;
                self.out.push(Output::Event(Event::StorageFailed { doc, message }));
            }
            StorageResult::Stored | StorageResult::Conflict => d.rebase = Rebase::Owed,
        }
    }

    /// Makes `stored` the copy of `doc`, with the unstored changes judged again on it.
    fn rebase_onto(&mut self, doc: DocumentId, stored: Automerge, sync_states: Vec<(StorageId, Vec<u8>)>) {
        let Some(d) = self.docs.get_mut(&doc) else { return };
        let pending: Vec<Change> =
            d.am.get_changes(d.disk.durable())
                .into_iter()
                .filter(|c| stored.get_change_by_hash(&c.hash()).is_none())
                .collect();
        let from: BTreeMap<ChangeHash, ConnId> = std::mem::take(&mut d.senders).into_iter().collect();
        d.senders_in_write = 0;
        let mut by_conn: BTreeMap<ConnId, Vec<Change>> = BTreeMap::new();
        let mut unknown = 0usize;
        for c in pending {
            match from.get(&c.hash()) {
                Some(conn) => by_conn.entry(*conn).or_default().push(c),
                None => unknown += 1,
            }
        }
        let disk = OnDisk::stored(&stored);
        let mut am = stored;
        let mut senders = Vec::new();
        let mut reset = BTreeSet::new();
        let mut refusals = Vec::new();
        for (conn, changes) in by_conn {
            // A sender gone still holds its changes, unacknowledged: it sends them again.
            let Some(peer) = self.peer_of(conn) else { continue };
            let access = self.policy.access(&peer, &doc);
            if access == Access::None {
                // No verdict now (access taken away, or not readable: a policy fails closed
                // while its database restarts): left out, and the peer sends them again.
                reset.insert(conn);
                continue;
            }
            let remembered = self.docs.get(&doc).map(|d| d.refused.clone()).unwrap_or_default();
            let input = RejudgeInput {
                policy: self.policy.as_mut(),
                peer: &peer,
                doc_id: &doc,
                doc: &am,
                access,
                remembered: &remembered,
            };
            match rejudge(input, changes) {
                Ok(j) => {
                    am = j.doc;
                    senders.extend(j.accepted.into_iter().map(|h| (h, conn)));
                    if !j.refused.is_empty() || j.dropped > 0 {
                        reset.insert(conn);
                    }
                    if !j.refused.is_empty() {
                        refusals.push((conn, j.refused, j.refused_raw));
                    }
                }
                Err(_) => {
                    tracing::warn!(document = %doc, "a peer's changes no longer apply on the stored document");
                    reset.insert(conn);
                }
            }
        }
        let Some(d) = self.docs.get_mut(&doc) else { return };
        if unknown > 0 {
            // Changes of no known sender: whoever holds them must send them again.
            tracing::debug!(document = %doc, unknown, "unstored changes without a sender; resetting every peer");
            reset.extend(d.peers.keys().copied());
        }
        tracing::debug!(document = %doc, kept = senders.len(), reset = reset.len(), "rebased on the stored document");
        d.am = am;
        d.disk = disk;
        d.senders = senders;
        d.phase = DocPhase::Ready;
        d.stored_states.extend(sync_states);
        for conn in &reset {
            if let Some(pd) = d.peers.get_mut(conn) {
                pd.sync = automerge::sync::State::new();
                pd.sync.needs_reset = true;
            }
        }
        for (conn, refused, raw) in refusals {
            self.refuse(conn, doc, refused, raw);
        }
        let held = self.docs.get_mut(&doc).map(|d| std::mem::take(&mut d.held)).unwrap_or_default();
        for (conn, msg) in held {
            self.on_doc_message(conn, msg);
        }
        let Some(d) = self.docs.get_mut(&doc) else { return };
        if d.reload_after && !d.disk.dirty(&d.am) {
            // Another writer's change may have come after what this load read.
            self.reload(doc);
        } else {
            self.after_change(doc);
        }
    }

    /// On each tick: reloads and rebases whose load failed are tried again (the store was
    /// unreachable, as while PostgreSQL restarts); without it their peers would wait for an
    /// acknowledgement no one sends.
    pub(super) fn retry_reloads(&mut self) {
        for (doc, mut entry) in std::mem::take(&mut self.reloads_owed) {
            if self.docs.contains_key(&doc) {
                // Loaded again meanwhile (a peer asked): reset its peers there.
                if let Some(d) = self.docs.get_mut(&doc) {
                    d.reset_peers.extend(entry.reset_peers);
                }
                continue;
            }
            let task = self.task(doc, StorageTask::Load { doc });
            entry.phase = DocPhase::Loading { task, queued: VecDeque::new() };
            entry.last_used = self.now;
            self.docs.insert(doc, entry);
        }
        let owed: Vec<DocumentId> =
            self.docs.iter().filter(|(_, d)| d.rebase == Rebase::Owed).map(|(id, _)| *id).collect();
        for doc in owed {
            if let Some(d) = self.docs.get_mut(&doc) {
                d.rebase = Rebase::Idle;
            }
            self.reload(doc);
        }
    }
}
