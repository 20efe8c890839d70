//! End-to-end: presence ("who has this plan open") through a real relay, as automerge-repo
//! ephemeral messages: a teammate sees it; a device cannot show a colleague as present; a user
//! of another team never hears it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use liaison_core::model::*;
use liaison_core::sync::engine::Event;
use liaison_core::sync::presence::{self, Presence};
use liaison_core::{DocumentId, Role};
use liaison_e2e::*;

fn relay_with_teams() -> (tempfile::TempDir, Relay) {
    let data = tempfile::tempdir().unwrap();
    setup_tenant(data.path(), "pharma-a", "onc-east", &[("sato", "msl"), ("suzuki", "msl")]);
    admin(data.path(), &["add-team", "--tenant", "pharma-a", "onc-west"]).unwrap();
    admin(data.path(), &["put-user", "--tenant", "pharma-a", "--role", "msl", "--team", "onc-west", "kato"]).unwrap();
    let relay = Relay::start(data.path(), &[]).unwrap();
    (data, relay)
}

fn phone(relay: &Relay, user: &str, name: &str) -> Device {
    let (_, token) = relay.issue_live("pharma-a", user, name);
    Device::new(relay, "pharma-a", user, name, &token, Role::Msl)
}

/// Presence messages about `doc` a device heard within `wait`.
async fn heard(doc: DocumentId, events: &mut tokio::sync::broadcast::Receiver<Event>, wait: Duration) -> Vec<Presence> {
    let mut out = Vec::new();
    let deadline = tokio::time::Instant::now() + wait;
    while let Ok(Ok(e)) = tokio::time::timeout_at(deadline, events.recv()).await {
        if let Event::Ephemeral { doc: d2, data, .. } = e
            && d2 == doc
            && let Some(p) = presence::decode(&data)
        {
            out.push(p);
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_teammate_sees_presence_a_forged_one_is_dropped_and_another_team_hears_nothing() {
    let (_data, relay) = relay_with_teams();
    let sato = phone(&relay, "sato", "sato-phone");
    let suzuki = phone(&relay, "suzuki", "suzuki-phone");
    let kato = phone(&relay, "kato", "kato-phone");
    let kol = DocumentId::from_bytes([3; 16]);
    let plan = sato.store.create("onc-east", &EngagementPlan::new(&kol, "FY27")).unwrap();
    sato.created(plan);
    sato.synced().await;
    suzuki.client().find(plan);
    suzuki.until_store("the plan arrives", |s| s.get::<EngagementPlan>(&plan).is_ok()).await;
    // Both follow the plan on their connection (the app does when it opens the record); kato,
    // of another team, asks for it too and is told it is unavailable.
    suzuki.client().subscribe(plan);
    sato.client().subscribe(plan);
    kato.client().find(plan);
    tokio::time::sleep(Duration::from_millis(300)).await;

    let mut at_suzuki = suzuki.client().events();
    let mut at_kato = kato.client().events();
    let own =
        Presence { user: "sato".into(), device: "sato-phone".into(), state: "editing notes".into(), ttl_ms: 30_000 };
    // A forged one first: sato's phone claims suzuki is editing.
    let forged = Presence { user: "suzuki".into(), device: "suzuki-phone".into(), ..own.clone() };
    sato.client().send_ephemeral(plan, presence::encode(&forged));
    sato.client().send_ephemeral(plan, presence::encode(&own));

    let seen = heard(plan, &mut at_suzuki, Duration::from_secs(3)).await;
    assert!(seen.contains(&own), "suzuki sees sato editing: {seen:?}");
    assert!(!seen.contains(&forged), "the forged presence never arrives: {seen:?}");
    let other_team = heard(plan, &mut at_kato, Duration::from_millis(300)).await;
    assert!(other_team.is_empty(), "kato, of another team, hears nothing: {other_team:?}");
}
