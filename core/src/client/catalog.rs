//! The device's side of the team catalog: what the relay lists is fetched, erased documents
//! and documents the device may no longer read are deleted, and the catalog position is kept
//! only once everything it covers is here (a connection lost halfway asks again from the old
//! position, so nothing listed is skipped).

use std::collections::BTreeMap;

use automerge::ChangeHash;

use super::Driver;
use crate::DocumentId;
use crate::StoreError;
use crate::sync::Input;
use crate::sync::catalog::{CatalogPage, CatalogRequest, Scope};

/// Listed documents a device waits for at most (about 100 bytes each): a relay gone wrong
/// cannot grow the phone's memory without bound; what is past it is asked for next time, since
/// the position is not stored while anything listed is missing.
const MAX_OUTSTANDING: usize = 1_000_000;

/// What the current answer still owes the device.
#[derive(Debug, Default)]
pub(super) struct CatalogProgress {
    /// Listed documents whose heads the store does not hold yet, with those heads.
    outstanding: BTreeMap<DocumentId, Vec<ChangeHash>>,
    /// The answer's end, kept until `outstanding` is empty.
    end: Option<(u64, String)>,
    known: u64,
    received: u64,
    /// Entries were dropped past `MAX_OUTSTANDING`: this answer's position is not kept.
    overflowed: bool,
}

impl Driver {
    /// The request for the next `join`: the position stored after the last complete answer.
    pub(super) fn catalog_request(&self) -> CatalogRequest {
        match self.store.catalog_position() {
            Ok(Some((cursor, scope))) => CatalogRequest { cursor, scope },
            Ok(None) => CatalogRequest::default(),
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the catalog position; asking for everything");
                CatalogRequest::default()
            }
        }
    }

    /// A new connection: the old answer's leftovers are asked for again by the new one.
    pub(super) fn catalog_reset(&mut self) {
        self.catalog = CatalogProgress::default();
        self.publish_catalog();
    }

    pub(super) fn on_catalog(&mut self, page: &CatalogPage) {
        for e in &page.entries {
            if e.erased {
                self.delete_local(&e.doc, false);
                continue;
            }
            match self.store.has_all(&e.doc, &e.heads) {
                Ok(true) => {}
                Ok(false) if self.catalog.outstanding.len() >= MAX_OUTSTANDING => {
                    tracing::warn!("the catalog lists more documents than a device waits for at once");
                    self.catalog.overflowed = true;
                }
                Ok(false) => {
                    let stored = self.store.stored_heads(&e.doc).ok().flatten().is_some();
                    if self.catalog.outstanding.insert(e.doc, e.heads.clone()).is_none() {
                        self.catalog.known += 1;
                    }
                    self.followups.push(if stored {
                        Input::Announce { doc: e.doc }
                    } else {
                        Input::Find { doc: e.doc }
                    });
                }
                Err(e) => tracing::warn!(error = %e, "cannot read a listed document's heads"),
            }
        }
        if let Some(end) = &page.end {
            self.drop_out_of_scope(&end.scope);
            self.catalog.end = Some((end.cursor, end.scope.fingerprint()));
        }
        self.finish_catalog();
    }

    /// The document was stored, or the relay said it is unavailable: is it still owed?
    pub(super) fn catalog_progress(&mut self, doc: &DocumentId, unavailable: bool) {
        let Some(heads) = self.catalog.outstanding.get(doc) else { return };
        if unavailable || self.store.has_all(doc, heads).unwrap_or(false) {
            self.catalog.outstanding.remove(doc);
            self.catalog.received += 1;
            // Found through the catalog: later connections need not offer it, unless it holds
            // local changes the relay has not acknowledged.
            if !self.pending().contains(doc) {
                self.followups.push(Input::Settled { doc: *doc });
            }
            self.finish_catalog();
        }
    }

    fn finish_catalog(&mut self) {
        if self.catalog.outstanding.is_empty()
            && let Some((cursor, scope)) = self.catalog.end.take()
            && !self.catalog.overflowed
        {
            match self.store.set_catalog_position(cursor, &scope) {
                Ok(()) => tracing::info!(cursor, "catalog complete"),
                Err(e) => tracing::warn!(error = %e, "cannot store the catalog position; asking again next time"),
            }
            self.publish(|s| {
                s.first_sync_complete = true;
                s.catalog_current = true;
            });
        }
        self.publish_catalog();
    }

    fn publish_catalog(&self) {
        let (known, received) = (self.catalog.known, self.catalog.received);
        self.publish(|s| {
            s.documents_known = known;
            s.documents_received = received;
        });
    }

    /// Deletes local copies of records the scope no longer covers (territory change, revoked
    /// grant), except those with local changes the relay has not acknowledged: those stay until
    /// the relay refuses them, so the user sees what was not accepted.
    fn drop_out_of_scope(&mut self, scope: &Scope) {
        let docs = match self.store.all_documents() {
            Ok(d) => d,
            Err(e) => {
                tracing::warn!(error = %e, "cannot list local documents");
                return;
            }
        };
        for doc in docs {
            let Ok(Some((tenant, team, kind))) = self.store.owner_of(&doc) else { continue };
            if scope.allows(&tenant, Some(&team), kind) || self.pending().contains(&doc) {
                continue;
            }
            self.delete_local(&doc, true);
        }
    }

    /// Deletes the local copy: erased by the relay, or no longer readable (`access_removed`).
    pub(super) fn delete_local(&mut self, doc: &DocumentId, access_removed: bool) {
        let result =
            if access_removed { self.store.remove_for_access(doc).map(|_| ()) } else { self.store.delete(doc) };
        match result {
            Ok(()) => tracing::info!(document = %doc, access_removed, "local copy deleted"),
            Err(StoreError::NotFound(_)) => {}
            Err(e) => tracing::error!(document = %doc, error = %e, "cannot delete the local copy"),
        }
        self.followups.push(Input::Erase { doc: *doc, notify: false });
        self.catalog.outstanding.remove(doc);
        let pending = {
            let mut p = self.pending();
            p.remove(doc);
            p.len()
        };
        self.publish(|s| s.pending_documents = pending);
    }
}
