//! Support grants: a tenant's admin lets one system admin read the tenant's records over
//! `/v1/sync` for a while, for a support case. Read only, ended by expiry or revocation (on
//! live connections too: the relay re-checks principals every second), and audited.
//!
//! Every grant, every revocation and every document a system admin opened under a grant goes
//! into the tenant's audit log (`audit`), which the tenant's admins read
//! (`GET /admin/v1/tenants/TENANT/audit`).

use liaison_core::storage::{Batch, KvStore};
use serde::{Deserialize, Serialize};

pub use crate::audit::{AuditAction, AuditEntry};
use crate::audit::{entry_key as audit_key, log, to_json};
use crate::auth::{AuthError, AuthStore, Principal, RoleName, SYSTEM_TENANT};
use crate::keys;

/// The longest a support grant may last: a week.
pub const MAX_SUPPORT_GRANT_SECS: u64 = 7 * 24 * 3600;
/// The longest reason a grant may carry, in bytes.
pub const MAX_REASON_BYTES: usize = 500;

/// A tenant's admin's permission for one system admin to read the tenant's records.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SupportGrant {
    pub id: String,
    pub tenant: String,
    /// The system admin (a user of the `system` tenant) who may read.
    pub user: String,
    pub reason: String,
    /// The tenant's admin who granted it.
    pub granted_by: String,
    pub created_at: i64,
    pub expires_at: i64,
    pub revoked_at: Option<i64>,
    pub revoked_by: Option<String>,
}

impl SupportGrant {
    /// Whether the grant lets its system admin read at `now`.
    pub fn is_active(&self, now: i64) -> bool {
        self.revoked_at.is_none() && now < self.expires_at
    }
}

/// A grant in force for a principal: which tenant it opens, and under which grant (for the audit).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SupportAccess {
    pub tenant: String,
    pub grant: String,
}

impl AuthStore {
    /// `by`, an admin of `tenant`, lets system admin `user` read the tenant's records for
    /// `ttl_secs`. Recorded in the tenant's audit log.
    pub fn add_support_grant(
        &self,
        by: &Principal,
        tenant: &str,
        user: &str,
        ttl_secs: u64,
        reason: &str,
        now: i64,
    ) -> Result<SupportGrant, AuthError> {
        if by.tenant != tenant || by.role != RoleName::Admin || by.is_system_admin() {
            return Err(AuthError::NotAllowed("only the tenant's own admins grant support access"));
        }
        if ttl_secs == 0 {
            return Err(AuthError::InvalidGrant("ttl_secs must be at least 1"));
        }
        if ttl_secs > MAX_SUPPORT_GRANT_SECS {
            return Err(AuthError::TtlTooLong { max_secs: MAX_SUPPORT_GRANT_SECS });
        }
        let reason = reason.trim();
        if reason.is_empty() || reason.len() > MAX_REASON_BYTES {
            return Err(AuthError::InvalidGrant("a support grant needs a reason of 1 to 500 bytes"));
        }
        self.tenant(tenant)?.ok_or(AuthError::NotFound("tenant"))?;
        match self.user(SYSTEM_TENANT, user)? {
            Some(u) if u.role == RoleName::Admin => {}
            _ => return Err(AuthError::NotFound("system admin")),
        }
        let grant = SupportGrant {
            id: format!("sg_{}", random_hex(6)),
            tenant: tenant.into(),
            user: user.into(),
            reason: reason.into(),
            granted_by: by.user.clone(),
            created_at: now,
            expires_at: now.saturating_add(i64::try_from(ttl_secs).unwrap_or(i64::MAX).saturating_mul(1000)),
            revoked_at: None,
            revoked_by: None,
        };
        let mut entry = AuditEntry::new(now, tenant, AuditAction::SupportGrantCreated, by);
        entry.grant = Some(grant.id.clone());
        entry.reason = Some(grant.reason.clone());
        let mut batch = Batch::new();
        batch.put(keys::support_grant(tenant, &grant.id), to_json(&grant)?);
        batch.put(audit_key(tenant, now), to_json(&entry)?);
        self.kv.apply(batch)?;
        self.kv.flush()?;
        log(&entry, Some(&grant.user));
        Ok(grant)
    }

