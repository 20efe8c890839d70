//! Enterprise sign-in: a tenant's identity provider (Entra ID, Okta, Keycloak, any OpenID
//! Connect issuer) vouches for a user, and the relay enrols the user's device with one of its
//! own device credentials (`POST /v1/enrol`, in `http/enrol.rs`).
//!
//! - [`config`]: the `[[oidc]]` tables of the relay's configuration, one per tenant.
//! - [`jwks`]: the issuer's signing keys, cached per tenant, and the rule for fetching them again.
//! - [`verify`]: checking an access token (issuer, algorithm, key, signature, audience, time).
//! - [`claims`]: mapping its claims to liaison's user, role and teams.
//!
//! [`Verifier`] puts them together. A refused token gets a stable [`Refusal`] code; no error
//! here holds the token or a claim's value.

pub mod claims;
pub mod config;
pub mod jwks;
pub mod verify;

use serde_json::Value;
use tokio::sync::Mutex;

use self::config::OidcTenant;
use self::jwks::{KeyCache, Lookup, RefreshRule};

/// Why an IdP token was refused: the code is what the client reads and the relay logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// No `Authorization: Bearer` header.
    #[error("no-token")]
    NoToken,
    /// Not a JWT (three base64url parts of JSON objects, at most 16 KiB).
    #[error("malformed")]
    Malformed,
    /// The header's `alg` is not one the tenant accepts (`none` and `HS*` never are), or the
    /// key it names is of another kind.
    #[error("bad-algorithm")]
    BadAlgorithm,
    /// No tenant trusts the token's issuer.
    #[error("wrong-issuer")]
    WrongIssuer,
    /// The `kid` is not among the issuer's published keys (or the token names none).
    #[error("unknown-key")]
    UnknownKey,
    #[error("bad-signature")]
    BadSignature,
    #[error("wrong-audience")]
    WrongAudience,
    #[error("expired")]
    Expired,
    #[error("not-yet-valid")]
    NotYetValid,
    /// `exp`, `iss`, `aud` or the configured user claim is missing.
    #[error("missing-claim")]
    MissingClaim,
    /// The user claim is not a string liaison takes as a user name.
    #[error("bad-user-claim")]
    BadUserClaim,
    /// No value of the role claim maps to a liaison role.
    #[error("no-role")]
    NoRole,
    /// Values of the role claim map to two different liaison roles.
    #[error("ambiguous-role")]
    AmbiguousRole,
    /// The issuer's keys cannot be fetched now (the relay's side: HTTP 503).
    #[error("jwks-unavailable")]
    JwksUnavailable,
}

impl Refusal {
    pub fn code(self) -> &'static str {
        match self {
            Self::NoToken => "no-token",
            Self::Malformed => "malformed",
            Self::BadAlgorithm => "bad-algorithm",
            Self::WrongIssuer => "wrong-issuer",
            Self::UnknownKey => "unknown-key",
            Self::BadSignature => "bad-signature",
            Self::WrongAudience => "wrong-audience",
            Self::Expired => "expired",
            Self::NotYetValid => "not-yet-valid",
            Self::MissingClaim => "missing-claim",
            Self::BadUserClaim => "bad-user-claim",
            Self::NoRole => "no-role",
            Self::AmbiguousRole => "ambiguous-role",
            Self::JwksUnavailable => "jwks-unavailable",
        }
    }
}

/// A refused token, and the tenant it was for when its issuer named one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejected {
    pub tenant: Option<String>,
    /// The user, when the token was verified and refused for its claims (no role, say): only
    /// then is the refusal an enrolment of that user, for the tenant's audit log.
    pub user: Option<String>,
    pub refusal: Refusal,
}

/// A verified token of a tenant, mapped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    pub tenant: String,
    pub mapped: claims::Mapped,
    /// The device credential's lifetime for this tenant, in seconds.
    pub credential_ttl_secs: u64,
}

