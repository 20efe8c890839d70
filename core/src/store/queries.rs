//! The app's screens, answered from the screen indexes (see `screen`) by range scans: a KOL's
//! interactions, my open tasks, open medical information requests, drafts. No Automerge
//! document is loaded. A store opened without
//! [`StoreOptions::screen_indexes`](super::StoreOptions::screen_indexes) answers every query empty.
//!
//! An entry that does not decode (damaged, or a kind or record status a newer build wrote) is
//! skipped with a warning: it hides one row, not the screen, and the document rewrites it on its
//! next change. A channel, task status or fulfilment a newer app wrote is listed as `Unknown`.

use std::cmp::Reverse;

use minicbor::Decode;

use super::keys::{self, TaskRange};
use super::screen::{StoredDraft, StoredInteraction, StoredMir, StoredTask, StoredUnreadable, status_named};
use super::{DocStore, StoreError};
use crate::id::DocumentId;
use crate::model::{Channel, Fulfilment, Kind, RecordStatus, TaskStatus};
use crate::storage::KeyValue;

/// Bytes read per page when a scan may stop early (tasks due before a date).
const PAGE_BYTES: usize = 16 << 10;

/// A document this build cannot read (see [`DocStore::unreadable`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnreadableRow {
    /// The document's id.
    pub id: DocumentId,
    /// Its `kind` as stored, perhaps one this build does not know; `None` if it has none.
    pub kind: Option<String>,
    /// Its schema version when newer than this build's [`SCHEMA_VERSION`](crate::model::SCHEMA_VERSION);
    /// `None` when the schema is one this build knows (the record does not hydrate).
    pub schema: Option<u64>,
}

/// A row of a KOL's interaction list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InteractionRow {
    /// The interaction's document id.
    pub id: DocumentId,
    /// The KOL it is filed under (a profile merged into the one asked for, possibly).
    pub kol: DocumentId,
    /// When it began, in milliseconds since the Unix epoch.
    pub start: i64,
    /// In person, phone, video, congress or email.
    pub channel: Channel,
    /// Draft or submitted.
    pub status: RecordStatus,
    /// Follow-ups still open or in progress.
    pub open_follow_ups: u32,
    /// Who submitted it, or while it is a draft who created it (the envelope's `created_by`);
    /// `None` if neither reads.
    pub author: Option<String>,
}

/// An open follow-up of an interaction or activity of an engagement plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskRow {
    /// The interaction or plan holding it.
    pub record: DocumentId,
    /// [`Kind::Interaction`] (a follow-up) or [`Kind::EngagementPlan`] (an activity).
    pub kind: Kind,
    /// The follow-up's or activity's id within its record.
    pub item: String,
    /// What is to be done.
    pub description: String,
    /// Who is responsible for it.
    pub owner: String,
    /// When it is due, in milliseconds since the Unix epoch, if it has a date.
    pub due: Option<i64>,
    /// Open or in progress.
    pub status: TaskStatus,
    /// The KOL of its record.
    pub kol: Option<DocumentId>,
}

/// A medical information request still to be answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MirRow {
    /// The request's document id.
    pub id: DocumentId,
    /// The KOL who asked.
    pub kol: Option<DocumentId>,
    /// Open or sent to medical information.
    pub fulfilment: Fulfilment,
    /// Draft or submitted.
    pub status: RecordStatus,
    /// When the request was recorded (its envelope's `created_at`).
    pub created: Option<i64>,
}

/// A draft of a kind that locks on submit (interaction, insight, request), not yet submitted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DraftRow {
    /// The draft's document id.
    pub id: DocumentId,
    /// Its kind.
    pub kind: Kind,
    /// Who created it.
    pub author: Option<String>,
    /// When it was created.
    pub created: Option<i64>,
    /// The KOLs it is filed under.
    pub kols: Vec<DocumentId>,
}

impl DocStore {
    /// A KOL's interactions, newest first, including those filed under profiles merged into it
    /// (as [`DocStore::records_for_kol`] counts them). One range per profile.
    pub fn interactions_of_kol(&self, kol: &DocumentId) -> Result<Vec<InteractionRow>, StoreError> {
        let mut rows = Vec::new();
        for member in self.kol_members(kol)? {
            for (key, value) in self.kv.scan_prefix(&keys::screen_interactions_of(&member))? {
                rows.extend(decoded::<StoredInteraction>(&key, &value).and_then(|s| interaction_row(&key, s)));
            }
        }
        rows.sort_by_key(|r| (Reverse(r.start), r.id));
        Ok(rows)
    }

    /// When `kol`'s newest interaction began (this profile's own, not its merged ones): the first
    /// key of its range.
    pub(super) fn newest_interaction(&self, kol: &DocumentId) -> Result<Option<i64>, StoreError> {
        let prefix = keys::screen_interactions_of(kol);
        let first = self.kv.scan_page(&prefix, None, 1)?;
        Ok(first.first().and_then(|(k, _)| time_at(k, prefix.len())).map(keys::time_from_descending))
    }

    /// `owner`'s open follow-ups and plan activities (open or in progress) due before `before`
    /// (milliseconds since the Unix epoch), overdue ones included, soonest first. Undated ones
    /// are not "due before" anything: [`DocStore::undated_open_tasks`] lists them, so a screen
    /// shows them apart rather than losing them. The scan stops at the first later due date.
    pub fn open_tasks_due_before(&self, owner: &str, before: i64) -> Result<Vec<TaskRow>, StoreError> {
        let prefix = keys::screen_tasks_of(owner, TaskRange::OpenDated);
        let mut rows = Vec::new();
        let mut after: Option<Vec<u8>> = None;
        loop {
            let page = self.kv.scan_page(&prefix, after.as_deref(), PAGE_BYTES)?;
            let Some((last, _)) = page.last() else { break };
            after = Some(last.clone());
            for (key, value) in &page {
                if time_at(key, prefix.len()).map(keys::time_from_ascending).is_none_or(|due| due >= before) {
                    return Ok(rows);
                }
                rows.extend(task_row(owner, key, value));
            }
        }
        Ok(rows)
    }

