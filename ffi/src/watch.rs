//! Live queries: `watch_*` calls that emit the current answer first and then every change,
//! each returning a [`WatchHandle`] the app cancels (dropping it cancels too).
//!
//! Every watch is answered on the library's notifier thread, never on the caller's: the first
//! answer right after the call, then again after each batch of committed changes (local or
//! from the relay) that could change it: list queries after any change (they read the index,
//! a few milliseconds), a record's watch when that record changed, the sync status's when the
//! status did. A list update carries the new rows and how they differ from the previous ones
//! (`RowChange`, from `liaison_core::live::diff`); an answer equal to the previous one is not
//! sent. After `cancel` no more calls reach the observer (one already running finishes).

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};

use liaison_core::live::ListChange;
use liaison_core::{DocStore, DocumentId};

use crate::error::{CallbackError, LiaisonError};
use crate::rows::{DraftRow, InteractionRow, ListQuery, MirRow, QueryRows, TaskRow, UnreadableRecord};
use crate::store::{LiaisonStore, lock, parse_id};
use crate::sync::{Note, SyncStatus};
use crate::versioned::RecordValue;

/// How a list's new rows differ from the ones last sent.
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Enum)]
pub enum RowChange {
    /// Show the new rows as they are (the first answer, or rows that moved).
    Reset,
    /// Item-wise: positions of removed rows in the previous list, of inserted and updated
    /// rows in the new one; each ascending. Apply removals first, then insertions.
    Diff { removed: Vec<i32>, inserted: Vec<i32>, updated: Vec<i32> },
}

impl From<ListChange> for RowChange {
    fn from(c: ListChange) -> Self {
        let ints = |v: Vec<usize>| v.into_iter().map(|i| i32::try_from(i).unwrap_or(i32::MAX)).collect();
        match c {
            ListChange::Reset => Self::Reset,
            ListChange::Diff { removed, inserted, updated } => {
                Self::Diff { removed: ints(removed), inserted: ints(inserted), updated: ints(updated) }
            }
        }
    }
}

/// A list query's answer: all its rows, and how they differ from the last answer sent.
#[derive(Debug, Clone, PartialEq, uniffi::Record)]
pub struct QueryUpdate {
    pub rows: QueryRows,
    pub change: RowChange,
}

/// Hears a list query's answers. Called on the library's notifier thread; hand the rows to
/// the UI thread. A call that throws is logged and the next update comes as usual.
#[uniffi::export(with_foreign)]
pub trait QueryObserver: Send + Sync {
    fn on_update(&self, update: QueryUpdate) -> Result<(), CallbackError>;
}

/// Hears one record: its value after each change (`RecordValue::Missing` once it is gone).
#[uniffi::export(with_foreign)]
pub trait RecordObserver: Send + Sync {
    fn on_record(&self, value: RecordValue) -> Result<(), CallbackError>;
}

/// Hears the sync status: the current one first, then each change.
#[uniffi::export(with_foreign)]
pub trait SyncStatusObserver: Send + Sync {
    fn on_status(&self, status: SyncStatus) -> Result<(), CallbackError>;
}

/// A running live query. `cancel` (or dropping the handle) ends it.
#[derive(uniffi::Object)]
pub struct WatchHandle {
    watch: Arc<Watch>,
}

#[uniffi::export]
impl WatchHandle {
    /// Ends the live query: no later call reaches its observer.
    pub fn cancel(&self) {
        self.watch.cancelled.store(true, Ordering::SeqCst);
    }

    /// Whether it was cancelled.
    pub fn is_cancelled(&self) -> bool {
        self.watch.cancelled.load(Ordering::SeqCst)
    }
}

impl Drop for WatchHandle {
    fn drop(&mut self) {
        self.cancel();
    }
}

impl std::fmt::Debug for WatchHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WatchHandle").field("cancelled", &self.is_cancelled()).finish()
    }
}

/// What a watch answers, and what it last sent.
pub(crate) enum WatchKind {
    List { query: ListQuery, observer: Arc<dyn QueryObserver>, last: Option<QueryRows> },
    Record { id: DocumentId, observer: Arc<dyn RecordObserver>, last: Option<Box<RecordValue>> },
    Status { observer: Arc<dyn SyncStatusObserver>, last: Option<SyncStatus> },
}

pub(crate) struct Watch {
    cancelled: AtomicBool,
    store: Weak<DocStore>,
    kind: Mutex<WatchKind>,
}