/// Every tenant's issuer, with its cached keys.
#[derive(Debug, Default)]
pub struct Verifier {
    tenants: Vec<OidcTenant>,
    caches: Vec<Mutex<KeyCache>>,
}

impl Verifier {
    pub fn new(tenants: &[OidcTenant]) -> Self {
        Self { tenants: tenants.to_vec(), caches: tenants.iter().map(|_| Mutex::default()).collect() }
    }

    /// Whether any tenant signs in through an identity provider.
    pub fn is_empty(&self) -> bool {
        self.tenants.is_empty()
    }

    /// Verifies `token` at `now_ms` and maps its claims (see [`verify`] for the order of checks).
    pub async fn verify(&self, token: &str, now_ms: i64) -> Result<Verified, Rejected> {
        let unknown = |refusal| Rejected { tenant: None, user: None, refusal };
        let peeked = verify::peek(token).map_err(unknown)?;
        let (index, alg) = verify::choose(&self.tenants, &peeked).map_err(unknown)?;
        let tenant = &self.tenants[index];
        let reject = |refusal| Rejected { tenant: Some(tenant.tenant.clone()), user: None, refusal };
        let kid = peeked.kid.as_deref().ok_or(reject(Refusal::UnknownKey))?;
        let key = self.key(index, kid, now_ms).await.map_err(reject)?;
        if !key.fits(alg) {
            return Err(reject(Refusal::BadAlgorithm));
        }
        let claims: Value = verify::check(token, alg, &key.key, tenant, now_ms.div_euclid(1000)).map_err(reject)?;
        let mapped = claims::map(tenant, &claims).map_err(|refusal| {
            let user = claims::claim_at(&claims, &tenant.user_claim)
                .and_then(Value::as_str)
                .filter(|user| crate::auth::is_valid_user_name(user));
            Rejected { tenant: Some(tenant.tenant.clone()), user: user.map(str::to_owned), refusal }
        })?;
        Ok(Verified { tenant: tenant.tenant.clone(), mapped, credential_ttl_secs: tenant.credential_ttl_secs })
    }

    /// The tenant's key `kid`, fetching the keys again if the rule says so. Enrolments of one
    /// tenant wait for its fetch rather than start their own.
    async fn key(&self, index: usize, kid: &str, now_ms: i64) -> Result<jwks::PublishedKey, Refusal> {
        let tenant = &self.tenants[index];
        let rule = RefreshRule::from_secs(tenant.jwks_min_refresh_secs, tenant.jwks_max_age_secs);
        let mut cache = self.caches[index].lock().await;
        match cache.lookup(kid, now_ms, rule) {
            Lookup::Found(key) => return Ok(key.clone()),
            Lookup::Unknown => return Err(Refusal::UnknownKey),
            Lookup::Stale => return Err(Refusal::JwksUnavailable),
            Lookup::Fetch => {}
        }
        let (url, ca) = (tenant.jwks_url.clone(), tenant.jwks_ca_file.clone());
        let fetched =
            tokio::task::spawn_blocking(move || jwks::fetch(&url, ca.as_deref()).and_then(|doc| jwks::parse(&doc)))
                .await;
        match fetched {
            Ok(Ok(keys)) => {
                tracing::info!(tenant = %tenant.tenant, keys = keys.len(), "fetched the identity provider's keys");
                cache.fetched(keys, now_ms);
            }
            Ok(Err(e)) => {
                tracing::warn!(tenant = %tenant.tenant, error = %e, "cannot fetch the identity provider's keys");
                cache.fetch_failed(now_ms);
            }
            Err(e) => {
                tracing::error!(tenant = %tenant.tenant, error = %e, "the key fetch's task failed");
                cache.fetch_failed(now_ms);
            }
        }
        match cache.lookup_after_fetch(kid, now_ms, rule) {
            Lookup::Found(key) => Ok(key.clone()),
            Lookup::Unknown => Err(Refusal::UnknownKey),
            Lookup::Stale | Lookup::Fetch => Err(Refusal::JwksUnavailable),
        }
    }
}