    /// A tenant's support grants, active or not.
    pub fn support_grants(&self, tenant: &str) -> Result<Vec<SupportGrant>, AuthError> {
        self.scan(&keys::support_grants_of(tenant))
    }

    /// Ends a grant now (`by`: an admin of its tenant). Recorded in the tenant's audit log.
    pub fn revoke_support_grant(
        &self,
        by: &Principal,
        tenant: &str,
        id: &str,
        now: i64,
    ) -> Result<SupportGrant, AuthError> {
        if by.tenant != tenant || by.role != RoleName::Admin || by.is_system_admin() {
            return Err(AuthError::NotAllowed("only the tenant's own admins revoke support access"));
        }
        let key = keys::support_grant(tenant, id);
        let mut grant: SupportGrant = self.get(&key)?.ok_or(AuthError::NotFound("support grant"))?;
        if grant.revoked_at.is_some() {
            return Ok(grant);
        }
        // Into the security ledger first: a restored backup must not bring the grant back.
        if let Some(ledger) = &self.ledger {
            ledger.append(
                now,
                crate::ledger::LedgerEvent::SupportGrantRevoked { tenant: tenant.to_owned(), grant: id.to_owned() },
            )?;
        }
        grant.revoked_at = Some(now);
        grant.revoked_by = Some(by.user.clone());
        let mut entry = AuditEntry::new(now, tenant, AuditAction::SupportGrantRevoked, by);
        entry.grant = Some(id.to_owned());
        let mut batch = Batch::new();
        batch.put(key, to_json(&grant)?);
        batch.put(audit_key(tenant, now), to_json(&entry)?);
        self.kv.apply(batch)?;
        self.kv.flush()?;
        log(&entry, Some(&grant.user));
        Ok(grant)
    }

    /// A restore carrying a ledger's grant revocation out again (idempotent).
    pub fn revoke_support_grant_again(&self, tenant: &str, id: &str, at: i64) -> Result<(), AuthError> {
        let key = keys::support_grant(tenant, id);
        let Some(mut grant): Option<SupportGrant> = self.get(&key)? else { return Ok(()) };
        if grant.revoked_at.is_none() {
            grant.revoked_at = Some(at);
            grant.revoked_by = Some("(restore)".into());
            self.kv.put(&key, &to_json(&grant)?)?;
            self.kv.flush()?;
        }
        Ok(())
    }

    /// The grants in force for system admin `user` at `now`.
    pub fn active_support(&self, user: &str, now: i64) -> Result<Vec<SupportAccess>, AuthError> {
        let all: Vec<SupportGrant> = self.scan(keys::SUPPORT_GRANTS)?;
        let mut active: Vec<SupportAccess> = all
            .into_iter()
            .filter(|g| g.user == user && g.is_active(now))
            .map(|g| SupportAccess { tenant: g.tenant, grant: g.id })
            .collect();
        active.sort_by(|a, b| (&a.tenant, &a.grant).cmp(&(&b.tenant, &b.grant)));
        Ok(active)
    }
}

/// Records that system admin `by` opened `document` of `tenant` under `grant`.
pub fn record_document_opened(
    kv: &dyn KvStore,
    by: &Principal,
    access: &SupportAccess,
    document: &str,
    now: i64,
) -> Result<(), AuthError> {
    let mut entry = AuditEntry::new(now, &access.tenant, AuditAction::DocumentOpened, by);
    entry.grant = Some(access.grant.clone());
    entry.document = Some(document.into());
    kv.put(&audit_key(&access.tenant, now), &to_json(&entry)?)?;
    kv.flush()?;
    log(&entry, None);
    Ok(())
}

