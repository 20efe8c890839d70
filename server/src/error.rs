//! The relay's error types, one per layer; [`ApiError`] is what HTTP clients see.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::auth::AuthError;

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
