//! The relay's error types, one per layer: [`MaintenanceError`] for erasures, purges and exports
//! (the admin API's and the admin CLI's), [`ActorGone`] for a round trip to the relay's actor, and
//! [`ApiError`], what HTTP clients see: a status and a short reason; the details go to the
//! relay's log only. No error's text holds a token or a record's content: names, ids and causes.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use liaison_core::StoreError;
use liaison_core::storage::StorageError;
use serde_json::json;

use crate::auth::AuthError;
use crate::backup::BackupError;
use crate::ledger::LedgerError;

/// Why an erasure, a purge or a tenant export failed.
#[derive(Debug, thiserror::Error)]
pub enum MaintenanceError {
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Auth(#[from] AuthError),
    #[error(transparent)]
    Ledger(#[from] LedgerError),
    #[error(transparent)]
    Backup(#[from] BackupError),
    #[error("no such tenant")]
    NoSuchTenant,
    #[error("another erasure or purge is running; try again")]
    Busy,
    #[error("cannot write {file}: {source}")]
    Write { file: String, source: std::io::Error },
    #[error("cannot encode {file}: {source}")]
    Encode { file: &'static str, source: serde_json::Error },
}

/// The relay's actor did not answer a request (it stopped, or dropped the reply).
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("the relay's actor stopped before it answered")]
pub struct ActorGone;

/// Why a device credential was refused, as the device endpoints tell it: a client may drop an
/// expired credential and ask for a new one, while a revoked one means IT cut this device off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CredentialRefusal {
    /// No credential was presented.
    Missing,
    /// No such credential (never issued, or mistyped).
    Unknown,
    /// The credential's lifetime is over.
    Expired,
    /// An admin (or the identity provider, at an enrolment) revoked it, or its user was removed.
    Revoked,
}

impl CredentialRefusal {
    /// The stable code clients read.
    pub fn code(self) -> &'static str {
        match self {
            Self::Missing => "missing",
            Self::Unknown => "unknown",
            Self::Expired => "expired",
            Self::Revoked => "revoked",
        }
    }
}

/// API errors: a status and a short reason for the client; details stay in the server's log.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("unauthorized")]
    Unauthorized,
    /// A device credential refused on the device endpoints (sync, catalog, whoami): 401 with a
    /// stable reason a client acts on (`missing`, `unknown`, `expired`, `revoked`), in the body
    /// and in `WWW-Authenticate` (RFC 6750). Never the credential itself.
    #[error("unauthorized")]
    CredentialRefused(CredentialRefusal),
    #[error("forbidden")]
    Forbidden,
    #[error("{0} not found")]
    NotFound(&'static str),
    /// Its text goes to the client: fixed texts and names only.
    #[error("{0}")]
    BadRequest(String),
    #[error("{0} already exists")]
    Conflict(&'static str),
    /// 410: the tenant was purged; devices erase their local copies.
    #[error("tenant purged")]
    Gone,
    /// An identity provider's token refused at enrolment: 401 with its reason code (503 when
    /// the provider's keys cannot be fetched).
    #[error("token refused: {0}")]
    TokenRefused(crate::oidc::Refusal),
    /// Logged; the client reads "internal error".
    #[error("internal error: {0}")]
    Internal(String),
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = match &self {
            ApiError::Unauthorized => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden => StatusCode::FORBIDDEN,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::Gone => StatusCode::GONE,
            ApiError::TokenRefused(refusal) => {
                let (status, error) = match refusal {
                    crate::oidc::Refusal::JwksUnavailable => {
                        (StatusCode::SERVICE_UNAVAILABLE, "identity provider unavailable")
                    }
                    _ => (StatusCode::UNAUTHORIZED, "unauthorized"),
                };
                return (status, Json(json!({ "error": error, "reason": refusal.code() }))).into_response();
            }
            ApiError::CredentialRefused(refusal) => {
                let challenge = format!("Bearer error=\"invalid_token\", error_description=\"{}\"", refusal.code());
                let body = Json(json!({ "error": "unauthorized", "reason": refusal.code() }));
                return (StatusCode::UNAUTHORIZED, [(axum::http::header::WWW_AUTHENTICATE, challenge)], body)
                    .into_response();
            }
            ApiError::Internal(detail) => {
                tracing::error!(error = %detail, "request failed");
                let reason = json!({ "error": "internal error" });
                return (StatusCode::INTERNAL_SERVER_ERROR, Json(reason)).into_response();
            }
        };
        (status, Json(json!({ "error": self.to_string() }))).into_response()
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

/// A document that is gone answers 404; a record the model refuses (locked, invalid) or that
/// does not lock, 400 with the store's fixed text; anything else is the relay's failure.
impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound(_) => ApiError::NotFound("document"),
            StoreError::Model(model) => ApiError::BadRequest(model.to_string()),
            not_lockable @ StoreError::NotLockable { .. } => ApiError::BadRequest(not_lockable.to_string()),
            other => ApiError::Internal(other.to_string()),
        }
    }
}

