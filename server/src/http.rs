//! The HTTP surface: health, metrics, the WebSocket sync endpoint, the catalog, the admin API.

use crate::now_ms;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::ws::{CloseFrame, Message as WsMessage, WebSocket, WebSocketUpgrade};
use axum::extract::{FromRequestParts, Path, Query, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post, put};
use axum::{Json, Router};
use futures::{SinkExt, StreamExt};
use liaison_core::model::Kind;
use liaison_core::sync::Access;
use liaison_core::{DocStore, DocumentId};
use serde::Deserialize;
use serde_json::json;

use crate::auth::{AuthError, AuthStore, Principal, RoleName, SingleUseClaim};
use crate::config::{Limits, Secret};
use crate::connections::PerToken;
use crate::metrics::Metrics;
use crate::outbox::{OutboxReceiver, Outgoing, outbox};
use crate::policy::access_for;
use crate::relay::{ActorMsg, RelayHandle, close};

/// Everything a request handler needs.
#[derive(Clone, Debug)]
pub struct AppState {
    pub store: Arc<DocStore>,
    pub auth: AuthStore,
    /// The store's tap and the security ledger, for backups.
    pub data: crate::Data,
    /// Where backups and exports go, each in a directory the relay names.
    pub backup_root: std::path::PathBuf,
    pub export_root: std::path::PathBuf,
    pub relay: RelayHandle,
    pub metrics: Arc<Metrics>,
    pub limits: Limits,
    /// WebSockets open per token (`limits.max_connections_per_token`).
    pub connections_per_token: PerToken,
    pub admin: AdminOptions,
}

impl AppState {
    /// Starts the relay's actor over `data` and gathers what handlers need.
    pub fn start(data: crate::Data, config: &crate::config::Config, admin: AdminOptions) -> Self {
        let metrics = Arc::new(Metrics::default());
        let relay = crate::relay::spawn(
            data.store.clone(),
            data.auth.clone(),
            data.ledger.clone(),
            metrics.clone(),
            crate::relay::RelaySettings::from_config(config),
        );
        Self {
            store: data.store.clone(),
            auth: data.auth.clone(),
            data,
            backup_root: config.backup_root(),
            export_root: config.export_root(),
            relay,
            metrics,
            limits: config.limits.clone(),
            connections_per_token: PerToken::default(),
            admin,
        }
    }
}

/// How the admin surface is guarded.
#[derive(Clone, Debug, Default)]
pub struct AdminOptions {
    /// The bootstrap credential's file, deleted once the credential is spent.
    pub bootstrap_file: Option<std::path::PathBuf>,
    /// `/metrics` requires `Authorization: Bearer <it>` when set.
    pub metrics_token: Option<Secret>,
}

/// The relay's routes; tests can drive it without a socket.
pub fn app(state: AppState) -> Router {
    device_app(state.clone()).merge(admin_app(state))
}

/// What devices use: health, sync, the catalog.
pub fn device_app(state: AppState) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/v1/sync", get(sync_socket))
        .route("/v1/catalog", get(catalog))
        .with_state(state)
}

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
        .route("/metrics", get(metrics))
        .with_state(state)
}

/// API errors: a status and a short reason for the client; details stay in the server's log.
#[derive(Debug)]
pub enum ApiError {
    Unauthorized,
    Forbidden,
    NotFound(&'static str),
    BadRequest(String),
    Conflict(&'static str),
    /// 410: the tenant was purged; devices erase their local copies.
    Gone,
    Internal(String),
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, reason) = match self {
            ApiError::Unauthorized => (StatusCode::UNAUTHORIZED, "unauthorized".to_owned()),
            ApiError::Forbidden => (StatusCode::FORBIDDEN, "forbidden".to_owned()),
            ApiError::NotFound(what) => (StatusCode::NOT_FOUND, format!("{what} not found")),
            ApiError::BadRequest(r) => (StatusCode::BAD_REQUEST, r),
            ApiError::Conflict(what) => (StatusCode::CONFLICT, format!("{what} already exists")),
            ApiError::Gone => (StatusCode::GONE, "tenant purged".to_owned()),
            ApiError::Internal(detail) => {
                tracing::error!(error = %detail, "request failed");
                (StatusCode::INTERNAL_SERVER_ERROR, "internal error".to_owned())
            }
        };
        (status, Json(json!({ "error": reason }))).into_response()
    }
}

