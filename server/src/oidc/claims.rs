//! From a verified token's claims to liaison's user, role and teams, as the tenant's
//! configuration says: the user from one claim, role and team values from a claim or a dotted
//! path (Entra app roles in `roles`, Okta `groups`, Keycloak `realm_access.roles` or
//! `resource_access.CLIENT.roles`), each looked up in its table. No IO.

use std::collections::BTreeSet;

use serde_json::Value;

use super::Refusal;
use super::config::OidcTenant;
use crate::auth::RoleName;

/// Who a token names, in liaison's terms.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mapped {
    pub user: String,
    pub role: RoleName,
    /// Sorted, without repeats.
    pub teams: Vec<String>,
}

/// Maps `claims` as `tenant` configures. Refuses a token without a usable user claim
/// (`missing-claim`, `bad-user-claim`), whose values map to no role (`no-role`) or to two
/// different roles (`ambiguous-role`: liaison never guesses which one a user meant to have).
pub fn map(tenant: &OidcTenant, claims: &Value) -> Result<Mapped, Refusal> {
    let user = match claim_at(claims, &tenant.user_claim) {
        None | Some(Value::Null) => return Err(Refusal::MissingClaim),
        Some(Value::String(user)) => user.clone(),
        Some(_) => return Err(Refusal::BadUserClaim),
    };
    if !crate::auth::is_valid_user_name(&user) {
        return Err(Refusal::BadUserClaim);
    }
    let roles: BTreeSet<RoleName> =
        values_at(claims, &tenant.roles_claim).iter().filter_map(|v| tenant.roles.get(v).copied()).collect();
    let mut roles = roles.into_iter();
    let role = match (roles.next(), roles.next()) {
        (Some(role), None) => role,
        (None, _) => return Err(Refusal::NoRole),
        (Some(_), Some(_)) => return Err(Refusal::AmbiguousRole),
    };
    let teams: BTreeSet<String> =
        values_at(claims, tenant.teams_claim()).iter().filter_map(|v| tenant.teams.get(v).cloned()).collect();
    Ok(Mapped { user, role, teams: teams.into_iter().collect() })
}

/// The claim named `path`: a top-level claim of that exact name (Entra's URI-named claims hold
/// dots), else the dotted path through nested objects.
pub fn claim_at<'a>(claims: &'a Value, path: &str) -> Option<&'a Value> {
    if let Some(whole) = claims.get(path) {
        return Some(whole);
    }
    path.split('.').try_fold(claims, |at, segment| at.get(segment))
}

