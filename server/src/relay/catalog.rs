//! Catalog subscriptions: the relay's side of [`liaison_core::sync::catalog`].
//!
//! A device that asks in its `join` is answered from the store's per-tenant change feed, off
//! the actor, in pages a bounded channel hands over (the scan waits while the device's outbox
//! is full; it never holds a whole tenant in memory). While it stays connected it hears, in one
//! entry each, of every stored change to a document it may read and is not syncing on that
//! connection, of erasures, and, when its grants change, a full answer under its new scope.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::sync::mpsc::{Receiver, SyncSender, TryRecvError, sync_channel};

use automerge::ChangeHash;
use liaison_core::sync::catalog::{
    CatalogEnd, CatalogEntry, CatalogPage, CatalogRequest, PAGE_ENTRIES, Scope, encode_page,
};
use liaison_core::sync::{ConnId, Input};
use liaison_core::{DocStore, DocumentId};

use super::{Actor, ActorMsg};
use crate::policy::{Owner, erased_owner, readable_scope};

/// Pages a scan may have ready ahead of the device.
const PAGES_AHEAD: usize = 2;
/// Bytes a connection's outbox may hold before catalog pages wait.
const OUTBOX_ROOM: usize = 4 * 1024 * 1024;
/// Messages a device may send beyond its rate per document listed: its request, its answer to
/// the document, and room for one more exchange.
const INVITED_PER_ENTRY: u64 = 4;

/// A subscribed connection.
#[derive(Debug)]
pub(super) struct Subscription {
    scope: Scope,
    /// Whether documents are listed (not for system admins).
    list: bool,
    fingerprint: String,
    /// The answer being produced, if any: pages and how many entries each lists.
    pages: Option<Receiver<(Vec<u8>, u64)>>,
}

/// The subscribed connections.
#[derive(Debug, Default)]
pub(super) struct Subscriptions(HashMap<ConnId, Subscription>);

impl Actor {
    /// A device asked for the catalog in its `join`.
    pub(super) fn subscribe(&mut self, conn: ConnId, request: &CatalogRequest) {
        let Some(p) = self.principals.get(conn) else { return };
        let scope = readable_scope(&p);
        let fingerprint = scope.fingerprint();
        // The position means something only under the scope it was read with, and only on
        // this store's feed (a restored relay's feed may be behind it).
        let reset = request.scope != fingerprint || request.cursor == 0 || request.cursor > self.store.feed_cursor();
        let after = if reset { 0 } else { request.cursor };
        self.answer(conn, scope, fingerprint, after, reset);
    }

    fn answer(&mut self, conn: ConnId, scope: Scope, fingerprint: String, after: u64, reset: bool) {
        // A system admin's catalog lists nothing: under a support grant it opens records one by
        // one, each written to the tenant's audit log first. Its answer is only the end: what
        // its devices may keep.
        let list = !self.principals.get(conn).is_some_and(|p| p.is_system_admin());
        let (tx, rx) = sync_channel(PAGES_AHEAD);
        tracing::debug!(conn = conn.0, after, reset, "catalog answer");
        self.catalog.0.insert(conn, Subscription { scope: scope.clone(), list, fingerprint, pages: Some(rx) });
        let (store, actor) = (self.store.clone(), self.tx.clone());
        tokio::task::spawn_blocking(move || {
            let nudge = || {
                let _ = actor.blocking_send(ActorMsg::CatalogPages { conn });
            };
            if let Err(e) = scan(&store, scope, after, reset, list, &tx, nudge) {
                // No end page: the device keeps its old position and asks again next time.
                tracing::error!(conn = conn.0, error = %e, "catalog answer failed");
            }
        });
    }

    /// Moves ready pages into the connection's outbox while it has room.
    pub(super) fn drain_catalog(&mut self, conn: ConnId) {
        loop {
            let Some(out) = self.outboxes.get(&conn) else {
                self.catalog.0.remove(&conn);
                return;
            };
            if out.queued_bytes() > OUTBOX_ROOM {
                return;
            }
            let Some(sub) = self.catalog.0.get_mut(&conn) else { return };
            let Some(rx) = &sub.pages else { return };
            match rx.try_recv() {
                Ok((data, entries)) => {
                    if let Some(out) = self.outboxes.get(&conn) {
                        out.invite(entries * INVITED_PER_ENTRY);
                    }
                    self.input(Input::SendNotice { conn, data });
                }
                Err(TryRecvError::Empty) => return,
                Err(TryRecvError::Disconnected) => {
                    sub.pages = None;
                    return;
                }
            }
        }
    }

    /// Every second: pages that waited for room, and scopes that changed with grants.
    pub(super) fn catalog_tick(&mut self) {
        let conns: Vec<ConnId> = self.catalog.0.keys().copied().collect();
        for conn in conns {
            let Some(p) = self.principals.get(conn) else {
                self.catalog.0.remove(&conn);
                continue;
            };
            let scope = readable_scope(&p);
            let fingerprint = scope.fingerprint();
            if self.catalog.0.get(&conn).is_some_and(|s| s.fingerprint != fingerprint) {
                // Grants changed: everything under the new scope, and the device drops what the
                // new scope leaves out.
                tracing::info!(conn = conn.0, "access changed; sending the catalog again");
                self.answer(conn, scope, fingerprint, 0, true);
            }
            self.drain_catalog(conn);
        }
    }