impl From<AuthError> for ApiError {
    fn from(e: AuthError) -> Self {
        match e {
            AuthError::Missing
            | AuthError::Invalid
            | AuthError::Expired
            | AuthError::Revoked
            | AuthError::SingleUse => ApiError::Unauthorized,
            AuthError::TenantPurged => ApiError::Gone,
            AuthError::NotFound(w) => ApiError::NotFound(w),
            AuthError::Exists(w) => ApiError::Conflict(w),
            AuthError::BadName { .. } | AuthError::TtlTooLong { .. } | AuthError::InvalidGrant(_) => {
                ApiError::BadRequest(e.to_string())
            }
            AuthError::NotAllowed(_) => ApiError::Forbidden,
            other => ApiError::Internal(other.to_string()),
        }
    }
}

/// Initial WebSocket read buffer per connection.
const READ_BUFFER_BYTES: usize = 8 * 1024;

/// The subprotocol browsers use to carry a token: `liaison-token.<token>`.
const TOKEN_PROTOCOL_PREFIX: &str = "liaison-token.";
/// The subprotocol the relay selects (a browser needs one it offered; never the token one).
const SELECTED_PROTOCOL: &str = "liaison";

/// The token from the Authorization header, the WebSocket subprotocol, or the query.
fn presented_token(headers: &HeaderMap, query: &TokenQuery) -> Option<String> {
    if let Some(v) = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok())
        && let Some(t) = v.strip_prefix("Bearer ")
    {
        return Some(t.trim().to_owned());
    }
    if let Some(v) = headers.get(header::SEC_WEBSOCKET_PROTOCOL).and_then(|v| v.to_str().ok()) {
        for p in v.split(',').map(str::trim) {
            if let Some(t) = p.strip_prefix(TOKEN_PROTOCOL_PREFIX) {
                return Some(t.to_owned());
            }
        }
    }
    query.token.clone()
}

#[derive(Debug, Default, Deserialize)]
struct TokenQuery {
    token: Option<String>,
}

fn authenticate(state: &AppState, headers: &HeaderMap, query: &TokenQuery) -> Result<Principal, ApiError> {
    let token = presented_token(headers, query).ok_or(ApiError::Unauthorized)?;
    state.auth.authenticate(&token, now_ms()).map_err(|e| refused(state, e))
}

fn refused(state: &AppState, e: AuthError) -> ApiError {
    Metrics::add(&state.metrics.auth_failures, 1);
    tracing::info!(reason = %e, "refused a credential");
    ApiError::from(e)
}

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
async fn spend_single_use(State(s): State<AppState>, mut request: Request, next: Next) -> Response {
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

/// Ready when storage answers and the relay's actor (which owns the sync engine) answers.
async fn readyz(State(s): State<AppState>) -> Response {
    if let Err(e) = s.store.kv().get(crate::keys::INSTALL) {
        tracing::error!(error = %e, "storage not ready");
        return (StatusCode::SERVICE_UNAVAILABLE, "storage unavailable\n").into_response();
    }
    if !s.relay.alive(READY_TIMEOUT).await {
        tracing::error!("the relay's actor does not answer");
        return (StatusCode::SERVICE_UNAVAILABLE, "sync engine not responding\n").into_response();
    }
    (StatusCode::OK, "ready\n").into_response()
}

/// How long `/readyz` waits for the relay's actor.
const READY_TIMEOUT: Duration = Duration::from_secs(2);

async fn metrics(State(s): State<AppState>, headers: HeaderMap) -> Response {
    if let Some(expected) = &s.admin.metrics_token {
        let presented = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim);
        if !presented.is_some_and(|p| same_secret(p, expected.expose())) {
            tracing::info!("refused a /metrics request without the metrics token");
            return ApiError::Unauthorized.into_response();
        }
    }
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], s.metrics.render()).into_response()
}

/// Compares two secrets in time independent of where they differ: their SHA-256 digests are
/// compared whole (and lengths do not show either).
fn same_secret(presented: &str, expected: &str) -> bool {
    use sha2::{Digest, Sha256};
    let (a, b) = (Sha256::digest(presented.as_bytes()), Sha256::digest(expected.as_bytes()));
    let differing = a.iter().zip(b.iter()).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(differing) == 0
}

