//! The sync state of one document with one peer, and the rules kept on it: the loop guard,
//! the acknowledgement owed, resuming from a stored or parked state, and when to store it.

use std::collections::{BTreeMap, BTreeSet};

use automerge::sync::{self, SyncDoc};
use automerge::{Automerge, ChangeHash, ReadDoc};

use super::PeerInfo;
use crate::sync::wire::{PeerMetadata, StorageId};

#[derive(Debug)]
pub(super) struct PeerDoc {
    pub(super) sync: sync::State,
    /// Whether we have ever answered this peer for this document.
    pub(super) active: bool,
    /// Messages sent without either side's heads moving.
    stalled: u32,
    last_heads: (Vec<ChangeHash>, Vec<ChangeHash>),
    /// Shared heads last written to storage for this peer's storage id.
    persisted_shared: Vec<ChangeHash>,
    pub(super) said_unavailable: bool,
    pub(super) refusals_notified: BTreeSet<ChangeHash>,
    /// Heads of the last message we actually sent this peer.
    advertised: Vec<ChangeHash>,
    /// Dependencies of changes we left out because they were missing (see [`PeerDoc::left_out`]),
    /// asked for in every message until they arrive.
    missing: BTreeSet<ChangeHash>,
}

/// Most missing dependencies one (document, peer) asks for at a time; a peer sending orphans
/// cannot grow the set past it.
const MAX_MISSING: usize = 256;

/// What the loop guard makes of one more message for a (document, peer).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Progress {
    /// Heads moved, or not for long: go on.
    Moving,
    /// `loop_guard` messages without progress: the sync state was reset (guards a known
    /// automerge sync loop); go on from scratch.
    Reset,
    /// Twice as long without progress: send nothing until something changes.
    Stalled,
}

impl PeerDoc {
    pub(super) fn new(sync: sync::State) -> Self {
        Self {
            persisted_shared: sync.shared_heads.clone(),
            sync,
            active: false,
            stalled: 0,
            last_heads: (Vec::new(), Vec::new()),
            said_unavailable: false,
            refusals_notified: BTreeSet::new(),
            advertised: Vec::new(),
            missing: BTreeSet::new(),
        }
    }

    /// The state to sync with `peer` from: the one parked on its connection when the document
    /// was evicted, else the one stored for its storage id, else a fresh one.
    pub(super) fn resume(stored: &BTreeMap<StorageId, Vec<u8>>, peer: &PeerInfo, parked: Option<Vec<u8>>) -> Self {
        Self::new(initial_state(stored, peer, parked))
    }

    /// The loop guard: counts messages for which neither side's heads moved.
    pub(super) fn progress(&mut self, ours: Vec<ChangeHash>, loop_guard: u32) -> Progress {
        let heads_now = (ours, self.sync.their_heads.clone().unwrap_or_default());
        if heads_now == self.last_heads {
            self.stalled += 1;
        } else {
            self.stalled = 0;
            self.last_heads = heads_now;
        }
        if self.stalled > loop_guard * 2 {
            return Progress::Stalled;
        }
        if self.stalled == loop_guard {
            // The peer's half of the loop may be its own: a change it believes it sent us (in
            // its `sent_hashes`) that we never took, because a message was lost or left
            // unanswered. Resetting only our state would loop on; the reset flag makes the peer
            // forget what it sent, so it offers the change again.
            let capabilities = self.sync.their_capabilities.take();
            self.sync = sync::State::new();
            self.sync.their_capabilities = capabilities;
            self.sync.needs_reset = true;
            return Progress::Reset;
        }
        Progress::Moving
    }

    /// The next sync message for this peer, remembering the heads it advertises.
    pub(super) fn generate(&mut self, am: &Automerge) -> Option<sync::Message> {
        let mut msg = am.generate_sync_message(&mut self.sync)?;
        self.missing.retain(|h| am.get_change_by_hash(h).is_none());
        if !self.missing.is_empty() {
            msg.need.extend(self.missing.iter().copied());
            msg.need.sort_unstable();
            msg.need.dedup(); // the encoding wants them sorted
        }
        self.advertised.clone_from(&msg.heads);
        Some(msg)
    }

