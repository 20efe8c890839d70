//! Running a simulation: random steps of the network and the disks, healing, and the checks
//! once everything has settled.

use std::sync::Arc;

use automerge::ReadDoc;

use super::{Faults, RELAY, Sim, open_store};
use crate::sync::engine::{Input, StorageTask};
use crate::sync::testing::faulty_kv::FaultyKv;

impl Sim {
    /// Plays `acts`, heals, and checks that everyone converged with nothing lost.
    pub fn play(&mut self, acts: &[super::Act]) {
        for a in acts {
            self.act(a);
        }
        self.heal();
        self.check_converged();
    }

    /// One random step. Returns false when nothing is left to do.
    pub fn step(&mut self) -> bool {
        let mut choices: Vec<(usize, bool)> = Vec::new(); // (link, towards relay)
        for (i, l) in self.links.iter().enumerate() {
            if !l.to_relay.is_empty() {
                choices.push((i, true));
            }
            if !l.to_dev.is_empty() {
                choices.push((i, false));
            }
        }
        let task_nodes: Vec<usize> = (0..self.nodes.len()).filter(|n| !self.nodes[*n].d.pending.is_empty()).collect();
        let total = choices.len() + task_nodes.len();
        if total == 0 {
            return false;
        }
        if self.now % 97 == 0 {
            // Time passes: failed writes are retried.
            for n in 0..self.nodes.len() {
                self.handle(n, Input::Tick);
            }
        }
        let pick = self.rng.below(total);
        if pick < choices.len() {
            let (li, to_relay) = choices[pick];
            self.deliver(li, to_relay);
            return true;
        }
        let node = task_nodes[pick - choices.len()];
        let pending = &self.nodes[node].d.pending;
        let i = self.rng.below(pending.len());
        let label = self.trace.is_some().then(|| format!("{node} storage #{i}"));
        let outputs = if node == RELAY && !matches!(pending[i].1, StorageTask::Load { .. }) {
            // As the relay's writer thread does: writes in the order issued, the ones queued so
            // far (some of them) committed as one group.
            let writes = pending.iter().filter(|(_, op)| !matches!(op, StorageTask::Load { .. })).count();
            let take = 1 + self.rng.below(writes);
            self.nodes[node].d.complete_group(take)
        } else {
            self.nodes[node].d.complete(i, None).unwrap_or_default()
        };
        self.route(node, label, outputs);
        true
    }

    fn deliver(&mut self, li: usize, to_relay: bool) {
        let f = self.faults;
        let reorder = self.rng.chance(f.reorder);
        let l = &mut self.links[li];
        let q = if to_relay { &mut l.to_relay } else { &mut l.to_dev };
        let idx = if reorder && q.len() > 1 { 1 } else { 0 };
        let Some(frame) = q.remove(idx) else { return };
        let (dev, relay_conn, dev_conn) = (l.dev, l.relay_conn, l.dev_conn);
        if self.rng.chance(f.drop) {
            self.disconnect(dev);
            return;
        }
        let (node, conn) = if to_relay { (RELAY, relay_conn) } else { (dev, dev_conn) };
        let dup = self.rng.chance(f.duplicate);
        self.handle(node, Input::Frame { conn, frame: frame.clone() });
        if dup && self.links.iter().any(|l| l.dev == dev) {
            self.handle(node, Input::Frame { conn, frame });
        }
    }

    pub fn run(&mut self, max_steps: usize) -> usize {
        let mut n = 0;
        while n < max_steps && self.step() {
            n += 1;
        }
        n
    }

    /// Heals the network and the disks: no faults, every device connected and told about every
    /// document, and the simulation run until nothing is left to do.
    pub fn heal(&mut self) {
        self.faults = Faults::default();
        for n in 0..self.nodes.len() {
            self.fail_storage(n, None);
        }
        let devices: Vec<usize> = (1..self.nodes.len()).collect();
        for d in &devices {
            self.disconnect(*d);
        }
        // Finish outstanding storage work first (failed writes retry on a tick).
        for _ in 0..3 {
            self.run(1_000_000);
            for n in 0..self.nodes.len() {
                self.handle(n, Input::Tick);
            }
        }
        self.run(1_000_000);
        for d in &devices {
            self.connect(*d);
        }
        self.run(1_000_000);
        let docs = self.docs.clone();
        for d in devices {
            for doc in &docs {
                if self.store(d).load(doc).is_ok() {
                    self.handle(d, Input::Announce { doc: *doc });
                } else {
                    self.handle(d, Input::Find { doc: *doc });
                }
            }
        }
        let steps = self.run(5_000_000);
        assert!(steps < 5_000_000, "the simulation did not settle");
        // Then, still connected, devices keep editing while exchanges are in flight, and the
        // network settles without any reconnect: acknowledgements must still all arrive.
        let plans = self.records.plans.clone();
        if !plans.is_empty() {
            for _ in 0..12 {
                let dev = 1 + self.rng.below(self.nodes.len() - 1);
                let doc = plans[self.rng.below(plans.len())];
                self.edit(dev, doc);
                let n = self.rng.below(12);
                self.run(n);
            }
            let steps = self.run(5_000_000);
            assert!(steps < 5_000_000, "the simulation did not settle");
        }
    }

    /// Every node holds every document with the relay's heads, every device was told the relay
    /// stored exactly that, and no change a device made is missing from the relay.
    pub fn check_converged(&self) {
        for doc in &self.docs {
            let relay = self.store(RELAY).load(doc).unwrap_or_else(|e| panic!("relay lacks {doc}: {e}"));
            let heads = relay.get_heads();
            for i in 1..self.nodes.len() {
                let d = self.store(i).load(doc).unwrap_or_else(|e| panic!("device {i} lacks {doc}: {e}"));
                assert_eq!(d.get_heads(), heads, "device {i} differs from the relay on {doc}");
                // Liveness of acknowledgements: once quiet, every device has been told the relay
                // holds exactly what it holds (its "everything is stored" indicator depends on it).
                let mut sorted = heads.clone();
                sorted.sort();
                assert_eq!(
                    self.last_acks.get(&(i, *doc)),
                    Some(&sorted),
                    "device {i} was never told the relay stored {doc}"
                );
            }
        }
        for (doc, hashes) in &self.made {
            let relay = self.store(RELAY).load(doc).expect("the relay has it");
            for h in hashes.iter().filter(|h| !self.refused.contains(h)) {
                assert!(relay.get_change_by_hash(h).is_some(), "change {h} made on a device is missing from {doc}");
            }
        }
        // Nothing the relay acknowledged was only in memory: a crash now loses nothing.
        let disk = Arc::new(FaultyKv::new(self.nodes[RELAY].kv.disk()));
        let reopened = open_store(&disk, (self.setup.identity)(RELAY), 4);
        for doc in &self.docs {
            let heads = self.store(RELAY).load(doc).expect("loads").get_heads();
            assert_eq!(reopened.load(doc).map(|d| d.get_heads()).ok(), Some(heads), "{doc} is not on the relay's disk");
        }
        self.check_records();
    }
}
