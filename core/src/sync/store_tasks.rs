//! Runs the engine's storage tasks against a [`DocStore`]: what a driver does with
//! [`Output::Storage`](super::Output::Storage). Blocking: drivers call it off their async threads.

use super::engine::{StorageResult, StorageTask};
use super::wire::StorageId;
use crate::store::DocStore;

/// Executes one task. Failures become [`StorageResult::Failed`] with a message free of
/// personal data; the engine then keeps the changes unadvertised and retries.
pub fn execute(store: &DocStore, task: &StorageTask) -> StorageResult {
    let result = match task {
        StorageTask::Load { doc } => store.load_for_sync(doc).map(|found| match found {
            Some((data, states)) => StorageResult::Loaded {
                data: Some(data),
                sync_states: states.into_iter().map(|(s, v)| (StorageId(s), v)).collect(),
            },
            None => StorageResult::Loaded { data: None, sync_states: Vec::new() },
        }),
        StorageTask::Append { doc, changes, sync_states, .. } => {
            store.apply_sync_changes(doc, changes, &plain(sync_states)).map(|()| StorageResult::Stored)
        }
        StorageTask::SaveSyncStates { doc, sync_states } => {
            store.save_sync_states(doc, &plain(sync_states)).map(|()| StorageResult::Stored)
        }
    };
    result.unwrap_or_else(|e| {
        tracing::warn!(error = %e, "storage task failed");
        StorageResult::Failed(e.to_string())
    })
}

fn plain(states: &[(StorageId, Vec<u8>)]) -> Vec<(String, Vec<u8>)> {
    states.iter().map(|(s, v)| (s.0.clone(), v.clone())).collect()
}
