//! Reloading a document another writer of the store changed: relay nodes sharing one
//! database (the cluster mode).
//!
//! A node's copy of a document goes stale when another node stores changes to it. Changes a
//! device sends meanwhile are judged against the stale copy (a record the other node has just
//! locked still looks editable), so they must not be stored as judged: the store refuses the
//! write (`StorageResult::Conflict`, nothing written), or a hint says the document changed
//! (`Input::Reload`). Either way the engine drops its copy, changes it held unstored included,
//! and loads the document again. Those changes are not lost: they were never acknowledged, so
//! their senders still hold them, and each peer that was syncing the document starts again
//! with a sync reset (automerge's `SYNC_RESET` flag; a peer without it sees empty heads and
//! resyncs whole): it sends again whatever the node lacks, judged this time against the
//! document as stored, the other node's changes included.

use std::collections::{BTreeSet, VecDeque};

use super::{DocEntry, DocPhase, Engine, StorageTask};
use crate::DocumentId;

impl Engine {
    /// Drops the resident copy of `doc` and loads it again, or marks it to be loaded again
    /// once the load or write of it in flight is done. Nothing for a document not resident.
    pub(super) fn reload(&mut self, doc: DocumentId) {
        let Some(d) = self.docs.get_mut(&doc) else { return };
        if matches!(d.phase, DocPhase::Loading { .. }) || d.disk.writing() {
            d.reload_after = true;
            return;
        }
        let Some(old) = self.docs.remove(&doc) else { return };
        let task = self.task(doc, StorageTask::Load { doc });
        let mut fresh = DocEntry::new(DocPhase::Loading { task, queued: VecDeque::new() }, self.now);
        fresh.wanted = old.wanted;
        fresh.announced = old.announced;
        fresh.refused = old.refused;
        fresh.waiting = old.waiting;
        fresh.reset_peers = old.peers.keys().copied().chain(old.reset_peers).collect::<BTreeSet<_>>();
        self.docs.insert(doc, fresh);
    }

    /// On each tick: reloads whose load failed are tried again (the store was unreachable,
    /// as while PostgreSQL restarts), keeping the peers to reset; without it those peers would
    /// wait for an acknowledgement no one sends.
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
    }
}