impl From<StorageError> for ApiError {
    fn from(e: StorageError) -> Self {
        ApiError::Internal(e.to_string())
    }
}

impl From<MaintenanceError> for ApiError {
    fn from(e: MaintenanceError) -> Self {
        ApiError::Internal(e.to_string())
    }
}

impl From<BackupError> for ApiError {
    fn from(e: BackupError) -> Self {
        match e {
            // A fixed text, for the operator who asked.
            BackupError::OnPostgres => ApiError::BadRequest(e.to_string()),
            e => ApiError::Internal(e.to_string()),
        }
    }
}

impl From<ActorGone> for ApiError {
    fn from(e: ActorGone) -> Self {
        ApiError::Internal(e.to_string())
    }
}

/// A blocking task that panicked or was cancelled.
impl From<tokio::task::JoinError> for ApiError {
    fn from(e: tokio::task::JoinError) -> Self {
        ApiError::Internal(e.to_string())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use http_body_util::BodyExt as _;

    async fn answer(e: ApiError) -> (u16, serde_json::Value) {
        let response = e.into_response();
        let status = response.status().as_u16();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        (status, serde_json::from_slice(&body).unwrap())
    }

    #[tokio::test]
    async fn clients_see_a_status_and_a_short_reason_never_the_details() {
        let secret = "lsn_secret-token-and-patient-name";
        let cases = [
            (ApiError::Unauthorized, 401, "unauthorized"),
            (ApiError::Forbidden, 403, "forbidden"),
            (ApiError::NotFound("tenant"), 404, "tenant not found"),
            (ApiError::Conflict("tenant"), 409, "tenant already exists"),
            (ApiError::Gone, 410, "tenant purged"),
            (ApiError::BadRequest("not a document id".into()), 400, "not a document id"),
            (ApiError::Internal(format!("cannot open {secret}")), 500, "internal error"),
            (
                MaintenanceError::Write { file: secret.into(), source: std::io::Error::other(secret) }.into(),
                500,
                "internal error",
            ),
            (ActorGone.into(), 500, "internal error"),
        ];
        for (error, status, reason) in cases {
            assert_eq!(answer(error).await, (status, json!({ "error": reason })));
        }
        let refused = ApiError::TokenRefused(crate::oidc::Refusal::WrongAudience);
        assert_eq!(answer(refused).await, (401, json!({ "error": "unauthorized", "reason": "wrong-audience" })));
        for (refusal, code) in [
            (CredentialRefusal::Missing, "missing"),
            (CredentialRefusal::Unknown, "unknown"),
            (CredentialRefusal::Expired, "expired"),
            (CredentialRefusal::Revoked, "revoked"),
        ] {
            let response = ApiError::CredentialRefused(refusal).into_response();
            let challenge = response.headers().get(axum::http::header::WWW_AUTHENTICATE).unwrap().to_str().unwrap();
            assert_eq!(challenge, format!("Bearer error=\"invalid_token\", error_description=\"{code}\""));
            assert_eq!(
                answer(ApiError::CredentialRefused(refusal)).await,
                (401, json!({ "error": "unauthorized", "reason": code }))
            );
        }
        let unavailable = ApiError::TokenRefused(crate::oidc::Refusal::JwksUnavailable);
        assert_eq!(
            answer(unavailable).await,
            (503, json!({ "error": "identity provider unavailable", "reason": "jwks-unavailable" }))
        );
    }

    #[tokio::test]
    async fn store_errors_map_to_the_answer_their_cause_deserves() {
        let doc = liaison_core::DocumentId::from_bytes([1; 16]);
        assert_eq!(answer(StoreError::NotFound(doc).into()).await.0, 404);
        let locked = StoreError::Model(liaison_core::model::ModelError::Locked);
        assert_eq!(answer(locked.into()).await.0, 400);
        let not_lockable = StoreError::NotLockable { id: doc, kind: None };
        assert_eq!(answer(not_lockable.into()).await, (400, json!({ "error": "records of this kind do not lock" })));
        assert_eq!(answer(StoreError::BadMeta("unreadable").into()).await, (500, json!({ "error": "internal error" })));
    }
}
