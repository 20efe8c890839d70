//! The loop every driver of the engine writes, written once for tests, the simulator, benches
//! and fuzz targets: hand the engine an input, run the storage tasks it asks for against a
//! [`DocStore`], feed their completion back, and hand the rest of its outputs to the caller.
//!
//! Behind the `testing` feature: the relay and the mobile client have their own drivers (a
//! writer thread, group commits, sockets); this one is synchronous and deterministic.

#![allow(clippy::unwrap_used, missing_docs)]

pub mod faulty_kv;
pub mod fuzz;
pub mod sim;

use std::collections::VecDeque;
use std::sync::Arc;

use super::engine::{Engine, Input, Output, StorageResult, StorageTask, TaskId};
use super::store_tasks::{execute, execute_group};
use crate::store::DocStore;

/// When the storage tasks an engine asks for run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Storage {
    /// At once, inside [`Driver::handle`], as if the disk answered instantly.
    Immediate,
    /// When the caller says ([`Driver::complete`], [`Driver::complete_group`]): the disk answers
    /// late, in any order, or never (a crash).
    Deferred,
}

/// An engine beside the store it persists to.
#[derive(Debug)]
pub struct Driver {
    pub engine: Engine,
    /// Shared, so a policy can read the store the engine writes (as the relay's does).
    pub store: Arc<DocStore>,
    pub storage: Storage,
    /// Storage tasks not yet run ([`Storage::Deferred`]), oldest first.
    pub pending: VecDeque<(TaskId, StorageTask)>,
    /// The engine's clock: every input advances it by one millisecond unless set.
    pub now: i64,
}

impl Driver {
    pub fn new(engine: Engine, store: impl Into<Arc<DocStore>>, storage: Storage) -> Self {
        Self { engine, store: store.into(), storage, pending: VecDeque::new(), now: 0 }
    }

    /// Handles `input` one millisecond after the last one. Returns every output but the storage
    /// tasks (sends, closes and events), in the order the engine produced them, including those
    /// produced by completing storage tasks run at once.
    pub fn handle(&mut self, input: Input) -> Vec<Output> {
        self.now += 1;
        self.handle_at(self.now, input)
    }

    /// Handles `input` at time `now` (which becomes the driver's clock).
    pub fn handle_at(&mut self, now: i64, input: Input) -> Vec<Output> {
        self.now = self.now.max(now);
        let mut inputs = VecDeque::from([input]);
        let mut out = Vec::new();
        while let Some(input) = inputs.pop_front() {
            for o in self.engine.handle(self.now, input) {
                match o {
                    Output::Storage { task, op } => match self.storage {
                        Storage::Immediate => {
                            inputs.push_back(Input::StorageDone { task, result: execute(&self.store, &op) });
                        }
                        Storage::Deferred => self.pending.push_back((task, op)),
                    },
                    other => out.push(other),
                }
            }
        }
        out
    }

    /// Runs the pending task at `index` (or answers it with `result`, a failure say) and feeds
    /// its completion back. `None` if there is no such task.
    pub fn complete(&mut self, index: usize, result: Option<StorageResult>) -> Option<Vec<Output>> {
        let (task, op) = self.pending.remove(index)?;
        let result = result.unwrap_or_else(|| execute(&self.store, &op));
        Some(self.handle(Input::StorageDone { task, result }))
    }

    /// Runs the first `count` pending writes (loads are skipped) as one group commit, as the
    /// relay's writer does with the writes that queued while its last commit was flushing.
    pub fn complete_group(&mut self, count: usize) -> Vec<Output> {
        let mut group = Vec::new();
        let mut rest = VecDeque::new();
        while let Some((task, op)) = self.pending.pop_front() {
            if group.len() < count && !matches!(op, StorageTask::Load { .. }) {
                group.push((task, op));
            } else {
                rest.push_back((task, op));
            }
        }
        self.pending = rest;
        let ops: Vec<StorageTask> = group.iter().map(|(_, op)| op.clone()).collect();
        let results = execute_group(&self.store, &ops);
        let mut out = Vec::new();
        for ((task, _), result) in group.into_iter().zip(results) {
            out.extend(self.handle(Input::StorageDone { task, result }));
        }
        out
    }

    /// Runs every pending task, and those they lead to, until none is left.
    pub fn complete_all(&mut self) -> Vec<Output> {
        let mut out = Vec::new();
        while let Some(o) = self.complete(0, None) {
            out.extend(o);
        }
        out
    }

    /// The process dies: storage tasks not yet run are lost with it.
    pub fn lose_pending(&mut self) {
        self.pending.clear();
    }
}
