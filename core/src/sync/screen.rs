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
    let queued = guarded(|| Ok(!trial.get_missing_deps(&[]).is_empty()))?;
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
            return Ok(Screened {
                apply: None,
                trial: Some((trial, trial_state)),
                refused: Vec::new(),
                refused_raw: Vec::new(),
            });
        }
        bad.extend(refusals);
    }
    // Take out the refused changes and their descendants, then judge what remains, again and
    // again, until the policy accepts exactly the set that will be applied.
    loop {
        spread_to_descendants(&new, &mut bad);
        let accepted: Vec<Change> = new.iter().filter(|c| !bad.contains_key(&c.hash())).cloned().collect();
        if accepted.is_empty() {
            break;
        }
        let mut check = input.doc.clone();
        let to_apply = accepted.clone();
        guarded(|| check.apply_changes(to_apply))?;
        let refusals = input.policy.validate(input.peer, input.doc_id, input.doc, &check, &accepted);
        if refusals.is_empty() {
            break;
        }
        let before_count = bad.len();
        bad.extend(refusals);
        if bad.len() == before_count {
            // A policy naming only changes already out: refuse the rest rather than loop.
            let refusal = Refusal::new("refused", "the changes were refused");
            bad.extend(accepted.iter().map(|c| (c.hash(), refusal.clone())));
        }
    }
    let accepted: Vec<Vec<u8>> =
        new.iter().filter(|c| !bad.contains_key(&c.hash())).map(|c| c.raw_bytes().to_vec()).collect();
    // Each refusal with its change's bytes, so the two lists stay paired once sorted.
    let mut refused: Vec<((ChangeHash, Refusal), Vec<u8>)> = new
        .iter()
        .filter_map(|c| bad.get(&c.hash()).map(|r| ((c.hash(), r.clone()), c.raw_bytes().to_vec())))
        .collect();
    refused.sort_by_key(|((h, _), _)| *h);
    let (refused, refused_raw) = refused.into_iter().unzip();
    let mut apply = msg;
    apply.changes = accepted.into();
    Ok(Screened { apply: Some(apply), trial: None, refused, refused_raw })
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
