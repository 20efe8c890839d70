//! The relay's access policy, plugged into the sync engine.
//!
//! - A document belongs to the tenant and team in its envelope. Other tenants, and teams the
//!   user is not in, get `None`: the engine answers "unavailable", as for a missing document.
//! - MSLs read and write their teams' documents; managers read them and may edit engagement
//!   plans; medical-information staff read and write medical information requests of their
//!   tenant; tenant admins read and write their tenant's documents.
//! - A new document may be created by a writer only if its envelope names the writer's tenant
//!   and one of the writer's teams; no change may move a document to another tenant or team;
//!   a submitted record refuses every change.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use automerge::{Automerge, Change, ChangeHash};
use liaison_core::model::{self, EditViolation, Kind, RemoteWriter};
use liaison_core::sync::catalog::{Scope, ScopeRule};
use liaison_core::sync::{Access, ConnId, PeerInfo, Policy, Refusal};
use liaison_core::{DocStore, DocumentId};

use crate::auth::{Principal, RoleName};
use crate::support::{self, SupportAccess};

mod cache;
mod tombstone;
pub use cache::{PolicyCache, Tombstone, TombstoneOwner};
use tombstone::tombstone_owner;
pub use tombstone::{encode_tombstone, erased_owner, tombstone_key};

/// Connections' principals, shared between the relay's actor and the engine's policy.
#[derive(Debug, Default, Clone)]
pub struct Principals(Arc<Mutex<HashMap<ConnId, Principal>>>);

impl Principals {
    pub fn set(&self, conn: ConnId, p: Principal) {
        self.lock().insert(conn, p);
    }
    pub fn remove(&self, conn: ConnId) {
        self.lock().remove(&conn);
    }
    pub fn get(&self, conn: ConnId) -> Option<Principal> {
        self.lock().get(&conn).cloned()
    }
    pub fn all(&self) -> Vec<(ConnId, Principal)> {
        self.lock().iter().map(|(c, p)| (*c, p.clone())).collect()
    }
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<ConnId, Principal>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Owners of documents accepted as new but not yet committed by the group commit. Until the
/// store's meta names the owner, access is decided from here: without it, a peer of another
/// tenant asking for the id in that window would be answered as for a document nobody owns.
#[derive(Debug, Default, Clone)]
pub struct PendingOwners(Arc<Mutex<HashMap<DocumentId, Owner>>>);

/// A document's owner as the policy needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Owner {
    pub tenant: String,
    pub team: String,
    pub kind: Option<Kind>,
}

impl From<(String, String, Option<Kind>)> for Owner {
    /// What `DocStore::owner_of` reads.
    fn from((tenant, team, kind): (String, String, Option<Kind>)) -> Self {
        Self { tenant, team, kind }
    }
}

