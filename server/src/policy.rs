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

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use automerge::{Automerge, Change, ChangeHash};
use liaison_core::model::{self, Kind};
use liaison_core::sync::{Access, ConnId, PeerInfo, Policy, Refusal, refuse_changes_to_locked};
use liaison_core::{DocStore, DocumentId};

use crate::auth::{Principal, RoleName};

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

/// What one principal may do with a document owned by (`tenant`, `team`) of `kind`.
pub fn access_for(p: &Principal, tenant: &str, team: &str, kind: Option<Kind>) -> Access {
    if p.tenant != tenant && !p.is_system_admin() {
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

/// Key of an erased document's tombstone: its id is never served or accepted again.
pub fn tombstone_key(doc: &DocumentId) -> Vec<u8> {
    [b"e/".as_slice(), doc.as_bytes()].concat()
}

/// The engine policy of the relay.
#[derive(Debug)]
pub struct RelayPolicy {
    store: Arc<DocStore>,
    principals: Principals,
}

impl RelayPolicy {
    pub fn new(store: Arc<DocStore>, principals: Principals) -> Self {
        Self { store, principals }
    }
}

fn refuse_all(new: &[Change], code: &str, message: &str) -> Vec<(ChangeHash, Refusal)> {
    new.iter().map(|c| (c.hash(), Refusal::new(code, message))).collect()
}

impl Policy for RelayPolicy {
    fn accept_peer(&mut self, peer: &PeerInfo) -> Result<(), String> {
        let Some(p) = self.principals.get(peer.conn) else {
            return Err("not authenticated".into());
        };
        // The peer id a device claims must be its own device id (optionally "/suffix", for
        // several tabs or processes of one device).
        let id = peer.peer_id.as_str();
        if id == p.device || id.strip_prefix(p.device.as_str()).is_some_and(|rest| rest.starts_with('/')) {
            Ok(())
        } else {
            Err("peer id does not match the credential's device".into())
        }
    }

    fn erased(&mut self, doc: &DocumentId) -> bool {
        self.store.kv().get(&tombstone_key(doc)).is_ok_and(|t| t.is_some())
    }

    fn access(&mut self, peer: &PeerInfo, doc: &DocumentId) -> Access {
        let Some(p) = self.principals.get(peer.conn) else { return Access::None };
        match self.store.owner_of(doc) {
            Ok(Some((tenant, team, kind))) => access_for(&p, &tenant, &team, kind),
            // Not stored (or not a liaison record): a writer may create it; validate() checks
            // what arrives. Read-only roles cannot create.
            Ok(None) => match p.role {
                RoleName::Msl | RoleName::Manager | RoleName::Admin | RoleName::MedicalInformation => Access::ReadWrite,
            },
            Err(e) => {
                tracing::warn!(document = %doc, error = %e, "cannot read document owner; refusing access");
                Access::None
            }
        }
    }

    fn validate(
        &mut self,
        peer: &PeerInfo,
        _doc: &DocumentId,
        before: &Automerge,
        after: &Automerge,
        new: &[Change],
    ) -> Vec<(ChangeHash, Refusal)> {
        let Some(p) = self.principals.get(peer.conn) else {
            return refuse_all(new, "unauthenticated", "not authenticated");
        };
        let locked = refuse_changes_to_locked(before, new);
        if !locked.is_empty() {
            return locked;
        }
        let Ok((tenant, team)) = model::read_owner(after) else {
            return refuse_all(new, "not-a-record", "the relay stores liaison records only");
        };
        match model::read_owner(before) {
            Ok(old) if old.0 != tenant || old.1 != team => {
                return refuse_all(new, "owner-change", "a document cannot move to another tenant or team");
            }
            Ok(_) => {}
            Err(_) => {
                let kind = model::document_kind(after).ok();
                if access_for(&p, &tenant, &team, kind) != Access::ReadWrite {
                    return refuse_all(new, "forbidden", "you may not create documents for that tenant or team");
                }
            }
        }
        Vec::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn principal(role: RoleName, tenant: &str, teams: &[&str]) -> Principal {
        Principal {
            tenant: tenant.into(),
            user: "u".into(),
            device: "d".into(),
            role,
            teams: teams.iter().map(|t| (*t).to_owned()).collect(),
            token_id: "tok".into(),
            token_hash: "h".into(),
        }
    }

    #[test]
    fn roles_and_teams_decide_access() {
        let msl = principal(RoleName::Msl, "a", &["east"]);
        assert_eq!(access_for(&msl, "a", "east", Some(Kind::Interaction)), Access::ReadWrite);
        assert_eq!(access_for(&msl, "a", "west", Some(Kind::Interaction)), Access::None);
        assert_eq!(access_for(&msl, "b", "east", Some(Kind::Interaction)), Access::None, "another tenant");
        let mgr = principal(RoleName::Manager, "a", &["east"]);
        assert_eq!(access_for(&mgr, "a", "east", Some(Kind::Interaction)), Access::Read);
        assert_eq!(access_for(&mgr, "a", "east", Some(Kind::EngagementPlan)), Access::ReadWrite);
        let mi = principal(RoleName::MedicalInformation, "a", &[]);
        assert_eq!(access_for(&mi, "a", "east", Some(Kind::MedicalInformationRequest)), Access::ReadWrite);
        assert_eq!(access_for(&mi, "a", "east", Some(Kind::KolProfile)), Access::None);
        let admin = principal(RoleName::Admin, "a", &[]);
        assert_eq!(access_for(&admin, "a", "any", None), Access::ReadWrite);
        assert_eq!(access_for(&admin, "b", "any", None), Access::None, "a tenant admin stays in its tenant");
    }
}
