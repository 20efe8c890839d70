//! End-to-end: a hostile device against a real relay, one test per attack found in the security
//! review, each sending the kind of hand-made frames the attacker sent (stock automerge changes
//! over the automerge-repo wire format), each asserting the attack fails while two honest
//! devices keep syncing. See docs/security.md for the threat model.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::Write as _;
use std::time::Duration;

use automerge::transaction::{CommitOptions, Transactable};
use automerge::{ActorId, Automerge, Change, ObjId, ObjType, ReadDoc, Value};
use liaison_core::id::actor_id_for;
use liaison_core::model::*;
use liaison_core::sync::engine::encode_erasure;
use liaison_core::sync::wire::Message;
use liaison_core::{DocumentId, Identity, Role};
use liaison_e2e::raw::{self, RawPeer};
use liaison_e2e::*;

const INSTALL: [u8; 8] = [7; 8];

/// Tenant pharma-a (team onc-east: MSLs sato, suzuki, mallory; manager tanaka) and tenant
/// pharma-b (team cardio: MSL kim); a token for each.
struct World {
    _data: tempfile::TempDir,
    relay: Relay,
    tokens: std::collections::HashMap<&'static str, String>,
}

fn world(config: &str) -> World {
    let data = tempfile::tempdir().unwrap();
    setup_tenant(
        data.path(),
        "pharma-a",
        "onc-east",
        &[("sato", "msl"), ("suzuki", "msl"), ("mallory", "msl"), ("tanaka", "manager")],
    );
    setup_tenant(data.path(), "pharma-b", "cardio", &[("kim", "msl")]);
    let mut tokens = std::collections::HashMap::new();
    for (tenant, user) in
        [("pharma-a", "sato"), ("pharma-a", "suzuki"), ("pharma-a", "mallory"), ("pharma-a", "tanaka")]
            .into_iter()
            .chain([("pharma-b", "kim")])
    {
        tokens.insert(user, issue(data.path(), tenant, user, &device_of(user), &[]).1);
    }
    let path = data.path().join("relay.toml");
    std::fs::File::create(&path).unwrap().write_all(config.as_bytes()).unwrap();
    let relay = Relay::start(data.path(), &["--config", path.to_str().unwrap()]).unwrap();
    World { _data: data, relay, tokens }
}

fn device_of(user: &str) -> String {
    format!("{user}-phone")
}

fn tenant_of(user: &str) -> &'static str {
    if user == "kim" { "pharma-b" } else { "pharma-a" }
}

fn who(user: &str) -> Identity {
    let role = if user == "tanaka" { Role::Manager } else { Role::Msl };
    Identity { tenant: tenant_of(user).into(), user: user.into(), device: device_of(user), role, install: INSTALL }
}

impl World {
    async fn raw(&self, user: &str) -> RawPeer {
        RawPeer::join(&self.relay, &self.tokens[user], &device_of(user)).await
    }

    fn device(&self, user: &str) -> Device {
        let role = if user == "tanaka" { Role::Manager } else { Role::Msl };
        Device::new(&self.relay, tenant_of(user), user, &device_of(user), &self.tokens[user], role)
    }

    /// Two honest MSLs still sync: one edits a plan, the other sees it.
    async fn honest_devices_still_sync(&self, label: &str) {
        let sato = self.device("sato");
        let suzuki = self.device("suzuki");
        let kol = DocumentId::from_bytes([1; 16]);
        let plan = sato.store.create("onc-east", &EngagementPlan::new(&kol, label)).unwrap();
        sato.created(plan);
        suzuki.client().find(plan);
        suzuki
            .until_store("the honest plan arrives", |s| s.get::<EngagementPlan>(&plan).is_ok_and(|p| p.title == label))
            .await;
    }
}

/// A new engagement plan made by `user` (a complete, valid record).
fn plan_by(user: &str, title: &str) -> (DocumentId, Automerge) {
    let kol = DocumentId::from_bytes([2; 16]);
    let new = NewDocument { team: "onc-east".into(), retention_class: "standard".into() };
    let doc = create_document(&who(user), &new, &EngagementPlan::new(&kol, title), 1_000).unwrap();
    (DocumentId::random(), doc)
}

