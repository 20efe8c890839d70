//! End-to-end: the team's records reach every phone without ids, and saves merge (issue 13).
//! Phones are real sync clients over sled stores, against a real relay process.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use liaison_core::model::*;
use liaison_core::store::{ChangeReason, DocChange};
use liaison_core::{DocumentId, Role};
use liaison_e2e::*;

/// pharma-a: sato, suzuki and the manager tanaka in onc-east; kato in onc-west. pharma-b: kim.
fn relay_with_teams() -> (tempfile::TempDir, Relay) {
    let data = tempfile::tempdir().unwrap();
    setup_tenant(data.path(), "pharma-a", "onc-east", &[("sato", "msl"), ("suzuki", "msl"), ("tanaka", "manager")]);
    admin(data.path(), &["add-team", "--tenant", "pharma-a", "onc-west"]).unwrap();
    admin(data.path(), &["put-user", "--tenant", "pharma-a", "--role", "msl", "--team", "onc-west", "kato"]).unwrap();
    setup_tenant(data.path(), "pharma-b", "cardio", &[("kim", "msl")]);
    let relay = Relay::start(data.path(), &[]).unwrap();
    (data, relay)
}

fn phone(relay: &Relay, tenant: &str, user: &str, name: &str) -> Device {
    let (_, token) = relay.issue_live(tenant, user, name);
    Device::new(relay, tenant, user, name, &token, Role::Msl)
}

fn create<R: Record>(d: &Device, team: &str, record: &R) -> DocumentId {
    let id = d.store.create(team, record).unwrap();
    d.created(id);
    id
}

/// A counter from the relay's metrics.
fn metric(relay: &Relay, name: &str) -> u64 {
    let text = relay.get_text("/metrics");
    text.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|v| v.trim().parse().ok()))
        .unwrap_or_else(|| panic!("{name} not in\n{text}"))
}