async fn sync_socket(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(query): Query<TokenQuery>,
    ws: WebSocketUpgrade,
) -> Result<Response, ApiError> {
    // Authentication happens before the upgrade: a bad token never gets a socket.
    let principal = authenticate(&state, &headers, &query)?;
    let open = state.metrics.connections_open.load(std::sync::atomic::Ordering::Relaxed) as usize;
    if open >= state.limits.max_connections {
        return Ok((StatusCode::SERVICE_UNAVAILABLE, Json(json!({ "error": "too many connections" }))).into_response());
    }
    let Some(slot) = state.connections_per_token.try_open(&principal.token_id, state.limits.max_connections_per_token)
    else {
        tracing::info!(token = %principal.token_id, "refused a WebSocket: too many open with this token");
        let reason = json!({ "error": "too many connections for this token" });
        return Ok((StatusCode::TOO_MANY_REQUESTS, Json(reason)).into_response());
    };
    let limits = state.limits.clone();
    Ok(ws
        .protocols([SELECTED_PROTOCOL])
        // tungstenite reserves its whole read buffer per connection (128 KiB by default): most
        // connections idle, so start small; it grows for the rare large frame.
        .read_buffer_size(READ_BUFFER_BYTES)
        .max_message_size(limits.max_frame_bytes)
        .max_frame_size(limits.max_frame_bytes)
        .on_upgrade(move |socket| async move {
            // The token's slot is held while the socket is served (and freed if the upgrade fails).
            let _slot = slot;
            serve_socket(socket, principal, state.relay, limits, state.metrics).await
        })
        .into_response())
}

/// A token bucket: `rate` per second sustained, `burst` at once.
struct Bucket {
    tokens: f64,
    rate: f64,
    burst: f64,
    at: Instant,
}

