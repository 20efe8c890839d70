//! The audit log, kept per tenant under `a/audit/TENANT/` and append-only (entries are only
//! ever put under new keys; nothing in the relay rewrites or deletes one): every admin API
//! request (who, what, when, from which address, with what outcome), every device enrolment
//! through an identity provider, and the support trail of `support` (grants, revocations,
//! documents a system admin opened under a grant). A tenant's admins read their tenant's log
//! (`GET /admin/v1/tenants/TENANT/audit`); the system admins read the `system` tenant's, where
//! requests that concern no one tenant go. Each entry is also logged (target `liaison::audit`).
//!
//! No entry holds a secret: a request is its method and path (never its query or body, and
//! admin credentials travel in headers only), an enrolment names the credential's id, never the
//! credential or the IdP's token.

use std::net::IpAddr;

use liaison_core::storage::KvStore;
use serde::{Deserialize, Serialize};

use crate::auth::{AuthError, AuthStore, Principal};
use crate::keys;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AuditAction {
    SupportGrantCreated,
    SupportGrantRevoked,
    /// A system admin opened one of the tenant's documents under a grant.
    DocumentOpened,
    /// A request to the admin API, answered (`request`, `status`, `outcome`).
    AdminRequest,
    /// A device enrolled with an identity provider's token (`token_id`: the credential's id).
    DeviceEnrolled,
    /// An enrolment refused after the token was verified (`reason`: the refusal code).
    EnrolmentRefused,
}

impl AuditAction {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::SupportGrantCreated => "support-grant-created",
            Self::SupportGrantRevoked => "support-grant-revoked",
            Self::DocumentOpened => "document-opened",
            Self::AdminRequest => "admin-request",
            Self::DeviceEnrolled => "device-enrolled",
            Self::EnrolmentRefused => "enrolment-refused",
        }
    }
}

/// One line of a tenant's audit log. Fields an action does not use are absent (or null, for
/// the support trail's fields, as they always were).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEntry {
    pub at: i64,
    pub tenant: String,
    pub action: AuditAction,
    /// The support grant, for the support trail.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grant: Option<String>,
    /// Who acted: an admin, the system admin reading under a grant, the user enrolling.
    pub by_tenant: String,
    pub by_user: String,
    pub by_device: String,
    pub document: Option<String>,
    /// A support grant's reason; an enrolment's refusal code.
    pub reason: Option<String>,
    /// The address the request came from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    /// An admin request: `METHOD /path` (never the query).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request: Option<String>,
    /// The HTTP status the request was answered with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    /// `success`, `refused` (4xx) or `failed` (5xx).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome: Option<String>,
    /// The id (never the secret) of the credential an enrolment issued.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_id: Option<String>,
}

impl AuditEntry {
    pub(crate) fn new(at: i64, tenant: &str, action: AuditAction, by: &Principal) -> Self {
        Self {
            at,
            tenant: tenant.into(),
            action,
            grant: None,
            by_tenant: by.tenant.clone(),
            by_user: by.user.clone(),
            by_device: by.device.clone(),
            document: None,
            reason: None,
            from: None,
            request: None,
            status: None,
            outcome: None,
            token_id: None,
        }
    }
}

/// The outcome an HTTP status stands for.
pub fn outcome_of(status: u16) -> &'static str {
    match status {
        200..=399 => "success",
        400..=499 => "refused",
        _ => "failed",
    }
}

/// Appends an answered admin request to `tenant`'s log.
pub fn record_admin_request(
    kv: &dyn KvStore,
    tenant: &str,
    by: &Principal,
    from: Option<IpAddr>,
    request: String,
    status: u16,
    now: i64,
) -> Result<(), AuthError> {
    let mut entry = AuditEntry::new(now, tenant, AuditAction::AdminRequest, by);
    entry.from = from.map(|ip| ip.to_string());
    entry.request = Some(request);
    entry.status = Some(status);
    entry.outcome = Some(outcome_of(status).into());
    append(kv, &entry)
}

