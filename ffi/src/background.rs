//! Background sync: one call for an Android WorkManager worker or an iOS BGTaskScheduler task.
//! It pushes the pending local changes and pulls what is new, within a time limit, and says
//! what it did. If sync is not running it starts it for the call and stops it after (the app's
//! process may have been started just for the job); if it is running it only waits on it.

use std::collections::HashSet;
use std::time::Instant;

use liaison_core::store::Origin;

use crate::error::LiaisonError;
use crate::status::SyncProblem;
use crate::store::{LiaisonStore, lock};
use crate::sync::{SyncConfig, SyncState};

/// What a background sync did.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct BackgroundSyncReport {
    /// Everything local was acknowledged and the relay had nothing more: the job may finish.
    pub completed: bool,
    /// Documents whose local changes the relay acknowledged during the call.
    pub pushed_documents: i32,
    /// Documents received or changed from the relay during the call.
    pub received_documents: i32,
    /// Documents still with unacknowledged local changes (0 when completed).
    pub pending_documents: i32,
    /// What stopped it, when it did not complete (no network, unauthorized, ...).
    pub problem: Option<SyncProblem>,
    pub elapsed_ms: i64,
}

#[uniffi::export(async_runtime = "tokio")]
impl LiaisonStore {
    /// Pushes pending local changes and pulls what is new, for at most `time_limit_ms`, then
    /// reports. With sync stopped, `config` starts it for the call (and it is stopped again
    /// after); with sync running, `config` is ignored. Not completing in time is not an error:
    /// the report says so, and the job can be scheduled again.
    pub async fn background_sync(
        &self,
        config: Option<SyncConfig>,
        time_limit_ms: i64,
    ) -> Result<BackgroundSyncReport, LiaisonError> {
        if time_limit_ms < 0 {
            return Err(LiaisonError::InvalidInput("the time limit must not be negative".into()));
        }
        let started = Instant::now();
        let changes = self.core()?.subscribe();
        // From the store's pending marks: the client's count is not known before it runs.
        let pending_before: HashSet<_> = self.read(|store| Ok(store.pending_documents()?)).await?.into_iter().collect();
        let ours = lock(&self.client).is_none();
        if ours {
            let config = config.ok_or_else(|| LiaisonError::InvalidInput("sync is stopped: pass a config".into()))?;
            self.start_client(config, None).await?;
        }
        let finished = self
            .wait_for_status(time_limit_ms, |s| {
                s.state == SyncState::UpToDate && s.pending_documents == 0 && s.catalog_current
            })
            .await;
        let status = match finished {
            Ok(s) => s,
            Err(LiaisonError::Timeout(_)) => self.sync_status(),
            Err(e) => {
                if ours {
                    self.stop_sync().await;
                }
                return Err(e);
            }
        };
        let received: HashSet<_> = changes.try_iter().filter(|c| c.origin == Origin::Remote).map(|c| c.id).collect();
        if ours {
            self.stop_sync().await;
        }
        let pending_after: HashSet<_> = self.read(|store| Ok(store.pending_documents()?)).await?.into_iter().collect();
        let pushed = pending_before.difference(&pending_after).count();
        let completed = status.state == SyncState::UpToDate && status.catalog_current && pending_after.is_empty();
        let elapsed_ms = i64::try_from(started.elapsed().as_millis()).unwrap_or(i64::MAX);
        Ok(BackgroundSyncReport {
            completed,
            pushed_documents: i32::try_from(pushed).unwrap_or(i32::MAX),
            received_documents: i32::try_from(received.len()).unwrap_or(i32::MAX),
            pending_documents: i32::try_from(pending_after.len()).unwrap_or(i32::MAX),
            problem: if completed { None } else { status.problem },
            elapsed_ms,
        })
    }
}
