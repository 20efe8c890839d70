//! End-to-end: a real relay process with TLS on 127.0.0.1:0, a temporary data directory, and
//! real devices.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use liaison_core::DocumentId;
use liaison_core::Role;
use liaison_core::model::*;
use liaison_e2e::*;

fn team_relay() -> (tempfile::TempDir, String, String, String) {
    let data = tempfile::tempdir().unwrap();
    setup_tenant(data.path(), "pharma-a", "onc-east", &[("sato", "msl"), ("suzuki", "msl"), ("tanaka", "manager")]);
    let (_, sato) = issue(data.path(), "pharma-a", "sato", "sato-phone", &[]);
    let (_, suzuki) = issue(data.path(), "pharma-a", "suzuki", "suzuki-phone", &[]);
    let (_, tanaka) = issue(data.path(), "pharma-a", "tanaka", "tanaka-tablet", &[]);
    (data, sato, suzuki, tanaka)
}

fn plan_notes(d: &Device, plan: &DocumentId) -> Option<String> {
    d.store.get::<EngagementPlan>(plan).ok().map(|p| p.notes.as_str().to_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn devices_edit_offline_converge_through_the_relay_and_a_late_device_gets_everything() {
    let (data, sato_t, suzuki_t, tanaka_t) = team_relay();
    let relay = Relay::start(data.path(), &[]).unwrap();
    let mut sato = Device::new(&relay, "pharma-a", "sato", "sato-phone", &sato_t, Role::Msl);
    let mut suzuki = Device::new(&relay, "pharma-a", "suzuki", "suzuki-phone", &suzuki_t, Role::Msl);

    let kol = sato.store.create("onc-east", &KolProfile::new("山田 太郎", "東京大学病院")).unwrap();
    let plan = sato
        .store
        .create(
            "onc-east",
            &EngagementPlan { notes: "Focus on real-world data.".into(), ..EngagementPlan::new(&kol, "FY27") },
        )
        .unwrap();
    sato.created(kol);
    sato.created(plan);
    sato.synced().await;
    suzuki.client().find(plan);
    suzuki.client().find(kol);
    suzuki.until_store("the plan arrives", |s| s.get::<EngagementPlan>(&plan).is_ok()).await;

    // Both go offline and edit the same plan.
    sato.offline();
    suzuki.offline();
    sato.store.update(&plan, |p: &mut EngagementPlan| p.notes.splice(0, 0, "[Sato] biomarkers. ")).unwrap();
    suzuki
        .store
        .update(&plan, |p: &mut EngagementPlan| {
            let end = p.notes.as_str().len();
            p.notes.splice(end, 0, " [鈴木] 学会で面談。")
        })
        .unwrap();

    // Back online: they converge through the relay.
    sato.connect(&relay);
    suzuki.connect(&relay);
    sato.client().local_change(plan);
    suzuki.client().local_change(plan);
    let expected = "[Sato] biomarkers. Focus on real-world data. [鈴木] 学会で面談。";
    sato.until_store("suzuki's edit arrives", |s| {
        s.get::<EngagementPlan>(&plan).is_ok_and(|p| p.notes.as_str() == expected)
    })
    .await;
    suzuki
        .until_store("sato's edit arrives", |s| {
            s.get::<EngagementPlan>(&plan).is_ok_and(|p| p.notes.as_str() == expected)
        })
        .await;

    // A third device that joins later gets everything.
    let tanaka = Device::new(&relay, "pharma-a", "tanaka", "tanaka-tablet", &tanaka_t, Role::Manager);
    tanaka.client().find(plan);
    tanaka.client().find(kol);
    tanaka
        .until_store("everything arrives", |s| {
            s.get::<EngagementPlan>(&plan).is_ok_and(|p| p.notes.as_str() == expected)
                && s.get::<KolProfile>(&kol).is_ok()
        })
        .await;
    assert_eq!(plan_notes(&tanaka, &plan).as_deref(), Some(expected));
    assert_eq!(sato.store.load(&plan).unwrap().get_heads(), tanaka.store.load(&plan).unwrap().get_heads());
}
