//! What of a document is on disk, what is being written, and what is only in memory.
//!
//! The durable-acknowledgement rule lives here: a document whose heads are not all on disk
//! ([`OnDisk::unstored`]) is not advertised to any peer, so the heads a peer sees from us have
//! survived a crash. At most one write is in flight per document; a write that fails leaves the
//! changes in memory, unadvertised, and the next change or tick retries.

use automerge::{Automerge, ChangeHash};

use super::TaskId;

/// The document's durable heads and its one write in flight.
#[derive(Debug, Default)]
pub(super) struct OnDisk {
    /// Heads that are on disk; never advertise beyond them.
    durable: Vec<ChangeHash>,
    /// The write in flight and the heads it makes durable.
    in_flight: Option<(TaskId, Vec<ChangeHash>)>,
}

/// A write to start: the changes since the durable heads, and the heads they reach.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Write {
    pub(super) changes: Vec<u8>,
    pub(super) heads: Vec<ChangeHash>,
    /// The durable heads the changes follow.
    pub(super) base: Vec<ChangeHash>,
}

impl OnDisk {
    /// A document loaded from disk (or made there by the application): all of it is durable.
    pub(super) fn stored(am: &Automerge) -> Self {
        Self { durable: am.get_heads(), in_flight: None }
    }

    /// The heads known to be on disk.
    pub(super) fn durable(&self) -> &[ChangeHash] {
        &self.durable
    }

    /// The document holds changes that no write has started to store.
    pub(super) fn dirty(&self, am: &Automerge) -> bool {
        am.get_heads() != self.durable
    }

    /// A write is in flight.
    pub(super) fn writing(&self) -> bool {
        self.in_flight.is_some()
    }

    /// Some of the document is not yet on disk: nothing may be advertised.
    pub(super) fn unstored(&self, am: &Automerge) -> bool {
        self.dirty(am) || self.writing()
    }

    /// The task of the write in flight, for logs.
    pub(super) fn in_flight_task(&self) -> Option<u64> {
        self.in_flight.as_ref().map(|(t, _)| t.0)
    }

    /// Changes the application stored itself were applied: when everything before them was
    /// durable, they are durable as they are (`was_durable` is [`Self::dirty`] before applying).
    pub(super) fn applied_stored(&mut self, am: &Automerge, was_durable: bool) {
        if was_durable {
            self.durable = am.get_heads();
        }
    }

    /// Starts the write of what is not durable, as `task`; `None` when nothing needs writing or
    /// a write is already in flight (its completion starts the next one).
    pub(super) fn begin_write(&mut self, am: &Automerge, task: TaskId) -> Option<Write> {
        if self.writing() || !self.dirty(am) {
            return None;
        }
        let changes = am.save_after(&self.durable);
        let heads = am.get_heads();
        self.in_flight = Some((task, heads.clone()));
        Some(Write { changes, heads, base: self.durable.clone() })
    }

    /// `task` completed: its heads are durable. Returns them, or `None` if `task` is not the
    /// write in flight (a sync-state save, or a write of a document evicted and reloaded since).
    pub(super) fn write_done(&mut self, task: TaskId) -> Option<&[ChangeHash]> {
        let (_, heads) = self.in_flight.take_if(|(t, _)| *t == task)?;
        self.durable = heads;
        Some(&self.durable)
    }

    /// `task` failed: whether it was the write in flight. Its changes stay dirty, to retry.
    pub(super) fn write_failed(&mut self, task: TaskId) -> bool {
        self.in_flight.take_if(|(t, _)| *t == task).is_some()
    }
}

#[cfg(test)]
mod tests {
    use automerge::transaction::Transactable;
    use automerge::{AutoCommit, ROOT};

    use super::*;

    fn edit(doc: &mut Automerge, key: &str) {
        let mut ac = AutoCommit::load(&doc.save()).expect("loads");
        ac.put(ROOT, key, 1).expect("put");
        *doc = Automerge::load(&ac.save()).expect("loads");
    }

    #[test]
    fn a_loaded_document_is_durable_and_an_edit_makes_it_unstored() {
        let mut am = Automerge::new();
        edit(&mut am, "a");
        let mut disk = OnDisk::stored(&am);
        assert!(!disk.unstored(&am));
        assert_eq!(disk.begin_write(&am, TaskId(1)), None, "nothing to write");
        edit(&mut am, "b");
        assert!(disk.dirty(&am) && disk.unstored(&am));
    }

    #[test]
    fn a_write_covers_the_changes_since_the_durable_heads_and_stays_unstored_until_done() {
        let mut am = Automerge::new();
        edit(&mut am, "a");
        let mut disk = OnDisk::stored(&am);
        edit(&mut am, "b");
        let w = disk.begin_write(&am, TaskId(7)).expect("a write starts");
        assert_eq!(w.heads, am.get_heads());
        assert_eq!(am.save_after(disk.durable()), w.changes);
        assert!(!disk.dirty(&am) || disk.writing());
        assert!(disk.unstored(&am), "in flight is not durable");
        assert_eq!(disk.begin_write(&am, TaskId(8)), None, "one write at a time");
        assert_eq!(disk.write_done(TaskId(6)), None, "another task does not complete it");
        assert!(disk.unstored(&am));
        assert_eq!(disk.write_done(TaskId(7)), Some(&am.get_heads()[..]));
        assert!(!disk.unstored(&am));
    }

    #[test]
    fn changes_made_during_a_write_are_written_after_it() {
        let mut am = Automerge::new();
        let mut disk = OnDisk::default();
        edit(&mut am, "a");
        let first = disk.begin_write(&am, TaskId(1)).expect("first write");
        edit(&mut am, "b");
        assert_eq!(disk.write_done(TaskId(1)), Some(&first.heads[..]));
        assert!(disk.unstored(&am), "the second change is not on disk");
        let second = disk.begin_write(&am, TaskId(2)).expect("second write");
        assert_eq!(second.heads, am.get_heads());
    }

    #[test]
    fn a_failed_write_leaves_the_changes_dirty_for_a_retry() {
        let mut am = Automerge::new();
        let mut disk = OnDisk::default();
        edit(&mut am, "a");
        disk.begin_write(&am, TaskId(1)).expect("write");
        assert!(!disk.write_failed(TaskId(2)), "not this write");
        assert!(disk.write_failed(TaskId(1)));
        assert!(disk.dirty(&am) && !disk.writing());
        let retry = disk.begin_write(&am, TaskId(3)).expect("retried");
        assert_eq!(retry.heads, am.get_heads());
    }

    #[test]
    fn changes_stored_by_the_application_are_durable_only_if_all_before_them_was() {
        let mut am = Automerge::new();
        let mut disk = OnDisk::stored(&am);
        edit(&mut am, "a");
        disk.applied_stored(&am, true);
        assert!(!disk.unstored(&am));
        edit(&mut am, "peer");
        let was_durable = !disk.dirty(&am);
        edit(&mut am, "local");
        disk.applied_stored(&am, was_durable);
        assert!(disk.unstored(&am), "the peer's change before it is still not on disk");
    }
}