impl PendingOwners {
    fn set(&self, doc: DocumentId, owner: Owner) {
        self.lock().insert(doc, owner);
    }
    fn get(&self, doc: &DocumentId) -> Option<Owner> {
        self.lock().get(doc).cloned()
    }
    /// The store now knows the owner (the write committed) or the document is gone.
    pub fn forget(&self, doc: &DocumentId) {
        self.lock().remove(doc);
    }
    /// New documents of `tenant` not yet committed (a purge holds their writes too).
    pub fn of_tenant(&self, tenant: &str) -> Vec<DocumentId> {
        self.lock().iter().filter(|(_, o)| o.tenant == tenant).map(|(d, _)| *d).collect()
    }
    pub fn len(&self) -> usize {
        self.lock().len()
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<DocumentId, Owner>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// What one principal may do with a document owned by (`tenant`, `team`) of `kind`.
///
/// System admins administer the relay; they read a tenant's records only while that tenant's
/// admins grant them support access (`support`), and never write them.
pub fn access_for(p: &Principal, tenant: &str, team: &str, kind: Option<Kind>) -> Access {
    if p.is_system_admin() {
        return if support_grant_for(p, tenant).is_some() { Access::Read } else { Access::None };
    }
    if p.tenant != tenant {
        return Access::None;
    }
    let in_team = p.teams.iter().any(|t| t == team);
    match p.role {
        RoleName::Admin => Access::ReadWrite,
        RoleName::Msl if in_team => Access::ReadWrite,
        RoleName::Manager if in_team => {
            if kind == Some(Kind::EngagementPlan) {
                Access::ReadWrite
            } else {
                Access::Read
            }
        }
        RoleName::MedicalInformation if kind == Some(Kind::MedicalInformationRequest) => Access::ReadWrite,
        _ => Access::None,
    }
}

/// Everything `p` may read, as catalog rules: exactly the (tenant, team, kind) triples
/// [`access_for`] answers with more than `None` (`readable_scope_matches_access_for` checks it).
/// A system admin's are the tenants it holds a support grant for (its catalog lists nothing,
/// see `relay::catalog`; the scope only tells its devices what to drop when a grant ends).
pub fn readable_scope(p: &Principal) -> Scope {
    if p.is_system_admin() {
        return Scope::new(
            p.support.iter().map(|s| ScopeRule { tenant: s.tenant.clone(), team: None, kind: None }).collect(),
        );
    }
    let tenant = || p.tenant.clone();
    let rules = match p.role {
        RoleName::Admin => vec![ScopeRule { tenant: tenant(), team: None, kind: None }],
        RoleName::Msl | RoleName::Manager => {
            p.teams.iter().map(|t| ScopeRule { tenant: tenant(), team: Some(t.clone()), kind: None }).collect()
        }
        RoleName::MedicalInformation => {
            vec![ScopeRule { tenant: tenant(), team: None, kind: Some(Kind::MedicalInformationRequest) }]
        }
    };
    Scope::new(rules)
}

/// The support grant under which a system admin may read `tenant`'s records, if any.
pub fn support_grant_for<'a>(p: &'a Principal, tenant: &str) -> Option<&'a SupportAccess> {
    p.support.iter().find(|s| s.tenant == tenant)
}

/// The engine policy of the relay.
#[derive(Debug)]
pub struct RelayPolicy {
    store: Arc<DocStore>,
    principals: Principals,
    pending: PendingOwners,
    /// What the store said of owners and tombstones (see `cache`).
    cache: PolicyCache,
    /// The document whose last answer was a "no" because the store could not be read
    /// (`Policy::cannot_tell`).
    could_not_tell: std::cell::Cell<Option<DocumentId>>,
    /// Per connection of a system admin: the (grant, document) pairs already in the audit log.
    audited: HashMap<ConnId, HashSet<(String, DocumentId)>>,
}

impl RelayPolicy {
    /// A policy that reads the store for every answer (for a store others may change behind
    /// its back, as tests and tools do).
    pub fn new(store: Arc<DocStore>, principals: Principals, pending: PendingOwners) -> Self {
        Self::with_cache(store, principals, pending, PolicyCache::new(0))
    }

    /// A policy that remembers owners and tombstones in `cache`, which its owner must tell of
    /// erasures and changes elsewhere (the relay's actor does: see `relay::cluster`).
    pub fn with_cache(
        store: Arc<DocStore>,
        principals: Principals,
        pending: PendingOwners,
        cache: PolicyCache,
    ) -> Self {
        Self { store, principals, pending, cache, could_not_tell: std::cell::Cell::new(None), audited: HashMap::new() }
    }

    /// Whether `doc` was erased: its tombstone, remembered or read. `Err` when the store cannot
    /// tell (callers fail closed).
    fn tombstone(&self, doc: &DocumentId) -> Result<Tombstone, liaison_core::storage::StorageError> {
        let store = &self.store;
        self.cache.tombstone(doc, || store.kv().get(&tombstone_key(doc)).map(|v| v.map(|v| tombstone_owner(&v))))
    }

