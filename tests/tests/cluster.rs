//! End-to-end: several relay processes of one cluster on one PostgreSQL database
//! (`[storage] cluster = true`), devices connected to different nodes.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use liaison_core::DocumentId;
use liaison_core::Role;
use liaison_core::client::SyncProblem;
use liaison_core::model::*;
use liaison_e2e::*;

/// A team on a new cluster database: (node directories, sato's, suzuki's and tanaka's tokens).
fn team_cluster(nodes: usize) -> (Vec<tempfile::TempDir>, String, String, String) {
    let dirs = cluster_data_dirs(nodes);
    let data = dirs[0].path();
    setup_tenant(data, "pharma-a", "onc-east", &[("sato", "msl"), ("suzuki", "msl"), ("tanaka", "manager")]);
    let (_, sato) = issue(data, "pharma-a", "sato", "sato-phone", &[]);
    let (_, suzuki) = issue(data, "pharma-a", "suzuki", "suzuki-phone", &[]);
    let (_, tanaka) = issue(data, "pharma-a", "tanaka", "tanaka-tablet", &[]);
    (dirs, sato, suzuki, tanaka)
}

fn notes(d: &Device, plan: &DocumentId) -> String {
    d.store.get::<EngagementPlan>(plan).map(|p| p.notes.as_str().to_owned()).unwrap_or_default()
}

