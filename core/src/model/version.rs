//! Saves that merge: an app reads a record at a version (the document's heads) and saves its
//! edit against that version. The edit is made on the document as it was at that version and
//! merged with everything that happened since, so a colleague's concurrent edits of other fields,
//! other list items and other text ranges survive a save from a stale form.

use std::fmt;

use automerge::{Automerge, ChangeHash, ReadDoc};

use super::{ModelError, Record, is_locked, update_record};
use crate::id::Identity;

/// The version a record was read at: the document's heads then. Opaque to apps, which pass it
/// back with their edit (as text: [`Version::to_string`] and [`str::parse`]).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct Version(pub Vec<ChangeHash>);

impl Version {
    /// The document's version now.
    pub fn of(doc: &Automerge) -> Self {
        Self(doc.get_heads())
    }
}

impl fmt::Display for Version {
    /// The heads in hex, comma-separated (empty for an empty document).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let hex: Vec<String> = self.0.iter().map(ToString::to_string).collect();
        f.write_str(&hex.join(","))
    }
}

impl std::str::FromStr for Version {
    type Err = ModelError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || ModelError::Invalid { field: "version", reason: "not a version read from this library" };
        if s.is_empty() || s.len() > 65 * 256 {
            return Err(bad());
        }
        s.split(',').map(|h| h.parse::<ChangeHash>().map_err(|_| bad())).collect::<Result<_, _>>().map(Self)
    }
}

/// Applies `edit` to the record as it was at `base` and merges it with the document now.
///
/// The edit is made on a fork of the document at `base` and merged back: automerge keeps both
/// sides of what changed concurrently (other fields, other list items, other text ranges; for
/// the same scalar, the usual deterministic winner). The fork writes as `who` under an actor id
/// of `who`'s principal that has no change after `base`, so it never reuses a sequence number
/// (the device's own edits since `base`, say a note typed in meanwhile, keep theirs).
///
/// Errors: [`ModelError::UnknownVersion`] when `base` names changes the document does not have;
/// [`ModelError::Locked`] when the record is submitted now (even if it was a draft at `base`).
pub fn update_record_at<R: Record, T>(
    doc: &mut Automerge,
    base: &Version,
    who: &Identity,
    now: i64,
    edit: impl FnOnce(&mut R) -> T,
) -> Result<(Option<ChangeHash>, T), ModelError> {
    if base.0.iter().any(|h| doc.get_change_by_hash(h).is_none()) {
        return Err(ModelError::UnknownVersion);
    }
    if base.0 == doc.get_heads() {
        return update_record(doc, who, now, edit);
    }
    if is_locked(doc) {
        return Err(ModelError::Locked);
    }
    let writer = fresh_writer(doc, base, who);
    let mut fork = doc.fork_at(&base.0)?;
    let (hash, out) = update_record(&mut fork, &writer, now, edit)?;
    if hash.is_some() {
        doc.merge(&mut fork)?;
    }
    Ok((hash, out))
}

