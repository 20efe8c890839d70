//! The admin API's routes and handlers; who may call them is in [`super::caller`].

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post, put};
use axum::{Json, Router};
use liaison_core::DocumentId;
use serde::Deserialize;
use serde_json::json;

use super::audit::{AuditTenant, audit_admin_requests};
use super::caller::{Admin, SystemAdmin, spend_single_use};
use super::{AppState, metrics};
use crate::auth::RoleName;
use crate::error::{ApiError, MaintenanceError};
use crate::now_ms;
use crate::relay::ActorMsg;

/// What operators use: metrics and the admin API.
pub fn admin_app(state: AppState) -> Router {
    Router::new()
        .route("/admin/v1/tenants", post(add_tenant).get(list_tenants))
        .route("/admin/v1/tenants/{tenant}", delete(purge_tenant))
        .route("/admin/v1/tenants/{tenant}/export", post(export_tenant))
        .route("/admin/v1/tenants/{tenant}/teams", post(add_team))
        .route("/admin/v1/tenants/{tenant}/users/{user}", put(put_user))
        .route("/admin/v1/tenants/{tenant}/users/{user}/tokens", post(issue_token))
        .route("/admin/v1/tenants/{tenant}/support-grants", post(add_support_grant).get(list_support_grants))
        .route("/admin/v1/tenants/{tenant}/support-grants/{id}", delete(revoke_support_grant))
        .route("/admin/v1/tenants/{tenant}/audit", get(audit_log))
        .route("/admin/v1/tokens", get(list_tokens))
        .route("/admin/v1/tokens/{id}", delete(revoke_token))
        .route("/admin/v1/documents/{id}/unlock", post(unlock))
        .route("/admin/v1/documents/{id}", delete(erase))
        .route("/admin/v1/stats", get(stats))
        .route("/admin/v1/backup", post(backup))
        .route_layer(axum::middleware::from_fn_with_state(state.clone(), spend_single_use))
        .route_layer(axum::middleware::from_fn_with_state(state.clone(), audit_admin_requests))
        .route("/metrics", get(metrics))
        .with_state(state)
}

#[derive(Deserialize)]
struct NewTenant {
    tenant: String,
}

async fn add_tenant(_: SystemAdmin, State(s): State<AppState>, Json(b): Json<NewTenant>) -> Result<Response, ApiError> {
    let rec = s.auth.add_tenant(&b.tenant, now_ms())?;
    Ok((StatusCode::CREATED, Json(json!(rec))).into_response())
}

#[derive(Deserialize)]
struct NewTeam {
    team: String,
}

async fn add_team(
    admin: Admin,
    State(s): State<AppState>,
    Path(tenant): Path<String>,
    Json(b): Json<NewTeam>,
) -> Result<Response, ApiError> {
    admin.check_tenant(&tenant)?;
    s.auth.add_team(&tenant, &b.team)?;
    Ok(StatusCode::CREATED.into_response())
}

#[derive(Deserialize)]
struct UserGrants {
    role: RoleName,
    #[serde(default)]
    teams: Vec<String>,
}

async fn put_user(
    admin: Admin,
    State(s): State<AppState>,
    Path((tenant, user)): Path<(String, String)>,
    Json(b): Json<UserGrants>,
) -> Result<Response, ApiError> {
    admin.check_tenant(&tenant)?;
    let rec = s.auth.put_user(&tenant, &user, b.role, &b.teams)?;
    // Changed grants take effect on live connections now, not at the next tick.
    s.relay.send(ActorMsg::Recheck).await;
    Ok(Json(json!(rec)).into_response())
}

#[derive(Deserialize)]
struct NewToken {
    device: String,
    ttl_secs: Option<u64>,
}

async fn issue_token(
    admin: Admin,
    State(s): State<AppState>,
    Path((tenant, user)): Path<(String, String)>,
    Json(b): Json<NewToken>,
) -> Result<Response, ApiError> {
    admin.check_tenant(&tenant)?;
    let (rec, secret) = s.auth.issue_token(&tenant, &user, &b.device, b.ttl_secs, now_ms())?;
    // The only time the secret leaves the relay.
    Ok((StatusCode::CREATED, Json(json!({ "id": rec.id, "token": secret, "device": rec.device }))).into_response())
}

#[derive(Deserialize)]
struct NewSupportGrant {
    /// The system admin who may read.
    user: String,
    ttl_secs: u64,
    reason: String,
}