fn append(d: &Device, plan: DocumentId, text: &str) {
    append_offline(d, plan, text);
    d.client().local_change(plan);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn devices_on_different_relays_converge_live_and_a_third_relay_serves_a_late_device() {
    let (dirs, sato_t, suzuki_t, tanaka_t) = team_cluster(3);
    let a = Relay::start(dirs[0].path(), &[]).unwrap();
    let b = Relay::start(dirs[1].path(), &[]).unwrap();
    let mut sato = Device::new(&a, "pharma-a", "sato", "sato-phone", &sato_t, Role::Msl);
    let mut suzuki = Device::new(&b, "pharma-a", "suzuki", "suzuki-phone", &suzuki_t, Role::Msl);

    let kol = sato.store.create("onc-east", &KolProfile::new("山田 太郎", "東京大学病院")).unwrap();
    let plan = sato.store.create("onc-east", &EngagementPlan::new(&kol, "FY27")).unwrap();
    sato.created(kol);
    sato.created(plan);
    sato.synced().await;
    suzuki.client().find(plan);
    suzuki.client().find(kol);
    suzuki.until_store("the plan arrives through relay B", |s| s.get::<EngagementPlan>(&plan).is_ok()).await;

    // Both online, each on its own node: an edit reaches the other device while connected
    // (node B hears from node A, loads the plan again and pushes it, and back).
    append(&sato, plan, "[A1]");
    suzuki.until_store("sato's edit arrives through relay B", |_| notes(&suzuki, &plan).contains("[A1]")).await;
    append(&suzuki, plan, "[B1]");
    sato.until_store("suzuki's edit arrives through relay A", |_| notes(&sato, &plan).contains("[B1]")).await;

    // A record created through node A reaches suzuki on node B without asking for it: B's
    // catalog hears of it from A's hint.
    let visit = sato.store.create("onc-east", &Interaction::new(&kol, 1_700_000_000_000, Channel::InPerson)).unwrap();
    sato.created(visit);
    suzuki
        .until_store("the new visit is listed and fetched through relay B", |s| s.get::<Interaction>(&visit).is_ok())
        .await;

    // Offline edits to the same plan converge when they come back, each through its node.
    sato.offline();
    suzuki.offline();
    sato.store.update(&plan, |p: &mut EngagementPlan| p.notes.splice(0, 0, "[sato offline] ")).unwrap();
    append_offline(&suzuki, plan, " [suzuki offline]");
    sato.connect(&a);
    suzuki.connect(&b);
    sato.client().local_change(plan);
    suzuki.client().local_change(plan);
    let both = |n: &str| n.contains("[sato offline]") && n.contains("[suzuki offline]");
    sato.until_store("both offline edits", |_| both(&notes(&sato, &plan))).await;
    suzuki.until_store("both offline edits", |_| both(&notes(&suzuki, &plan))).await;
    sato.synced().await;
    suzuki.synced().await;

    // A third node started later; a device that joins through it gets everything.
    let c = Relay::start(dirs[2].path(), &[]).unwrap();
    let tanaka = Device::new(&c, "pharma-a", "tanaka", "tanaka-tablet", &tanaka_t, Role::Manager);
    tanaka.client().find(plan);
    tanaka.client().find(kol);
    let expected = notes(&sato, &plan);
    tanaka
        .until_store("everything arrives through relay C", |s| {
            s.get::<KolProfile>(&kol).is_ok() && notes(&tanaka, &plan) == expected
        })
        .await;
    assert_eq!(notes(&suzuki, &plan), expected);
    assert_eq!(sato.store.load(&plan).unwrap().get_heads(), tanaka.store.load(&plan).unwrap().get_heads());
    assert_eq!(suzuki.store.load(&plan).unwrap().get_heads(), tanaka.store.load(&plan).unwrap().get_heads());
}

fn append_offline(d: &Device, plan: DocumentId, text: &str) {
    let t = text.to_owned();
    d.store
        .update(&plan, move |p: &mut EngagementPlan| {
            let end = p.notes.as_str().len();
            p.notes.splice(end, 0, &t)
        })
        .unwrap();
}

/// A record submitted through node A stays locked against an offline edit sent later through
/// node B, and a device on node C sees it unchanged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_submitted_through_one_relay_stays_locked_against_an_edit_through_another() {
    let (dirs, sato_t, suzuki_t, tanaka_t) = team_cluster(3);
    let a = Relay::start(dirs[0].path(), &[]).unwrap();
    let b = Relay::start(dirs[1].path(), &[]).unwrap();
    let sato = Device::new(&a, "pharma-a", "sato", "sato-phone", &sato_t, Role::Msl);
    let mut suzuki = Device::new(&b, "pharma-a", "suzuki", "suzuki-phone", &suzuki_t, Role::Msl);
    let kol = DocumentId::from_bytes([3; 16]);
    let mut visit = Interaction::new(&kol, 1_700_000_000_000, Channel::InPerson);
    visit.summary = "Discussed dosing.".into();
    let id = sato.store.create("onc-east", &visit).unwrap();
    sato.created(id);
    sato.synced().await;
    suzuki.client().find(id);
    suzuki.until_store("the visit arrives through relay B", |s| s.get::<Interaction>(&id).is_ok()).await;

    suzuki.offline();
    suzuki.store.update(&id, |i: &mut Interaction| i.summary.splice(0, 0, "Offline: ")).unwrap();
    sato.store.submit::<Interaction>(&id).unwrap();
    sato.client().local_change(id);
    sato.synced().await;

    suzuki.connect(&b);
    suzuki.client().local_change(id);
    let s = suzuki.until("the refusal arrives through relay B", |s| !s.refused.is_empty()).await;
    assert_eq!(s.refused[0].code, "locked");
    let c = Relay::start(dirs[2].path(), &[]).unwrap();
    let tanaka = Device::new(&c, "pharma-a", "tanaka", "tanaka-tablet", &tanaka_t, Role::Manager);
    tanaka.client().find(id);
    tanaka.until_store("the visit arrives through relay C", |s| s.get::<Interaction>(&id).is_ok()).await;
    let seen: Interaction = tanaka.store.get(&id).unwrap();
    assert_eq!(seen.summary.as_str(), "Discussed dosing.", "no node stored the edit to the locked record");
    assert!(seen.is_locked());
}

/// A token revoked while its device is connected to another node: that node cuts it within a
/// second (the revocation is in the shared database; the `Security` hint makes the other node
/// re-check at once: ~50 ms here on a busy machine, against up to a second for the periodic
/// re-check).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_revoked_through_one_relay_cuts_its_device_on_another_within_a_second() {
    let dirs = cluster_data_dirs(2);
    let data = dirs[0].path();
    setup_tenant(data, "pharma-a", "onc-east", &[("sato", "msl")]);
    let (id, token) = issue(data, "pharma-a", "sato", "sato-phone", &[]);
    let a = Relay::start(dirs[0].path(), &[]).unwrap();
    let b = Relay::start(dirs[1].path(), &[]).unwrap();
    let sato = Device::new(&b, "pharma-a", "sato", "sato-phone", &token, Role::Msl);
    let plan = sato.store.create("onc-east", &EngagementPlan::new(&DocumentId::from_bytes([7; 16]), "p")).unwrap();
    sato.created(plan);
    sato.synced().await;

    let (status, body) = a.admin_api("DELETE", &format!("/admin/v1/tokens/{id}"), &a.admin_token(), None);
    assert!(status < 300, "revoked through relay A: {status} {body}");
    let started = std::time::Instant::now();
    sato.until("cut by relay B", |s| matches!(s.problem, Some(SyncProblem::Revoked { .. }))).await;
    eprintln!("revocation across nodes took {:?}", started.elapsed());
    assert!(started.elapsed() < std::time::Duration::from_secs(1), "took {:?}", started.elapsed());
    drop(b);
}

