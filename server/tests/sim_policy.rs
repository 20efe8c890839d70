//! The core simulator (`liaison_core::sync::testing::sim`) with the relay's real policy:
//! `RelayPolicy` over the relay's store, every device connection authenticated as its MSL (one
//! tenant, one team), `PendingOwners` forgotten when a write commits, as the relay's actor does.
//! Through a faulty network, failing disks and crashes, devices converge, nothing acknowledged is
//! lost, and what the policy refuses (a record submitted twice at once: the second submit finds
//! it locked) is discarded by its device and never reaches the others.
#![allow(clippy::unwrap_used)]

use liaison_core::sync::testing::sim::{Act, Faults, RELAY, Setup, Sim, random_acts};
use liaison_core::{Identity, Role};
use liaison_server::auth::{Principal, RoleName, SYSTEM_TENANT};
use liaison_server::policy::{PendingOwners, Principals, RelayPolicy};
use proptest::prelude::*;

fn identity(node: usize) -> Identity {
    if node == RELAY {
        return Identity {
            tenant: SYSTEM_TENANT.into(),
            user: "relay".into(),
            device: "relay".into(),
            role: Role::Admin,
            install: [0; 8],
        };
    }
    let user = format!("user{node}");
    Identity { tenant: "pharma-a".into(), device: format!("{user}-device"), user, role: Role::Msl, install: [0; 8] }
}

fn principal(node: usize) -> Principal {
    let id = identity(node);
    Principal {
        tenant: id.tenant,
        user: id.user,
        device: id.device,
        role: RoleName::Msl,
        teams: vec!["team".into()],
        token_id: format!("tok-{node}"),
        token_hash: String::new(),
        support: Vec::new(),
    }
}

fn relay_setup() -> Setup {
    let principals = Principals::default();
    let pending = PendingOwners::default();
    let (p, q) = (principals.clone(), pending.clone());
    Setup {
        identity: Box::new(identity),
        relay_policy: Box::new(move |store| Box::new(RelayPolicy::new(store.clone(), p.clone(), q.clone()))),
        on_connect: Box::new(move |dev, conn| principals.set(conn, principal(dev))),
        on_relay_event: Box::new(move |e| {
            if let liaison_core::sync::Event::DocChanged { doc, .. } = e {
                pending.forget(doc);
            }
        }),
    }
}

fn play(seed: u64, faults: Faults, acts: &[Act]) -> Sim {
    let mut sim = Sim::with_setup(3, seed, 4, relay_setup());
    sim.faults = faults;
    sim.play(acts);
    sim
}

/// Two MSLs submit the same interaction while apart: the relay takes the first submit and
/// refuses the second (the record is locked by then); that device discards its submit, and all
/// converge on the relay's history.
#[test]
fn a_record_submitted_twice_at_once_is_locked_by_the_first_and_the_second_is_discarded() {
    let acts = [
        Act::Connect(1),
        Act::Connect(2),
        Act::CreateInteraction(1),
        Act::Run(500),
        Act::Share(2),
        Act::Run(500),
        Act::Disconnect(1),
        Act::Disconnect(2),
        Act::Submit(1, 0),
        Act::Submit(2, 0),
        Act::Connect(1),
        Act::Run(500),
        Act::Connect(2),
        Act::Run(500),
    ];
    let sim = play(5, Faults::default(), &acts);
    assert_eq!(sim.refused.len(), 1, "the second submit is refused: {:?}", sim.refused);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: proptest_cases(16), ..ProptestConfig::default() })]

    #[test]
    fn devices_converge_under_the_relays_real_policy(
        seed in any::<u64>(),
        drop in 0u32..40,
        duplicate in 0u32..80,
        reorder in 0u32..80,
        n in 1usize..60,
    ) {
        let sim = play(seed, Faults { drop, duplicate, reorder }, &random_acts(seed, n, 3));
        prop_assert!(sim.device_count() == 3);
    }
}

/// `PROPTEST_CASES` when set (a soak), else the everyday count.
fn proptest_cases(everyday: u32) -> u32 {
    std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(everyday)
}
