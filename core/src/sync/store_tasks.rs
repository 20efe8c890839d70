//! Runs the engine's storage tasks against a [`DocStore`]: what a driver does with
//! [`Output::Storage`](super::Output::Storage). Blocking: drivers call it off their async threads.

use super::engine::{StorageResult, StorageTask};
use super::wire::StorageId;
use crate::store::{DocStore, SyncWrite};

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
        StorageTask::Append { doc, changes, sync_states, base, .. } => {
            store.apply_sync_changes_on(doc, Some(base), changes, &plain(sync_states)).map(|()| StorageResult::Stored)
        }
        StorageTask::SaveSyncStates { doc, sync_states } => {
            store.save_sync_states(doc, &plain(sync_states)).map(|()| StorageResult::Stored)
        }
    };
    result.unwrap_or_else(|e| failed(&e))
}

/// A failed task's result: a conflict with another writer of a shared store is the engine's
/// to resolve (it loads the document again), anything else a failure it retries.
fn failed(e: &crate::StoreError) -> StorageResult {
    if e.is_conflict() {
        tracing::debug!("storage task lost the race to another writer");
        return StorageResult::Conflict;
    }
    tracing::warn!(error = %e, "storage task failed");
    StorageResult::Failed(e.to_string())
}

/// Executes a device's tasks of one round: loads one by one, then every write as one group
/// commit through [`DocStore::apply_sync_group`] (each document loaded and fully indexed, as a
/// device's lists need). One result per task, in order.
pub fn execute_device_group(store: &DocStore, tasks: &[StorageTask]) -> Vec<StorageResult> {
    let mut results = vec![StorageResult::Stored; tasks.len()];
    let mut owned = Vec::new();
    for (i, task) in tasks.iter().enumerate() {
        match task {
            StorageTask::Load { .. } => results[i] = execute(store, task),
            StorageTask::Append { doc, changes, sync_states, .. } => {
                owned.push((i, *doc, changes.as_slice(), plain(sync_states)))
            }
            StorageTask::SaveSyncStates { doc, sync_states } => owned.push((i, *doc, &[][..], plain(sync_states))),
        }
    }
    let writes: Vec<SyncWrite<'_>> = owned
        .iter()
        .map(|(_, doc, changes, states)| SyncWrite { base: None, doc: *doc, changes, heads: &[], sync_states: states })
        .collect();
    if !writes.is_empty() {
        let at: Vec<usize> = owned.iter().map(|(i, ..)| *i).collect();
        record_outcomes(&mut results, &at, store.apply_sync_group(&writes));
    }
    results
}

/// Puts each write's outcome at its task's place in `results`; a failed batch fails them all.
fn record_outcomes(
    results: &mut [StorageResult],
    at: &[usize],
    outcomes: Result<Vec<Result<(), crate::StoreError>>, crate::StoreError>,
) {
    match outcomes {
        Ok(outcomes) => {
            for (i, outcome) in at.iter().zip(outcomes) {
                if let Err(e) = outcome {
                    results[*i] = failed(&e);
                }
            }
        }
        Err(e) => {
            if !e.is_conflict() {
                tracing::warn!(error = %e, writes = at.len(), "group commit failed");
            }
            for i in at {
                results[*i] = failed(&e);
            }
        }
    }
}

fn plain(states: &[(StorageId, Vec<u8>)]) -> Vec<(String, Vec<u8>)> {
    states.iter().map(|(s, v)| (s.0.clone(), v.clone())).collect()
}

/// Executes the writes (appends and sync states) of many documents as one group commit, through
/// [`DocStore::append_sync_batch`]: what a relay does with the writes that queued while its last
/// commit was flushing. One result per task: a write to a damaged document fails alone. Loads
/// are not writes: a `Load` among `tasks` fails (use [`execute`]).
pub fn execute_group(store: &DocStore, tasks: &[StorageTask]) -> Vec<StorageResult> {
    /// A write and the index of the task it came from.
    type Owned<'a> = (
        usize,
        crate::DocumentId,
        &'a [u8],
        &'a [automerge::ChangeHash],
        Vec<(String, Vec<u8>)>,
        Option<&'a [automerge::ChangeHash]>,
    );
    let mut owned: Vec<Owned<'_>> = Vec::with_capacity(tasks.len());
    let mut results = vec![StorageResult::Stored; tasks.len()];
    for (i, task) in tasks.iter().enumerate() {
        match task {
            StorageTask::Load { .. } => results[i] = StorageResult::Failed("a load is not a write".into()),
            StorageTask::Append { doc, changes, heads, sync_states, base } => {
                owned.push((i, *doc, changes.as_slice(), heads.as_slice(), plain(sync_states), Some(base.as_slice())))
            }
            StorageTask::SaveSyncStates { doc, sync_states } => {
                owned.push((i, *doc, &[], &[], plain(sync_states), None))
            }
        }
    }
    let writes: Vec<SyncWrite<'_>> = owned
        .iter()
        .map(|(_, doc, changes, heads, states, base)| SyncWrite {
            base: *base,
            doc: *doc,
            changes,
            heads,
            sync_states: states,
        })
        .collect();
    let at: Vec<usize> = owned.iter().map(|(i, ..)| *i).collect();
    match store.append_sync_batch(&writes) {
        // In a shared store another writer changed one of the group's documents: nothing was
        // written. Each write alone finds which (those conflict); the others are stored.
        Err(e) if e.is_conflict() && writes.len() > 1 => {
            tracing::debug!(writes = writes.len(), "group commit kept losing races; writing one by one");
            for (i, w) in at.iter().zip(&writes) {
                record_outcomes(&mut results, &[*i], store.append_sync_batch(std::slice::from_ref(w)));
            }
        }
        outcomes => record_outcomes(&mut results, &at, outcomes),
    }
    results
}
