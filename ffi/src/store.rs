//! `LiaisonStore`: the one object the app holds. A thin wrapper over `DocStore` and `SyncClient`:
//! it converts ids and indexes, tells the sync client about local writes, and runs the notifier.
//! Every call that touches the disk is async and runs on a library thread (see `work.rs`).

use std::path::Path;
use std::sync::mpsc::{Sender, channel};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use liaison_core::client::{ClientOptions, SyncClient};
use liaison_core::model::{
    EngagementPlan, Interaction, KolProfile, MedicalInformationRequest, MedicalInsight, Record, Version,
};
use liaison_core::{DocStore, DocumentId, Identity, Role};

use crate::error::{LiaisonError, bad_id};
use crate::sync::{
    LiaisonObserver, NetworkState, Note, Observer, SyncConfig, SyncState, SyncStatus, spawn_forwarder, spawn_notifier,
};
use crate::text::SharedTextField;
use crate::types::{HistoryEntry, KolSummary, RecordKind};
use crate::versioned::{InsightRead, InteractionRead, KolRead, PlanRead, RequestRead};
use crate::work::{BLOCKING_THREADS, JobStartHook, Work};

/// Who uses this store: the signed-in user on this device.
#[derive(Debug, Clone, uniffi::Record)]
pub struct StoreConfig {
    /// A directory the app owns (created if missing).
    pub path: String,
    pub tenant: String,
    pub user: String,
    /// The device id IT registered with the credential.
    pub device: String,
    pub role: Role,
    /// The team new records belong to.
    pub team: String,
}

#[derive(uniffi::Object)]
pub struct LiaisonStore {
    /// `None` once signed out (`sign_out` closed and erased it).
    pub(crate) store: Mutex<Option<Arc<DocStore>>>,
    /// The store's directory, which `sign_out` removes.
    pub(crate) path: std::path::PathBuf,
    team: String,
    pub(crate) runtime: Option<tokio::runtime::Runtime>,
    /// Runs the calls' disk work on the runtime's blocking pool, writes in call order.
    pub(crate) work: Work,
    /// Shared with the library threads that write: they tell the client about their writes.
    pub(crate) client: Arc<Mutex<Option<SyncClient>>>,
    network: Mutex<NetworkState>,
    pub(crate) notes: Sender<Note>,
    observer: Observer,
    /// The presence this device publishes (`presence.rs`).
    pub(crate) presence: crate::presence::Published,
    /// The count of documents this build cannot read, for the sync status.
    unreadable: crate::sync::Unreadable,
}

impl std::fmt::Debug for LiaisonStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LiaisonStore").field("path", &self.path).finish_non_exhaustive()
    }
}

