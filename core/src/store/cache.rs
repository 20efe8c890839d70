//! The documents loaded for editing, kept for the next edit.

use std::collections::{HashMap, VecDeque};

use automerge::Automerge;

use crate::id::DocumentId;

/// Documents loaded for editing, least recently used first out.
#[derive(Debug, Default)]
pub(super) struct Cache {
    docs: HashMap<DocumentId, Automerge>,
    order: VecDeque<DocumentId>,
}

impl Cache {
    pub(super) fn take(&mut self, id: &DocumentId) -> Option<Automerge> {
        let doc = self.docs.remove(id)?;
        self.order.retain(|d| d != id);
        Some(doc)
    }

    pub(super) fn put(&mut self, id: DocumentId, doc: Automerge, cap: usize) {
        if cap == 0 {
            return;
        }
        self.order.retain(|d| *d != id);
        self.order.push_back(id);
        self.docs.insert(id, doc);
        while self.order.len() > cap {
            if let Some(old) = self.order.pop_front() {
                self.docs.remove(&old);
            }
        }
    }
}
