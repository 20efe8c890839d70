//! What devices do to records in the simulator, and what must hold once everyone has synced:
//! plans whose notes get tokens typed in and deleted, whose activities are added, removed and
//! moved; interactions that get submitted; KOL profiles that get merged.

use std::collections::{BTreeMap, BTreeSet};

use crate::DocumentId;
use crate::model::*;
use crate::store::DocStore;
use crate::sync::engine::Input;

use super::{RELAY, Sim};

/// What the devices did, to judge the result by.
#[derive(Debug, Default)]
pub struct Expected {
    pub plans: Vec<DocumentId>,
    pub interactions: Vec<DocumentId>,
    pub kols: Vec<DocumentId>,
    /// Plan -> tokens typed into its notes (each also an activity id).
    typed: BTreeMap<DocumentId, BTreeSet<String>>,
    /// Plan -> tokens deleted from its notes by a device that saw them.
    deleted: BTreeMap<DocumentId, BTreeSet<String>>,
    /// Plan -> activities removed by a device that saw them.
    removed: BTreeMap<DocumentId, BTreeSet<String>>,
    /// Plan -> activities moved (a move is a removal and a copy: a concurrent removal of the
    /// original leaves the copy, so a moved activity may outlive its removal).
    moved: BTreeMap<DocumentId, BTreeSet<String>>,
    submitted: BTreeSet<DocumentId>,
}

fn team() -> NewDocument {
    NewDocument { team: "team".into(), retention_class: "standard".into() }
}

impl Sim {
    /// A fresh document id from the simulation's own randomness: a seed replays the same ids.
    fn new_id(&mut self) -> DocumentId {
        let (a, b) = (self.rng.next_u64(), self.rng.next_u64());
        let mut bytes = [0u8; 16];
        bytes[..8].copy_from_slice(&a.to_le_bytes());
        bytes[8..].copy_from_slice(&b.to_le_bytes());
        DocumentId::from_bytes(bytes)
    }

    fn created(&mut self, dev: usize, id: DocumentId) {
        let heads = self.store(dev).load(&id).expect("just created").get_heads();
        self.made.entry(id).or_default().extend(heads);
        self.docs.push(id);
        self.handle(dev, Input::Announce { doc: id });
    }

    pub fn create_plan(&mut self, dev: usize) -> Option<DocumentId> {
        let id = self.new_id();
        let kol = DocumentId::from_bytes([1; 16]);
        self.store(dev).create_with(id, &team(), &EngagementPlan::new(&kol, format!("plan by {dev}"))).ok()?;
        self.records.plans.push(id);
        self.created(dev, id);
        Some(id)
    }

    pub fn create_interaction(&mut self, dev: usize) -> Option<DocumentId> {
        let id = self.new_id();
        let kol = DocumentId::from_bytes([1; 16]);
        self.store(dev).create_with(id, &team(), &Interaction::new(&kol, 1_700_000_000_000, Channel::InPerson)).ok()?;
        self.records.interactions.push(id);
        self.created(dev, id);
        Some(id)
    }

    pub fn create_kol(&mut self, dev: usize) -> Option<DocumentId> {
        let id = self.new_id();
        self.store(dev).create_with(id, &team(), &KolProfile::new(format!("Dr {dev}"), "Hospital")).ok()?;
        self.records.kols.push(id);
        self.created(dev, id);
        Some(id)
    }

    /// Runs a local edit of `doc` on `dev`; on success, the changes go to its engine.
    fn local<T>(&mut self, dev: usize, doc: DocumentId, edit: impl FnOnce(&DocStore) -> Option<T>) -> Option<T> {
        let before = self.store(dev).load(&doc).ok()?.get_heads();
        let out = edit(self.store(dev))?;
        self.made_locally(dev, doc, &before);
        Some(out)
    }

    /// Types a unique token into the plan's notes and adds an activity named by it.
    pub fn edit(&mut self, dev: usize, doc: DocumentId) -> bool {
        let token = format!("<{dev}.{}>", self.now);
        let t = token.clone();
        let done = self.local(dev, doc, |s| {
            s.update(&doc, move |p: &mut EngagementPlan| {
                let at = p.notes.as_str().rfind('>').map_or(0, |i| i + 1);
                p.notes.splice(at, 0, &t);
                p.activities.push(Activity {
                    id: t.clone(),
                    description: "visit".into(),
                    owner: "x".into(),
                    due: None,
                    status: TaskStatus::Open,
                });
            })
            .ok()
        });
        if done.is_some() {
            self.records.typed.entry(doc).or_default().insert(token);
        }
        done.is_some()
    }