impl Drop for LiaisonStore {
    fn drop(&mut self) {
        let _ = self.notes.send(Note::Stop);
        drop(lock(&self.client).take());
        // The app may drop the store from inside an async call; a blocking shutdown would panic there.
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

pub(crate) fn parse_id(s: &str) -> Result<DocumentId, LiaisonError> {
    s.parse().map_err(|_| bad_id("the id"))
}

fn config_err(what: &str) -> LiaisonError {
    LiaisonError::InvalidInput(format!("{what} must not be empty"))
}

#[uniffi::export(async_runtime = "tokio")]
impl LiaisonStore {
    /// Opens (or creates) the store at `config.path`. Fails with `StoreInUse` if another process
    /// has it open. Opening reads the disk, so it runs on a library thread; a cancelled open
    /// either never began or closes the store it opened.
    #[uniffi::constructor]
    pub async fn open(config: StoreConfig) -> Result<Arc<Self>, LiaisonError> {
        for (value, what) in [(&config.tenant, "tenant"), (&config.user, "user"), (&config.device, "device")] {
            if value.trim().is_empty() {
                return Err(config_err(what));
            }
        }
        let (opened_tx, opened_rx) = futures::channel::oneshot::channel();
        std::thread::Builder::new()
            .name("liaison-open".into())
            .spawn(move || {
                if !opened_tx.is_canceled() {
                    let _ = opened_tx.send(Self::open_blocking(config));
                }
            })
            .map_err(|e| LiaisonError::Sync(format!("cannot start a thread: {}", e.kind())))?;
        opened_rx.await.map_err(|_| LiaisonError::Storage("opening the store failed inside the library".into()))?
    }

    /// Sets (or clears) the observer called when documents or the sync status change. Touches
    /// no disk: synchronous.
    pub fn set_observer(&self, observer: Option<Arc<dyn LiaisonObserver>>) {
        *lock(&self.observer) = observer;
    }

    // ---- KOL profiles ----------------------------------------------------------------------

    pub async fn create_kol(&self, profile: KolProfile) -> Result<String, LiaisonError> {
        self.create(profile).await
    }

    /// The profile and the version it was read at, for `update_kol`.
    pub async fn get_kol(&self, id: String) -> Result<KolRead, LiaisonError> {
        let (profile, version) = self.get_versioned(id).await?;
        Ok(KolRead { profile, version })
    }

    /// Saves the form the app filled from `get_kol` at `version`: the edit is applied to the
    /// profile as it was then and merged with what colleagues did since (as `update_plan`).
    /// Text merges per character; merge links are kept as stored.
    pub async fn update_kol(&self, id: String, profile: KolProfile, version: String) -> Result<(), LiaisonError> {
        self.update_at(id, version, move |cur: &mut KolProfile| {
            let mut new = profile;
            keep_text(&mut new.scientific_interests, &mut cur.scientific_interests);
            new.merged_into = cur.merged_into.take();
            new.merged_from = std::mem::take(&mut cur.merged_from);
            *cur = new;
        })
        .await
    }

    /// Every KOL on the device, from the index (no document is loaded).
    pub async fn list_kols(&self) -> Result<Vec<KolSummary>, LiaisonError> {
        self.read(|store| Ok(store.list_kols()?.into_iter().map(Into::into).collect())).await
    }

    /// KOLs whose name, kana or institution contains `query` (case, width and kana insensitive).
    pub async fn search_kols(&self, query: String) -> Result<Vec<KolSummary>, LiaisonError> {
        self.read(move |store| Ok(store.search_kols(&query)?.into_iter().map(Into::into).collect())).await
    }

    /// Merges duplicate KOL `loser` into `winner`: everything recorded against the loser stays
    /// reachable from the winner.
    pub async fn merge_kols(&self, winner: String, loser: String) -> Result<(), LiaisonError> {
        let (w, l) = (parse_id(&winner)?, parse_id(&loser)?);
        self.write(move |store, sync| {
            store.merge_kols(&w, &l)?;
            sync.changed(w);
            sync.changed(l);
            Ok(())
        })
        .await
    }

    /// Ids of the records of `kind` about a KOL.
    pub async fn records_for_kol(&self, kol_id: String, kind: RecordKind) -> Result<Vec<String>, LiaisonError> {
        let kol = parse_id(&kol_id)?;
        self.read(move |store| Ok(store.records_for_kol(&kol, kind.into())?.iter().map(ToString::to_string).collect()))
            .await
    }

    /// Ids of every document of `kind` on the device.
    pub async fn list(&self, kind: RecordKind) -> Result<Vec<String>, LiaisonError> {
        self.read(move |store| Ok(store.list(kind.into())?.iter().map(ToString::to_string).collect())).await
    }

    /// The kind of a document on the device.
    pub async fn kind_of(&self, id: String) -> Result<Option<RecordKind>, LiaisonError> {
        let doc = parse_id(&id)?;
        self.read(move |store| Ok(store.kind_of(&doc)?.map(Into::into))).await
    }

    // ---- Interactions, insights, requests --------------------------------------------------

    pub async fn create_interaction(&self, interaction: Interaction) -> Result<String, LiaisonError> {
        self.create(interaction).await
    }

    /// The interaction and the version it was read at, for `update_interaction`.
    pub async fn get_interaction(&self, id: String) -> Result<InteractionRead, LiaisonError> {
        let (interaction, version) = self.get_versioned(id).await?;
        Ok(InteractionRead { interaction, version })
    }

    /// Saves the form filled from `get_interaction` at `version`, merged with what colleagues
    /// did since; submission state and unlocks are kept as stored.
    pub async fn update_interaction(
        &self,
        id: String,
        interaction: Interaction,
        version: String,
    ) -> Result<(), LiaisonError> {
        self.update_at(id, version, move |cur: &mut Interaction| {
            let mut new = interaction;
            keep_text(&mut new.summary, &mut cur.summary);
            for topic in &mut new.topics {
                if let Some(old) = cur.topics.iter_mut().find(|t| t.id == topic.id) {
                    keep_text(&mut topic.discussion, &mut old.discussion);
                }
            }
            keep_lock_state(&mut new, cur);
            *cur = new;
        })
        .await
    }

    pub async fn create_insight(&self, insight: MedicalInsight) -> Result<String, LiaisonError> {
        self.create(insight).await
    }

    /// The insight and the version it was read at, for `update_insight`.
    pub async fn get_insight(&self, id: String) -> Result<InsightRead, LiaisonError> {
        let (insight, version) = self.get_versioned(id).await?;
        Ok(InsightRead { insight, version })
    }

    /// Saves the form filled from `get_insight` at `version`, merged with what colleagues did
    /// since; submission state and unlocks are kept as stored.
    pub async fn update_insight(
        &self,
        id: String,
        insight: MedicalInsight,
        version: String,
    ) -> Result<(), LiaisonError> {
        self.update_at(id, version, move |cur: &mut MedicalInsight| {
            let mut new = insight;
            keep_text(&mut new.text, &mut cur.text);
            keep_lock_state(&mut new, cur);
            *cur = new;
        })
        .await
    }

    pub async fn create_request(&self, request: MedicalInformationRequest) -> Result<String, LiaisonError> {
        self.create(request).await
    }

    /// The request and the version it was read at, for `update_request`.
    pub async fn get_request(&self, id: String) -> Result<RequestRead, LiaisonError> {
        let (request, version) = self.get_versioned(id).await?;
        Ok(RequestRead { request, version })
    }

    /// Saves the form filled from `get_request` at `version`, merged with what colleagues did
    /// since; submission state and unlocks are kept as stored.
    pub async fn update_request(
        &self,
        id: String,
        request: MedicalInformationRequest,
        version: String,
    ) -> Result<(), LiaisonError> {
        self.update_at(id, version, move |cur: &mut MedicalInformationRequest| {
            let mut new = request;
            keep_text(&mut new.answer, &mut cur.answer);
            keep_lock_state(&mut new, cur);
            *cur = new;
        })
        .await
    }

    /// Submits (locks) an interaction, insight or request. Later edits are refused until an
    /// admin unlocks it.
    pub async fn submit(&self, id: String) -> Result<(), LiaisonError> {
        let doc = parse_id(&id)?;
        self.write(move |store, sync| {
            store.submit_any(&doc)?;
            sync.changed(doc);
            Ok(())
        })
        .await
    }

    /// Unlocks a submitted record (admins only); the reason is kept in the record.
    pub async fn unlock(&self, id: String, reason: String) -> Result<(), LiaisonError> {
        let doc = parse_id(&id)?;
        self.write(move |store, sync| {
            store.unlock_any(&doc, &reason)?;
            sync.changed(doc);
            Ok(())
        })
        .await
    }

    // ---- Engagement plans ------------------------------------------------------------------

    pub async fn create_plan(&self, plan: EngagementPlan) -> Result<String, LiaisonError> {
        self.create(plan).await
    }

    /// The plan and the version it was read at, for `update_plan`.
    pub async fn get_plan(&self, id: String) -> Result<PlanRead, LiaisonError> {
        let (plan, version) = self.get_versioned(id).await?;
        Ok(PlanRead { plan, version })
    }

    /// Saves the form the app filled from `get_plan` at `version`. The edit is the difference
    /// between `plan` and the plan as it was at `version`; it is merged with everything that
    /// happened since, so a colleague's title, activity or notes typed in meanwhile survive a
    /// save from a stale form. The notes change per character (they are meant to be edited with
    /// `splice_plan_notes`).
    ///
    /// Errors: `InvalidInput` if `version` is not text a read returned; `StaleVersion` if this
    /// device does not have that version of this record (it came from another record, or the
    /// changes it names were discarded): read the record again and re-apply the user's edit.
    pub async fn update_plan(&self, id: String, plan: EngagementPlan, version: String) -> Result<(), LiaisonError> {
        self.update_at(id, version, move |cur: &mut EngagementPlan| {
            let mut new = plan;
            keep_text(&mut new.notes, &mut cur.notes);
            *cur = new;
        })
        .await
    }

    /// Replaces `delete_count` UTF-16 code units of the plan's notes at `index` with `insert`:
    /// what a text view reports. Concurrent splices by colleagues merge per character. The same
    /// as `splice_text` with `SharedTextField::PlanNotes`.
    pub async fn splice_plan_notes(
        &self,
        plan_id: String,
        index: i32,
        delete_count: i32,
        insert: String,
    ) -> Result<(), LiaisonError> {
        self.splice_text(plan_id, SharedTextField::PlanNotes, index, delete_count, insert).await
    }

    /// A cursor at UTF-16 `index` of the plan's notes that stays with its character as
    /// colleagues' edits arrive. Resolve it with `plan_notes_cursor_position`.
    pub async fn plan_notes_cursor(&self, plan_id: String, index: i32) -> Result<String, LiaisonError> {
        self.text_cursor(plan_id, SharedTextField::PlanNotes, index).await
    }

    /// Where a cursor from `plan_notes_cursor` is now, as a UTF-16 index.
    pub async fn plan_notes_cursor_position(&self, plan_id: String, cursor: String) -> Result<i32, LiaisonError> {
        self.text_cursor_position(plan_id, SharedTextField::PlanNotes, cursor).await
    }

    // ---- History ---------------------------------------------------------------------------

    /// Every change to a document, oldest first, with its author.
    pub async fn history(&self, id: String) -> Result<Vec<HistoryEntry>, LiaisonError> {
        let doc = parse_id(&id)?;
        self.read(move |store| Ok(store.history(&doc)?.into_iter().map(Into::into).collect())).await
    }

    /// The changes that touched one field (for example `notes` or `institution`).
    pub async fn field_history(&self, id: String, field: String) -> Result<Vec<HistoryEntry>, LiaisonError> {
        let doc = parse_id(&id)?;
        self.read(move |store| Ok(store.field_history(&doc, &field)?.into_iter().map(Into::into).collect())).await
    }

    // ---- Sync ------------------------------------------------------------------------------

    /// Starts syncing every document with the relay, in the background, with the static
    /// device credential in `config.token` (installations without an identity provider; with
    /// one, use `start_sync_with_sign_in`). Edits made while offline are kept and sent when a
    /// connection succeeds. Starting reads sync state from the disk, so it runs on a library
    /// thread; a cancelled start either never began or stops the client it started.
    pub async fn start_sync(&self, config: SyncConfig) -> Result<(), LiaisonError> {
        if config.token.is_empty() {
            return Err(LiaisonError::InvalidInput("the relay URL and the token must not be empty".into()));
        }
        self.start_client(config, None).await
    }

    /// Stops syncing and closes the connection. Local edits stay and sync on the next start.
    pub async fn stop_sync(&self) {
        let client = lock(&self.client).take();
        if let Some(c) = client {
            c.shutdown().await;
        }
        let _ = self.notes.send(Note::Status(SyncStatus::stopped()));
    }

    /// Tells the library about the network, so it does not retry while there is none. Touches no
    /// disk: synchronous.
    pub fn set_network(&self, state: NetworkState) {
        *lock(&self.network) = state;
        if let Some(c) = lock(&self.client).as_ref() {
            c.set_network(state.into());
        }
    }

    /// The sync status now, from memory: synchronous.
    pub fn sync_status(&self) -> SyncStatus {
        let mut s = lock(&self.client).as_ref().map_or_else(SyncStatus::stopped, |c| SyncStatus::from(&c.status()));
        self.unreadable.stamp(&mut s);
        s
    }

    /// Gives up this device's changes the relay refused on a record (listed in
    /// `sync_status().refused`) and the edits built on them, so the record continues from the
    /// relay's state and later edits sync again. Call it after showing the user the refusal.
    /// It only queues the request for the sync client: synchronous.
    pub fn discard_refused(&self, id: String) -> Result<(), LiaisonError> {
        let doc = parse_id(&id)?;
        if let Some(c) = lock(&self.client).as_ref() {
            c.discard_refused(doc);
        }
        Ok(())
    }

    /// Waits until every local change is acknowledged by the relay. Cancelling the call (Kotlin
    /// coroutine, Swift task) stops the wait, not the sync.
    pub async fn wait_until_synced(&self, timeout_ms: i64) -> Result<SyncStatus, LiaisonError> {
        self.wait_for_status(timeout_ms, |s| s.state == SyncState::UpToDate && s.pending_documents == 0).await
    }

    /// Waits until the first sync is over: every document the user may read has arrived (a new
    /// phone shows its progress from `SyncStatus.documents_known` / `documents_received`).
    /// Cancelling the call stops the wait, not the sync.
    pub async fn wait_for_first_sync(&self, timeout_ms: i64) -> Result<SyncStatus, LiaisonError> {
        self.wait_for_status(timeout_ms, |s| s.first_sync_complete && s.documents_received >= s.documents_known).await
    }

    /// Asks the relay for a document this device does not have (a link a colleague shared) and
    /// waits until it is stored here; returns its kind.
    pub async fn fetch(&self, id: String, timeout_ms: i64) -> Result<Option<RecordKind>, LiaisonError> {
        let doc = parse_id(&id)?;
        let limit = timeout(timeout_ms)?;
        let mut events = {
            let guard = lock(&self.client);
            let client = guard.as_ref().ok_or_else(|| LiaisonError::Sync("sync is not running".into()))?;
            let events = client.events();
            client.find(doc);
            events
        };
        let wait = async move {
            loop {
                let stored = self.read(move |store| match store.kind_of(&doc) {
                    Ok(kind) => Ok(Some(kind.map(Into::into))),
                    Err(liaison_core::StoreError::NotFound(_)) => Ok(None),
                    Err(e) => Err(e.into()),
                });
                if let Some(kind) = stored.await? {
                    return Ok(kind);
                }
                if let Err(tokio::sync::broadcast::error::RecvError::Closed) = events.recv().await {
                    return Err(LiaisonError::Sync("sync stopped".into()));
                }
            }
        };
        tokio::time::timeout(limit, wait).await.map_err(|_| LiaisonError::Timeout(timeout_ms))?
    }
}

impl LiaisonStore {
    /// `open`'s work, on a library thread.
    fn open_blocking(config: StoreConfig) -> Result<Arc<Self>, LiaisonError> {
        let identity = Identity {
            tenant: config.tenant,
            user: config.user,
            device: config.device,
            role: config.role,
            install: [0; 8],
        };
        std::fs::create_dir_all(&config.path)
            .map_err(|e| LiaisonError::Storage(format!("cannot create the store directory: {}", e.kind())))?;
        let path = Path::new(&config.path).to_owned();
        let store = Arc::new(DocStore::open(&path, identity)?);
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .max_blocking_threads(BLOCKING_THREADS)
            .thread_name("liaison-sync")
            .enable_all()
            .build()
            .map_err(|e| LiaisonError::Sync(format!("cannot start the sync runtime: {}", e.kind())))?;
        let work = Work::new(runtime.handle().clone());
        let (notes, rx) = channel();
        let observer: Observer = Arc::new(Mutex::new(None));
        let thread_err = |e: std::io::Error| LiaisonError::Sync(format!("cannot start a thread: {}", e.kind()));
        let unreadable = crate::sync::Unreadable::new(&store);
        spawn_notifier(rx, observer.clone(), unreadable.clone()).map_err(thread_err)?;
        spawn_forwarder(store.subscribe(), notes.clone()).map_err(thread_err)?;
        tracing::info!("store opened");
        Ok(Arc::new(Self {
            store: Mutex::new(Some(store)),
            path,
            team: config.team,
            runtime: Some(runtime),
            work,
            client: Arc::new(Mutex::new(None)),
            network: Mutex::new(NetworkState::Up),
            notes,
            observer,
            presence: crate::presence::Published::default(),
            unreadable,
        }))
    }

    /// The core store underneath (for Rust callers and tests; not exported to the apps);
    /// `SignedOut` after `sign_out`.
    pub fn core(&self) -> Result<Arc<DocStore>, LiaisonError> {
        lock(&self.store).clone().ok_or(LiaisonError::SignedOut)
    }

    /// Holds every job that begins from now on (after its cancellation check) in `hook`, on the
    /// library thread that runs it; `None` removes the hook. For tests of cancellation, which
    /// need a call whose work is in flight; not exported to the apps.
    #[doc(hidden)]
    pub fn set_job_start_hook(&self, hook: Option<JobStartHook>) {
        self.work.set_on_start(hook);
    }

    /// Runs `job` on the store on a library thread (see `work.rs`).
    pub(crate) async fn read<T: Send + 'static>(
        &self,
        job: impl FnOnce(&DocStore) -> Result<T, LiaisonError> + Send + 'static,
    ) -> Result<T, LiaisonError> {
        let store = self.core()?;
        self.work.read(move || job(&store)).await
    }

    /// Runs the write `job` on a library thread after the writes called before it; `job` tells
    /// the sync client what it changed, so a write whose caller left still syncs.
    pub(crate) async fn write<T: Send + 'static>(
        &self,
        job: impl FnOnce(&DocStore, &SyncLink) -> Result<T, LiaisonError> + Send + 'static,
    ) -> Result<T, LiaisonError> {
        let store = self.core()?;
        let sync = SyncLink(self.client.clone());
        self.work.write(move || job(&store, &sync)).await
    }

