//! The version of the derived indexes, and their rebuild when a store opens with another one.
//!
//! The KOL summaries (`s/`) and the screen indexes (`x/`) are derived from the documents alone.
//! `!index-v` records which derivation wrote them; a store that opens with another (or none: a
//! store from before the screen indexes) derives them all again from the documents, so adding a
//! field to an index is a bump of [`INDEX_VERSION`] and never a hand-written migration. `m/`,
//! `k/` and `r/` are the store's own bookkeeping, kept by every build since the first, and stay.

use std::time::Instant;

use super::index::{encode, index_data, reindex};
use super::{DocStore, StoreError, keys, screen};
use crate::id::DocumentId;
use crate::storage::Batch;

/// The derivation this build writes. Bump it whenever `index_data` or a screen entry's key or
/// value changes, and whenever an open enum (`model::open_enum`) gains a value: entries written
/// while it was unknown hold `""`, and the rebuild writes its name. The next open rebuilds.
/// `index_version::tests::the_index_version_names_the_enum_values_it_indexes` fails until both
/// move together.
///
/// 2: documents an older build cannot read (`x/u/`); a newer app's enum values listed as unknown.
pub(super) const INDEX_VERSION: u32 = 2;
/// Documents loaded and indexed per batch: one document in memory at a time, and a batch of
/// their entries (tens of kilobytes).
const DOCS_PER_BATCH: usize = 256;
/// Bytes of old screen keys read per page while deleting them.
const DELETE_PAGE_BYTES: usize = 1 << 20;

impl DocStore {
    /// At open: rebuilds the derived indexes unless `!index-v` says this build wrote them. A
    /// store without screen indexes (a relay) is left alone: it loads no document here.
    ///
    /// Then the documents an older build could not read (`x/u/`, a newer app's) are indexed
    /// again: after an app update they read, and join their lists and the KOL list.
    pub(super) fn upgrade_indexes(&self) -> Result<(), StoreError> {
        if !self.options.screen_indexes {
            return Ok(());
        }
        if self.stored_index_version()? != Some(INDEX_VERSION) {
            self.rebuild_indexes()?;
            return Ok(());
        }
        let unreadable = self.kv.scan_keys(keys::SCREEN_UNREADABLE)?;
        let mut now_read = 0;
        for key in &unreadable {
            if let Some(id) = keys::trailing_id(key)
                && self.reindex_fully(&id)?
            {
                now_read += 1;
            }
        }
        if !unreadable.is_empty() {
            tracing::info!(
                unreadable = unreadable.len(),
                now_read,
                "documents an older build could not read, indexed again"
            );
        }
        Ok(())
    }

    /// The version `!index-v` holds; `None` when absent or unreadable (both rebuild).
    pub(super) fn stored_index_version(&self) -> Result<Option<u32>, StoreError> {
        Ok(self.kv.get(keys::INDEX_VERSION)?.and_then(|v| v.as_slice().try_into().ok()).map(u32::from_be_bytes))
    }

    /// Deletes every screen entry, derives the KOL summaries and screen entries of every stored
    /// document again (each loaded once, in batches), then records [`INDEX_VERSION`]. A document
    /// that does not load is skipped with a warning (a damaged document fails only itself).
    /// Returns how many documents were indexed.
    ///
    /// Resumable: each batch also records how far the rebuild got (`!index-rebuild`: the
    /// version it builds and the last document done), so a rebuild interrupted (the app killed
    /// during a long first open after an update) goes on from there at the next open instead of
    /// starting over; the version is written last, with the marker's removal.
    pub(super) fn rebuild_indexes(&self) -> Result<usize, StoreError> {
        let started = Instant::now();
        let mut after = self.rebuild_resumes_after()?;
        if after.is_none() {
            self.delete_screen_entries()?;
            let mut begun = Batch::new();
            begun.put(keys::INDEX_REBUILD, rebuild_marker(&[]));
            self.kv.apply(begun)?;
        }
        let mut indexed = 0;
        loop {
            // Metas are a few hundred bytes: a page holds about a batch of them.
            let page = self.kv.scan_page(keys::META_PREFIX, after.as_deref(), DOCS_PER_BATCH * 512)?;
            if page.is_empty() {
                break;
            }
            let mut batch = Batch::new();
            for (key, _) in page.iter().take(DOCS_PER_BATCH) {
                after = Some(key.clone());
                let Some(id) = keys::trailing_id(key).filter(|_| key.len() == keys::META_PREFIX.len() + 16) else {
                    continue;
                };
                if self.reindex_one(&mut batch, &id)? {
                    indexed += 1;
                }
            }
            batch.put(keys::INDEX_REBUILD, rebuild_marker(after.as_deref().unwrap_or_default()));
            self.kv.apply(batch)?;
        }
        let mut done = Batch::new();
        done.put(keys::INDEX_VERSION, INDEX_VERSION.to_be_bytes());
        done.delete(keys::INDEX_REBUILD);
        self.kv.apply(done)?;
        self.kv.flush()?;
        tracing::info!(documents = indexed, ms = started.elapsed().as_millis() as u64, "derived indexes rebuilt");
        Ok(indexed)
    }