    /// Deletes the `i`-th whole token the device sees in the plan's notes.
    pub fn delete_token(&mut self, dev: usize, doc: DocumentId, i: usize) {
        let deleted = self.local(dev, doc, |s| {
            s.update(&doc, |p: &mut EngagementPlan| {
                let text = p.notes.as_str().to_owned();
                let starts: Vec<usize> = text.match_indices('<').map(|(at, _)| at).collect();
                let at = *starts.get(i % starts.len().max(1))?;
                let len = text[at..].find('>')? + 1;
                p.notes.splice(at, len as isize, "");
                Some(text[at..at + len].to_owned())
            })
            .ok()
            .flatten()
        });
        if let Some(token) = deleted {
            self.records.deleted.entry(doc).or_default().insert(token);
        }
    }

    /// Removes the `i`-th activity the device sees, or moves it to position `to`.
    pub fn remove_or_move_activity(&mut self, dev: usize, doc: DocumentId, i: usize, to: Option<usize>) {
        let touched = self.local(dev, doc, |s| {
            s.update(&doc, |p: &mut EngagementPlan| {
                if p.activities.is_empty() {
                    return None;
                }
                let a = p.activities.remove(i % p.activities.len());
                let id = a.id.clone();
                if let Some(to) = to {
                    let at = to % (p.activities.len() + 1);
                    p.activities.insert(at, a);
                }
                Some(id)
            })
            .ok()
            .flatten()
        });
        if let Some(id) = touched {
            let set = if to.is_some() { &mut self.records.moved } else { &mut self.records.removed };
            set.entry(doc).or_default().insert(id);
        }
    }

    /// Submits the `i`-th interaction, if the device has it and it is still a draft.
    pub fn submit(&mut self, dev: usize, i: usize) {
        let Some(&doc) = self.records.interactions.get(i % self.records.interactions.len().max(1)) else { return };
        if self.local(dev, doc, |s| s.submit::<Interaction>(&doc).ok()).is_some() {
            self.records.submitted.insert(doc);
        }
    }

    /// Merges the `j`-th KOL profile into the `i`-th, as the device sees them.
    pub fn merge_kols(&mut self, dev: usize, i: usize, j: usize) {
        let n = self.records.kols.len();
        if n < 2 {
            return;
        }
        let (winner, loser) = (self.records.kols[i % n], self.records.kols[j % n]);
        let s = self.store(dev);
        let (Ok(w), Ok(l)) = (s.load(&winner), s.load(&loser)) else { return };
        let (wb, lb) = (w.get_heads(), l.get_heads());
        if s.merge_kols(&winner, &loser).is_ok() {
            let resolved = s.resolve_kol(&winner).unwrap_or(winner);
            for (doc, before) in [(resolved, wb), (loser, lb)] {
                if self.store(dev).load(&doc).is_ok_and(|d| d.get_heads() != before) {
                    self.made_locally(dev, doc, &before);
                }
            }
        }
    }

    /// What must hold of the records once everyone has synced (heads are already equal).
    pub fn check_records(&self) {
        let r = &self.records;
        for doc in &r.plans {
            let plan: EngagementPlan = self.store(RELAY).get(doc).expect("a plan");
            let notes = plan.notes.as_str();
            let empty = BTreeSet::new();
            let deleted = r.deleted.get(doc).unwrap_or(&empty);
            let removed = r.removed.get(doc).unwrap_or(&empty);
            let moved = r.moved.get(doc).unwrap_or(&empty);
            for t in r.typed.get(doc).into_iter().flatten() {
                assert_eq!(notes.contains(t.as_str()), !deleted.contains(t), "token {t} in {doc}: {notes}");
                let present = plan.activities.iter().any(|a| &a.id == t);
                if !removed.contains(t) {
                    assert!(present, "activity {t} lost from {doc}");
                } else if !moved.contains(t) {
                    assert!(!present, "activity {t} removed from {doc} came back");
                }
            }
        }
        for doc in &r.interactions {
            let i: Interaction = self.store(RELAY).get(doc).expect("an interaction");
            assert_eq!(i.status == RecordStatus::Submitted, r.submitted.contains(doc), "{doc}");
        }
        // Every device resolves every KOL to the same profile, whatever merges crossed (cycles
        // included). The relay does not list KOLs: its group commit indexes summaries only when
        // it loads a document (see `DocStore::append_sync_batch`).
        for kol in &r.kols {
            let target = self.store(1).resolve_kol(kol).expect("resolves");
            for n in 2..self.nodes() {
                assert_eq!(self.store(n).resolve_kol(kol).expect("resolves"), target, "device {n}, {kol}");
            }
        }
    }
}
