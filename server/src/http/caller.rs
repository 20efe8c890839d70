//! Who calls the admin API: the [`Admin`] and [`SystemAdmin`] extractors authenticate and check
//! the role before a handler runs, and [`spend_single_use`] settles a single-use credential once
//! the response is known.

use std::sync::Arc;

use axum::extract::{FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::middleware::Next;
use axum::response::Response;

use super::audit::AuditCaller;
use super::{AppState, TokenQuery, presented_token, refused};
use crate::auth::{Principal, RoleName, SingleUseClaim};
use crate::error::ApiError;
use crate::now_ms;

/// Where the [`Admin`] extractor leaves a single-use credential it spent, for
/// [`spend_single_use`] to settle once the response is known.
#[derive(Clone, Debug, Default)]
struct SpentCredential(Arc<std::sync::Mutex<Option<SingleUseClaim>>>);

impl SpentCredential {
    fn take(&self) -> Option<SingleUseClaim> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).take()
    }
}

/// Around every admin route: a single-use credential (the bootstrap one) spent on a request
/// that succeeds stays spent and its file is deleted; spent on one that fails (a typo, a
/// missing user), it is given back, so a mistake does not lock the operator out.
pub(super) async fn spend_single_use(State(s): State<AppState>, mut request: Request, next: Next) -> Response {
    let spent = SpentCredential::default();
    request.extensions_mut().insert(spent.clone());
    let response = next.run(request).await;
    let Some(claim) = spent.take() else { return response };
    if response.status().is_success() {
        tracing::info!(token = %claim.token_id, "the single-use bootstrap credential was used; it no longer works");
        if let Some(path) = &s.admin.bootstrap_file
            && std::fs::read_to_string(path).is_ok_and(|written| claim.is_for(written.trim()))
            && let Err(e) = std::fs::remove_file(path)
        {
            tracing::warn!(error = %e, path = %path.display(), "cannot delete the spent bootstrap credential's file");
        }
    } else if let Err(e) = s.auth.release(&claim) {
        tracing::error!(error = %e, "cannot give back a single-use credential after a failed request");
    }
    response
}

/// An administrator: a tenant's admin, or a system admin (the `system` tenant's).
///
/// As an extractor, listed before the path and the body, it answers 401 without a valid token
/// and 403 for any other role before the handler looks anything up. What the admin may see is
/// then the handler's to check, with [`Admin::check_tenant`] or [`Admin::administers`]:
/// another tenant's tenant, token or document is answered exactly like a missing one.
#[derive(Debug)]
pub struct Admin(pub Principal);

/// A system administrator: 401 without a valid token, 403 for anyone else.
#[derive(Debug)]
pub struct SystemAdmin(pub Principal);

impl Admin {
    /// Whether this admin administers `tenant`.
    pub fn administers(&self, tenant: &str) -> bool {
        self.0.is_system_admin() || self.0.tenant == tenant
    }

    /// `Ok` if this admin administers `tenant`; otherwise what a tenant that does not exist gets.
    pub fn check_tenant(&self, tenant: &str) -> Result<(), ApiError> {
        if self.administers(tenant) { Ok(()) } else { Err(ApiError::NotFound("tenant")) }
    }

    /// `Ok` for `tenant`'s own admins only: system admins get 403 (support grants and the audit
    /// log are how a tenant oversees them), another tenant's admin what a missing tenant gets.
    pub fn check_own_tenant(&self, tenant: &str) -> Result<(), ApiError> {
        if self.0.is_system_admin() {
            return Err(ApiError::Forbidden);
        }
        self.check_tenant(tenant)
    }
}

impl FromRequestParts<AppState> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        // Admin credentials come in headers only, never in a URL (which proxies log).
        let token = presented_token(&parts.headers, &TokenQuery::default()).ok_or(ApiError::Unauthorized)?;
        let (principal, spent) = state.auth.authenticate_admin(&token, now_ms()).map_err(|e| refused(state, e))?;
        // Spent: the request's outcome decides whether it stays spent (without the layer
        // that settles it, it does).
        if let Some(claim) = spent
            && let Some(slot) = parts.extensions.get::<SpentCredential>()
        {
            *slot.0.lock().unwrap_or_else(|p| p.into_inner()) = Some(claim);
        }
        // Known from here on: the request is an admin action of this caller, for the audit log.
        if let Some(caller) = parts.extensions.get::<AuditCaller>() {
            caller.set(&principal);
        }
        if principal.role == RoleName::Admin { Ok(Admin(principal)) } else { Err(ApiError::Forbidden) }
    }
}

impl FromRequestParts<AppState> for SystemAdmin {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let Admin(principal) = Admin::from_request_parts(parts, state).await?;
        if principal.is_system_admin() { Ok(SystemAdmin(principal)) } else { Err(ApiError::Forbidden) }
    }
}
