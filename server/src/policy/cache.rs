//! What the relay's policy remembers of the store, so that a steady stream of sync messages for
//! the documents it serves costs no read of the store (on PostgreSQL each read is a network
//! round trip, made on the actor's one thread: issue 15).
//!
//! Three answers are kept, each only where it cannot go stale unnoticed:
//! - **Owners** (tenant, team, kind) as the store's meta names them. A record's owner and kind
//!   never change once stored (the policy refuses owner and envelope changes, on every node),
//!   so they are kept as long as there is room. Only a stored owner with a kind is kept: "not
//!   stored" may become stored at any moment, and an error must be retried (access fails
//!   closed meanwhile).
//! - **Erased**, with the owner its tombstone names: a tombstone is never removed, so it is
//!   kept as long as there is room.
//! - **Not erased**: another node (or an admin command on the database) may erase the document
//!   at any moment. It is kept only for a document whose owner is kept (it was stored: a stored
//!   document leaves the store only by an erasure, whose tombstone is written in the same
//!   batch), and forgotten on everything that may follow an erasure elsewhere: a hint that the
//!   document was erased (read off the actor), a security hint (every erasure sends one), a
//!   resync, this node's catch-up timer, this node's own erasures and purges (see
//!   `relay::cluster`), and a load of the document or a write of it that conflicted. The last
//!   two are what keeps an erased document from coming back: this node can write a document
//!   erased elsewhere again only after loading it as missing (a write built on the stored heads
//!   conflicts, the document being gone), and the message that would recreate it then asks the
//!   store. A "not erased" answer is at most one catch-up period old (`CATCH_UP`, 15 s) even
//!   when every hint is lost; hints make it milliseconds.
//!
//! A store error is never kept: the policy fails closed and asks again next time.
//!
//! The cache starts empty with the relay: a restore or `admin reapply-ledger` runs with no
//! relay running, so nothing is remembered across it.
//!
//! **Bound.** Each kind of answer is kept for at most `2 * half` documents, in two generations
//! (a cheap approximation of least recently used): answers go into the young generation; once
//! it holds `half`, it becomes the old one and the previous old one is dropped; an answer found
//! in the old generation moves back to the young one. The relay sizes `half` to its resident
//! document cap, so the documents it serves stay in, and at ~150 bytes an owner the bound is a
//! few megabytes.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use liaison_core::DocumentId;

use super::Owner;

/// The owner an erased document's tombstone names (tenant, team), if it names one.
pub type TombstoneOwner = Option<(String, String)>;

/// Whether a document was erased, as the store said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Tombstone {
    NotErased,
    Erased(TombstoneOwner),
}

/// The policy's memory of the store, shared by the policy (inside the engine) and the relay's
/// actor, which tells it what may have changed. Both run on the actor's thread: the lock is
/// never contended, it is there because the engine owns its policy as a `Box<dyn Policy>`.
#[derive(Debug, Clone)]
pub struct PolicyCache(Arc<Mutex<Remembered>>);

#[derive(Debug)]
struct Remembered {
    owners: Generations<Owner>,
    erased: Generations<TombstoneOwner>,
    not_erased: Generations<()>,
    /// Grows each time "not erased" answers are forgotten: an answer read before is not kept.
    forgotten: u64,
}

impl PolicyCache {
    /// A cache keeping each kind of answer for at most `2 * half` documents; `half == 0`
    /// keeps nothing (every answer is read from the store).
    pub fn new(half: usize) -> Self {
        Self(Arc::new(Mutex::new(Remembered {
            owners: Generations::new(half),
            erased: Generations::new(half),
            not_erased: Generations::new(half),
            forgotten: 0,
        })))
    }