/// An HCP's profile erased through node A: the devices connected to node B lose their copies
/// within a second (~10 ms here: the erasure's hint), and an offline copy edited and sent later through node B does not bring it
/// back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_erasure_through_one_relay_reaches_devices_on_another_and_nothing_brings_it_back() {
    let (dirs, sato_t, suzuki_t, tanaka_t) = team_cluster(2);
    let a = Relay::start(dirs[0].path(), &[]).unwrap();
    let b = Relay::start(dirs[1].path(), &[]).unwrap();
    let sato = Device::new(&a, "pharma-a", "sato", "sato-phone", &sato_t, Role::Msl);
    let mut suzuki = Device::new(&b, "pharma-a", "suzuki", "suzuki-phone", &suzuki_t, Role::Msl);
    let tanaka = Device::new(&b, "pharma-a", "tanaka", "tanaka-tablet", &tanaka_t, Role::Manager);
    let kol = sato.store.create("onc-east", &KolProfile::new("山田 太郎", "東京大学病院")).unwrap();
    sato.created(kol);
    sato.synced().await;
    for d in [&suzuki, &tanaka] {
        d.client().find(kol);
        d.until_store("the profile arrives through relay B", |s| s.get::<KolProfile>(&kol).is_ok()).await;
    }
    // Edits back and forth through both nodes: each node's policy now remembers the profile as
    // stored and not erased (issue 15), which the erasure must make it forget.
    for (n, d) in [&suzuki, &sato, &suzuki].into_iter().enumerate() {
        let department = format!("department {n}");
        d.store.update(&kol, |p: &mut KolProfile| p.department = Some(department.clone())).unwrap();
        d.client().local_change(kol);
        for other in [&sato, &suzuki, &tanaka] {
            other
                .until_store("the edit arrives everywhere", |s| {
                    s.get::<KolProfile>(&kol).is_ok_and(|p| p.department.as_deref() == Some(department.as_str()))
                })
                .await;
        }
    }
    suzuki.offline();

    let (status, body) = a.admin_api("DELETE", &format!("/admin/v1/documents/{kol}"), &a.admin_token(), None);
    assert_eq!(status, 200, "{body}");
    let started = std::time::Instant::now();
    tanaka.until_store("the copy on relay B's device is erased", |s| s.get::<KolProfile>(&kol).is_err()).await;
    eprintln!("erasure across nodes took {:?}", started.elapsed());
    assert!(started.elapsed() < std::time::Duration::from_secs(1), "took {:?}", started.elapsed());
    sato.until_store("and on relay A's", |s| s.get::<KolProfile>(&kol).is_err()).await;

    suzuki.store.update(&kol, |p: &mut KolProfile| p.department = Some("腫瘍内科".into())).unwrap();
    suzuki.connect(&b);
    suzuki.client().local_change(kol);
    suzuki
        .until_store("the edited offline copy is erased through relay B", |s| s.get::<KolProfile>(&kol).is_err())
        .await;
    // Through either node, nobody gets it again.
    for relay in [&a, &b] {
        let (status, _) = relay.admin_api("DELETE", &format!("/admin/v1/documents/{kol}"), &a.admin_token(), None);
        assert_eq!(status, 404, "already erased");
    }
}

