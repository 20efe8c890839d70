//! Identity: tenants, teams, users with roles, devices and their tokens.
//!
//! A token is 32 random bytes, shown once (`lsn_` + base64url) and stored only as its SHA-256.
//! Nothing here logs or returns a token after issuing it, and errors never contain one.

use std::sync::Arc;

use base64::Engine as _;
use liaison_core::Role;
use liaison_core::storage::{Batch, KvStore, StorageError};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::keys;
use crate::support::SupportAccess;

/// The tenant whose admins administer the relay itself (every tenant).
pub const SYSTEM_TENANT: &str = "system";

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("no credential")]
    Missing,
    #[error("invalid credential")]
    Invalid,
    #[error("credential expired")]
    Expired,
    #[error("credential revoked")]
    Revoked,
    /// The credential's tenant was purged (contract end): devices erase their copies.
    #[error("tenant purged")]
    TenantPurged,
    #[error("a single-use credential opens the admin API only")]
    SingleUse,
    #[error("{0} not found")]
    NotFound(&'static str),
    #[error("{0} already exists")]
    Exists(&'static str),
    #[error("{what} is not a valid name: use 1 to 64 letters, digits, '.', '_' or '-'")]
    BadName { what: &'static str },
    #[error("ttl_secs may be at most {max_secs} seconds")]
    TtlTooLong { max_secs: u64 },
    #[error("{0}")]
    InvalidGrant(&'static str),
    #[error("{0}")]
    NotAllowed(&'static str),
    #[error("stored identity data is unreadable")]
    Corrupt,
    #[error(transparent)]
    Ledger(#[from] crate::ledger::LedgerError),
    #[error(transparent)]
    Storage(#[from] StorageError),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RoleName {
    Msl,
    Manager,
    MedicalInformation,
    Admin,
}

impl From<RoleName> for Role {
    fn from(r: RoleName) -> Self {
        match r {
            RoleName::Msl => Role::Msl,
            RoleName::Manager => Role::Manager,
            RoleName::MedicalInformation => Role::MedicalInformation,
            RoleName::Admin => Role::Admin,
        }
    }
}

/// A role name that is none of the four.
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("role must be msl, manager, medical-information or admin")]
pub struct UnknownRole;

impl std::str::FromStr for RoleName {
    type Err = UnknownRole;
    fn from_str(s: &str) -> Result<Self, UnknownRole> {
        match s {
            "msl" => Ok(Self::Msl),
            "manager" => Ok(Self::Manager),
            "medical-information" => Ok(Self::MedicalInformation),
            "admin" => Ok(Self::Admin),
            _ => Err(UnknownRole),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TenantRecord {
    pub tenant: String,
    pub created_at: i64,
    /// Set when the tenant's data was purged at contract end; the record stays as proof.
    pub purged_at: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserRecord {
    pub tenant: String,
    pub user: String,
    pub role: RoleName,
    pub teams: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenRecord {
    pub id: String,
    pub tenant: String,
    pub user: String,
    pub device: String,
    pub issued_at: i64,
    pub expires_at: Option<i64>,
    pub revoked_at: Option<i64>,
    /// Good for one admin request, then revoked (the bootstrap credential); never for sync.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub single_use: bool,
}

/// A single-use credential spent on a request: it is revoked; [`AuthStore::release`] gives it
/// back if the request failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SingleUseClaim {
    pub token_id: String,
    token_hash: String,
    at: i64,
}

impl SingleUseClaim {
    /// Whether `secret` is the credential spent.
    pub fn is_for(&self, secret: &str) -> bool {
        hash_token(secret) == self.token_hash
    }
}

/// Who is on the other end of a connection, as of the last check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub tenant: String,
    pub user: String,
    pub device: String,
    pub role: RoleName,
    pub teams: Vec<String>,
    pub token_id: String,
    /// SHA-256 of the token, to re-check revocation while connected.
    pub token_hash: String,
    /// For a system admin: the support grants in force (tenants it may read, see `support`).
    pub support: Vec<SupportAccess>,
}

impl Principal {
    pub fn is_system_admin(&self) -> bool {
        self.role == RoleName::Admin && self.tenant == SYSTEM_TENANT
    }
}

/// 1 to 64 letters, digits, '.', '_' or '-': a tenant, team or device name.
pub fn is_valid_name(s: &str) -> bool {
    !s.is_empty() && s.len() <= 64 && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
}

/// A user name may also hold '@' (identity providers name users by e-mail or UPN).
pub fn is_valid_user_name(s: &str) -> bool {
    !s.is_empty() && s.len() <= 64 && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-@".contains(&b))
}

fn check_name(what: &'static str, s: &str) -> Result<(), AuthError> {
    let ok = if what == "user" { is_valid_user_name(s) } else { is_valid_name(s) };
    if ok { Ok(()) } else { Err(AuthError::BadName { what }) }
}

/// `ttl_secs` after `now` (milliseconds), saturating.
fn expiry(now: i64, ttl_secs: u64) -> i64 {
    now.saturating_add(i64::try_from(ttl_secs).unwrap_or(i64::MAX).saturating_mul(1000))
}

fn hash_token(secret: &str) -> String {
    Sha256::digest(secret.as_bytes()).iter().map(|b| format!("{b:02x}")).collect()
}

pub(crate) fn random_bytes<const N: usize>() -> [u8; N] {
    let mut out = [0u8; N];
    for chunk in out.chunks_mut(16) {
        // Each v4 UUID carries 122 bits from the OS's random source: 32 bytes carry 244.
        let r = uuid::Uuid::new_v4();
        chunk.copy_from_slice(&r.as_bytes()[..chunk.len()]);
    }
    out
}

/// How long tokens live (`limits.default_token_ttl_secs`, `limits.max_token_ttl_secs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TokenLifetimes {
    /// For a token issued without a lifetime.
    pub default_secs: u64,
    /// The longest a token may be issued for.
    pub max_secs: u64,
}

impl TokenLifetimes {
    pub fn from_limits(limits: &crate::config::Limits) -> Self {
        Self { default_secs: limits.default_token_ttl_secs, max_secs: limits.max_token_ttl_secs }
    }
}

impl Default for TokenLifetimes {
    fn default() -> Self {
        Self::from_limits(&crate::config::Limits::default())
    }
}

/// The identity store, on the relay's key-value store under `a/`.
#[derive(Debug, Clone)]
pub struct AuthStore {
    pub(crate) kv: Arc<dyn KvStore>,
    /// Revocations are written here before they take effect, so a restore re-applies them.
    pub(crate) ledger: Option<Arc<crate::ledger::Ledger>>,
    lifetimes: TokenLifetimes,
    /// Held while a single-use credential is spent or given back: of requests racing with
    /// one, exactly one gets it.
    single_use: Arc<std::sync::Mutex<()>>,
}

impl AuthStore {
    /// An identity store issuing tokens with the default lifetimes.
    pub fn new(kv: Arc<dyn KvStore>) -> Self {
        Self { kv, ledger: None, lifetimes: TokenLifetimes::default(), single_use: Arc::default() }
    }

    /// An identity store whose revocations go into the security ledger first.
    pub fn with_ledger(kv: Arc<dyn KvStore>, ledger: Arc<crate::ledger::Ledger>) -> Self {
        Self { kv, ledger: Some(ledger), lifetimes: TokenLifetimes::default(), single_use: Arc::default() }
    }

    /// The same store, issuing tokens with `lifetimes`.
    pub fn with_lifetimes(mut self, lifetimes: TokenLifetimes) -> Self {
        self.lifetimes = lifetimes;
        self
    }

    pub(crate) fn get<T: for<'de> Deserialize<'de>>(&self, key: &[u8]) -> Result<Option<T>, AuthError> {
        match self.kv.get(key)? {
            Some(v) => serde_json::from_slice(&v).map(Some).map_err(|_| AuthError::Corrupt),
            None => Ok(None),
        }
    }

    fn put<T: Serialize>(&self, key: &[u8], value: &T) -> Result<(), AuthError> {
        let bytes = serde_json::to_vec(value).map_err(|_| AuthError::Corrupt)?;
        self.kv.put(key, &bytes)?;
        self.kv.flush()?;
        Ok(())
    }

    pub(crate) fn scan<T: for<'de> Deserialize<'de>>(&self, prefix: &[u8]) -> Result<Vec<T>, AuthError> {
        self.kv
            .scan_prefix(prefix)?
            .into_iter()
            .map(|(_, v)| serde_json::from_slice(&v).map_err(|_| AuthError::Corrupt))
            .collect()
    }

    pub fn add_tenant(&self, tenant: &str, now: i64) -> Result<TenantRecord, AuthError> {
        check_name("tenant", tenant)?;
        let key = keys::tenant(tenant);
        if self.get::<TenantRecord>(&key)?.is_some() {
            return Err(AuthError::Exists("tenant"));
        }
        let rec = TenantRecord { tenant: tenant.into(), created_at: now, purged_at: None };
        self.put(&key, &rec)?;
        Ok(rec)
    }

    pub fn tenant(&self, tenant: &str) -> Result<Option<TenantRecord>, AuthError> {
        self.get(&keys::tenant(tenant))
    }

    pub fn tenants(&self) -> Result<Vec<TenantRecord>, AuthError> {
        self.scan(keys::TENANTS)
    }

    pub fn mark_tenant_purged(&self, tenant: &str, now: i64) -> Result<(), AuthError> {
        let mut rec = self.tenant(tenant)?.ok_or(AuthError::NotFound("tenant"))?;
        rec.purged_at = Some(now);
        self.put(&keys::tenant(tenant), &rec)
    }

    pub fn add_team(&self, tenant: &str, team: &str) -> Result<(), AuthError> {
        check_name("team", team)?;
        self.tenant(tenant)?.ok_or(AuthError::NotFound("tenant"))?;
        self.put(&keys::team(tenant, team), &team)
    }

    pub fn teams(&self, tenant: &str) -> Result<Vec<String>, AuthError> {
        self.scan(&keys::teams_of(tenant))
    }

    /// Adds or replaces a user (role and teams are the user's grants).
    pub fn put_user(
        &self,
        tenant: &str,
        user: &str,
        role: RoleName,
        teams: &[String],
    ) -> Result<UserRecord, AuthError> {
        check_name("user", user)?;
        self.tenant(tenant)?.ok_or(AuthError::NotFound("tenant"))?;
        let known = self.teams(tenant)?;
        if let Some(_missing) = teams.iter().find(|t| !known.contains(t)) {
            return Err(AuthError::NotFound("team"));
        }
        let rec = UserRecord { tenant: tenant.into(), user: user.into(), role, teams: teams.to_vec() };
        self.put(&keys::user(tenant, user), &rec)?;
        Ok(rec)
    }

    pub fn user(&self, tenant: &str, user: &str) -> Result<Option<UserRecord>, AuthError> {
        self.get(&keys::user(tenant, user))
    }

    pub fn users(&self, tenant: &str) -> Result<Vec<UserRecord>, AuthError> {
        self.scan(&keys::users_of(tenant))
    }

    /// Issues a token for one user on one device, for `ttl_secs` (the default lifetime if
    /// `None`; refused above the maximum). The secret is returned once and never stored.
    pub fn issue_token(
        &self,
        tenant: &str,
        user: &str,
        device: &str,
        ttl_secs: Option<u64>,
        now: i64,
    ) -> Result<(TokenRecord, String), AuthError> {
        let ttl_secs = ttl_secs.unwrap_or(self.lifetimes.default_secs);
        if ttl_secs > self.lifetimes.max_secs {
            return Err(AuthError::TtlTooLong { max_secs: self.lifetimes.max_secs });
        }
        self.issue(tenant, user, device, expiry(now, ttl_secs), false, now)
    }

    fn issue(
        &self,
        tenant: &str,
        user: &str,
        device: &str,
        expires_at: i64,
        single_use: bool,
        now: i64,
    ) -> Result<(TokenRecord, String), AuthError> {
        check_name("device", device)?;
        self.user(tenant, user)?.ok_or(AuthError::NotFound("user"))?;
        let secret = format!("lsn_{}", base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(random_bytes::<32>()));
        let id = format!("tok_{}", hash_token(&secret)[..12].to_owned());
        let rec = TokenRecord {
            id: id.clone(),
            tenant: tenant.into(),
            user: user.into(),
            device: device.into(),
            issued_at: now,
            expires_at: Some(expires_at),
            revoked_at: None,
            single_use,
        };
        let hash = hash_token(&secret);
        let mut batch = Batch::new();
        batch.put(keys::token(&hash), serde_json::to_vec(&rec).map_err(|_| AuthError::Corrupt)?);
        batch.put(keys::token_id(&id), hash.into_bytes());
        self.kv.apply(batch)?;
        self.kv.flush()?;
        Ok((rec, secret))
    }

    pub fn tokens(&self, tenant: Option<&str>) -> Result<Vec<TokenRecord>, AuthError> {
        let all: Vec<TokenRecord> = self.scan(keys::TOKENS)?;
        Ok(all.into_iter().filter(|t| tenant.is_none_or(|x| t.tenant == x)).collect())
    }

    pub fn token(&self, id: &str) -> Result<TokenRecord, AuthError> {
        let hash = self.kv.get(&keys::token_id(id))?.ok_or(AuthError::NotFound("token"))?;
        let hash = String::from_utf8(hash).map_err(|_| AuthError::Corrupt)?;
        self.get(&keys::token(&hash))?.ok_or(AuthError::NotFound("token"))
    }

    pub fn revoke_token(&self, id: &str, now: i64) -> Result<TokenRecord, AuthError> {
        let hash = self.kv.get(&keys::token_id(id))?.ok_or(AuthError::NotFound("token"))?;
        let hash = String::from_utf8(hash).map_err(|_| AuthError::Corrupt)?;
        let key = keys::token(&hash);
        let mut rec: TokenRecord = self.get(&key)?.ok_or(AuthError::NotFound("token"))?;
        if rec.revoked_at.is_none() {
            if let Some(ledger) = &self.ledger {
                ledger.append(now, crate::ledger::LedgerEvent::TokenRevoked { token: id.to_owned() })?;
            }
            rec.revoked_at = Some(now);
            self.put(&key, &rec)?;
        }
        Ok(rec)
    }

    /// Checks a presented token and returns who it belongs to, with current grants. A
    /// single-use credential is refused here (it opens the admin API only, through
    /// [`AuthStore::authenticate_admin`]).
    pub fn authenticate(&self, secret: &str, now: i64) -> Result<Principal, AuthError> {
        if secret.is_empty() {
            return Err(AuthError::Missing);
        }
        self.check_hash(&hash_token(secret), now)
    }

    /// Re-checks a connection's token by its hash (revocation, expiry, changed grants).
    pub fn check_hash(&self, hash: &str, now: i64) -> Result<Principal, AuthError> {
        let rec = self.token_by_hash(hash)?;
        if rec.single_use {
            return Err(AuthError::SingleUse);
        }
        self.principal(hash, rec, now)
    }

    /// Checks a token presented to the admin API. A single-use credential is spent here,
    /// atomically: the returned claim says so (give it back with [`AuthStore::release`] if the
    /// request fails); a second request with it gets `Revoked`.
    pub fn authenticate_admin(&self, secret: &str, now: i64) -> Result<(Principal, Option<SingleUseClaim>), AuthError> {
        if secret.is_empty() {
            return Err(AuthError::Missing);
        }
        let hash = hash_token(secret);
        let rec = self.token_by_hash(&hash)?;
        if !rec.single_use {
            return Ok((self.principal(&hash, rec, now)?, None));
        }
        let _spending = self.single_use.lock().unwrap_or_else(|p| p.into_inner());
        let mut rec = self.token_by_hash(&hash)?;
        let principal = self.principal(&hash, rec.clone(), now)?;
        // Spent is revoked: in the ledger first, like every revocation, so a restore does not
        // bring it back (given back after a failed request, a restore still revokes it: the
        // relay then offers a new one).
        if let Some(ledger) = &self.ledger {
            ledger.append(now, crate::ledger::LedgerEvent::TokenRevoked { token: rec.id.clone() })?;
        }
        rec.revoked_at = Some(now);
        self.put(&keys::token(&hash), &rec)?;
        Ok((principal, Some(SingleUseClaim { token_id: rec.id, token_hash: hash, at: now })))
    }

    /// Gives back a single-use credential spent on a request that failed, unless it was
    /// revoked since.
    pub fn release(&self, claim: &SingleUseClaim) -> Result<(), AuthError> {
        let _spending = self.single_use.lock().unwrap_or_else(|p| p.into_inner());
        let mut rec = self.token_by_hash(&claim.token_hash)?;
        if rec.revoked_at == Some(claim.at) {
            rec.revoked_at = None;
            self.put(&keys::token(&claim.token_hash), &rec)?;
        }
        Ok(())
    }

    fn token_by_hash(&self, hash: &str) -> Result<TokenRecord, AuthError> {
        self.get(&keys::token(hash))?.ok_or(AuthError::Invalid)
    }

    fn principal(&self, hash: &str, rec: TokenRecord, now: i64) -> Result<Principal, AuthError> {
        if rec.revoked_at.is_some() {
            return Err(AuthError::Revoked);
        }
        if rec.expires_at.is_some_and(|e| e <= now) {
            return Err(AuthError::Expired);
        }
        let tenant = self.tenant(&rec.tenant)?.ok_or(AuthError::Invalid)?;
        if tenant.purged_at.is_some() {
            return Err(AuthError::TenantPurged);
        }
        let user = self.user(&rec.tenant, &rec.user)?.ok_or(AuthError::Revoked)?;
        let support = if user.role == RoleName::Admin && rec.tenant == SYSTEM_TENANT {
            self.active_support(&rec.user, now)?
        } else {
            Vec::new()
        };
        Ok(Principal {
            tenant: rec.tenant,
            user: rec.user,
            device: rec.device,
            role: user.role,
            teams: user.teams,
            token_id: rec.id,
            token_hash: hash.to_owned(),
            support,
        })
    }

    /// Whether the relay should offer a bootstrap credential: no system admin holds a token
    /// that works (a first start, or every one expired or was revoked).
    pub fn needs_bootstrap(&self, now: i64) -> Result<bool, AuthError> {
        let admins: Vec<String> =
            self.users(SYSTEM_TENANT)?.into_iter().filter(|u| u.role == RoleName::Admin).map(|u| u.user).collect();
        let working = self
            .tokens(Some(SYSTEM_TENANT))?
            .into_iter()
            .any(|t| admins.contains(&t.user) && t.revoked_at.is_none() && t.expires_at.is_none_or(|e| e > now));
        Ok(!working)
    }

    /// Creates the system tenant and its admin if missing, and a credential for them that works
    /// for one admin request within [`BOOTSTRAP_TTL_SECS`] (and never for sync).
    pub fn bootstrap_admin(&self, device: &str, now: i64) -> Result<(TokenRecord, String), AuthError> {
        if self.tenant(SYSTEM_TENANT)?.is_none() {
            self.add_tenant(SYSTEM_TENANT, now)?;
        }
        self.put_user(SYSTEM_TENANT, "admin", RoleName::Admin, &[])?;
        self.issue(SYSTEM_TENANT, "admin", device, expiry(now, BOOTSTRAP_TTL_SECS), true, now)
    }
}

/// How long the bootstrap credential works if unused: a day.
pub const BOOTSTRAP_TTL_SECS: u64 = 24 * 3600;

#[cfg(test)]
mod tests {
    use liaison_core::storage::MemoryKv;

    use super::*;

    fn store() -> AuthStore {
        let s = AuthStore::new(Arc::new(MemoryKv::new()));
        s.add_tenant("pharma-a", 0).unwrap();
        s.add_team("pharma-a", "onc-east").unwrap();
        s.put_user("pharma-a", "sato", RoleName::Msl, &["onc-east".into()]).unwrap();
        s
    }

    #[test]
    fn a_token_authenticates_its_user_and_device_until_revoked() {
        let s = store();
        let (rec, secret) = s.issue_token("pharma-a", "sato", "iphone-1", None, 10).unwrap();
        assert!(secret.starts_with("lsn_") && secret.len() > 40);
        let p = s.authenticate(&secret, 20).unwrap();
        assert_eq!((p.user.as_str(), p.device.as_str(), p.role), ("sato", "iphone-1", RoleName::Msl));
        assert_eq!(p.teams, ["onc-east"]);
        s.revoke_token(&rec.id, 30).unwrap();
        assert!(matches!(s.authenticate(&secret, 40), Err(AuthError::Revoked)));
    }

    #[test]
    fn only_the_hash_is_stored() {
        let kv = Arc::new(MemoryKv::new());
        let s = AuthStore::new(kv.clone());
        s.add_tenant("t", 0).unwrap();
        s.put_user("t", "u", RoleName::Msl, &[]).unwrap();
        let (_, secret) = s.issue_token("t", "u", "d", None, 0).unwrap();
        let raw = &secret[4..];
        for (k, v) in kv.scan_prefix(b"").unwrap() {
            let all = [k, v].concat();
            assert!(!String::from_utf8_lossy(&all).contains(raw), "the secret is stored somewhere");
        }
    }

    #[test]
    fn wrong_expired_and_missing_tokens_are_refused() {
        let s = store();
        assert!(matches!(s.authenticate("", 0), Err(AuthError::Missing)));
        assert!(matches!(s.authenticate("lsn_nope", 0), Err(AuthError::Invalid)));
        let (_, secret) = s.issue_token("pharma-a", "sato", "d", Some(60), 1_000).unwrap();
        s.authenticate(&secret, 60_999).unwrap();
        assert!(matches!(s.authenticate(&secret, 61_000), Err(AuthError::Expired)));
        let e = s.authenticate("lsn_secret-value", 0).unwrap_err();
        assert!(!e.to_string().contains("secret-value"));
    }

    #[test]
    fn tokens_get_the_default_lifetime_and_none_beyond_the_maximum() {
        let kv = Arc::new(MemoryKv::new());
        let s = AuthStore::new(kv.clone()).with_lifetimes(TokenLifetimes { default_secs: 60, max_secs: 3600 });
        s.add_tenant("pharma-a", 0).unwrap();
        s.put_user("pharma-a", "sato", RoleName::Msl, &[]).unwrap();
        let (rec, secret) = s.issue_token("pharma-a", "sato", "d", None, 1_000).unwrap();
        assert_eq!(rec.expires_at, Some(61_000));
        assert!(matches!(s.authenticate(&secret, 61_000), Err(AuthError::Expired)));
        let (rec, _) = s.issue_token("pharma-a", "sato", "d", Some(3600), 0).unwrap();
        assert_eq!(rec.expires_at, Some(3_600_000));
        let e = s.issue_token("pharma-a", "sato", "d", Some(3601), 0).unwrap_err();
        assert_eq!(e.to_string(), "ttl_secs may be at most 3600 seconds");
        assert!(matches!(s.issue_token("pharma-a", "sato", "d", Some(u64::MAX), 0), Err(AuthError::TtlTooLong { .. })));

        // A token stored before lifetimes were enforced has none, and keeps working.
        let (mut old, old_secret) = s.issue_token("pharma-a", "sato", "old-phone", None, 0).unwrap();
        old.expires_at = None;
        let hash = hash_token(&old_secret);
        kv.put(&keys::token(&hash), &serde_json::to_vec(&old).unwrap()).unwrap();
        assert_eq!(s.authenticate(&old_secret, i64::MAX / 2).unwrap().device, "old-phone");
    }

    #[test]
    fn names_are_checked_and_grants_name_known_teams() {
        let s = store();
        assert!(matches!(s.add_tenant("a/b", 0), Err(AuthError::BadName { what: "tenant" })));
        assert!(matches!(
            s.put_user("pharma-a", "x", RoleName::Msl, &["nope".into()]),
            Err(AuthError::NotFound("team"))
        ));
        assert!(matches!(s.add_tenant("pharma-a", 0), Err(AuthError::Exists("tenant"))));
    }

    #[test]
    fn bootstrap_makes_a_system_admin_with_a_credential_for_one_admin_request() {
        let s = AuthStore::new(Arc::new(MemoryKv::new()));
        assert!(s.needs_bootstrap(0).unwrap());
        let (rec, secret) = s.bootstrap_admin("console", 0).unwrap();
        assert_eq!(rec.expires_at, Some(86_400_000));
        assert!(!s.needs_bootstrap(1).unwrap(), "an unspent bootstrap credential works");
        assert!(matches!(s.authenticate(&secret, 1), Err(AuthError::SingleUse)), "never for sync");
        let (p, claim) = s.authenticate_admin(&secret, 2).unwrap();
        assert!(p.is_system_admin());
        let claim = claim.expect("spent");
        assert!(claim.is_for(&secret));
        assert!(matches!(s.authenticate_admin(&secret, 3), Err(AuthError::Revoked)));
        // Given back (its request failed), it works once more.
        s.release(&claim).unwrap();
        assert!(s.authenticate_admin(&secret, 4).unwrap().1.is_some());
        assert!(matches!(s.authenticate_admin(&secret, 5), Err(AuthError::Revoked)));
        // Spent, with no other system admin token: the next start offers a new one.
        assert!(s.needs_bootstrap(6).unwrap());
        let (_, again) = s.bootstrap_admin("console", 6).unwrap();
        let (_, operator) = s.issue_token(SYSTEM_TENANT, "admin", "laptop", Some(60), 7).unwrap();
        assert!(!s.needs_bootstrap(8).unwrap());
        assert!(s.authenticate_admin(&operator, 9).unwrap().1.is_none(), "an ordinary token is not spent");
        assert!(s.authenticate_admin(&operator, 10).is_ok());
        // Unused for a day, it expires; so does the operator's token, and a new one is offered.
        assert!(matches!(s.authenticate_admin(&again, 6 + 86_400_000), Err(AuthError::Expired)));
        assert!(s.needs_bootstrap(6 + 86_400_000).unwrap());
    }
}
