//! Room on a connection: sync messages are generated only while the driver's queue for the
//! connection has room, so a device on a slow network is paced, not cut.
//!
//! A driver that queues frames per connection in a bounded buffer (the relay's outbox) tells
//! the engine how many bytes the buffer may still take (`Input::Room`), when the connection
//! opens and whenever a backlog drains. Every frame sent counts against it. Once it is spent,
//! the sync messages the engine would generate for that connection wait: the documents are
//! remembered (`owed`, at most one entry per document the connection touched, so bounded by
//! `max_docs_per_conn`) and `Event::Backlogged` tells the driver to say when there is room
//! again. Then the owed documents are generated in turn, until the room is spent again; one
//! evicted meanwhile is loaded again, and its load syncs it with every connection that touched
//! it. Frames other than sync messages (presence, notices, "unavailable") are small and go
//! regardless; they count too. A driver that never says (a device) is never held back.

use std::collections::BTreeSet;

use super::{ConnId, DocPhase, Engine, Event};
use crate::DocumentId;

/// One connection's room, as the driver last told it less what was sent since.
#[derive(Debug, Default)]
pub(super) struct Room {
    /// Bytes the driver's queue may still take; `None`: unbounded (never told).
    left: Option<usize>,
    /// Documents whose sync message waits for room.
    owed: BTreeSet<DocumentId>,
    /// `Event::Backlogged` was emitted and no room has come since.
    told: bool,
}

impl Room {
    /// A frame of `len` bytes went out.
    pub(super) fn spend(&mut self, len: usize) {
        if let Some(left) = &mut self.left {
            *left = left.saturating_sub(len);
        }
    }

    fn spent(&self) -> bool {
        self.left == Some(0)
    }
}

impl Engine {
    /// Whether a sync message for `doc` must wait for room on `conn`; if so it is owed, and the
    /// driver is told once that the connection is backlogged.
    pub(super) fn wait_for_room(&mut self, doc: DocumentId, conn: ConnId) -> bool {
        let Some(c) = self.conns.get_mut(&conn) else { return false };
        if !c.room.spent() {
            return false;
        }
        c.room.owed.insert(doc);
        if !c.room.told {
            c.room.told = true;
            self.out.push(crate::sync::engine::Output::Event(Event::Backlogged { conn }));
        }
        true
    }

    /// The driver's queue for `conn` may take `bytes` more: the owed documents are generated in
    /// order while that lasts.
    pub(super) fn on_room(&mut self, conn: ConnId, bytes: usize) {
        let Some(c) = self.conns.get_mut(&conn) else { return };
        c.room.left = Some(bytes);
        c.room.told = false;
        let owed = std::mem::take(&mut c.room.owed);
        let mut owed = owed.into_iter();
        while let Some(doc) = owed.next() {
            if self.conns.get(&conn).is_none_or(|c| c.room.spent()) {
                // Spent again: the rest waits for the next room, without loading anything.
                let rest: BTreeSet<DocumentId> = std::iter::once(doc).chain(owed).collect();
                if let Some(c) = self.conns.get_mut(&conn) {
                    c.room.owed.extend(rest);
                    if !c.room.told {
                        c.room.told = true;
                        self.out.push(crate::sync::engine::Output::Event(Event::Backlogged { conn }));
                    }
                }
                return;
            }
            match self.docs.get(&doc).map(|d| &d.phase) {
                Some(DocPhase::Ready | DocPhase::Missing) => self.generate(doc, conn),
                // Its load syncs it with every connection that touched it.
                Some(DocPhase::Loading { .. }) => {}
                None => self.start_load(doc),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn room_is_spent_by_what_is_sent_and_unbounded_until_told() {
        let mut r = Room::default();
        r.spend(1 << 30);
        assert!(!r.spent(), "never told: unbounded");
        r.left = Some(100);
        r.spend(60);
        assert!(!r.spent());
        r.spend(60);
        assert!(r.spent(), "a frame larger than what is left spends it all");
    }
}
