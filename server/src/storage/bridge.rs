//! The runtime [`PgKv`](super::PgKv) runs its queries on, and the one way synchronous callers
//! hand it work.
//!
//! `KvStore` is synchronous, and it is called from the relay's writer (a std thread), from the
//! relay's actor (a tokio task) and from HTTP handlers (tokio tasks). tokio-postgres is async.
//! Blocking on a future inside a tokio worker panics (`block_on` within a runtime), so the
//! store owns a small runtime of its own, on threads no caller runs on: a call spawns its
//! work there and waits on a std channel. Waiting on a channel is allowed anywhere; from a
//! tokio worker it blocks that worker for the length of the query, exactly as a sled call
//! does today, and it cannot deadlock because the work never needs the caller's runtime.
//!
//! The runtime lives on a thread of its own and is dropped there, when the last handle to the
//! bridge goes: a runtime dropped inside an async context panics too, and a `PgKv` may well be
//! dropped by a tokio task.

use std::future::Future;
use std::sync::mpsc;

use liaison_core::storage::StorageError;

/// Worker threads of the store's runtime: queries wait on the network, not the CPU, so two
/// keep up with the pool's connections.
const WORKER_THREADS: usize = 2;

/// A handle to the store's runtime; the runtime stops when the bridge is dropped.
#[derive(Debug)]
pub(crate) struct Bridge {
    handle: tokio::runtime::Handle,
    /// Dropping it ends the runtime's thread, which then drops the runtime.
    _stop: mpsc::Sender<()>,
}

impl Bridge {
    pub(crate) fn start() -> std::io::Result<Self> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(WORKER_THREADS)
            .thread_name("liaison-pg")
            .enable_all()
            .build()?;
        let handle = runtime.handle().clone();
        let (stop, stopped) = mpsc::channel::<()>();
        std::thread::Builder::new().name("liaison-pg-owner".into()).spawn(move || {
            // Returns when the bridge's sender is dropped.
            let _ = stopped.recv();
            runtime.shutdown_background();
        })?;
        Ok(Self { handle, _stop: stop })
    }

    /// Runs `work` on the store's runtime and waits for its result, from any thread.
    pub(crate) fn run<T, F>(&self, work: F) -> Result<T, StorageError>
    where
        F: Future<Output = Result<T, StorageError>> + Send + 'static,
        T: Send + 'static,
    {
        run_on(&self.handle, work)
    }

    /// The runtime, for work that outlives a borrow of the store (a lock's release).
    pub(crate) fn handle(&self) -> tokio::runtime::Handle {
        self.handle.clone()
    }
}

/// [`Bridge::run`] on the runtime `handle` names.
pub(crate) fn run_on<T, F>(handle: &tokio::runtime::Handle, work: F) -> Result<T, StorageError>
where
    F: Future<Output = Result<T, StorageError>> + Send + 'static,
    T: Send + 'static,
{
    let (done, result) = mpsc::sync_channel(1);
    handle.spawn(async move {
        let _ = done.send(work.await);
    });
    // The sender is dropped unanswered only if the work panicked or the runtime stopped.
    result.recv().map_err(|_| StorageError::Backend("the database client stopped before it answered".into()))?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn work_runs_from_a_plain_thread() {
        let bridge = Bridge::start().unwrap();
        assert_eq!(bridge.run(async { Ok(7) }).unwrap(), 7);
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn work_runs_from_inside_another_runtime_and_the_bridge_drops_there() {
        let bridge = Bridge::start().unwrap();
        let answer = bridge.run(async {
            tokio::time::sleep(std::time::Duration::from_millis(1)).await;
            Ok("done")
        });
        assert_eq!(answer.unwrap(), "done");
        drop(bridge);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn even_on_a_single_threaded_runtime() {
        let bridge = Bridge::start().unwrap();
        assert_eq!(bridge.run(async { Ok(1) }).unwrap(), 1);
    }

    #[test]
    fn a_panic_in_the_work_is_an_error_not_a_hang() {
        let bridge = Bridge::start().unwrap();
        let failed = bridge.run::<(), _>(async { panic!("boom") });
        assert!(matches!(failed, Err(StorageError::Backend(_))));
        assert_eq!(bridge.run(async { Ok(2) }).unwrap(), 2, "the runtime survives a panicking task");
    }
}
