//! Remote wipe: the library erases the local records on its own when the relay says the data
//! must go: the tenant was purged (410), or the device's credential was revoked and the
//! credential provider had no new one (see `auth.rs` for exactly when). Edits the relay had not
//! acknowledged go too: that is the point of a wipe (a lost phone's edits are not worth the
//! tenant's data on it). The sled files stay until the app signs out (`LiaisonStore::sign_out`
//! removes them); the store is left empty, with no catalog position.

use super::{ConnState, Driver, SyncProblem, WipeReason};
use crate::StoreError;
use crate::sync::{ConnId, Input};

impl Driver {
    /// Erases every local record, the catalog position and the pending marks, drops the
    /// engine's copies, and reports it (`SyncStatus::wiped`, the problem). The client then
    /// waits for `retry_sign_in` or shutdown.
    pub(super) async fn wipe(&mut self, reason: WipeReason, problem: SyncProblem) {
        let docs = self.store.all_documents().unwrap_or_else(|e| {
            tracing::error!(error = %e, "cannot list the local records to erase");
            Vec::new()
        });
        let mut failed = 0usize;
        for doc in &docs {
            match self.store.delete(doc) {
                Ok(()) | Err(StoreError::NotFound(_)) => {}
                Err(e) => {
                    failed += 1;
                    tracing::error!(document = %doc, error = %e, "cannot erase a local record");
                }
            }
            let _ = self.feed(None, ConnId(0), Input::Erase { doc: *doc, notify: false }).await;
        }
        if let Err(e) = self.store.clear_catalog_position() {
            tracing::error!(error = %e, "cannot erase the catalog position");
        }
        if let Err(e) = self.store.clear_route() {
            tracing::error!(error = %e, "cannot erase the routing key");
        }
        tracing::warn!(?reason, documents = docs.len(), failed, "local records erased (remote wipe)");
        self.pending().clear();
        self.catalog_reset();
        self.halted = true;
        let text = problem.to_string();
        self.publish(|s| {
            s.state = ConnState::Offline;
            s.pending_documents = 0;
            s.refused.clear();
            s.first_sync_complete = false;
            s.next_attempt_ms = None;
            s.wiped = Some(reason);
            s.problem = Some(problem);
            s.last_error = Some(text);
        });
    }
}
