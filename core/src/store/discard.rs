//! Discarding changes the relay refused, so a device is not forked for good.
//!
//! A refused change stays in the device's document, and every later edit there builds on it:
//! the relay refuses those too ("depends-on-refused"), forever. Discarding takes the refused
//! changes and everything built on them out of the local document, which is then what the
//! relay has plus the device's edits that did not build on them; later edits sync again.

use std::collections::HashSet;

use automerge::{Automerge, Change, ChangeHash};

use super::index::{encode, index_data, reindex};
use super::{ChangeReason, DocChange, DocStore, Origin, StoreError, feed, keys, lock, pending, screen};
use crate::DocumentId;
use crate::model::ModelError;

impl DocStore {
    /// Removes `refused` and every change built on them from a document, in one atomic,
    /// flushed batch (the document is rewritten as one chunk). Returns how many changes went;
    /// 0 (and nothing written) when none of `refused` is in the document.
    pub fn discard_changes(&self, id: &DocumentId, refused: &[ChangeHash]) -> Result<usize, StoreError> {
        let mut cache = lock(&self.cache);
        let mut p = self.take_pending(&mut cache, id, Origin::Local)?;
        let all: Vec<Change> = p.doc.get_changes(&[]);
        let mut gone: HashSet<ChangeHash> =
            refused.iter().copied().filter(|h| all.iter().any(|c| c.hash() == *h)).collect();
        if gone.is_empty() {
            cache.put(*id, p.doc, self.options.cache_docs);
            return Ok(0);
        }
        loop {
            let before = gone.len();
            for c in &all {
                if c.deps().iter().any(|d| gone.contains(d)) {
                    gone.insert(c.hash());
                }
            }
            if gone.len() == before {
                break;
            }
        }
        let kept: Vec<Change> = all.into_iter().filter(|c| !gone.contains(&c.hash())).collect();
        let mut doc = Automerge::new().with_actor(self.identity.actor_id());
        doc.apply_changes(kept).map_err(ModelError::from)?;
        p.doc = doc;
        let mut batch = self.compaction_batch(&p)?;
        let old = p.meta.clone();
        let idx = index_data(&p.doc);
        p.meta.chunks = 1;
        p.meta.next_chunk += 1;
        reindex(&mut batch, id, &old, &mut p.meta, &idx);
        screen::move_entries(&mut batch, self.kv.as_ref(), &self.options, id, &idx.screen)?;
        p.meta.heads = p.doc.get_heads();
        let mut seqs = self.feed_seqs(&cache)?;
        feed::move_to_end(&mut batch, id, &mut p.meta, &mut seqs);
        batch.put(keys::meta(id), encode(&p.meta));
        pending::mark(&mut batch, id, &p.meta.heads);
        // On failure the document is dropped from the cache (reloaded from disk next time).
        self.write_batch(batch, seqs)?;
        let heads = p.meta.heads.clone();
        cache.put(*id, p.doc, self.options.cache_docs);
        drop(cache);
        self.notify(DocChange {
            id: *id,
            kind: idx.kind,
            origin: Origin::Local,
            heads,
            deleted: false,
            reason: ChangeReason::UpdatedLocally,
        });
        Ok(gone.len())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use std::sync::Arc;

    use super::*;
    use crate::model::{EngagementPlan, read_record};
    use crate::storage::MemoryKv;
    use crate::store::{StoreOptions, SystemClock};
    use crate::{Identity, Role};

    fn store() -> DocStore {
        let who =
            Identity { tenant: "t".into(), user: "u".into(), device: "d".into(), role: Role::Msl, install: [1; 8] };
        DocStore::with_kv(Arc::new(MemoryKv::default()), who, Arc::new(SystemClock), StoreOptions::default()).unwrap()
    }

    #[test]
    fn a_refused_change_and_what_builds_on_it_go_and_the_rest_stays() {
        let s = store();
        let kol = DocumentId::from_bytes([2; 16]);
        let id = s.create("x", &EngagementPlan::new(&kol, "first")).unwrap();
        s.update(&id, |p: &mut EngagementPlan| p.title = "refused".into()).unwrap();
        let refused = s.load(&id).unwrap().get_heads();
        s.update(&id, |p: &mut EngagementPlan| p.notes.splice(0, 0, "built on it")).unwrap();
        assert_eq!(s.discard_changes(&id, &refused).unwrap(), 2);
        let p: EngagementPlan = read_record(&s.load(&id).unwrap()).unwrap();
        assert_eq!((p.title.as_str(), p.notes.as_str()), ("first", ""));
        // It stays so on disk, and the device edits on from there.
        let reopened = s.load(&id).unwrap();
        assert_eq!(reopened.get_changes(&[]).len(), 1);
        s.update(&id, |p: &mut EngagementPlan| p.title = "again".into()).unwrap();
        assert_eq!(s.get::<EngagementPlan>(&id).unwrap().title, "again");
        assert_eq!(s.discard_changes(&id, &refused).unwrap(), 0, "nothing left to discard");
    }
}
