//! Raw documents, for sync and export: loading, merging, editing any automerge document,
//! deleting, compacting.

use automerge::{Automerge, LoadOptions, OnPartialLoad};

use super::index::{DocMeta, encode};
use super::{ChangeReason, DocChange, DocStore, Origin, StoreError, feed, keys, lock, screen};
use crate::id::DocumentId;
use crate::model::{Kind, ModelError};
use crate::storage::Batch;

/// Times a removal is tried in a shared store when another process wrote the document meanwhile.
const REMOVE_ATTEMPTS: usize = 5;

impl DocStore {
    /// The document as automerge-repo would load it.
    pub fn load(&self, id: &DocumentId) -> Result<Automerge, StoreError> {
        self.load_cached(id)
    }

    /// The whole document as one `save()`.
    pub fn export(&self, id: &DocumentId) -> Result<Vec<u8>, StoreError> {
        Ok(self.load_cached(id)?.save())
    }

    /// Merges changes received from elsewhere (`save()` or `save_after()` output) into a
    /// document, creating it if it is new here. Returns whether anything changed.
    pub fn merge_remote(&self, id: &DocumentId, bytes: &[u8]) -> Result<bool, StoreError> {
        let mut incoming =
            Automerge::load_with_options(bytes, LoadOptions::new().on_partial_load(OnPartialLoad::Error))
                .map_err(|_| StoreError::Invalid("received bytes are not an automerge document"))?;
        let mut cache = lock(&self.cache);
        let mut p = self.take_or_new_remote(&mut cache, id)?;
        p.doc.merge(&mut incoming).map_err(ModelError::from)?;
        let changed = p.doc.get_heads() != p.before;
        self.commit(&mut cache, vec![p])?;
        Ok(changed)
    }

