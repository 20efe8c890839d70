//! Screening a peer's changes before they are applied: the engine applies exactly the set of
//! changes the policy judged, never more.
//!
//! 1. The changes are bounded before anything inflates them ([`super::inflation`]).
//! 2. They are applied to a copy of the document. A panic inside automerge (it has `unwrap`s
//!    reachable from crafted changes) is caught there and fails only the sending connection.
//! 3. Changes whose dependencies are missing are never kept (automerge would queue them and
//!    later apply them as part of whoever supplies the dependency, unvalidated).
//! 4. Refused changes and everything built on them are taken out, and the *remaining* set is
//!    applied to a fresh copy and judged again, until the policy accepts the set it sees: what is
//!    validated is what is applied (a set judged with a refused change still in it could hide an
//!    owner change behind the refused one's undo).

use std::collections::BTreeMap;
use std::panic::{AssertUnwindSafe, catch_unwind};

use automerge::sync::{self, SyncDoc};
use automerge::{Automerge, Change, ChangeHash, ReadDoc};

use super::engine::{Access, PeerInfo, Policy, Refusal};
use crate::DocumentId;

/// Why a sync message could not be screened at all: the connection is closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ScreenError {
    /// The changes do not parse or apply.
    Malformed,
    /// automerge panicked on them.
    Crashed,
}

/// The outcome for one sync message.
#[derive(Debug)]
pub(crate) struct Screened {
    /// What to apply: the message with only the accepted changes, or `None` when `trial` already
    /// holds exactly them (everything passed: keep the trial document and sync state outright).
    pub apply: Option<sync::Message>,
    pub trial: Option<(Automerge, sync::State)>,
    /// The refused changes, sorted by hash, and their raw bytes: `refused_raw[i]` is the change
    /// `refused[i]` names (the relay quarantines each under its hash).
    pub refused: Vec<(ChangeHash, Refusal)>,
    pub refused_raw: Vec<Vec<u8>>,
    /// The hashes of the changes accepted (what `apply` or `trial` adds to the document).
    pub accepted: Vec<ChangeHash>,
    /// Dependencies, absent from the document and the message, of changes left out for them.
    pub missing: Vec<ChangeHash>,
}

/// The document and peer a message is screened for.
pub(crate) struct ScreenInput<'a> {
    pub policy: &'a mut dyn Policy,
    pub peer: &'a PeerInfo,
    pub doc_id: &'a DocumentId,
    pub doc: &'a Automerge,
    pub sync_state: &'a sync::State,
    pub access: Access,
    /// Changes refused before, re-refused without asking the policy again.
    pub remembered: &'a BTreeMap<ChangeHash, Refusal>,
}

/// Runs `f` on automerge, turning an error into `Malformed` and a panic into `Crashed`.
fn guarded<T>(f: impl FnOnce() -> Result<T, automerge::AutomergeError>) -> Result<T, ScreenError> {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(_)) => Err(ScreenError::Malformed),
        Err(_) => Err(ScreenError::Crashed),
    }
}

pub(crate) fn screen(input: ScreenInput<'_>, msg: sync::Message) -> Result<Screened, ScreenError> {
    let before = input.doc.get_heads();
    let mut trial = input.doc.clone();
    let mut trial_state = input.sync_state.clone();
    let received = msg.clone();
    guarded(|| trial.receive_sync_message(&mut trial_state, received))?;
    // Only changes that applied: queued ones (missing dependencies) are left out of `new`.
    // Reading the trial back can panic too (automerge 0.12 unwraps in `get_changes` on some
    // crafted changes that `receive_sync_message` accepted): guarded like the apply.
    let new: Vec<Change> = guarded(|| Ok(trial.get_changes(&before)))?;
    let missing = guarded(|| Ok(trial.get_missing_deps(&[])))?;
    let queued = !missing.is_empty();
    let mut bad: BTreeMap<ChangeHash, Refusal> = BTreeMap::new();
    if !new.is_empty() && input.access < Access::ReadWrite {
        let refusal = Refusal::new("read-only", "you may read this document, not change it");
        bad.extend(new.iter().map(|c| (c.hash(), refusal.clone())));
    } else {
        for c in &new {
            if let Some(r) = input.remembered.get(&c.hash()) {
                bad.insert(c.hash(), r.clone());
            }
        }
    }
    if bad.is_empty() && !queued {
        let refusals = if new.is_empty() {
            Vec::new()
        } else {
            input.policy.validate(input.peer, input.doc_id, input.doc, &trial, &new)
        };
        if refusals.is_empty() {
            let accepted = new.iter().map(Change::hash).collect();
            return Ok(Screened {
                apply: None,
                trial: Some((trial, trial_state)),
                refused: Vec::new(),
                refused_raw: Vec::new(),
                accepted,
                missing,
            });
        }
        bad.extend(refusals);
    }
    settle(&mut *input.policy, input.peer, input.doc_id, input.doc, &new, &mut bad)?;
    let accepted_hashes = new.iter().map(Change::hash).filter(|h| !bad.contains_key(h)).collect();
    let accepted: Vec<Vec<u8>> =
        new.iter().filter(|c| !bad.contains_key(&c.hash())).map(|c| c.raw_bytes().to_vec()).collect();
    let (refused, refused_raw) = refusals_of(&new, &bad);
    let mut apply = msg;
    apply.changes = accepted.into();
    Ok(Screened { apply: Some(apply), trial: None, refused, refused_raw, accepted: accepted_hashes, missing })
}

