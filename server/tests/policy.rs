//! The relay's policy, called directly: `access` as a table of (role, tenant, team, kind), and
//! `validate` with one row per refusal code, each row made of real automerge changes. Every
//! check in `server/src/policy.rs` and `core/src/model/guard.rs` that refuses something has a
//! row that fails when that check alone is removed, except the policy's `read_owner` fallback on
//! a creation, which `check_creation` makes unreachable (the end-to-end attacks are in
//! `tests/tests/hostile.rs`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
mod policy_rows;

use Team::{In, Other as OtherTeam};
use Tenant::{Other as OtherTenant, Same};
use automerge::transaction::Transactable;
use automerge::{Automerge, ChangeHash};
use common::*;
use liaison_core::DocumentId;
use liaison_core::model::Kind;
use liaison_core::sync::Access;
use policy_rows::{Expect, rows};

/// Whether a document is in the principal's tenant, and in one of its teams.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tenant {
    Same,
    Other,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Team {
    In,
    Other,
}

/// What each role may do with a stored document, one letter per kind in `Kind::ALL` order
/// (kol_profile, interaction, medical_insight, medical_information_request, engagement_plan):
/// `W` read and write, `R` read, `-` nothing (answered as a missing document). "Same tenant" for
/// the system admin is a document in the system tenant itself.
const ACCESS: &[(&str, Who, Tenant, Team, &str)] = &[
    ("msl", SATO, Same, In, "WWWWW"),
    ("msl", SATO, Same, OtherTeam, "-----"),
    ("msl", SATO, OtherTenant, In, "-----"),
    ("msl", SATO, OtherTenant, OtherTeam, "-----"),
    ("manager", KATO, Same, In, "RRRRW"),
    ("manager", KATO, Same, OtherTeam, "-----"),
    ("manager", KATO, OtherTenant, In, "-----"),
    ("manager", KATO, OtherTenant, OtherTeam, "-----"),
    ("medical information", MORI, Same, In, "---W-"),
    ("medical information", MORI, Same, OtherTeam, "---W-"),
    ("medical information", MORI, OtherTenant, In, "-----"),
    ("medical information", MORI, OtherTenant, OtherTeam, "-----"),
    ("tenant admin", ADMIN_A, Same, In, "WWWWW"),
    ("tenant admin", ADMIN_A, Same, OtherTeam, "WWWWW"),
    ("tenant admin", ADMIN_A, OtherTenant, In, "-----"),
    ("tenant admin", ADMIN_A, OtherTenant, OtherTeam, "-----"),
    ("system admin", SYSTEM, Same, In, "-----"),
    ("system admin", SYSTEM, Same, OtherTeam, "-----"),
    ("system admin", SYSTEM, OtherTenant, In, "-----"),
    ("system admin", SYSTEM, OtherTenant, OtherTeam, "-----"),
];

/// Everyone the access tables ask about.
const EVERYONE: [Who; 8] = [SATO, ITO, KATO, MORI, ADMIN_A, SYSTEM, WEST_MSL, KIM];

fn letter(access: Access) -> char {
    match access {
        Access::ReadWrite => 'W',
        Access::Read => 'R',
        Access::None => '-',
    }
}

/// Collects a table's wrong rows and fails once, naming all of them.
#[derive(Default)]
struct Mismatches(Vec<String>);

impl Mismatches {
    fn check<T: PartialEq + std::fmt::Debug>(&mut self, row: &str, got: T, want: T) {
        if got != want {
            self.0.push(format!("{row}: got {got:?}, want {want:?}"));
        }
    }
    fn assert_none(self) {
        assert!(self.0.is_empty(), "{} wrong rows:\n{}", self.0.len(), self.0.join("\n"));
    }
}

#[test]
fn access_to_stored_documents_by_role_tenant_team_and_kind() {
    let mut relay = Relay::new();
    let mut docs = std::collections::HashMap::new();
    for tenant in ["pharma-a", "pharma-b", liaison_server::auth::SYSTEM_TENANT] {
        let maker = Who { tenant, user: "maker", role: liaison_server::auth::RoleName::Msl, teams: &[] };
        for team in ["east", "west"] {
            for kind in Kind::ALL {
                docs.insert((tenant, team, kind), relay.stored(&created(&maker, team, kind)));
            }
        }
    }
    let mut wrong = Mismatches::default();
    for (role, who, tenant, team, want) in ACCESS {
        let peer = relay.peer(who);
        let doc_tenant = if *tenant == Same { who.tenant } else { "pharma-b" };
        let doc_team = if *team == In { "east" } else { "west" };
        let got: String =
            Kind::ALL.iter().map(|kind| letter(relay.access(&peer, &docs[&(doc_tenant, doc_team, *kind)]))).collect();
        wrong.check(&format!("{role}, {tenant:?} tenant, {team:?} team"), got.as_str(), want);
    }
    let stranger = relay.anonymous("stranger");
    let doc = docs[&("pharma-a", "east", Kind::EngagementPlan)];
    wrong.check("a connection without a principal", relay.access(&stranger, &doc), Access::None);
    wrong.assert_none();
}

