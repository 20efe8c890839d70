//! Calls that touch the disk are async and run on library threads; what dropping a call's future
//! (a cancelled Kotlin coroutine, Python task or, with the patched Swift bindings, Swift task)
//! does: the caller stops waiting at once, a job not begun never begins, a write that began is
//! stored whole, and the store stays consistent and usable.
#![allow(clippy::unwrap_used)]

mod common;

use std::future::Future;
use std::pin::Pin;
use std::sync::mpsc::{Receiver, Sender, channel};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use common::open;
use futures::FutureExt as _;
use futures::executor::block_on;
use liaison_core::model::{Channel, KolProfile, Topic};
use liaison_ffi::{LiaisonStore, RecordKind, SharedTextField};

const DEADLINE: Duration = Duration::from_secs(30);

/// Polls a call once, as uniffi does when the app calls it: the app's thread gets `Pending` back.
fn poll_once<T>(call: &mut Pin<Box<impl Future<Output = T> + ?Sized>>) -> Poll<T> {
    call.poll_unpin(&mut Context::from_waker(futures::task::noop_waker_ref()))
}

/// Holds the next job that begins on a library thread until the returned sender is used (or
/// dropped); `started` hears when it began. Later jobs pass.
fn hold_next_job(store: &LiaisonStore) -> (Receiver<()>, Sender<()>) {
    let (started_tx, started) = channel();
    let (release, release_rx) = channel::<()>();
    let once = Mutex::new(Some((started_tx, release_rx)));
    store.set_job_start_hook(Some(Arc::new(move || {
        let taken = once.lock().unwrap().take();
        if let Some((started_tx, release_rx)) = taken {
            started_tx.send(()).unwrap();
            let _ = release_rx.recv_timeout(DEADLINE);
        }
    })));
    (started, release)
}

fn kol_names(store: &LiaisonStore) -> Vec<String> {
    let mut names: Vec<String> = block_on(store.list_kols()).unwrap().into_iter().map(|k| k.name).collect();
    names.sort();
    names
}

#[test]
fn a_call_returns_to_the_caller_while_its_disk_work_runs_and_reads_run_beside_a_write() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir, "alice");
    let (started, release) = hold_next_job(&store);

    let mut write = Box::pin(store.create_kol(KolProfile::new("Dr. Held", "Osaka")));
    assert!(poll_once(&mut write).is_pending(), "the app's thread is free while the write waits");
    started.recv_timeout(DEADLINE).expect("the write began on a library thread");
    assert!(poll_once(&mut write).is_pending(), "still in flight, the caller is not blocked");
    // Another thread of the app reads meanwhile: reads do not wait for writes.
    assert_eq!(kol_names(&store), Vec::<String>::new(), "the held write is not stored yet");

    release.send(()).unwrap();
    let id = block_on(write).unwrap();
    assert_eq!(block_on(store.get_kol(id)).unwrap().profile.name, "Dr. Held");
}

#[test]
fn a_call_dropped_before_its_work_began_never_begins() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir, "alice");
    block_on(store.create_kol(KolProfile::new("Dr. Before", "Osaka"))).unwrap();
    let (started, release) = hold_next_job(&store);

    let mut first = Box::pin(store.create_kol(KolProfile::new("Dr. First", "Osaka")));
    assert!(poll_once(&mut first).is_pending());
    started.recv_timeout(DEADLINE).unwrap();
    // The second write queues behind the first; its caller is cancelled while it waits.
    let mut second = Box::pin(store.create_kol(KolProfile::new("Dr. Cancelled", "Osaka")));
    assert!(poll_once(&mut second).is_pending(), "queued behind the first write");
    drop(second);

    release.send(()).unwrap();
    block_on(first).unwrap();
    // A later write runs after every write called before it: once it is back, the cancelled one
    // would have run too.
    block_on(store.create_kol(KolProfile::new("Dr. After", "Osaka"))).unwrap();
    assert_eq!(kol_names(&store), ["Dr. After", "Dr. Before", "Dr. First"], "the cancelled write never ran");
}

