//! The document store: Automerge documents on a [`KvStore`], saved incrementally, compacted,
//! indexed for fast listing, with a change feed.
//!
//! Layout (every key starts with a one-byte namespace; `ID` is the 16 raw id bytes):
//!
//! | key               | value                                                                                    |
//! |-------------------|------------------------------------------------------------------------------------------|
//! | `!install`        | 8 random bytes made on first open (see [`Identity`])                                     |
//! | `!feed`           | the change feed's last assigned sequence number (u64, big-endian)                        |
//! | `!pending-v1`     | empty: every document with unacknowledged local writes has a `p/`                        |
//! | `m/ID`            | the document's meta (CBOR): kind, chunk counts, KOL references, owner, heads, feed entry |
//! | `c/ID/SEQ`        | a framed chunk: `save()` or `save_after()` output                                        |
//! | `k/KIND/ID`       | empty: documents by kind                                                                 |
//! | `s/ID`            | KOL summary (CBOR), for listing and search                                               |
//! | `r/KOLID/KIND/ID` | empty: records that belong to a KOL                                                      |
//! | `y/ID/STORAGEID`  | a peer's encoded automerge sync state for the doc                                        |
//! | `f/TH SEQ ID`     | feed entry (CBOR): team, kind, heads, erased (see [`FeedEntry`])                         |
//! | `p/ID`            | the heads (32 bytes each) after the document's last local write                          |
//! | `!index-v`        | the version of the derived indexes (`s/` and `x/`) the store holds (u32, big-endian)     |
//! | `!index-rebuild`  | a rebuild of them under way: the version it builds and the last `m/` key done            |
//! | `x/b/ID`          | the screen index keys the document wrote (CBOR list), see `screen`                       |
//! | `x/i/KOL T↓ ID`   | an interaction in its KOL's list, newest first (CBOR row)                                 |
//! | `x/t/U R T↑ ID I` | a follow-up or plan activity in its owner's list: open dated, open undated, closed      |
//! | `x/q/O T↑ ID`     | a medical information request, open (`O` = 0) or not, oldest first                       |
//! | `x/d/U ID`        | a draft of a kind that locks on submit, by author                                       |
//! | `x/g/ID`          | a KOL profile merged into another: the other's 16 id bytes                               |
//! | `x/u/ID`          | a document this build cannot read (a newer app's): its kind and schema (CBOR)            |
//!
//! `TH` is the first 16 bytes of SHA-256 of the tenant and `SEQ` a u64, big-endian, so a
//! tenant's feed is one range in sequence order (see `feed`). In `x/` keys, `U` is 16 bytes of
//! SHA-256 of a user name, `T↑`/`T↓` a time that sorts oldest or newest first, `I` an item id.
//!
//! A write is one atomic batch: the new chunk, the meta and every index entry it changes. With
//! [`Durability::Immediate`] the batch is flushed before the call returns, so a returned `Ok`
//! means the edit survives a killed process.

mod cache;
mod chunk;
mod commit;
mod discard;
mod error;
mod feed;
mod feed_upkeep;
mod heads;
mod index;
mod index_version;
mod keys;
mod kol;
mod load;
mod pending;
mod position;
mod queries;
mod raw;
mod records;
mod route;
mod screen;
#[cfg(test)]
mod shared_tests;
mod sync_group;
mod sync_writes;
#[cfg(test)]
mod test_stores;
#[cfg(test)]
mod tests;
mod versions;

use std::path::Path;
use std::sync::mpsc::{Receiver, Sender, channel};
use std::sync::{Arc, Mutex, MutexGuard};

use automerge::ChangeHash;

// The clock lives in `crate::clock`; `store::{Clock, SystemClock, ManualClock}` stay as paths.
pub use crate::clock::{Clock, ManualClock, SystemClock};
pub use error::StoreError;
pub use feed::FeedEntry;
pub use index::{KolSummary, fold};
pub use queries::{DraftRow, InteractionRow, MirRow, TaskRow, UnreadableRow};
pub use route::{ROUTE_HEADER, is_route_key};
pub use sync_writes::SyncWrite;
pub use versions::StoredVersion;

