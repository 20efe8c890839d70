//! Messages the policy could not judge: its store was unreachable (a database restarting), so
//! it could say neither yes nor no. They are held on their connection, in order, and judged
//! again before the connection's next message and on every tick.
//!
//! Neither answer would do while the store is away. "Unavailable" makes the device stop syncing
//! the document with us until it reconnects. Dropping the message unanswered breaks automerge's
//! sync protocol, which assumes every message arrives: the device's sync state counts the
//! changes in it as sent and never offers them again, so they reach us only if a later round
//! happens to reset that state. Held, the message is answered late, exactly as if the network
//! had been slow.
//!
//! Bounded in bytes: one connection holds at most `max_frame` bytes, all connections together
//! at most `max_unjudged_bytes`. Past either, the connection is closed "try again later"; the
//! device reconnects and sends everything again from a fresh sync state, losing nothing.

use std::collections::VecDeque;

use super::{CloseReason, ConnId, Engine};
use crate::DocumentId;
use crate::sync::wire::Message;

/// The messages one connection has waiting for the policy, oldest first.
#[derive(Debug, Default)]
pub(super) struct Unjudged {
    queue: VecDeque<(DocumentId, Message)>,
    bytes: usize,
}

impl Unjudged {
    pub(super) fn bytes(&self) -> usize {
        self.bytes
    }

    fn holds(&self, doc: &DocumentId) -> bool {
        self.queue.iter().any(|(d, _)| d == doc)
    }
}

/// What a held message costs: its sync data and a little for the rest.
pub(super) fn size(msg: &Message) -> usize {
    match msg {
        Message::Request { data, .. } | Message::Sync { data, .. } => data.len() + 128,
        _ => 128,
    }
}

impl Engine {
    /// Whether `msg` must wait behind messages of the same document held on `conn` (their order
    /// is the protocol's).
    pub(super) fn behind_unjudged(&self, conn: ConnId, doc: &DocumentId) -> bool {
        self.conns.get(&conn).is_some_and(|c| c.unjudged.holds(doc))
    }

    /// Holds `msg` on `conn` until the policy can judge it, or closes the connection if that
    /// would pass the bounds.
    pub(super) fn hold_unjudged(&mut self, conn: ConnId, doc: DocumentId, msg: Message) {
        let n = size(&msg);
        let total = self.unjudged_bytes;
        let (max_conn, max_total) = (self.config.max_frame, self.config.max_unjudged_bytes);
        let Some(c) = self.conns.get_mut(&conn) else { return };
        if c.unjudged.bytes + n > max_conn || total + n > max_total {
            tracing::warn!(
                document = %doc,
                held = c.unjudged.bytes,
                held_by_all = total,
                "the store cannot judge this connection's messages and no more may wait: closing it"
            );
            self.close(conn, CloseReason::StoreUnavailable);
            return;
        }
        tracing::debug!(document = %doc, "the policy cannot tell: holding the message");
        c.unjudged.queue.push_back((doc, msg));
        c.unjudged.bytes += n;
        self.unjudged_bytes += n;
    }

    /// Judges `conn`'s held messages in order, stopping at the first the policy still cannot
    /// judge. `true` if none is left.
    pub(super) fn judge_unjudged(&mut self, conn: ConnId) -> bool {
        let Some(c) = self.conns.get_mut(&conn) else { return true };
        if c.unjudged.queue.is_empty() {
            return true;
        }
        let held = std::mem::take(&mut c.unjudged);
        self.unjudged_bytes -= held.bytes;
        let mut rest = held.queue.into_iter();
        while let Some((_, msg)) = rest.next() {
            self.on_doc_message_now(conn, msg);
            let Some(c) = self.conns.get(&conn) else { return true };
            if !c.unjudged.queue.is_empty() {
                // Held again: the store still cannot answer. The rest waits behind it.
                for (doc, msg) in rest {
                    self.hold_unjudged(conn, doc, msg);
                }
                return false;
            }
        }
        true
    }

    /// On each tick: judges what connections hold, until the store proves still unreachable
    /// (one failed read per tick, not one per connection).
    pub(super) fn judge_all_unjudged(&mut self) {
        if self.unjudged_bytes == 0 {
            return;
        }
        let conns: Vec<ConnId> =
            self.conns.iter().filter(|(_, c)| !c.unjudged.queue.is_empty()).map(|(id, _)| *id).collect();
        for conn in conns {
            if !self.judge_unjudged(conn) {
                return;
            }
        }
    }

    /// A connection went: what it held goes with it.
    pub(super) fn forget_unjudged(&mut self, held: &Unjudged) {
        self.unjudged_bytes -= held.bytes();
    }
}
