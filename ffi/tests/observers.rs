//! The app's code runs on library-owned threads only, never inside a store lock or on the
//! caller's thread: an observer or a log sink that blocks, or that calls back into the library,
//! stalls and deadlocks nothing. Each test blocks the app's callback until the library has shown
//! it carries on (a positive signal with a deadline), then lets it call back in.
#![allow(clippy::unwrap_used)]

use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender, channel};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::{Duration, Instant};

use futures::executor::block_on;
use liaison_core::model::KolProfile;
use liaison_ffi::{
    CallbackError, DocumentChange, LiaisonObserver, LiaisonStore, LogLevel, LogRecord, LogSink, StoreConfig, SyncStatus,
};

/// How long the library gets to show it did not wait for the app. Generous: the machine may be
/// busy; a stall or a deadlock never ends.
const DEADLINE: Duration = Duration::from_secs(30);

/// A gate the app's callbacks wait at until the test opens it (by dropping the sender).
fn gate() -> (Sender<()>, Mutex<Receiver<()>>) {
    let (open, wait) = channel();
    (open, Mutex::new(wait))
}

fn wait_at(gate: &Mutex<Receiver<()>>) {
    // Disconnected once the test opened the gate; a timeout means the test is already failing.
    let _ = gate.lock().unwrap().recv_timeout(DEADLINE * 2);
}

fn on_thread(name: &str) -> bool {
    std::thread::current().name() == Some(name)
}

/// Runs `work` on its own thread and waits for it to finish within the deadline.
fn finishes_promptly(what: &str, work: impl FnOnce() + Send + 'static) {
    let (done, finished) = channel();
    std::thread::spawn(move || {
        work();
        let _ = done.send(());
    });
    match finished.recv_timeout(DEADLINE) {
        Ok(()) => {}
        Err(RecvTimeoutError::Timeout) => panic!("{what} stalled behind the app's blocked callback"),
        Err(RecvTimeoutError::Disconnected) => panic!("{what} panicked"),
    }
}

struct SlowObserver {
    entered: Sender<()>,
    gate: Mutex<Receiver<()>>,
    seen: Sender<(bool, Vec<DocumentChange>)>,
    store: OnceLock<Weak<LiaisonStore>>,
    me: OnceLock<Weak<SlowObserver>>,
    wrote: Mutex<Option<String>>,
}

impl LiaisonObserver for SlowObserver {
    fn documents_changed(&self, changes: Vec<DocumentChange>) -> Result<(), CallbackError> {
        let _ = self.entered.send(());
        wait_at(&self.gate);
        // Once let through, call back into the store: read, replace the observer (itself), and
        // write, which brings another call here later.
        let (Some(store), Some(me)) = (self.store.get().and_then(Weak::upgrade), self.me.get().and_then(Weak::upgrade))
        else {
            return Ok(()); // the test is over
        };
        for c in &changes {
            if !c.deleted {
                block_on(store.get_kol(c.id.clone())).unwrap();
            }
        }
        block_on(store.list_kols()).unwrap();
        store.set_observer(Some(me));
        let mut wrote = self.wrote.lock().unwrap();
        if wrote.is_none() {
            let id = block_on(store.create_kol(KolProfile::new("From the observer", "X"))).unwrap();
            *wrote = Some(id);
        }
        let _ = self.seen.send((on_thread("liaison-notify"), changes));
        Ok(())
    }

    fn sync_status_changed(&self, _status: SyncStatus) -> Result<(), CallbackError> {
        Ok(())
    }
    fn local_data_wiped(&self, _reason: liaison_ffi::WipeReason) -> Result<(), CallbackError> {
        Ok(())
    }
}

/// Architecture Invariant: foreign code is called from library-owned threads only, never from
/// inside a store lock or the sync task, so a slow or re-entrant observer cannot stall sync or
/// deadlock the store.
#[test]
fn a_blocked_observer_stalls_no_write_and_may_call_back_into_the_store() {
    let dir = tempfile::tempdir().unwrap();
    let store = block_on(LiaisonStore::open(StoreConfig {
        path: dir.path().join("store").display().to_string(),
        tenant: "pharma-a".into(),
        user: "sato".into(),
        device: "sato-phone".into(),
        role: liaison_core::Role::Msl,
        team: "onc-east".into(),
    }))
    .unwrap();
    let (entered_tx, entered) = channel();
    let (open_gate, gate) = gate();
    let (seen_tx, seen) = channel();
    let observer = Arc::new(SlowObserver {
        entered: entered_tx,
        gate,
        seen: seen_tx,
        store: OnceLock::new(),
        me: OnceLock::new(),
        wrote: Mutex::new(None),
    });
    observer.store.set(Arc::downgrade(&store)).unwrap();
    observer.me.set(Arc::downgrade(&observer)).unwrap();
    store.set_observer(Some(observer.clone()));

    let first = block_on(store.create_kol(KolProfile::new("Dr. A", "Osaka"))).unwrap();
    entered.recv_timeout(DEADLINE).expect("the observer was called");

    // The observer is stuck inside its first call. Writes go on regardless, each flushed.
    let writer = store.clone();
    let (ids_tx, ids) = channel();
    finishes_promptly("50 writes", move || {
        for i in 0..25 {
            let id = block_on(writer.create_kol(KolProfile::new(format!("Dr. {i}"), "Kobe"))).unwrap();
            let mut read = block_on(writer.get_kol(id.clone())).unwrap();
            read.profile.specialty = Some("Oncology".into());
            block_on(writer.update_kol(id.clone(), read.profile, read.version)).unwrap();
            ids_tx.send(id).unwrap();
        }
    });
    let mut expected: Vec<String> = ids.try_iter().collect();
    assert_eq!(expected.len(), 25);
    expected.push(first);

    // Let it through: it reads, re-registers itself and writes from inside its callback, and
    // hears of every change, its own write included, all on the notifier thread.
    drop(open_gate);
    let start = Instant::now();
    let mut reported = Vec::new();
    let mut own_write_seen = false;
    while !(expected.iter().all(|id| reported.contains(id)) && own_write_seen) {
        let left = DEADLINE.checked_sub(start.elapsed()).unwrap_or_default();
        let (on_notifier, changes) = seen.recv_timeout(left).unwrap_or_else(|_| {
            panic!("the observer heard of {} of {} changes, its own write seen: {own_write_seen}", reported.len(), 27)
        });
        assert!(on_notifier, "the observer was called from a thread the library does not own");
        reported.extend(changes.into_iter().map(|c| c.id));
        let wrote = observer.wrote.lock().unwrap().clone();
        own_write_seen = wrote.is_some_and(|w| reported.contains(&w));
    }
    store.set_observer(None);
}