use crate::id::{DocumentId, Identity};
use crate::model::Kind;
use crate::storage::{Batch, KvStore, SledKv};
use cache::Cache;
use feed::FeedCounter;

/// When a write becomes durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// Flush before every write returns: what returned `Ok` survives a crash.
    Immediate,
    /// Leave flushing to [`DocStore::flush`]: for bulk imports; nothing is promised until then.
    Deferred,
}

/// How a [`DocStore`] writes and caches. [`DocStore::open`] uses the defaults.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// When writes become durable. Default [`Durability::Immediate`].
    pub durability: Durability,
    /// Rewrite a document as one chunk once it has this many: a write that would store one more
    /// rewrites the whole document as one chunk instead, so no document has more. 0 and 1
    /// rewrite on every write. Default 64.
    pub compact_after_chunks: u64,
    /// How many loaded documents are kept in memory for the next read or edit, the least
    /// recently used evicted first; 0 keeps none. Default 32.
    pub cache_docs: usize,
    /// Other processes write the same key-value store (relay nodes on one PostgreSQL). Then
    /// every document write is conditional on the metadata it was built on (`m/ID`, which a
    /// write always changes: a per-document version), and a cached document is used only
    /// while its heads are the stored ones. A write that lost the race to another process
    /// fails with [`StoreError::Storage`]`(`[`StorageError::Conflict`](crate::storage::StorageError::Conflict)`)`
    /// ([`StoreError::is_conflict`]): nothing of it is written and its documents are dropped
    /// from memory, so reading again sees both writes. Default `false` (one writer: a device, a
    /// relay on sled).
    pub shared: bool,
    /// Keep the screen indexes (a KOL's interactions, open tasks, open requests, drafts; see
    /// [`DocStore::interactions_of_kol`] and its neighbours) in every write's batch, and rebuild
    /// them when the store opens with an older index version. Default `true` (a device). A relay
    /// lists nothing: it opens with `false`, writes none and never rebuilds, so opening it loads
    /// no document. [`DocStore::append_sync_batch`] (the relay's group commit) writes none either
    /// way; a device's received changes go through [`DocStore::apply_sync_group`].
    pub screen_indexes: bool,
}

impl Default for StoreOptions {
    fn default() -> Self {
        Self {
            durability: Durability::Immediate,
            compact_after_chunks: 64,
            cache_docs: 32,
            shared: false,
            screen_indexes: true,
        }
    }
}

/// Where a change came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// Made through this store: creating, editing, submitting, unlocking or deleting a
    /// document, merging KOLs, discarding refused changes.
    Local,
    /// Received from elsewhere: [`DocStore::merge_remote`], [`DocStore::apply_sync_changes`],
    /// [`DocStore::append_sync_batch`].
    Remote,
}

/// Why a document changed, for the app to word its notice ("added", "updated by a
/// colleague", "erased", "no longer shared with you"...).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ChangeReason {
    /// The write that first stored the document here, made here or received.
    Created,
    /// Changed here: edited, submitted, unlocked, put on hold, refused changes discarded, or the
    /// winner of a KOL merge.
    UpdatedLocally,
    /// Changes received from elsewhere (another device, through the relay).
    UpdatedRemotely,
    /// Deleted by [`DocStore::delete`] or [`DocStore::delete_with`]: the relay's erasure, or a
    /// device's delete.
    Erased,
    /// Dropped by [`DocStore::remove_for_access`]: this device may no longer read it. Not an
    /// erasure: the document lives on elsewhere.
    AccessRemoved,
    /// The losing profile of a KOL merge ([`DocStore::merge_kols`]): it now records
    /// `merged_into` and lookups resolve it to the winner.
    MergedAway,
}