async fn first_sync(d: &Device) {
    d.until("the first sync is complete", |s| s.first_sync_complete && s.documents_received == s.documents_known).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_phone_gets_every_team_record_without_ids_and_colleagues_new_records_while_connected() {
    let (_data, relay) = relay_with_teams();
    let sato = phone(&relay, "pharma-a", "sato", "sato-phone");
    let kol = create(&sato, "onc-east", &KolProfile::new("Dr. Yamada", "Osaka University"));
    let plan = create(&sato, "onc-east", &EngagementPlan::new(&kol, "FY27"));
    let visit = create(&sato, "onc-east", &Interaction::new(&kol, 1_700_000_000_000, Channel::Video));
    sato.synced().await;
    let kato = phone(&relay, "pharma-a", "kato", "kato-phone");
    let west = create(&kato, "onc-west", &KolProfile::new("Dr. Nishi", "Kobe"));
    kato.synced().await;
    let kim = phone(&relay, "pharma-b", "kim", "kim-phone");
    let other = create(&kim, "cardio", &KolProfile::new("Dr. Kim", "Seoul"));
    kim.synced().await;

    // A new phone of the team, with an empty store and no ids: the team's records arrive.
    let suzuki = phone(&relay, "pharma-a", "suzuki", "suzuki-phone");
    first_sync(&suzuki).await;
    let s = suzuki.client().status();
    assert_eq!((s.documents_known, s.documents_received), (3, 3), "{s:?}");
    assert_eq!(suzuki.store.get::<KolProfile>(&kol).unwrap().name, "Dr. Yamada");
    assert_eq!(suzuki.store.get::<EngagementPlan>(&plan).unwrap().title, "FY27");
    assert!(suzuki.store.get::<Interaction>(&visit).is_ok());
    let mut have = suzuki.store.all_documents().unwrap();
    have.sort();
    let mut want = vec![kol, plan, visit];
    want.sort();
    assert_eq!(have, want, "nothing of another team ({west}) or tenant ({other})");
    assert_eq!(suzuki.client().status().pending_documents, 0, "received records are not pending");

    // While connected, a colleague's new record arrives without asking, and so do edits to
    // records the phone is not syncing on this connection.
    let kol2 = create(&sato, "onc-east", &KolProfile::new("Dr. Tanaka", "Kyoto"));
    suzuki.until_store("sato's new KOL arrives", |s| s.get::<KolProfile>(&kol2).is_ok()).await;
    // And the new phone's own record reaches sato's, which never asked for it either.
    let mine = create(&suzuki, "onc-east", &KolProfile::new("Dr. Mori", "Nagoya"));
    sato.until_store("suzuki's new KOL arrives", |s| s.get::<KolProfile>(&mine).is_ok()).await;
    suzuki.synced().await;

    // A reconnect with nothing new costs what changed: the join and nothing per document.
    suzuki.until("settled", |s| s.first_sync_complete && s.documents_received == s.documents_known).await;
    let mut suzuki = suzuki;
    suzuki.offline();
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let (frames, bytes) = (metric(&relay, "liaison_frames_in_total"), metric(&relay, "liaison_bytes_out_total"));
    suzuki.connect(&relay);
    suzuki.synced().await;
    first_sync(&suzuki).await;
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let frames = metric(&relay, "liaison_frames_in_total") - frames;
    let bytes = metric(&relay, "liaison_bytes_out_total") - bytes;
    assert!(frames <= 1, "a reconnect with nothing new sent {frames} frames (the join only)");
    assert!(bytes < 1024, "the relay sent {bytes} bytes for a reconnect with nothing new");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_grant_removes_the_teams_records_from_the_phone_with_a_reason() {
    let (_data, relay) = relay_with_teams();
    let sato = phone(&relay, "pharma-a", "sato", "sato-phone");
    let kol = create(&sato, "onc-east", &KolProfile::new("Dr. Yamada", "Osaka University"));
    let plan = create(&sato, "onc-east", &EngagementPlan::new(&kol, "FY27"));
    sato.synced().await;
    let mut suzuki = phone(&relay, "pharma-a", "suzuki", "suzuki-phone");
    first_sync(&suzuki).await;
    assert!(suzuki.store.get::<EngagementPlan>(&plan).is_ok());
    let feed = suzuki.store.subscribe();

    let put = |teams: &[&str]| {
        let (status, body) = relay.admin_api(
            "PUT",
            "/admin/v1/tenants/pharma-a/users/suzuki",
            &relay.admin_token(),
            Some(serde_json::json!({ "role": "msl", "teams": teams })),
        );
        assert_eq!(status, 200, "{body}");
    };

    // Live: suzuki moves to onc-west; the east records leave the phone, saying why.
    put(&["onc-west"]);
    suzuki
        .until_store("the east records are gone", |s| {
            s.get::<KolProfile>(&kol).is_err() && s.get::<EngagementPlan>(&plan).is_err()
        })
        .await;
    let reasons: Vec<DocChange> = feed.try_iter().filter(|c| c.deleted).collect();
    assert!(
        reasons.iter().filter(|c| c.reason == ChangeReason::AccessRemoved).count() == 2,
        "each removal says access was removed: {reasons:?}"
    );
    assert!(sato.store.get::<EngagementPlan>(&plan).is_ok(), "removed from the phone, not erased");

    // Offline: moved back, the phone finds the records again when it reconnects; moved out
    // again while offline, it loses them when it reconnects.
    put(&["onc-east"]);
    suzuki.until_store("the east records are back", |s| s.get::<EngagementPlan>(&plan).is_ok()).await;
    suzuki.offline();
    put(&["onc-west"]);
    suzuki.connect(&relay);
    suzuki.until_store("the east records are gone again", |s| s.get::<EngagementPlan>(&plan).is_err()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_save_keeps_the_colleagues_scalar_list_and_text_edits_on_both_phones() {
    let (_data, relay) = relay_with_teams();
    let sato = phone(&relay, "pharma-a", "sato", "sato-phone");
    let kol = create(&sato, "onc-east", &KolProfile::new("Dr. Yamada", "Osaka University"));
    let mut draft = EngagementPlan::new(&kol, "FY27");
    draft.notes = autosurgeon::Text::with_value("Agenda");
    let plan = create(&sato, "onc-east", &draft);
    sato.synced().await;
    let suzuki = phone(&relay, "pharma-a", "suzuki", "suzuki-phone");
    first_sync(&suzuki).await;

    // Sato opens the plan's form.
    let (form, version) = sato.store.get_versioned::<EngagementPlan>(&plan).unwrap();

    // Suzuki retitles, adds an activity and types into the notes; it reaches sato's phone.
    let (_, v) = suzuki.store.get_versioned::<EngagementPlan>(&plan).unwrap();
    suzuki
        .store
        .update_at::<EngagementPlan, _>(&plan, &v, |p| {
            p.title = "FY27, Suzuki's title".into();
            p.activities.push(Activity {
                id: "suzuki-visit".into(),
                description: "Visit in March".into(),
                owner: "suzuki".into(),
                due: None,
                status: TaskStatus::Open,
            });
            p.notes.splice(6, 0, " for Suzuki");
        })
        .unwrap();
    suzuki.client().local_change(plan);
    sato.until_store("suzuki's edit arrives", |s| {
        s.get::<EngagementPlan>(&plan).is_ok_and(|p| p.title == "FY27, Suzuki's title")
    })
    .await;

    // Sato saves the stale form with one objective added.
    let mut mine = form;
    mine.objectives.push(PlanItem { id: "sato-1".into(), text: "Sato's objective".into() });
    sato.store.update_at::<EngagementPlan, _>(&plan, &version, |p| *p = mine).unwrap();
    sato.client().local_change(plan);

    let merged = |p: &EngagementPlan| {
        p.title == "FY27, Suzuki's title"
            && p.activities.iter().any(|a| a.id == "suzuki-visit")
            && p.notes.as_str() == "Agenda for Suzuki"
            && p.objectives.iter().any(|o| o.id == "sato-1")
    };
    for d in [&sato, &suzuki] {
        d.until_store("both edits on the phone", |s| s.get::<EngagementPlan>(&plan).is_ok_and(|p| merged(&p))).await;
    }
    assert_eq!(sato.store.get::<EngagementPlan>(&plan).unwrap(), suzuki.store.get::<EngagementPlan>(&plan).unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edit_made_offline_to_a_record_synced_earlier_goes_out_when_the_network_returns() {
    use liaison_core::client::Network;
    let (_data, relay) = relay_with_teams();
    let sato = phone(&relay, "pharma-a", "sato", "sato-phone");
    let kol = create(&sato, "onc-east", &KolProfile::new("Dr. Yamada", "Osaka University"));
    let plan = create(&sato, "onc-east", &EngagementPlan::new(&kol, "FY27"));
    sato.synced().await;
    let suzuki = phone(&relay, "pharma-a", "suzuki", "suzuki-phone");
    first_sync(&suzuki).await;
    // Suzuki edits once online (acknowledged, so no longer offered on every connection)...
    suzuki.store.update(&plan, |p: &mut EngagementPlan| p.title = "FY27 (1)".into()).unwrap();
    suzuki.client().local_change(plan);
    suzuki.synced().await;
    // ...then loses the network, edits again, and gets it back: the same client, reconnecting.
    suzuki.client().set_network(Network::Down);
    suzuki.until("offline", |s| s.state == liaison_core::client::ConnState::Offline).await;
    suzuki.store.update(&plan, |p: &mut EngagementPlan| p.title = "FY27 (2)".into()).unwrap();
    suzuki.client().local_change(plan);
    suzuki.client().set_network(Network::Up);
    suzuki.synced().await;
    sato.until_store("the offline edit arrives", |s| {
        s.get::<EngagementPlan>(&plan).is_ok_and(|p| p.title == "FY27 (2)")
    })
    .await;
}
