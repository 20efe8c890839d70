//! A tenant's OpenID Connect configuration (`[[oidc]]` in the relay's TOML): which issuer's
//! access tokens enrol devices of the tenant, how they are checked, and how their claims map to
//! liaison's user, role and teams. Validated by `check-config` and at start; nothing here reads
//! the network.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::auth::{RoleName, SYSTEM_TENANT};

/// The signature algorithms a tenant may accept. Only asymmetric ones: `none` and the HMAC
/// family (`HS*`, which a public key could forge) are not representable, so a configuration
/// naming them does not parse.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum SigningAlgorithm {
    RS256,
    ES256,
}

impl SigningAlgorithm {
    /// The algorithm a token's header names, if it is one of ours (exact, case-sensitive).
    pub fn from_header(alg: &str) -> Option<Self> {
        match alg {
            "RS256" => Some(Self::RS256),
            "ES256" => Some(Self::ES256),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::RS256 => "RS256",
            Self::ES256 => "ES256",
        }
    }

    pub(crate) fn jwt(self) -> jsonwebtoken::Algorithm {
        match self {
            Self::RS256 => jsonwebtoken::Algorithm::RS256,
            Self::ES256 => jsonwebtoken::Algorithm::ES256,
        }
    }
}

/// One tenant's identity provider.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OidcTenant {
    /// The liaison tenant whose devices this issuer enrols (not `system`).
    pub tenant: String,
    /// The `iss` claim, exactly (Entra: `https://login.microsoftonline.com/TENANT-ID/v2.0`).
    pub issuer: String,
    /// Accepted `aud` values (the app registration's Application ID URI or client id).
    pub audiences: Vec<String>,
    /// Where the issuer publishes its signing keys. `https` only, except `http` to a loopback
    /// address (tests).
    pub jwks_url: String,
    /// A PEM file of CA certificates to trust for `jwks_url` instead of the public web roots
    /// (an IdP behind an enterprise CA, such as an internal Keycloak).
    #[serde(default)]
    pub jwks_ca_file: Option<std::path::PathBuf>,
    /// Accepted signature algorithms: `RS256`, `ES256`.
    #[serde(default = "default_algorithms")]
    pub algorithms: Vec<SigningAlgorithm>,
    /// Leeway on `exp` and `nbf`, in seconds (at most 300).
    #[serde(default = "default_clock_skew")]
    pub clock_skew_secs: u64,
    /// The keys are fetched again for an unknown `kid` at most this often, in seconds.
    #[serde(default = "default_min_refresh")]
    pub jwks_min_refresh_secs: u64,
    /// Keys older than this are fetched again before use, in seconds, so a key the issuer
    /// withdrew stops working.
    #[serde(default = "default_max_age")]
    pub jwks_max_age_secs: u64,
    /// Lifetime of the device credential an enrolment issues, in seconds (at most
    /// `limits.max_token_ttl_secs`): how long a user removed at the IdP keeps syncing.
    #[serde(default = "default_credential_ttl")]
    pub credential_ttl_secs: u64,
    /// The claim naming liaison's user: `sub`, `oid`, `preferred_username`, `upn`, `email`...
    #[serde(default = "default_user_claim")]
    pub user_claim: String,
    /// Where the role values are: a claim name, or a dotted path (`realm_access.roles`,
    /// `resource_access.liaison-app.roles`). A claim whose whole name matches wins over a path.
    pub roles_claim: String,
    /// Where the team values are (default: `roles_claim`).
    #[serde(default)]
    pub teams_claim: Option<String>,
    /// IdP value -> liaison role. A token whose values map to no role, or to two different
    /// roles, is refused.
    pub roles: BTreeMap<String, RoleName>,
    /// IdP value -> liaison team name. Values not listed are ignored.
    #[serde(default)]
    pub teams: BTreeMap<String, String>,
}

