//! The record model through the store: offline edits on two devices and how they merge.
#![allow(clippy::unwrap_used)]

mod common;

use common::{device, sync};
use liaison_core::model::*;
use liaison_core::store::{Origin, StoreError};
use liaison_core::{DocumentId, Role};

fn kol(name: &str, kana: &str, inst: &str) -> KolProfile {
    KolProfile { name_kana: Some(kana.into()), ..KolProfile::new(name, inst) }
}

#[test]
fn concurrent_edits_of_one_profile_field_converge() {
    let a = device("sato", "phone-a", Role::Msl);
    let b = device("suzuki", "phone-b", Role::Msl);
    let id = a.create("onc-east", &kol("山田 太郎", "やまだ たろう", "東京大学病院")).unwrap();
    sync(&a, &b);

    a.update(&id, |p: &mut KolProfile| p.institution = "東京大学医学部附属病院".into()).unwrap();
    b.update(&id, |p: &mut KolProfile| p.institution = "国立がん研究センター".into()).unwrap();
    // Different fields edited concurrently both survive.
    b.update(&id, |p: &mut KolProfile| p.specialty = Some("腫瘍内科".into())).unwrap();
    sync(&a, &b);

    let pa: KolProfile = a.get(&id).unwrap();
    let pb: KolProfile = b.get(&id).unwrap();
    assert_eq!(pa, pb, "both devices show the same profile");
    assert!(["東京大学医学部附属病院", "国立がん研究センター"].contains(&pa.institution.as_str()));
    assert_eq!(pa.specialty.as_deref(), Some("腫瘍内科"));
    assert_eq!(a.load(&id).unwrap().get_heads(), b.load(&id).unwrap().get_heads());
}

#[test]
fn concurrent_inserts_into_plan_notes_keep_both() {
    let a = device("sato", "phone-a", Role::Msl);
    let b = device("tanaka", "tablet-b", Role::Manager);
    let k = a.create("onc-east", &kol("Dr. Lee", "りー", "Kyoto Univ")).unwrap();
    let plan = EngagementPlan { notes: "Focus on the phase III data.".into(), ..EngagementPlan::new(&k, "FY27 plan") };
    let pid = a.create("onc-east", &plan).unwrap();
    sync(&a, &b);

    a.update(&pid, |p: &mut EngagementPlan| p.notes.splice(0, 0, "[A] Ask about biomarkers. ")).unwrap();
    b.update(&pid, |p: &mut EngagementPlan| {
        let end = p.notes.as_str().len();
        p.notes.splice(end, 0, " [B] 次回は学会で面談。");
    })
    .unwrap();
    sync(&a, &b);

    let na = a.get::<EngagementPlan>(&pid).unwrap().notes.as_str().to_owned();
    let nb = b.get::<EngagementPlan>(&pid).unwrap().notes.as_str().to_owned();
    assert_eq!(na, nb);
    assert_eq!(na, "[A] Ask about biomarkers. Focus on the phase III data. [B] 次回は学会で面談。");
}

#[test]
fn concurrent_edits_of_different_list_items_both_survive() {
    let a = device("sato", "phone-a", Role::Msl);
    let b = device("suzuki", "phone-b", Role::Msl);
    let k = a.create("onc-east", &kol("Dr. Lee", "りー", "Kyoto Univ")).unwrap();
    let mut plan = EngagementPlan::new(&k, "plan");
    for (i, d) in ["advisory board invite", "share trial results", "congress meeting"].iter().enumerate() {
        plan.activities.push(Activity {
            id: format!("act-{i}"),
            description: (*d).into(),
            owner: "sato".into(),
            due: None,
            status: TaskStatus::Open,
        });
    }
    let pid = a.create("onc-east", &plan).unwrap();
    sync(&a, &b);

    a.update(&pid, |p: &mut EngagementPlan| p.activities[0].status = TaskStatus::Done).unwrap();
    b.update(&pid, |p: &mut EngagementPlan| {
        p.activities[2].owner = "suzuki".into();
        p.activities[2].due = Some(1_800_000_000_000);
    })
    .unwrap();
    // Concurrent insertion and removal of items, too.
    a.update(&pid, |p: &mut EngagementPlan| {
        p.activities.push(Activity {
            id: "act-a".into(),
            description: "send reprint".into(),
            owner: "sato".into(),
            due: None,
            status: TaskStatus::Open,
        })
    })
    .unwrap();
    b.update(&pid, |p: &mut EngagementPlan| p.activities.retain(|x| x.id != "act-1")).unwrap();
    sync(&a, &b);

    let pa: EngagementPlan = a.get(&pid).unwrap();
    assert_eq!(pa, b.get::<EngagementPlan>(&pid).unwrap());
    let by_id = |id: &str| pa.activities.iter().find(|x| x.id == id).cloned();
    assert_eq!(by_id("act-0").unwrap().status, TaskStatus::Done);
    assert_eq!(by_id("act-2").unwrap().owner, "suzuki");
    assert_eq!(by_id("act-2").unwrap().due, Some(1_800_000_000_000));
    assert!(by_id("act-1").is_none());
    assert!(by_id("act-a").is_some());
    assert_eq!(pa.activities.len(), 3);
}

