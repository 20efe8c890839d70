//! Time: handshake timeouts, idle eviction, write retries and the resident cap.

use super::{CloseReason, ConnId, ConnPhase, DocEntry, DocPhase, Engine, persistent_storage};
use crate::DocumentId;

impl Engine {
    pub(super) fn on_tick(&mut self) {
        let now = self.now;
        let late: Vec<ConnId> = self
            .conns
            .iter()
            .filter(|(_, c)| {
                !matches!(c.phase, ConnPhase::Ready(_)) && now - c.opened_at > self.config.handshake_timeout_ms
            })
            .map(|(id, _)| *id)
            .collect();
        for conn in late {
            self.protocol_error(conn, CloseReason::HandshakeTimeout, "handshake timed out");
        }
        let idle: Vec<DocumentId> = self
            .docs
            .iter()
            .filter(|(_, d)| evictable(d) && now - d.last_used > self.config.idle_evict_ms)
            .map(|(id, _)| *id)
            .collect();
        for doc in idle {
            self.evict(doc);
        }
        // Writes that failed are retried.
        let retry: Vec<DocumentId> = self
            .docs
            .iter()
            .filter(|(_, d)| d.disk.dirty(&d.am) && !d.disk.writing() && matches!(d.phase, DocPhase::Ready))
            .map(|(id, _)| *id)
            .collect();
        for doc in retry {
            self.after_change(doc);
        }
        self.retry_reloads();
        self.judge_all_unjudged();
        self.admit_loads();
        self.evict_rescan_at = 0;
        self.evict_over_cap();
    }

    /// Evicts the least recently used evictable documents once past the cap, down to a tenth
    /// below it. The scan is over every resident document, so it must not run for every load:
    /// going a tenth below the cap leaves room for that many loads before the next scan (with
    /// loads admitted a few at a time, evicting only down to the cap scanned 2,000 documents per
    /// load and doubled a new phone's relay CPU), and after a scan that could not get under the
    /// cap (documents loading or wanted cannot go) the next waits until a tenth of the cap more
    /// documents came or a tick passed: a peer asking for 44,000 documents at once made every
    /// load rescan them all (quadratic: minutes instead of seconds for a new phone's first sync).
    pub(super) fn evict_over_cap(&mut self) {
        if self.docs.len() <= self.config.resident_cap || self.docs.len() < self.evict_rescan_at {
            return;
        }
        self.eviction_scans += 1;
        let mut candidates: Vec<(i64, DocumentId)> =
            self.docs.iter().filter(|(_, d)| evictable(d)).map(|(id, d)| (d.last_used, *id)).collect();
        candidates.sort();
        let low = self.config.resident_cap - self.config.resident_cap / 10;
        let excess = self.docs.len() - low;
        for (_, doc) in candidates.into_iter().take(excess) {
            self.evict(doc);
        }
        self.evict_rescan_at = if self.docs.len() > self.config.resident_cap {
            self.docs.len() + (self.config.resident_cap / 10).max(1)
        } else {
            0
        };
    }

    pub(super) fn evict(&mut self, doc: DocumentId) {
        let Some(d) = self.docs.remove(&doc) else { return };
        // Sync states of peers without a persistent storage id are parked, encoded, on their
        // connection; the others are already in storage.
        for (conn, pd) in d.peers {
            let Some(c) = self.conns.get_mut(&conn) else { continue };
            if let ConnPhase::Ready(p) = &c.phase
                && persistent_storage(&p.metadata).is_none()
            {
                c.parked.insert(doc, pd.sync.encode());
            }
        }
    }
}

pub(super) fn evictable(d: &DocEntry) -> bool {
    match &d.phase {
        DocPhase::Ready | DocPhase::Missing => {
            !d.disk.unstored(&d.am) && !d.wanted && d.rebase == super::doc::Rebase::Idle
        }
        DocPhase::Loading { .. } => false,
    }
}