    /// A document was stored: subscribers that may read it and are not syncing it hear of it.
    pub(super) fn catalog_changed(&mut self, doc: DocumentId, heads: &[ChangeHash], owner: &Owner) {
        if self.catalog.0.is_empty() {
            return;
        }
        let entry = CatalogEntry { doc, heads: heads.to_vec(), erased: false };
        self.tell(doc, entry, |s| s.allows(&owner.tenant, Some(&owner.team), owner.kind));
    }

    /// This node stored changes to `doc`: its subscribers hear of it. The owner comes from the
    /// policy's cache (a read of the store on the actor only the first time).
    pub(super) fn catalog_stored(&mut self, doc: DocumentId, heads: &[ChangeHash]) {
        if self.catalog.0.is_empty() {
            return;
        }
        let store = &self.store;
        let owner = self.policy_cache.owner(&doc, || store.owner_of(&doc).map(|o| o.map(Owner::from)));
        if let Ok(Some(owner)) = owner {
            self.catalog_changed(doc, heads, &owner);
        }
    }

    /// Whether any connection subscribed to the catalog.
    pub(super) fn has_catalog_subscribers(&self) -> bool {
        !self.catalog.0.is_empty()
    }

    /// A document was erased: subscribers that could read it hear of it.
    pub(super) fn catalog_erased(&mut self, doc: DocumentId) {
        if self.catalog.0.is_empty() {
            return;
        }
        let Some((tenant, team)) = erased_owner(&self.store, &doc) else { return };
        let entry = CatalogEntry { doc, heads: Vec::new(), erased: true };
        // The kind is gone with the document: those who may read every kind of the team hear
        // now; the others find the erasure in the feed (which keeps the kind) next time.
        self.tell(doc, entry, |s| {
            s.rules.iter().any(|r| r.tenant == tenant && r.kind.is_none() && r.team.as_ref().is_none_or(|t| *t == team))
        });
    }

    fn tell(&mut self, doc: DocumentId, entry: CatalogEntry, allowed: impl Fn(&Scope) -> bool) {
        let data = encode_page(&CatalogPage { reset: false, entries: vec![entry], end: None });
        let targets: Vec<ConnId> = self
            .catalog
            .0
            .iter()
            .filter(|(c, s)| s.list && allowed(&s.scope) && !self.engine.is_syncing(**c, &doc))
            .map(|(c, _)| *c)
            .collect();
        for conn in targets {
            if let Some(out) = self.outboxes.get(&conn) {
                out.invite(INVITED_PER_ENTRY);
            }
            self.input(Input::SendNotice { conn, data: data.clone() });
        }
    }

    pub(super) fn unsubscribe(&mut self, conn: ConnId) {
        self.catalog.0.remove(&conn);
    }

    /// The tenants whose documents some subscriber may be told of.
    pub(super) fn catalog_tenants(&self) -> BTreeSet<String> {
        self.catalog
            .0
            .values()
            .filter(|s| s.list)
            .flat_map(|s| s.scope.rules.iter().map(|r| r.tenant.clone()))
            .collect()
    }
}

/// Reads the feed of every tenant the scope names, after `after`, and hands the readable
/// entries over in pages; the last page carries the end (the position read before the scan,
/// so nothing committed at or below it is missed).
fn scan(
    store: &Arc<DocStore>,
    scope: Scope,
    after: u64,
    reset: bool,
    list: bool,
    pages: &SyncSender<(Vec<u8>, u64)>,
    nudge: impl Fn(),
) -> Result<(), liaison_core::StoreError> {
    let cursor = store.feed_cursor();
    let tenants: BTreeSet<String> =
        if list { scope.rules.iter().map(|r| r.tenant.clone()).collect() } else { BTreeSet::new() };
    let mut entries = Vec::new();
    let send = |entries: Vec<CatalogEntry>, end: Option<CatalogEnd>| -> bool {
        let n = entries.len() as u64;
        let ok = pages.send((encode_page(&CatalogPage { reset, entries, end }), n)).is_ok();
        nudge();
        ok
    };
    for tenant in &tenants {
        let mut from = after;
        loop {
            let batch = store.feed_page(tenant, from, 4 * PAGE_ENTRIES)?;
            let Some(last) = batch.last() else { break };
            from = last.seq;
            for e in batch {
                if !scope.allows(tenant, e.team.as_deref(), e.kind) {
                    continue;
                }
                entries.push(CatalogEntry { doc: e.doc, heads: e.heads, erased: e.erased });
                // The device went away: stop reading.
                if entries.len() == PAGE_ENTRIES && !send(std::mem::take(&mut entries), None) {
                    return Ok(());
                }
            }
        }
    }
    send(entries, Some(CatalogEnd { cursor, scope }));
    Ok(())
}
