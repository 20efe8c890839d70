//! A stored document's version (its heads, and the number its next chunk takes: `m/ID`'s
//! `next_chunk`) and the changes past a version, read from its newest chunks alone.
//!
//! Chunk numbers only grow: a write appends its changes as chunk `next_chunk`, and a compaction
//! writes the whole document as chunk `next_chunk` once it deleted the chunks it covers. So
//! every change a document gained after the store held heads H with its next chunk at N is in
//! a chunk numbered N or more: read by one range scan of `c/ID/` and applied onto a copy at H,
//! they bring the copy to what is stored without loading the document. A number lower than N
//! only reads more. A relay node takes in another node's writes this way (`relay/cluster.rs`).

use automerge::ChangeHash;

use super::chunk::unframe;
use super::{DocStore, StoreError, keys};
use crate::id::DocumentId;

/// Bytes of chunks one page of the scan asks for.
const PAGE_BYTES: usize = 4 << 20;

/// A stored document's version, read from one meta.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredVersion {
    /// Its heads.
    pub heads: Vec<ChangeHash>,
    /// The number its next chunk takes.
    pub next_chunk: u64,
}

impl DocStore {
    /// The document's version, or `None` if it is not stored.
    pub fn stored_version(&self, id: &DocumentId) -> Result<Option<StoredVersion>, StoreError> {
        let Some(meta) = self.read_meta(id)? else { return Ok(None) };
        Ok(Some(StoredVersion { heads: self.heads_of(id, &meta)?, next_chunk: meta.next_chunk }))
    }

    /// The document's version and, concatenated, its chunks numbered `from` or more (read
    /// after the version, so they may hold more than it names, never less); `None` if it is
    /// not stored.
    pub fn changes_from_chunk(
        &self,
        id: &DocumentId,
        from: u64,
    ) -> Result<Option<(Vec<u8>, StoredVersion)>, StoreError> {
        let Some(version) = self.stored_version(id)? else { return Ok(None) };
        let prefix = keys::chunk_prefix(id);
        let mut after = from.checked_sub(1).map(|before| keys::chunk(id, before));
        let mut data = Vec::new();
        loop {
            let page = self.kv.scan_page(&prefix, after.as_deref(), PAGE_BYTES)?;
            let Some((last, _)) = page.last() else { break };
            after = Some(last.clone());
            for (_, v) in &page {
                data.extend_from_slice(unframe(v).map_err(|reason| StoreError::Corrupt { id: *id, reason })?);
            }
        }
        Ok(Some((data, version)))
    }
}

#[cfg(test)]
mod tests {
    use automerge::Automerge;

    use super::*;
    use crate::model::EngagementPlan;
    use crate::store::test_stores::memory_store;

    fn append(store: &DocStore, id: &DocumentId, text: &str) {
        store
            .update(id, |p: &mut EngagementPlan| {
                let end = p.notes.as_str().len();
                p.notes.splice(end, 0, text)
            })
            .unwrap();
    }

    #[test]
    fn the_chunks_past_a_version_bring_a_copy_at_it_to_what_is_stored_even_across_a_compaction() {
        let (store, _) = memory_store("t");
        let kol = DocumentId::random();
        let id = store.create("east", &EngagementPlan::new(&kol, "FY27")).unwrap();
        append(&store, &id, "[1]");
        let at = store.stored_version(&id).unwrap().unwrap();
        let mut copy = Automerge::load(&store.export(&id).unwrap()).unwrap();
        assert_eq!(copy.get_heads(), at.heads);

        append(&store, &id, "[2]");
        append(&store, &id, "[3]");
        let (changes, now) = store.changes_from_chunk(&id, at.next_chunk).unwrap().unwrap();
        assert_eq!(now.next_chunk, at.next_chunk + 2, "two chunks appended");
        assert!(changes.len() < store.export(&id).unwrap().len(), "only the new chunks are read");
        let mut caught_up = copy.clone();
        caught_up.load_incremental(&changes).unwrap();
        assert_eq!(caught_up.get_heads(), now.heads);

        // A compaction rewrites the document as one newer chunk: still all there.
        store.compact(&id).unwrap();
        append(&store, &id, "[4]");
        let (changes, now) = store.changes_from_chunk(&id, at.next_chunk).unwrap().unwrap();
        assert_eq!(store.chunk_count(&id).unwrap(), 2);
        copy.load_incremental(&changes).unwrap();
        assert_eq!(copy.get_heads(), now.heads);
        assert_eq!(store.get::<EngagementPlan>(&id).unwrap().notes.as_str(), "[1][2][3][4]");

        assert_eq!(store.changes_from_chunk(&DocumentId::random(), 0).unwrap(), None);
    }
}
