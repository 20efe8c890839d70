//! The screen indexes: what the app's lists show (a KOL's interactions, my open tasks, open
//! medical information requests, drafts) as index entries, so each list is a range scan and no
//! Automerge document is loaded. Their on-disk forms, how they are derived from a document, and
//! how a write moves them.
//!
//! Every entry is under `x/` (see the key table in [`super`]). A document's entries are listed
//! under `x/b/ID` (their keys), so its next write deletes exactly those it no longer has and a
//! removal deletes them all. Only stores opened with
//! [`StoreOptions::screen_indexes`](super::StoreOptions::screen_indexes) keep them (devices); a
//! relay lists nothing and writes none.

use minicbor::{Decode, Encode};

use super::index::encode;
use super::keys::{self, TaskRange};
use super::{StoreError, StoreOptions};
use crate::DocumentId;
use crate::model::{
    EngagementPlan, Envelope, Fulfilment, Interaction, Kind, MedicalInformationRequest, ModelError, RecordStatus,
    TaskStatus,
};
use crate::storage::{Batch, KvStore};

/// Names stored for the model's enums: the document's own names (their autosurgeon renames), so
/// the index reads like the document. An unknown name (a newer build's) reads as `None`.
macro_rules! names {
    ($ty:ty, $to:ident, $from:ident: $($variant:ident = $name:literal),+ $(,)?) => {
        pub(super) fn $to(v: $ty) -> &'static str {
            match v { $(<$ty>::$variant => $name),+ }
        }
        pub(super) fn $from(s: &str) -> Option<$ty> {
            match s { $($name => Some(<$ty>::$variant),)+ _ => None }
        }
    };
}
names!(RecordStatus, status_name, status_named: Draft = "draft", Submitted = "submitted");

/// The name stored for an open enum's value (`model::open_enum`): the document's own name, or
/// `""` for a value this build does not know, which reads back as `Unknown` (so the row is
/// listed, showing an unknown value, rather than left out).
pub(super) fn open_name(name: Option<&'static str>) -> String {
    name.unwrap_or_default().to_owned()
}

/// An interaction in its KOL's list (`x/i/KOL START↓ ID`). Field numbers are the format: never
/// reuse one. Guarded by a fixture test.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub(super) struct StoredInteraction {
    #[n(0)]
    pub kol: String,
    #[n(1)]
    pub start: i64,
    #[n(2)]
    pub channel: String,
    #[n(3)]
    pub status: String,
    /// Follow-ups open or in progress.
    #[n(4)]
    pub open_follow_ups: u32,
    /// See [`author`].
    #[n(5)]
    pub author: Option<String>,
}

/// A follow-up of an interaction or an activity of an engagement plan, in its owner's list
/// (`x/t/OWNER RANGE DUE↑ RECORD ITEM`).
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub(super) struct StoredTask {
    #[n(0)]
    pub kind: String,
    #[cbor(n(1), with = "minicbor::bytes")]
    pub record: [u8; 16],
    #[n(2)]
    pub item: String,
    #[n(3)]
    pub description: String,
    #[n(4)]
    pub owner: String,
    #[n(5)]
    pub due: Option<i64>,
    #[n(6)]
    pub status: String,
    #[n(7)]
    pub kol: String,
}

/// A medical information request (`x/q/OPEN CREATED↑ ID`).
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub(super) struct StoredMir {
    #[n(0)]
    pub kol: String,
    #[n(1)]
    pub fulfilment: String,
    #[n(2)]
    pub status: String,
    /// The envelope's `created_at`; `None` if the envelope does not read.
    #[n(3)]
    pub created: Option<i64>,
}

/// A draft of a kind that locks on submit (`x/d/AUTHOR ID`).
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub(super) struct StoredDraft {
    #[n(0)]
    pub kind: String,
    #[n(1)]
    pub author: Option<String>,
    #[n(2)]
    pub created: Option<i64>,
    /// The KOLs it is filed under.
    #[n(3)]
    pub kols: Vec<String>,
}

