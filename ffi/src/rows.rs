//! The screens' rows, answered from the store's index (never by loading documents): a KOL's
//! interactions, my open tasks, open medical information requests, drafts; and the list
//! queries a live query re-runs (`watch.rs`). Core's row types carry document ids and unsigned
//! counts; these carry ids as text and signed integers, as the apps see everything.

use liaison_core::live::{ListChange, diff};
use liaison_core::model::{Channel, Fulfilment, RecordStatus, TaskStatus};
use liaison_core::{DocStore, DocumentId, StoreError, store};

use crate::types::{KolSummary, RecordKind};

/// A row of a KOL's interaction list (newest first).
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct InteractionRow {
    pub id: String,
    /// The KOL it is filed under (possibly a profile merged into the one asked for).
    pub kol_id: String,
    /// When it began (ms since the epoch).
    pub start: i64,
    pub channel: Channel,
    pub status: RecordStatus,
    /// Follow-ups still open or in progress.
    pub open_follow_ups: i32,
    /// Who submitted it, or while a draft who created it.
    pub author: Option<String>,
}

/// An open follow-up of an interaction, or an open activity of an engagement plan.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct TaskRow {
    /// The interaction or plan holding it.
    pub record_id: String,
    /// `Interaction` (a follow-up) or `EngagementPlan` (an activity).
    pub kind: RecordKind,
    /// The follow-up's or activity's id within its record.
    pub item_id: String,
    pub description: String,
    pub owner: String,
    /// When it is due (ms since the epoch), if dated.
    pub due: Option<i64>,
    pub status: TaskStatus,
    pub kol_id: Option<String>,
}

/// A medical information request still to be answered.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct MirRow {
    pub id: String,
    pub kol_id: Option<String>,
    pub fulfilment: Fulfilment,
    pub status: RecordStatus,
    /// When it was recorded (ms since the epoch).
    pub created: Option<i64>,
}

/// A record this version of the app cannot read.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct UnreadableRecord {
    pub id: String,
    /// Its kind as stored (`"interaction"`, or a kind a newer app added); `None` if it has none.
    pub kind: Option<String>,
    /// The schema version it was written with, when newer than this app's; `None` when the
    /// schema is this app's own and the record still does not read.
    pub schema: Option<i64>,
}

impl From<store::UnreadableRow> for UnreadableRecord {
    fn from(r: store::UnreadableRow) -> Self {
        Self { id: r.id.to_string(), kind: r.kind, schema: r.schema.map(|s| i64::try_from(s).unwrap_or(i64::MAX)) }
    }
}

/// A draft not yet submitted (interaction, insight or request).
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Record)]
pub struct DraftRow {
    pub id: String,
    pub kind: RecordKind,
    pub author: Option<String>,
    pub created: Option<i64>,
    pub kol_ids: Vec<String>,
}

impl From<store::InteractionRow> for InteractionRow {
    fn from(r: store::InteractionRow) -> Self {
        Self {
            id: r.id.to_string(),
            kol_id: r.kol.to_string(),
            start: r.start,
            channel: r.channel,
            status: r.status,
            open_follow_ups: i32::try_from(r.open_follow_ups).unwrap_or(i32::MAX),
            author: r.author,
        }
    }
}

impl From<store::TaskRow> for TaskRow {
    fn from(r: store::TaskRow) -> Self {
        Self {
            record_id: r.record.to_string(),
            kind: r.kind.into(),
            item_id: r.item,
            description: r.description,
            owner: r.owner,
            due: r.due,
            status: r.status,
            kol_id: r.kol.map(|k| k.to_string()),
        }
    }
}

impl From<store::MirRow> for MirRow {
    fn from(r: store::MirRow) -> Self {
        Self {
            id: r.id.to_string(),
            kol_id: r.kol.map(|k| k.to_string()),
            fulfilment: r.fulfilment,
            status: r.status,
            created: r.created,
        }
    }
}

impl From<store::DraftRow> for DraftRow {
    fn from(r: store::DraftRow) -> Self {
        Self {
            id: r.id.to_string(),
            kind: r.kind.into(),
            author: r.author,
            created: r.created,
            kol_ids: r.kols.iter().map(ToString::to_string).collect(),
        }
    }
}

/// A list query's rows.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Enum)]
pub enum QueryRows {
    Kols { rows: Vec<KolSummary> },
    Interactions { rows: Vec<InteractionRow> },
    Tasks { rows: Vec<TaskRow> },
    Mirs { rows: Vec<MirRow> },
    Drafts { rows: Vec<DraftRow> },
}

impl QueryRows {
    /// How `new` differs from these rows (a reset if the query changed kind, which it never
    /// does for one watch). Rows are matched by their record's id (and item's, for tasks).
    pub(crate) fn diff(&self, new: &QueryRows) -> ListChange {
        match (self, new) {
            (Self::Kols { rows: a }, Self::Kols { rows: b }) => diff(a, b, |r| r.id.clone()),
            (Self::Interactions { rows: a }, Self::Interactions { rows: b }) => diff(a, b, |r| r.id.clone()),
            (Self::Tasks { rows: a }, Self::Tasks { rows: b }) => {
                diff(a, b, |r| (r.record_id.clone(), r.item_id.clone()))
            }
            (Self::Mirs { rows: a }, Self::Mirs { rows: b }) => diff(a, b, |r| r.id.clone()),
            (Self::Drafts { rows: a }, Self::Drafts { rows: b }) => diff(a, b, |r| r.id.clone()),
            _ => ListChange::Reset,
        }
    }
}

/// A list query a live query answers again after each change.
#[derive(Debug, Clone)]
pub(crate) enum ListQuery {
    /// The KOL list, or those matching a search.
    Kols { search: Option<String> },
    /// A KOL's interactions, newest first.
    Interactions { kol: DocumentId },
    /// `owner`'s open follow-ups and activities due before `before` (ms since the epoch), and
    /// with `undated` those without a date after them.
    Tasks { owner: String, before: i64, undated: bool },
    /// Open medical information requests.
    Mirs,
    /// Drafts not yet submitted, all or one author's.
    Drafts { author: Option<String> },
}

impl ListQuery {
    pub(crate) fn run(&self, store: &DocStore) -> Result<QueryRows, StoreError> {
        fn rows<T, U: From<T>>(v: Vec<T>) -> Vec<U> {
            v.into_iter().map(Into::into).collect()
        }
        Ok(match self {
            Self::Kols { search: None } => QueryRows::Kols { rows: rows(store.list_kols()?) },
            Self::Kols { search: Some(q) } => QueryRows::Kols { rows: rows(store.search_kols(q)?) },
            Self::Interactions { kol } => QueryRows::Interactions { rows: rows(store.interactions_of_kol(kol)?) },
            Self::Tasks { owner, before, undated } => {
                let mut tasks = store.open_tasks_due_before(owner, *before)?;
                if *undated {
                    tasks.extend(store.undated_open_tasks(owner)?);
                }
                QueryRows::Tasks { rows: rows(tasks) }
            }
            Self::Mirs => QueryRows::Mirs { rows: rows(store.open_mirs()?) },
            Self::Drafts { author: None } => QueryRows::Drafts { rows: rows(store.drafts()?) },
            Self::Drafts { author: Some(a) } => QueryRows::Drafts { rows: rows(store.drafts_of(a)?) },
        })
    }
}