    async fn create<R: Record + Send + 'static>(&self, record: R) -> Result<String, LiaisonError> {
        let team = self.team.clone();
        self.write(move |store, sync| {
            let id = store.create(&team, &record)?;
            sync.announce(id);
            Ok(id.to_string())
        })
        .await
    }

    async fn get_versioned<R: Record + Send + 'static>(&self, id: String) -> Result<(R, String), LiaisonError> {
        let doc = parse_id(&id)?;
        self.read(move |store| {
            let (record, version) = store.get_versioned(&doc)?;
            Ok((record, version.to_string()))
        })
        .await
    }

    /// Applies `edit` to the record as it was at `version` (see `DocStore::update_at`). There is
    /// deliberately no update without a base version: it would overwrite colleagues' edits.
    async fn update_at<R: Record + Send + 'static>(
        &self,
        id: String,
        version: String,
        edit: impl FnOnce(&mut R) + Send + 'static,
    ) -> Result<(), LiaisonError> {
        let doc = parse_id(&id)?;
        let base: Version =
            version.parse().map_err(|_| LiaisonError::InvalidInput("the version is not one a read returned".into()))?;
        self.write(move |store, sync| {
            store.update_at(&doc, &base, edit)?;
            sync.changed(doc);
            Ok(())
        })
        .await
    }

    /// Starts the sync client with a static token or the app's credential provider.
    pub(crate) async fn start_client(
        &self,
        config: SyncConfig,
        credentials: Option<Arc<dyn liaison_core::client::CredentialProvider>>,
    ) -> Result<(), LiaisonError> {
        let rt = self.runtime.as_ref().ok_or(LiaisonError::Closed)?;
        if config.url.trim().is_empty() {
            return Err(LiaisonError::InvalidInput("the relay URL and the token must not be empty".into()));
        }
        let backoff = |ms: i64| {
            u64::try_from(ms).map_err(|_| LiaisonError::InvalidInput("the backoff must not be negative".into()))
        };
        let (backoff_min, backoff_max) = (backoff(config.backoff_min_ms)?, backoff(config.backoff_max_ms)?);
        let store = self.core()?;
        let identity = store.identity();
        let install: String = identity.install.iter().map(|b| format!("{b:02x}")).collect();
        let options = ClientOptions {
            url: config.url,
            token: config.token,
            credentials,
            peer_id: identity.device.clone(),
            storage_id: format!("{}-{install}", identity.device),
            trust: config.trust.into_trust()?,
            backoff_min: Duration::from_millis(backoff_min.max(10)),
            backoff_max: Duration::from_millis(backoff_max.max(backoff_min).max(10)),
        };
        // On a library thread of the runtime (its context is entered there): it reads the disk.
        let client = self.work.read(move || Ok(SyncClient::start(store, options)?)).await?;
        let network = *lock(&self.network);
        if network != NetworkState::Up {
            client.set_network(network.into());
        }
        rt.spawn(forward_status(client.watch_status(), self.notes.clone()));
        // Replacing a running client closes its connection.
        *lock(&self.client) = Some(client);
        Ok(())
    }

    /// Waits until the sync status satisfies `done`, or `timeout_ms` passes.
    pub(crate) async fn wait_for_status(
        &self,
        timeout_ms: i64,
        done: impl Fn(&SyncStatus) -> bool,
    ) -> Result<SyncStatus, LiaisonError> {
        let limit = timeout(timeout_ms)?;
        let mut rx = lock(&self.client)
            .as_ref()
            .map(SyncClient::watch_status)
            .ok_or_else(|| LiaisonError::Sync("sync is not running".into()))?;
        let wait = async {
            loop {
                let mut s = SyncStatus::from(&*rx.borrow_and_update());
                self.unreadable.stamp(&mut s);
                if done(&s) {
                    return Ok(s);
                }
                if rx.changed().await.is_err() {
                    return Err(LiaisonError::Sync("sync stopped".into()));
                }
            }
        };
        tokio::time::timeout(limit, wait).await.map_err(|_| LiaisonError::Timeout(timeout_ms))?
    }
}