/// Takes out the refused changes and their descendants, then judges what remains against
/// `base`, again and again, until the policy accepts exactly the set that will be applied.
fn settle(
    policy: &mut dyn Policy,
    peer: &PeerInfo,
    doc_id: &DocumentId,
    base: &Automerge,
    new: &[Change],
    bad: &mut BTreeMap<ChangeHash, Refusal>,
) -> Result<(), ScreenError> {
    loop {
        spread_to_descendants(new, bad);
        let accepted: Vec<Change> = new.iter().filter(|c| !bad.contains_key(&c.hash())).cloned().collect();
        if accepted.is_empty() {
            return Ok(());
        }
        let mut check = base.clone();
        let to_apply = accepted.clone();
        guarded(|| check.apply_changes(to_apply))?;
        let refusals = policy.validate(peer, doc_id, base, &check, &accepted);
        if refusals.is_empty() {
            return Ok(());
        }
        let before_count = bad.len();
        bad.extend(refusals);
        if bad.len() == before_count {
            // A policy naming only changes already out: refuse the rest rather than loop.
            let refusal = Refusal::new("refused", "the changes were refused");
            bad.extend(accepted.iter().map(|c| (c.hash(), refusal.clone())));
        }
    }
}

/// The refused changes sorted by hash, each refusal paired with its change's bytes.
fn refusals_of(new: &[Change], bad: &BTreeMap<ChangeHash, Refusal>) -> (Vec<(ChangeHash, Refusal)>, Vec<Vec<u8>>) {
    let mut refused: Vec<((ChangeHash, Refusal), Vec<u8>)> = new
        .iter()
        .filter_map(|c| bad.get(&c.hash()).map(|r| ((c.hash(), r.clone()), c.raw_bytes().to_vec())))
        .collect();
    refused.sort_by_key(|((h, _), _)| *h);
    refused.into_iter().unzip()
}

/// One peer's changes judged again, against a document another writer changed since they
/// were first accepted (a relay node whose write lost to another node's).
#[derive(Debug)]
pub(crate) struct Rejudged {
    /// `base` with the accepted changes applied.
    pub doc: Automerge,
    /// The hashes of the accepted changes.
    pub accepted: Vec<ChangeHash>,
    /// Refused now, sorted by hash, and their bytes (as in [`Screened`]).
    pub refused: Vec<(ChangeHash, Refusal)>,
    pub refused_raw: Vec<Vec<u8>>,
    /// Changes left out without a verdict: a dependency is neither in `base` nor among them.
    pub dropped: usize,
}

/// The document and peer changes are judged again for.
pub(crate) struct RejudgeInput<'a> {
    pub policy: &'a mut dyn Policy,
    pub peer: &'a PeerInfo,
    pub doc_id: &'a DocumentId,
    /// The document as stored.
    pub doc: &'a Automerge,
    pub access: Access,
    /// Changes refused before, re-refused without asking the policy again.
    pub remembered: &'a BTreeMap<ChangeHash, Refusal>,
}