fn random_hex(bytes: usize) -> String {
    uuid::Uuid::new_v4().as_bytes()[..bytes].iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use liaison_core::storage::MemoryKv;

    use super::*;

    fn store() -> (AuthStore, Principal, Principal) {
        let s = AuthStore::new(Arc::new(MemoryKv::new()));
        s.bootstrap_admin("console", 0).unwrap();
        s.add_tenant("pharma-a", 0).unwrap();
        s.put_user("pharma-a", "admin-a", RoleName::Admin, &[]).unwrap();
        let (_, admin_a) = s.issue_token("pharma-a", "admin-a", "laptop", None, 0).unwrap();
        let (_, system) = s.issue_token(SYSTEM_TENANT, "admin", "support-laptop", None, 0).unwrap();
        (s.clone(), s.authenticate(&admin_a, 1).unwrap(), s.authenticate(&system, 1).unwrap())
    }

    #[test]
    fn only_the_tenants_own_admin_grants_a_system_admin_a_bounded_explained_read() {
        let (s, admin_a, system) = store();
        let grant = |by: &Principal, user: &str, ttl: u64, reason: &str| {
            s.add_support_grant(by, "pharma-a", user, ttl, reason, 10).map(|g| g.id)
        };
        assert!(matches!(grant(&system, "admin", 60, "mine"), Err(AuthError::NotAllowed(_))), "not to itself");
        assert!(matches!(grant(&admin_a, "admin-a", 60, "x"), Err(AuthError::NotFound("system admin"))));
        assert!(matches!(grant(&admin_a, "nobody", 60, "x"), Err(AuthError::NotFound("system admin"))));
        assert!(matches!(grant(&admin_a, "admin", 0, "x"), Err(AuthError::InvalidGrant(_))));
        let e = grant(&admin_a, "admin", MAX_SUPPORT_GRANT_SECS + 1, "x").unwrap_err();
        assert_eq!(e.to_string(), "ttl_secs may be at most 604800 seconds");
        assert!(matches!(grant(&admin_a, "admin", 60, "  "), Err(AuthError::InvalidGrant(_))));
        assert!(matches!(grant(&admin_a, "admin", 60, &"x".repeat(501)), Err(AuthError::InvalidGrant(_))));
        assert!(s.support_grants("pharma-a").unwrap().is_empty());
        assert!(s.audit_log("pharma-a").unwrap().is_empty(), "refusals leave no grant");
    }

    #[test]
    fn a_grant_opens_its_tenant_until_it_expires_or_is_revoked_and_the_log_keeps_each_step() {
        let (s, admin_a, system) = store();
        let first = s.add_support_grant(&admin_a, "pharma-a", "admin", 60, "ticket 1", 1_000).unwrap();
        assert_eq!(first.expires_at, 61_000);
        let access = SupportAccess { tenant: "pharma-a".into(), grant: first.id.clone() };
        assert_eq!(s.active_support("admin", 60_999).unwrap(), std::slice::from_ref(&access));
        assert!(s.active_support("admin", 61_000).unwrap().is_empty(), "expired");
        assert!(s.active_support("someone-else", 2_000).unwrap().is_empty());
        record_document_opened(s.kv.as_ref(), &system, &access, "doc-1", 2_000).unwrap();
        assert!(matches!(s.revoke_support_grant(&system, "pharma-a", &first.id, 3_000), Err(AuthError::NotAllowed(_))));
        assert!(matches!(
            s.revoke_support_grant(&admin_a, "pharma-a", "sg_missing", 3_000),
            Err(AuthError::NotFound(_))
        ));
        let revoked = s.revoke_support_grant(&admin_a, "pharma-a", &first.id, 3_000).unwrap();
        assert_eq!((revoked.revoked_at, revoked.revoked_by.as_deref()), (Some(3_000), Some("admin-a")));
        assert!(s.active_support("admin", 3_000).unwrap().is_empty(), "revoked");

        let log = s.audit_log("pharma-a").unwrap();
        let steps: Vec<_> = log.iter().map(|e| (e.at, e.action, e.by_user.as_str(), e.document.as_deref())).collect();
        assert_eq!(
            steps,
            [
                (1_000, AuditAction::SupportGrantCreated, "admin-a", None),
                (2_000, AuditAction::DocumentOpened, "admin", Some("doc-1")),
                (3_000, AuditAction::SupportGrantRevoked, "admin-a", None),
            ]
        );
        assert_eq!(log[0].reason.as_deref(), Some("ticket 1"));
        assert_eq!(log[1].by_device, "support-laptop");
        assert!(log.iter().all(|e| e.grant.as_deref() == Some(first.id.as_str()) && e.tenant == "pharma-a"));
    }
}