    /// Records in the tenant's audit log that system admin `p` opens `doc` under its support
    /// grant (once per connection, grant and document). `false` if it cannot be recorded:
    /// access is then refused, never given unaudited.
    fn audit_opened(&mut self, conn: ConnId, p: &Principal, tenant: &str, doc: &DocumentId) -> bool {
        let Some(grant) = support_grant_for(p, tenant) else { return false };
        let key = (grant.grant.clone(), *doc);
        if self.audited.get(&conn).is_some_and(|opened| opened.contains(&key)) {
            return true;
        }
        if !self.audited.contains_key(&conn) {
            // A new connection: forget those that closed.
            let principals = &self.principals;
            self.audited.retain(|c, _| principals.get(*c).is_some());
        }
        let kv = self.store.kv().as_ref();
        match support::record_document_opened(kv, p, grant, &doc.to_string(), crate::now_ms()) {
            Ok(()) => {
                self.audited.entry(conn).or_default().insert(key);
                true
            }
            Err(e) => {
                tracing::error!(document = %doc, error = %e, "cannot audit a support read; refusing access");
                false
            }
        }
    }

    /// The document's owner: the store's meta once committed, else a creation accepted and not
    /// yet committed. `Err` when the document is stored but names no owner, or the store
    /// cannot tell: access then fails closed.
    fn owner(&self, doc: &DocumentId) -> Result<Option<Owner>, ()> {
        let stored =
            self.cache.owner(doc, || Ok::<_, liaison_core::StoreError>(self.store.owner_of(doc)?.map(Owner::from)));
        match stored {
            Ok(Some(owner)) => Ok(Some(owner)),
            Ok(None) => match self.pending.get(doc) {
                Some(owner) => Ok(Some(owner)),
                None => match self.store.chunk_count(doc) {
                    Err(liaison_core::StoreError::NotFound(_)) => Ok(None),
                    Ok(_) => {
                        tracing::warn!(document = %doc, "stored document names no owner; refusing access");
                        Err(())
                    }
                    Err(e) => {
                        tracing::warn!(document = %doc, error = %e, "cannot read document meta; refusing access");
                        self.could_not_tell.set(Some(*doc));
                        Err(())
                    }
                },
            },
            Err(e) => {
                tracing::warn!(document = %doc, error = %e, "cannot read document owner; refusing access");
                self.could_not_tell.set(Some(*doc));
                Err(())
            }
        }
    }
}

/// Why a peer was rejected at the handshake when its peer id is not its credential's device.
pub const REJECT_PEER_ID: &str = "peer id does not match the credential's device";

/// The storage id the engine keeps sync state for (it ignores ephemeral peers, empty ids and
/// ids over 128 bytes).
fn persisted_storage_id(m: &liaison_core::sync::wire::PeerMetadata) -> Option<&str> {
    let s = m.storage_id.as_ref()?.as_str();
    (!m.is_ephemeral && !s.is_empty() && s.len() <= 128).then_some(s)
}

/// The close reason for a handshake the policy rejected (a fixed set, for metrics).
pub fn rejection_text(reason: &str) -> &'static str {
    use crate::storage_ids::StorageIdError;
    match reason {
        REJECT_PEER_ID => "peer id does not match the credential",
        r if r == StorageIdError::Taken.to_string() => "storage id belongs to another device",
        r if r == StorageIdError::TooMany.to_string() => "too many storage ids for this device",
        _ => "peer rejected",
    }
}

fn refuse_all(new: &[Change], code: &str, message: &str) -> Vec<(ChangeHash, Refusal)> {
    new.iter().map(|c| (c.hash(), Refusal::new(code, message))).collect()
}

fn violation(new: &[Change], v: EditViolation) -> Vec<(ChangeHash, Refusal)> {
    refuse_all(new, v.code(), &v.to_string())
}

impl Policy for RelayPolicy {
    fn accept_peer(&mut self, peer: &PeerInfo) -> Result<(), String> {
        let Some(p) = self.principals.get(peer.conn) else {
            return Err("not authenticated".into());
        };
        // The peer id a device claims must be its own device id (optionally "/suffix", for
        // several tabs or processes of one device).
        let id = peer.peer_id.as_str();
        if id != p.device && !id.strip_prefix(p.device.as_str()).is_some_and(|rest| rest.starts_with('/')) {
            return Err(REJECT_PEER_ID.into());
        }
        // A storage id the relay will keep sync state for is bound to the device presenting it.
        if let Some(storage) = persisted_storage_id(&peer.metadata) {
            crate::storage_ids::claim(self.store.kv().as_ref(), &p, storage).map_err(|e| e.to_string())?;
        }
        Ok(())
    }