fn obj(doc: &Automerge, path: &[&str]) -> ObjId {
    let mut at = automerge::ROOT;
    for key in path {
        match doc.get(&at, *key).unwrap() {
            Some((Value::Object(_), id)) => at = id,
            other => panic!("{key} is not an object: {other:?}"),
        }
    }
    at
}

/// One change to `doc` made under `actor`; returns it.
fn change(
    doc: &mut Automerge,
    actor: &ActorId,
    edit: impl FnOnce(&mut automerge::transaction::Transaction<'_>, &Automerge),
) -> Change {
    let snapshot = doc.clone();
    doc.set_actor(actor.clone());
    let mut tx = doc.transaction();
    edit(&mut tx, &snapshot);
    let (hash, _) = tx.commit_with(CommitOptions::default().with_time(2_000));
    doc.get_change_by_hash(&hash.unwrap()).unwrap()
}

fn actor(user: &str) -> ActorId {
    let w = who(user);
    actor_id_for(&w.tenant, &w.user, &w.device, &INSTALL)
}

/// Pushes a new plan as `user` through `peer` and waits until the relay acknowledged it.
async fn created(peer: &mut RawPeer, id: DocumentId, doc: &Automerge) {
    peer.push(id, doc).await;
    peer.acked(id, &doc.get_heads()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_with_an_incomplete_envelope_never_opens_to_another_tenant() {
    let w = world("");
    let mut mallory = w.raw("mallory").await;
    let mut kim = w.raw("kim").await;

    // Created without `created_by`: the relay derived no owner and served it to everyone.
    let (id, mut doc) = plan_by("mallory", "no creator");
    let envelope = obj(&doc, &["envelope"]);
    change(&mut doc, &actor("mallory"), |tx, _| tx.delete(&envelope, "created_by").unwrap());
    mallory.push(id, &doc).await;
    assert_eq!(mallory.refusal(id).await, "not-a-record");
    assert!(kim.unavailable(id).await, "another tenant must not read it");

    // Created whole, then edited so the envelope no longer hydrates.
    let (id, mut doc) = plan_by("mallory", "broken later");
    created(&mut mallory, id, &doc).await;
    let envelope = obj(&doc, &["envelope"]);
    let broken = change(&mut doc, &actor("mallory"), |tx, _| tx.put(&envelope, "created_at", "not a time").unwrap());
    mallory.sync(id, doc.get_heads(), raw::raw(&[&broken])).await;
    assert_eq!(mallory.refusal(id).await, "not-a-record");
    assert!(kim.unavailable(id).await, "another tenant must not read it");
    let mut kim_writes = w.raw("kim").await;
    let overwrite = change(&mut doc.clone(), &actor("kim"), |tx, d| {
        tx.put(obj(d, &["record"]), "title", "kim was here").unwrap();
    });
    kim_writes.sync(id, doc.get_heads(), raw::raw(&[&overwrite])).await;
    kim_writes
        .until("unavailable", |m| {
            matches!(m, Message::DocUnavailable { document_id, .. } if *document_id == id).then_some(())
        })
        .await;
    assert!(w.relay.catalog(&w.tokens["mallory"]).contains(&id.to_string()), "it stays in its tenant's catalog");
    assert!(!w.relay.catalog(&w.tokens["kim"]).contains(&id.to_string()));
    w.honest_devices_still_sync("after incomplete envelopes").await;
    // Kim's write was never applied: an honest teammate reads the record as mallory made it.
    let suzuki = w.device("suzuki");
    suzuki.client().find(id);
    suzuki
        .until_store("the record arrives", |s| s.get::<EngagementPlan>(&id).is_ok_and(|p| p.title == "broken later"))
        .await;
}

/// Mallory's phone, joined, with a plan of hers it created on the relay: the plan as she holds
/// it and its envelope's object.
async fn mallorys_plan(w: &World) -> (RawPeer, DocumentId, Automerge, ObjId) {
    let mut mallory = w.raw("mallory").await;
    let (id, doc) = plan_by("mallory", "mine");
    created(&mut mallory, id, &doc).await;
    let envelope = obj(&doc, &["envelope"]);
    (mallory, id, doc, envelope)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_owner_change_behind_a_refused_change_and_its_undo_is_refused() {
    let w = world("");
    let (mut mallory, id, mut doc, envelope) = mallorys_plan(&w).await;
    let base = doc.clone();

    // R1 moves the plan to another team: refused and remembered.
    let r1 = change(&mut doc, &actor("mallory"), |tx, _| tx.put(&envelope, "team", "onc-west").unwrap());
    mallory.sync(id, doc.get_heads(), raw::raw(&[&r1])).await;
    assert_eq!(mallory.refusal(id).await, "owner-change");
    // X, concurrent with R1, moves it to another tenant; R2, built on R1 and X, moves it back.
    // All three together leave the owner as it was; but R1 and R2 are refused, so X alone was
    // applied. (X needs another actor of hers, same principal, another install: one actor's
    // changes cannot be concurrent.)
    let mut other = base.clone();
    let second_install = actor_id_for("pharma-a", "mallory", "mallory-phone", &[8; 8]);
    let x = change(&mut other, &second_install, |tx, d| tx.put(obj(d, &["envelope"]), "tenant", "pharma-b").unwrap());
    doc.apply_changes([x.clone()]).unwrap();
    let r2 = change(&mut doc, &actor("mallory"), |tx, _| {
        tx.put(&envelope, "tenant", "pharma-a").unwrap();
        tx.put(&envelope, "team", "onc-east").unwrap();
    });
    assert_eq!(read_owner(&doc).unwrap(), ("pharma-a".to_owned(), "onc-east".to_owned()));
    let mut x_alone = base.clone();
    x_alone.apply_changes([x.clone()]).unwrap();
    assert_eq!(read_owner(&x_alone).unwrap().0, "pharma-b");
    mallory.sync(id, doc.get_heads(), raw::raw(&[&r1, &r2, &x])).await;
    assert_eq!(mallory.refusal_of(id, x.hash()).await, "owner-change");

    // The record is still pharma-a's: listed there, unavailable to pharma-b, as stored.
    assert!(w.relay.catalog(&w.tokens["mallory"]).contains(&id.to_string()));
    let mut kim = w.raw("kim").await;
    assert!(kim.unavailable(id).await);
    let suzuki = w.device("suzuki");
    suzuki.client().find(id);
    suzuki.until_store("the record arrives", |s| s.load(&id).is_ok()).await;
    let stored = suzuki.store.load(&id).unwrap();
    assert_eq!(read_owner(&stored).unwrap(), ("pharma-a".to_owned(), "onc-east".to_owned()));
    assert_eq!(stored.get_heads(), base.get_heads(), "none of the three changes was applied");
    w.honest_devices_still_sync("after the owner change").await;
}

/// The envelope is fixed at creation, also for keys no build of liaison knows: a device that
/// adds one (a region a later relay might route or grant by) is refused, and nothing of it is
/// stored or reaches a teammate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_added_under_the_envelope_is_refused() {
    let w = world("");
    let (mut mallory, id, mut doc, envelope) = mallorys_plan(&w).await;
    let base = doc.clone();
    let region = change(&mut doc, &actor("mallory"), |tx, _| tx.put(&envelope, "region", "eu-west").unwrap());
    mallory.sync(id, doc.get_heads(), raw::raw(&[&region])).await;
    assert_eq!(mallory.refusal(id).await, "envelope-change");

    let suzuki = w.device("suzuki");
    suzuki.client().find(id);
    suzuki.until_store("the record arrives", |s| s.load(&id).is_ok()).await;
    assert_eq!(suzuki.store.load(&id).unwrap().get_heads(), base.get_heads(), "the change was not applied");
    w.honest_devices_still_sync("after the envelope key").await;
}

/// A compressed change chunk (type 2) of `inflated` zero bytes: a few hundred KiB on the wire.
fn bomb(inflated: usize) -> Vec<u8> {
    let mut enc = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::best());
    let zeros = vec![0u8; 1 << 20];
    for _ in 0..inflated / zeros.len() {
        enc.write_all(&zeros).unwrap();
    }
    let body = enc.finish().unwrap();
    let mut chunk = vec![0x85, 0x6f, 0x4a, 0x83, 0, 0, 0, 0, 2];
    let mut len = body.len() as u64;
    loop {
        let byte = (len & 0x7f) as u8;
        len >>= 7;
        chunk.push(if len == 0 { byte } else { byte | 0x80 });
        if len == 0 {
            break;
        }
    }
    chunk.extend_from_slice(&body);
    chunk
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_decompression_bomb_closes_only_its_connection_and_inflates_nothing() {
    let w = world("");
    let mut sato = w.raw("sato").await;
    let (id, doc) = plan_by("sato", "target");
    created(&mut sato, id, &doc).await;
    let rss_before = w.relay.rss_kib();

    // A read-only manager sends 512 MiB of zeros compressed into well under the frame limit.
    let chunk = bomb(512 << 20);
    assert!(chunk.len() < 1 << 20, "the bomb is {} bytes on the wire", chunk.len());
    let mut tanaka = w.raw("tanaka").await;
    tanaka.sync(id, doc.get_heads(), vec![chunk]).await;
    assert_eq!(tanaka.closed().await, (1009, "changes too large".to_owned()));
    let grown_mib = w.relay.rss_kib().saturating_sub(rss_before) / 1024;
    assert!(grown_mib < 64, "the relay grew by {grown_mib} MiB");
    w.honest_devices_still_sync("after the bomb").await;
    assert!(w.relay.get_text("/metrics").contains("liaison_connections_closed_total{reason=\"changes too large\"} 1"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_names_the_real_uploader_and_submissions_cannot_be_forged() {
    let w = world("");
    let mut sato = w.raw("sato").await;
    let (id, mut doc) = plan_by("sato", "sato's plan");
    created(&mut sato, id, &doc).await;
    let mut mallory = w.raw("mallory").await;

    // Mallory writes under sato's actor id: it would read as sato's in history.
    let forged =
        change(&mut doc.clone(), &actor("sato"), |tx, d| tx.put(obj(d, &["record"]), "title", "forged").unwrap());
    mallory.sync(id, doc.get_heads(), raw::raw(&[&forged])).await;
    assert_eq!(mallory.refusal(id).await, "foreign-actor");

    // Under her own actor, but with an authors entry naming sato.
    let lie = change(&mut doc.clone(), &actor("mallory"), |tx, d| {
        let authors = obj(d, &["authors"]);
        let entry = tx.put_object(&authors, actor("mallory").to_hex_string(), ObjType::Map).unwrap();
        tx.put(&entry, "user", "sato").unwrap();
        tx.put(&entry, "device", "sato-phone").unwrap();
        tx.put(obj(d, &["record"]), "title", "lie").unwrap();
    });
    mallory.sync(id, doc.get_heads(), raw::raw(&[&lie])).await;
    assert_eq!(mallory.refusal(id).await, "forged-author");

    // An honest edit of hers goes through and history names her.
    let mine =
        update_record(&mut doc, &who("mallory"), 3_000, |p: &mut EngagementPlan| p.title = "mallory's edit".into())
            .unwrap()
            .0
            .unwrap();
    mallory.sync(id, doc.get_heads(), raw::raw(&[&doc.get_change_by_hash(&mine).unwrap()])).await;
    mallory.acked(id, &doc.get_heads()).await;

    // A submission naming sato, made by mallory, on an interaction.
    let kol = DocumentId::from_bytes([2; 16]);
    let new = NewDocument { team: "onc-east".into(), retention_class: "standard".into() };
    let mut interaction =
        create_document(&who("mallory"), &new, &Interaction::new(&kol, 1, Channel::InPerson), 1_000).unwrap();
    let iid = DocumentId::random();
    created(&mut mallory, iid, &interaction).await;
    let submitted_as_sato = change(&mut interaction.clone(), &actor("mallory"), |tx, d| {
        let mut rec: Interaction = read_record(d).unwrap();
        rec.status = RecordStatus::Submitted;
        rec.submission = Some(Submission { at: 5, user: "sato".into(), device: "sato-phone".into() });
        autosurgeon::reconcile_prop(tx, automerge::ROOT, "record", &rec).unwrap();
    });
    mallory.sync(iid, interaction.get_heads(), raw::raw(&[&submitted_as_sato])).await;
    assert_eq!(mallory.refusal(iid).await, "forged-submission");
    // A forged unlock entry on a draft is refused too.
    let unlock = change(&mut interaction.clone(), &actor("mallory"), |tx, d| {
        let mut rec: Interaction = read_record(d).unwrap();
        rec.unlocks.push(Unlock { id: "u1".into(), at: 5, user: "admin".into(), reason: "forged".into() });
        autosurgeon::reconcile_prop(tx, automerge::ROOT, "record", &rec).unwrap();
    });
    mallory.sync(iid, interaction.get_heads(), raw::raw(&[&unlock])).await;
    assert_eq!(mallory.refusal(iid).await, "forged-submission");
    // Her own submit is accepted.
    let own = submit_record::<Interaction>(&mut interaction, &who("mallory"), 6_000).unwrap().unwrap();
    mallory.sync(iid, interaction.get_heads(), raw::raw(&[&interaction.get_change_by_hash(&own).unwrap()])).await;
    mallory.acked(iid, &interaction.get_heads()).await;
    // So is a record created and submitted offline, before its first sync.
    let mut offline =
        create_document(&who("mallory"), &new, &Interaction::new(&kol, 2, Channel::Phone), 1_000).unwrap();
    submit_record::<Interaction>(&mut offline, &who("mallory"), 2_000).unwrap();
    created(&mut mallory, DocumentId::random(), &offline).await;

    // A third device reads the history the relay kept: every change names its real author.
    let suzuki = w.device("suzuki");
    suzuki.client().find(id);
    suzuki
        .until_store("the plan arrives", |s| s.get::<EngagementPlan>(&id).is_ok_and(|p| p.title == "mallory's edit"))
        .await;
    let history = suzuki.store.history(&id).unwrap();
    let authors: Vec<(Option<String>, bool)> = history.iter().map(|h| (h.user.clone(), h.verified)).collect();
    assert_eq!(authors, vec![(Some("sato".into()), true), (Some("mallory".into()), true)]);
    w.honest_devices_still_sync("after forged authorship").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_ids_and_unread_outboxes_are_bounded() {
    // A short write deadline, so the non-reading client is cut quickly. The outbox is the
    // default (32 MiB); a smaller one paces the honest phones at the end
    // (`connection_limits::a_device_asking_for_more_than_its_outbox_holds_is_paced_not_cut`);
    // the outbox's byte bound has its unit tests in server/src/outbox.rs.
    let w = world("[limits]\nwrite_timeout_secs = 2\n");
    // Each attack is measured from just before it: the honest upload of three 5 MiB documents
    // between them is not an attack, and glibc's malloc keeps such large freed buffers (its
    // mmap threshold rises after each): ~175 MiB for those uploads, ~40 MiB with a fixed
    // threshold (docs/operator-guide.md, "Memory").
    let rss_before = w.relay.rss_kib();
    let huge = "x".repeat(1 << 20);

    // A 1 MiB peer id: refused at the handshake, before it is stored or repeated.
    let mut ws = raw::connect(&w.relay, &w.tokens["mallory"]).await;
    futures::SinkExt::send(&mut ws, tokio_tungstenite::tungstenite::Message::Binary(raw::join_frame(&huge).into()))
        .await
        .unwrap();
    let mut peer = RawPeer { ws, peer_id: "huge".into(), relay_id: "liaison-relay".into() };
    assert_eq!(peer.closed().await, (1002, "malformed frame".to_owned()));

    // Ephemeral messages with unique 1 MiB session ids: each closes its connection.
    let mut sato = w.raw("sato").await;
    let (id, doc) = plan_by("sato", "presence");
    created(&mut sato, id, &doc).await;
    for n in 0..20 {
        let mut mallory = w.raw("mallory").await;
        let m = Message::Ephemeral {
            sender_id: "mallory-phone".into(),
            target_id: mallory.relay_id.clone(),
            count: 1,
            session_id: format!("{n}{huge}"),
            document_id: id,
            data: vec![0xa0],
        };
        mallory.send_frame(m.encode()).await;
        assert_eq!(mallory.closed().await.0, 1002);
    }

    let grown_mib = w.relay.rss_kib().saturating_sub(rss_before) / 1024;
    assert!(grown_mib < 48, "21 MiB of refused ids grew the relay by {grown_mib} MiB");

    // A client that asks for large documents and never reads: cut, its task ended.
    let mut big = Vec::new();
    for n in 0..3 {
        let (bid, mut bdoc) = plan_by("sato", &format!("big {n}"));
        let mut noise = vec![0u8; 5 << 20];
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15 ^ n;
        for b in noise.iter_mut() {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            *b = x as u8;
        }
        change(&mut bdoc, &actor("sato"), |tx, _| tx.put(automerge::ROOT, "attachment", noise).unwrap());
        created(&mut sato, bid, &bdoc).await;
        big.push(bid);
    }
    let rss_before = w.relay.rss_kib();
    let mut reader = w.raw("mallory").await;
    for bid in &big {
        reader.request(*bid).await;
    }
    // Never read: wait for the relay to count the cut.
    let cut = tokio::time::timeout(WAIT, async {
        loop {
            let metrics = w.relay.get_text("/metrics");
            if metrics.contains("reason=\"write timeout\"") || metrics.contains("reason=\"client too slow\"") {
                return metrics;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await
    .expect("the relay cut the client that does not read");
    drop(reader);
    assert!(cut.contains("liaison_connections_closed_total"));
    let grown_mib = w.relay.rss_kib().saturating_sub(rss_before) / 1024;
    assert!(grown_mib < 64, "15 MiB asked for and never read grew the relay by {grown_mib} MiB");
    w.honest_devices_still_sync("after oversized ids").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_with_missing_dependencies_are_never_applied_later_as_someone_else() {
    let w = world("");
    let mut sato = w.raw("sato").await;
    // An interaction: a manager may read it, not write it.
    let kol = DocumentId::from_bytes([2; 16]);
    let new = NewDocument { team: "onc-east".into(), retention_class: "standard".into() };
    let mut doc = create_document(&who("sato"), &new, &Interaction::new(&kol, 1, Channel::InPerson), 1_000).unwrap();
    let id = DocumentId::random();
    created(&mut sato, id, &doc).await;

    // Sato edits offline (C1). The read-only manager sends C2, built on C1, before C1 arrives.
    let c1 = change(&mut doc, &actor("sato"), |tx, d| tx.put(obj(d, &["record"]), "location", "Tokyo").unwrap());
    let c2 = change(&mut doc.clone(), &actor("tanaka"), |tx, d| {
        tx.put(obj(d, &["record"]), "location", "written by a reader").unwrap()
    });
    let mut tanaka = w.raw("tanaka").await;
    tanaka.sync(id, vec![c2.hash()], raw::raw(&[&c2])).await;
    // The relay answered her message (so it has handled it) without taking C2.
    tanaka
        .until("the relay's answer", |m| {
            matches!(m, Message::Sync { document_id, .. } if *document_id == id).then_some(())
        })
        .await;
    // Then sato's C1 arrives: C2 must not ride along as sato's.
    sato.sync(id, doc.get_heads(), raw::raw(&[&c1])).await;
    sato.acked(id, &doc.get_heads()).await;
    let suzuki = w.device("suzuki");
    suzuki.client().find(id);
    suzuki
        .until_store("sato's edit arrives", |s| {
            s.get::<Interaction>(&id).is_ok_and(|i| i.location.as_deref() == Some("Tokyo"))
        })
        .await;
    let stored = suzuki.store.load(&id).unwrap();
    assert!(stored.get_change_by_hash(&c2.hash()).is_none(), "the reader's change was applied");
    w.honest_devices_still_sync("after missing dependencies").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_record_is_never_served_to_another_tenant_before_it_is_stored() {
    let w = world("");
    let (id, doc) = plan_by("sato", "brand new");
    // Kim (pharma-b) asks for the id first; the relay remembers who asked.
    let mut kim = w.raw("kim").await;
    assert!(kim.unavailable(id).await);
    // Sato creates it; the relay used to push it to every earlier asker before its meta was
    // written, when its access still answered "anyone".
    let mut sato = w.raw("sato").await;
    created(&mut sato, id, &doc).await;
    assert!(kim.unavailable(id).await, "kim received the record");
    w.honest_devices_still_sync("after the race").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_teammate_cannot_silence_the_relays_notices_or_fake_them() {
    let w = world("");
    let sato = w.device("sato");
    let kol = DocumentId::from_bytes([3; 16]);
    let id = sato.store.create("onc-east", &EngagementPlan::new(&kol, "to be erased")).unwrap();
    sato.created(id);
    sato.synced().await;

    // Mallory learns the relay's session id from a refusal it sends her.
    let mut mallory = w.raw("mallory").await;
    let doc = sato.store.load(&id).unwrap();
    let forged = change(&mut doc.clone(), &actor("sato"), |tx, d| tx.put(obj(d, &["record"]), "title", "x").unwrap());
    mallory.sync(id, doc.get_heads(), raw::raw(&[&forged])).await;
    let session = mallory
        .until("the relay's refusal", |m| match m {
            Message::Ephemeral { session_id, data, .. }
                if liaison_core::sync::engine::decode_refusal(data).is_some() =>
            {
                Some(session_id.clone())
            }
            _ => None,
        })
        .await;
    // She sends presence under the relay's session with the largest count, and a fake erasure.
    for (count, data) in [(u64::MAX, vec![0xa0]), (u64::MAX - 1, encode_erasure())] {
        let m = Message::Ephemeral {
            sender_id: "mallory-phone".into(),
            target_id: mallory.relay_id.clone(),
            count,
            session_id: session.clone(),
            document_id: id,
            data,
        };
        mallory.send_frame(m.encode()).await;
    }
    // Positive signal that sato's device has handled what came before: a teammate's edit.
    let suzuki = w.device("suzuki");
    suzuki.client().find(id);
    suzuki.until_store("the plan arrives", |s| s.load(&id).is_ok()).await;
    suzuki.store.update(&id, |p: &mut EngagementPlan| p.title = "suzuki's edit".into()).unwrap();
    suzuki.client().local_change(id);
    sato.until_store("suzuki's edit arrives", |s| {
        s.get::<EngagementPlan>(&id).is_ok_and(|p| p.title == "suzuki's edit")
    })
    .await;
    assert!(sato.store.load(&id).is_ok(), "a teammate's fake erasure deleted the record");

    // The real erasure still reaches sato's device.
    let (status, body) =
        w.relay.admin_api("DELETE", &format!("/admin/v1/documents/{id}"), &w.relay.admin_token(), None);
    assert_eq!(status, 200, "{body}");
    sato.until_store("the erasure arrives", |s| s.load(&id).is_err()).await;
    // And another tenant asking for the id hears nothing of an erasure.
    let mut kim = w.raw("kim").await;
    kim.request(id).await;
    let heard = kim
        .until("an answer", |m| match m {
            Message::DocUnavailable { .. } => Some(None),
            Message::Ephemeral { data, .. } => Some(Some(data.clone())),
            _ => None,
        })
        .await;
    // (The relay sends a notice before "unavailable", so none came.)
    assert_eq!(heard, None, "another tenant learned of the erasure");
    w.honest_devices_still_sync("after fake notices").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_storage_id_belongs_to_the_device_that_first_presented_it() {
    let w = world("");
    // Sato's phone syncs with its storage id (the relay keeps sync state under it).
    let sato = w.device("sato");
    let kol = DocumentId::from_bytes([4; 16]);
    let id = sato.store.create("onc-east", &EngagementPlan::new(&kol, "mine")).unwrap();
    sato.created(id);
    sato.synced().await;

    // Mallory presents it: refused at the handshake.
    let mut mallory =
        RawPeer::join_with_storage(&w.relay, &w.tokens["mallory"], "mallory-phone", "sato-phone-store").await;
    assert_eq!(mallory.closed().await, (4001, "storage id belongs to another device".to_owned()));

    // One device may not make the relay keep state for any number of ids.
    let mut refused = None;
    for n in 0..40 {
        let mut p = RawPeer::join_with_storage(&w.relay, &w.tokens["tanaka"], "tanaka-phone", &format!("s{n}")).await;
        if !matches!(p.next().await, raw::Heard::Frame(Message::Peer { .. })) {
            let (code, reason) = p.closed().await;
            refused = Some((n, code, reason));
            break;
        }
    }
    assert_eq!(refused, Some((32, 4001, "too many storage ids for this device".to_owned())));
    w.honest_devices_still_sync("after storage id claims").await;
}
