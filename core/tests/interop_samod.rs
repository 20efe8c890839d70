//! Interop with samod 0.16 (the Rust automerge-repo), in-process over channels, both ways round:
//! our engine serving a samod client, and a samod repo serving our client. Documents created on
//! either side reach the other, and edits flow both ways.
#![allow(clippy::unwrap_used)]

mod common;

use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use automerge::transaction::Transactable;
use automerge::{Automerge, ReadDoc, ScalarValue, Value};
use futures::channel::mpsc;
use futures::{StreamExt, future::BoxFuture};
use liaison_core::model::*;
use liaison_core::storage::MemoryKv;
use liaison_core::store::{ManualClock, StoreOptions};
use liaison_core::sync::engine::{CloseReason, Event};
use liaison_core::sync::testing::{Driver, Storage};
use liaison_core::sync::wire::StorageId;
use liaison_core::sync::{ConnId, Engine, EngineConfig, Input, OpenPolicy, Output, Side};
use liaison_core::{DocStore, DocumentId, Role};
use tokio::sync::watch;

const WAIT: Duration = Duration::from_secs(20);
const CONN: ConnId = ConnId(1);

/// Our engine and store, driven by frames from samod; every handled input bumps `version`.
struct Ours {
    d: Driver,
    to_samod: mpsc::UnboundedSender<Vec<u8>>,
    events: Vec<Event>,
    closed: Option<CloseReason>,
}

#[derive(Clone)]
struct Shared {
    ours: Arc<Mutex<Ours>>,
    version: Arc<watch::Sender<u64>>,
}

impl Shared {
    fn new(name: &str, announce: bool, to_samod: mpsc::UnboundedSender<Vec<u8>>) -> Self {
        let mut config = EngineConfig::new(name);
        config.storage_id = Some(StorageId(format!("{name}-storage")));
        config.announce = announce;
        let engine = Engine::new(config, Box::new(OpenPolicy), format!("{name}-session"));
        let store = DocStore::with_kv(
            Arc::new(MemoryKv::new()),
            common::identity(name, "dev", Role::Msl),
            Arc::new(ManualClock::new(1_700_000_000_000)),
            StoreOptions::default(),
        )
        .unwrap();
        let ours =
            Ours { d: Driver::new(engine, store, Storage::Immediate), to_samod, events: Vec::new(), closed: None };
        Self { ours: Arc::new(Mutex::new(ours)), version: Arc::new(watch::channel(0).0) }
    }

    fn handle(&self, input: Input) {
        {
            let mut o = self.ours.lock().unwrap();
            o.handle(input);
        }
        self.version.send_modify(|v| *v += 1);
    }

    /// Feeds samod's frames to the engine until samod closes the channel.
    fn pump(&self, mut from_samod: mpsc::UnboundedReceiver<Vec<u8>>) {
        let me = self.clone();
        tokio::spawn(async move {
            while let Some(frame) = from_samod.next().await {
                me.handle(Input::Frame { conn: CONN, frame });
            }
            me.handle(Input::Disconnected { conn: CONN });
        });
    }

    async fn wait_until(&self, what: &str, cond: impl Fn(&Ours) -> bool) {
        let mut rx = self.version.subscribe();
        let result = tokio::time::timeout(WAIT, async {
            loop {
                if cond(&self.ours.lock().unwrap()) {
                    return;
                }
                if rx.changed().await.is_err() {
                    return;
                }
            }
        })
        .await;
        let o = self.ours.lock().unwrap();
        assert!(result.is_ok() && cond(&o), "timed out waiting until {what}; closed: {:?}", o.closed);
    }
}

impl Ours {
    fn handle(&mut self, input: Input) {
        for out in self.d.handle(input) {
            match out {
                Output::Send { frame, .. } => {
                    let _ = self.to_samod.unbounded_send(frame);
                }
                Output::Close { reason, .. } => {
                    self.closed = Some(reason);
                    self.to_samod.close_channel();
                }
                Output::Storage { .. } => unreachable!("the driver runs storage tasks"),
                Output::Event(e) => self.events.push(e),
            }
        }
    }

    fn text(&self, id: &DocumentId, key: &str) -> Option<String> {
        let doc = self.d.store.load(id).ok()?;
        scalar_str(&doc, key)
    }
}

fn scalar_str(doc: &Automerge, key: &str) -> Option<String> {
    match doc.get(automerge::ROOT, key).ok()?? {
        (Value::Scalar(s), _) => match s.as_ref() {
            ScalarValue::Str(v) => Some(v.to_string()),
            _ => None,
        },
        _ => None,
    }
}

struct OneShot(Mutex<Option<samod::Transport>>);

impl samod::Dialer for OneShot {
    type Error = std::io::Error;
    fn url(&self) -> url::Url {
        url::Url::parse("test://liaison-engine").unwrap()
    }
    fn connect(&self) -> BoxFuture<'static, Result<samod::Transport, samod::DialError<std::io::Error>>> {
        let t = self.0.lock().unwrap().take();
        Box::pin(async move { t.ok_or_else(|| samod::DialError::PermanentFailure(std::io::Error::other("used once"))) })
    }
}

async fn samod_repo(name: &str) -> samod::Repo {
    samod::Repo::build_tokio()
        .with_peer_id(samod::PeerId::from(name))
        .with_storage(samod::storage::InMemoryStorage::new())
        .load()
        .await
}

