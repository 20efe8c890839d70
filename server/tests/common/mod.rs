//! Shared by the relay's policy tests: a real `RelayPolicy` over a `DocStore` on `MemoryKv`, the
//! people of the tables, and documents made with core's model functions or raw automerge
//! transactions under chosen actors (what a hostile device can send).
#![allow(dead_code, clippy::unwrap_used)]

use std::sync::Arc;

use automerge::transaction::{CommitOptions, Transactable, Transaction};
use automerge::{ActorId, Automerge, Change, ChangeHash, ObjId, ObjType, ReadDoc, Value};
use liaison_core::id::actor_id_for;
use liaison_core::model::{
    Channel, DeliveryMethod, EngagementPlan, Fulfilment, Interaction, Kind, KolProfile, MedicalInformationRequest,
    MedicalInsight, NewDocument, Record, RecordStatus, RequestOrigin, create_document,
};
use liaison_core::storage::MemoryKv;
use liaison_core::store::{ManualClock, StoreOptions};
use liaison_core::sync::wire::{PeerId, PeerMetadata};
use liaison_core::sync::{Access, ConnId, PeerInfo, Policy, Refusal};
use liaison_core::{DocStore, DocumentId, Identity, Role};
use liaison_server::auth::{Principal, RoleName, SYSTEM_TENANT};
use liaison_server::policy::{PendingOwners, Principals, RelayPolicy};

pub const NOW: i64 = 1_700_000_000_000;
/// The install bytes of every device's first actor; a second install of a device uses others.
pub const INSTALL: [u8; 8] = [1; 8];
pub const KOL: DocumentId = DocumentId::from_bytes([9; 16]);

/// A person of the tables; their device is `{user}-phone`.
#[derive(Debug, Clone, Copy)]
pub struct Who {
    pub tenant: &'static str,
    pub user: &'static str,
    pub role: RoleName,
    pub teams: &'static [&'static str],
}

pub const SATO: Who = Who { tenant: "pharma-a", user: "sato", role: RoleName::Msl, teams: &["east"] };
pub const ITO: Who = Who { tenant: "pharma-a", user: "ito", role: RoleName::Msl, teams: &["east"] };
pub const KATO: Who = Who { tenant: "pharma-a", user: "kato", role: RoleName::Manager, teams: &["east"] };
pub const MORI: Who = Who { tenant: "pharma-a", user: "mori", role: RoleName::MedicalInformation, teams: &["east"] };
pub const ADMIN_A: Who = Who { tenant: "pharma-a", user: "admin-a", role: RoleName::Admin, teams: &[] };
pub const SYSTEM: Who = Who { tenant: SYSTEM_TENANT, user: "root", role: RoleName::Admin, teams: &[] };
pub const WEST_MSL: Who = Who { tenant: "pharma-a", user: "abe", role: RoleName::Msl, teams: &["west"] };
pub const KIM: Who = Who { tenant: "pharma-b", user: "kim", role: RoleName::Msl, teams: &["east"] };

impl Who {
    pub fn device(&self) -> String {
        format!("{}-phone", self.user)
    }

    pub fn principal(&self) -> Principal {
        Principal {
            tenant: self.tenant.into(),
            user: self.user.into(),
            device: self.device(),
            role: self.role,
            teams: self.teams.iter().map(|t| (*t).to_owned()).collect(),
            token_id: format!("{}-token", self.user),
            token_hash: format!("{}-hash", self.user),
            support: Vec::new(),
        }
    }

    /// The device's identity. Its role is `Admin` so the model's own role gates (legal hold)
    /// do not stop a test from making a change the relay must judge; actors ignore the role.
    pub fn identity(&self) -> Identity {
        Identity {
            tenant: self.tenant.into(),
            user: self.user.into(),
            device: self.device(),
            role: Role::Admin,
            install: INSTALL,
        }
    }

    pub fn actor(&self) -> ActorId {
        self.actor_of_install(&INSTALL)
    }

    /// The actor of another install of the same app on the same device (same principal).
    pub fn actor_of_install(&self, install: &[u8; 8]) -> ActorId {
        actor_id_for(self.tenant, self.user, &self.device(), install)
    }
}

/// The relay's policy, store and connections, as `relay::spawn` wires them.
pub struct Relay {
    pub store: Arc<DocStore>,
    pub principals: Principals,
    pub policy: RelayPolicy,
    next_conn: u64,
}

impl Relay {
    pub fn new() -> Self {
        let relay = Identity {
            tenant: SYSTEM_TENANT.into(),
            user: "relay".into(),
            device: "relay".into(),
            role: Role::Admin,
            install: [0; 8],
        };
        let clock = Arc::new(ManualClock::new(NOW));
        let store = DocStore::with_kv(Arc::new(MemoryKv::new()), relay, clock, StoreOptions::default()).unwrap();
        let store = Arc::new(store);
        let principals = Principals::default();
        let policy = RelayPolicy::new(store.clone(), principals.clone(), PendingOwners::default());
        Self { store, principals, policy, next_conn: 1 }
    }

    /// A connection authenticated as `who`.
    pub fn peer(&mut self, who: &Who) -> PeerInfo {
        let peer = self.anonymous(&who.device());
        self.principals.set(peer.conn, who.principal());
        peer
    }

