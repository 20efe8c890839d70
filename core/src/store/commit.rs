//! Writing documents: every pending document of one operation in one atomic batch, flushed,
//! then cached and announced on the change feed; compaction into one chunk.

use automerge::{Automerge, ChangeHash};

use super::cache::Cache;
use super::chunk::frame;
use super::index::{DocMeta, encode, index_data, reindex};
use super::{ChangeReason, DocChange, DocStore, Origin, StoreError, feed, keys, lock, pending, screen};
use crate::id::DocumentId;
use crate::storage::Batch;

/// A document being written in this commit.
#[derive(Clone)]
pub(super) struct Pending {
    pub(super) id: DocumentId,
    pub(super) doc: Automerge,
    pub(super) before: Vec<ChangeHash>,
    pub(super) meta: DocMeta,
    pub(super) origin: Origin,
    /// The losing profile of a KOL merge (reported [`ChangeReason::MergedAway`]).
    pub(super) merged_away: bool,
    /// The stored meta's bytes this write was built on (`None`: not stored yet): in a shared
    /// store the write expects them.
    pub(super) stored: Option<Vec<u8>>,
}

/// Times a write to a shared store is tried when only the feed's counter moved under it.
pub(super) const FEED_ATTEMPTS: usize = 8;

impl DocStore {
    pub(super) fn take_pending(
        &self,
        cache: &mut Cache,
        id: &DocumentId,
        origin: Origin,
    ) -> Result<Pending, StoreError> {
        let (meta, stored) = self.read_meta_raw(id)?.ok_or(StoreError::NotFound(*id))?;
        let doc = match cache.take(id) {
            Some(d) if self.cached_is_current(&d, &meta) => d,
            _ => self.load_from_disk(id)?,
        };
        let before = doc.get_heads();
        Ok(Pending { id: *id, doc, before, meta, origin, merged_away: false, stored: Some(stored) })
    }

    /// The stored document for a remote write, or a new empty one if it is new here.
    pub(super) fn take_or_new_remote(&self, cache: &mut Cache, id: &DocumentId) -> Result<Pending, StoreError> {
        match self.take_pending(cache, id, Origin::Remote) {
            Err(StoreError::NotFound(_)) => Ok(Pending {
                id: *id,
                doc: Automerge::new().with_actor(self.identity.actor_id()),
                before: Vec::new(),
                meta: DocMeta::default(),
                origin: Origin::Remote,
                merged_away: false,
                stored: None,
            }),
            other => other,
        }
    }

    /// Runs `f` on a document and commits whatever it changed.
    pub(super) fn edit<T>(
        &self,
        id: &DocumentId,
        f: impl FnOnce(&mut Automerge) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let mut cache = lock(&self.cache);
        let mut p = self.take_pending(&mut cache, id, Origin::Local)?;
        // On error the document is dropped, not cached: it is reloaded from disk next time.
        let out = f(&mut p.doc)?;
        self.commit(&mut cache, vec![p])?;
        Ok(out)
    }

    pub(super) fn compaction_batch(&self, p: &Pending) -> Result<Batch, StoreError> {
        let mut batch = Batch::new();
        for k in self.kv.scan_keys(&keys::chunk_prefix(&p.id))? {
            batch.delete(k);
        }
        batch.put(keys::chunk(&p.id, p.meta.next_chunk), frame(&p.doc.save()));
        Ok(batch)
    }

    /// Writes every pending document in one atomic batch, flushes, caches, and notifies.
    pub(super) fn commit(&self, cache: &mut Cache, pending: Vec<Pending>) -> Result<(), StoreError> {
        self.commit_with(cache, pending, Batch::new())
    }

    /// Like `commit`, with `extra` writes in the same atomic batch (sync states).
    ///
    /// In a shared store a batch also conflicts when another node only took feed numbers
    /// (`!feed` moved) while none of the documents changed: that one is tried again with new
    /// numbers, a few times. A document another node changed is the caller's conflict.
    pub(super) fn commit_with(&self, cache: &mut Cache, pending: Vec<Pending>, extra: Batch) -> Result<(), StoreError> {
        if !self.options.shared {
            return self.commit_once(cache, pending, extra);
        }
        let mut attempt = 1;
        loop {
            let built_on: Vec<(DocumentId, Option<Vec<u8>>)> =
                pending.iter().map(|p| (p.id, p.stored.clone())).collect();
            match self.commit_once(cache, pending.clone(), extra.clone()) {
                Err(e) if e.is_conflict() && attempt < FEED_ATTEMPTS && self.metas_unchanged(&built_on)? => {
                    attempt += 1;
                }
                other => return other,
            }
        }
    }

    /// Whether every document's meta is still the one its write was built on.
    fn metas_unchanged(&self, built_on: &[(DocumentId, Option<Vec<u8>>)]) -> Result<bool, StoreError> {
        for (id, stored) in built_on {
            if self.kv.get(&keys::meta(id))? != *stored {
                return Ok(false);
            }
        }
        Ok(true)
    }

    fn commit_once(&self, cache: &mut Cache, pending: Vec<Pending>, extra: Batch) -> Result<(), StoreError> {
        let mut batch = Batch::new();
        let mut seqs = self.feed_seqs(cache)?;
        let mut events = Vec::new();
        let mut written = Vec::new();
        for mut p in pending {
            let heads = p.doc.get_heads();
            if heads == p.before && p.meta.chunks > 0 {
                cache.put(p.id, p.doc, self.options.cache_docs);
                continue;
            }
            let old_meta = p.meta.clone();
            if self.options.shared {
                batch.expect(keys::meta(&p.id), p.stored.take());
            }
            if p.meta.chunks == 0 {
                batch.put(keys::chunk(&p.id, p.meta.next_chunk), frame(&p.doc.save()));
                p.meta.chunks = 1;
            } else if p.meta.chunks + 1 > self.options.compact_after_chunks {
                batch.extend(self.compaction_batch(&p)?);
                p.meta.chunks = 1;
            } else {
                batch.put(keys::chunk(&p.id, p.meta.next_chunk), frame(&p.doc.save_after(&p.before)));
                p.meta.chunks += 1;
            }
            p.meta.next_chunk += 1;

            let idx = index_data(&p.doc);
            reindex(&mut batch, &p.id, &old_meta, &mut p.meta, &idx);
            screen::move_entries(&mut batch, self.kv.as_ref(), &self.options, &p.id, &idx.screen)?;
            p.meta.heads = heads.clone();
            feed::move_to_end(&mut batch, &p.id, &mut p.meta, &mut seqs);
            batch.put(keys::meta(&p.id), encode(&p.meta));
            if p.origin == Origin::Local {
                pending::mark(&mut batch, &p.id, &heads);
            }
            let reason = match p.origin {
                _ if old_meta.chunks == 0 => ChangeReason::Created,
                _ if p.merged_away => ChangeReason::MergedAway,
                Origin::Local => ChangeReason::UpdatedLocally,
                Origin::Remote => ChangeReason::UpdatedRemotely,
            };
            events.push(DocChange { id: p.id, kind: idx.kind, origin: p.origin, heads, deleted: false, reason });
            written.push((p.id, p.doc));
        }
        batch.extend(extra);
        if batch.is_empty() {
            return Ok(());
        }
        // If the write fails, the edited documents are dropped (not cached): memory never holds
        // an edit the disk does not.
        self.write_batch(batch, seqs)?;
        for (id, doc) in written {
            cache.put(id, doc, self.options.cache_docs);
        }
        for e in events {
            self.notify(e);
        }
        Ok(())
    }
}