#[test]
fn submitted_records_refuse_edits_until_an_admin_unlocks() {
    let a = device("sato", "phone-a", Role::Msl);
    let k = a.create("onc-east", &kol("Dr. Lee", "りー", "Kyoto Univ")).unwrap();
    let mut i = Interaction::new(&k, 1_700_000_000_000, Channel::InPerson);
    i.summary = "Discussed dosing in renal impairment.".into();
    let iid = a.create("onc-east", &i).unwrap();
    a.submit::<Interaction>(&iid).unwrap();

    let err = a.update(&iid, |x: &mut Interaction| x.summary.splice(0, 0, "edited ")).unwrap_err();
    assert!(matches!(err, StoreError::Model(ModelError::Locked)), "{err}");
    assert!(err.to_string().contains("locked"));
    assert!(matches!(a.submit::<Interaction>(&iid), Err(StoreError::Model(ModelError::Locked))));
    // Setting the status by hand is not a way round the submit call.
    let mir = MedicalInformationRequest {
        kol_id: k.to_string(),
        interaction_id: Some(iid.to_string()),
        question: "Is there data in pregnancy?".into(),
        products: vec!["X".into()],
        origin: RequestOrigin::Unsolicited,
        origin_detail: "asked after the talk".into(),
        recipient: "Dr. Lee".into(),
        delivery_method: DeliveryMethod::Email,
        answer: Default::default(),
        signature: None,
        fulfilment: Fulfilment::Open,
        status: RecordStatus::Draft,
        submission: None,
        unlocks: vec![],
    };
    let mid = a.create("onc-east", &mir).unwrap();
    let err = a.update(&mid, |m: &mut MedicalInformationRequest| m.status = RecordStatus::Submitted).unwrap_err();
    assert!(matches!(err, StoreError::Model(ModelError::Invalid { field: "status", .. })));

    // The record is intact and says who submitted it.
    let stored: Interaction = a.get(&iid).unwrap();
    assert_eq!(stored.summary.as_str(), "Discussed dosing in renal impairment.");
    assert_eq!(stored.submission.as_ref().unwrap().user, "sato");

    // An MSL cannot unlock; an admin can, and the unlock is kept.
    assert!(matches!(a.unlock::<Interaction>(&iid, "typo"), Err(StoreError::Model(ModelError::NotPermitted(_)))));
    let admin = device("admin", "desk", Role::Admin);
    sync(&a, &admin);
    admin.unlock::<Interaction>(&iid, "correct the date").unwrap();
    sync(&a, &admin);
    a.update(&iid, |x: &mut Interaction| x.end = Some(1_700_000_360_000)).unwrap();
    let stored: Interaction = a.get(&iid).unwrap();
    assert_eq!(stored.unlocks.len(), 1);
    assert_eq!(stored.unlocks[0].reason, "correct the date");
    assert_eq!(stored.status, RecordStatus::Draft);
}