/// A two-device write storm, one device on each node; node A is SIGKILLed in it. Every edit a
/// device saw acknowledged is in the database, A's device carries on through node B, and both
/// converge.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_killed_in_a_storm_loses_nothing_acknowledged_and_its_devices_go_on_through_another() {
    let (dirs, sato_t, suzuki_t, _) = team_cluster(2);
    let mut a = Relay::start(dirs[0].path(), &[]).unwrap();
    let b = Relay::start(dirs[1].path(), &[]).unwrap();
    let mut sato = Device::new(&a, "pharma-a", "sato", "sato-phone", &sato_t, Role::Msl);
    let suzuki = Device::new(&b, "pharma-a", "suzuki", "suzuki-phone", &suzuki_t, Role::Msl);
    let kol = DocumentId::from_bytes([7; 16]);
    let docs: Vec<DocumentId> = (0..3)
        .map(|i| {
            let id = sato.store.create("onc-east", &EngagementPlan::new(&kol, format!("plan {i}"))).unwrap();
            sato.created(id);
            id
        })
        .collect();
    sato.synced().await;
    for d in &docs {
        suzuki.client().find(*d);
    }
    suzuki.until_store("the plans arrive", |s| docs.iter().all(|d| s.get::<EngagementPlan>(d).is_ok())).await;
    let acks = acks_of(&sato);

    // The storm, paced by acknowledgements as in relay.rs; A is killed once it acknowledged a
    // few of sato's edits.
    let (mut n, mut seen, mut seen_at) = (0, 0, 0);
    let mut killed_at = None;
    loop {
        for (i, d) in docs.iter().enumerate() {
            append(&sato, *d, &format!("<s{n}.{i}>"));
            append(&suzuki, *d, &format!("<z{n}.{i}>"));
        }
        n += 1;
        if killed_at.is_none() && acks.lock().unwrap().len() >= 6 {
            a.kill();
            killed_at = Some(n);
        }
        if killed_at.is_some_and(|k| n >= k + 10) {
            break;
        }
        assert!(n < 2_000, "relay A acknowledged too little of the storm to be killed in it");
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        // Never more than 10 rounds ahead of the acknowledgements (see relay.rs's storm).
        if killed_at.is_none() && n - seen_at >= 10 {
            let waited = std::time::Instant::now();
            while acks.lock().unwrap().len() == seen {
                assert!(waited.elapsed() < std::time::Duration::from_secs(60), "nothing acknowledged for a minute");
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            }
        }
        let now = acks.lock().unwrap().len();
        if now > seen {
            (seen, seen_at) = (now, n);
        }
    }

    // Every head sato was told is in the database (read through a store on it).
    let acked: Vec<(DocumentId, Vec<automerge::ChangeHash>)> = acks.lock().unwrap().clone();
    let store = liaison_server::open_data(&relay_config(dirs[0].path())).unwrap().store;
    for (doc, heads) in &acked {
        let stored = store.load(doc).unwrap();
        for h in heads {
            assert!(automerge::ReadDoc::get_change_by_hash(&stored, h).is_some(), "acknowledged {h} of {doc} lost");
        }
    }
    drop(store);

    // Sato goes on through node B; both converge on every edit of both.
    sato.connect(&b);
    for d in &docs {
        sato.client().local_change(*d);
    }
    let all = |s: &liaison_core::DocStore| {
        docs.iter().enumerate().all(|(i, d)| {
            s.get::<EngagementPlan>(d).is_ok_and(|p| {
                (0..n).all(|k| {
                    p.notes.as_str().contains(&format!("<s{k}.{i}>"))
                        && p.notes.as_str().contains(&format!("<z{k}.{i}>"))
                })
            })
        })
    };
    sato.until_store("sato holds every edit", all).await;
    suzuki.until_store("suzuki holds every edit", all).await;
    for d in &docs {
        assert_eq!(sato.store.load(d).unwrap().get_heads(), suzuki.store.load(d).unwrap().get_heads());
    }
    // Two devices on two nodes writing the same plans: the writes that lost to the other
    // node's are counted for the operator (whether any lost here depends on timing).
    let metrics = b.get_text("/metrics");
    let conflicts = metrics.lines().find_map(|l| l.strip_prefix("liaison_write_conflicts_total "));
    assert!(conflicts.is_some_and(|n| n.parse::<u64>().is_ok()), "{metrics}");
    eprintln!("write conflicts on node B: {conflicts:?}");
}

/// (document, relay heads) pairs a device was told.
type Acks = std::sync::Arc<std::sync::Mutex<Vec<(DocumentId, Vec<automerge::ChangeHash>)>>>;

/// (document, relay heads) a device was told, from its event stream.
fn acks_of(d: &Device) -> Acks {
    let acks = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let mut events = d.client().events();
    let sink = acks.clone();
    tokio::spawn(async move {
        loop {
            match events.recv().await {
                Ok(liaison_core::sync::Event::PeerHeads { doc, heads, .. }) => sink.lock().unwrap().push((doc, heads)),
                Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                Err(_) => break,
            }
        }
    });
    acks
}

