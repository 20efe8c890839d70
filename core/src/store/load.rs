//! Reading documents and their metadata from the key-value store.

use automerge::{Automerge, LoadOptions, OnPartialLoad};

use super::chunk::unframe;
use super::index::DocMeta;
use super::{DocStore, StoreError, keys, lock};
use crate::id::DocumentId;

impl DocStore {
    pub(super) fn read_meta(&self, id: &DocumentId) -> Result<Option<DocMeta>, StoreError> {
        Ok(self.read_meta_raw(id)?.map(|(meta, _)| meta))
    }

    /// The meta and the bytes it was read from: a write to a shared store expects exactly
    /// those bytes (see [`super::StoreOptions::shared`]).
    pub(super) fn read_meta_raw(&self, id: &DocumentId) -> Result<Option<(DocMeta, Vec<u8>)>, StoreError> {
        match self.kv.get(&keys::meta(id))? {
            Some(v) => Ok(Some((
                minicbor::decode(&v).map_err(|_| StoreError::Corrupt { id: *id, reason: "metadata unreadable" })?,
                v,
            ))),
            None => Ok(None),
        }
    }

    /// A cached copy is current unless another process wrote the document since: in a shared
    /// store, its heads must be the stored ones.
    pub(super) fn cached_is_current(&self, doc: &Automerge, meta: &DocMeta) -> bool {
        !self.options.shared || doc.get_heads() == meta.heads
    }

    /// A document's chunks, concatenated (empty if it has none).
    pub(super) fn stored_bytes(&self, id: &DocumentId) -> Result<Vec<u8>, StoreError> {
        let chunks = self.kv.scan_prefix(&keys::chunk_prefix(id))?;
        let mut data = Vec::with_capacity(chunks.iter().map(|(_, v)| v.len()).sum());
        for (_, v) in &chunks {
            data.extend_from_slice(unframe(v).map_err(|reason| StoreError::Corrupt { id: *id, reason })?);
        }
        Ok(data)
    }

    /// Loads a document from its chunks.
    pub(super) fn load_from_disk(&self, id: &DocumentId) -> Result<Automerge, StoreError> {
        let data = self.stored_bytes(id)?;
        if data.is_empty() {
            return Err(StoreError::NotFound(*id));
        }
        let doc = Automerge::load_with_options(&data, LoadOptions::new().on_partial_load(OnPartialLoad::Error))
            .map_err(|_| StoreError::Corrupt { id: *id, reason: "automerge data does not load" })?;
        Ok(doc.with_actor(self.identity.actor_id()))
    }

    pub(super) fn load_cached(&self, id: &DocumentId) -> Result<Automerge, StoreError> {
        let mut cache = lock(&self.cache);
        if let Some(doc) = cache.take(id) {
            if self.options.shared && !self.read_meta(id)?.is_some_and(|m| self.cached_is_current(&doc, &m)) {
                drop(cache);
                return self.load_from_disk(id);
            }
            let copy = doc.clone();
            cache.put(*id, doc, self.options.cache_docs);
            return Ok(copy);
        }
        drop(cache);
        self.load_from_disk(id)
    }
}