/// A document this build cannot read (`x/u/ID`): a newer app's (a newer schema, or a kind this
/// build does not know), or a record that does not hydrate. Not in any list; counted, so the app
/// can say that some records need an update instead of leaving them silently out. Its next
/// write, a rebuild, or the check at every open (`index_version`) indexes it once it reads.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub(super) struct StoredUnreadable {
    /// The document's `kind` as stored (perhaps one this build does not know).
    #[n(0)]
    pub kind: Option<String>,
    /// The document's schema version when it is newer than this build's.
    #[n(1)]
    pub schema: Option<u64>,
}

/// One screen index entry of a document, before it has a key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Entry {
    Interaction(StoredInteraction),
    Task(StoredTask),
    Mir(StoredMir),
    Draft(StoredDraft),
    /// A profile merged into another: `x/g/ID` holds that profile's 16 id bytes, so resolving
    /// merges reads the merged profiles only, not every summary.
    MergedInto(DocumentId),
    Unreadable(StoredUnreadable),
}

impl Entry {
    pub(super) fn is_unreadable(&self) -> bool {
        matches!(self, Entry::Unreadable(_))
    }

    /// Its key and value; `None` if a reference in it is not a document id (never indexed).
    fn key_value(&self, id: &DocumentId) -> Option<(Vec<u8>, Vec<u8>)> {
        Some(match self {
            Entry::Interaction(i) => (keys::screen_interaction(&i.kol.parse().ok()?, i.start, id), encode(i)),
            Entry::Task(t) => {
                let open = task_is_open(TaskStatus::parse(&t.status));
                let range = match (open, t.due) {
                    (false, _) => TaskRange::Closed,
                    (true, Some(_)) => TaskRange::OpenDated,
                    (true, None) => TaskRange::OpenUndated,
                };
                (keys::screen_task(&t.owner, range, t.due, id, &t.item), encode(t))
            }
            Entry::Mir(m) => {
                let open = mir_is_open(Fulfilment::parse(&m.fulfilment));
                (keys::screen_mir(open, m.created.unwrap_or_default(), id), encode(m))
            }
            Entry::Draft(d) => (keys::screen_draft(d.author.as_deref().unwrap_or_default(), id), encode(d)),
            Entry::MergedInto(winner) => (keys::screen_merged(id), winner.as_bytes().to_vec()),
            Entry::Unreadable(u) => (keys::screen_unreadable(id), encode(u)),
        })
    }
}

/// Open work: not started or in progress, or a status a newer app wrote (shown, as unknown,
/// rather than silently dropped from someone's list).
pub(super) fn task_is_open(status: TaskStatus) -> bool {
    !matches!(status, TaskStatus::Done | TaskStatus::Cancelled)
}

/// A request still to be answered: recorded or sent to medical information, or a state a newer
/// app wrote (listed, as unknown).
pub(super) fn mir_is_open(fulfilment: Fulfilment) -> bool {
    !matches!(fulfilment, Fulfilment::Answered | Fulfilment::Closed)
}

/// A record's author, as the screens show it: who submitted it, or while it is a draft who
/// created it (the envelope's `created_by`, fixed at creation). `None` if neither is known.
pub(super) fn author(submitted_by: Option<&str>, envelope: Option<&Envelope>) -> Option<String> {
    submitted_by.map(str::to_owned).or_else(|| envelope.map(|e| e.created_by.user.clone()))
}

fn draft(kind: Kind, status: RecordStatus, kols: Vec<String>, envelope: Option<&Envelope>) -> Option<Entry> {
    (status == RecordStatus::Draft).then(|| {
        Entry::Draft(StoredDraft {
            kind: kind.as_str().to_owned(),
            author: author(None, envelope),
            created: envelope.map(|e| e.created_at),
            kols,
        })
    })
}

