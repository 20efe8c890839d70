//! Where this cluster node last saw each resident document in the store: heads the store held,
//! with a number no higher than its next chunk's then (`DocStore::changes_from_chunk`). Another
//! node's write to a document whose copy here is still at those heads is then taken in from the
//! chunks past that number alone, instead of a load of the whole document per edit.
//!
//! A position is a fact about the store, true whatever the engine did with it; it is used only
//! when the engine's durable heads are exactly its heads. It is learned from a read of the
//! store (`Elsewhere`), and moved past this node's own write: a write judged against the heads
//! of the position and stored took one chunk number, so the new heads' next chunk is at least
//! one more (a compaction elsewhere in between only makes that number low, which reads more).

use std::collections::HashMap;

use automerge::ChangeHash;
use liaison_core::DocumentId;
use liaison_core::sync::{StorageResult, TaskId};

/// Heads the store held, and a number no higher than its next chunk's then.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Position {
    heads: Vec<ChangeHash>,
    from: u64,
}

/// The positions of resident documents, and this node's writes in flight.
#[derive(Debug, Default)]
pub(super) struct Positions {
    known: HashMap<DocumentId, Position>,
    /// Each write in flight: its document, the heads it was judged against and those it stores.
    writing: HashMap<TaskId, (DocumentId, Vec<ChangeHash>, Vec<ChangeHash>)>,
}

impl Positions {
    /// The chunk number to read `doc`'s newer changes from, if its copy's durable heads are
    /// those of its position.
    pub(super) fn chunk_to_read_from(&self, doc: &DocumentId, held: Option<&[ChangeHash]>) -> Option<u64> {
        let p = self.known.get(doc)?;
        (Some(p.heads.as_slice()) == held).then_some(p.from)
    }

    /// A read of the store: it held `heads` with its next chunk at `next_chunk`.
    pub(super) fn read(&mut self, doc: DocumentId, heads: Vec<ChangeHash>, next_chunk: u64) {
        self.known.insert(doc, Position { heads, from: next_chunk });
    }

    /// A write of `doc` judged against `base`, storing `heads`, is on its way as `task`.
    pub(super) fn writing(&mut self, task: TaskId, doc: DocumentId, base: Vec<ChangeHash>, heads: Vec<ChangeHash>) {
        self.writing.insert(task, (doc, base, heads));
    }

    /// `task` is done: a write stored on the heads of its document's position moves it on.
    pub(super) fn done(&mut self, task: TaskId, result: &StorageResult) {
        let Some((doc, base, heads)) = self.writing.remove(&task) else { return };
        if !matches!(result, StorageResult::Stored) {
            return;
        }
        if let Some(p) = self.known.get_mut(&doc)
            && p.heads == base
        {
            *p = Position { heads, from: p.from + 1 };
        }
    }

    /// Keeps the positions of the documents `keep` says (the resident ones).
    pub(super) fn retain(&mut self, keep: impl Fn(&DocumentId) -> bool) {
        self.known.retain(|doc, _| keep(doc));
    }

    /// `doc` is gone (erased).
    pub(super) fn forget(&mut self, doc: &DocumentId) {
        self.known.remove(doc);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(n: u8) -> ChangeHash {
        ChangeHash([n; 32])
    }

    #[test]
    fn a_position_serves_only_a_copy_at_its_heads_and_moves_past_this_nodes_own_write() {
        let doc = DocumentId::from_bytes([1; 16]);
        let mut p = Positions::default();
        assert_eq!(p.chunk_to_read_from(&doc, Some(&[h(1)])), None, "nothing read yet");
        p.read(doc, vec![h(1)], 5);
        assert_eq!(p.chunk_to_read_from(&doc, Some(&[h(1)])), Some(5));
        assert_eq!(p.chunk_to_read_from(&doc, Some(&[h(2)])), None, "a copy elsewhere");
        assert_eq!(p.chunk_to_read_from(&doc, None), None, "a copy not durable");

        // Stored on the position's heads: one chunk number further.
        p.writing(TaskId(7), doc, vec![h(1)], vec![h(2)]);
        p.done(TaskId(7), &StorageResult::Stored);
        assert_eq!(p.chunk_to_read_from(&doc, Some(&[h(2)])), Some(6));
        // Lost to another node, or judged against other heads: the position stays.
        p.writing(TaskId(8), doc, vec![h(2)], vec![h(3)]);
        p.done(TaskId(8), &StorageResult::Conflict);
        p.writing(TaskId(9), doc, vec![h(9)], vec![h(4)]);
        p.done(TaskId(9), &StorageResult::Stored);
        assert_eq!(p.chunk_to_read_from(&doc, Some(&[h(2)])), Some(6));
        assert_eq!(p.chunk_to_read_from(&doc, Some(&[h(4)])), None);

        p.retain(|_| false);
        assert_eq!(p.chunk_to_read_from(&doc, Some(&[h(2)])), None);
    }
}