/// One event of the change feed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DocChange {
    /// The document that changed.
    pub id: DocumentId,
    /// Its kind; `None` if it is not a liaison record.
    pub kind: Option<Kind>,
    /// Whether the change was made here or received.
    pub origin: Origin,
    /// Heads after the change; empty when the document was deleted.
    pub heads: Vec<ChangeHash>,
    /// The document was deleted from this store (reason [`ChangeReason::Erased`] or
    /// [`ChangeReason::AccessRemoved`]).
    pub deleted: bool,
    /// Why it changed.
    pub reason: ChangeReason,
}

/// The on-device (and, later, relay) document store.
pub struct DocStore {
    kv: Arc<dyn KvStore>,
    identity: Identity,
    clock: Arc<dyn Clock>,
    options: StoreOptions,
    cache: Mutex<Cache>,
    /// The change feed's sequence numbers (written under the cache lock).
    feed: FeedCounter,
    subscribers: Mutex<Vec<Sender<DocChange>>>,
}

impl std::fmt::Debug for DocStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DocStore").field("kv", &self.kv).field("options", &self.options).finish_non_exhaustive()
    }
}

impl DocStore {
    /// Opens (or creates) a sled-backed store in `dir` for `identity`, writing durably.
    pub fn open(dir: &Path, identity: Identity) -> Result<Self, StoreError> {
        let kv = SledKv::open(dir)?;
        Self::with_kv(Arc::new(kv), identity, Arc::new(SystemClock), StoreOptions::default())
    }

    /// Opens a store over any backend. The identity's `install` is replaced by the store's own,
    /// made on first open and kept in the store.
    pub fn with_kv(
        kv: Arc<dyn KvStore>,
        mut identity: Identity,
        clock: Arc<dyn Clock>,
        options: StoreOptions,
    ) -> Result<Self, StoreError> {
        identity.install = match kv.get(keys::INSTALL)? {
            Some(v) => v.as_slice().try_into().map_err(|_| StoreError::BadMeta("install id"))?,
            None => {
                let install: [u8; 8] = uuid::Uuid::new_v4().as_bytes()[..8].try_into().unwrap_or([0; 8]);
                let mut batch = Batch::new();
                batch.put(keys::INSTALL, install);
                pending::mark_new_store(kv.as_ref(), &mut batch)?;
                kv.apply(batch)?;
                kv.flush()?;
                install
            }
        };
        let feed = FeedCounter::load(kv.as_ref())?;
        let store = Self {
            kv,
            identity,
            clock,
            options,
            cache: Mutex::new(Cache::default()),
            feed,
            subscribers: Mutex::new(Vec::new()),
        };
        store.upgrade_indexes()?;
        Ok(store)
    }

    /// The identity edits are made as, with this store's install id.
    pub fn identity(&self) -> &Identity {
        &self.identity
    }

    /// The key-value store underneath, for data kept beside the documents (the relay's
    /// tombstones, quarantine and storage-id claims) and for backups. Writing to the store's own
    /// keys (the layout above) bypasses its cache, indexes and change feed.
    pub fn kv(&self) -> &Arc<dyn KvStore> {
        &self.kv
    }

    /// A receiver of every change committed from now on, local and remote.
    pub fn subscribe(&self) -> Receiver<DocChange> {
        let (tx, rx) = channel();
        lock(&self.subscribers).push(tx);
        rx
    }

    /// Makes every write so far durable (needed only with [`Durability::Deferred`]), and so
    /// moves [`DocStore::feed_cursor`] past their feed entries.
    pub fn flush(&self) -> Result<(), StoreError> {
        // Read before the flush: what was applied by then is flushed by it.
        let applied = self.feed.applied();
        self.kv.flush()?;
        self.feed.flushed_through(applied);
        Ok(())
    }

    fn durable(&self) -> Result<(), StoreError> {
        if self.options.durability == Durability::Immediate {
            self.flush()?;
        }
        Ok(())
    }

    fn notify(&self, change: DocChange) {
        lock(&self.subscribers).retain(|s| s.send(change.clone()).is_ok());
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding the lock cannot leave half a write behind: writes go to the kv
    // store as one batch, and the cache only ever holds committed documents.
    m.lock().unwrap_or_else(|p| p.into_inner())
}
