//! Local writes the relay has not acknowledged yet, kept on disk (`p/ID`: the document's heads
//! after its last local write), so a device that restarts offline still knows what to send.
//!
//! Every local write ([`Origin::Local`](super::Origin::Local) in `commit_with`, and discarding
//! refused changes) marks its document in the same batch as the write; remote writes do not.
//! The mark goes when the relay acknowledges those heads ([`DocStore::acknowledge`]) or the
//! document is deleted. A store written before marks existed has no `!pending-v1`: the first
//! [`DocStore::pending_documents`] marks every document it holds, once.

use automerge::ChangeHash;

use super::cache::Cache;
use super::index::{hashes_from_bytes, hashes_to_bytes};
use super::{DocStore, StoreError, keys, lock};
use crate::id::DocumentId;
use crate::storage::{Batch, KvStore};

impl DocStore {
    /// Documents with local writes not yet acknowledged, in id order. The first call on a store
    /// written before pending marks existed marks every document pending (once; marker key
    /// `!pending-v1`), since nothing says the relay has them.
    pub fn pending_documents(&self) -> Result<Vec<DocumentId>, StoreError> {
        {
            let mut cache = lock(&self.cache);
            if self.kv.get(keys::PENDING_MARKER)?.is_none() {
                self.mark_all_pending(&mut cache)?;
            }
        }
        let mut out = Vec::new();
        for key in self.kv.scan_keys(keys::PENDING_PREFIX)? {
            match keys::trailing_id(&key).filter(|_| key.len() == keys::PENDING_PREFIX.len() + 16) {
                Some(id) => out.push(id),
                None => tracing::warn!("skipping a malformed pending mark key"),
            }
        }
        Ok(out)
    }

    /// The relay holds every change of `id` the caller checked. `covered` is asked about the
    /// heads of the document's last local write (the mark) and says whether they are among
    /// what was checked; if so the mark goes. A local write after the check marks heads the
    /// check never saw, so it keeps the mark. Returns whether the document is now unmarked
    /// (also when it was not marked). [`StoreError::Corrupt`] if the stored mark is unreadable
    /// ([`DocStore::mark_pending`] rewrites it).
    pub fn acknowledge(
        &self,
        id: &DocumentId,
        covered: impl FnOnce(&[ChangeHash]) -> bool,
    ) -> Result<bool, StoreError> {
        let _cache = lock(&self.cache);
        let key = keys::pending(id);
        let Some(stored) = self.kv.get(&key)? else {
            return Ok(true);
        };
        let recorded =
            hashes_from_bytes(&stored).ok_or(StoreError::Corrupt { id: *id, reason: "pending mark unreadable" })?;
        if !covered(&recorded) {
            return Ok(false);
        }
        self.kv.delete(&key)?;
        self.durable()?;
        Ok(true)
    }

    /// Marks a document pending at its current heads, e.g. after the app asks to resend it.
    /// [`StoreError::NotFound`] if it is not stored.
    pub fn mark_pending(&self, id: &DocumentId) -> Result<(), StoreError> {
        let mut cache = lock(&self.cache);
        let meta = self.read_meta(id)?.ok_or(StoreError::NotFound(*id))?;
        let heads = self.heads_locked(&mut cache, id, &meta)?;
        self.kv.put(&keys::pending(id), &hashes_to_bytes(&heads))?;
        self.durable()
    }

    /// Marks every stored document pending at its heads and writes the marker, in one batch.
    /// A document whose heads cannot be read (damaged) is marked with none, so it is still sent.
    fn mark_all_pending(&self, cache: &mut Cache) -> Result<(), StoreError> {
        let mut batch = Batch::new();
        for key in self.kv.scan_keys(keys::META_PREFIX)? {
            let Some(id) = keys::trailing_id(&key).filter(|_| key.len() == keys::META_PREFIX.len() + 16) else {
                tracing::warn!("skipping a malformed meta key");
                continue;
            };
            let heads = match self.read_meta(&id) {
                Ok(Some(meta)) => self.heads_locked(cache, &id, &meta),
                Ok(None) => continue,
                Err(e) => Err(e),
            };
            let heads = heads.unwrap_or_else(|e| {
                tracing::warn!(document = %id, error = %e, "heads unreadable; marked pending without them");
                Vec::new()
            });
            batch.put(keys::pending(&id), hashes_to_bytes(&heads));
        }
        tracing::info!(documents = batch.len(), "marking every document of an older store pending");
        batch.put(keys::PENDING_MARKER, Vec::new());
        self.kv.apply(batch)?;
        self.durable()
    }
}

/// Marks a document pending at `heads`, in a write's batch.
pub(super) fn mark(batch: &mut Batch, id: &DocumentId, heads: &[ChangeHash]) {
    batch.put(keys::pending(id), hashes_to_bytes(heads));
}