    fn erased(&mut self, doc: &DocumentId) -> bool {
        // A store that cannot answer counts as erased: nothing is served or accepted.
        self.could_not_tell.set(None);
        match self.tombstone(doc) {
            Ok(t) => t != Tombstone::NotErased,
            Err(_) => {
                self.could_not_tell.set(Some(*doc));
                true
            }
        }
    }

    fn cannot_tell(&mut self, doc: &DocumentId) -> bool {
        self.could_not_tell.take() == Some(*doc)
    }

    fn may_know_erased(&mut self, peer: &PeerInfo, doc: &DocumentId) -> bool {
        let Some(p) = self.principals.get(peer.conn) else { return false };
        let Ok(Tombstone::Erased(Some((tenant, team)))) = self.tombstone(doc) else { return false };
        access_for(&p, &tenant, &team, None) != Access::None
    }

    /// Presence must name the sender's own user and device (a device cannot show a colleague
    /// as present); other ephemeral data passes as before.
    fn accept_ephemeral(&mut self, peer: &PeerInfo, _doc: &DocumentId, data: &[u8]) -> bool {
        if !liaison_core::sync::presence::is_presence(data) {
            return true;
        }
        let Some(p) = self.principals.get(peer.conn) else { return false };
        liaison_core::sync::presence::decode(data).is_some_and(|pr| pr.user == p.user && pr.device == p.device)
    }

    fn access(&mut self, peer: &PeerInfo, doc: &DocumentId) -> Access {
        self.could_not_tell.set(None);
        let Some(p) = self.principals.get(peer.conn) else { return Access::None };
        match self.owner(doc) {
            Ok(Some(o)) => match access_for(&p, &o.tenant, &o.team, o.kind) {
                Access::None => Access::None,
                // A system admin under a support grant: audited before anything is served.
                _ if p.is_system_admin() && !self.audit_opened(peer.conn, &p, &o.tenant, doc) => Access::None,
                access => access,
            },
            // Not stored: a writer may create it, and validate() checks what arrives. Access
            // here lets the engine take the creating message; reading is moot (nothing exists).
            Ok(None) if p.is_system_admin() => Access::None,
            Ok(None) => Access::ReadWrite,
            Err(()) => Access::None,
        }
    }

    fn validate(
        &mut self,
        peer: &PeerInfo,
        doc: &DocumentId,
        before: &Automerge,
        after: &Automerge,
        new: &[Change],
    ) -> Vec<(ChangeHash, Refusal)> {
        let Some(p) = self.principals.get(peer.conn) else {
            return refuse_all(new, "unauthenticated", "not authenticated");
        };
        if let Err(v) = model::check_locked_edit(before, after) {
            return violation(new, v);
        }
        let writer = RemoteWriter { tenant: &p.tenant, user: &p.user, device: &p.device, role: p.role.into() };
        let foreign = model::foreign_actor_changes(new, &writer);
        if !foreign.is_empty() {
            let v = EditViolation::ForeignActor;
            return foreign.into_iter().map(|h| (h, Refusal::new(v.code(), &v.to_string()))).collect();
        }
        if before.get_heads().is_empty() {
            let kind = match model::check_creation(after, &writer) {
                Ok(kind) => kind,
                Err(v) => return violation(new, v),
            };
            let Ok((tenant, team)) = model::read_owner(after) else {
                return violation(new, EditViolation::NotARecord);
            };
            if access_for(&p, &tenant, &team, Some(kind)) != Access::ReadWrite {
                return refuse_all(new, "forbidden", "you may not create documents for that tenant or team");
            }
            self.pending.set(*doc, Owner { tenant, team, kind: Some(kind) });
        } else if let Err(v) = model::check_update(before, after, &writer) {
            return violation(new, v);
        }
        Vec::new()
    }
}

#[cfg(test)]
mod tests;
