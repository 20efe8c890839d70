//! The app's screens from the screen indexes, against answering the same by loading documents.
//!
//! Data: 2,000 KOL profiles, each with an engagement plan (3 activities) and 20 interactions (2
//! follow-ups each): 44,000 documents, 86,000 tasks owned by 10 users, due dates and
//! interaction starts spread over a year around "now" (tasks due before now mostly done). Built
//! once in a sled store under `target/bench-data/screens-N-vV/`.
//!
//! - `index/my open tasks due this week`: `open_tasks_due_before(user, now + 7 days)` (overdue
//!   ones included) and `undated_open_tasks`.
//! - `load/my open tasks due this week`: the same answer from every interaction and plan,
//!   each loaded and hydrated (what the app would do without the index).
//! - `index/a KOL's interactions` and `load/...`: newest first, for a different KOL each time;
//!   the loading side reads `records_for_kol` and loads each interaction.
//! - `index/KOL list`: `list_kols` with each KOL's last interaction date.
//! - Once, printed: opening the store with its index version key deleted, which rebuilds the
//!   derived indexes from every document.
//!
//! The store is opened with no document cache, so "load" loads. Under `cargo test` (no
//! `--bench` argument) it runs once on 40 KOLs so it cannot rot.
#![allow(clippy::unwrap_used)]

use std::cmp::Reverse;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{Criterion, SamplingMode, criterion_group};
use liaison_core::model::*;
use liaison_core::storage::{KvStore, SledKv};
use liaison_core::store::{Durability, ManualClock, StoreOptions};
use liaison_core::{DocStore, DocumentId, Identity, Role};

const FULL_KOLS: usize = 2_000;
const TEST_KOLS: usize = 40;
const INTERACTIONS: usize = 20;
const FOLLOW_UPS: usize = 2;
const ACTIVITIES: usize = 3;
const USERS: usize = 10;
/// Bump when the dataset's shape changes (the index's own version rebuilds it at open).
const DATASET_VERSION: u32 = 2;
/// "Now": 2026-06-01 UTC.
const NOW: i64 = 1_780_272_000_000;
const DAY: i64 = 86_400_000;
const YEAR: i64 = 365 * DAY;

fn kols() -> usize {
    if std::env::args().any(|a| a == "--bench") { FULL_KOLS } else { TEST_KOLS }
}

fn identity() -> Identity {
    Identity {
        tenant: "pharma-a".into(),
        user: "sato".into(),
        device: "bench".into(),
        role: Role::Msl,
        install: [0; 8],
    }
}

fn user(n: usize) -> String {
    if n.is_multiple_of(USERS) { "sato".into() } else { format!("msl-{}", n % USERS) }
}

/// A time in the year around now, spread by a multiplicative hash of `n`.
fn spread(n: usize) -> i64 {
    NOW - YEAR / 2 + ((n as i64).wrapping_mul(2_654_435_761) % YEAR).abs()
}

/// Due before now: done, but one in ten is left overdue (counted apart from the owner, who is
/// `n % USERS`).
fn status(n: usize, due: i64) -> TaskStatus {
    if due >= NOW || (n / USERS).is_multiple_of(10) { TaskStatus::Open } else { TaskStatus::Done }
}

fn open(dir: &Path) -> DocStore {
    let options = StoreOptions { durability: Durability::Deferred, cache_docs: 0, ..StoreOptions::default() };
    DocStore::with_kv(Arc::new(SledKv::open(dir).unwrap()), identity(), Arc::new(ManualClock::new(NOW)), options)
        .unwrap()
}

/// Builds (once) the store; returns its directory and the KOL ids.
fn dataset(n: usize) -> (PathBuf, Vec<DocumentId>) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../target/bench-data")
        .join(format!("screens-{n}-v{DATASET_VERSION}"));
    let dir = root.join("liaison");
    if root.join("done").exists() {
        let store = open(&dir);
        let mut kols = store.list(Kind::KolProfile).unwrap();
        kols.sort();
        return (dir, kols);
    }
    let _ = std::fs::remove_dir_all(&root);
    std::fs::create_dir_all(&root).unwrap();
    eprintln!("building the {n}-KOL screens dataset under {} (once)", root.display());
    let store = open(&dir);
    let mut kols = Vec::with_capacity(n);
    let mut task = 0;
    for i in 0..n {
        let kol = store.create("team", &KolProfile::new(format!("KOL {i}"), format!("Hospital {}", i % 97))).unwrap();
        kols.push(kol);
        let mut plan = EngagementPlan::new(&kol, "plan");
        for a in 0..ACTIVITIES {
            task += 1;
            let due = spread(task);
            plan.activities.push(Activity {
                id: format!("a{a}"),
                description: "advisory board".into(),
                owner: user(task),
                due: Some(due),
                status: status(task, due),
            });
        }
        store.create("team", &plan).unwrap();
        for j in 0..INTERACTIONS {
            let mut it = Interaction::new(&kol, spread(i * INTERACTIONS + j), Channel::InPerson);
            it.summary = "Discussed subgroup analysis.".into();
            for f in 0..FOLLOW_UPS {
                task += 1;
                let due = spread(task);
                it.follow_ups.push(FollowUp {
                    id: format!("f{f}"),
                    description: "send the reprint".into(),
                    owner: user(task),
                    due: Some(due),
                    status: status(task, due),
                });
            }
            store.create("team", &it).unwrap();
        }
    }
    store.flush().unwrap();
    drop(store);
    std::fs::write(root.join("done"), b"").unwrap();
    kols.sort();
    (dir, kols)
}