#[test]
fn kol_merge_keeps_every_interaction() {
    let a = device("sato", "phone-a", Role::Msl);
    let b = device("suzuki", "phone-b", Role::Msl);
    // Both MSLs create the same KOL offline and log interactions against their own copy.
    let ka = a.create("onc-east", &kol("山田 太郎", "やまだ たろう", "東大病院")).unwrap();
    let mut dup = kol("山田太郎", "ヤマダ タロウ", "");
    dup.specialty = Some("血液内科".into());
    dup.contact.do_not_contact = true;
    dup.therapeutic_areas = vec!["hematology".into()];
    let kb = b.create("onc-east", &dup).unwrap();
    let mut ia = Vec::new();
    let mut ib = Vec::new();
    for n in 0..3 {
        ia.push(a.create("onc-east", &Interaction::new(&ka, 1_700_000_000_000 + n, Channel::InPerson)).unwrap());
        ib.push(b.create("onc-east", &Interaction::new(&kb, 1_700_100_000_000 + n, Channel::Phone)).unwrap());
    }
    b.submit::<Interaction>(&ib[0]).unwrap();
    sync(&a, &b);
    assert_eq!(a.list_kols().unwrap().len(), 2);

    a.merge_kols(&ka, &kb).unwrap();
    sync(&a, &b);

    for s in [&a, &b] {
        let kols = s.list_kols().unwrap();
        assert_eq!(kols.len(), 1, "the duplicate is no longer listed");
        assert_eq!(kols[0].id, ka);
        assert_eq!(s.resolve_kol(&kb).unwrap(), ka, "lookups of the loser resolve to the winner");
        let mut all: Vec<DocumentId> = ia.iter().chain(&ib).copied().collect();
        all.sort();
        assert_eq!(s.records_for_kol(&ka, Kind::Interaction).unwrap(), all);
        assert_eq!(s.records_for_kol(&kb, Kind::Interaction).unwrap(), all);
        let w: KolProfile = s.get(&ka).unwrap();
        assert_eq!(w.specialty.as_deref(), Some("血液内科"));
        assert!(w.contact.do_not_contact, "a do-not-contact is never lost");
        assert_eq!(w.therapeutic_areas, ["hematology"]);
        assert_eq!(w.merged_from, [kb.to_string()]);
        let l: KolProfile = s.get(&kb).unwrap();
        assert_eq!(l.merged_into, Some(ka.to_string()));
    }
    // The submitted interaction was not touched by the merge.
    assert_eq!(b.get::<Interaction>(&ib[0]).unwrap().kol_id, kb.to_string());
    // Merging again is a no-op; merging a merged loser elsewhere is refused.
    a.merge_kols(&ka, &kb).unwrap();
    let kc = a.create("onc-east", &kol("Other", "おざー", "X")).unwrap();
    assert!(matches!(a.merge_kols(&kc, &kb), Err(StoreError::Invalid(_))));
}

#[test]
fn opposite_merges_made_offline_resolve_to_one_profile() {
    let a = device("sato", "phone-a", Role::Msl);
    let b = device("suzuki", "phone-b", Role::Msl);
    let k1 = a.create("t", &kol("A", "あ", "X")).unwrap();
    let k2 = a.create("t", &kol("A", "あ", "X")).unwrap();
    sync(&a, &b);
    a.merge_kols(&k1, &k2).unwrap();
    b.merge_kols(&k2, &k1).unwrap();
    sync(&a, &b);
    let expected = k1.min(k2);
    for s in [&a, &b] {
        let kols = s.list_kols().unwrap();
        assert_eq!(kols.len(), 1);
        assert_eq!(kols[0].id, expected);
        assert_eq!(s.resolve_kol(&k1).unwrap(), expected);
        assert_eq!(s.resolve_kol(&k2).unwrap(), expected);
    }
}

#[test]
fn history_names_authors_devices_and_fields() {
    let a = device("sato", "phone-a", Role::Msl);
    let b = device("suzuki", "phone-b", Role::Msl);
    let id = a.create("onc-east", &kol("Dr. Lee", "りー", "Kyoto Univ")).unwrap();
    sync(&a, &b);
    b.update(&id, |p: &mut KolProfile| p.institution = "Osaka Univ".into()).unwrap();
    a.update(&id, |p: &mut KolProfile| p.scientific_interests.splice(0, 0, "CAR-T")).unwrap();
    sync(&a, &b);

    let h = a.history(&id).unwrap();
    assert_eq!(h.len(), 3);
    assert!(h.iter().all(|e| e.verified), "every actor id matches its recorded user and device");
    assert_eq!(h[0].user.as_deref(), Some("sato"));
    assert_eq!(h[0].message.as_deref(), Some("create kol_profile"));
    let inst = a.field_history(&id, "institution").unwrap();
    let last = inst.last().unwrap();
    assert_eq!((last.user.as_deref(), last.device.as_deref()), (Some("suzuki"), Some("phone-b")));
    assert_eq!(last.time, 1_700_000_000_000);
    let interests = a.field_history(&id, "scientific_interests").unwrap();
    assert_eq!(interests.last().unwrap().user.as_deref(), Some("sato"));
    assert_eq!(b.history(&id).unwrap(), h, "history is the same on both devices");
}