impl Bucket {
    fn take(&mut self) -> bool {
        let now = Instant::now();
        self.tokens = (self.tokens + now.duration_since(self.at).as_secs_f64() * self.rate).min(self.burst);
        self.at = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// Most frames one flush to a device carries.
const MAX_COALESCED: usize = 64;

async fn serve_socket(
    socket: WebSocket,
    principal: Principal,
    relay: RelayHandle,
    limits: Limits,
    metrics: Arc<Metrics>,
) {
    let conn = relay.next_conn();
    let (outbox, mut out_rx) = outbox(OUTBOX_FRAMES, limits.max_outbox_bytes);
    tracing::debug!(conn = conn.0, tenant = %principal.tenant, "connection opened");
    relay.send(ActorMsg::Open { conn, principal, outbox }).await;
    let (mut sink, mut stream) = socket.split();
    let mut bucket = Bucket {
        tokens: f64::from(limits.message_burst),
        rate: f64::from(limits.messages_per_second),
        burst: f64::from(limits.message_burst),
        at: Instant::now(),
    };
    let idle = Duration::from_secs(limits.idle_timeout_secs);
    let write_deadline = Duration::from_secs(limits.write_timeout_secs.max(1));
    let cut = out_rx.cut_signal();
    loop {
        tokio::select! {
            // The actor cut us (a client too slow to read, its outbox full): end now, even if
            // the socket would block; what was queued is dropped with the task.
            () = cut.notified() => break,
            incoming = tokio::time::timeout(idle, stream.next()) => {
                let reply = match incoming {
                    Err(_) => Some((close::IDLE, "idle timeout")),
                    Ok(None) | Ok(Some(Ok(WsMessage::Close(_)))) => break,
                    Ok(Some(Err(e))) => {
                        if is_too_large(&e) { Some((close::TOO_BIG, "frame too large")) } else { break }
                    }
                    Ok(Some(Ok(WsMessage::Binary(b)))) => {
                        if !bucket.take() {
                            Some((close::RATE, "message rate exceeded"))
                        } else {
                            // The actor's inbound queue is bounded in bytes: wait for room
                            // (the socket is not read meanwhile: TCP pushes back on the client).
                            let permit = relay.inbound_permit(b.len()).await;
                            relay.send(ActorMsg::Frame { conn, frame: b.to_vec(), permit }).await;
                            None
                        }
                    }
                    Ok(Some(Ok(WsMessage::Text(_)))) => Some((close::PROTOCOL, "binary frames only")),
                    Ok(Some(Ok(_))) => None, // ping and pong
                };
                if let Some((code, reason)) = reply {
                    metrics.closed(reason);
                    let _ = tokio::time::timeout(write_deadline, sink.send(close_frame(code, reason))).await;
                    break;
                }
            }
            out = out_rx.recv() => {
                let Some(first) = out else { break };
                // A client that does not take what is written within the deadline is cut.
                let written = tokio::select! {
                    () = cut.notified() => break,
                    r = tokio::time::timeout(write_deadline, write_queued(&mut sink, first, &mut out_rx)) => r,
                };
                match written {
                    Ok(Ok(true)) => {}
                    Ok(Ok(false) | Err(())) => break,
                    Err(_) => {
                        metrics.closed("write timeout");
                        tracing::info!(conn = conn.0, "a client did not read within the write deadline; cut");
                        break;
                    }
                }
            }
        }
    }
    relay.send(ActorMsg::Closed { conn }).await;
}

/// Frames queued for one connection and written before one flush.
const OUTBOX_FRAMES: usize = 4096;

fn close_frame(code: u16, reason: &str) -> WsMessage {
    WsMessage::Close(Some(CloseFrame { code, reason: reason.to_owned().into() }))
}

/// Whether a read failed because the peer's frame or message is over the limit.
fn is_too_large(e: &axum::Error) -> bool {
    use std::error::Error as _;
    use tungstenite::error::{CapacityError, Error as WsError};
    let mut source = e.source();
    while let Some(s) = source {
        if let Some(WsError::Capacity(CapacityError::MessageTooLong { .. })) = s.downcast_ref::<WsError>() {
            return true;
        }
        source = s.source();
    }
    false
}

/// Writes `first` and whatever else is queued (up to [`MAX_COALESCED`]) with one flush: with
/// TCP_NODELAY on, a flush per frame would cost a TLS record and a segment each. `Ok(false)`
/// when the connection ends here (a close was sent), `Err` when the socket failed.
async fn write_queued<S>(sink: &mut S, first: Outgoing, out_rx: &mut OutboxReceiver) -> Result<bool, ()>
where
    S: futures::Sink<WsMessage> + Unpin,
{
    let mut next = Some(first);
    let mut fed = 0;
    while let Some(o) = next.take() {
        match o {
            Outgoing::Frame(f) => sink.feed(WsMessage::Binary(f.into())).await.map_err(|_| ())?,
            Outgoing::Close(code, reason) => {
                sink.flush().await.map_err(|_| ())?;
                let _ = sink.send(close_frame(code, &reason)).await;
                return Ok(false);
            }
        }
        fed += 1;
        if fed < MAX_COALESCED {
            next = out_rx.try_recv();
        }
    }
    sink.flush().await.map_err(|_| ())?;
    Ok(true)
}

/// The documents a device may sync: discovery for clients (see ARCHITECTURE.md).
async fn catalog(
    State(s): State<AppState>,
    headers: HeaderMap,
    Query(q): Query<TokenQuery>,
) -> Result<Response, ApiError> {
    let p = authenticate(&s, &headers, &q)?;
    let store = s.store.clone();
    let docs = tokio::task::spawn_blocking(move || -> Result<Vec<serde_json::Value>, String> {
        let mut out = Vec::new();
        for id in store.all_documents().map_err(|e| e.to_string())? {
            if let Some((tenant, team, kind)) = store.owner_of(&id).map_err(|e| e.to_string())?
                && access_for(&p, &tenant, &team, kind) != Access::None
            {
                out.push(json!({ "id": id.to_string(), "kind": kind.map(Kind::as_str), "team": team }));
            }
        }
        Ok(out)
    })
    .await
    .map_err(|e| ApiError::Internal(e.to_string()))?
    .map_err(ApiError::Internal)?;
    Ok(Json(json!({ "documents": docs })).into_response())
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

/// The tenant's audit log: support grants, revocations, documents opened under them.
async fn audit_log(admin: Admin, State(s): State<AppState>, Path(tenant): Path<String>) -> Result<Response, ApiError> {
    admin.check_own_tenant(&tenant)?;
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
    Ok(Json(json!(rec)).into_response())
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
    s.store
        .owner_of(&doc)
        .map_err(|e| ApiError::Internal(e.to_string()))?
        .filter(|(tenant, _, _)| admin.administers(tenant))
        .ok_or(ApiError::NotFound("document"))?;
    let store = s.store.clone();
    let reason = format!("{} (by {})", b.reason, admin.0.user);
    let changes = tokio::task::spawn_blocking(move || -> Result<Vec<u8>, String> {
        let before = store.load(&doc).map_err(|e| e.to_string())?.get_heads();
        store.unlock_any(&doc, &reason).map_err(|e| e.to_string())?;
        store.changes_since(&doc, &before).map_err(|e| e.to_string())
    })
    .await
    .map_err(|e| ApiError::Internal(e.to_string()))?
    .map_err(ApiError::BadRequest)?;
    s.relay.send(ActorMsg::LocalChanges { doc, changes }).await;
    Ok(Json(json!({ "unlocked": id })).into_response())
}

async fn stats(_: SystemAdmin, State(s): State<AppState>) -> Result<Response, ApiError> {
    let m = &s.metrics;
    let l = |c: &std::sync::atomic::AtomicU64| c.load(std::sync::atomic::Ordering::Relaxed);
    let stored = s.store.all_documents().map(|d| d.len()).map_err(|e| ApiError::Internal(e.to_string()))?;
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
    let (root, data) = (s.backup_root.clone(), s.data.clone());
    let (name, manifest) = tokio::task::spawn_blocking(move || {
        let now = now_ms();
        let (name, dest) = crate::backup::fresh_dir(&root, "backup", now)?;
        crate::backup::backup_live(&data.kv, &data.ledger, &dest, now, &mut || {}).map(|m| (name, m))
    })
    .await
    .map_err(|e| ApiError::Internal(e.to_string()))?
    .map_err(|e| ApiError::Internal(e.to_string()))?;
    tracing::info!(backup = %name, entries = manifest.entries, "backup made");
    Ok(Json(json!({ "backup": name, "entries": manifest.entries, "made_at_ms": manifest.made_at_ms })).into_response())
}

/// Erasure (GDPR, APPI): the document is deleted from the relay, its id is tombstoned so no copy
/// can come back, and every device syncing it, now or later, is told to delete its copy.
async fn erase(admin: Admin, State(s): State<AppState>, Path(id): Path<String>) -> Result<Response, ApiError> {
    let doc: DocumentId = id.parse().map_err(|_| ApiError::BadRequest("not a document id".into()))?;
    let allowed = match s.store.owner_of(&doc).map_err(|e| ApiError::Internal(e.to_string()))? {
        Some((tenant, _, _)) => admin.administers(&tenant),
        // Not a liaison record (no envelope), or already erased: system admins only, if it is stored.
        None => admin.0.is_system_admin() && s.store.kind_of(&doc).is_ok(),
    };
    if !allowed {
        return Err(ApiError::NotFound("document"));
    }
    let (tx, rx) = tokio::sync::oneshot::channel();
    s.relay.send(ActorMsg::Erase { doc, reply: tx }).await;
    rx.await.map_err(|e| ApiError::Internal(e.to_string()))?.map_err(ApiError::Internal)?;
    tracing::info!(document = %doc, by = %admin.0.user, "erasure requested");
    Ok(Json(json!({ "erased": id })).into_response())
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
    let (name, n) = tokio::task::spawn_blocking(move || {
        let (name, dest) =
            crate::backup::fresh_dir(&root, &format!("export-{who}"), now_ms()).map_err(|e| e.to_string())?;
        crate::contract::export_tenant(&store, &who, &dest).map(|n| (name, n))
    })
    .await
    .map_err(|e| ApiError::Internal(e.to_string()))?
    .map_err(ApiError::Internal)?;
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
    let (tx, rx) = tokio::sync::oneshot::channel();
    s.relay.send(ActorMsg::PurgeTenant { tenant: tenant.clone(), reply: tx }).await;
    let n = rx.await.map_err(|e| ApiError::Internal(e.to_string()))?.map_err(ApiError::Internal)?;
    tracing::info!(tenant = %tenant, documents = n, by = %p.user, "tenant purged");
    Ok(Json(json!({ "tenant": tenant, "erased_documents": n, "purged": true })).into_response())
}
