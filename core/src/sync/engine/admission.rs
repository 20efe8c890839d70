//! Loads for peers' messages, admitted a few at a time.
//!
//! A new phone asks for every document of its team at once: tens of thousands of requests.
//! Each document not resident gets an entry that waits for its load, and an entry holds an
//! empty automerge document and its maps: kilobytes, so 44,000 waiting entries made a relay's
//! resident memory pass 1 GiB for one phone. With `max_loading` set, at most that many
//! documents load at once for peers' messages; the messages for the others wait here, in order,
//! as they came (tens of bytes each), and are taken up as loads complete. A message for a
//! document already waiting goes behind it. The relay sets it to twice its
//! `max_loading_documents`; by default (a device) nothing waits.
//!
//! What one connection has waiting is bounded in bytes: `max_waiting_bytes`, 64 MiB (a phone's
//! 44,000 requests are about 11 MB). Past it the connection is closed
//! (`CloseReason::TooMuchWaiting`): a device sending large sync messages for documents still
//! waiting cannot grow the relay's memory without bound.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use super::{ConnId, DocPhase, Engine};
use crate::DocumentId;
use crate::sync::wire::Message;

/// Messages waiting for their document's load to be admitted, and the loads admitted.
#[derive(Debug, Default)]
pub(super) struct Admission {
    /// Documents loading for peers' messages (admitted, not yet loaded).
    loading: BTreeSet<DocumentId>,
    /// Documents with messages waiting, in the order of their first message.
    order: VecDeque<DocumentId>,
    /// The messages waiting, per document, oldest first.
    waiting: BTreeMap<DocumentId, VecDeque<(ConnId, Message)>>,
    /// Bytes waiting, per connection (`unjudged::size` of each message).
    bytes: BTreeMap<ConnId, usize>,
}

impl Engine {
    /// Whether a message for `doc` must wait here: its load is not admitted yet, or others for
    /// it wait already. If so it is kept; else it is handed back.
    pub(super) fn wait_for_load(&mut self, doc: DocumentId, conn: ConnId, msg: Message) -> Option<Message> {
        let a = &mut self.admission;
        let queued = a.waiting.contains_key(&doc);
        if !queued && a.loading.len() < self.config.max_loading {
            return Some(msg);
        }
        let cost = super::unjudged::size(&msg);
        let bytes = a.bytes.entry(conn).or_default();
        if *bytes + cost > self.config.max_waiting_bytes {
            tracing::warn!(document = %doc, waiting = *bytes, "a connection's messages waiting for loads passed their bound: closing it");
            self.protocol_error(conn, super::CloseReason::TooMuchWaiting, "too much waiting for loads");
            return None;
        }
        *bytes += cost;
        match a.waiting.get_mut(&doc) {
            Some(queue) => queue.push_back((conn, msg)),
            None => {
                a.order.push_back(doc);
                a.waiting.insert(doc, VecDeque::from([(conn, msg)]));
            }
        }
        None
    }

    /// A load admitted for a peer's message.
    pub(super) fn admitted(&mut self, doc: DocumentId) {
        if self.config.max_loading != usize::MAX {
            self.admission.loading.insert(doc);
        }
    }

    /// Takes up waiting messages while loads may be admitted: after a storage task completes,
    /// and on each tick (which also forgets admitted documents no longer loading, whatever ended
    /// it).
    pub(super) fn admit_loads(&mut self) {
        if self.admission.loading.is_empty() && self.admission.order.is_empty() {
            return;
        }
        let docs = &self.docs;
        self.admission.loading.retain(|d| matches!(docs.get(d).map(|e| &e.phase), Some(DocPhase::Loading { .. })));
        while self.admission.loading.len() < self.config.max_loading {
            let Some(doc) = self.admission.order.pop_front() else { break };
            let Some(messages) = self.admission.waiting.remove(&doc) else { continue };
            // In order: the first starts the load, the others queue behind it on the entry.
            for (conn, msg) in messages {
                if let Some(b) = self.admission.bytes.get_mut(&conn) {
                    *b = b.saturating_sub(super::unjudged::size(&msg));
                }
                self.on_doc_message_now(conn, msg);
            }
        }
    }

    /// A connection went: its waiting messages go with it.
    pub(super) fn forget_waiting_loads(&mut self, conn: ConnId) {
        let a = &mut self.admission;
        a.bytes.remove(&conn);
        if a.waiting.is_empty() {
            return;
        }
        a.waiting.retain(|_, queue| {
            queue.retain(|(c, _)| *c != conn);
            !queue.is_empty()
        });
        let waiting = &a.waiting;
        a.order.retain(|d| waiting.contains_key(d));
    }
}
