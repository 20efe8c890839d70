//! Live queries through the API the apps call: the first answer, then item-wise changes as
//! records are written locally or arrive as if from the relay; cancelled handles go quiet; an
//! observer that throws keeps hearing.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::mpsc::{Receiver, Sender, channel};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::executor::block_on;
use liaison_core::model::{Channel, FollowUp, KolProfile, TaskStatus};
use liaison_ffi::{CallbackError, QueryObserver, QueryRows, QueryUpdate, RecordObserver, RecordValue, RowChange};

const WAIT: Duration = Duration::from_secs(10);

/// Hands every update to the test; throws at the first `throw_first` of them.
struct Updates {
    tx: Mutex<Sender<QueryUpdate>>,
    throw_first: Mutex<u32>,
}

impl QueryObserver for Updates {
    fn on_update(&self, update: QueryUpdate) -> Result<(), CallbackError> {
        let mut throw = self.throw_first.lock().unwrap();
        if *throw > 0 {
            *throw -= 1;
            return Err(CallbackError::Failed);
        }
        let _ = self.tx.lock().unwrap().send(update);
        Ok(())
    }
}

fn updates(throw_first: u32) -> (Arc<Updates>, Receiver<QueryUpdate>) {
    let (tx, rx) = channel();
    (Arc::new(Updates { tx: Mutex::new(tx), throw_first: Mutex::new(throw_first) }), rx)
}

fn kol_ids(u: &QueryUpdate) -> Vec<String> {
    match &u.rows {
        QueryRows::Kols { rows } => rows.iter().map(|r| r.id.clone()).collect(),
        other => panic!("not KOL rows: {other:?}"),
    }
}

/// The next update for which `cond` holds, skipping others.
fn next(rx: &Receiver<QueryUpdate>, what: &str, cond: impl Fn(&QueryUpdate) -> bool) -> QueryUpdate {
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match rx.recv_timeout(left) {
            Ok(u) if cond(&u) => return u,
            Ok(_) => {}
            Err(_) => panic!("timed out waiting for {what}"),
        }
    }
}

#[test]
fn the_kol_list_answers_first_then_inserts_a_new_kol_and_a_cancelled_handle_goes_quiet() {
    let dir = tempfile::tempdir().unwrap();
    let store = common::open(&dir, "sato");
    let first_kol = block_on(store.create_kol(KolProfile::new("Dr. A", "Osaka"))).unwrap();
    let (observer, rx) = updates(0);
    let handle = store.watch_kols(None, observer).unwrap();
    let first = next(&rx, "the first answer", |_| true);
    assert_eq!(first.change, RowChange::Reset);
    assert_eq!(kol_ids(&first), vec![first_kol.clone()]);

    let second = block_on(store.create_kol(KolProfile::new("Dr. B", "Kobe"))).unwrap();
    let update = next(&rx, "the new KOL", |u| kol_ids(u).contains(&second));
    let at = kol_ids(&update).iter().position(|id| *id == second).unwrap() as i32;
    assert_eq!(update.change, RowChange::Diff { removed: vec![], inserted: vec![at], updated: vec![] });

    handle.cancel();
    assert!(handle.is_cancelled());
    let third = block_on(store.create_kol(KolProfile::new("Dr. C", "Sendai"))).unwrap();
    // Another watch proves the notifier handled the write; the cancelled one heard nothing.
    let (witness, wrx) = updates(0);
    let _w = store.watch_kols(None, witness).unwrap();
    next(&wrx, "the third KOL, seen by a live watch", |u| kol_ids(u).contains(&third));
    std::thread::sleep(Duration::from_millis(200));
    assert!(rx.try_iter().all(|u| !kol_ids(&u).contains(&third)), "nothing reached the cancelled watch");
}

#[test]
fn a_search_watch_follows_an_edit_into_and_out_of_its_results() {
    let dir = tempfile::tempdir().unwrap();
    let store = common::open(&dir, "sato");
    let id = block_on(store.create_kol(KolProfile::new("Dr. Yamada", "Osaka"))).unwrap();
    let (observer, rx) = updates(0);
    let _h = store.watch_kols(Some("tanaka".into()), observer).unwrap();
    assert!(kol_ids(&next(&rx, "the first answer", |_| true)).is_empty());
    let read = block_on(store.get_kol(id.clone())).unwrap();
    let renamed = KolProfile { name: "Dr. Tanaka".into(), ..read.profile };
    block_on(store.update_kol(id.clone(), renamed, read.version)).unwrap();
    let u = next(&rx, "the renamed KOL", |u| kol_ids(u) == vec![id.clone()]);
    assert_eq!(u.change, RowChange::Diff { removed: vec![], inserted: vec![0], updated: vec![] });
}

#[test]
fn an_observer_that_throws_still_hears_later_updates() {
    let dir = tempfile::tempdir().unwrap();
    let store = common::open(&dir, "sato");
    let (observer, rx) = updates(1);
    let _h = store.watch_kols(None, observer).unwrap();
    let id = block_on(store.create_kol(KolProfile::new("Dr. A", "Osaka"))).unwrap();
    next(&rx, "the KOL after the throw", |u| kol_ids(u).contains(&id));
}