/// What a write job uses to tell the sync client about its write.
pub(crate) struct SyncLink(Arc<Mutex<Option<SyncClient>>>);

impl SyncLink {
    /// A document changed locally.
    pub(crate) fn changed(&self, doc: DocumentId) {
        if let Some(c) = lock(&self.0).as_ref() {
            c.local_change(doc);
        }
    }

    /// A document was created here.
    fn announce(&self, doc: DocumentId) {
        if let Some(c) = lock(&self.0).as_ref() {
            c.announce(doc);
        }
    }
}

/// A wait's timeout from the app's milliseconds (signed, as Kotlin and Swift count); negative is
/// `InvalidInput`.
fn timeout(ms: i64) -> Result<Duration, LiaisonError> {
    u64::try_from(ms)
        .map(Duration::from_millis)
        .map_err(|_| LiaisonError::InvalidInput("the timeout must not be negative".into()))
}

/// Sends every status to the notifier, and a wipe once, as it happens.
async fn forward_status(
    mut status: tokio::sync::watch::Receiver<liaison_core::client::SyncStatus>,
    notes: Sender<Note>,
) {
    let mut wiped = status.borrow().wiped;
    loop {
        let (s, now_wiped) = {
            let current = status.borrow_and_update();
            (SyncStatus::from(&*current), current.wiped)
        };
        if let (None, Some(reason)) = (wiped, now_wiped)
            && notes.send(Note::Wiped(reason.into())).is_err()
        {
            return;
        }
        wiped = now_wiped;
        if notes.send(Note::Status(s)).is_err() {
            return;
        }
        if status.changed().await.is_err() {
            return;
        }
    }
}