/// (record, item) of my open tasks due before `before`, and the undated ones: from the index.
fn tasks_from_index(store: &DocStore, before: i64) -> Vec<(DocumentId, String)> {
    let mut rows = store.open_tasks_due_before("sato", before).unwrap();
    rows.extend(store.undated_open_tasks("sato").unwrap());
    rows.into_iter().map(|r| (r.record, r.item)).collect()
}

/// The same, loading every interaction and plan.
fn tasks_by_loading(store: &DocStore, before: i64) -> Vec<(DocumentId, String)> {
    let mut found: Vec<(Option<i64>, DocumentId, String)> = Vec::new();
    let mine = |owner: &str, status: TaskStatus, due: Option<i64>| {
        owner == "sato" && matches!(status, TaskStatus::Open | TaskStatus::InProgress) && due.is_none_or(|d| d < before)
    };
    for id in store.list(Kind::Interaction).unwrap() {
        let it: Interaction = store.get(&id).unwrap();
        for f in it.follow_ups.iter().filter(|f| mine(&f.owner, f.status, f.due)) {
            found.push((f.due, id, f.id.clone()));
        }
    }
    for id in store.list(Kind::EngagementPlan).unwrap() {
        let plan: EngagementPlan = store.get(&id).unwrap();
        for a in plan.activities.iter().filter(|a| mine(&a.owner, a.status, a.due)) {
            found.push((a.due, id, a.id.clone()));
        }
    }
    found.sort_by_key(|(due, id, item)| (due.is_none(), *due, *id, item.clone()));
    found.into_iter().map(|(_, id, item)| (id, item)).collect()
}

fn interactions_from_index(store: &DocStore, kol: &DocumentId) -> Vec<(i64, DocumentId)> {
    store.interactions_of_kol(kol).unwrap().into_iter().map(|r| (r.start, r.id)).collect()
}

fn interactions_by_loading(store: &DocStore, kol: &DocumentId) -> Vec<(i64, DocumentId)> {
    let mut rows: Vec<(i64, DocumentId)> = store
        .records_for_kol(kol, Kind::Interaction)
        .unwrap()
        .into_iter()
        .map(|id| (store.get::<Interaction>(&id).unwrap().start, id))
        .collect();
    rows.sort_by_key(|(start, id)| (Reverse(*start), *id));
    rows
}

fn bench(c: &mut Criterion) {
    let n = kols();
    let (dir, kols) = dataset(n);
    let store = open(&dir);
    let week = NOW + 7 * DAY;
    // Both ways give one answer, or the comparison means nothing.
    let mine = tasks_from_index(&store, week);
    assert_eq!(mine, tasks_by_loading(&store, week));
    assert_eq!(interactions_from_index(&store, &kols[0]), interactions_by_loading(&store, &kols[0]));
    assert_eq!(interactions_from_index(&store, &kols[0]).len(), INTERACTIONS);
    eprintln!("my open tasks due this week or overdue: {}", mine.len());

    let docs = n * (2 + INTERACTIONS);
    let mut g = c.benchmark_group(format!("screens, {n} KOLs ({docs} docs)"));
    g.sample_size(50);
    g.bench_function("index/my open tasks due this week", |b| b.iter(|| tasks_from_index(&store, week).len()));
    let mut next = 0;
    g.bench_function("index/a KOL's interactions", |b| {
        b.iter(|| {
            next = (next + 37) % kols.len();
            interactions_from_index(&store, &kols[next]).len()
        })
    });
    g.bench_function("load/a KOL's interactions", |b| {
        b.iter(|| {
            next = (next + 37) % kols.len();
            interactions_by_loading(&store, &kols[next]).len()
        })
    });
    g.bench_function("index/KOL list with last interaction", |b| b.iter(|| store.list_kols().unwrap().len()));
    // Loading 42,000 documents takes seconds: ten single runs.
    g.sample_size(10).sampling_mode(SamplingMode::Flat).warm_up_time(Duration::from_millis(1));
    g.measurement_time(Duration::from_secs(1));
    g.bench_function("load/my open tasks due this week", |b| b.iter(|| tasks_by_loading(&store, week).len()));
    g.finish();

    // Once: the rebuild a device pays when it opens a store of another index version.
    drop(store);
    let kv = SledKv::open(&dir).unwrap();
    kv.delete(b"!index-v").unwrap();
    kv.flush().unwrap();
    drop(kv);
    let started = Instant::now();
    let store = open(&dir);
    eprintln!("rebuild of the derived indexes at open, {docs} documents: {:.1} s", started.elapsed().as_secs_f64());
    assert_eq!(tasks_from_index(&store, week), mine);
}

criterion_group!(benches, bench);

fn main() {
    benches();
    Criterion::default().configure_from_args().final_summary();
}