    /// Edits any document, liaison record or not, in one automerge transaction (for documents
    /// other automerge-repo clients created). Typed records should use [`DocStore::update`].
    pub fn edit_raw<T>(
        &self,
        id: &DocumentId,
        f: impl FnOnce(&mut automerge::transaction::Transaction<'_>) -> Result<T, automerge::AutomergeError>,
    ) -> Result<T, StoreError> {
        let now = self.clock.now_ms();
        let actor = self.identity.actor_id();
        self.edit(id, move |doc| {
            doc.set_actor(actor);
            let mut tx = doc.transaction();
            let out = f(&mut tx).map_err(ModelError::from)?;
            tx.commit_with(automerge::transaction::CommitOptions::default().with_time(now));
            Ok(out)
        })
    }

    /// Deletes a document and its index entries (erasure).
    pub fn delete(&self, id: &DocumentId) -> Result<(), StoreError> {
        if self.delete_with(id, Batch::new())? { Ok(()) } else { Err(StoreError::NotFound(*id)) }
    }

    /// Deletes a document, if stored, together with `extra` writes in one atomic batch (an
    /// erasure's tombstone and quarantine entries go with the document or not at all). Returns
    /// whether the document was stored; `extra` is applied either way.
    pub fn delete_with(&self, id: &DocumentId, extra: Batch) -> Result<bool, StoreError> {
        self.remove(id, extra, ChangeReason::Erased)
    }

    /// Drops a document this device may no longer read: deleted as [`DocStore::delete_with`]
    /// deletes it, but reported as [`ChangeReason::AccessRemoved`] and, not being an erasure,
    /// leaving no erased entry in its tenant's change feed. Returns whether it was stored.
    pub fn remove_for_access(&self, id: &DocumentId) -> Result<bool, StoreError> {
        self.remove(id, Batch::new(), ChangeReason::AccessRemoved)
    }

    /// Deletes a document and its index entries with `extra`, reporting `reason`
    /// ([`ChangeReason::Erased`] or [`ChangeReason::AccessRemoved`]).
    ///
    /// In a shared store a write by another process between reading the document's keys and
    /// deleting them (a chunk the delete would miss) makes the batch conflict; the removal is
    /// then tried again from the start, a few times.
    fn remove(&self, id: &DocumentId, extra: Batch, reason: ChangeReason) -> Result<bool, StoreError> {
        let mut attempt = 1;
        loop {
            match self.remove_once(id, extra.clone(), reason) {
                Err(e) if e.is_conflict() && attempt < REMOVE_ATTEMPTS => attempt += 1,
                other => return other,
            }
        }
    }

    fn remove_once(&self, id: &DocumentId, extra: Batch, reason: ChangeReason) -> Result<bool, StoreError> {
        let mut cache = lock(&self.cache);
        let Some((meta, stored)) = self.read_meta_raw(id)? else {
            let mut extra = extra;
            if self.options.shared {
                extra.expect(keys::meta(id), None);
            }
            if !extra.is_empty() {
                self.kv.apply(extra)?;
                self.durable()?;
            }
            return Ok(false);
        };
        cache.take(id);
        let mut batch = extra;
        if self.options.shared {
            batch.expect(keys::meta(id), Some(stored));
        }
        for k in self.kv.scan_keys(&keys::chunk_prefix(id))? {
            batch.delete(k);
        }
        for k in self.kv.scan_keys(&keys::sync_prefix(id))? {
            batch.delete(k);
        }
        batch.delete(keys::meta(id));
        batch.delete(keys::pending(id));
        // Whatever the store's options: a removal leaves no entry behind.
        screen::remove_entries(&mut batch, self.kv.as_ref(), id)?;
        let mut seqs = self.feed_seqs(&cache)?;
        match reason {
            ChangeReason::AccessRemoved => feed::leave(&mut batch, id, &meta),
            _ => feed::erase(&mut batch, id, &meta, &mut seqs),
        }
        if let Some(kind) = meta.kind() {
            batch.delete(keys::kind(kind, id));
            batch.delete(keys::summary(id));
            for r in &meta.refs {
                if let Ok(kol) = r.parse::<DocumentId>() {
                    batch.delete(keys::kol_ref(&kol, kind, id));
                }
            }
        }
        self.write_batch(batch, seqs)?;
        self.notify(DocChange {
            id: *id,
            kind: meta.kind(),
            origin: Origin::Local,
            heads: Vec::new(),
            deleted: true,
            reason,
        });
        Ok(true)
    }

    /// Rewrites a document as a single chunk.
    pub fn compact(&self, id: &DocumentId) -> Result<(), StoreError> {
        let mut cache = lock(&self.cache);
        let mut p = self.take_pending(&mut cache, id, Origin::Local)?;
        let mut batch = self.compaction_batch(&p)?;
        if self.options.shared {
            batch.expect(keys::meta(id), p.stored.take());
        }
        // The heads do not change; a meta written before heads were kept gets them here.
        let meta = DocMeta { next_chunk: p.meta.next_chunk + 1, chunks: 1, heads: p.doc.get_heads(), ..p.meta.clone() };
        batch.put(keys::meta(id), encode(&meta));
        self.kv.apply(batch)?;
        self.durable()?;
        cache.put(*id, p.doc, self.options.cache_docs);
        Ok(())
    }

    /// Tenant, team and kind of a stored liaison document (from its envelope), without loading it.
    #[allow(clippy::type_complexity)]
    pub fn owner_of(&self, id: &DocumentId) -> Result<Option<(String, String, Option<Kind>)>, StoreError> {
        Ok(self.read_meta(id)?.and_then(|m| {
            let kind = m.kind();
            Some((m.tenant?, m.team?, kind))
        }))
    }

    /// How many chunks a document is stored in.
    pub fn chunk_count(&self, id: &DocumentId) -> Result<u64, StoreError> {
        Ok(self.read_meta(id)?.ok_or(StoreError::NotFound(*id))?.chunks)
    }
}
