//! Keeping the change feed whole across versions and contracts: documents stored before the
//! feed existed are entered once ([`DocStore::backfill_feed`], at the relay's start), and a
//! purged tenant's feed goes with its documents ([`DocStore::forget_feed`]).

use super::feed::move_to_end;
use super::index::encode;
use super::{DocStore, StoreError, keys, lock};
use crate::storage::Batch;

/// Marks a store whose every document has a feed entry (or had one when it was written).
const BACKFILLED: &[u8] = b"!feed-v1";
/// Documents entered per batch.
const PER_BATCH: usize = 1_000;

impl DocStore {
    /// Enters every stored document that names a tenant and has no feed entry (stored before
    /// the feed existed) into its tenant's feed, once: afterwards the marker `!feed-v1` says the
    /// feed is whole. Without it a catalog would never list those documents. Returns how many
    /// were entered. A document whose heads cannot be read is skipped with a warning (a damaged
    /// document fails only itself).
    pub fn backfill_feed(&self) -> Result<usize, StoreError> {
        if self.kv.get(BACKFILLED)?.is_some() {
            return Ok(0);
        }
        let metas = self.kv.scan_keys(keys::META_PREFIX)?;
        let mut entered = 0;
        for chunk in metas.chunks(PER_BATCH) {
            let mut cache = lock(&self.cache);
            let mut seqs = self.feed_seqs(&cache)?;
            let mut batch = Batch::new();
            for key in chunk {
                let Some(id) = keys::trailing_id(key).filter(|_| key.len() == keys::META_PREFIX.len() + 16) else {
                    continue;
                };
                let Some(mut meta) = self.read_meta(&id)? else { continue };
                if meta.feed.is_some() || meta.tenant.is_none() {
                    continue;
                }
                match self.heads_locked(&mut cache, &id, &meta) {
                    Ok(heads) => meta.heads = heads,
                    Err(e) => {
                        tracing::warn!(document = %id, error = %e, "cannot read a document's heads; not in the feed");
                        continue;
                    }
                }
                move_to_end(&mut batch, &id, &mut meta, &mut seqs);
                batch.put(keys::meta(&id), encode(&meta));
                entered += 1;
            }
            self.write_batch(batch, seqs)?;
        }
        let mut done = Batch::new();
        done.put(BACKFILLED.to_vec(), Vec::new());
        self.kv.apply(done)?;
        self.durable()?;
        if entered > 0 {
            tracing::info!(documents = entered, "documents entered into the change feed");
        }
        Ok(entered)
    }

    /// Deletes every entry of `tenant`'s feed (its erased entries too): a purge at contract end
    /// leaves nothing of the tenant, not even ids and team names. Returns how many went.
    pub fn forget_feed(&self, tenant: &str) -> Result<usize, StoreError> {
        let _cache = lock(&self.cache);
        let doomed = self.kv.scan_keys(&keys::feed_prefix(tenant))?;
        let n = doomed.len();
        let mut batch = Batch::new();
        for k in doomed {
            batch.delete(k);
        }
        self.kv.apply(batch)?;
        self.durable()?;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::super::test_stores::{memory_store, plan, store_over};
    use super::*;
    use crate::storage::KvStore;

    #[test]
    fn documents_stored_before_the_feed_are_entered_once() {
        let (store, kv) = memory_store("t");
        let a = plan(&store, "east", "a");
        let b = plan(&store, "west", "b");
        // As a store written before the feed existed: no entries, metas without a feed number.
        for key in kv.scan_keys(keys::FEED_PREFIX).unwrap().into_iter().chain([keys::FEED.to_vec()]) {
            kv.delete(&key).unwrap();
        }
        for id in [a, b] {
            let mut meta = store.read_meta(&id).unwrap().unwrap();
            meta.feed = None;
            meta.heads.clear();
            kv.put(&keys::meta(&id), &encode(&meta)).unwrap();
        }
        let older = store_over(kv.clone(), "t");
        assert!(older.feed_page("t", 0, 10).unwrap().is_empty());
        assert_eq!(older.backfill_feed().unwrap(), 2);
        let mut listed: Vec<_> = older.feed_page("t", 0, 10).unwrap().into_iter().map(|e| (e.doc, e.heads)).collect();
        listed.sort();
        let mut want = vec![(a, older.load(&a).unwrap().get_heads()), (b, older.load(&b).unwrap().get_heads())];
        want.sort();
        assert_eq!(listed, want);
        assert_eq!(older.backfill_feed().unwrap(), 0, "once");
        assert_eq!(store_over(kv, "t").backfill_feed().unwrap(), 0, "and not again after reopening");
    }

    #[test]
    fn a_purged_tenant_leaves_no_feed_entry() {
        let (store, _) = memory_store("t");
        let a = plan(&store, "east", "a");
        plan(&store, "east", "b");
        store.delete(&a).unwrap();
        assert_eq!(store.feed_page("t", 0, 10).unwrap().len(), 2);
        assert_eq!(store.forget_feed("t").unwrap(), 2);
        assert!(store.feed_page("t", 0, 10).unwrap().is_empty());
    }
}
