//! The writer thread: the relay's group commit.

use std::time::Instant;

use liaison_core::DocStore;
use liaison_core::sync::store_tasks::execute_group;
use std::sync::Arc;
use tokio::sync::mpsc;

use super::ActorMsg;
use crate::metrics::Metrics;

/// Most writes one group commit takes: bounds the batch and how long a flush holds acks back.
const MAX_GROUP: usize = 1024;

/// The writer thread: takes every write queued while the last commit was flushing and stores
/// them as one batch with one flush (group commit), then reports each task done. Under load
/// that turns one fsync per edit into one per batch; alone, a write goes at once.
pub(super) fn spawn_writer(
    store: Arc<DocStore>,
    tx: mpsc::Sender<ActorMsg>,
    metrics: Arc<Metrics>,
) -> std::sync::mpsc::Sender<(liaison_core::sync::TaskId, liaison_core::sync::StorageTask)> {
    let (wtx, wrx) = std::sync::mpsc::channel::<(liaison_core::sync::TaskId, liaison_core::sync::StorageTask)>();
    let spawned = std::thread::Builder::new().name("liaison-writer".into()).spawn(move || {
        // Ends when the actor (the only sender) is gone.
        while let Ok(first) = wrx.recv() {
            let mut group = vec![first];
            while group.len() < MAX_GROUP {
                match wrx.try_recv() {
                    Ok(t) => group.push(t),
                    Err(_) => break,
                }
            }
            let (ids, tasks): (Vec<_>, Vec<_>) = group.into_iter().unzip();
            let started = Instant::now();
            let results = execute_group(&store, &tasks);
            metrics.observe_flush(started.elapsed().as_secs_f64());
            for (task, result) in ids.into_iter().zip(results) {
                match result {
                    liaison_core::sync::StorageResult::Failed(_) => Metrics::add(&metrics.storage_failures, 1),
                    liaison_core::sync::StorageResult::Conflict => Metrics::add(&metrics.write_conflicts, 1),
                    _ => {}
                }
                if tx.blocking_send(ActorMsg::StorageDone { task, result }).is_err() {
                    return;
                }
            }
        }
    });
    if let Err(e) = spawned {
        // Without a writer nothing is ever acknowledged; the operator must know at once.
        tracing::error!(error = %e, "cannot start the storage writer thread");
    }
    wtx
}