    /// `owner`'s open follow-ups and plan activities that have no due date.
    pub fn undated_open_tasks(&self, owner: &str) -> Result<Vec<TaskRow>, StoreError> {
        let scanned = self.kv.scan_prefix(&keys::screen_tasks_of(owner, TaskRange::OpenUndated))?;
        Ok(scanned.iter().filter_map(|(key, value)| task_row(owner, key, value)).collect())
    }

    /// Medical information requests not yet answered or closed, oldest first.
    pub fn open_mirs(&self) -> Result<Vec<MirRow>, StoreError> {
        let scanned = self.kv.scan_prefix(&keys::screen_mirs(true))?;
        Ok(scanned.iter().filter_map(|(key, value)| mir_row(key, value)).collect())
    }

    /// Every draft of the kinds that lock on submit, newest first.
    pub fn drafts(&self) -> Result<Vec<DraftRow>, StoreError> {
        self.drafts_under(&keys::screen_drafts())
    }

    /// The drafts `author` created, newest first.
    pub fn drafts_of(&self, author: &str) -> Result<Vec<DraftRow>, StoreError> {
        let mut rows = self.drafts_under(&keys::screen_drafts_of(author))?;
        rows.retain(|r| r.author.as_deref() == Some(author));
        Ok(rows)
    }

    /// The documents this build cannot read: written by a newer app (a newer schema or a kind
    /// it does not know), or records that do not hydrate. They are in no list; the sync status
    /// counts them ([`DocStore::unreadable_count`]) so the app can ask for an update.
    pub fn unreadable(&self) -> Result<Vec<UnreadableRow>, StoreError> {
        let scanned = self.kv.scan_prefix(keys::SCREEN_UNREADABLE)?;
        Ok(scanned
            .iter()
            .filter_map(|(key, value)| {
                let s: StoredUnreadable = decoded(key, value)?;
                Some(UnreadableRow { id: keys::trailing_id(key)?, kind: s.kind, schema: s.schema })
            })
            .collect())
    }

    /// How many documents [`DocStore::unreadable`] lists (keys only: no value is decoded).
    pub fn unreadable_count(&self) -> Result<usize, StoreError> {
        Ok(self.kv.scan_keys(keys::SCREEN_UNREADABLE)?.len())
    }

    fn drafts_under(&self, prefix: &[u8]) -> Result<Vec<DraftRow>, StoreError> {
        let scanned: Vec<KeyValue> = self.kv.scan_prefix(prefix)?;
        let mut rows: Vec<DraftRow> = scanned.iter().filter_map(|(key, value)| draft_row(key, value)).collect();
        rows.sort_by_key(|r| (Reverse(r.created), r.id));
        Ok(rows)
    }
}

fn decoded<'b, T: Decode<'b, ()>>(key: &[u8], value: &'b [u8]) -> Option<T> {
    minicbor::decode(value)
        .inspect_err(|_| tracing::warn!(document = ?keys::trailing_id(key), "skipping an unreadable screen entry"))
        .ok()
}

/// The 8 time bytes at `at` in a key.
fn time_at(key: &[u8], at: usize) -> Option<[u8; 8]> {
    key.get(at..at + 8)?.try_into().ok()
}

fn unknown<T>(key: &[u8]) -> Option<T> {
    tracing::warn!(document = ?keys::trailing_id(key), "skipping a screen entry with a name this build does not know");
    None
}

fn interaction_row(key: &[u8], s: StoredInteraction) -> Option<InteractionRow> {
    let Some(status) = status_named(&s.status) else { return unknown(key) };
    Some(InteractionRow {
        id: keys::trailing_id(key)?,
        kol: s.kol.parse().ok()?,
        start: s.start,
        channel: Channel::parse(&s.channel),
        status,
        open_follow_ups: s.open_follow_ups,
        author: s.author,
    })
}

fn task_row(owner: &str, key: &[u8], value: &[u8]) -> Option<TaskRow> {
    let s: StoredTask = decoded(key, value)?;
    // Two owners whose names share a hash prefix would share a range: keep only the asked one.
    if s.owner != owner {
        return None;
    }
    let Some(kind) = Kind::parse(&s.kind) else { return unknown(key) };
    Some(TaskRow {
        record: DocumentId::from_bytes(s.record),
        kind,
        item: s.item,
        description: s.description,
        owner: s.owner,
        due: s.due,
        status: TaskStatus::parse(&s.status),
        kol: s.kol.parse().ok(),
    })
}

fn mir_row(key: &[u8], value: &[u8]) -> Option<MirRow> {
    let s: StoredMir = decoded(key, value)?;
    let Some(status) = status_named(&s.status) else { return unknown(key) };
    let fulfilment = Fulfilment::parse(&s.fulfilment);
    Some(MirRow { id: keys::trailing_id(key)?, kol: s.kol.parse().ok(), fulfilment, status, created: s.created })
}

fn draft_row(key: &[u8], value: &[u8]) -> Option<DraftRow> {
    let s: StoredDraft = decoded(key, value)?;
    let Some(kind) = Kind::parse(&s.kind) else { return unknown(key) };
    Some(DraftRow {
        id: keys::trailing_id(key)?,
        kind,
        author: s.author,
        created: s.created,
        kols: s.kols.iter().filter_map(|k| k.parse().ok()).collect(),
    })
}

#[cfg(test)]
#[path = "queries/tests.rs"]
mod tests;
