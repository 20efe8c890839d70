//! Writes for the sync engine: loading a document with its peers' sync states, applying
//! received changes with them in one batch, and the relay's group commit
//! ([`DocStore::append_sync_batch`]).

use std::collections::HashMap;

use automerge::{Automerge, ChangeHash, LoadOptions, OnPartialLoad};

use super::chunk::{frame, unframe};
use super::feed::{self, FeedSeqs};
use super::index::{DocMeta, encode, index_data, reindex};
use super::{ChangeReason, DocChange, DocStore, Origin, StoreError, keys, lock};
use crate::id::DocumentId;
use crate::storage::Batch;

#[cfg(test)]
mod tests;

/// One document's share of [`DocStore::append_sync_batch`].
#[derive(Debug, Clone)]
pub struct SyncWrite<'a> {
    /// The document written.
    pub doc: DocumentId,
    /// `save_after` output: the document's changes not yet stored here. May be empty.
    pub changes: &'a [u8],
    /// The document's heads once `changes` are applied (for the change feed).
    pub heads: &'a [ChangeHash],
    /// Peers' sync states to keep for the document, as (storage id, encoded automerge sync
    /// state) pairs; each replaces the state kept for that storage id. Stored even when
    /// `changes` is empty.
    pub sync_states: &'a [(String, Vec<u8>)],
    /// The stored heads `changes` were judged against (the sync engine's durable heads; empty:
    /// the document was not stored). In a shared store ([`super::StoreOptions::shared`]) the
    /// write conflicts unless the document is stored exactly so: another node's write since
    /// means the changes must be judged again. `None`: no such check.
    pub base: Option<&'a [ChangeHash]>,
}

/// What a group commit has done so far to documents that come more than once in it.
#[derive(Debug, Default)]
struct GroupState {
    /// Metadata as the group leaves it.
    metas: HashMap<DocumentId, DocMeta>,
    /// Chunks the group adds, in case it compacts them too.
    added: HashMap<DocumentId, Added>,
}

/// The chunks a group commit adds to one document.
#[derive(Debug, Default)]
struct Added {
    /// What they hold, in order. Once the group has compacted the document, the first is the
    /// compacted whole: the chunks on disk are then already deleted in the batch, and another
    /// compaction in the group starts from these bytes alone.
    bytes: Vec<u8>,
    seqs: Vec<u64>,
    compacted: bool,
}

impl DocStore {
    /// For the sync engine: the stored document (all chunks, concatenated) and the sync states
    /// kept for it, or `None` if it is not stored.
    #[allow(clippy::type_complexity)]
    pub fn load_for_sync(&self, id: &DocumentId) -> Result<Option<(Vec<u8>, Vec<(String, Vec<u8>)>)>, StoreError> {
        let chunks = self.kv.scan_prefix(&keys::chunk_prefix(id))?;
        if chunks.is_empty() {
            return Ok(None);
        }
        let mut data = Vec::new();
        for (_, v) in &chunks {
            data.extend_from_slice(unframe(v).map_err(|reason| StoreError::Corrupt { id: *id, reason })?);
        }
        let prefix = keys::sync_prefix(id);
        let mut states = Vec::new();
        for (k, v) in self.kv.scan_prefix(&prefix)? {
            let storage = String::from_utf8_lossy(&k[prefix.len()..]).into_owned();
            states.push((storage, v));
        }
        Ok(Some((data, states)))
    }

    /// For the sync engine: applies changes received from peers (`save_after` output) and the
    /// peers' sync states in one atomic, durable batch. Creates the document if it is new here.
    pub fn apply_sync_changes(
        &self,
        id: &DocumentId,
        changes: &[u8],
        sync_states: &[(String, Vec<u8>)],
    ) -> Result<(), StoreError> {
        self.apply_sync_changes_on(id, None, changes, sync_states)
    }

    /// [`DocStore::apply_sync_changes`] of changes judged against the stored heads `base`
    /// (see [`SyncWrite::base`]).
    pub fn apply_sync_changes_on(
        &self,
        id: &DocumentId,
        base: Option<&[ChangeHash]>,
        changes: &[u8],
        sync_states: &[(String, Vec<u8>)],
    ) -> Result<(), StoreError> {
        let mut cache = lock(&self.cache);
        let mut p = self.take_or_new_remote(&mut cache, id)?;
        if !self.stored_as(&p.meta, p.stored.is_some(), base) {
            cache.put(*id, p.doc, self.options.cache_docs);
            return Err(StoreError::Storage(crate::storage::StorageError::Conflict));
        }
        p.doc.load_incremental(changes).map_err(|_| StoreError::Invalid("received changes do not load"))?;
        let mut extra = Batch::new();
        for (storage, state) in sync_states {
            extra.put(keys::sync_state(id, storage), state.clone());
        }
        self.commit_with(&mut cache, vec![p], extra)
    }

