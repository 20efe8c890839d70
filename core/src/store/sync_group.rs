//! A device's group commit: the writes of many received sync messages in one batch and one
//! flush. Unlike the relay's [`DocStore::append_sync_batch`], every document is loaded and fully
//! indexed (its KOL summary and references), as a device's lists need.

use super::commit::Pending;
use super::{DocStore, StoreError, SyncWrite, keys, lock};
use crate::storage::Batch;

impl DocStore {
    /// Applies the writes (received changes and peers' sync states) of many documents in one
    /// atomic, durable batch. One outcome per write: a write whose document cannot be read or
    /// whose changes do not load fails alone, and nothing of it is stored. `Err` when the batch
    /// could not be written or flushed: then nothing is stored.
    pub fn apply_sync_group(&self, writes: &[SyncWrite<'_>]) -> Result<Vec<Result<(), StoreError>>, StoreError> {
        let mut cache = lock(&self.cache);
        let mut pending: Vec<Pending> = Vec::new();
        let mut extra = Batch::new();
        let mut outcomes = Vec::with_capacity(writes.len());
        for w in writes {
            let outcome = (|| {
                if !w.changes.is_empty() {
                    let mut p = match pending.iter().position(|p| p.id == w.doc) {
                        Some(at) => pending.swap_remove(at),
                        None => self.take_or_new_remote(&mut cache, &w.doc)?,
                    };
                    // On a clone: changes that do not load leave the document as it was (and a
                    // document new here is not stored at all).
                    let mut doc = p.doc.clone();
                    let loaded = doc.load_incremental(w.changes);
                    if loaded.is_ok() {
                        p.doc = doc;
                    }
                    if loaded.is_ok() || !p.before.is_empty() {
                        pending.push(p);
                    }
                    loaded.map_err(|_| StoreError::Invalid("received changes do not load"))?;
                }
                for (storage, state) in w.sync_states {
                    extra.put(keys::sync_state(&w.doc, storage), state.clone());
                }
                Ok(())
            })();
            if let Err(e) = &outcome {
                tracing::warn!(document = %w.doc, error = %e, "sync write not stored; the rest of the group is");
            }
            outcomes.push(outcome);
        }
        self.commit_with(&mut cache, pending, extra)?;
        Ok(outcomes)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use automerge::{ReadDoc, transaction::Transactable};

    use super::*;
    use crate::model::{EngagementPlan, KolProfile};
    use crate::storage::MemoryKv;
    use crate::store::{ManualClock, StoreOptions};
    use crate::{DocumentId, Identity, Role};

    fn store() -> DocStore {
        let who =
            Identity { tenant: "t".into(), user: "u".into(), device: "d".into(), role: Role::Msl, install: [1; 8] };
        DocStore::with_kv(Arc::new(MemoryKv::new()), who, Arc::new(ManualClock::new(1)), StoreOptions::default())
            .unwrap()
    }

    #[test]
    fn a_group_stores_every_document_indexed_and_a_bad_write_fails_alone() {
        let (a, b) = (store(), store());
        let kol = a.create("team", &KolProfile::new("Dr. Yamada", "Osaka")).unwrap();
        let plan = a.create("team", &EngagementPlan::new(&kol, "FY27")).unwrap();
        let (k, p) = (a.load(&kol).unwrap().save(), a.load(&plan).unwrap().save());
        let bad = DocumentId::random();
        let states = vec![("relay".to_owned(), vec![1, 2, 3])];
        let writes = [
            SyncWrite { base: None, doc: kol, changes: &k, heads: &[], sync_states: &states },
            SyncWrite { base: None, doc: bad, changes: b"not automerge", heads: &[], sync_states: &[] },
            SyncWrite { base: None, doc: plan, changes: &p, heads: &[], sync_states: &[] },
        ];
        let outcomes = b.apply_sync_group(&writes).unwrap();
        assert!(outcomes[0].is_ok() && outcomes[1].is_err() && outcomes[2].is_ok(), "{outcomes:?}");
        assert_eq!(b.list_kols().unwrap().iter().map(|s| s.name.as_str()).collect::<Vec<_>>(), ["Dr. Yamada"]);
        assert_eq!(b.get::<EngagementPlan>(&plan).unwrap().title, "FY27");
        assert!(b.load(&bad).is_err(), "the bad write stored nothing");
        assert_eq!(b.load_for_sync(&kol).unwrap().unwrap().1, states);
        // Two writes to one document in one group apply in order.
        let mut later = a.load(&plan).unwrap();
        let before = later.get_heads();
        later.transact::<_, _, automerge::AutomergeError>(|tx| tx.put(automerge::ROOT, "x", 1).map(|_| ())).unwrap();
        let more = later.save_after(&before);
        let writes = [
            SyncWrite { base: None, doc: plan, changes: &more, heads: &[], sync_states: &[] },
            SyncWrite { base: None, doc: plan, changes: &[], heads: &[], sync_states: &states },
        ];
        assert!(b.apply_sync_group(&writes).unwrap().iter().all(Result::is_ok));
        assert!(b.load(&plan).unwrap().get(automerge::ROOT, "x").unwrap().is_some());
    }
}