impl Watch {
    /// A new watch and the handle the app holds.
    pub(crate) fn new(store: &Arc<DocStore>, kind: WatchKind) -> (Arc<Self>, Arc<WatchHandle>) {
        let watch =
            Arc::new(Self { cancelled: AtomicBool::new(false), store: Arc::downgrade(store), kind: Mutex::new(kind) });
        (watch.clone(), Arc::new(WatchHandle { watch }))
    }

    fn cancelled(&self) -> bool {
        self.cancelled.load(Ordering::SeqCst)
    }

    /// Answers again if `changed` (documents) or `status` could change the answer; `first`
    /// answers in any case. Sends only what differs from the last answer sent.
    fn refresh(&self, first: bool, changed: &HashSet<DocumentId>, status: Option<&SyncStatus>) {
        if self.cancelled() {
            return;
        }
        let mut kind = lock(&self.kind);
        match &mut *kind {
            WatchKind::List { query, observer, last } => {
                if !first && changed.is_empty() {
                    return;
                }
                let Some(store) = self.store.upgrade() else { return };
                let rows = match query.run(&store) {
                    Ok(rows) => rows,
                    Err(e) => {
                        tracing::warn!(error = %e, "a live query could not be answered; it is tried again on the next change");
                        return;
                    }
                };
                let change = match last.as_ref() {
                    Some(prev) => prev.diff(&rows),
                    None => ListChange::Reset,
                };
                if change.is_empty() {
                    return;
                }
                *last = Some(rows.clone());
                let update = QueryUpdate { rows, change: change.into() };
                if !self.cancelled() {
                    notify("on_update", || observer.on_update(update));
                }
            }
            WatchKind::Record { id, observer, last } => {
                if !first && !changed.contains(id) {
                    return;
                }
                let Some(store) = self.store.upgrade() else { return };
                let value = RecordValue::read(&store, id);
                if last.as_deref() == Some(&value) {
                    return;
                }
                *last = Some(Box::new(value.clone()));
                if !self.cancelled() {
                    notify("on_record", || observer.on_record(value));
                }
            }
            WatchKind::Status { observer, last } => {
                let Some(s) = status.or(last.as_ref()).cloned() else { return };
                if !first && last.as_ref() == Some(&s) {
                    return;
                }
                *last = Some(s.clone());
                if !self.cancelled() {
                    notify("on_status", || observer.on_status(s));
                }
            }
        }
    }
}

/// Calls an observer; an exception or panic is reported and swallowed.
fn notify(what: &'static str, call: impl FnOnce() -> Result<(), CallbackError>) {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(call)) {
        Ok(Ok(())) => {}
        Ok(Err(_)) | Err(_) => {
            tracing::warn!(callback = what, "a live query's observer threw; later updates still come")
        }
    }
}

/// The store's live queries, driven by the notifier thread.
#[derive(Default)]
pub(crate) struct Watches {
    live: Mutex<Vec<Arc<Watch>>>,
}

impl Watches {
    /// A watch just made: its first answer, then it is kept for later changes.
    pub(crate) fn start(&self, watch: Arc<Watch>) {
        watch.refresh(true, &HashSet::new(), None);
        lock(&self.live).push(watch);
    }

    /// After a batch of changes: every watch they could concern answers again; cancelled ones go.
    pub(crate) fn refresh(&self, changed: &HashSet<DocumentId>, status: Option<&SyncStatus>) {
        let live: Vec<Arc<Watch>> = {
            let mut live = lock(&self.live);
            live.retain(|w| !w.cancelled() && w.store.strong_count() > 0);
            live.clone()
        };
        for w in live {
            w.refresh(false, changed, status);
        }
    }
}

/// The live queries (they answer on the notifier thread: the calls only register them) and
/// the one-shot screen queries (async, on the library's threads).
#[uniffi::export(async_runtime = "tokio")]
impl LiaisonStore {
    /// The KOL list, live (those whose name, kana or institution contains `search`, if given).
    pub fn watch_kols(
        &self,
        search: Option<String>,
        observer: Arc<dyn QueryObserver>,
    ) -> Result<Arc<WatchHandle>, LiaisonError> {
        let search = search.filter(|s| !s.trim().is_empty());
        self.watch(WatchKind::List { query: ListQuery::Kols { search }, observer, last: None })
    }

    /// A KOL's interactions, newest first, live (with those of profiles merged into it).
    pub fn watch_interactions(
        &self,
        kol_id: String,
        observer: Arc<dyn QueryObserver>,
    ) -> Result<Arc<WatchHandle>, LiaisonError> {
        let kol = parse_id(&kol_id)?;
        self.watch(WatchKind::List { query: ListQuery::Interactions { kol }, observer, last: None })
    }

