//! Opening a phone's store and listing its KOLs.
//!
//! Data: 2,000 KOL profiles, each with an engagement plan and 20 interactions (44,000
//! documents), in a sled store built once under `target/bench-data/`.
//!
//! - `liaison/open+list`: open the `DocStore` and list KOLs (sorted by reading) from the index.
//! - `raw-automerge/open+list`: the same work as a plain automerge app would do it: open a sled
//!   database holding each KOL profile as one `save()` blob, load every profile, read name,
//!   reading and institution, sort.
//! - `liaison/search`: a kana search over the same store.
//!
//! Under `cargo test` (no `--bench` argument) it runs once on 40 KOLs so it cannot rot.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::sync::Arc;

use automerge::{Automerge, ReadDoc};
use criterion::{Criterion, criterion_group};
use liaison_core::model::*;
use liaison_core::storage::SledKv;
use liaison_core::store::{Durability, StoreOptions, SystemClock, fold};
use liaison_core::{DocStore, Identity, Role};

const FULL_KOLS: usize = 2_000;
const TEST_KOLS: usize = 40;
const INTERACTIONS: usize = 20;

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

const SURNAMES: [(&str, &str); 8] = [
    ("山田", "やまだ"),
    ("佐藤", "さとう"),
    ("鈴木", "すずき"),
    ("高橋", "たかはし"),
    ("田中", "たなか"),
    ("伊藤", "いとう"),
    ("渡辺", "わたなべ"),
    ("中村", "なかむら"),
];

fn profile(i: usize) -> KolProfile {
    let (s, k) = SURNAMES[i % SURNAMES.len()];
    let mut p = KolProfile::new(format!("{s} {i}"), format!("Hospital {}", i % 97));
    p.name_kana = Some(format!("{k} {i}"));
    p.specialty = Some("oncology".into());
    p.therapeutic_areas = vec!["lung cancer".into(), "immunotherapy".into()];
    p.scientific_interests = "Biomarker-driven trial design; real-world evidence.".into();
    p
}

/// Builds (once) the liaison store and the raw-automerge database side by side.
fn dataset(n: usize) -> (PathBuf, PathBuf) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/bench-data").join(format!("kols-{n}-v1"));
    let ours = root.join("liaison");
    let raw = root.join("raw");
    if root.join("done").exists() {
        return (ours, raw);
    }
    let _ = std::fs::remove_dir_all(&root);
    std::fs::create_dir_all(&root).unwrap();
    eprintln!("building the {n}-KOL dataset under {} (once)", root.display());
    let store = DocStore::with_kv(
        Arc::new(SledKv::open(&ours).unwrap()),
        identity(),
        Arc::new(SystemClock),
        StoreOptions { durability: Durability::Deferred, ..StoreOptions::default() },
    )
    .unwrap();
    let raw_db = sled::open(&raw).unwrap();
    for i in 0..n {
        let p = profile(i);
        let kol = store.create("team", &p).unwrap();
        raw_db.insert(kol.as_bytes(), store.export(&kol).unwrap()).unwrap();
        let mut plan = EngagementPlan::new(&kol, "plan");
        plan.notes = "Quarterly review of unmet needs.".into();
        store.create("team", &plan).unwrap();
        for j in 0..INTERACTIONS {
            let mut it = Interaction::new(&kol, 1_700_000_000_000 + j as i64, Channel::InPerson);
            it.summary = "Discussed subgroup analysis.".into();
            store.create("team", &it).unwrap();
        }
    }
    store.flush().unwrap();
    raw_db.flush().unwrap();
    std::fs::write(root.join("done"), b"").unwrap();
    (ours, raw)
}

fn open_and_list(dir: &Path) -> usize {
    let store = DocStore::with_kv(
        Arc::new(SledKv::open(dir).unwrap()),
        identity(),
        Arc::new(SystemClock),
        StoreOptions::default(),
    )
    .unwrap();
    store.list_kols().unwrap().len()
}

fn raw_open_and_list(dir: &Path) -> usize {
    let db = sled::open(dir).unwrap();
    let mut rows = Vec::new();
    for entry in db.iter() {
        let (_, v) = entry.unwrap();
        let doc = Automerge::load(&v).unwrap();
        let (_, record) = doc.get(automerge::ROOT, "record").unwrap().unwrap();
        let text = |k: &str| -> String {
            match doc.get(&record, k).unwrap() {
                Some((automerge::Value::Scalar(s), _)) => s.as_str().unwrap_or_default().to_owned(),
                _ => String::new(),
            }
        };
        rows.push((fold(&text("name_kana")), text("name"), text("institution")));
    }
    rows.sort();
    rows.len()
}

fn bench(c: &mut Criterion) {
    let n = kols();
    let (ours, raw) = dataset(n);
    assert_eq!(open_and_list(&ours), n);
    assert_eq!(raw_open_and_list(&raw), n);
    let mut g = c.benchmark_group(format!("open+list {n} KOLs ({} docs)", n * (2 + INTERACTIONS)));
    g.sample_size(20);
    g.bench_function("liaison", |b| b.iter(|| open_and_list(&ours)));
    g.bench_function("raw-automerge", |b| b.iter(|| raw_open_and_list(&raw)));
    g.finish();

    let store = DocStore::with_kv(
        Arc::new(SledKv::open(&ours).unwrap()),
        identity(),
        Arc::new(SystemClock),
        StoreOptions::default(),
    )
    .unwrap();
    c.bench_function(&format!("search kana in {n} KOLs"), |b| b.iter(|| store.search_kols("ヤマダ").unwrap().len()));
}

criterion_group!(benches, bench);

fn main() {
    benches();
    Criterion::default().configure_from_args().final_summary();
}