    /// Where an interrupted rebuild of this build's version stopped (`Some(empty)` if it had
    /// only begun); `None` when there is none to resume (none begun, or one for another version).
    fn rebuild_resumes_after(&self) -> Result<Option<Vec<u8>>, StoreError> {
        let Some(marker) = self.kv.get(keys::INDEX_REBUILD)? else { return Ok(None) };
        let Some((version, last)) = marker.split_first_chunk::<4>() else { return Ok(None) };
        if u32::from_be_bytes(*version) != INDEX_VERSION {
            return Ok(None);
        }
        tracing::info!("resuming an interrupted rebuild of the derived indexes");
        Ok(Some(last.to_vec()))
    }

    fn delete_screen_entries(&self) -> Result<(), StoreError> {
        loop {
            let page = self.kv.scan_page(keys::SCREEN_PREFIX, None, DELETE_PAGE_BYTES)?;
            if page.is_empty() {
                return Ok(());
            }
            let mut batch = Batch::new();
            for (k, _) in page {
                batch.delete(k);
            }
            self.kv.apply(batch)?;
        }
    }

    /// One document's summary and screen entries, into `batch`; `false` if it is no liaison
    /// record or does not load.
    fn reindex_one(&self, batch: &mut Batch, id: &DocumentId) -> Result<bool, StoreError> {
        let Some(meta) = self.read_meta(id)? else { return Ok(false) };
        if meta.kind().is_none() {
            // No kind known: not a liaison record, or one this build could not read when it
            // arrived (a newer app's), which may read now.
            return self.reindex_fully(id);
        }
        let Some(doc) = self.load_to_index(id)? else { return Ok(false) };
        let idx = index_data(&doc);
        if let Some(summary) = &idx.summary {
            batch.put(keys::summary(id), encode(summary));
        }
        screen::put_new_entries(batch, id, &idx.screen);
        Ok(true)
    }
}

impl DocStore {
    /// The document, from disk (not through the cache: a rebuild must not evict what the app
    /// uses); `None`, with a warning, if it does not load (a damaged document fails only itself).
    fn load_to_index(&self, id: &DocumentId) -> Result<Option<automerge::Automerge>, StoreError> {
        match self.load_from_disk(id) {
            Ok(doc) => Ok(Some(doc)),
            Err(e @ (StoreError::Corrupt { .. } | StoreError::NotFound(_))) => {
                tracing::warn!(document = %id, error = %e, "document not indexed: it does not load");
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }

    /// Derives every index of one document again, its meta's kind and KOL references included
    /// (what a write does, without a new chunk), in a batch of its own; `true` if it is now a
    /// record this build reads.
    fn reindex_fully(&self, id: &DocumentId) -> Result<bool, StoreError> {
        let Some(old) = self.read_meta(id)? else { return Ok(false) };
        let Some(doc) = self.load_to_index(id)? else { return Ok(false) };
        let idx = index_data(&doc);
        let mut meta = old.clone();
        let mut batch = Batch::new();
        reindex(&mut batch, id, &old, &mut meta, &idx);
        screen::move_entries(&mut batch, self.kv.as_ref(), &self.options, id, &idx.screen)?;
        batch.put(keys::meta(id), encode(&meta));
        self.kv.apply(batch)?;
        Ok(idx.kind.is_some() && !idx.screen.iter().any(screen::Entry::is_unreadable))
    }
}

/// `!index-rebuild`: the version being built (u32, big-endian) and the last `m/` key done.
fn rebuild_marker(last: &[u8]) -> Vec<u8> {
    [&INDEX_VERSION.to_be_bytes()[..], last].concat()
}

#[cfg(test)]
#[path = "index_version/tests.rs"]
mod tests;