    /// This user's open follow-ups and activities due before `due_before` (ms since the
    /// epoch), soonest first, live; with `include_undated`, those without a date after them.
    pub fn watch_my_open_tasks(
        &self,
        due_before: i64,
        include_undated: bool,
        observer: Arc<dyn QueryObserver>,
    ) -> Result<Arc<WatchHandle>, LiaisonError> {
        let owner = self.core()?.identity().user.clone();
        self.watch(WatchKind::List {
            query: ListQuery::Tasks { owner, before: due_before, undated: include_undated },
            observer,
            last: None,
        })
    }

    /// Medical information requests not yet fulfilled, live.
    pub fn watch_open_mirs(&self, observer: Arc<dyn QueryObserver>) -> Result<Arc<WatchHandle>, LiaisonError> {
        self.watch(WatchKind::List { query: ListQuery::Mirs, observer, last: None })
    }

    /// Drafts not yet submitted (this user's only, with `mine_only`), live.
    pub fn watch_drafts(
        &self,
        mine_only: bool,
        observer: Arc<dyn QueryObserver>,
    ) -> Result<Arc<WatchHandle>, LiaisonError> {
        let author = if mine_only { Some(self.core()?.identity().user.clone()) } else { None };
        self.watch(WatchKind::List { query: ListQuery::Drafts { author }, observer, last: None })
    }

    /// One record, live: its value with the version to save against, after each change.
    pub fn watch_record(
        &self,
        id: String,
        observer: Arc<dyn RecordObserver>,
    ) -> Result<Arc<WatchHandle>, LiaisonError> {
        let id = parse_id(&id)?;
        self.watch(WatchKind::Record { id, observer, last: None })
    }

    /// The sync status, live: the current one first, then each change.
    pub fn watch_sync_status(&self, observer: Arc<dyn SyncStatusObserver>) -> Result<Arc<WatchHandle>, LiaisonError> {
        let last = Some(self.sync_status());
        self.watch(WatchKind::Status { observer, last })
    }

    /// A KOL's interactions, newest first (from the index).
    pub async fn interactions_of_kol(&self, kol_id: String) -> Result<Vec<InteractionRow>, LiaisonError> {
        let kol = parse_id(&kol_id)?;
        self.read(move |store| Ok(store.interactions_of_kol(&kol)?.into_iter().map(Into::into).collect())).await
    }

    /// This user's open follow-ups and activities due before `due_before`, soonest first; with
    /// `include_undated`, those without a date after them.
    pub async fn my_open_tasks(&self, due_before: i64, include_undated: bool) -> Result<Vec<TaskRow>, LiaisonError> {
        self.read(move |store| {
            let owner = store.identity().user.clone();
            match (ListQuery::Tasks { owner, before: due_before, undated: include_undated }).run(store)? {
                QueryRows::Tasks { rows } => Ok(rows),
                _ => Ok(Vec::new()),
            }
        })
        .await
    }

    /// Medical information requests not yet fulfilled, oldest first.
    pub async fn open_mirs(&self) -> Result<Vec<MirRow>, LiaisonError> {
        self.read(|store| Ok(store.open_mirs()?.into_iter().map(Into::into).collect())).await
    }

    /// Drafts not yet submitted, newest first (this user's only, with `mine_only`).
    pub async fn drafts(&self, mine_only: bool) -> Result<Vec<DraftRow>, LiaisonError> {
        self.read(move |store| {
            let rows = if mine_only { store.drafts_of(&store.identity().user)? } else { store.drafts()? };
            Ok(rows.into_iter().map(Into::into).collect())
        })
        .await
    }

    /// The records this version of the app cannot read (`SyncStatus.needs_newer_app` counts
    /// them): written by a newer app. Kept and synced untouched; listed once the app is updated.
    pub async fn unreadable_records(&self) -> Result<Vec<UnreadableRecord>, LiaisonError> {
        self.read(|store| Ok(store.unreadable()?.into_iter().map(Into::into).collect())).await
    }
}

impl LiaisonStore {
    /// Registers a watch: its first answer comes from the notifier thread, right after.
    fn watch(&self, kind: WatchKind) -> Result<Arc<WatchHandle>, LiaisonError> {
        let (watch, handle) = Watch::new(&self.core()?, kind);
        self.notes.send(Note::Watch(watch)).map_err(|_| LiaisonError::Closed)?;
        Ok(handle)
    }
}