fn default_algorithms() -> Vec<SigningAlgorithm> {
    vec![SigningAlgorithm::RS256]
}
fn default_clock_skew() -> u64 {
    60
}
fn default_min_refresh() -> u64 {
    300
}
fn default_max_age() -> u64 {
    24 * 3600
}
fn default_credential_ttl() -> u64 {
    24 * 3600
}
fn default_user_claim() -> String {
    "sub".into()
}

/// The largest clock skew accepted.
pub const MAX_CLOCK_SKEW_SECS: u64 = 300;

impl OidcTenant {
    /// Where the team values are.
    pub fn teams_claim(&self) -> &str {
        self.teams_claim.as_deref().unwrap_or(&self.roles_claim)
    }

    /// Checks what types cannot; `max_token_ttl_secs` bounds the credential's lifetime.
    pub fn validate(&self, max_token_ttl_secs: u64) -> Result<(), String> {
        let t = &self.tenant;
        if t == SYSTEM_TENANT {
            return Err("oidc: the system tenant's admins cannot sign in through a tenant's identity provider".into());
        }
        if !crate::auth::is_valid_name(t) {
            return Err(format!("oidc: tenant {t:?} is not a valid tenant name"));
        }
        if self.issuer.is_empty() {
            return Err(format!("oidc ({t}): issuer must not be empty"));
        }
        if self.audiences.is_empty() || self.audiences.iter().any(String::is_empty) {
            return Err(format!("oidc ({t}): audiences must name at least one audience"));
        }
        check_jwks_url(&self.jwks_url).map_err(|e| format!("oidc ({t}): jwks_url {e}"))?;
        if let Some(ca) = &self.jwks_ca_file
            && !ca.is_file()
        {
            return Err(format!("oidc ({t}): jwks_ca_file {} does not exist", ca.display()));
        }
        if self.algorithms.is_empty() {
            return Err(format!("oidc ({t}): algorithms must name RS256, ES256 or both"));
        }
        if self.clock_skew_secs > MAX_CLOCK_SKEW_SECS {
            return Err(format!("oidc ({t}): clock_skew_secs must be at most {MAX_CLOCK_SKEW_SECS}"));
        }
        if self.jwks_min_refresh_secs == 0 || self.jwks_max_age_secs < self.jwks_min_refresh_secs {
            return Err(format!("oidc ({t}): jwks_min_refresh_secs must be at least 1 and at most jwks_max_age_secs"));
        }
        if self.credential_ttl_secs == 0 || self.credential_ttl_secs > max_token_ttl_secs {
            return Err(format!(
                "oidc ({t}): credential_ttl_secs must be at least 1 and at most limits.max_token_ttl_secs ({max_token_ttl_secs})"
            ));
        }
        if self.user_claim.is_empty() || self.roles_claim.is_empty() || self.teams_claim().is_empty() {
            return Err(format!("oidc ({t}): user_claim, roles_claim and teams_claim must not be empty"));
        }
        if self.roles.is_empty() {
            return Err(format!("oidc ({t}): roles must map at least one IdP value to a liaison role"));
        }
        if let Some(bad) = self.teams.values().find(|team| !crate::auth::is_valid_name(team)) {
            return Err(format!("oidc ({t}): team {bad:?} is not a valid team name"));
        }
        Ok(())
    }
}

/// Every tenant's configuration, checked together: one entry per tenant and per issuer (the
/// issuer of a token chooses its tenant).
pub fn validate_all(tenants: &[OidcTenant], max_token_ttl_secs: u64) -> Result<(), String> {
    for (i, tenant) in tenants.iter().enumerate() {
        tenant.validate(max_token_ttl_secs)?;
        if tenants[..i].iter().any(|other| other.tenant == tenant.tenant) {
            return Err(format!("oidc: tenant {} is configured twice", tenant.tenant));
        }
        if tenants[..i].iter().any(|other| other.issuer == tenant.issuer) {
            return Err(format!("oidc: issuer {} is configured for two tenants", tenant.issuer));
        }
    }
    Ok(())
}