fn samod_id(id: &DocumentId) -> samod::DocumentId {
    id.to_string().parse().unwrap()
}

fn our_id(h: &samod::DocHandle) -> DocumentId {
    h.document_id().to_string().parse().unwrap()
}

fn put(doc: &mut Automerge, key: &str, value: &str) {
    doc.transact::<_, _, automerge::AutomergeError>(|tx| {
        tx.put(automerge::ROOT, key, value)?;
        Ok(())
    })
    .unwrap();
}

/// Waits until samod's copy of a document satisfies `cond`.
async fn samod_until(h: &samod::DocHandle, what: &str, cond: impl Fn(&Automerge) -> bool) {
    let mut changes = h.changes();
    let ok = tokio::time::timeout(WAIT, async {
        loop {
            if h.with_document(|d| cond(d)) {
                return;
            }
            if changes.next().await.is_none() {
                return;
            }
        }
    })
    .await;
    assert!(ok.is_ok() && h.with_document(|d| cond(d)), "timed out waiting until samod sees {what}");
}

fn plan_on(ours: &Shared, notes: &str) -> DocumentId {
    let kol = DocumentId::from_bytes([1; 16]);
    let plan = EngagementPlan { notes: notes.into(), ..EngagementPlan::new(&kol, "interop plan") };
    let id = ours.ours.lock().unwrap().d.store.create("team", &plan).unwrap();
    ours.handle(Input::Announce { doc: id });
    id
}

async fn exercise(ours: &Shared, repo: &samod::Repo) {
    // A document samod creates reaches us...
    let mut doc = Automerge::new();
    put(&mut doc, "title", "from samod");
    let h = repo.create(doc).await.unwrap();
    let id = our_id(&h);
    ours.handle(Input::Find { doc: id });
    ours.wait_until("the samod document arrives", |o| o.text(&id, "title").as_deref() == Some("from samod")).await;

    // ...our edit reaches samod...
    ours.ours.lock().unwrap().d.store.edit_raw(&id, |tx| tx.put(automerge::ROOT, "reply", "from liaison")).unwrap();
    let changes = {
        let o = ours.ours.lock().unwrap();
        o.d.store.export(&id).unwrap()
    };
    ours.handle(Input::LocalChanges { doc: id, changes });
    samod_until(&h, "our reply", |d| scalar_str(d, "reply").as_deref() == Some("from liaison")).await;

    // ...and samod's next edit reaches us.
    h.with_document(|d| put(d, "title", "edited in samod"));
    ours.wait_until("samod's edit arrives", |o| o.text(&id, "title").as_deref() == Some("edited in samod")).await;

    // A liaison record we create reaches samod, typed content intact.
    let plan = plan_on(ours, "Ask about the phase III subgroup.");
    let found = tokio::time::timeout(WAIT, repo.find(samod_id(&plan))).await.expect("samod find timed out").unwrap();
    let ph = found.expect("samod found our plan");
    samod_until(&ph, "our plan", |d| read_record::<EngagementPlan>(d).is_ok()).await;
    let p: EngagementPlan = ph.with_document(|d| read_record(d)).unwrap();
    assert_eq!(p.notes.as_str(), "Ask about the phase III subgroup.");
    assert_eq!(p.title, "interop plan");

    assert!(ours.ours.lock().unwrap().closed.is_none(), "the connection stayed up");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn our_engine_serves_a_samod_client() {
    let repo = samod_repo("samod-client").await;
    let (to_samod, samod_rx) = mpsc::unbounded::<Vec<u8>>();
    let (samod_tx, from_samod) = mpsc::unbounded::<Vec<u8>>();
    let ours = Shared::new("liaison-relay", false, to_samod);
    ours.handle(Input::Connected { conn: CONN, side: Side::Receiver });
    ours.pump(from_samod);
    let transport = samod::Transport::new(samod_rx.map(Ok::<_, Infallible>), samod_tx);
    let dialer = repo.dial(samod::BackoffConfig::default(), Arc::new(OneShot(Mutex::new(Some(transport))))).unwrap();
    let info = tokio::time::timeout(WAIT, dialer.established()).await.expect("handshake timed out").unwrap();
    assert_eq!(info.peer_id.to_string(), "liaison-relay");
    exercise(&ours, &repo).await;
    repo.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_samod_repo_serves_our_client() {
    let repo = samod_repo("samod-server").await;
    let (to_samod, samod_rx) = mpsc::unbounded::<Vec<u8>>();
    let (samod_tx, from_samod) = mpsc::unbounded::<Vec<u8>>();
    let ours = Shared::new("liaison-device", true, to_samod);
    let acceptor = repo.make_acceptor(url::Url::parse("test://samod").unwrap()).unwrap();
    let conn = acceptor.accept(samod::Transport::new(samod_rx.map(Ok::<_, Infallible>), samod_tx)).unwrap();
    ours.pump(from_samod);
    ours.handle(Input::Connected { conn: CONN, side: Side::Initiator });
    let info = tokio::time::timeout(WAIT, conn.handshake_complete()).await.expect("handshake timed out").unwrap();
    assert_eq!(info.peer_id.to_string(), "liaison-device");
    ours.wait_until("samod answers the join", |o| o.events.iter().any(|e| matches!(e, Event::PeerReady { .. }))).await;
    exercise(&ours, &repo).await;
    repo.stop().await;
}