#[test]
fn my_open_tasks_and_a_kols_interactions_are_live_from_the_index() {
    let dir = tempfile::tempdir().unwrap();
    let sato = common::open(&dir, "sato");
    let suzuki = common::open(&dir, "suzuki");
    let kol = block_on(sato.create_kol(KolProfile::new("Dr. A", "Osaka"))).unwrap();
    let (tasks_obs, tasks) = updates(0);
    let _t = sato.watch_my_open_tasks(2_000_000_000_000, false, tasks_obs).unwrap();
    let (visits_obs, visits) = updates(0);
    let _v = sato.watch_interactions(kol.clone(), visits_obs).unwrap();
    next(&tasks, "no tasks yet", |u| matches!(&u.rows, QueryRows::Tasks { rows } if rows.is_empty()));
    next(&visits, "no interactions yet", |u| matches!(&u.rows, QueryRows::Interactions { rows } if rows.is_empty()));

    // A colleague's visit with a follow-up for sato arrives as if synced.
    let mut visit = common::new_interaction(kol.clone(), 1_760_000_000_000, Channel::Phone);
    visit.follow_ups.push(FollowUp {
        id: "f1".into(),
        description: "Send the poster".into(),
        owner: "sato".into(),
        due: Some(1_760_100_000_000),
        status: TaskStatus::Open,
    });
    let id = block_on(suzuki.create_interaction(visit)).unwrap();
    common::send(&suzuki, &sato, &id);
    let t = next(&tasks, "the follow-up", |u| matches!(&u.rows, QueryRows::Tasks { rows } if rows.len() == 1));
    let QueryRows::Tasks { rows } = &t.rows else { unreachable!() };
    assert_eq!((rows[0].record_id.as_str(), rows[0].item_id.as_str()), (id.as_str(), "f1"));
    let v = next(&visits, "the visit", |u| matches!(&u.rows, QueryRows::Interactions { rows } if rows.len() == 1));
    let QueryRows::Interactions { rows } = &v.rows else { unreachable!() };
    assert_eq!(rows[0].open_follow_ups, 1);

    // The follow-up is done: it leaves the list (a removal), and the visit's row is updated.
    let read = block_on(sato.get_interaction(id.clone())).unwrap();
    let mut done = read.interaction.clone();
    done.follow_ups[0].status = TaskStatus::Done;
    block_on(sato.update_interaction(id.clone(), done, read.version)).unwrap();
    let t =
        next(&tasks, "the done follow-up gone", |u| matches!(&u.rows, QueryRows::Tasks { rows } if rows.is_empty()));
    assert_eq!(t.change, RowChange::Diff { removed: vec![0], inserted: vec![], updated: vec![] });
    let v = next(
        &visits,
        "the visit updated",
        |u| matches!(&u.rows, QueryRows::Interactions { rows } if rows.len() == 1 && rows[0].open_follow_ups == 0),
    );
    assert_eq!(v.change, RowChange::Diff { removed: vec![], inserted: vec![], updated: vec![0] });
    assert_eq!(block_on(sato.my_open_tasks(2_000_000_000_000, true)).unwrap(), vec![]);
}

struct Records(Mutex<Sender<RecordValue>>);

impl RecordObserver for Records {
    fn on_record(&self, value: RecordValue) -> Result<(), CallbackError> {
        let _ = self.0.lock().unwrap().send(value);
        Ok(())
    }
}

#[test]
fn one_record_is_live_until_it_is_gone() {
    let dir = tempfile::tempdir().unwrap();
    let store = common::open(&dir, "sato");
    let kol = block_on(store.create_kol(KolProfile::new("Dr. A", "Osaka"))).unwrap();
    let plan = block_on(store.create_plan(common::new_plan(kol, "FY27"))).unwrap();
    let (tx, rx) = channel();
    let _h = store.watch_record(plan.clone(), Arc::new(Records(Mutex::new(tx)))).unwrap();
    let title = |v: RecordValue| match v {
        RecordValue::Plan { read } => read.plan.title,
        other => panic!("not a plan: {other:?}"),
    };
    assert_eq!(title(rx.recv_timeout(WAIT).unwrap()), "FY27");
    let read = block_on(store.get_plan(plan.clone())).unwrap();
    let renamed = liaison_core::model::EngagementPlan { title: "FY27, renamed".into(), ..read.plan };
    block_on(store.update_plan(plan.clone(), renamed, read.version)).unwrap();
    assert_eq!(title(rx.recv_timeout(WAIT).unwrap()), "FY27, renamed");
    // Another record's change does not wake this watch.
    block_on(store.create_kol(KolProfile::new("Dr. B", "Kobe"))).unwrap();
    assert!(rx.recv_timeout(Duration::from_millis(300)).is_err(), "no update for another record");
}