#[test]
fn a_write_whose_caller_left_while_it_ran_is_stored_whole_and_the_store_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir, "alice");
    let kol = block_on(store.create_kol(KolProfile::new("Dr. A", "Osaka"))).unwrap();
    let mut visit = common::new_interaction(kol.clone(), 1_700_000_000_000, Channel::InPerson);
    visit.summary = autosurgeon::Text::with_value("患者 ".repeat(2_000));
    visit.topics = (0..50)
        .map(|i| Topic {
            id: format!("t{i}"),
            title: format!("topic {i}"),
            discussion: autosurgeon::Text::with_value("discussed at length ".repeat(20)),
        })
        .collect();
    let (started, release) = hold_next_job(&store);

    let mut create = Box::pin(store.create_interaction(visit.clone()));
    assert!(poll_once(&mut create).is_pending());
    started.recv_timeout(DEADLINE).expect("the write began");
    // The coroutine is cancelled while the write runs: uniffi drops the future.
    drop(create);
    release.send(()).unwrap();

    // Writes run in call order: when this one is back, the abandoned one has finished.
    block_on(store.create_kol(KolProfile::new("Dr. B", "Kobe"))).unwrap();
    let ids = block_on(store.list(RecordKind::Interaction)).unwrap();
    assert_eq!(ids.len(), 1, "the write that began was stored");
    let stored = block_on(store.get_interaction(ids[0].clone())).unwrap().interaction;
    assert_eq!(stored.summary.as_str(), visit.summary.as_str(), "whole, not half");
    assert_eq!(stored.topics.len(), 50);
    assert_eq!(block_on(store.records_for_kol(kol, RecordKind::Interaction)).unwrap(), ids, "indexed too");
    // And the store takes edits as before.
    block_on(store.splice_text(ids[0].clone(), SharedTextField::InteractionSummary, 0, 0, "Follow-up. ".into()))
        .unwrap();
    let read = block_on(store.get_interaction(ids[0].clone())).unwrap();
    assert!(read.interaction.summary.as_str().starts_with("Follow-up. 患者"));
}

#[test]
fn writes_called_in_order_apply_in_that_order_even_when_not_awaited_in_between() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir, "alice");
    let kol = block_on(store.create_kol(KolProfile::new("Dr. A", "Osaka"))).unwrap();
    let plan = block_on(store.create_plan(common::new_plan(kol, "FY27"))).unwrap();
    // Ten splices at the start of the notes, each called (polled once) before any is awaited.
    let mut calls: Vec<_> = (0..10)
        .map(|i| {
            let mut call = Box::pin(store.splice_plan_notes(plan.clone(), 0, 0, i.to_string()));
            let _ = poll_once(&mut call);
            call
        })
        .collect();
    // Awaited in the opposite order: the order they were called in is what counts.
    while let Some(call) = calls.pop() {
        block_on(call).unwrap();
    }
    assert_eq!(block_on(store.get_plan(plan)).unwrap().plan.notes.as_str(), "9876543210");
}

#[test]
fn a_cancelled_read_delivers_nothing_and_a_store_call_after_sign_out_fails_typed() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir, "alice");
    let id = block_on(store.create_kol(KolProfile::new("Dr. A", "Osaka"))).unwrap();
    let (started, release) = hold_next_job(&store);
    let mut read = Box::pin(store.get_kol(id.clone()));
    assert!(poll_once(&mut read).is_pending());
    started.recv_timeout(DEADLINE).unwrap();
    drop(read);
    release.send(()).unwrap();
    assert_eq!(block_on(store.get_kol(id)).unwrap().profile.name, "Dr. A", "the store is usable");

    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(store.sign_out()).unwrap();
    assert!(matches!(block_on(store.list_kols()), Err(liaison_ffi::LiaisonError::SignedOut)));
}

#[test]
fn a_sign_out_cancelled_while_calls_finish_leaves_the_store_open_and_its_files_in_place() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir, "alice");
    let id = block_on(store.create_kol(KolProfile::new("Dr. A", "Osaka"))).unwrap();
    let (started, release) = hold_next_job(&store);
    let mut read = Box::pin(store.get_kol(id.clone()));
    assert!(poll_once(&mut read).is_pending());
    started.recv_timeout(DEADLINE).unwrap();

    // Sign-out waits for the read in flight; the app gives up on it meanwhile.
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let mut sign_out = Box::pin(store.sign_out());
        assert!(futures::poll!(sign_out.as_mut()).is_pending(), "waiting for the read");
        drop(sign_out);
    });
    release.send(()).unwrap();
    assert_eq!(block_on(read).unwrap().profile.name, "Dr. A");
    assert_eq!(block_on(store.get_kol(id)).unwrap().profile.name, "Dr. A", "the store is open and usable");
    assert!(dir.path().join("alice").exists(), "nothing was removed");
}