/// A tenant's admin lets a system admin read the tenant's records over sync, read only, for
/// `ttl_secs` (at most a week). Audited.
async fn add_support_grant(
    admin: Admin,
    State(s): State<AppState>,
    Path(tenant): Path<String>,
    Json(b): Json<NewSupportGrant>,
) -> Result<Response, ApiError> {
    admin.check_own_tenant(&tenant)?;
    let grant = s.auth.add_support_grant(&admin.0, &tenant, &b.user, b.ttl_secs, &b.reason, now_ms())?;
    s.relay.send(ActorMsg::Recheck).await;
    Ok((StatusCode::CREATED, Json(json!(grant))).into_response())
}

/// A tenant's support grants, for its admins and the system admins.
async fn list_support_grants(
    admin: Admin,
    State(s): State<AppState>,
    Path(tenant): Path<String>,
) -> Result<Response, ApiError> {
    admin.check_tenant(&tenant)?;
    s.auth.tenant(&tenant)?.ok_or(ApiError::NotFound("tenant"))?;
    Ok(Json(json!({ "grants": s.auth.support_grants(&tenant)? })).into_response())
}

/// Ends a support grant now, on live connections too. Audited.
async fn revoke_support_grant(
    admin: Admin,
    State(s): State<AppState>,
    Path((tenant, id)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    admin.check_own_tenant(&tenant)?;
    let grant = s.auth.revoke_support_grant(&admin.0, &tenant, &id, now_ms())?;
    s.relay.send(ActorMsg::Recheck).await;
    Ok(Json(json!(grant)).into_response())
}

/// The tenant's audit log (see `audit`): admin requests, enrolments, support grants,
/// revocations, documents opened under them. The `system` tenant's log is the system admins'.
async fn audit_log(admin: Admin, State(s): State<AppState>, Path(tenant): Path<String>) -> Result<Response, ApiError> {
    if !(tenant == crate::auth::SYSTEM_TENANT && admin.0.is_system_admin()) {
        admin.check_own_tenant(&tenant)?;
    }
    Ok(Json(json!({ "entries": s.auth.audit_log(&tenant)? })).into_response())
}

#[derive(Deserialize)]
struct TenantFilter {
    tenant: Option<String>,
}

/// A system admin lists every tenant's tokens (or one tenant's); a tenant's admin its own.
async fn list_tokens(
    admin: Admin,
    State(s): State<AppState>,
    Query(f): Query<TenantFilter>,
) -> Result<Response, ApiError> {
    let tenant = match f.tenant {
        Some(tenant) => {
            admin.check_tenant(&tenant)?;
            Some(tenant)
        }
        None if admin.0.is_system_admin() => None,
        None => Some(admin.0.tenant.clone()),
    };
    Ok(Json(json!({ "tokens": s.auth.tokens(tenant.as_deref())? })).into_response())
}

async fn revoke_token(admin: Admin, State(s): State<AppState>, Path(id): Path<String>) -> Result<Response, ApiError> {
    let rec = s.auth.token(&id)?;
    if !admin.administers(&rec.tenant) {
        return Err(ApiError::NotFound("token"));
    }
    let rec = s.auth.revoke_token(&id, now_ms())?;
    s.relay.send(ActorMsg::Recheck).await;
    let tenant = AuditTenant(rec.tenant.clone());
    Ok((axum::Extension(tenant), Json(json!(rec))).into_response())
}

#[derive(Deserialize)]
struct UnlockBody {
    reason: String,
}

async fn unlock(
    admin: Admin,
    State(s): State<AppState>,
    Path(id): Path<String>,
    Json(b): Json<UnlockBody>,
) -> Result<Response, ApiError> {
    let doc: DocumentId = id.parse().map_err(|_| ApiError::BadRequest("not a document id".into()))?;
    let (owner, _, _) = s
        .store
        .owner_of(&doc)?
        .filter(|(tenant, _, _)| admin.administers(tenant))
        .ok_or(ApiError::NotFound("document"))?;
    let store = s.store.clone();
    let reason = format!("{} (by {})", b.reason, admin.0.user);
    let changes = tokio::task::spawn_blocking(move || -> Result<Vec<u8>, ApiError> {
        let before = store.load(&doc)?.get_heads();
        store.unlock_any(&doc, &reason)?;
        Ok(store.changes_since(&doc, &before)?)
    })
    .await??;
    s.relay.send(ActorMsg::LocalChanges { doc, changes }).await;
    Ok((axum::Extension(AuditTenant(owner)), Json(json!({ "unlocked": id }))).into_response())
}

async fn stats(_: SystemAdmin, State(s): State<AppState>) -> Result<Response, ApiError> {
    let m = &s.metrics;
    let l = |c: &std::sync::atomic::AtomicU64| c.load(std::sync::atomic::Ordering::Relaxed);
    let stored = s.store.all_documents()?.len();
    Ok(Json(json!({
        "connections_open": l(&m.connections_open),
        "documents_stored": stored,
        "documents_resident": l(&m.resident_documents),
        "frames_in": l(&m.frames_in),
        "frames_out": l(&m.frames_out),
    }))
    .into_response())
}

/// A consistent backup while serving (system admins only), into a new directory the relay
/// names under `backup_root`. Writes and acknowledgements go on meanwhile (see `backup`).
async fn backup(_: SystemAdmin, State(s): State<AppState>) -> Result<Response, ApiError> {
    crate::backup::supported(s.data.backend)?;
    let (root, data) = (s.backup_root.clone(), s.data.clone());
    let (name, manifest) = tokio::task::spawn_blocking(move || {
        let now = now_ms();
        let (name, dest) = crate::backup::fresh_dir(&root, "backup", now)?;
        crate::backup::backup_live(&data.kv, &data.ledger, &dest, now, &mut || {}).map(|m| (name, m))
    })
    .await??;
    tracing::info!(backup = %name, entries = manifest.entries, "backup made");
    Ok(Json(json!({ "backup": name, "entries": manifest.entries, "made_at_ms": manifest.made_at_ms })).into_response())
}

/// Erasure (GDPR, APPI): the document is deleted from the relay, its id is tombstoned so no copy
/// can come back, and every device syncing it, now or later, is told to delete its copy.
async fn erase(admin: Admin, State(s): State<AppState>, Path(id): Path<String>) -> Result<Response, ApiError> {
    let doc: DocumentId = id.parse().map_err(|_| ApiError::BadRequest("not a document id".into()))?;
    let (allowed, owner) = match s.store.owner_of(&doc)? {
        Some((tenant, _, _)) => (admin.administers(&tenant), tenant),
        // Not a liaison record (no envelope), or already erased: system admins only, if it is stored.
        None => (admin.0.is_system_admin() && s.store.kind_of(&doc).is_ok(), admin.0.tenant.clone()),
    };
    if !allowed {
        return Err(ApiError::NotFound("document"));
    }
    s.relay.ask(|reply| ActorMsg::Erase { doc, reply }).await??;
    tracing::info!(document = %doc, by = %admin.0.user, "erasure requested");
    Ok((axum::Extension(AuditTenant(owner)), Json(json!({ "erased": id }))).into_response())
}

async fn list_tenants(_: SystemAdmin, State(s): State<AppState>) -> Result<Response, ApiError> {
    Ok(Json(json!({ "tenants": s.auth.tenants()? })).into_response())
}

/// Contract end, step 1: every document of the tenant into a new directory the relay names
/// under `export_root`, for the pharma client. The relay keeps serving meanwhile.
async fn export_tenant(
    admin: Admin,
    State(s): State<AppState>,
    Path(tenant): Path<String>,
) -> Result<Response, ApiError> {
    admin.check_tenant(&tenant)?;
    let (root, store, who) = (s.export_root.clone(), s.store.clone(), tenant.clone());
    let (name, n) = tokio::task::spawn_blocking(move || -> Result<_, MaintenanceError> {
        let (name, dest) = crate::backup::fresh_dir(&root, &format!("export-{who}"), now_ms())?;
        Ok((name, crate::contract::export_tenant(&store, &who, &dest)?))
    })
    .await??;
    tracing::info!(tenant = %tenant, export = %name, documents = n, by = %admin.0.user, "tenant exported");
    Ok(Json(json!({ "tenant": tenant, "export": name, "documents": n })).into_response())
}

/// Contract end, step 2 (system admins): revoke the tenant's credentials and cut its
/// connections, then erase every document and quarantine entry it owns; the tenant record
/// stays, marked purged, as the record that it happened. Answers once it is done.
async fn purge_tenant(
    SystemAdmin(p): SystemAdmin,
    State(s): State<AppState>,
    Path(tenant): Path<String>,
) -> Result<Response, ApiError> {
    if tenant == crate::auth::SYSTEM_TENANT {
        return Err(ApiError::BadRequest("the system tenant cannot be purged".into()));
    }
    if s.auth.tenant(&tenant)?.is_none() {
        return Err(ApiError::NotFound("tenant"));
    }
    let n = s.relay.ask(|reply| ActorMsg::PurgeTenant { tenant: tenant.clone(), reply }).await??;
    tracing::info!(tenant = %tenant, documents = n, by = %p.user, "tenant purged");
    // The system's log: the tenant's own admins no longer exist to read theirs.
    let audit = AuditTenant(crate::auth::SYSTEM_TENANT.into());
    Ok((axum::Extension(audit), Json(json!({ "tenant": tenant, "erased_documents": n, "purged": true })))
        .into_response())
}