/// `who`, or `who` under another install suffix, whose actor made no change after `base`.
fn fresh_writer(doc: &Automerge, base: &Version, who: &Identity) -> Identity {
    let since: Vec<automerge::ActorId> = doc.get_changes(&base.0).iter().map(|c| c.actor_id().clone()).collect();
    let mut writer = who.clone();
    // At most as many candidates as changes since `base`, plus one: one is always free.
    for k in 0..=since.len() {
        writer.install = who.install;
        writer.install[7] ^= (k & 0xff) as u8;
        writer.install[6] ^= ((k >> 8) & 0xff) as u8;
        if !since.contains(&writer.actor_id()) {
            break;
        }
    }
    writer
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::id::Role;
    use crate::model::{
        Activity, EngagementPlan, NewDocument, PlanItem, TaskStatus, create_document, read_record, update_record,
    };

    fn who(user: &str) -> Identity {
        Identity { tenant: "t".into(), user: user.into(), device: "d".into(), role: Role::Msl, install: [1; 8] }
    }

    fn activity(id: &str) -> Activity {
        Activity { id: id.into(), description: id.into(), owner: "o".into(), due: None, status: TaskStatus::Open }
    }

    #[test]
    fn versions_round_trip_as_text_and_junk_is_refused() {
        let new = NewDocument { team: "x".into(), retention_class: "standard".into() };
        let plan = EngagementPlan::new(&crate::DocumentId::from_bytes([1; 16]), "p");
        let doc = create_document(&who("a"), &new, &plan, 1).expect("creates");
        let v = Version::of(&doc);
        assert_eq!(v.to_string().parse::<Version>().expect("parses"), v);
        for junk in ["", "zz", "12,", &"a".repeat(63)] {
            assert!(junk.parse::<Version>().is_err(), "{junk}");
        }
    }

    #[test]
    fn a_stale_save_keeps_what_the_colleague_did_meanwhile() {
        let new = NewDocument { team: "x".into(), retention_class: "standard".into() };
        let mut plan = EngagementPlan::new(&crate::DocumentId::from_bytes([1; 16]), "title");
        plan.notes = "Agenda".into();
        let (a, b) = (who("a"), who("b"));
        let mut doc = create_document(&a, &new, &plan, 1).expect("creates");
        // A opens the form.
        let read: EngagementPlan = read_record(&doc).expect("reads");
        let base = Version::of(&doc);
        // B (synced in meanwhile) retitles, adds an activity and types into the notes.
        update_record(&mut doc, &b, 2, |p: &mut EngagementPlan| {
            p.title = "B's title".into();
            p.activities.push(activity("b-visit"));
            p.notes.splice(6, 0, " for B");
        })
        .expect("B edits");
        // A saves her form, as read, with one objective added.
        let mut form = read.clone();
        form.objectives.push(PlanItem { id: "a-1".into(), text: "A's objective".into() });
        update_record_at(&mut doc, &base, &a, 3, move |p: &mut EngagementPlan| {
            p.objectives = form.objectives;
            p.title = form.title;
            p.activities = form.activities;
        })
        .expect("A saves");
        let merged: EngagementPlan = read_record(&doc).expect("reads");
        assert_eq!(merged.title, "B's title", "an untouched field keeps the colleague's value");
        assert_eq!(merged.objectives.iter().map(|o| o.text.as_str()).collect::<Vec<_>>(), ["A's objective"]);
        assert_eq!(merged.activities.iter().map(|x| x.id.as_str()).collect::<Vec<_>>(), ["b-visit"]);
        assert_eq!(merged.notes.as_str(), "Agenda for B");
    }

    #[test]
    fn a_save_after_the_devices_own_edit_since_the_read_does_not_reuse_its_sequence_numbers() {
        let new = NewDocument { team: "x".into(), retention_class: "standard".into() };
        let a = who("a");
        let mut doc = create_document(&a, &new, &EngagementPlan::new(&crate::DocumentId::from_bytes([1; 16]), "t"), 1)
            .expect("creates");
        let base = Version::of(&doc);
        update_record(&mut doc, &a, 2, |p: &mut EngagementPlan| p.notes.splice(0, 0, "typed")).expect("types");
        update_record_at(&mut doc, &base, &a, 3, |p: &mut EngagementPlan| p.title = "saved".into()).expect("saves");
        update_record_at(&mut doc, &base, &a, 4, |p: &mut EngagementPlan| {
            p.objectives.push(PlanItem { id: "o".into(), text: "o".into() })
        })
        .expect("saves again from the same stale read");
        let plan: EngagementPlan = read_record(&doc).expect("reads");
        assert_eq!((plan.title.as_str(), plan.notes.as_str(), plan.objectives.len()), ("saved", "typed", 1));
        // Every actor is the writer's: the relay's guard accepts them.
        let principal = a.actor_principal();
        assert!(doc.get_changes(&[]).iter().all(|c| crate::id::actor_belongs_to(c.actor_id(), &principal)));
        // And the document survives a save/load round trip (no duplicate sequence numbers).
        assert_eq!(Automerge::load(&doc.save()).expect("loads").get_heads(), doc.get_heads());
    }

    #[test]
    fn an_unknown_version_and_a_record_submitted_since_the_read_are_refused() {
        let new = NewDocument { team: "x".into(), retention_class: "standard".into() };
        let a = who("a");
        let mut doc = create_document(&a, &new, &EngagementPlan::new(&crate::DocumentId::from_bytes([1; 16]), "t"), 1)
            .expect("creates");
        let other =
            create_document(&who("z"), &new, &EngagementPlan::new(&crate::DocumentId::from_bytes([2; 16]), "z"), 1)
                .expect("creates");
        let err = update_record_at(&mut doc, &Version::of(&other), &a, 2, |_: &mut EngagementPlan| ()).unwrap_err();
        assert!(matches!(err, ModelError::UnknownVersion), "{err}");

        let visit =
            crate::model::Interaction::new(&crate::DocumentId::from_bytes([1; 16]), 1, crate::model::Channel::Phone);
        let mut doc = create_document(&a, &new, &visit, 1).expect("creates");
        let base = Version::of(&doc);
        crate::model::submit_record::<crate::model::Interaction>(&mut doc, &who("b"), 2).expect("submits");
        let err = update_record_at(&mut doc, &base, &a, 3, |i: &mut crate::model::Interaction| i.location = None)
            .unwrap_err();
        assert!(matches!(err, ModelError::Locked), "a draft read before the submit is locked now: {err}");
    }
}
