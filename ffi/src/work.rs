//! Where a call's disk work runs, and what cancelling the call does to it.
//!
//! Every `LiaisonStore` call that touches the disk is an `async fn` for the apps (Kotlin
//! `suspend`, Swift `async`, Python coroutine): its first poll, on the app's thread, only checks
//! arguments and queues a job; the job runs on the store runtime's blocking pool (bounded:
//! [`BLOCKING_THREADS`]), so the app's thread is never blocked by an fsync or a large document.
//!
//! Writes go into one queue per store at their call's first poll (still on the app's thread), and
//! one library thread at a time drains it: writes apply one at a time, in the order they were
//! called, and the queue moves on by itself (it does not wait for the app to poll again). Reads
//! run beside them.
//!
//! Cancelling a call (a cancelled coroutine or task: uniffi drops the call's future):
//! - the caller stops waiting at once and gets no result;
//! - a job that has not begun (still waiting for its turn or for a free thread) never begins;
//! - a job that has begun runs to its end: a write is one atomic batch in core, so it is then
//!   stored whole (and synced, like any other write), never half. Its result is dropped.

use std::collections::VecDeque;
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex};

use tokio::sync::oneshot;

use crate::error::LiaisonError;
use crate::store::lock;

/// The most threads the store's blocking pool runs at once (app calls, the sync client's storage
/// tasks, the credential provider); more jobs wait for a free one.
pub(crate) const BLOCKING_THREADS: usize = 4;

/// A hook run on the library thread when a job begins, after its cancellation check: tests use
/// it to hold a job in flight.
pub(crate) type JobStartHook = Arc<dyn Fn() + Send + Sync>;

/// The store's job runner: the runtime's blocking pool and the writes' queue.
pub(crate) struct Work {
    runtime: tokio::runtime::Handle,
    writes: Arc<Mutex<Writes>>,
    on_start: Mutex<Option<JobStartHook>>,
}

/// A call's work as a library thread runs it.
type Job = Box<dyn FnOnce() + Send>;

/// Writes waiting for their turn, and whether a library thread is draining them.
#[derive(Default)]
struct Writes {
    queue: VecDeque<Job>,
    draining: bool,
}

impl Work {
    pub(crate) fn new(runtime: tokio::runtime::Handle) -> Self {
        Self { runtime, writes: Arc::default(), on_start: Mutex::new(None) }
    }

    /// Runs a job that only reads, on a library thread.
    pub(crate) async fn read<T: Send + 'static>(
        &self,
        job: impl FnOnce() -> Result<T, LiaisonError> + Send + 'static,
    ) -> Result<T, LiaisonError> {
        let (job, result) = self.prepare(job);
        // The JoinHandle is not needed: the result comes through the channel, and a job that
        // began is not stopped when its caller leaves.
        drop(self.runtime.spawn_blocking(job));
        Self::outcome(result).await
    }

    /// Runs a job that writes, on a library thread, after the writes called before it.
    pub(crate) async fn write<T: Send + 'static>(
        &self,
        job: impl FnOnce() -> Result<T, LiaisonError> + Send + 'static,
    ) -> Result<T, LiaisonError> {
        let (job, result) = self.prepare(job);
        let start_draining = {
            let mut writes = lock(&self.writes);
            writes.queue.push_back(job);
            !std::mem::replace(&mut writes.draining, true)
        };
        if start_draining {
            let writes = self.writes.clone();
            drop(self.runtime.spawn_blocking(move || drain(&writes)));
        }
        Self::outcome(result).await
    }

    pub(crate) fn set_on_start(&self, hook: Option<JobStartHook>) {
        *lock(&self.on_start) = hook;
    }

    /// The job as a library thread runs it (skipped if its caller left before it began), and
    /// where its result arrives.
    fn prepare<T: Send + 'static>(
        &self,
        job: impl FnOnce() -> Result<T, LiaisonError> + Send + 'static,
    ) -> (Job, oneshot::Receiver<Result<T, LiaisonError>>) {
        let (result_tx, result_rx) = oneshot::channel();
        let on_start = lock(&self.on_start).clone();
        let run = move || {
            if result_tx.is_closed() {
                // The caller left before the job began: it does not begin.
                return;
            }
            if let Some(hook) = on_start {
                hook();
            }
            // Fails only if the caller left meanwhile: the result is dropped, a write stays.
            let _ = result_tx.send(job());
        };
        (Box::new(run), result_rx)
    }

    async fn outcome<T>(result: oneshot::Receiver<Result<T, LiaisonError>>) -> Result<T, LiaisonError> {
        // Closed without a result: the job panicked (the store's runtime outlives every call).
        result.await.map_err(|_| LiaisonError::Storage("the call failed inside the library".into()))?
    }
}

/// Runs queued writes one after another until the queue is empty.
fn drain(writes: &Mutex<Writes>) {
    loop {
        let next = {
            let mut writes = lock(writes);
            match writes.queue.pop_front() {
                Some(job) => job,
                None => {
                    writes.draining = false;
                    return;
                }
            }
        };
        // A panicking job fails its own call (its result channel closes), not the queue.
        let _ = std::panic::catch_unwind(AssertUnwindSafe(next));
    }
}