/// A profile's entries: its merge link, if it was merged into another (a link that is not a
/// document id is none, as in [`super::KolSummary::merged_into`]).
pub(super) fn of_profile(merged_into: Option<&str>) -> Vec<Entry> {
    merged_into.and_then(|m| m.parse().ok()).map(Entry::MergedInto).into_iter().collect()
}

/// An interaction's entries: its row in its KOL's list, its follow-ups, and its draft entry.
pub(super) fn of_interaction(i: &Interaction, envelope: Option<&Envelope>) -> Vec<Entry> {
    let submitted_by = i.submission.as_ref().map(|s| s.user.as_str());
    let mut out = vec![Entry::Interaction(StoredInteraction {
        kol: i.kol_id.clone(),
        start: i.start,
        channel: open_name(i.channel.name()),
        status: status_name(i.status).to_owned(),
        open_follow_ups: i.follow_ups.iter().filter(|f| task_is_open(f.status)).count() as u32,
        author: author(submitted_by, envelope),
    })];
    out.extend(
        i.follow_ups
            .iter()
            .map(|f| task(Kind::Interaction, &f.id, &f.description, &f.owner, f.due, f.status, &i.kol_id)),
    );
    out.extend(draft(Kind::Interaction, i.status, vec![i.kol_id.clone()], envelope));
    out
}

/// A plan's entries: its activities (objectives and tactics have no owner, due date or status).
pub(super) fn of_plan(p: &EngagementPlan) -> Vec<Entry> {
    p.activities
        .iter()
        .map(|a| task(Kind::EngagementPlan, &a.id, &a.description, &a.owner, a.due, a.status, &p.kol_id))
        .collect()
}

/// A request's entries: its row and its draft entry.
pub(super) fn of_mir(m: &MedicalInformationRequest, envelope: Option<&Envelope>) -> Vec<Entry> {
    let mut out = vec![Entry::Mir(StoredMir {
        kol: m.kol_id.clone(),
        fulfilment: open_name(m.fulfilment.name()),
        status: status_name(m.status).to_owned(),
        created: envelope.map(|e| e.created_at),
    })];
    out.extend(draft(Kind::MedicalInformationRequest, m.status, vec![m.kol_id.clone()], envelope));
    out
}

/// A document's entry when it is not a liaison record this build reads: a newer schema or an
/// unknown kind (a newer app's). Nothing for what is no liaison record at all.
pub(super) fn of_unreadable(doc: &automerge::Automerge, e: &ModelError) -> Vec<Entry> {
    use automerge::{ReadDoc, ScalarValue, Value};
    let kind = match doc.get(automerge::ROOT, "kind") {
        Ok(Some((Value::Scalar(s), _))) => match s.as_ref() {
            ScalarValue::Str(k) => Some(k.to_string()),
            _ => None,
        },
        _ => None,
    };
    match e {
        ModelError::UnsupportedSchema(v) => vec![unreadable(kind.as_deref(), Some(*v))],
        ModelError::NotLiaison(_) if kind.as_deref().is_some_and(|k| Kind::parse(k).is_none()) => {
            vec![unreadable(kind.as_deref(), None)]
        }
        _ => Vec::new(),
    }
}

/// The entry of a document this build cannot read.
pub(super) fn unreadable(kind: Option<&str>, schema: Option<u64>) -> Entry {
    // The kind is the document's own text: kept short, it is only shown as a count's detail.
    let kind = kind.map(|k| k.chars().take(64).collect());
    Entry::Unreadable(StoredUnreadable { kind, schema })
}

/// An insight's entries: its draft entry.
pub(super) fn of_insight(status: RecordStatus, kols: Vec<String>, envelope: Option<&Envelope>) -> Vec<Entry> {
    draft(Kind::MedicalInsight, status, kols, envelope).into_iter().collect()
}

fn task(kind: Kind, item: &str, text: &str, owner: &str, due: Option<i64>, status: TaskStatus, kol: &str) -> Entry {
    Entry::Task(StoredTask {
        kind: kind.as_str().to_owned(),
        record: [0; 16],
        item: item.to_owned(),
        description: text.to_owned(),
        owner: owner.to_owned(),
        due,
        status: open_name(status.name()),
        kol: kol.to_owned(),
    })
}