    /// The peer sent changes whose dependencies we do not have, and we left them out (screening
    /// never keeps them queued). The peer's automerge counts them as sent and will not offer them
    /// again, and automerge's own `need` names the head we lack, not the dependency: a lost
    /// message, or a false positive of our bloom filter on the dependency, would stall the
    /// document for good. So: ask for the dependencies by hash, and reset the peer's record of
    /// what it sent, so it offers the left-out changes again with them.
    pub(super) fn left_out(&mut self, missing: &[ChangeHash]) {
        if missing.is_empty() {
            return;
        }
        for h in missing {
            if self.missing.len() >= MAX_MISSING {
                break;
            }
            self.missing.insert(*h);
        }
        self.sync.needs_reset = true;
    }

    /// automerge's `receive_sync_message` records the peer's heads as "last sent" when they
    /// equal ours and the message carries no changes: the peer already knows them. Under durable
    /// acknowledgement our heads may include changes not yet stored, so the peer does *not* know
    /// they are safe; without this, the acknowledgement owed after the write is never sent.
    pub(super) fn keep_ack_owed(&mut self, unstored: bool) {
        if unstored && self.sync.last_sent_heads != self.advertised {
            self.sync.last_sent_heads.clone_from(&self.advertised);
        }
    }

    /// The peer withdrew heads we never had (it discarded changes we refused): it now claims
    /// only what we have, so automerge sees nothing to say, and the peer would never hear that
    /// we hold its heads (its change stays "pending" for good). Forget what we last sent, so the
    /// next message restates our heads: one acknowledgement.
    pub(super) fn answer_withdrawn_heads(&mut self, am: &Automerge, before: &[ChangeHash], now: &[ChangeHash]) {
        let withdrawn = before.iter().any(|h| !now.contains(h) && am.get_change_by_hash(h).is_none());
        if withdrawn {
            self.sync.last_sent_heads.clear();
        }
    }

    /// The encoded state, if the shared heads moved since it was last stored (then it counts as
    /// stored from now on).
    pub(super) fn persist_due(&mut self) -> Option<Vec<u8>> {
        if self.sync.shared_heads == self.persisted_shared {
            return None;
        }
        self.persisted_shared = self.sync.shared_heads.clone();
        Some(self.sync.encode())
    }

    /// The state to keep when the connection goes, and whether it differs from the stored one.
    /// Encoding drops the in-flight part, as automerge prescribes after a lost connection.
    pub(super) fn leave(self) -> (Vec<u8>, bool) {
        (self.sync.encode(), self.sync.shared_heads != self.persisted_shared)
    }
}

/// Storage ids come from peers and become part of store keys: absurd ones are not kept.
pub(super) const MAX_STORAGE_ID: usize = 128;

pub(super) fn persistent_storage(m: &PeerMetadata) -> Option<StorageId> {
    if m.is_ephemeral { None } else { m.storage_id.clone().filter(|s| !s.0.is_empty() && s.0.len() <= MAX_STORAGE_ID) }
}

fn initial_state(stored: &BTreeMap<StorageId, Vec<u8>>, peer: &PeerInfo, parked: Option<Vec<u8>>) -> sync::State {
    let bytes = parked.or_else(|| persistent_storage(&peer.metadata).and_then(|s| stored.get(&s).cloned()));
    let Some(mut state) = bytes.and_then(|b| sync::State::decode(&b).ok()) else {
        return sync::State::new();
    };
    // Optimistic resume: the peer had exactly the shared heads when we last synced, so our
    // first message can already carry what we made since, instead of waiting a round trip for
    // its bloom filter. If it has more (an acknowledgement we never saw) it gets a duplicate,
    // which automerge ignores; if it has less, its reply asks for what is missing.
    if !state.shared_heads.is_empty() {
        let shared = state.shared_heads.clone();
        state.their_heads = Some(shared.clone());
        state.their_need = Some(Vec::new());
        state.their_have = Some(vec![sync::Have { last_sync: shared, bloom: sync::BloomFilter::default() }]);
    }
    state
}