#[test]
fn search_finds_kols_by_name_kana_and_institution() {
    let a = device("sato", "phone-a", Role::Msl);
    a.create("t", &kol("山田 太郎", "やまだ たろう", "東京大学病院")).unwrap();
    a.create("t", &kol("佐藤 花子", "さとう はなこ", "大阪大学病院")).unwrap();
    a.create("t", &KolProfile::new("John Smith", "Mayo Clinic")).unwrap();
    let names = |q: &str| a.search_kols(q).unwrap().into_iter().map(|s| s.name).collect::<Vec<_>>();
    assert_eq!(names("ヤマダ"), ["山田 太郎"]);
    assert_eq!(names("ｻﾄｳ"), ["佐藤 花子"]);
    assert_eq!(names("大学"), ["佐藤 花子", "山田 太郎"]);
    assert_eq!(names("mayo SMITH"), ["John Smith"]);
    assert!(names("nobody").is_empty());
    // Sorted by reading: さとう < やまだ, Latin names by name.
    let all: Vec<String> = a.list_kols().unwrap().into_iter().map(|s| s.name).collect();
    assert_eq!(all, ["John Smith", "佐藤 花子", "山田 太郎"]);
}

#[test]
fn change_feed_reports_local_and_remote_changes() {
    let a = device("sato", "phone-a", Role::Msl);
    let b = device("suzuki", "phone-b", Role::Msl);
    let feed = b.subscribe();
    let id = a.create("t", &kol("A", "あ", "X")).unwrap();
    sync(&a, &b);
    let ev = feed.try_recv().unwrap();
    assert_eq!((ev.id, ev.kind, ev.origin), (id, Some(Kind::KolProfile), Origin::Remote));
    b.update(&id, |p: &mut KolProfile| p.tier = Some("national".into())).unwrap();
    assert_eq!(feed.try_recv().unwrap().origin, Origin::Local);
    // An edit that changes nothing is not a change.
    b.update(&id, |p: &mut KolProfile| p.tier = Some("national".into())).unwrap();
    sync(&a, &b);
    let rest: Vec<_> = feed.try_iter().collect();
    assert!(rest.is_empty(), "syncing what b already has reports nothing: {rest:?}");
}

#[test]
fn documents_use_automerge_repo_ids_and_a_guarded_layout() {
    let a = device("sato", "phone-a", Role::Msl);
    let id = a.create("onc-east", &kol("A", "あ", "X")).unwrap();
    let s = id.to_string();
    assert_eq!(s.parse::<DocumentId>().unwrap(), id);
    let doc = a.load(&id).unwrap();
    let root = doc.hydrate(None);
    let json = format!("{root:?}");
    for key in ["schema", "kind", "envelope", "authors", "record", "kol_profile", "onc-east", "created_by"] {
        assert!(json.contains(key), "document layout lost {key}: {json}");
    }
    let env = a.envelope(&id).unwrap();
    assert_eq!((env.tenant.as_str(), env.team.as_str(), env.legal_hold), ("pharma-a", "onc-east", false));
    assert_eq!(env.created_by.device, "phone-a");
}

#[test]
fn wrong_kind_and_missing_documents_are_clear_errors() {
    let a = device("sato", "phone-a", Role::Msl);
    let id = a.create("t", &kol("A", "あ", "X")).unwrap();
    let err = a.get::<Interaction>(&id).unwrap_err();
    assert_eq!(err.to_string(), "expected a interaction document, found kol_profile");
    let missing = DocumentId::from_bytes([9; 16]);
    assert!(matches!(a.get::<KolProfile>(&missing), Err(StoreError::NotFound(m)) if m == missing));
    let err = a.create("t", &Interaction::new(&id, 0, Channel::Video)).map(|_| ());
    assert!(err.is_ok());
    let mut bad = Interaction::new(&id, 0, Channel::Video);
    bad.kol_id = "not an id".into();
    let err = a.create("t", &bad).unwrap_err();
    assert_eq!(err.to_string(), "kol_id is invalid: not a document id");
    assert!(!err.to_string().contains("not an id"));
}