/// PostgreSQL restarted (`pg_ctl restart -m fast`) while devices on two nodes edit: the nodes
/// reconnect (pool and hint listener), nothing a device saw acknowledged is lost, and edits
/// made around the restart reach both devices. Its own PostgreSQL: restarting the shared one
/// would fail every other test.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postgresql_restart_under_load_loses_nothing_acknowledged_and_the_nodes_catch_up() {
    let pg = liaison_server::storage::testing::PrivatePostgres::start().unwrap();
    let dirs = cluster_data_dirs_on(pg.fresh_database().unwrap(), 2);
    let data = dirs[0].path();
    setup_tenant(data, "pharma-a", "onc-east", &[("sato", "msl"), ("suzuki", "msl")]);
    let (_, sato_t) = issue(data, "pharma-a", "sato", "sato-phone", &[]);
    let (_, suzuki_t) = issue(data, "pharma-a", "suzuki", "suzuki-phone", &[]);
    let a = Relay::start(dirs[0].path(), &[]).unwrap();
    let b = Relay::start(dirs[1].path(), &[]).unwrap();
    let sato = Device::new(&a, "pharma-a", "sato", "sato-phone", &sato_t, Role::Msl);
    let suzuki = Device::new(&b, "pharma-a", "suzuki", "suzuki-phone", &suzuki_t, Role::Msl);
    let plan = sato.store.create("onc-east", &EngagementPlan::new(&DocumentId::from_bytes([7; 16]), "p")).unwrap();
    sato.created(plan);
    sato.synced().await;
    suzuki.client().find(plan);
    suzuki.until_store("the plan arrives", |s| s.get::<EngagementPlan>(&plan).is_ok()).await;
    let acks = acks_of(&sato);

    let rounds = 40;
    for n in 0..rounds {
        append(&sato, plan, &format!("<s{n}>"));
        append(&suzuki, plan, &format!("<z{n}>"));
        if n == rounds / 2 {
            pg.restart_fast().unwrap();
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    let all = |s: &liaison_core::DocStore| {
        s.get::<EngagementPlan>(&plan).is_ok_and(|p| {
            (0..rounds)
                .all(|k| p.notes.as_str().contains(&format!("<s{k}>")) && p.notes.as_str().contains(&format!("<z{k}>")))
        })
    };
    sato.until_store("sato holds every edit after the restart", all).await;
    suzuki.until_store("suzuki holds every edit after the restart", all).await;
    sato.synced().await;
    suzuki.synced().await;

    let acked: Vec<(DocumentId, Vec<automerge::ChangeHash>)> = acks.lock().unwrap().clone();
    assert!(!acked.is_empty());
    let store = liaison_server::open_data(&relay_config(dirs[0].path())).unwrap().store;
    let stored = store.load(&plan).unwrap();
    for (_, heads) in &acked {
        for h in heads {
            assert!(automerge::ReadDoc::get_change_by_hash(&stored, h).is_some(), "acknowledged {h} lost");
        }
    }
    let p: EngagementPlan = store.get(&plan).unwrap();
    assert!((0..rounds).all(|k| p.notes.as_str().contains(&format!("<s{k}>"))), "the database holds every edit");
}

fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64
}