/// Carries the submission state (status, submission, unlocks) over from the stored record: only
/// `submit` and `unlock` change it.
fn keep_lock_state<R: Record>(new: &mut R, stored: &mut R) {
    if let (Some(n), Some(s)) = (new.lock_fields(), stored.lock_fields()) {
        *n.status = *s.status;
        *n.submission = s.submission.take();
        *n.unlocks = std::mem::take(s.unlocks);
    }
}

/// Carries the stored text object into `new` and applies `new`'s value as a diff, so the update
/// becomes character edits rather than a replaced text.
fn keep_text(new: &mut autosurgeon::Text, stored: &mut autosurgeon::Text) {
    let value = new.as_str().to_owned();
    *new = std::mem::take(stored);
    if new.as_str() != value {
        new.update(value);
    }
}

/// A UTF-16 index or count from the app (signed, as Kotlin and Swift count); negative is
/// `InvalidInput`.
pub(crate) fn utf16_count(value: i32, what: &str) -> Result<usize, LiaisonError> {
    usize::try_from(value).map_err(|_| LiaisonError::InvalidInput(format!("{what} must not be negative")))
}

/// The byte offset of UTF-16 index `index` in `text`.
pub(crate) fn utf16_to_byte(text: &str, index: usize) -> Result<usize, LiaisonError> {
    let target = index;
    let mut units = 0usize;
    for (byte, c) in text.char_indices() {
        if units == target {
            return Ok(byte);
        }
        units += c.len_utf16();
        if units > target {
            return Err(LiaisonError::InvalidInput("the index splits a character".into()));
        }
    }
    if units == target {
        Ok(text.len())
    } else {
        Err(LiaisonError::InvalidInput("the index is past the end of the text".into()))
    }
}

#[cfg(test)]
mod tests {
    use super::utf16_to_byte;

    #[test]
    fn utf16_indexes_map_to_bytes() {
        let s = "a日😀b";
        assert_eq!(utf16_to_byte(s, 0).unwrap(), 0);
        assert_eq!(utf16_to_byte(s, 1).unwrap(), 1);
        assert_eq!(utf16_to_byte(s, 2).unwrap(), 4);
        assert!(utf16_to_byte(s, 3).is_err(), "inside the surrogate pair");
        assert_eq!(utf16_to_byte(s, 4).unwrap(), 8);
        assert_eq!(utf16_to_byte(s, 5).unwrap(), 9);
        assert!(utf16_to_byte(s, 6).is_err());
    }
}
