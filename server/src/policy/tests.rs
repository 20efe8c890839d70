//! The relay's access policy: who may read and write what.

use super::*;

fn principal(role: RoleName, tenant: &str, teams: &[&str]) -> Principal {
    Principal {
        tenant: tenant.into(),
        user: "u".into(),
        device: "d".into(),
        role,
        teams: teams.iter().map(|t| (*t).to_owned()).collect(),
        token_id: "tok".into(),
        token_hash: "h".into(),
        support: Vec::new(),
    }
}

#[test]
fn readable_scope_matches_access_for() {
    let teams: [&[&str]; 3] = [&[], &["east"], &["east", "west"]];
    let kinds = Kind::ALL.iter().copied().map(Some).chain([None]);
    let kinds: Vec<Option<Kind>> = kinds.collect();
    for role in [RoleName::Msl, RoleName::Manager, RoleName::MedicalInformation, RoleName::Admin] {
        for t in teams {
            let p = principal(role, "a", t);
            let scope = readable_scope(&p);
            for (tenant, team, kind) in ["a", "b"]
                .iter()
                .flat_map(|x| ["east", "west", "north"].iter().map(move |y| (*x, *y)))
                .flat_map(|(x, y)| kinds.iter().map(move |k| (x, y, *k)))
            {
                assert_eq!(
                    scope.allows(tenant, Some(team), kind),
                    access_for(&p, tenant, team, kind) != Access::None,
                    "{role:?} {t:?} reading {tenant}/{team}/{kind:?}"
                );
            }
        }
    }
    let mut sys = principal(RoleName::Admin, crate::auth::SYSTEM_TENANT, &[]);
    assert!(readable_scope(&sys).rules.is_empty(), "no grant, nothing");
    sys.support.push(SupportAccess { tenant: "a".into(), grant: "g".into() });
    let scope = readable_scope(&sys);
    for (tenant, kind) in [("a", None), ("a", Some(Kind::Interaction)), ("b", None)] {
        assert_eq!(
            scope.allows(tenant, Some("east"), kind),
            access_for(&sys, tenant, "east", kind) != Access::None,
            "a system admin reading {tenant} under a grant for a"
        );
    }
}

#[test]
fn roles_and_teams_decide_access() {
    let msl = principal(RoleName::Msl, "a", &["east"]);
    assert_eq!(access_for(&msl, "a", "east", Some(Kind::Interaction)), Access::ReadWrite);
    assert_eq!(access_for(&msl, "a", "west", Some(Kind::Interaction)), Access::None);
    assert_eq!(access_for(&msl, "b", "east", Some(Kind::Interaction)), Access::None, "another tenant");
    let mgr = principal(RoleName::Manager, "a", &["east"]);
    assert_eq!(access_for(&mgr, "a", "east", Some(Kind::Interaction)), Access::Read);
    assert_eq!(access_for(&mgr, "a", "east", Some(Kind::EngagementPlan)), Access::ReadWrite);
    let mi = principal(RoleName::MedicalInformation, "a", &[]);
    assert_eq!(access_for(&mi, "a", "east", Some(Kind::MedicalInformationRequest)), Access::ReadWrite);
    assert_eq!(access_for(&mi, "a", "east", Some(Kind::KolProfile)), Access::None);
    let admin = principal(RoleName::Admin, "a", &[]);
    assert_eq!(access_for(&admin, "a", "any", None), Access::ReadWrite);
    assert_eq!(access_for(&admin, "b", "any", None), Access::None, "a tenant admin stays in its tenant");
    let mut system = principal(RoleName::Admin, crate::auth::SYSTEM_TENANT, &[]);
    assert_eq!(access_for(&system, "a", "east", Some(Kind::KolProfile)), Access::None, "system admins administer");
    system.support = vec![SupportAccess { tenant: "a".into(), grant: "sg_1".into() }];
    assert_eq!(access_for(&system, "a", "east", Some(Kind::KolProfile)), Access::Read, "under a grant, read only");
    assert_eq!(access_for(&system, "a", "east", Some(Kind::EngagementPlan)), Access::Read);
    assert_eq!(access_for(&system, "b", "east", Some(Kind::KolProfile)), Access::None, "the grant's tenant only");
    assert_eq!(access_for(&system, crate::auth::SYSTEM_TENANT, "", None), Access::None);
    let mut msl_with_a_grant = principal(RoleName::Msl, "b", &["east"]);
    msl_with_a_grant.support = system.support.clone();
    assert_eq!(access_for(&msl_with_a_grant, "a", "east", None), Access::None, "grants open to system admins only");
}