/// Keys and values of a document's entries (a task learns its record's id here).
fn key_values(id: &DocumentId, entries: &[Entry]) -> Vec<(Vec<u8>, Vec<u8>)> {
    entries
        .iter()
        .filter_map(|e| match e {
            Entry::Task(t) => Entry::Task(StoredTask { record: *id.as_bytes(), ..t.clone() }).key_value(id),
            other => other.key_value(id),
        })
        .collect()
}

/// The keys a document's entries were last written under.
fn written_keys(kv: &dyn KvStore, id: &DocumentId) -> Result<Vec<Vec<u8>>, StoreError> {
    let Some(bytes) = kv.get(&keys::screen_backref(id))? else { return Ok(Vec::new()) };
    let list: Vec<minicbor::bytes::ByteVec> = minicbor::decode(&bytes)
        .map_err(|_| StoreError::Corrupt { id: *id, reason: "screen index back-reference unreadable" })?;
    Ok(list.into_iter().map(Vec::from).collect())
}

/// Moves a document's screen entries to `entries`, in a write's batch: those it had and no
/// longer has go, the new ones are put, and `x/b/ID` lists them. Nothing when the store keeps no
/// screen indexes.
pub(super) fn move_entries(
    batch: &mut Batch,
    kv: &dyn KvStore,
    options: &StoreOptions,
    id: &DocumentId,
    entries: &[Entry],
) -> Result<(), StoreError> {
    if !options.screen_indexes {
        return Ok(());
    }
    let new = key_values(id, entries);
    // A back-reference that does not read must not block the document's writes: its entries
    // may then linger (until a rebuild), and the new ones are listed from here on.
    let old = match written_keys(kv, id) {
        Err(e @ StoreError::Corrupt { .. }) => {
            tracing::warn!(document = %id, error = %e, "old screen entries of a document left");
            Vec::new()
        }
        other => other?,
    };
    if old.is_empty() && new.is_empty() {
        // A profile, a record without tasks or drafts, or no liaison record: nothing to move.
        return Ok(());
    }
    for old in old {
        if !new.iter().any(|(k, _)| *k == old) {
            batch.delete(old);
        }
    }
    put_entries(batch, id, new);
    Ok(())
}

/// Puts a document's entries and their back-reference, over none (a rebuild).
pub(super) fn put_new_entries(batch: &mut Batch, id: &DocumentId, entries: &[Entry]) {
    if !entries.is_empty() {
        put_entries(batch, id, key_values(id, entries));
    }
}

fn put_entries(batch: &mut Batch, id: &DocumentId, new: Vec<(Vec<u8>, Vec<u8>)>) {
    if new.is_empty() {
        batch.delete(keys::screen_backref(id));
        return;
    }
    let listed: Vec<minicbor::bytes::ByteVec> = new.iter().map(|(k, _)| k.clone().into()).collect();
    batch.put(keys::screen_backref(id), encode(&listed));
    for (k, v) in new {
        batch.put(k, v);
    }
}

/// Deletes a removed document's entries, in the removal's batch. A back-reference that does not
/// read leaves its entries (until a rebuild) rather than failing the removal.
pub(super) fn remove_entries(batch: &mut Batch, kv: &dyn KvStore, id: &DocumentId) -> Result<(), StoreError> {
    let old = match written_keys(kv, id) {
        Ok(old) => old,
        Err(e @ StoreError::Corrupt { .. }) => {
            tracing::warn!(document = %id, error = %e, "screen entries of a removed document left");
            batch.delete(keys::screen_backref(id));
            return Ok(());
        }
        Err(e) => return Err(e),
    };
    if !old.is_empty() {
        for k in old {
            batch.delete(k);
        }
        batch.delete(keys::screen_backref(id));
    }
    Ok(())
}

#[cfg(test)]
#[path = "screen/tests.rs"]
mod tests;