    /// A connection the relay has no principal for.
    pub fn anonymous(&mut self, peer_id: &str) -> PeerInfo {
        let conn = ConnId(self.next_conn);
        self.next_conn += 1;
        PeerInfo { conn, peer_id: PeerId(peer_id.into()), metadata: PeerMetadata::default() }
    }

    /// Stores a document as the relay's store would hold it after a sync; returns its id.
    pub fn stored(&self, doc: &Automerge) -> DocumentId {
        let id = DocumentId::random();
        self.store.merge_remote(&id, &doc.save()).unwrap();
        id
    }

    pub fn access(&mut self, peer: &PeerInfo, doc: &DocumentId) -> Access {
        self.policy.access(peer, doc)
    }

    pub fn validate(&mut self, peer: &PeerInfo, doc: &DocumentId, edit: &Edit) -> Vec<(ChangeHash, Refusal)> {
        self.policy.validate(peer, doc, &edit.before, &edit.after, &edit.changes())
    }
}

/// A document before and after the changes a device sends.
pub struct Edit {
    pub before: Automerge,
    pub after: Automerge,
}

impl Edit {
    /// Changes to `before`, made by `f` on a copy.
    pub fn of(before: &Automerge, f: impl FnOnce(&mut Automerge)) -> Self {
        let mut after = before.clone();
        f(&mut after);
        Self { before: before.clone(), after }
    }

    /// A new document: `before` is empty.
    pub fn creation(after: Automerge) -> Self {
        Self { before: Automerge::new(), after }
    }

    pub fn changes(&self) -> Vec<Change> {
        self.after.get_changes(&self.before.get_heads())
    }
}

/// A whole record of `kind` created by `who` in `team` (one change, as `create_document` makes).
pub fn created(who: &Who, team: &str, kind: Kind) -> Automerge {
    fn make<R: Record>(who: &Who, team: &str, record: &R) -> Automerge {
        let new = NewDocument { team: team.into(), retention_class: "standard".into() };
        create_document(&who.identity(), &new, record, NOW).unwrap()
    }
    match kind {
        Kind::KolProfile => make(who, team, &KolProfile::new("Dr. Lee", "Tokyo University Hospital")),
        Kind::Interaction => make(who, team, &Interaction::new(&KOL, NOW, Channel::InPerson)),
        Kind::MedicalInsight => make(who, team, &MedicalInsight::new("Prefers oral dosing.", &[KOL])),
        Kind::MedicalInformationRequest => make(who, team, &question()),
        Kind::EngagementPlan => make(who, team, &EngagementPlan::new(&KOL, "Plan")),
    }
}

fn question() -> MedicalInformationRequest {
    MedicalInformationRequest {
        kol_id: KOL.to_string(),
        interaction_id: None,
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
    }
}

/// The object at `path` from the root.
pub fn obj(doc: &Automerge, path: &[&str]) -> ObjId {
    let mut at = automerge::ROOT;
    for key in path {
        match doc.get(&at, *key).unwrap() {
            Some((Value::Object(_), id)) => at = id,
            other => panic!("{key} is not an object: {other:?}"),
        }
    }
    at
}

/// One raw change to `doc` under `actor`: exactly what `f` does, nothing recorded for it.
pub fn raw_change(doc: &mut Automerge, actor: &ActorId, f: impl FnOnce(&mut Transaction<'_>, &Automerge)) {
    let snapshot = doc.clone();
    doc.set_actor(actor.clone());
    let mut tx = doc.transaction();
    f(&mut tx, &snapshot);
    tx.commit_with(CommitOptions::default().with_time(NOW));
}

/// An `authors` entry as `record_author` writes it.
pub fn put_author(tx: &mut Transaction<'_>, doc: &Automerge, key: &str, named: Who) {
    let authors = obj(doc, &["authors"]);
    let entry = tx.put_object(&authors, key, ObjType::Map).unwrap();
    tx.put(&entry, "user", named.user).unwrap();
    tx.put(&entry, "device", named.device()).unwrap();
    tx.put(&entry, "install", "0101010101010101").unwrap();
}

/// A new engagement plan whose envelope has only a tenant and a team (a raw transaction: the
/// model always writes a whole envelope).
pub fn plan_with_incomplete_envelope(who: Who) -> Automerge {
    let mut doc = Automerge::new();
    raw_change(&mut doc, &who.actor(), |tx, _| {
        tx.put(automerge::ROOT, "schema", 1_u64).unwrap();
        tx.put(automerge::ROOT, "kind", Kind::EngagementPlan.as_str()).unwrap();
        let envelope = tx.put_object(automerge::ROOT, "envelope", ObjType::Map).unwrap();
        tx.put(&envelope, "tenant", who.tenant).unwrap();
        tx.put(&envelope, "team", "east").unwrap();
        let authors = tx.put_object(automerge::ROOT, "authors", ObjType::Map).unwrap();
        let entry = tx.put_object(&authors, who.actor().to_hex_string(), ObjType::Map).unwrap();
        tx.put(&entry, "user", who.user).unwrap();
        tx.put(&entry, "device", who.device()).unwrap();
        tx.put(&entry, "install", "0101010101010101").unwrap();
        let record = tx.put_object(automerge::ROOT, "record", ObjType::Map).unwrap();
        tx.put(&record, "kol_id", KOL.to_string()).unwrap();
        tx.put(&record, "title", "Plan").unwrap();
    });
    doc
}
