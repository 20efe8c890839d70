//! Erasures and purges in the actor: each holds the storage tasks of its own documents only, and
//! runs off the actor once none of theirs is running (see ARCHITECTURE.md, "The relay").

use std::collections::{HashSet, VecDeque};

use super::{Actor, ActorMsg, MaintenanceReply};
use crate::error::MaintenanceError;
use crate::ledger::LedgerEvent;
use crate::now_ms;

/// Loads from storage: at most `max` at once, the rest wait in order.
#[derive(Debug)]
pub(super) struct Loads {
    pub(super) max: usize,
    pub(super) running: HashSet<liaison_core::sync::TaskId>,
    pub(super) waiting: VecDeque<(liaison_core::sync::TaskId, liaison_core::sync::StorageTask)>,
}

impl Loads {
    /// Whether `task` was a running load (its slot is free now).
    pub(super) fn done(&mut self, task: liaison_core::sync::TaskId) -> bool {
        self.running.remove(&task)
    }
}

/// An erasure or purge: it holds the storage tasks of the documents it erases (and only those),
/// and starts once none of theirs is running. Backups and exports hold nothing (see `backup`).
#[derive(Debug)]
pub(super) struct Maintenance {
    what: Erasing,
    /// The documents whose storage tasks are held; `None` while a purge is still listing them.
    scope: Option<HashSet<liaison_core::DocumentId>>,
    /// Taken when the work starts.
    reply: Option<MaintenanceReply>,
}

#[derive(Debug, Clone)]
pub(super) enum Erasing {
    Document(liaison_core::DocumentId),
    Tenant(String),
}

impl Actor {
    /// A purge: its credentials first (off the actor), then its documents (see `purge_listed`).
    pub(super) fn purge_requested(&mut self, tenant: String, reply: MaintenanceReply) {
        self.begin(Erasing::Tenant(tenant.clone()), None, reply);
        if self.maintenance.as_ref().is_some_and(|m| m.scope.is_none()) {
            self.list_purge(tenant);
        }
    }

    /// A purge's credentials are revoked and its documents listed: its connections go now,
    /// before anything is erased; then its documents' tasks are held and it waits for theirs.
    pub(super) fn purge_listed(&mut self, docs: Vec<liaison_core::DocumentId>) {
        self.recheck();
        if let Some(m) = self.maintenance.as_mut() {
            let mut scope: HashSet<_> = docs.into_iter().collect();
            if let Erasing::Tenant(t) = &m.what {
                scope.extend(self.pending_owners.of_tenant(t));
            }
            m.scope = Some(scope);
        }
        self.maybe_start_maintenance();
    }

    pub(super) fn begin(
        &mut self,
        what: Erasing,
        scope: Option<HashSet<liaison_core::DocumentId>>,
        reply: MaintenanceReply,
    ) {
        if self.maintenance.is_some() {
            let _ = reply.send(Err(MaintenanceError::Busy));
            return;
        }
        self.maintenance = Some(Maintenance { what, scope, reply: Some(reply) });
        self.maybe_start_maintenance();
    }

    /// A purge's first step, off the actor: the ledger entry, then the tenant marked purged (its
    /// credentials stop working), then the list of its documents.
    pub(super) fn list_purge(&mut self, tenant: String) {
        let (store, auth, ledger, tx) = (self.store.clone(), self.auth.clone(), self.ledger.clone(), self.tx.clone());
        tokio::task::spawn_blocking(move || {
            let listed = (|| -> Result<_, MaintenanceError> {
                let now = now_ms();
                ledger.append(now, LedgerEvent::TenantPurged { tenant: tenant.clone() })?;
                if auth.tenant(&tenant)?.is_some_and(|t| t.purged_at.is_none()) {
                    auth.mark_tenant_purged(&tenant, now)?;
                }
                crate::erasure::tenant_documents(&store, &tenant)
            })();
            let docs = listed.unwrap_or_else(|e| {
                tracing::error!(tenant = %tenant, error = %e, "cannot list the tenant's documents; the purge goes on");
                Vec::new()
            });
            let _ = tx.blocking_send(ActorMsg::PurgeListed { docs });
        });
    }

    pub(super) fn not_busy(&mut self, doc: liaison_core::DocumentId) {
        if let Some(n) = self.busy_docs.get_mut(&doc) {
            *n -= 1;
            if *n == 0 {
                self.busy_docs.remove(&doc);
            }
        }
    }

    pub(super) fn busy(&mut self, doc: liaison_core::DocumentId) {
        *self.busy_docs.entry(doc).or_default() += 1;
    }

    /// Whether a storage task for `doc` must wait for the erasure or purge under way.
    pub(super) fn held_back(&self, doc: &liaison_core::DocumentId) -> bool {
        self.maintenance.as_ref().is_some_and(|m| m.scope.as_ref().is_none_or(|s| s.contains(doc)))
    }

    /// Starts the waiting erasure or purge once none of its documents has a task running.
    pub(super) fn maybe_start_maintenance(&mut self) {
        let Some(m) = self.maintenance.as_mut() else { return };
        let Some(scope) = &m.scope else { return }; // a purge still listing
        if scope.iter().any(|d| self.busy_docs.contains_key(d)) {
            return;
        }
        let Some(reply) = m.reply.take() else { return }; // already running
        let what = m.what.clone();
        let scope = scope.clone();
        let (store, auth, ledger, tx) = (self.store.clone(), self.auth.clone(), self.ledger.clone(), self.tx.clone());
        tokio::task::spawn_blocking(move || {
            let now = now_ms();
            let (result, erased) = match &what {
                Erasing::Document(doc) => {
                    let done = ledger
                        .append(now, LedgerEvent::DocumentErased { document: doc.to_string() })
                        .map_err(MaintenanceError::from)
                        .and_then(|()| crate::erasure::erase_stored(&store, doc, now));
                    match done {
                        Ok(()) => (Ok(1), vec![*doc]),
                        Err(e) => (Err(e), Vec::new()),
                    }
                }
                Erasing::Tenant(tenant) => match crate::erasure::purge_stored(&store, &auth, tenant, now) {
                    Ok(docs) => {
                        let n = docs.len() as u64;
                        // New documents whose first write was held never reach the store.
                        let mut gone: HashSet<_> = docs.into_iter().collect();
                        gone.extend(scope);
                        (Ok(n), gone.into_iter().collect())
                    }
                    Err(e) => (Err(e), Vec::new()),
                },
            };
            // Reported only once it happened: the reply follows the stored result.
            let _ = reply.send(result);
            let _ = tx.blocking_send(ActorMsg::MaintenanceDone { erased });
        });
    }
}