/// A document in the store whose meta names no owner: nobody may open it (fail closed), not
/// even to write it, which would otherwise let anyone "create" into it.
#[test]
fn a_stored_document_that_names_no_owner_opens_to_nobody() {
    let mut relay = Relay::new();
    let mut plain = Automerge::new();
    raw_change(&mut plain, &KIM.actor(), |tx, _| {
        tx.put(automerge::ROOT, "hello", "world").unwrap();
    });
    let mut incomplete = created(&SATO, "east", Kind::EngagementPlan);
    raw_change(&mut incomplete, &SATO.actor(), |tx, d| {
        tx.delete(obj(d, &["envelope"]), "team").unwrap();
    });
    let mut wrong = Mismatches::default();
    for (what, doc) in [("a plain automerge document", plain), ("a record without a team", incomplete)] {
        let id = relay.stored(&doc);
        assert_eq!(relay.store.owner_of(&id).unwrap(), None, "{what} is stored without an owner");
        for who in EVERYONE {
            let peer = relay.peer(&who);
            wrong.check(&format!("{what}, {}", who.user), relay.access(&peer, &id), Access::None);
        }
    }
    wrong.assert_none();
}

/// An id nothing is stored under: anyone who writes may create it (validation judges what
/// arrives); system admins read and write no records.
#[test]
fn a_document_not_stored_may_be_created_by_writers_only() {
    let mut relay = Relay::new();
    let id = DocumentId::random();
    let mut wrong = Mismatches::default();
    for who in EVERYONE {
        let peer = relay.peer(&who);
        let want = if who.tenant == SYSTEM.tenant { Access::None } else { Access::ReadWrite };
        wrong.check(who.user, relay.access(&peer, &id), want);
    }
    wrong.assert_none();
}

/// A creation accepted by `validate` but not yet committed by the group commit: its owner
/// (from the accepted envelope) decides at once, so another tenant never sees an open id.
#[test]
fn a_document_accepted_but_not_yet_stored_belongs_to_its_pending_owner() {
    let mut relay = Relay::new();
    let id = DocumentId::random();
    let sato = relay.peer(&SATO);
    let creation = Edit::creation(created(&SATO, "east", Kind::EngagementPlan));
    assert_eq!(relay.validate(&sato, &id, &creation), Vec::new(), "an honest creation is accepted");
    assert!(relay.store.owner_of(&id).unwrap().is_none(), "not stored yet");
    let want = [
        (SATO, Access::ReadWrite),
        (ITO, Access::ReadWrite),
        (KATO, Access::ReadWrite), // a manager may edit engagement plans
        (MORI, Access::None),
        (ADMIN_A, Access::ReadWrite),
        (SYSTEM, Access::None),
        (WEST_MSL, Access::None),
        (KIM, Access::None),
    ];
    let mut wrong = Mismatches::default();
    for (who, access) in want {
        let peer = relay.peer(&who);
        wrong.check(who.user, relay.access(&peer, &id), access);
    }
    wrong.assert_none();
}

/// Every code the relay's `validate` answers with.
const CODES: [&str; 11] = [
    "bad-creation",
    "envelope-change",
    "forbidden",
    "foreign-actor",
    "forged-author",
    "forged-submission",
    "legal-hold",
    "locked",
    "not-a-record",
    "owner-change",
    "unauthenticated",
];

#[test]
fn validate_refuses_each_violation_with_its_code() {
    let rows = rows();
    let covered: std::collections::BTreeSet<&str> = rows
        .iter()
        .filter_map(|row| match row.expect {
            Expect::Refused(code) | Expect::Only(code, _) => Some(code),
            Expect::Accepted => None,
        })
        .collect();
    assert_eq!(covered, CODES.into_iter().collect(), "one row or more per refusal code");
    let mut wrong = Mismatches::default();
    for row in rows {
        let mut relay = Relay::new();
        let peer = match &row.sender {
            Some(who) => relay.peer(who),
            None => relay.anonymous("stranger"),
        };
        let new = row.edit.changes();
        assert!(!new.is_empty(), "{}: the row sends no change", row.name);
        let refusals = relay.validate(&peer, &DocumentId::random(), &row.edit);
        let mut codes: Vec<&str> = refusals.iter().map(|(_, r)| r.code.as_str()).collect();
        codes.sort();
        codes.dedup();
        if codes.len() > 1 {
            wrong.check(row.name, codes.join(", "), "one code".to_owned());
        }
        let got = Outcome::new(codes.first().copied(), refusals.iter().map(|(h, _)| *h).collect());
        let want = match row.expect {
            Expect::Accepted => Outcome::new(None, Vec::new()),
            Expect::Refused(code) => Outcome::new(Some(code), new.iter().map(|c| c.hash()).collect()),
            Expect::Only(code, hashes) => Outcome::new(Some(code), hashes),
        };
        wrong.check(row.name, got, want);
    }
    wrong.assert_none();
}

/// A refusal code and the refused changes, as compared.
#[derive(Debug, PartialEq, Eq)]
struct Outcome {
    code: Option<String>,
    refused: Vec<ChangeHash>,
}

impl Outcome {
    fn new(code: Option<&str>, mut refused: Vec<ChangeHash>) -> Self {
        refused.sort();
        refused.dedup();
        Self { code: code.map(str::to_owned), refused }
    }
}