/// `https://...`, or `http://` to a loopback host only.
fn check_jwks_url(url: &str) -> Result<(), String> {
    let uri: axum::http::Uri = url.parse().map_err(|_| "is not a URL".to_owned())?;
    let host = uri.host().ok_or_else(|| "has no host".to_owned())?;
    match uri.scheme_str() {
        Some("https") => Ok(()),
        Some("http") if is_loopback_host(host) => Ok(()),
        Some("http") => Err("must use https (plain http only to a loopback address)".into()),
        _ => Err("must be an https URL".into()),
    }
}

fn is_loopback_host(host: &str) -> bool {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    bare == "localhost" || bare.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entra() -> OidcTenant {
        toml::from_str(
            r#"
            tenant = "pharma-a"
            issuer = "https://login.microsoftonline.com/0000/v2.0"
            audiences = ["api://liaison"]
            jwks_url = "https://login.microsoftonline.com/0000/discovery/v2.0/keys"
            roles_claim = "roles"
            [roles]
            "Liaison.MSL" = "msl"
            [teams]
            "Liaison.Team.OncEast" = "onc-east"
            "#,
        )
        .unwrap()
    }

    #[test]
    fn a_minimal_tenant_gets_safe_defaults() {
        let t = entra();
        t.validate(365 * 86_400).unwrap();
        assert_eq!(t.algorithms, [SigningAlgorithm::RS256]);
        assert_eq!((t.clock_skew_secs, t.jwks_min_refresh_secs, t.credential_ttl_secs), (60, 300, 86_400));
        assert_eq!((t.user_claim.as_str(), t.teams_claim()), ("sub", "roles"));
    }

    #[test]
    fn none_and_hmac_algorithms_do_not_parse() {
        for alg in ["none", "HS256", "HS512", "rs256"] {
            let text = format!(
                "tenant = \"t\"\nissuer = \"i\"\naudiences = [\"a\"]\njwks_url = \"https://x\"\nroles_claim = \"r\"\nalgorithms = [\"{alg}\"]\n[roles]\nx = \"msl\"\n"
            );
            assert!(toml::from_str::<OidcTenant>(&text).is_err(), "{alg} parsed");
        }
    }

    #[test]
    fn bad_settings_are_refused_with_a_reason() {
        let check = |edit: &dyn Fn(&mut OidcTenant)| {
            let mut t = entra();
            edit(&mut t);
            t.validate(365 * 86_400).unwrap_err()
        };
        assert!(check(&|t| t.jwks_url = "http://idp.example/keys".into()).contains("must use https"));
        assert!(check(&|t| t.tenant = "system".into()).contains("system tenant"));
        assert!(check(&|t| t.audiences.clear()).contains("audiences"));
        assert!(check(&|t| t.algorithms.clear()).contains("algorithms"));
        assert!(check(&|t| t.clock_skew_secs = 301).contains("clock_skew_secs"));
        assert!(check(&|t| t.jwks_min_refresh_secs = 0).contains("jwks_min_refresh_secs"));
        assert!(check(&|t| t.credential_ttl_secs = 400 * 86_400).contains("credential_ttl_secs"));
        assert!(check(&|t| t.roles.clear()).contains("roles"));
        assert!(
            check(&|t| {
                t.teams.insert("x".into(), "a/b".into());
            })
            .contains("team")
        );
        let mut loopback = entra();
        for url in ["http://127.0.0.1:9000/keys", "http://localhost/keys", "http://[::1]:80/k"] {
            loopback.jwks_url = url.into();
            loopback.validate(365 * 86_400).unwrap();
        }
        let (a, mut b) = (entra(), entra());
        b.tenant = "pharma-b".into();
        assert!(validate_all(&[a.clone(), b.clone()], 86_400 * 365).unwrap_err().contains("issuer"));
        b.issuer = "https://other/v2.0".into();
        validate_all(&[a, b], 86_400 * 365).unwrap();
    }
}
