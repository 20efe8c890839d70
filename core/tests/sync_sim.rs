//! The simulator's properties (see `liaison_core::sync::testing::sim` for what it simulates
//! and checks): devices
//! converge, and nothing acknowledged is lost, through a faulty network, failing disks, and
//! crashes of the relay and of devices; a seed replays the same trace.
#![allow(clippy::unwrap_used)]

mod common;

use liaison_core::sync::testing::sim::{Act, Faults, RELAY, Sim};
use proptest::prelude::*;

fn act(devices: usize) -> impl Strategy<Value = Act> {
    let d = 1..=devices;
    let node = 0..=devices;
    let i = any::<usize>;
    prop_oneof![
        2 => d.clone().prop_map(Act::CreatePlan),
        1 => d.clone().prop_map(Act::CreateInteraction),
        1 => d.clone().prop_map(Act::CreateKol),
        5 => (d.clone(), i()).prop_map(|(d, i)| Act::Edit(d, i)),
        1 => (d.clone(), i(), i()).prop_map(|(d, p, t)| Act::DeleteToken(d, p, t)),
        1 => (d.clone(), i(), i()).prop_map(|(d, p, a)| Act::RemoveActivity(d, p, a)),
        1 => (d.clone(), i(), i(), i()).prop_map(|(d, p, a, to)| Act::MoveActivity(d, p, a, to)),
        1 => (d.clone(), i()).prop_map(|(d, x)| Act::Submit(d, x)),
        1 => (d.clone(), i(), i()).prop_map(|(d, a, b)| Act::MergeKols(d, a, b)),
        2 => d.clone().prop_map(Act::Connect),
        1 => d.clone().prop_map(Act::Disconnect),
        1 => d.prop_map(Act::Share),
        1 => node.clone().prop_map(Act::Crash),
        1 => (node, any::<bool>(), 1u64..6).prop_map(|(n, flush, k)| Act::FailStorage(n, flush, k)),
        4 => (1usize..60).prop_map(Act::Run),
    ]
}

fn play(seed: u64, faults: Faults, acts: &[Act], devices: usize, resident_cap: usize) -> Sim {
    let mut sim = Sim::new(devices, seed, resident_cap);
    sim.faults = faults;
    sim.play(acts);
    sim
}

proptest! {
    #![proptest_config(ProptestConfig { cases: common::proptest_cases(40), ..ProptestConfig::default() })]

    #[test]
    fn devices_converge_through_a_faulty_network_failing_disks_and_crashes(
        seed in any::<u64>(),
        drop in 0u32..40,
        duplicate in 0u32..80,
        reorder in 0u32..80,
        acts in prop::collection::vec(act(3), 1..60),
    ) {
        let sim = play(seed, Faults { drop, duplicate, reorder }, &acts, 3, 4);
        prop_assert!(sim.device_count() == 3);
    }
}

/// A seed replays exactly: the same inputs, in the same order, with the same outputs.
#[test]
fn one_seed_replays_the_same_trace() {
    let mut acts: Vec<Act> = (0..6).flat_map(|i| [Act::CreatePlan(1 + i % 3), Act::CreateKol(1 + i % 2)]).collect();
    acts.extend([
        Act::Connect(1),
        Act::Connect(3),
        Act::Run(100),
        Act::FailStorage(1, true, 1),
        Act::Edit(1, 1),
        Act::Edit(3, 4),
        Act::Run(100),
        Act::Crash(1),
        Act::Connect(1),
        Act::CreateKol(2),
        Act::CreateKol(1),
        Act::Connect(2),
        Act::Run(40),
        Act::Edit(2, 0),
        Act::Edit(1, 0),
        Act::FailStorage(RELAY, false, 2),
        Act::CreateInteraction(2),
        Act::Run(30),
        Act::Crash(RELAY),
        Act::Connect(1),
        Act::Connect(2),
        Act::MergeKols(1, 0, 1),
        Act::Submit(2, 0),
        Act::Run(50),
        Act::Crash(2),
        Act::DeleteToken(1, 0, 0),
        Act::MoveActivity(1, 0, 0, 1),
        Act::Run(200),
    ]);
    let run = || {
        let mut sim = Sim::new(3, 42, 4);
        sim.faults = Faults { drop: 10, duplicate: 50, reorder: 50 };
        sim.trace = Some(Vec::new());
        sim.play(&acts);
        sim.trace.take().unwrap()
    };
    let (first, second) = (run(), run());
    assert!(first.len() > 200, "a trace worth comparing: {} steps", first.len());
    for (i, (a, b)) in first.iter().zip(&second).enumerate() {
        assert_eq!(a, b, "the runs part at step {i}");
    }
    assert_eq!(first.len(), second.len());
}

#[test]
fn a_thousand_documents_reach_a_device_that_joins_later() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    let mut sim = Sim::new(2, 7, 500);
    sim.connect(1);
    for _ in 0..1000 {
        sim.create_plan(1);
    }
    sim.run(10_000_000);
    let docs = sim.docs.clone();
    for doc in docs.iter().step_by(10) {
        sim.edit(1, *doc);
    }
    sim.faults = Faults { drop: 1, duplicate: 20, reorder: 20 };
    sim.connect(2);
    sim.run(200_000);
    sim.heal();
    sim.check_converged();
    assert!(sim.acks_checked > 1000, "acks checked: {}", sim.acks_checked);
    assert!(sim.relay_resident() <= 500 + 1, "the relay kept {} documents resident", sim.relay_resident());
}