/// Judges `new` (one peer's changes, in causal order, none of them in `base`) against `base`
/// as [`screen`] judges a sync message's: what is validated is what is applied.
pub(crate) fn rejudge(input: RejudgeInput<'_>, new: Vec<Change>) -> Result<Rejudged, ScreenError> {
    let base = input.doc;
    let mut bad: BTreeMap<ChangeHash, Refusal> = BTreeMap::new();
    let mut known: std::collections::BTreeSet<ChangeHash> = std::collections::BTreeSet::new();
    let mut kept = Vec::with_capacity(new.len());
    let mut dropped = 0;
    for c in new {
        if c.deps().iter().all(|d| known.contains(d) || base.get_change_by_hash(d).is_some()) {
            known.insert(c.hash());
            kept.push(c);
        } else {
            dropped += 1;
        }
    }
    if input.access < Access::ReadWrite {
        let refusal = Refusal::new("read-only", "you may read this document, not change it");
        bad.extend(kept.iter().map(|c| (c.hash(), refusal.clone())));
    } else {
        for c in &kept {
            if let Some(r) = input.remembered.get(&c.hash()) {
                bad.insert(c.hash(), r.clone());
            }
        }
    }
    settle(input.policy, input.peer, input.doc_id, base, &kept, &mut bad)?;
    let accepted: Vec<Change> = kept.iter().filter(|c| !bad.contains_key(&c.hash())).cloned().collect();
    let hashes = accepted.iter().map(Change::hash).collect();
    let mut doc = base.clone();
    guarded(|| doc.apply_changes(accepted))?;
    let (refused, refused_raw) = refusals_of(&kept, &bad);
    Ok(Rejudged { doc, accepted: hashes, refused, refused_raw, dropped })
}

/// Refuses every change that builds on a refused one ("depends-on-refused").
fn spread_to_descendants(new: &[Change], bad: &mut BTreeMap<ChangeHash, Refusal>) {
    loop {
        let mut grew = false;
        for c in new {
            if !bad.contains_key(&c.hash()) && c.deps().iter().any(|p| bad.contains_key(p)) {
                bad.insert(c.hash(), Refusal::new("depends-on-refused", "builds on a refused change"));
                grew = true;
            }
        }
        if !grew {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use automerge::transaction::Transactable;
    use automerge::{AutoCommit, ROOT};

    use super::*;
    use crate::sync::engine::{ConnId, OpenPolicy};
    use crate::sync::wire::{PeerId, PeerMetadata};

    fn peer() -> PeerInfo {
        PeerInfo {
            conn: ConnId(1),
            peer_id: PeerId("dev".into()),
            metadata: PeerMetadata { storage_id: None, is_ephemeral: false, catalog: None },
        }
    }

    /// A document and two changes on it, the second built on the first.
    fn base_and_two_changes() -> (Automerge, Change, Change) {
        let mut ac = AutoCommit::new();
        ac.put(ROOT, "a", 1).expect("put");
        let base = Automerge::load(&ac.save()).expect("loads");
        ac.put(ROOT, "b", 2).expect("put");
        ac.commit();
        ac.put(ROOT, "c", 3).expect("put");
        ac.commit();
        let doc = Automerge::load(&ac.save()).expect("loads");
        let mut new = doc.get_changes(&base.get_heads());
        let second = new.pop().expect("two changes");
        let first = new.pop().expect("two changes");
        (base, first, second)
    }

    fn judge(base: &Automerge, access: Access, new: Vec<Change>) -> Rejudged {
        let mut policy = OpenPolicy;
        let input = RejudgeInput {
            policy: &mut policy,
            peer: &peer(),
            doc_id: &DocumentId::from_bytes([7; 16]),
            doc: base,
            access,
            remembered: &BTreeMap::new(),
        };
        rejudge(input, new).expect("judged")
    }

    #[test]
    fn changes_judged_again_are_applied_when_accepted() {
        let (base, first, second) = base_and_two_changes();
        let j = judge(&base, Access::ReadWrite, vec![first.clone(), second.clone()]);
        assert_eq!(j.accepted, vec![first.hash(), second.hash()]);
        assert_eq!(j.doc.get_heads(), vec![second.hash()]);
        assert!(j.refused.is_empty() && j.dropped == 0);
    }

    #[test]
    fn a_change_whose_dependency_is_missing_is_left_out_not_queued() {
        let (base, _, second) = base_and_two_changes();
        let j = judge(&base, Access::ReadWrite, vec![second]);
        assert_eq!(j.dropped, 1);
        assert!(j.accepted.is_empty());
        assert_eq!(j.doc.get_heads(), base.get_heads());
        assert!(j.doc.get_missing_deps(&[]).is_empty(), "nothing waits in automerge's queue");
    }

    #[test]
    fn a_peer_that_may_only_read_now_has_every_change_refused() {
        let (base, first, second) = base_and_two_changes();
        let j = judge(&base, Access::Read, vec![first, second]);
        assert_eq!(j.refused.len(), 2);
        assert!(j.refused.iter().all(|(_, r)| r.code == "read-only"));
        assert_eq!(j.refused_raw.len(), 2);
        assert_eq!(j.doc.get_heads(), base.get_heads());
    }
}