/// The string values at `path`: one string, or the strings of an array (others ignored).
fn values_at(claims: &Value, path: &str) -> Vec<String> {
    match claim_at(claims, path) {
        Some(Value::String(one)) => vec![one.clone()],
        Some(Value::Array(many)) => many.iter().filter_map(Value::as_str).map(str::to_owned).collect(),
        _ => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn tenant(user_claim: &str, roles_claim: &str, teams_claim: Option<&str>) -> OidcTenant {
        OidcTenant {
            tenant: "pharma-a".into(),
            issuer: "https://idp".into(),
            audiences: vec!["liaison".into()],
            jwks_url: "https://idp/keys".into(),
            jwks_ca_file: None,
            algorithms: vec![super::super::config::SigningAlgorithm::RS256],
            clock_skew_secs: 60,
            jwks_min_refresh_secs: 300,
            jwks_max_age_secs: 86_400,
            credential_ttl_secs: 86_400,
            user_claim: user_claim.into(),
            roles_claim: roles_claim.into(),
            teams_claim: teams_claim.map(Into::into),
            roles: [
                ("Liaison.MSL", RoleName::Msl),
                ("liaison-msl", RoleName::Msl),
                ("Liaison.Manager", RoleName::Manager),
                ("liaison-admin", RoleName::Admin),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v))
            .collect(),
            teams: [("Team.OncEast", "onc-east"), ("oncology-west", "onc-west")]
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect(),
        }
    }

    fn mapped(user: &str, role: RoleName, teams: &[&str]) -> Result<Mapped, Refusal> {
        Ok(Mapped { user: user.into(), role, teams: teams.iter().map(|t| (*t).to_owned()).collect() })
    }

    #[test]
    fn each_identity_providers_claims_map_to_user_role_and_teams() {
        // Entra ID: app roles in `roles`, teams as app roles too, the user's UPN.
        let entra = tenant("preferred_username", "roles", None);
        let claims =
            json!({ "preferred_username": "sato@pharma-a.example", "roles": ["Liaison.MSL", "Team.OncEast", "Other"] });
        assert_eq!(map(&entra, &claims), mapped("sato@pharma-a.example", RoleName::Msl, &["onc-east"]));

        // Okta: `groups`, one list for both.
        let okta = tenant("sub", "groups", None);
        let claims =
            json!({ "sub": "00u1abcd", "groups": ["Everyone", "liaison-msl", "oncology-west", "Team.OncEast"] });
        assert_eq!(map(&okta, &claims), mapped("00u1abcd", RoleName::Msl, &["onc-east", "onc-west"]));

        // Keycloak: realm roles for the role, client roles for teams, a nested path each.
        let keycloak = tenant("sub", "realm_access.roles", Some("resource_access.liaison-app.roles"));
        let claims = json!({
            "sub": "5d3c-42",
            "realm_access": { "roles": ["offline_access", "liaison-admin"] },
            "resource_access": { "liaison-app": { "roles": ["oncology-west"] } },
        });
        assert_eq!(map(&keycloak, &claims), mapped("5d3c-42", RoleName::Admin, &["onc-west"]));

        // A single string instead of a list; a claim whose whole name has dots wins over a path.
        let uri = tenant("sub", "http://schemas.example/claims/role", None);
        let claims = json!({ "sub": "u1", "http://schemas.example/claims/role": "Liaison.Manager" });
        assert_eq!(map(&uri, &claims), mapped("u1", RoleName::Manager, &[]));
    }

    #[test]
    fn tokens_without_a_usable_user_or_exactly_one_role_are_refused() {
        let t = tenant("email", "roles", None);
        let with = |claims: Value| map(&t, &claims).map(|m| m.role);
        assert_eq!(with(json!({ "roles": ["Liaison.MSL"] })), Err(Refusal::MissingClaim));
        assert_eq!(with(json!({ "email": null, "roles": ["Liaison.MSL"] })), Err(Refusal::MissingClaim));
        assert_eq!(with(json!({ "email": 7, "roles": ["Liaison.MSL"] })), Err(Refusal::BadUserClaim));
        assert_eq!(with(json!({ "email": "a/b", "roles": ["Liaison.MSL"] })), Err(Refusal::BadUserClaim));
        assert_eq!(with(json!({ "email": "x".repeat(65), "roles": ["Liaison.MSL"] })), Err(Refusal::BadUserClaim));
        assert_eq!(with(json!({ "email": "u@x", "roles": [] })), Err(Refusal::NoRole));
        assert_eq!(with(json!({ "email": "u@x" })), Err(Refusal::NoRole));
        assert_eq!(with(json!({ "email": "u@x", "roles": ["Unmapped", 5] })), Err(Refusal::NoRole));
        assert_eq!(with(json!({ "email": "u@x", "roles": { "nested": "Liaison.MSL" } })), Err(Refusal::NoRole));
        assert_eq!(
            with(json!({ "email": "u@x", "roles": ["Liaison.MSL", "Liaison.Manager"] })),
            Err(Refusal::AmbiguousRole)
        );
        // Two values naming the same role are one role.
        assert_eq!(with(json!({ "email": "u@x", "roles": ["Liaison.MSL", "liaison-msl"] })), Ok(RoleName::Msl));
        // Case matters, as the IdP writes it.
        assert_eq!(with(json!({ "email": "u@x", "roles": ["liaison.msl"] })), Err(Refusal::NoRole));
    }

    #[test]
    fn paths_follow_nested_objects_and_stop_at_anything_else() {
        let claims = json!({ "a": { "b": { "c": 1 } }, "a.b": 2, "s": "x" });
        assert_eq!(claim_at(&claims, "a.b.c"), Some(&json!(1)));
        assert_eq!(claim_at(&claims, "a.b"), Some(&json!(2)), "the whole name first");
        assert_eq!(claim_at(&claims, "s.t"), None);
        assert_eq!(claim_at(&claims, "a.x.c"), None);
    }
}
