//! The typed sync problems the apps switch on, converted from core's (`client::SyncProblem`).
//! What a UI should do with each is in mobile-bindings/README.md.

use liaison_core::client;

/// Why there is no working credential.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Enum)]
pub enum AuthProblem {
    /// The credential expired and no new one came.
    Expired,
    /// The relay does not know the credential.
    Unknown,
    /// The credential provider had none (the user must sign in interactively, then call
    /// `retry_sign_in`).
    NoCredential,
    /// The credential provider failed (asked again after the backoff).
    ProviderFailed,
    /// The relay refused the identity provider's token at enrolment, with its reason code.
    EnrolmentRefused { code: String },
}

/// What is wrong with sync, typed.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Enum)]
pub enum SyncProblem {
    /// No network (the app said so, or there is no route to the relay).
    NoNetwork,
    /// No working credential; retried after the backoff (`next_attempt_ms`).
    Unauthorized { http_status: Option<i32>, close_code: Option<i32>, reason: AuthProblem },
    /// The device was revoked and no new credential came: sync stopped (until
    /// `retry_sign_in`), and if `wiped`, the local records were erased.
    Revoked { http_status: Option<i32>, close_code: Option<i32>, wiped: bool },
    /// The relay's certificate is not trusted (CA, pin or host name).
    TlsUntrusted,
    /// Connecting failed otherwise; the next attempt is at `next_attempt_ms`.
    BackingOff { retry_in_ms: i64, next_attempt_ms: i64 },
    /// The tenant was purged (410): the local records were erased; sync stopped.
    Retired,
}

/// Why the library erased the local records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, uniffi::Enum)]
pub enum WipeReason {
    Revoked,
    Retired,
}

impl From<client::AuthProblem> for AuthProblem {
    fn from(p: client::AuthProblem) -> Self {
        match p {
            client::AuthProblem::Expired => Self::Expired,
            client::AuthProblem::Unknown => Self::Unknown,
            client::AuthProblem::NoCredential => Self::NoCredential,
            client::AuthProblem::ProviderFailed => Self::ProviderFailed,
            client::AuthProblem::EnrolmentRefused(code) => Self::EnrolmentRefused { code },
        }
    }
}

impl From<client::SyncProblem> for SyncProblem {
    fn from(p: client::SyncProblem) -> Self {
        use client::SyncProblem as P;
        match p {
            P::NoNetwork => Self::NoNetwork,
            P::Unauthorized { http_status, close_code, reason } => Self::Unauthorized {
                http_status: http_status.map(i32::from),
                close_code: close_code.map(i32::from),
                reason: reason.into(),
            },
            P::Revoked { http_status, close_code, wiped } => {
                Self::Revoked { http_status: http_status.map(i32::from), close_code: close_code.map(i32::from), wiped }
            }
            P::TlsUntrusted => Self::TlsUntrusted,
            P::BackingOff { retry_in_ms, next_attempt_ms } => {
                Self::BackingOff { retry_in_ms: i64::try_from(retry_in_ms).unwrap_or(i64::MAX), next_attempt_ms }
            }
            P::Retired => Self::Retired,
        }
    }
}

impl From<client::WipeReason> for WipeReason {
    fn from(r: client::WipeReason) -> Self {
        match r {
            client::WipeReason::Revoked => Self::Revoked,
            client::WipeReason::Retired => Self::Retired,
        }
    }
}
