//! Two MSL devices edit the same KOL records offline, then merge (in-process, until the relay
//! exists). Run: `cargo run -p liaison-core --example two_devices`.

use anyhow::Result;
use liaison_core::model::*;
use liaison_core::{DocStore, DocumentId, Identity, Role};

fn identity(user: &str, device: &str, role: Role) -> Identity {
    Identity { tenant: "pharma-a".into(), user: user.into(), device: device.into(), role, install: [0; 8] }
}

/// Exchanges every document both ways, as the sync engine will over the network.
fn sync(a: &DocStore, b: &DocStore) -> Result<usize> {
    let mut changed = 0;
    for (from, to) in [(a, b), (b, a)] {
        for id in from.all_documents()? {
            changed += usize::from(to.merge_remote(&id, &from.export(&id)?)?);
        }
    }
    Ok(changed)
}

fn show(name: &str, store: &DocStore, kol: &DocumentId, plan: &DocumentId) -> Result<()> {
    let p: KolProfile = store.get(kol)?;
    let pl: EngagementPlan = store.get(plan)?;
    println!(
        "  [{name}] KOL: {} ({}) at {}, {}",
        p.name,
        p.name_kana.as_deref().unwrap_or("-"),
        p.institution,
        p.department.as_deref().unwrap_or("no department")
    );
    println!("  [{name}] plan title: {}", pl.title);
    println!("  [{name}] plan notes: {}", pl.notes.as_str());
    for a in &pl.activities {
        println!("  [{name}]   activity {}: {} (owner {}, {:?})", a.id, a.description, a.owner, a.status);
    }
    let interactions = store.records_for_kol(kol, Kind::Interaction)?;
    println!("  [{name}] interactions filed for this KOL: {}", interactions.len());
    Ok(())
}

fn main() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let sato = DocStore::open(&dir.path().join("sato-phone"), identity("sato", "iphone-sato", Role::Msl))?;
    let tanaka = DocStore::open(&dir.path().join("tanaka-tablet"), identity("tanaka", "pixel-tanaka", Role::Manager))?;
    println!("Two devices, each with its own sled store under {}", dir.path().display());

    // Sato creates the KOL and the team's plan; both devices sync once while online.
    let kol = sato.create(
        "oncology-kanto",
        &KolProfile {
            name_kana: Some("やまだ たろう".into()),
            specialty: Some("腫瘍内科".into()),
            ..KolProfile::new("山田 太郎", "東京大学医学部附属病院")
        },
    )?;
    let mut plan = EngagementPlan::new(&kol, "FY2027 engagement");
    plan.notes = "Interested in real-world data.".into();
    plan.activities.push(Activity {
        id: "act-1".into(),
        description: "Share phase III results".into(),
        owner: "sato".into(),
        due: None,
        status: TaskStatus::Open,
    });
    plan.activities.push(Activity {
        id: "act-2".into(),
        description: "Invite to advisory board".into(),
        owner: "sato".into(),
        due: None,
        status: TaskStatus::Open,
    });
    let plan = sato.create("oncology-kanto", &plan)?;
    println!("\nOnline: first sync moved {} document(s) to the manager's tablet.", sync(&sato, &tanaka)?);

    println!("\nBoth go offline and edit the same records:");
    sato.update(&plan, |p: &mut EngagementPlan| {
        p.notes.splice(0, 0, "[Sato] Asked about biomarker testing. ");
        p.activities[0].status = TaskStatus::Done;
        p.title = "FY2027 plan (Sato)".into();
    })?;
    let mut visit = Interaction::new(&kol, 1_790_000_000_000, Channel::InPerson);
    visit.summary = "Discussed renal dosing; requested reprint.".into();
    let visit = sato.create("oncology-kanto", &visit)?;
    sato.submit::<Interaction>(&visit)?;
    println!("  sato: edited notes, closed act-1, renamed the plan, logged and submitted a visit");

    tanaka.update(&plan, |p: &mut EngagementPlan| {
        let end = p.notes.as_str().len();
        p.notes.splice(end, 0, " [田中] 次回は学会で面談予定。");
        p.activities[1].owner = "tanaka".into();
        p.title = "FY2027 plan (Tanaka)".into();
    })?;
    tanaka.update(&kol, |k: &mut KolProfile| k.department = Some("腫瘍内科学講座".into()))?;
    println!("  tanaka: added to notes, took over act-2, renamed the plan, set the department");

    println!("\nBefore syncing, each device sees only its own edits:");
    show("sato  ", &sato, &kol, &plan)?;
    show("tanaka", &tanaka, &kol, &plan)?;

    println!("\nBack online: sync moved {} document change(s).", sync(&sato, &tanaka)?);
    println!("\nAfter syncing, both devices show the same merged records:");
    show("sato  ", &sato, &kol, &plan)?;
    show("tanaka", &tanaka, &kol, &plan)?;
    let same = sato.load(&plan)?.get_heads() == tanaka.load(&plan)?.get_heads();
    println!("  identical heads on both devices: {same}");

    println!("\nThe submitted visit is locked on the manager's tablet too:");
    match tanaka.update(&visit, |i: &mut Interaction| i.summary.splice(0, 0, "edit ")) {
        Err(e) => println!("  tanaka's edit refused: {e}"),
        Ok(()) => println!("  UNEXPECTED: the edit went through"),
    }

    println!("\nWho changed the plan title (history):");
    for h in sato.field_history(&plan, "title")? {
        println!(
            "  {} on {} at {}: {}",
            h.user.as_deref().unwrap_or("?"),
            h.device.as_deref().unwrap_or("?"),
            h.time,
            h.message.as_deref().unwrap_or("")
        );
    }
    Ok(())
}