/// A PostgreSQL dump restored after a revocation went through node A and an erasure through
/// node B: the dump alone brings the lost phone's token and the erased record back;
/// `liaison-relay admin reapply-ledger` with both nodes' security ledgers carries both out
/// again. It refuses to run while a node serves the database.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restored_dump_gets_every_nodes_revocations_and_erasures_back_from_their_ledgers() {
    let (dirs, sato_t, _, _) = team_cluster(2);
    let (lost_id, lost_secret) = issue(dirs[0].path(), "pharma-a", "sato", "sato-lost-phone", &[]);
    let url = relay_config(dirs[0].path()).storage.url.unwrap().expose().to_owned();
    let mut a = Relay::start(dirs[0].path(), &[]).unwrap();
    let mut b = Relay::start(dirs[1].path(), &[]).unwrap();
    let sato = Device::new(&a, "pharma-a", "sato", "sato-phone", &sato_t, Role::Msl);
    let kol = sato.store.create("onc-east", &KolProfile::new("山田 太郎", "東京大学病院")).unwrap();
    sato.created(kol);
    sato.synced().await;

    let work = tempfile::tempdir().unwrap();
    let dump = work.path().join("liaison.dump");
    let pg_bin = liaison_server::storage::testing::bin_dir().unwrap();
    let out =
        std::process::Command::new(pg_bin.join("pg_dump")).args(["-Fc", "-f"]).arg(&dump).arg(&url).output().unwrap();
    assert!(out.status.success(), "pg_dump: {}", String::from_utf8_lossy(&out.stderr));

    let admin_token = a.admin_token();
    let (status, body) = a.admin_api("DELETE", &format!("/admin/v1/tokens/{lost_id}"), &admin_token, None);
    assert!(status < 300, "revoked through node A: {status} {body}");
    let (status, body) = b.admin_api("DELETE", &format!("/admin/v1/documents/{kol}"), &admin_token, None);
    assert_eq!(status, 200, "erased through node B: {body}");
    drop(sato);
    a.stop();
    b.stop();

    let out = std::process::Command::new(pg_bin.join("pg_restore"))
        .args(["--clean", "--if-exists", "-d"])
        .arg(&url)
        .arg(&dump)
        .output()
        .unwrap();
    assert!(out.status.success(), "pg_restore: {}", String::from_utf8_lossy(&out.stderr));
    {
        let data = liaison_server::open_data(&relay_config(dirs[0].path())).unwrap();
        assert!(data.auth.authenticate(&lost_secret, now_ms()).is_ok(), "the dump alone brings the token back");
        assert!(data.store.load(&kol).is_ok(), "and the erased record");
    }

    let ledgers: Vec<String> =
        dirs.iter().map(|d| d.path().join("security-ledger.jsonl").to_string_lossy().into_owned()).collect();
    let args = ["reapply-ledger", "--ledger", &ledgers[0], "--ledger", &ledgers[1]];
    let mut running = Relay::start(dirs[1].path(), &[]).unwrap();
    let refused = format!("{:#}", admin(dirs[0].path(), &args).unwrap_err());
    assert!(refused.contains("is using this database"), "{refused}");
    running.stop();
    // PostgreSQL lets the stopped node's lock go when its backend sees the connection close.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let said = loop {
        match admin(dirs[0].path(), &args) {
            Ok(said) => break said,
            Err(e) if std::time::Instant::now() < deadline && format!("{e:#}").contains("is using this database") => {
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
            Err(e) => panic!("{e:#}"),
        }
    };
    assert!(said.contains("carried out again"), "{said}");

    let data = liaison_server::open_data(&relay_config(dirs[0].path())).unwrap();
    assert!(data.auth.authenticate(&lost_secret, now_ms()).is_err(), "revoked again (node A's ledger)");
    assert!(data.store.load(&kol).is_err(), "erased again (node B's ledger)");
    assert!(
        liaison_core::storage::KvStore::get(data.kv.as_ref(), &liaison_server::policy::tombstone_key(&kol))
            .unwrap()
            .is_some()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_node_hands_a_teams_devices_one_routing_key_and_they_keep_it() {
    // What a load balancer hashes to send a team's devices to one node (the devices send it
    // back on every later connection): the same from any node, with nothing shared but the
    // database, and another team's differs.
    let (dirs, sato_t, suzuki_t, _) = team_cluster(2);
    setup_tenant(dirs[0].path(), "pharma-b", "onc-east", &[("ito", "msl")]);
    let (_, ito_t) = issue(dirs[0].path(), "pharma-b", "ito", "ito-phone", &[]);
    let a = Relay::start(dirs[0].path(), &[]).unwrap();
    let b = Relay::start(dirs[1].path(), &[]).unwrap();
    let sato = Device::new(&a, "pharma-a", "sato", "sato-phone", &sato_t, Role::Msl);
    let suzuki = Device::new(&b, "pharma-a", "suzuki", "suzuki-phone", &suzuki_t, Role::Msl);
    let ito = Device::new(&b, "pharma-b", "ito", "ito-phone", &ito_t, Role::Msl);
    for d in [&sato, &suzuki, &ito] {
        d.until_store("the relay's routing key is kept", |s| s.route().unwrap().is_some()).await;
    }
    let key = |d: &Device| d.store.route().unwrap().unwrap();
    assert_eq!(key(&sato), key(&suzuki), "one team: one key, from either node");
    assert_ne!(key(&sato), key(&ito), "another tenant's team: another key");
    assert!(!key(&sato).contains("pharma") && !key(&sato).contains("onc"), "opaque to the balancer's logs");
}