/// For a store being made: the marker saying pending marks cover every document, unless
/// documents are already there (written by a store without marks).
pub(super) fn mark_new_store(kv: &dyn KvStore, batch: &mut Batch) -> Result<(), StoreError> {
    if kv.scan_page(keys::META_PREFIX, None, 0)?.is_empty() {
        batch.put(keys::PENDING_MARKER, Vec::new());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::super::index::encode;
    use super::super::test_stores::{heads, memory_store, plan, retitle, store_over, sync_write};
    use super::*;

    /// As the client acknowledges: the mark is covered when each of its heads is among those
    /// the relay was checked to hold.
    fn ack(store: &DocStore, id: &DocumentId, checked: &[ChangeHash]) -> Result<bool, StoreError> {
        store.acknowledge(id, |mark| mark.iter().all(|h| checked.contains(h)))
    }

    #[test]
    fn local_writes_mark_and_an_acknowledgement_of_those_heads_clears() {
        let (store, _) = memory_store("t");
        let id = plan(&store, "east", "a");
        assert_eq!(store.pending_documents().unwrap(), vec![id], "a create is a local write");
        let created = heads(&store, &id);
        retitle(&store, &id, "b");
        assert!(!ack(&store, &id, &created).unwrap(), "stale heads: a later write is not acknowledged");
        assert_eq!(store.pending_documents().unwrap(), vec![id]);
        assert!(ack(&store, &id, &heads(&store, &id)).unwrap());
        assert!(store.pending_documents().unwrap().is_empty());
        assert!(ack(&store, &id, &heads(&store, &id)).unwrap(), "nothing left to acknowledge: unmarked");
        retitle(&store, &id, "c");
        assert_eq!(store.pending_documents().unwrap(), vec![id], "marked again");
        store.delete(&id).unwrap();
        assert!(store.pending_documents().unwrap().is_empty(), "a deleted document is not pending");
    }

    #[test]
    fn remote_writes_do_not_mark() {
        let (device, _) = memory_store("t");
        let (other, _) = memory_store("t");
        let a = plan(&device, "east", "a");
        let b = plan(&device, "east", "b");
        let c = plan(&device, "east", "c");
        other.merge_remote(&a, &device.export(&a).unwrap()).unwrap();
        other.apply_sync_changes(&b, &device.export(&b).unwrap(), &[]).unwrap();
        sync_write(&device, &other, &c, &[]);
        assert!(other.pending_documents().unwrap().is_empty());
        // Unless asked.
        other.mark_pending(&c).unwrap();
        assert_eq!(other.pending_documents().unwrap(), vec![c]);
        assert!(ack(&other, &c, &heads(&device, &c)).unwrap());
        assert!(matches!(other.mark_pending(&DocumentId::from_bytes([9; 16])), Err(StoreError::NotFound(_))));
    }

    #[test]
    fn an_older_store_marks_every_document_pending_once() {
        let (store, kv) = memory_store("t");
        let (device, _) = memory_store("t");
        let local = plan(&store, "east", "a");
        let received = plan(&device, "east", "b");
        store.merge_remote(&received, &device.export(&received).unwrap()).unwrap();
        // As a store written before pending marks existed leaves it: no marks, no marker, and
        // metas without heads.
        for key in kv.scan_keys(b"p/").unwrap().into_iter().chain([keys::PENDING_MARKER.to_vec()]) {
            kv.delete(&key).unwrap();
        }
        for id in [local, received] {
            let mut meta = store.read_meta(&id).unwrap().unwrap();
            meta.heads.clear();
            kv.put(&keys::meta(&id), &encode(&meta)).unwrap();
        }
        let older = store_over(kv.clone(), "t");
        let mut all = vec![local, received];
        all.sort();
        assert_eq!(older.pending_documents().unwrap(), all, "nothing says the relay has either");
        // The marks hold the documents' heads, so an acknowledgement clears them.
        assert!(ack(&older, &received, &heads(&older, &received)).unwrap());
        assert_eq!(older.pending_documents().unwrap(), vec![local], "marked once only");
        assert_eq!(store_over(kv, "t").pending_documents().unwrap(), vec![local], "and not again after reopening");
    }

    #[test]
    fn a_new_store_over_older_documents_is_not_taken_for_a_new_one() {
        let (store, kv) = memory_store("t");
        let id = plan(&store, "east", "a");
        for key in [keys::PENDING_MARKER.to_vec(), keys::pending(&id), b"!install".to_vec()] {
            kv.delete(&key).unwrap();
        }
        let reopened = store_over(kv, "t");
        assert_eq!(reopened.pending_documents().unwrap(), vec![id]);
    }

    #[test]
    fn a_damaged_mark_is_reported_and_can_be_rewritten() {
        let (store, kv) = memory_store("t");
        let id = plan(&store, "east", "a");
        kv.put(&keys::pending(&id), b"not hashes").unwrap();
        kv.put(b"p/short", b"").unwrap();
        assert_eq!(store.pending_documents().unwrap(), vec![id], "a malformed key is skipped");
        assert!(matches!(ack(&store, &id, &heads(&store, &id)), Err(StoreError::Corrupt { .. })));
        store.mark_pending(&id).unwrap();
        assert!(ack(&store, &id, &heads(&store, &id)).unwrap());
    }
}
