//! What can happen in a simulation, one act at a time: devices create and change records, go
//! on and off line, nodes crash, disks fail, time passes.

use super::Sim;
use crate::DocumentId;
use crate::sync::testing::faulty_kv::Fault;

/// One thing that happens. Indexes pick among what exists (modulo its count).
#[derive(Debug, Clone)]
pub enum Act {
    CreatePlan(usize),
    CreateInteraction(usize),
    CreateKol(usize),
    /// Device, plan: types a token into the notes and adds an activity.
    Edit(usize, usize),
    /// Device, plan, token.
    DeleteToken(usize, usize, usize),
    /// Device, plan, activity.
    RemoveActivity(usize, usize, usize),
    /// Device, plan, activity, new position.
    MoveActivity(usize, usize, usize, usize),
    /// Device, interaction.
    Submit(usize, usize),
    /// Device, winner, loser.
    MergeKols(usize, usize, usize),
    Connect(usize),
    Disconnect(usize),
    /// The device learns every document id (as from the catalog) and asks for what it lacks.
    Share(usize),
    /// A node crashes and restarts (node 0 is the relay).
    Crash(usize),
    /// Node, flush (else write), n: the n-th write or flush of the node's disk fails.
    FailStorage(usize, bool, u64),
    /// Up to this many random steps of the network and the disks.
    Run(usize),
}

fn plan(sim: &Sim, i: usize) -> Option<DocumentId> {
    let plans = &sim.records.plans;
    (!plans.is_empty()).then(|| plans[i % plans.len()])
}

impl Sim {
    /// Plays one act.
    pub fn act(&mut self, a: &Act) {
        match *a {
            Act::CreatePlan(d) => {
                self.create_plan(d);
            }
            Act::CreateInteraction(d) => {
                self.create_interaction(d);
            }
            Act::CreateKol(d) => {
                self.create_kol(d);
            }
            Act::Edit(d, i) => {
                if let Some(doc) = plan(self, i) {
                    self.edit(d, doc);
                }
            }
            Act::DeleteToken(d, p, t) => {
                if let Some(doc) = plan(self, p) {
                    self.delete_token(d, doc, t);
                }
            }
            Act::RemoveActivity(d, p, a) => {
                if let Some(doc) = plan(self, p) {
                    self.remove_or_move_activity(d, doc, a, None);
                }
            }
            Act::MoveActivity(d, p, a, to) => {
                if let Some(doc) = plan(self, p) {
                    self.remove_or_move_activity(d, doc, a, Some(to));
                }
            }
            Act::Submit(d, i) => self.submit(d, i),
            Act::MergeKols(d, a, b) => self.merge_kols(d, a, b),
            Act::Connect(d) => self.connect(d),
            Act::Disconnect(d) => self.disconnect(d),
            Act::Share(d) => self.share(d),
            Act::Crash(n) => self.crash(n),
            Act::FailStorage(n, flush, k) => {
                self.fail_storage(n, Some(if flush { Fault::Flush(k) } else { Fault::Write(k) }));
            }
            Act::Run(n) => {
                self.run(n);
            }
        }
    }
}

/// `n` acts drawn from `seed`, weighted as the core simulator's property draws them (for
/// tests that take a seed rather than a generated list).
pub fn random_acts(seed: u64, n: usize, devices: usize) -> Vec<Act> {
    let mut rng = super::Rng(seed | 1);
    let mut any = || rng.next_u64() as usize;
    (0..n)
        .map(|_| {
            let d = 1 + any() % devices;
            let node = any() % (devices + 1);
            match any() % 25 {
                0 | 1 => Act::CreatePlan(d),
                2 => Act::CreateInteraction(d),
                3 => Act::CreateKol(d),
                4..=8 => Act::Edit(d, any()),
                9 => Act::DeleteToken(d, any(), any()),
                10 => Act::RemoveActivity(d, any(), any()),
                11 => Act::MoveActivity(d, any(), any(), any()),
                12 => Act::Submit(d, any()),
                13 => Act::MergeKols(d, any(), any()),
                14 | 15 => Act::Connect(d),
                16 => Act::Disconnect(d),
                17 => Act::Crash(node),
                18 => Act::FailStorage(node, any() % 2 == 0, 1 + (any() % 5) as u64),
                19 => Act::Share(d),
                _ => Act::Run(1 + any() % 60),
            }
        })
        .collect()
}