#[cfg(test)]
mod tests {
    use automerge::transaction::Transactable;
    use automerge::{AutoCommit, ROOT};

    use super::*;
    use crate::sync::engine::ConnId;
    use crate::sync::wire::PeerId;

    fn peer(storage: Option<&str>, is_ephemeral: bool) -> PeerInfo {
        PeerInfo {
            conn: ConnId(1),
            peer_id: PeerId("phone".into()),
            metadata: PeerMetadata { storage_id: storage.map(|s| StorageId(s.into())), is_ephemeral, catalog: None },
        }
    }

    fn doc(keys: &[&str]) -> Automerge {
        let mut ac = AutoCommit::new();
        for k in keys {
            ac.put(ROOT, *k, 1).expect("put");
        }
        Automerge::load(&ac.save()).expect("loads")
    }

    /// Syncs `ours` (through `pd`) with a peer holding `theirs` until neither has more to say.
    fn sync_with(pd: &mut PeerDoc, ours: &mut Automerge, theirs: &mut Automerge) {
        let mut their_state = sync::State::new();
        for _ in 0..10 {
            let a = pd.generate(ours);
            let b = theirs.generate_sync_message(&mut their_state);
            if a.is_none() && b.is_none() {
                return;
            }
            if let Some(m) = a {
                theirs.receive_sync_message(&mut their_state, m).expect("applies");
            }
            if let Some(m) = b {
                ours.receive_sync_message(&mut pd.sync, m).expect("applies");
            }
        }
        panic!("sync did not settle");
    }

    #[test]
    fn the_loop_guard_resets_after_loop_guard_messages_without_progress_then_goes_quiet() {
        let am = doc(&["a"]);
        let mut pd = PeerDoc::new(sync::State::new());
        let guard = 3;
        let seen: Vec<Progress> = (0..9).map(|_| pd.progress(am.get_heads(), guard)).collect();
        use Progress::{Moving, Reset, Stalled};
        assert_eq!(seen, [Moving, Moving, Moving, Reset, Moving, Moving, Moving, Stalled, Stalled]);
        let moved = doc(&["a", "b"]);
        assert_eq!(pd.progress(moved.get_heads(), guard), Moving, "new heads start the count again");
        assert_eq!(pd.progress(moved.get_heads(), guard), Moving);
    }

    #[test]
    fn the_reset_gives_a_fresh_sync_state() {
        let (mut ours, mut theirs) = (doc(&["a"]), Automerge::new());
        let mut pd = PeerDoc::new(sync::State::new());
        sync_with(&mut pd, &mut ours, &mut theirs);
        assert!(!pd.sync.shared_heads.is_empty());
        while pd.progress(ours.get_heads(), 2) != Progress::Reset {}
        assert!(pd.sync.shared_heads.is_empty() && pd.sync.their_heads.is_none());
    }

    /// A message of the peer's was lost (or left unanswered): the peer's automerge holds the
    /// change in its `sent_hashes` and never offers it again, however often we ask. The loop
    /// guard's reset must reach the peer, not only our own state.
    #[test]
    fn the_reset_makes_the_peer_offer_again_a_change_whose_message_was_lost() {
        let (mut ours, mut theirs) = (doc(&["a"]), Automerge::new());
        let mut pd = PeerDoc::new(sync::State::new());
        let mut their_state = sync::State::new();
        fn talk(pd: &mut PeerDoc, ours: &mut Automerge, theirs: &mut Automerge, their_state: &mut sync::State) {
            for _ in 0..100 {
                let a = match pd.progress(ours.get_heads(), 4) {
                    Progress::Stalled => None,
                    _ => pd.generate(ours),
                };
                let b = theirs.generate_sync_message(their_state);
                if a.is_none() && b.is_none() {
                    return;
                }
                if let Some(m) = a {
                    theirs.receive_sync_message(their_state, m).expect("applies");
                }
                if let Some(m) = b {
                    ours.receive_sync_message(&mut pd.sync, m).expect("applies");
                }
            }
        }
        fn edit(theirs: &mut Automerge, key: &str) {
            let mut tx = theirs.transaction();
            tx.put(ROOT, key, 2).expect("put");
            tx.commit();
        }
        talk(&mut pd, &mut ours, &mut theirs, &mut their_state);
        assert_eq!(ours.get_heads(), theirs.get_heads());
        edit(&mut theirs, "b");
        let lost = theirs.generate_sync_message(&mut their_state).expect("b is offered");
        assert_eq!(lost.changes.len(), 1);
        edit(&mut theirs, "c");
        talk(&mut pd, &mut ours, &mut theirs, &mut their_state);
        assert_eq!(ours.get_heads(), theirs.get_heads(), "the change whose message was lost arrived");
    }

