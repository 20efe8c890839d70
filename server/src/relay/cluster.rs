//! The relay as one node of a cluster (`[storage] cluster = true`): hints to and from the
//! other nodes on the same database (`storage::hints`).
//!
//! - After this node stored a document's changes it tells the others (`Hint::Doc`); after an
//!   erasure, a purge or a change of tokens or grants, `Hint::Security`.
//! - A `Hint::Doc` from another node: an erased document (its tombstone is in the store) is
//!   erased here too, its devices told; any other is loaded again if resident (the engine's
//!   `Input::Reload`: its devices get the other node's changes) and offered to catalog
//!   subscribers that may read it. `Hint::Security` re-checks every connection now.
//! - Hints can be lost: a listener reconnecting or a slow consumer (then `Resync` comes), or a
//!   node killed between its commit and its NOTIFY (nothing comes). On `Resync` and on a timer
//!   (`CATCH_UP`) the node compares every resident document's heads with the store's, off the
//!   actor (one read per document), and treats each that differs as hinted; and it reads the
//!   change feed of its catalog subscribers' tenants past the point it had read, so documents
//!   it does not hold (a colleague's new record) still reach their catalogs.
//!
//! Nothing here is needed for correctness of what is stored: a write judged against a stale
//! copy conflicts in the store and the engine reloads. Hints make other nodes' changes reach
//! this node's devices now instead of at their next write or reconnect.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use liaison_core::DocumentId;
use liaison_core::sync::Input;
use tokio::sync::mpsc;

use liaison_core::DocStore;
use liaison_core::store::FeedEntry;

use super::{Actor, ActorMsg};
use crate::policy::{Owner, erased_owner};
use crate::storage::hints::{Hint, HintEvent, Hints};

/// How often a node compares its resident documents with the store, hints or not: the most a
/// hint lost without a `Resync` (its sender killed after its commit) delays a change.
pub(super) const CATCH_UP: Duration = Duration::from_secs(15);

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
                // Another node erased or purged: whatever the policy remembers as not erased
                // is asked again.
                self.policy_cache.forget_all_not_erased();
                self.recheck_in_background();
                self.catalog_tick();
            }
            HintEvent::Resync => {
                self.catch_up();
                self.recheck_in_background();
            }
        }
    }

    /// Another node stored or erased `doc`: what it means is read off the actor (every read is
    /// a round trip on PostgreSQL) and comes back as `ActorMsg::Elsewhere`.
    fn changed_elsewhere(&mut self, doc: DocumentId) {
        let listing = self.has_catalog_subscribers();
        if !listing && !self.engine.concerns(&doc) {
            // No device here holds it, asked for it or lists documents: nothing to read (each
            // read a database round trip, for every edit of every other node). The policy
            // asks again whether it is erased; an erasure also sends `Hint::Security`.
            self.policy_cache.forget_not_erased(&doc);
            return;
        }
        let held = self.engine.durable_heads(&doc);
        let from = self.positions.chunk_to_read_from(&doc, held.as_deref());
        let store = self.store.clone();
        let tx = self.tx.clone();
        tokio::task::spawn_blocking(move || {
            let news = read_elsewhere(&store, doc, held.as_deref(), from, listing);
            let _ = tx.blocking_send(ActorMsg::Elsewhere(Box::new(news)));
        });
    }

    /// What another node did to a document, read by `changed_elsewhere`: an erasure is erased
    /// here too; the changes this node lacks of a document it holds go to its engine as changes
    /// already stored (`Input::LocalChanges`: its devices get them, nothing is judged again or
    /// written), and catalog subscribers hear of it. A document being loaded or written is
    /// loaded again once that is done (`Input::Reload`).
    pub(super) fn on_elsewhere(&mut self, news: Elsewhere) {
        let Elsewhere { doc, erased, heads, next_chunk, changes, owner } = news;
        if erased {
            self.positions.forget(&doc);
            // From now on the policy reads its tombstone (every other change the hint may stand
            // for keeps it: the policy's "not erased" is forgotten on a load or a conflict).
            self.policy_cache.erased(&doc);
            self.pending_owners.forget(&doc);
            self.input(Input::Erase { doc, notify: true });
            self.catalog_erased(doc);
            return;
        }
        if let (Some(heads), Some(next_chunk)) = (&heads, next_chunk) {
            self.positions.read(doc, heads.clone(), next_chunk);
        }
        match changes {
            Some(changes) if !changes.is_empty() => self.input(Input::StoredElsewhere { doc, changes }),
            Some(_) => {}
            None => self.input(Input::Reload { doc }),
        }
        if let (Some(heads), Some(owner)) = (heads, owner) {
            self.catalog_changed(doc, &heads, &owner);
        }
    }

    /// Compares every resident document with the store, off the actor; each whose stored heads
    /// are not the ones this node holds comes back as `ActorMsg::Stale`: what a lost hint would
    /// have said.
    pub(super) fn catch_up(&mut self) {
        if self.hints.is_none() {
            return;
        }
        // Hints lost (a `Resync`), or lost unannounced (a node killed between its commit and its
        // hint), or an erasure by `liaison-relay admin` on the database: the policy's "not
        // erased" answers are never older than this timer.
        self.policy_cache.forget_all_not_erased();
        let engine = &self.engine;
        self.positions.retain(|doc| engine.concerns(doc));
        let resident = self.engine.resident_heads();
        let tenants = self.catalog_tenants();
        let after = self.feed_read;
        let (store, tx) = (self.store.clone(), self.tx.clone());
        tokio::task::spawn_blocking(move || {
            let mut stale = Vec::new();
            for (doc, heads) in resident {
                match store.stored_heads(&doc) {
                    Ok(Some(stored)) if stored == heads => {}
                    Ok(_) => stale.push(doc),
                    Err(e) => tracing::warn!(document = %doc, error = %e, "cannot compare a document with the store"),
                }
            }
            let (entries, read) = feed_since(&store, &tenants, after);
            if !stale.is_empty() || !entries.is_empty() || read != after {
                tracing::debug!(documents = stale.len(), listed = entries.len(), "catching up with the other relays");
                let _ = tx.blocking_send(ActorMsg::Stale { docs: stale, entries, read });
            }
        });
    }

    /// What `catch_up` found: resident documents another node changed, and feed entries past
    /// the point this node had read.
    pub(super) fn on_stale(&mut self, docs: Vec<DocumentId>, entries: Vec<(String, FeedEntry)>, read: u64) {
        for doc in docs {
            self.changed_elsewhere(doc);
        }
        for (tenant, e) in entries {
            if e.erased {
                self.catalog_erased(e.doc);
            } else if let Some(team) = e.team {
                // The feed's entry names what the meta does (the tenant is the feed's).
                let owner = Owner { tenant, team, kind: e.kind };
                self.catalog_changed(e.doc, &e.heads, &owner);
            }
        }
        self.feed_read = self.feed_read.max(read);
    }
}

