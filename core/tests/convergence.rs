//! Property: whatever three devices do offline and in whatever order they sync, once everyone
//! has synced they hold identical documents, and no inserted text or added item is lost.
#![allow(clippy::unwrap_used)]

mod common;

use common::{device, sync};
use liaison_core::model::*;
use liaison_core::{DocStore, Role};
use proptest::prelude::*;

#[derive(Debug, Clone)]
enum Op {
    /// Device inserts a unique token into the plan notes at a position (a fraction of the length).
    Note { dev: usize, at: u8 },
    /// Device adds an activity.
    AddActivity { dev: usize },
    /// Device sets the status of the activity at an index (if any).
    SetStatus { dev: usize, idx: u8, done: bool },
    /// Device renames the plan (last writer wins, but everyone agrees which).
    Title { dev: usize },
    /// Device edits a profile field.
    Specialty { dev: usize },
    /// Two devices sync.
    Sync { a: usize, b: usize },
}

fn op() -> impl Strategy<Value = Op> {
    let dev = 0usize..3;
    prop_oneof![
        3 => (dev.clone(), any::<u8>()).prop_map(|(dev, at)| Op::Note { dev, at }),
        2 => dev.clone().prop_map(|dev| Op::AddActivity { dev }),
        2 => (dev.clone(), any::<u8>(), any::<bool>()).prop_map(|(dev, idx, done)| Op::SetStatus { dev, idx, done }),
        1 => dev.clone().prop_map(|dev| Op::Title { dev }),
        1 => dev.clone().prop_map(|dev| Op::Specialty { dev }),
        2 => (dev.clone(), dev).prop_map(|(a, b)| Op::Sync { a, b }),
    ]
}

/// A byte offset between tokens (so an insertion never splits an earlier token), picked by `frac`.
fn token_boundary(s: &str, frac: u8) -> usize {
    let mut spots: Vec<usize> = vec![0];
    spots.extend(s.char_indices().filter(|(_, c)| *c == '⟩' || *c == '始').map(|(i, c)| i + c.len_utf8()));
    spots[spots.len().saturating_sub(1) * frac as usize / 255]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: common::proptest_cases(48), ..ProptestConfig::default() })]

    #[test]
    fn offline_edits_converge(ops in prop::collection::vec(op(), 1..40)) {
        let devs: Vec<DocStore> = ["a", "b", "c"].iter().map(|u| device(u, &format!("{u}-phone"), Role::Msl)).collect();
        let kol = devs[0].create("t", &KolProfile::new("Dr. Lee", "Kyoto")).unwrap();
        let plan = devs[0].create("t", &EngagementPlan { notes: "始".into(), ..EngagementPlan::new(&kol, "p") }).unwrap();
        sync(&devs[0], &devs[1]);
        sync(&devs[0], &devs[2]);

        let mut tokens = Vec::new();
        let mut activities = Vec::new();
        for (step, op) in ops.iter().enumerate() {
            match *op {
                Op::Note { dev, at } => {
                    let token = format!("⟨{dev}.{step}⟩");
                    devs[dev].update(&plan, |p: &mut EngagementPlan| {
                        let pos = token_boundary(p.notes.as_str(), at);
                        p.notes.splice(pos, 0, &token);
                    }).unwrap();
                    tokens.push(token);
                }
                Op::AddActivity { dev } => {
                    let id = format!("act-{dev}-{step}");
                    devs[dev].update(&plan, |p: &mut EngagementPlan| p.activities.push(Activity {
                        id: id.clone(), description: "visit".into(), owner: "x".into(), due: None, status: TaskStatus::Open,
                    })).unwrap();
                    activities.push(id);
                }
                Op::SetStatus { dev, idx, done } => {
                    devs[dev].update(&plan, |p: &mut EngagementPlan| {
                        if !p.activities.is_empty() {
                            let i = idx as usize % p.activities.len();
                            p.activities[i].status = if done { TaskStatus::Done } else { TaskStatus::InProgress };
                        }
                    }).unwrap();
                }
                Op::Title { dev } => {
                    devs[dev].update(&plan, |p: &mut EngagementPlan| p.title = format!("t{step}")).unwrap();
                }
                Op::Specialty { dev } => {
                    devs[dev].update(&kol, |p: &mut KolProfile| p.specialty = Some(format!("s{step}"))).unwrap();
                }
                Op::Sync { a, b } => if a != b { sync(&devs[a], &devs[b]) },
            }
        }
        // Heal: everyone talks to everyone.
        sync(&devs[0], &devs[1]);
        sync(&devs[1], &devs[2]);
        sync(&devs[0], &devs[1]);

        let p0: EngagementPlan = devs[0].get(&plan).unwrap();
        for d in &devs[1..] {
            prop_assert_eq!(&d.get::<EngagementPlan>(&plan).unwrap(), &p0);
            prop_assert_eq!(&d.get::<KolProfile>(&kol).unwrap(), &devs[0].get::<KolProfile>(&kol).unwrap());
            prop_assert_eq!(d.load(&plan).unwrap().get_heads(), devs[0].load(&plan).unwrap().get_heads());
        }
        for t in &tokens {
            prop_assert!(p0.notes.as_str().contains(t.as_str()), "token {} lost from {:?}", t, p0.notes.as_str());
        }
        for a in &activities {
            prop_assert!(p0.activities.iter().any(|x| &x.id == a), "activity {} lost", a);
        }
        prop_assert_eq!(p0.activities.len(), activities.len(), "no activity duplicated");
    }
}