    #[test]
    fn an_acknowledgement_owed_is_kept_while_our_heads_are_not_stored() {
        let (mut ours, mut theirs) = (doc(&["a"]), Automerge::new());
        let mut pd = PeerDoc::new(sync::State::new());
        sync_with(&mut pd, &mut ours, &mut theirs);
        let advertised = ours.get_heads();
        // automerge took the peer's heads as known to it ("last sent"): under durable
        // acknowledgement, changes not yet stored were not acknowledged.
        let other = doc(&["b"]).get_heads();
        pd.sync.last_sent_heads.clone_from(&other);
        pd.keep_ack_owed(false);
        assert_eq!(pd.sync.last_sent_heads, other, "stored: nothing owed");
        pd.keep_ack_owed(true);
        assert_eq!(pd.sync.last_sent_heads, advertised, "unstored: back to what we really sent");
    }

    #[test]
    fn resume_prefers_the_parked_state_then_the_one_stored_for_the_storage_id() {
        let (mut ours, mut theirs) = (doc(&["a"]), Automerge::new());
        let mut pd = PeerDoc::new(sync::State::new());
        sync_with(&mut pd, &mut ours, &mut theirs);
        let shared = pd.sync.shared_heads.clone();
        let stored: BTreeMap<StorageId, Vec<u8>> = [(StorageId("s1".into()), pd.sync.encode())].into();

        let resumed = PeerDoc::resume(&stored, &peer(Some("s1"), false), None);
        assert_eq!(resumed.sync.shared_heads, shared);
        // Optimistic resume: our first message may carry what we made since, at once.
        assert_eq!(resumed.sync.their_heads.as_ref(), Some(&shared));

        let parked = PeerDoc::resume(&stored, &peer(Some("s1"), false), Some(sync::State::new().encode()));
        assert!(parked.sync.shared_heads.is_empty(), "the parked state wins");
        for other in [peer(Some("s2"), false), peer(Some("s1"), true), peer(None, false)] {
            assert!(PeerDoc::resume(&stored, &other, None).sync.shared_heads.is_empty(), "{other:?}");
        }
        let garbage = PeerDoc::resume(&stored, &peer(None, false), Some(vec![0xff, 1, 2]));
        assert!(garbage.sync.shared_heads.is_empty(), "bytes that do not decode start afresh");
    }

    #[test]
    fn storage_ids_from_peers_are_kept_only_when_sane() {
        assert_eq!(persistent_storage(&peer(Some("s1"), false).metadata), Some(StorageId("s1".into())));
        assert_eq!(persistent_storage(&peer(Some(""), false).metadata), None);
        assert_eq!(persistent_storage(&peer(Some(&"x".repeat(MAX_STORAGE_ID + 1)), false).metadata), None);
        assert_eq!(persistent_storage(&peer(Some("s1"), true).metadata), None, "an ephemeral peer");
    }

    #[test]
    fn a_state_is_due_for_storage_once_each_time_its_shared_heads_move() {
        let (mut ours, mut theirs) = (doc(&["a"]), Automerge::new());
        let mut pd = PeerDoc::new(sync::State::new());
        assert_eq!(pd.persist_due(), None, "nothing shared yet");
        sync_with(&mut pd, &mut ours, &mut theirs);
        assert!(pd.persist_due().is_some());
        assert_eq!(pd.persist_due(), None, "already stored");
        let (encoded, moved) = pd.leave();
        assert!(!moved);
        assert_eq!(sync::State::decode(&encoded).expect("decodes").shared_heads, ours.get_heads());
    }
}
