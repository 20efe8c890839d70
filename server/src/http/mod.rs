//! The HTTP surface: health, metrics, the WebSocket sync endpoint, the catalog, enrolment and
//! `whoami` ([`enrol`]), and the routers that put them and the admin API ([`admin`], its callers
//! in [`caller`], its audit in [`audit`]) together. The socket loop is in [`socket`].

mod admin;
mod audit;
mod caller;
mod enrol;
mod route;
mod socket;

use crate::now_ms;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::WebSocketUpgrade;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use liaison_core::DocStore;
use liaison_core::model::Kind;
use liaison_core::sync::Access;
use serde::Deserialize;
use serde_json::json;

pub use self::admin::admin_app;
pub use self::caller::{Admin, SystemAdmin};
use self::socket::serve_socket;
use crate::auth::{AuthError, AuthStore, Principal};
use crate::config::{Limits, Secret};
use crate::connections::PerToken;
pub use crate::error::ApiError;
use crate::error::CredentialRefusal;
use crate::metrics::Metrics;
use crate::policy::access_for;
use crate::relay::RelayHandle;

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
    /// The tenants' identity providers, for enrolment.
    pub oidc: Arc<crate::oidc::Verifier>,
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
            data.hints.clone(),
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
            oidc: Arc::new(crate::oidc::Verifier::new(&config.oidc)),
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
        .route("/v1/enrol", axum::routing::post(enrol::enrol))
        .route("/v1/whoami", get(enrol::whoami))
        .with_state(state)
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

/// A device's credential, checked. A refusal names its reason (`CredentialRefusal`) so a device
/// can tell an expired credential (ask for a new one) from a revoked one (cut off).
fn authenticate(state: &AppState, headers: &HeaderMap, query: &TokenQuery) -> Result<Principal, ApiError> {
    let token = presented_token(headers, query).ok_or(ApiError::CredentialRefused(CredentialRefusal::Missing))?;
    state.auth.authenticate(&token, now_ms()).map_err(|e| device_refused(state, e))
}

/// A refused admin credential: a plain 401, the reason only in the log.
fn refused(state: &AppState, e: AuthError) -> ApiError {
    Metrics::add(&state.metrics.auth_failures, 1);
    tracing::info!(reason = %e, "refused a credential");
    ApiError::from(e)
}

/// A refused device credential: 401 with its reason (a purged tenant's, 410 Gone).
fn device_refused(state: &AppState, e: AuthError) -> ApiError {
    Metrics::add(&state.metrics.auth_failures, 1);
    tracing::info!(reason = %e, "refused a credential");
    match e {
        AuthError::Missing => ApiError::CredentialRefused(CredentialRefusal::Missing),
        AuthError::Invalid | AuthError::SingleUse => ApiError::CredentialRefused(CredentialRefusal::Unknown),
        AuthError::Expired => ApiError::CredentialRefused(CredentialRefusal::Expired),
        AuthError::Revoked => ApiError::CredentialRefused(CredentialRefusal::Revoked),
        other => ApiError::from(other),
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
    let route = route::route_of(&principal);
    let mut response = ws
        .protocols([SELECTED_PROTOCOL])
        // tungstenite reserves its whole read buffer per connection (128 KiB by default): most
        // connections idle, so start small; it grows for the rare large frame.
        .read_buffer_size(READ_BUFFER_BYTES)
        .max_message_size(limits.max_frame_bytes)
        .max_frame_size(limits.max_frame_bytes)
        .on_upgrade(move |socket| async move {
            // The token's slot is held while the socket is served (and freed if the upgrade fails).
            let _slot = slot;
            let (sink, stream) = futures::StreamExt::split(socket);
            serve_socket(sink, stream, principal, state.relay, limits, state.metrics).await
        })
        .into_response();
    if let Ok(value) = header::HeaderValue::from_str(&route) {
        response.headers_mut().insert(liaison_core::store::ROUTE_HEADER, value);
    }
    Ok(response)
}

/// The documents a device may sync: discovery for clients (see ARCHITECTURE.md).
async fn catalog(
    State(s): State<AppState>,
    headers: HeaderMap,
    Query(q): Query<TokenQuery>,
) -> Result<Response, ApiError> {
    let p = authenticate(&s, &headers, &q)?;
    let store = s.store.clone();
    let docs = tokio::task::spawn_blocking(move || -> Result<Vec<serde_json::Value>, ApiError> {
        let mut out = Vec::new();
        for id in store.all_documents()? {
            if let Some((tenant, team, kind)) = store.owner_of(&id)?
                && access_for(&p, &tenant, &team, kind) != Access::None
            {
                out.push(json!({ "id": id.to_string(), "kind": kind.map(Kind::as_str), "team": team }));
            }
        }
        Ok(out)
    })
    .await??;
    Ok(Json(json!({ "documents": docs })).into_response())
}
