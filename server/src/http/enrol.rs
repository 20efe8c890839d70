//! Enterprise sign-in for devices: `POST /v1/enrol` exchanges an identity provider's access
//! token (`Authorization: Bearer`, checked by `oidc`) and `{"device": NAME}` for a liaison
//! device credential bound to (tenant, user, device), shown once, with the tenant's
//! `credential_ttl_secs`; `GET /v1/whoami` tells a device credential's holder who it is.
//!
//! Enrolment makes the user what the token says: role and teams are written to the identity
//! store (teams named by the tenant's mapping are created when missing), and live connections
//! are re-checked. The credential is an ordinary device token from then on: peer-id binding,
//! revocation, expiry, the once-a-second re-check. A refusal answers 401 with a reason code
//! (`oidc::Refusal`), is logged at INFO with that code and never the token, and, when the token
//! was verified (its claims were refused), goes into the tenant's audit log like every enrolment.

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;

use super::audit::PeerIp;
use super::{AppState, TokenQuery, presented_token};
use crate::audit::{EnrolmentOutcome, record_enrolment};
use crate::auth::AuthError;
use crate::error::ApiError;
use crate::metrics::Metrics;
use crate::now_ms;
use crate::oidc::{Refusal, Rejected, Verified};
use crate::relay::ActorMsg;

#[derive(Deserialize)]
pub(super) struct EnrolBody {
    device: String,
}

pub(super) async fn enrol(
    State(s): State<AppState>,
    PeerIp(from): PeerIp,
    headers: HeaderMap,
    Json(body): Json<EnrolBody>,
) -> Result<Response, ApiError> {
    // The IdP's token in the header only, never in a URL.
    let Some(token) = presented_token(&headers, &TokenQuery::default()).filter(|t| !t.is_empty()) else {
        return Err(refused(&s, Rejected { tenant: None, user: None, refusal: Refusal::NoToken }, from));
    };
    if !crate::auth::is_valid_name(&body.device) {
        return Err(ApiError::BadRequest(
            "device is not a valid name: use 1 to 64 letters, digits, '.', '_' or '-'".into(),
        ));
    }
    let verified = match s.oidc.verify(&token, now_ms()).await {
        Ok(verified) => verified,
        Err(rejected) => {
            if let (Some(tenant), Some(user)) = (&rejected.tenant, &rejected.user) {
                let (kv, tenant, user, device) = (s.auth.kv.clone(), tenant.clone(), user.clone(), body.device.clone());
                let reason = rejected.refusal.code();
                let outcome = EnrolmentOutcome::Refused { reason };
                let written = tokio::task::spawn_blocking(move || {
                    record_enrolment(kv.as_ref(), &tenant, &user, &device, from, outcome, now_ms())
                })
                .await;
                if !matches!(written, Ok(Ok(()))) {
                    tracing::error!("cannot write a refused enrolment to the audit log");
                }
                if rejected.refusal == Refusal::NoRole
                    && let (Some(tenant), Some(user)) = (&rejected.tenant, &rejected.user)
                {
                    revoke_user(&s, tenant.clone(), user.clone()).await;
                }
            }
            return Err(refused(&s, rejected, from));
        }
    };
    let Verified { tenant, mapped, credential_ttl_secs } = verified;
    let (auth, device) = (s.auth.clone(), body.device.clone());
    let (tenant_name, user_name, role, teams) =
        (tenant.clone(), mapped.user.clone(), mapped.role, mapped.teams.clone());
    let issued = tokio::task::spawn_blocking(move || -> Result<_, ApiError> {
        let now = now_ms();
        let record = auth.tenant(&tenant)?.ok_or(ApiError::NotFound("tenant"))?;
        if record.purged_at.is_some() {
            return Err(ApiError::Gone);
        }
        let known = auth.teams(&tenant)?;
        for team in mapped.teams.iter().filter(|team| !known.contains(team)) {
            match auth.add_team(&tenant, team) {
                Ok(()) | Err(AuthError::Exists(_)) => {}
                Err(e) => return Err(e.into()),
            }
        }
        auth.put_user(&tenant, &mapped.user, mapped.role, &mapped.teams)?;
        let (rec, secret) = auth.issue_token(&tenant, &mapped.user, &device, Some(credential_ttl_secs), now)?;
        let outcome = EnrolmentOutcome::Enrolled { token_id: &rec.id };
        if let Err(e) = record_enrolment(auth.kv.as_ref(), &tenant, &mapped.user, &device, from, outcome, now) {
            // The credential is not handed out unrecorded.
            auth.revoke_token(&rec.id, now)?;
            return Err(ApiError::Internal(format!("cannot write the enrolment to the audit log: {e}")));
        }
        Ok((rec, secret))
    })
    .await??;
    let (rec, secret) = issued;
    // The user's role or teams may have changed: live connections see it now.
    s.relay.send(ActorMsg::Recheck).await;
    tracing::info!(tenant = %tenant_name, user = %user_name, device = %rec.device, token = %rec.id, "device enrolled");
    // The only time the credential leaves the relay.
    let answer = json!({
        "id": rec.id,
        "token": secret,
        "tenant": tenant_name,
        "user": user_name,
        "device": rec.device,
        "role": role,
        "teams": teams,
        "expires_at": rec.expires_at,
    });
    Ok((StatusCode::CREATED, Json(answer)).into_response())
}

/// The identity provider vouched for this user and gave it no liaison role (removed from the
/// group): every credential of the user is revoked (in the security ledger, like an admin's
/// revocation), so its devices are cut within a second instead of at their credentials' expiry.
async fn revoke_user(s: &AppState, tenant: String, user: String) {
    let auth = s.auth.clone();
    let revoked = tokio::task::spawn_blocking(move || -> Result<usize, AuthError> {
        let now = now_ms();
        let mut n = 0;
        for t in auth.tokens(Some(&tenant))?.into_iter().filter(|t| t.user == user && t.revoked_at.is_none()) {
            auth.revoke_token(&t.id, now)?;
            n += 1;
        }
        Ok(n)
    })
    .await;
    match revoked {
        Ok(Ok(0)) => {}
        Ok(Ok(n)) => {
            tracing::info!(credentials = n, "the identity provider gives a user no role; its credentials are revoked");
            s.relay.send(ActorMsg::Recheck).await;
        }
        Ok(Err(e)) => {
            tracing::error!(error = %e, "cannot revoke the credentials of a user the identity provider removed")
        }
        Err(_) => tracing::error!("revoking the credentials of a removed user panicked"),
    }
}

/// Counts and logs a refused enrolment (the code, the tenant if known, never the token).
fn refused(s: &AppState, rejected: Rejected, from: Option<std::net::IpAddr>) -> ApiError {
    Metrics::add(&s.metrics.auth_failures, 1);
    let from = from.map(|ip| ip.to_string()).unwrap_or_default();
    tracing::info!(
        reason = rejected.refusal.code(),
        tenant = rejected.tenant.as_deref().unwrap_or(""),
        from = %from,
        "refused an enrolment"
    );
    ApiError::TokenRefused(rejected.refusal)
}

/// Who a device credential belongs to, as of now: tenant, user, device, role, teams.
pub(super) async fn whoami(State(s): State<AppState>, headers: HeaderMap) -> Result<Response, ApiError> {
    let principal = super::authenticate(&s, &headers, &TokenQuery::default())?;
    Ok(Json(json!({
        "tenant": principal.tenant,
        "user": principal.user,
        "device": principal.device,
        "role": principal.role,
        "teams": principal.teams,
        "token_id": principal.token_id,
    }))
    .into_response())
}
