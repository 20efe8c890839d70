//! Where a device stands in its relay's catalog: the feed position it has fully received and
//! the fingerprint of the scope it read it under (key `!catalog`, CBOR). Written only once
//! everything an answer listed is stored, so a device that stops halfway asks again from the
//! position before.

use minicbor::{Decode, Encode};

use super::index::encode;
use super::{DocStore, StoreError};
use crate::storage::Batch;

const KEY: &[u8] = b"!catalog";

#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
struct Position {
    #[n(0)]
    cursor: u64,
    #[n(1)]
    scope: String,
}

impl DocStore {
    /// The catalog position stored by [`DocStore::set_catalog_position`], if any.
    pub fn catalog_position(&self) -> Result<Option<(u64, String)>, StoreError> {
        let Some(bytes) = self.kv.get(KEY)? else { return Ok(None) };
        match minicbor::decode::<Position>(&bytes) {
            Ok(p) => Ok(Some((p.cursor, p.scope))),
            Err(_) => {
                // Asking for everything again is always correct.
                tracing::warn!("the stored catalog position is unreadable; starting over");
                Ok(None)
            }
        }
    }

    /// Stores the catalog position (flushed).
    pub fn set_catalog_position(&self, cursor: u64, scope: &str) -> Result<(), StoreError> {
        let mut batch = Batch::new();
        batch.put(KEY.to_vec(), encode(&Position { cursor, scope: scope.to_owned() }));
        self.kv.apply(batch)?;
        self.durable()
    }

    /// Forgets the catalog position (flushed): a remote wipe leaves nothing of the tenant, and
    /// the next sign-in asks for everything.
    pub fn clear_catalog_position(&self) -> Result<(), StoreError> {
        let mut batch = Batch::new();
        batch.delete(KEY.to_vec());
        self.kv.apply(batch)?;
        self.durable()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::storage::{KvStore, MemoryKv};
    use crate::store::{ManualClock, StoreOptions};
    use crate::{Identity, Role};

    #[test]
    fn the_position_round_trips_and_garbage_means_start_over() {
        let kv = Arc::new(MemoryKv::new());
        let who =
            Identity { tenant: "t".into(), user: "u".into(), device: "d".into(), role: Role::Msl, install: [1; 8] };
        let store = DocStore::with_kv(kv.clone(), who, Arc::new(ManualClock::new(1)), StoreOptions::default()).unwrap();
        assert_eq!(store.catalog_position().unwrap(), None);
        store.set_catalog_position(42, "ab12").unwrap();
        assert_eq!(store.catalog_position().unwrap(), Some((42, "ab12".into())));
        store.clear_catalog_position().unwrap();
        assert_eq!(store.catalog_position().unwrap(), None);
        store.set_catalog_position(42, "ab12").unwrap();
        let mut b = Batch::new();
        b.put(KEY.to_vec(), vec![0xff, 0x00]);
        kv.apply(b).unwrap();
        assert_eq!(store.catalog_position().unwrap(), None);
    }
}
