//! Every admin API request into the audit log (`crate::audit`), once its answer is known:
//! [`audit_admin_requests`] wraps the admin routes; the [`super::Admin`] extractor leaves the
//! caller in an [`AuditCaller`] slot as soon as its credential is checked (before its role is,
//! so a refused non-admin is recorded too); a handler whose request concerns a tenant the path
//! does not name says which with an [`AuditTenant`] on its response.
//!
//! Which tenant's log: the handler's [`AuditTenant`]; else the tenant the path names, if the
//! caller administers it and it exists; else the caller's own tenant (`system` for system
//! admins). A request without a valid credential is not an admin action: it is logged
//! ("refused a credential") and counted, not written to any tenant's log.

use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};

use axum::extract::{ConnectInfo, FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::middleware::Next;
use axum::response::Response;

use super::AppState;
use crate::auth::Principal;
use crate::now_ms;

/// Where the admin extractor leaves who called, for [`audit_admin_requests`].
#[derive(Clone, Debug, Default)]
pub(super) struct AuditCaller(Arc<Mutex<Option<Principal>>>);

impl AuditCaller {
    pub(super) fn set(&self, principal: &Principal) {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = Some(principal.clone());
    }

    fn take(&self) -> Option<Principal> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).take()
    }
}

/// Put on a response by a handler: the request concerns this tenant (a token's, a document's).
#[derive(Clone, Debug)]
pub(super) struct AuditTenant(pub(super) String);

/// The address a request came from, when the listener knows it.
#[derive(Clone, Copy, Debug)]
pub(super) struct PeerIp(pub(super) Option<IpAddr>);

impl<S: Send + Sync> FromRequestParts<S> for PeerIp {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(PeerIp(parts.extensions.get::<ConnectInfo<SocketAddr>>().map(|c| c.0.ip())))
    }
}

/// Around every admin route: the answered request goes into the audit log. A log that cannot
/// be written is reported as an error; the answer stands (the action already happened).
pub(super) async fn audit_admin_requests(State(s): State<AppState>, mut request: Request, next: Next) -> Response {
    let caller = AuditCaller::default();
    request.extensions_mut().insert(caller.clone());
    let from = request.extensions().get::<ConnectInfo<SocketAddr>>().map(|c| c.0.ip());
    // The path only: never the query.
    let what = format!("{} {}", request.method(), request.uri().path());
    let path_tenant = tenant_in_path(request.uri().path()).map(str::to_owned);
    let response = next.run(request).await;
    let Some(by) = caller.take() else { return response };
    let hinted = response.extensions().get::<AuditTenant>().map(|t| t.0.clone());
    let status = response.status().as_u16();
    let auth = s.auth.clone();
    let recorded = tokio::task::spawn_blocking(move || {
        let named = path_tenant
            .filter(|t| (by.is_system_admin() || by.tenant == *t) && auth.tenant(t).is_ok_and(|found| found.is_some()));
        let tenant = hinted.or(named).unwrap_or_else(|| by.tenant.clone());
        crate::audit::record_admin_request(auth.kv.as_ref(), &tenant, &by, from, what, status, now_ms())
    })
    .await;
    match recorded {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::error!(error = %e, "cannot write an admin request to the audit log"),
        Err(e) => tracing::error!(error = %e, "the audit log's task failed"),
    }
    response
}

/// The tenant `/admin/v1/tenants/TENANT/...` names.
fn tenant_in_path(path: &str) -> Option<&str> {
    let rest = path.strip_prefix("/admin/v1/tenants/")?;
    let tenant = rest.split('/').next()?;
    (!tenant.is_empty()).then_some(tenant)
}

#[cfg(test)]
mod tests {
    use super::tenant_in_path;

    #[test]
    fn the_tenant_a_path_names() {
        assert_eq!(tenant_in_path("/admin/v1/tenants/pharma-a/users/sato"), Some("pharma-a"));
        assert_eq!(tenant_in_path("/admin/v1/tenants/pharma-a"), Some("pharma-a"));
        assert_eq!(tenant_in_path("/admin/v1/tenants"), None);
        assert_eq!(tenant_in_path("/admin/v1/tenants/"), None);
        assert_eq!(tenant_in_path("/admin/v1/tokens/tok_1"), None);
    }
}