/// Entries of `tenants`' feeds after `after`, each with its tenant, and the feed's position
/// they were read up to. On a read error, what was read so far and `after` (read again next
/// time).
fn feed_since(store: &DocStore, tenants: &BTreeSet<String>, after: u64) -> (Vec<(String, FeedEntry)>, u64) {
    let cursor = store.feed_cursor();
    let mut entries = Vec::new();
    if cursor <= after {
        return (entries, after);
    }
    for tenant in tenants {
        let mut from = after;
        loop {
            match store.feed_page(tenant, from, FEED_PAGE) {
                Ok(page) => {
                    let Some(last) = page.last().map(|e| e.seq) else { break };
                    let full = page.len() == FEED_PAGE;
                    entries.extend(page.into_iter().map(|e| (tenant.clone(), e)));
                    from = last;
                    if !full {
                        break;
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot read the change feed; caught up next time");
                    return (entries, after);
                }
            }
        }
    }
    (entries, cursor)
}

/// Feed entries read per page by the catch-up.
const FEED_PAGE: usize = 2_000;

/// What another relay of the cluster did to a document (opaque: read off the actor and handed
/// back to it; see `Actor::on_elsewhere`).
#[derive(Debug)]
pub struct Elsewhere {
    doc: DocumentId,
    /// Its tombstone is in the store.
    erased: bool,
    /// Its stored heads, if it is stored.
    heads: Option<Vec<automerge::ChangeHash>>,
    /// The number its next chunk took when those heads were read.
    next_chunk: Option<u64>,
    /// The stored changes after the heads this node holds, if it holds it loaded; `None` when it
    /// does not (or the store could not be read: then it is loaded again).
    changes: Option<Vec<u8>>,
    /// Its tenant, team and kind, read for catalog subscribers (`None` when there were none,
    /// or it is not a liaison record).
    owner: Option<Owner>,
}

/// Reads what another node did to `doc`, off the actor; with `listing`, its owner too (for
/// catalog subscribers). A copy held at a known position (`from`, see `positions`) reads the
/// chunks past it alone; any other copy the changes since its heads (the document loaded whole).
fn read_elsewhere(
    store: &DocStore,
    doc: DocumentId,
    held: Option<&[automerge::ChangeHash]>,
    from: Option<u64>,
    listing: bool,
) -> Elsewhere {
    if erased_owner(store, &doc).is_some() {
        return Elsewhere { doc, erased: true, heads: None, next_chunk: None, changes: None, owner: None };
    }
    let (version, changes) = match from {
        Some(from) => match store.changes_from_chunk(&doc, from) {
            Ok(Some((newer, version))) => {
                tracing::trace!(document = %doc, from, bytes = newer.len(), "another node's chunks read alone");
                let changes = if held == Some(version.heads.as_slice()) { Vec::new() } else { newer };
                (Some(version), Some(changes))
            }
            _ => (None, None),
        },
        None => {
            let version = store.stored_version(&doc).ok().flatten();
            let changes = match (held, &version) {
                (Some(held), Some(stored)) if held == stored.heads.as_slice() => Some(Vec::new()),
                (Some(held), Some(_)) => {
                    tracing::trace!(document = %doc, "another node's changes read from the whole document");
                    store.changes_since(&doc, held).ok()
                }
                _ => None,
            };
            (version, changes)
        }
    };
    let (heads, next_chunk) = version.map(|v| (v.heads, v.next_chunk)).unzip();
    let owner = if listing && heads.is_some() { store.owner_of(&doc).ok().flatten().map(Owner::from) } else { None };
    Elsewhere { doc, erased: false, heads, next_chunk, changes, owner }
}
