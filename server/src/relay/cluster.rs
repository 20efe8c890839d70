//! The relay as one node of a cluster (`[storage] cluster = true`): hints to and from the
//! other nodes on the same database (`storage::hints`).
//!
//! - After this node stored a document's changes it tells the others (`Hint::Doc`); after an
//!   erasure, a purge or a change of tokens or grants, `Hint::Security`.
//! - A `Hint::Doc` from another node: an erased document (its tombstone is in the store) is
//!   erased here too, its devices told; any other is loaded again if resident (the engine's
//!   `Input::Reload`: its devices get the other node's changes) and offered to catalog
//!   subscribers that may read it. `Hint::Security` re-checks every connection now.
//! - Hints can be lost (a listener reconnecting, a slow consumer): `Resync`, and a timer every
//!   `CATCH_UP` seconds, compare every resident document's heads with the store's and treat
//!   each that differs as hinted.
//!
//! Nothing here is needed for correctness of what is stored: a write judged against a stale
//! copy conflicts in the store and the engine reloads. Hints make other nodes' changes reach
//! this node's devices now instead of at their next write or reconnect.

use std::sync::Arc;
use std::time::Duration;

use liaison_core::DocumentId;
use liaison_core::sync::Input;
use tokio::sync::mpsc;

use super::{Actor, ActorMsg};
use crate::policy::erased_owner;
use crate::storage::hints::{Hint, HintEvent, Hints};

/// How often a node compares its resident documents with the store, hints or not.
pub(super) const CATCH_UP: Duration = Duration::from_secs(5);

/// Forwards the other nodes' hints to the actor until either side stops.
pub(super) fn forward(hints: &Arc<dyn Hints>, tx: mpsc::Sender<ActorMsg>) {
    let mut receiver = hints.subscribe();
    tokio::spawn(async move {
        while let Some(event) = receiver.recv().await {
            if tx.send(ActorMsg::Hint(event)).await.is_err() {
                return;
            }
        }
    });
}

impl Actor {
    /// This node stored changes to `doc`: the other nodes hear of it.
    pub(super) fn hint_stored(&self, doc: DocumentId) {
        self.publish(Hint::Doc { id: doc, version: 0 });
    }

    /// Tokens, grants or tombstones changed here: the other nodes re-check now.
    pub(super) fn hint_security(&self) {
        self.publish(Hint::Security);
    }

    fn publish(&self, hint: Hint) {
        if let Some(hints) = &self.hints
            && let Err(e) = hints.publish(&[hint])
        {
            tracing::warn!(error = %e, "cannot tell the other relays; they catch up on their timer");
        }
    }

    pub(super) fn on_hint(&mut self, event: HintEvent) {
        match event {
            HintEvent::Hint(Hint::Doc { id, .. }) => self.changed_elsewhere(id),
            HintEvent::Hint(Hint::Security) => {
                self.recheck();
                self.catalog_tick();
            }
            HintEvent::Resync => {
                self.catch_up();
                self.recheck();
            }
        }
    }

    /// Another node stored or erased `doc`.
    fn changed_elsewhere(&mut self, doc: DocumentId) {
        if erased_owner(&self.store, &doc).is_some() {
            self.pending_owners.forget(&doc);
            self.input(Input::Erase { doc, notify: true });
            self.catalog_erased(doc);
            return;
        }
        self.input(Input::Reload { doc });
        if let Ok(Some(heads)) = self.store.stored_heads(&doc) {
            self.catalog_changed(doc, &heads);
        }
    }

    /// Every resident document whose stored heads are not the ones this node holds is treated
    /// as hinted: what a lost hint would have said.
    pub(super) fn catch_up(&mut self) {
        if self.hints.is_none() {
            return;
        }
        let mut stale = Vec::new();
        for (doc, heads) in self.engine.resident_heads() {
            match self.store.stored_heads(&doc) {
                Ok(Some(stored)) if stored == heads => {}
                Ok(_) => stale.push(doc),
                Err(e) => tracing::warn!(document = %doc, error = %e, "cannot compare a document with the store"),
            }
        }
        if !stale.is_empty() {
            tracing::debug!(documents = stale.len(), "catching up with the other relays' changes");
        }
        for doc in stale {
            self.changed_elsewhere(doc);
        }
    }
}