    /// The stored owner of `doc`: remembered, or `read` from the store and remembered if the
    /// store names one with a kind. `read`'s `None` (not stored) and errors are not kept.
    pub fn owner<E>(
        &self,
        doc: &DocumentId,
        read: impl FnOnce() -> Result<Option<Owner>, E>,
    ) -> Result<Option<Owner>, E> {
        if let Some(owner) = self.lock().owners.get(doc) {
            return Ok(Some(owner.clone()));
        }
        let owner = read()?;
        if let Some(o) = &owner
            && o.kind.is_some()
        {
            self.lock().owners.insert(*doc, o.clone());
        }
        Ok(owner)
    }

    /// Whether `doc` was erased: remembered, or `read` from the store (the tombstone's owner if
    /// there is one). An error is not kept.
    pub fn tombstone<E>(
        &self,
        doc: &DocumentId,
        read: impl FnOnce() -> Result<Option<TombstoneOwner>, E>,
    ) -> Result<Tombstone, E> {
        let before = {
            let mut r = self.lock();
            if let Some(owner) = r.erased.get(doc) {
                return Ok(Tombstone::Erased(owner.clone()));
            }
            if r.not_erased.get(doc).is_some() {
                return Ok(Tombstone::NotErased);
            }
            r.forgotten
        };
        let read = read()?;
        let mut r = self.lock();
        match read {
            Some(owner) => {
                r.not_erased.remove(doc);
                r.erased.insert(*doc, owner.clone());
                Ok(Tombstone::Erased(owner))
            }
            None => {
                // Kept only for a stored document, and only if nothing was forgotten meanwhile.
                if r.forgotten == before && r.owners.contains(doc) {
                    r.not_erased.insert(*doc, ());
                }
                Ok(Tombstone::NotErased)
            }
        }
    }

    /// `doc` may have been erased or changed elsewhere, or is being loaded or written again:
    /// its "not erased" is asked again.
    pub fn forget_not_erased(&self, doc: &DocumentId) {
        let mut r = self.lock();
        r.forgotten += 1;
        r.not_erased.remove(doc);
    }

    /// Any document may have been erased (a security hint, a resync, the catch-up timer, this
    /// node's erasure or purge): every "not erased" is asked again.
    pub fn forget_all_not_erased(&self) {
        let mut r = self.lock();
        r.forgotten += 1;
        r.not_erased.clear();
    }

    /// `doc` was erased: its owner and "not erased" go (the tombstone is read when next asked).
    pub fn erased(&self, doc: &DocumentId) {
        let mut r = self.lock();
        r.forgotten += 1;
        r.not_erased.remove(doc);
        r.owners.remove(doc);
    }

    fn lock(&self) -> MutexGuard<'_, Remembered> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A map of at most `2 * half` documents, in two generations (see the module's doc).
#[derive(Debug)]
struct Generations<V> {
    young: HashMap<DocumentId, V>,
    old: HashMap<DocumentId, V>,
    half: usize,
}

impl<V> Generations<V> {
    fn new(half: usize) -> Self {
        Self { young: HashMap::new(), old: HashMap::new(), half }
    }

    fn get(&mut self, doc: &DocumentId) -> Option<&V> {
        if let Some(v) = self.old.remove(doc) {
            self.insert(*doc, v);
        }
        self.young.get(doc)
    }

    fn contains(&self, doc: &DocumentId) -> bool {
        self.young.contains_key(doc) || self.old.contains_key(doc)
    }

    fn insert(&mut self, doc: DocumentId, v: V) {
        if self.half == 0 {
            return;
        }
        if self.young.len() >= self.half && !self.young.contains_key(&doc) {
            self.old = std::mem::take(&mut self.young);
        }
        self.old.remove(&doc);
        self.young.insert(doc, v);
    }

    fn remove(&mut self, doc: &DocumentId) {
        self.young.remove(doc);
        self.old.remove(doc);
    }

    fn clear(&mut self) {
        self.young.clear();
        self.old.clear();
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.young.len() + self.old.len()
    }
}

#[cfg(test)]
mod tests;