/// What an enrolment came to, for the log.
#[derive(Debug, Clone, Copy)]
pub enum EnrolmentOutcome<'a> {
    Enrolled { token_id: &'a str },
    Refused { reason: &'static str },
}

/// Appends an enrolment of `device` by `tenant`'s `user` (as the verified token named them).
pub fn record_enrolment(
    kv: &dyn KvStore,
    tenant: &str,
    user: &str,
    device: &str,
    from: Option<IpAddr>,
    outcome: EnrolmentOutcome<'_>,
    now: i64,
) -> Result<(), AuthError> {
    let (action, status) = match outcome {
        EnrolmentOutcome::Enrolled { .. } => (AuditAction::DeviceEnrolled, "success"),
        EnrolmentOutcome::Refused { .. } => (AuditAction::EnrolmentRefused, "refused"),
    };
    let mut entry = AuditEntry {
        at: now,
        tenant: tenant.into(),
        action,
        grant: None,
        by_tenant: tenant.into(),
        by_user: user.into(),
        by_device: device.into(),
        document: None,
        reason: None,
        from: from.map(|ip| ip.to_string()),
        request: None,
        status: None,
        outcome: Some(status.into()),
        token_id: None,
    };
    match outcome {
        EnrolmentOutcome::Enrolled { token_id } => entry.token_id = Some(token_id.into()),
        EnrolmentOutcome::Refused { reason } => entry.reason = Some(reason.into()),
    }
    append(kv, &entry)
}

/// Puts `entry` under a new key of its tenant's log, durably, and logs it.
pub(crate) fn append(kv: &dyn KvStore, entry: &AuditEntry) -> Result<(), AuthError> {
    kv.put(&entry_key(&entry.tenant, entry.at), &to_json(entry)?)?;
    kv.flush()?;
    log(entry, None);
    Ok(())
}

impl AuthStore {
    /// A tenant's audit log, oldest first.
    pub fn audit_log(&self, tenant: &str) -> Result<Vec<AuditEntry>, AuthError> {
        self.scan(&keys::audit_of(tenant))
    }
}

/// A new key in `tenant`'s log: a random suffix keeps entries of the same millisecond apart.
pub(crate) fn entry_key(tenant: &str, at: i64) -> Vec<u8> {
    let suffix: String = uuid::Uuid::new_v4().as_bytes()[..4].iter().map(|b| format!("{b:02x}")).collect();
    keys::audit(tenant, at, &suffix)
}

pub(crate) fn to_json<T: Serialize>(value: &T) -> Result<Vec<u8>, AuthError> {
    serde_json::to_vec(value).map_err(|_| AuthError::Corrupt)
}

pub(crate) fn log(entry: &AuditEntry, grantee: Option<&str>) {
    tracing::info!(
        target: "liaison::audit",
        action = entry.action.as_str(),
        tenant = %entry.tenant,
        grant = entry.grant.as_deref().unwrap_or(""),
        by = %format_args!("{}/{}", entry.by_tenant, entry.by_user),
        device = %entry.by_device,
        grantee = grantee.unwrap_or(""),
        document = entry.document.as_deref().unwrap_or(""),
        request = entry.request.as_deref().unwrap_or(""),
        status = entry.status.unwrap_or(0),
        from = entry.from.as_deref().unwrap_or(""),
        reason = if entry.action == AuditAction::SupportGrantCreated { "" } else { entry.reason.as_deref().unwrap_or("") },
        "audit"
    );
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use liaison_core::storage::MemoryKv;

    use super::*;
    use crate::auth::RoleName;

    #[test]
    fn requests_and_enrolments_append_to_their_tenants_log_in_order() {
        let s = AuthStore::new(Arc::new(MemoryKv::new()));
        s.add_tenant("pharma-a", 0).unwrap();
        s.put_user("pharma-a", "admin-a", RoleName::Admin, &[]).unwrap();
        let (_, secret) = s.issue_token("pharma-a", "admin-a", "laptop", None, 0).unwrap();
        let admin = s.authenticate(&secret, 1).unwrap();
        let from = Some(IpAddr::from([10, 0, 0, 7]));
        let kv = s.kv.as_ref();
        record_admin_request(kv, "pharma-a", &admin, from, "PUT /admin/v1/tenants/pharma-a/users/sato".into(), 200, 5)
            .unwrap();
        record_enrolment(kv, "pharma-a", "sato", "phone", None, EnrolmentOutcome::Refused { reason: "no-role" }, 6)
            .unwrap();
        record_enrolment(kv, "pharma-a", "sato", "phone", from, EnrolmentOutcome::Enrolled { token_id: "tok_1" }, 7)
            .unwrap();
        record_admin_request(kv, "pharma-a", &admin, from, "DELETE /admin/v1/tokens/tok_1".into(), 404, 8).unwrap();
        let log = s.audit_log("pharma-a").unwrap();
        let lines: Vec<_> = log
            .iter()
            .map(|e| (e.at, e.action, e.by_user.as_str(), e.outcome.as_deref(), e.status, e.from.as_deref()))
            .collect();
        assert_eq!(
            lines,
            [
                (5, AuditAction::AdminRequest, "admin-a", Some("success"), Some(200), Some("10.0.0.7")),
                (6, AuditAction::EnrolmentRefused, "sato", Some("refused"), None, None),
                (7, AuditAction::DeviceEnrolled, "sato", Some("success"), None, Some("10.0.0.7")),
                (8, AuditAction::AdminRequest, "admin-a", Some("refused"), Some(404), Some("10.0.0.7")),
            ]
        );
        assert_eq!(log[1].reason.as_deref(), Some("no-role"));
        assert_eq!(log[2].token_id.as_deref(), Some("tok_1"));
        assert!(s.audit_log("pharma-b").unwrap().is_empty());
        // Stored entries of the support trail, written before these fields existed, still read.
        let old = br#"{"at":1,"tenant":"pharma-a","action":"document-opened","grant":"sg_1","by_tenant":"system","by_user":"admin","by_device":"d","document":"x","reason":null}"#;
        let entry: AuditEntry = serde_json::from_slice(old).unwrap();
        assert_eq!((entry.grant.as_deref(), entry.status), (Some("sg_1"), None));
    }
}
