//! A document's heads as the store last wrote them (kept in its meta), and whether the store
//! holds a given set of changes: answered from the meta when it can, without loading the
//! document.

use std::collections::HashSet;

use automerge::{ChangeHash, ReadDoc};

use super::cache::Cache;
use super::index::DocMeta;
use super::{DocStore, StoreError};
use crate::id::DocumentId;

impl DocStore {
    /// The heads of a stored document; `None` if it is not stored. Read from its meta; a meta
    /// written before heads were kept there (an older store) loads the document instead.
    pub fn stored_heads(&self, id: &DocumentId) -> Result<Option<Vec<ChangeHash>>, StoreError> {
        match self.read_meta(id)? {
            Some(meta) => Ok(Some(self.heads_of(id, &meta)?)),
            None => Ok(None),
        }
    }

    /// Whether the store holds every change named in `heads` (and so all they depend on);
    /// false if the document is not stored. Answered from the meta when `heads` are among the
    /// stored heads, else by looking each hash up in the loaded document.
    pub fn has_all(&self, id: &DocumentId, heads: &[ChangeHash]) -> Result<bool, StoreError> {
        let Some(meta) = self.read_meta(id)? else {
            return Ok(false);
        };
        let stored: HashSet<&ChangeHash> = meta.heads.iter().collect();
        if heads.iter().all(|h| stored.contains(h)) {
            return Ok(true);
        }
        let doc = self.load_cached(id)?;
        Ok(heads.iter().all(|h| doc.get_change_by_hash(h).is_some()))
    }

    /// A stored document's heads: its meta's, or if the meta has none (written before heads
    /// were kept), the loaded document's.
    pub(super) fn heads_of(&self, id: &DocumentId, meta: &DocMeta) -> Result<Vec<ChangeHash>, StoreError> {
        if !meta.heads.is_empty() {
            return Ok(meta.heads.clone());
        }
        Ok(self.load_cached(id)?.get_heads())
    }

    /// [`DocStore::heads_of`] for callers that hold the cache lock.
    pub(super) fn heads_locked(
        &self,
        cache: &mut Cache,
        id: &DocumentId,
        meta: &DocMeta,
    ) -> Result<Vec<ChangeHash>, StoreError> {
        if !meta.heads.is_empty() {
            return Ok(meta.heads.clone());
        }
        match cache.take(id) {
            Some(doc) => {
                let heads = doc.get_heads();
                cache.put(*id, doc, self.options.cache_docs);
                Ok(heads)
            }
            None => Ok(self.load_from_disk(id)?.get_heads()),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::super::index::encode;
    use super::super::keys;
    use super::super::test_stores::{heads, memory_store, plan, retitle, sync_write};
    use super::*;
    use crate::storage::KvStore;

    #[test]
    fn stored_heads_are_the_heads_after_each_write() {
        let (store, _) = memory_store("t");
        let missing = DocumentId::from_bytes([9; 16]);
        assert_eq!(store.stored_heads(&missing).unwrap(), None);
        let id = plan(&store, "east", "a");
        assert_eq!(store.stored_heads(&id).unwrap(), Some(heads(&store, &id)));
        retitle(&store, &id, "b");
        assert_eq!(store.stored_heads(&id).unwrap(), Some(heads(&store, &id)));
        assert_eq!(store.read_meta(&id).unwrap().unwrap().heads, heads(&store, &id), "from the meta");

        // The relay's group commit keeps the heads it is told.
        let (relay, _) = memory_store("relay");
        sync_write(&store, &relay, &id, &[]);
        assert_eq!(relay.read_meta(&id).unwrap().unwrap().heads, heads(&store, &id));
        store.delete(&id).unwrap();
        assert_eq!(store.stored_heads(&id).unwrap(), None);
    }

    #[test]
    fn a_meta_written_before_heads_were_kept_answers_from_the_document() {
        let (store, kv) = memory_store("t");
        let id = plan(&store, "east", "a");
        let mut meta = store.read_meta(&id).unwrap().unwrap();
        meta.heads.clear();
        kv.put(&keys::meta(&id), &encode(&meta)).unwrap();
        assert_eq!(store.stored_heads(&id).unwrap(), Some(heads(&store, &id)));
        assert!(store.has_all(&id, &heads(&store, &id)).unwrap());
    }

    #[test]
    fn has_all_answers_for_current_earlier_and_unknown_changes() {
        let (store, _) = memory_store("t");
        let id = plan(&store, "east", "a");
        let first = heads(&store, &id);
        retitle(&store, &id, "b");
        let now = heads(&store, &id);
        assert!(store.has_all(&id, &now).unwrap(), "the stored heads");
        assert!(store.has_all(&id, &first).unwrap(), "an earlier change");
        assert!(store.has_all(&id, &[]).unwrap(), "nothing named");
        let unknown = ChangeHash([7; 32]);
        assert!(!store.has_all(&id, &[now[0], unknown]).unwrap());
        assert!(!store.has_all(&DocumentId::from_bytes([9; 16]), &now).unwrap(), "not stored");
        assert!(!store.has_all(&DocumentId::from_bytes([9; 16]), &[]).unwrap(), "not stored");
    }
}