struct SlowSink {
    entered: Sender<()>,
    gate: Mutex<Receiver<()>>,
    records: Sender<(bool, LogRecord)>,
}

impl LogSink for SlowSink {
    fn log(&self, record: LogRecord) -> Result<(), CallbackError> {
        let _ = self.entered.send(());
        wait_at(&self.gate);
        if record.message == "echo" {
            // Logging from inside the sink goes back into the library's queue.
            tracing::info!(target: "observers", "logged from inside the sink");
        }
        let _ = self.records.send((on_thread("liaison-log"), record));
        Ok(())
    }
}

/// The log half of the same invariant: a blocked sink drops records (and says so later), it
/// never blocks the code that logs; a sink that logs does not deadlock the log thread.
#[test]
fn a_blocked_log_sink_stalls_no_logging_and_may_log_itself() {
    let (entered_tx, entered) = channel();
    let (open_gate, gate) = gate();
    let (records_tx, records) = channel();
    let sink = Arc::new(SlowSink { entered: entered_tx, gate, records: records_tx });
    liaison_ffi::set_log_sink(sink, LogLevel::Info).unwrap();

    tracing::info!(target: "observers", "first");
    entered.recv_timeout(DEADLINE).expect("the sink was called");
    // More records than the library's queue holds (4,096), while the sink does not return.
    finishes_promptly("10,000 log records", || {
        for i in 0..10_000 {
            tracing::info!(target: "observers", n = i, "record");
        }
    });

    // Let it through: it hears that records were dropped. Then it logs from inside its own
    // call (asked by an "echo", sent again while the queue may still be full and drop it).
    drop(open_gate);
    let start = Instant::now();
    let (mut dropped_told, mut own_log_seen) = (false, false);
    while !(dropped_told && own_log_seen) {
        if start.elapsed() > DEADLINE {
            panic!("the sink heard: of dropped records {dropped_told}, of its own record {own_log_seen}");
        }
        if dropped_told {
            tracing::info!(target: "observers", "echo");
        }
        while let Ok((on_log_thread, record)) = records.recv_timeout(Duration::from_millis(200)) {
            assert!(on_log_thread, "the sink was called from a thread the library does not own");
            dropped_told |= record.level == LogLevel::Warn && record.message.contains("log records dropped");
            own_log_seen |= record.message == "logged from inside the sink";
        }
    }
}

/// An observer that fails (what a thrown Kotlin or Swift exception arrives as) or panics on
/// every other call: every later change is still delivered.
struct Failing {
    calls: Mutex<u32>,
    seen: Sender<Vec<DocumentChange>>,
}

impl LiaisonObserver for Failing {
    fn documents_changed(&self, changes: Vec<DocumentChange>) -> Result<(), CallbackError> {
        let n = {
            let mut calls = self.calls.lock().unwrap();
            *calls += 1;
            *calls
        };
        let _ = self.seen.send(changes);
        match n % 3 {
            1 => Err(CallbackError::Failed),
            2 => panic!("the app's observer panicked"),
            _ => Ok(()),
        }
    }
    fn sync_status_changed(&self, _status: SyncStatus) -> Result<(), CallbackError> {
        Err(CallbackError::Failed)
    }
    fn local_data_wiped(&self, _reason: liaison_ffi::WipeReason) -> Result<(), CallbackError> {
        Err(CallbackError::Failed)
    }
}

#[test]
fn an_observer_that_throws_or_panics_still_hears_every_later_change() {
    let dir = tempfile::tempdir().unwrap();
    let store = block_on(LiaisonStore::open(StoreConfig {
        path: dir.path().join("store").display().to_string(),
        tenant: "pharma-a".into(),
        user: "sato".into(),
        device: "sato-phone".into(),
        role: liaison_core::Role::Msl,
        team: "onc-east".into(),
    }))
    .unwrap();
    let (seen_tx, seen) = channel();
    store.set_observer(Some(Arc::new(Failing { calls: Mutex::new(0), seen: seen_tx })));
    let mut created = Vec::new();
    for i in 0..6 {
        let id = block_on(store.create_kol(KolProfile::new(format!("Dr. {i}"), "Osaka"))).unwrap();
        created.push(id.clone());
        // One at a time, so each change is its own call: fail, panic, succeed, fail, ...
        let start = Instant::now();
        loop {
            let changes = seen.recv_timeout(DEADLINE).expect("the observer is still called after it failed");
            if changes.iter().any(|c| c.id == id) {
                break;
            }
            assert!(start.elapsed() < DEADLINE, "change {i} never came");
        }
    }
    store.set_observer(None);
}