    /// For the sync engine: stores peers' sync states for a document.
    pub fn save_sync_states(&self, id: &DocumentId, sync_states: &[(String, Vec<u8>)]) -> Result<(), StoreError> {
        let mut batch = Batch::new();
        for (storage, state) in sync_states {
            batch.put(keys::sync_state(id, storage), state.clone());
        }
        self.kv.apply(batch)?;
        self.durable()
    }

    /// For relays: stores the sync writes of many documents in one atomic batch and one flush
    /// (group commit), without loading the documents. Received changes are appended as they
    /// came, as a chunk; a document is loaded only when it is new here or not yet known to be a
    /// liaison record (to index its kind and owner), and every `compact_after_chunks` appends
    /// (to rewrite it as one chunk). The kind and owner never change once known (the relay's
    /// policy refuses owner changes), so KOL summaries and references, which a relay does not
    /// list, are indexed only when a document is loaded. Several writes for one document are
    /// stored in order. Returns one outcome per write: a write whose document cannot be read
    /// (damaged chunks, unreadable metadata) fails alone and the others are stored. `Err` when
    /// the batch could not be written or flushed: then nothing of it is stored.
    ///
    /// In a shared store the group is tried again whole, a few times, when its batch conflicts:
    /// each write's `base` is checked again on the way, so a document another node changed
    /// fails alone (a conflict outcome) and the others get new feed numbers.
    pub fn append_sync_batch(&self, writes: &[SyncWrite<'_>]) -> Result<Vec<Result<(), StoreError>>, StoreError> {
        let mut attempt = 1;
        loop {
            match self.append_sync_batch_once(writes) {
                Err(e) if e.is_conflict() && self.options.shared && attempt < super::commit::FEED_ATTEMPTS => {
                    tracing::debug!(
                        attempt,
                        writes = writes.len(),
                        "group commit lost a race to another writer; trying again"
                    );
                    attempt += 1;
                }
                other => return other,
            }
        }
    }

    fn append_sync_batch_once(&self, writes: &[SyncWrite<'_>]) -> Result<Vec<Result<(), StoreError>>, StoreError> {
        let mut cache = lock(&self.cache);
        let mut batch = Batch::new();
        let mut state = GroupState::default();
        let mut feed_seqs = self.feed_seqs(&cache)?;
        let mut events = Vec::new();
        let mut outcomes = Vec::with_capacity(writes.len());
        for w in writes {
            if !w.changes.is_empty() {
                // What the cache holds is about to be stale.
                cache.take(&w.doc);
            }
            match self.prepare_sync_write(w, &mut state, &mut feed_seqs) {
                Ok((ops, event)) => {
                    batch.extend(ops);
                    events.extend(event);
                    outcomes.push(Ok(()));
                }
                Err(e) => {
                    // A damaged document fails only its own write, never its neighbours'; in a
                    // shared store a write judged against an older version is the engine's to redo.
                    if !e.is_conflict() {
                        tracing::warn!(document = %w.doc, error = %e, "sync write not stored; the rest of the group is");
                    }
                    outcomes.push(Err(e));
                }
            }
        }
        if !batch.is_empty() {
            self.write_batch(batch, feed_seqs)?;
        }
        drop(cache);
        for e in events {
            self.notify(e);
        }
        Ok(outcomes)
    }

    /// One write of a group commit: its batch operations and change-feed event. On error nothing
    /// of it is in `state`, `feed_seqs` or in what it returns.
    fn prepare_sync_write(
        &self,
        w: &SyncWrite<'_>,
        state: &mut GroupState,
        feed_seqs: &mut FeedSeqs,
    ) -> Result<(Batch, Option<DocChange>), StoreError> {
        let mut batch = Batch::new();
        for (storage, st) in w.sync_states {
            batch.put(keys::sync_state(&w.doc, storage), st.clone());
        }
        if w.changes.is_empty() {
            return Ok((batch, None));
        }
        // The meta as this group leaves it, or as stored (read once).
        let meta = match state.metas.get(&w.doc) {
            Some(m) => Some(m.clone()),
            None => {
                let stored = self.read_meta_raw(&w.doc)?;
                if self.options.shared {
                    // Built on this meta: another process's write since makes the group conflict.
                    batch.expect(keys::meta(&w.doc), stored.as_ref().map(|(_, raw)| raw.clone()));
                }
                stored.map(|(m, _)| m)
            }
        };
        if self.options.shared
            && w.base.is_some()
            && !self.stored_as(&meta.clone().unwrap_or_default(), meta.is_some(), w.base)
        {
            tracing::debug!(document = %w.doc, "judged against a version another writer has replaced");
            return Err(StoreError::Storage(crate::storage::StorageError::Conflict));
        }
        let mut meta = meta.unwrap_or_default();
        let created = meta.chunks == 0;
        let must_load = created || meta.kind.is_none();
        let added = state.added.get(&w.doc);
        let (earlier, seqs): (&[u8], &[u64]) =
            added.map(|a| (a.bytes.as_slice(), a.seqs.as_slice())).unwrap_or_default();
        let on_disk = || match added {
            // Not what the disk holds now: the group's own compaction is the whole document.
            Some(a) if a.compacted => Ok(Vec::new()),
            _ => self.stored_bytes(&w.doc),
        };
        let loaded = if must_load || meta.chunks + 1 > self.options.compact_after_chunks {
            let whole = on_disk().and_then(|mut data| {
                data.extend_from_slice(earlier);
                data.extend_from_slice(w.changes);
                Automerge::load_with_options(&data, LoadOptions::new().on_partial_load(OnPartialLoad::Error))
                    .map_err(|_| StoreError::Corrupt { id: w.doc, reason: "stored and received changes do not load" })
            });
            match whole {
                Ok(doc) => Some(doc),
                // Without its kind and owner the relay cannot place a document: refuse the write.
                Err(e) if must_load => return Err(e),
                Err(e) => {
                    // Compaction is an optimisation: the changes are appended as received.
                    tracing::warn!(document = %w.doc, error = %e, "cannot compact; appending as received");
                    None
                }
            }
        } else {
            None
        };
        let chunk = meta.next_chunk;
        let compacted = match loaded {
            Some(doc) => {
                for k in self.kv.scan_keys(&keys::chunk_prefix(&w.doc))? {
                    batch.delete(k);
                }
                for seq in seqs {
                    batch.delete(keys::chunk(&w.doc, *seq));
                }
                let saved = doc.save();
                batch.put(keys::chunk(&w.doc, chunk), frame(&saved));
                let old = meta.clone();
                reindex(&mut batch, &w.doc, &old, &mut meta, &index_data(&doc));
                meta.chunks = 1;
                Some(saved)
            }
            None => {
                batch.put(keys::chunk(&w.doc, chunk), frame(w.changes));
                meta.chunks += 1;
                None
            }
        };
        meta.next_chunk += 1;
        meta.heads = w.heads.to_vec();
        // Nothing can fail from here on, so no number is taken for a write that is not stored.
        feed::move_to_end(&mut batch, &w.doc, &mut meta, feed_seqs);
        batch.put(keys::meta(&w.doc), encode(&meta));
        let event = DocChange {
            id: w.doc,
            kind: meta.kind(),
            origin: Origin::Remote,
            heads: w.heads.to_vec(),
            deleted: false,
            reason: if created { ChangeReason::Created } else { ChangeReason::UpdatedRemotely },
        };
        state.metas.insert(w.doc, meta);
        let added = state.added.entry(w.doc).or_default();
        match compacted {
            Some(saved) => *added = Added { bytes: saved, seqs: vec![chunk], compacted: true },
            None => {
                added.bytes.extend_from_slice(w.changes);
                added.seqs.push(chunk);
            }
        }
        Ok((batch, Some(event)))
    }

    /// In a shared store, whether the document is stored exactly at `base` (see
    /// [`SyncWrite::base`]); always true otherwise, or without a base. A meta written before
    /// heads were kept (no heads, some chunks) cannot tell and passes.
    fn stored_as(&self, meta: &DocMeta, stored: bool, base: Option<&[ChangeHash]>) -> bool {
        let Some(base) = base.filter(|_| self.options.shared) else { return true };
        match stored {
            false => base.is_empty(),
            true if meta.heads.is_empty() && meta.chunks > 0 => true,
            true => meta.heads == base,
        }
    }

    /// Changes to a document since `heads` (for telling the sync engine about local edits).
    pub fn changes_since(&self, id: &DocumentId, heads: &[ChangeHash]) -> Result<Vec<u8>, StoreError> {
        Ok(self.load_cached(id)?.save_after(heads))
    }
}
