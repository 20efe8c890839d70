//! The document store: Automerge documents on a [`KvStore`], saved incrementally, compacted,
//! indexed for fast listing, with a change feed.
//!
//! Layout (every key starts with a one-byte namespace; `ID` is the 16 raw id bytes):
//!
//! | key                      | value                                              |
//! |--------------------------|----------------------------------------------------|
//! | `!install`               | 8 random bytes made on first open (see [`Identity`]) |
//! | `m/ID`                   | [`index::DocMeta`] (CBOR)                          |
//! | `c/ID/SEQ`               | a framed chunk: `save()` or `save_after()` output  |
//! | `k/KIND/ID`              | empty: documents by kind                           |
//! | `s/ID`                   | KOL summary (CBOR), for listing and search         |
//! | `r/KOLID/KIND/ID`        | empty: records that belong to a KOL                |
//! | `y/ID/STORAGEID`         | a peer's encoded automerge sync state for the doc  |
//!
//! A write is one atomic batch: the new chunk, the meta and every index entry it changes. With
//! [`Durability::Immediate`] the batch is flushed before the call returns, so a returned `Ok`
//! means the edit survives a killed process.

mod discard;
mod index;

use std::collections::{HashMap, HashSet, VecDeque};
use std::path::Path;
use std::sync::mpsc::{Receiver, Sender, channel};
use std::sync::{Arc, Mutex, MutexGuard};

use automerge::{Automerge, ChangeHash, LoadOptions, OnPartialLoad};
use sha2::{Digest, Sha256};

use index::{DocMeta, StoredKolSummary, encode};
pub use index::{KolSummary, fold};

use crate::id::{DocumentId, Identity};
use crate::model::{
    self, EngagementPlan, Envelope, HistoryEntry, Interaction, Kind, KolProfile, MedicalInformationRequest,
    MedicalInsight, ModelError, NewDocument, Record,
};
use crate::storage::{Batch, KvStore, SledKv, StorageError};

/// Errors of the document store. They name documents by id (random, not personal) and never
/// include field values.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error("document {0} not found")]
    NotFound(DocumentId),
    #[error("document {0} already exists")]
    AlreadyExists(DocumentId),
    #[error("document {id} is corrupt on disk: {reason}")]
    Corrupt { id: DocumentId, reason: &'static str },
    #[error("store metadata is unreadable: {0}")]
    BadMeta(&'static str),
    #[error("{0}")]
    Invalid(&'static str),
}

/// When a write becomes durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// Flush before every write returns: what returned `Ok` survives a crash.
    Immediate,
    /// Leave flushing to [`DocStore::flush`]: for bulk imports; nothing is promised until then.
    Deferred,
}

#[derive(Debug, Clone)]
pub struct StoreOptions {
    pub durability: Durability,
    /// Rewrite a document as one chunk once it has this many.
    pub compact_after_chunks: u64,
    /// Loaded documents kept in memory for the next edit.
    pub cache_docs: usize,
}

impl Default for StoreOptions {
    fn default() -> Self {
        Self { durability: Durability::Immediate, compact_after_chunks: 64, cache_docs: 32 }
    }
}

/// Time comes in from outside so tests and simulations are deterministic.
pub trait Clock: Send + Sync + std::fmt::Debug {
    /// Milliseconds since the Unix epoch.
    fn now_ms(&self) -> i64;
}

#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> i64 {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
    }
}

/// A clock that moves only when told: for tests and simulations.
#[derive(Debug, Default)]
pub struct ManualClock(std::sync::atomic::AtomicI64);

impl ManualClock {
    pub fn new(start_ms: i64) -> Self {
        Self(std::sync::atomic::AtomicI64::new(start_ms))
    }

    pub fn advance(&self, ms: i64) {
        self.0.fetch_add(ms, std::sync::atomic::Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now_ms(&self) -> i64 {
        self.0.load(std::sync::atomic::Ordering::SeqCst)
    }
}

/// Where a change came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    Local,
    Remote,
}

/// One event of the change feed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DocChange {
    pub id: DocumentId,
    pub kind: Option<Kind>,
    pub origin: Origin,
    /// Heads after the change; empty when the document was deleted.
    pub heads: Vec<ChangeHash>,
    pub deleted: bool,
}

mod keys {
    use crate::DocumentId;
    use crate::model::Kind;

    pub const INSTALL: &[u8] = b"!install";
    pub const META_PREFIX: &[u8] = b"m/";
    pub const SUMMARY_PREFIX: &[u8] = b"s/";

    fn join(parts: &[&[u8]]) -> Vec<u8> {
        parts.concat()
    }
    pub fn meta(id: &DocumentId) -> Vec<u8> {
        join(&[META_PREFIX, id.as_bytes()])
    }
    pub fn chunk_prefix(id: &DocumentId) -> Vec<u8> {
        join(&[b"c/", id.as_bytes(), b"/"])
    }
    pub fn chunk(id: &DocumentId, seq: u64) -> Vec<u8> {
        join(&[&chunk_prefix(id), &seq.to_be_bytes()])
    }
    pub fn kind_prefix(kind: Kind) -> Vec<u8> {
        join(&[b"k/", kind.as_str().as_bytes(), b"/"])
    }
    pub fn kind(kind: Kind, id: &DocumentId) -> Vec<u8> {
        join(&[&kind_prefix(kind), id.as_bytes()])
    }
    pub fn summary(id: &DocumentId) -> Vec<u8> {
        join(&[SUMMARY_PREFIX, id.as_bytes()])
    }
    pub fn kol_ref_prefix(kol: &DocumentId, kind: Kind) -> Vec<u8> {
        join(&[b"r/", kol.as_bytes(), b"/", kind.as_str().as_bytes(), b"/"])
    }
    pub fn kol_ref(kol: &DocumentId, kind: Kind, id: &DocumentId) -> Vec<u8> {
        join(&[&kol_ref_prefix(kol, kind), id.as_bytes()])
    }
    pub fn sync_prefix(id: &DocumentId) -> Vec<u8> {
        join(&[b"y/", id.as_bytes(), b"/"])
    }
    pub fn sync_state(id: &DocumentId, storage_id: &str) -> Vec<u8> {
        join(&[&sync_prefix(id), storage_id.as_bytes()])
    }
    /// The id at the end of an index key.
    pub fn trailing_id(key: &[u8]) -> Option<DocumentId> {
        let tail: [u8; 16] = key.get(key.len().checked_sub(16)?..)?.try_into().ok()?;
        Some(DocumentId::from_bytes(tail))
    }
}

const CHUNK_FORMAT: u8 = 1;
const CHECKSUM_LEN: usize = 8;

fn frame(payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(1 + CHECKSUM_LEN + payload.len());
    out.push(CHUNK_FORMAT);
    out.extend_from_slice(&Sha256::digest(payload)[..CHECKSUM_LEN]);
    out.extend_from_slice(payload);
    out
}

fn unframe(stored: &[u8]) -> Result<&[u8], &'static str> {
    match stored.split_first() {
        Some((&CHUNK_FORMAT, rest)) if rest.len() >= CHECKSUM_LEN => {
            let (sum, payload) = rest.split_at(CHECKSUM_LEN);
            if Sha256::digest(payload)[..CHECKSUM_LEN] == *sum { Ok(payload) } else { Err("chunk checksum mismatch") }
        }
        Some((&CHUNK_FORMAT, _)) | None => Err("chunk truncated"),
        Some(_) => Err("unknown chunk format"),
    }
}

/// What the indexes say about one document, derived from its content.
#[derive(Debug, Default)]
struct IndexData {
    kind: Option<Kind>,
    summary: Option<StoredKolSummary>,
    refs: Vec<String>,
    owner: Option<(String, String)>,
}

fn index_data(doc: &Automerge) -> IndexData {
    let Ok(kind) = model::document_kind(doc) else {
        return IndexData::default();
    };
    fn refs<R: Record>(doc: &Automerge) -> Vec<String> {
        match model::read_record::<R>(doc) {
            Ok(r) => r.kol_refs(),
            Err(e) => {
                tracing::warn!(kind = %R::KIND, error = %e, "record does not hydrate; not indexed by KOL");
                Vec::new()
            }
        }
    }
    let owner = model::read_owner(doc).ok();
    let mut data = IndexData { kind: Some(kind), owner, ..IndexData::default() };
    match kind {
        Kind::KolProfile => match model::read_record::<KolProfile>(doc) {
            Ok(p) => {
                data.summary = Some(StoredKolSummary {
                    name: p.name,
                    name_kana: p.name_kana,
                    institution: p.institution,
                    specialty: p.specialty,
                    merged_into: p.merged_into,
                });
            }
            Err(e) => tracing::warn!(error = %e, "KOL profile does not hydrate; not listed"),
        },
        Kind::Interaction => data.refs = refs::<Interaction>(doc),
        Kind::MedicalInsight => data.refs = refs::<MedicalInsight>(doc),
        Kind::MedicalInformationRequest => data.refs = refs::<MedicalInformationRequest>(doc),
        Kind::EngagementPlan => data.refs = refs::<EngagementPlan>(doc),
    }
    data
}

/// Moves a document's index entries from what `old` says to what `idx` says; `meta` takes the
/// new kind, references and owner.
fn reindex(batch: &mut Batch, id: &DocumentId, old: &DocMeta, meta: &mut DocMeta, idx: &IndexData) {
    if let Some(old_kind) = old.kind() {
        for r in &old.refs {
            if let Ok(kol) = r.parse::<DocumentId>() {
                batch.delete(keys::kol_ref(&kol, old_kind, id));
            }
        }
    }
    meta.kind = idx.kind.map(|k| k.as_str().to_owned());
    meta.refs = idx.refs.clone();
    // A document's owner, once known, never changes here: a later change that broke or moved
    // the envelope (refused by the relay, but defence in depth) cannot take the document out
    // of its tenant's catalog, export or purge.
    if meta.tenant.is_none() || meta.team.is_none() {
        (meta.tenant, meta.team) = idx.owner.clone().unzip();
    }
    if let Some(kind) = idx.kind {
        batch.put(keys::kind(kind, id), Vec::new());
        for r in &idx.refs {
            if let Ok(kol) = r.parse::<DocumentId>() {
                batch.put(keys::kol_ref(&kol, kind, id), Vec::new());
            }
        }
    }
    if let Some(s) = &idx.summary {
        batch.put(keys::summary(id), encode(s));
    }
}

/// One document's share of [`DocStore::append_sync_batch`].
#[derive(Debug, Clone)]
pub struct SyncWrite<'a> {
    pub doc: DocumentId,
    /// `save_after` output: the document's changes not yet stored here. May be empty.
    pub changes: &'a [u8],
    /// The document's heads once `changes` are applied (for the change feed).
    pub heads: &'a [ChangeHash],
    pub sync_states: &'a [(String, Vec<u8>)],
}

/// What a group commit has done so far to documents that come more than once in it.
#[derive(Debug, Default)]
struct GroupState {
    /// Metadata as the group leaves it.
    metas: HashMap<DocumentId, DocMeta>,
    /// Chunks the group adds (bytes and sequence numbers), in case it compacts them too.
    added: HashMap<DocumentId, (Vec<u8>, Vec<u64>)>,
}

/// Documents loaded for editing, least recently used first out.
#[derive(Debug, Default)]
struct Cache {
    docs: HashMap<DocumentId, Automerge>,
    order: VecDeque<DocumentId>,
}

impl Cache {
    fn take(&mut self, id: &DocumentId) -> Option<Automerge> {
        let doc = self.docs.remove(id)?;
        self.order.retain(|d| d != id);
        Some(doc)
    }

    fn put(&mut self, id: DocumentId, doc: Automerge, cap: usize) {
        if cap == 0 {
            return;
        }
        self.order.retain(|d| *d != id);
        self.order.push_back(id);
        self.docs.insert(id, doc);
        while self.order.len() > cap {
            if let Some(old) = self.order.pop_front() {
                self.docs.remove(&old);
            }
        }
    }
}

/// A document being written in this commit.
struct Pending {
    id: DocumentId,
    doc: Automerge,
    before: Vec<ChangeHash>,
    meta: DocMeta,
    origin: Origin,
}

/// The on-device (and, later, relay) document store.
pub struct DocStore {
    kv: Arc<dyn KvStore>,
    identity: Identity,
    clock: Arc<dyn Clock>,
    options: StoreOptions,
    cache: Mutex<Cache>,
    subscribers: Mutex<Vec<Sender<DocChange>>>,
}

impl std::fmt::Debug for DocStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DocStore").field("kv", &self.kv).field("options", &self.options).finish_non_exhaustive()
    }
}

impl DocStore {
    /// Opens (or creates) a sled-backed store in `dir` for `identity`, writing durably.
    pub fn open(dir: &Path, identity: Identity) -> Result<Self, StoreError> {
        let kv = SledKv::open(dir)?;
        Self::with_kv(Arc::new(kv), identity, Arc::new(SystemClock), StoreOptions::default())
    }

    /// Opens a store over any backend. The identity's `install` is replaced by the store's own,
    /// made on first open and kept in the store.
    pub fn with_kv(
        kv: Arc<dyn KvStore>,
        mut identity: Identity,
        clock: Arc<dyn Clock>,
        options: StoreOptions,
    ) -> Result<Self, StoreError> {
        identity.install = match kv.get(keys::INSTALL)? {
            Some(v) => v.as_slice().try_into().map_err(|_| StoreError::BadMeta("install id"))?,
            None => {
                let install: [u8; 8] = uuid::Uuid::new_v4().as_bytes()[..8].try_into().unwrap_or([0; 8]);
                kv.put(keys::INSTALL, &install)?;
                kv.flush()?;
                install
            }
        };
        Ok(Self {
            kv,
            identity,
            clock,
            options,
            cache: Mutex::new(Cache::default()),
            subscribers: Mutex::new(Vec::new()),
        })
    }

    /// The identity edits are made as, with this store's install id.
    pub fn identity(&self) -> &Identity {
        &self.identity
    }

    pub fn kv(&self) -> &Arc<dyn KvStore> {
        &self.kv
    }

    /// A receiver of every change committed from now on, local and remote.
    pub fn subscribe(&self) -> Receiver<DocChange> {
        let (tx, rx) = channel();
        lock(&self.subscribers).push(tx);
        rx
    }

    /// Makes every write so far durable (needed only with [`Durability::Deferred`]).
    pub fn flush(&self) -> Result<(), StoreError> {
        Ok(self.kv.flush()?)
    }

    // -----------------------------------------------------------------------------------------
    // Typed records

    /// Creates a document holding `record`, owned by `team`.
    pub fn create<R: Record>(&self, team: &str, record: &R) -> Result<DocumentId, StoreError> {
        let id = DocumentId::random();
        let new = NewDocument { team: team.to_owned(), retention_class: default_retention(R::KIND).to_owned() };
        self.create_with(id, &new, record)?;
        Ok(id)
    }

    /// Creates a document with a given id and envelope settings.
    pub fn create_with<R: Record>(&self, id: DocumentId, new: &NewDocument, record: &R) -> Result<(), StoreError> {
        let doc = model::create_document(&self.identity, new, record, self.clock.now_ms())?;
        let mut cache = lock(&self.cache);
        if self.kv.get(&keys::meta(&id))?.is_some() {
            return Err(StoreError::AlreadyExists(id));
        }
        self.commit(
            &mut cache,
            vec![Pending { id, doc, before: Vec::new(), meta: DocMeta::default(), origin: Origin::Local }],
        )
    }

    /// Reads a record.
    pub fn get<R: Record>(&self, id: &DocumentId) -> Result<R, StoreError> {
        let doc = self.load_cached(id)?;
        Ok(model::read_record(&doc)?)
    }

    pub fn envelope(&self, id: &DocumentId) -> Result<Envelope, StoreError> {
        let doc = self.load_cached(id)?;
        Ok(model::read_envelope(&doc)?)
    }

    /// The kind of a stored document; `None` if it is not a liaison record.
    pub fn kind_of(&self, id: &DocumentId) -> Result<Option<Kind>, StoreError> {
        Ok(self.read_meta(id)?.ok_or(StoreError::NotFound(*id))?.kind())
    }

    /// Edits a record as one change. Refused with [`ModelError::Locked`] if it is submitted.
    pub fn update<R: Record, T>(&self, id: &DocumentId, edit: impl FnOnce(&mut R) -> T) -> Result<T, StoreError> {
        let now = self.clock.now_ms();
        let who = self.identity.clone();
        self.edit(id, move |doc| Ok(model::update_record(doc, &who, now, edit)?.1))
    }

    /// Submits a record: it is locked from now on.
    pub fn submit<R: Record>(&self, id: &DocumentId) -> Result<(), StoreError> {
        let now = self.clock.now_ms();
        let who = self.identity.clone();
        self.edit(id, move |doc| Ok(model::submit_record::<R>(doc, &who, now).map(|_| ())?))
    }

    /// Unlocks a submitted record (admins only); the unlock and its reason stay in the record.
    pub fn unlock<R: Record>(&self, id: &DocumentId, reason: &str) -> Result<(), StoreError> {
        let now = self.clock.now_ms();
        let who = self.identity.clone();
        let unlock_id = DocumentId::random().to_string();
        self.edit(id, move |doc| Ok(model::unlock_record::<R>(doc, &who, now, unlock_id, reason).map(|_| ())?))
    }

    pub fn set_legal_hold(&self, id: &DocumentId, hold: bool) -> Result<(), StoreError> {
        let now = self.clock.now_ms();
        let who = self.identity.clone();
        self.edit(id, move |doc| Ok(model::set_legal_hold(doc, &who, now, hold).map(|_| ())?))
    }

    /// Ids of every document of `kind`.
    pub fn list(&self, kind: Kind) -> Result<Vec<DocumentId>, StoreError> {
        Ok(self.kv.scan_keys(&keys::kind_prefix(kind))?.iter().filter_map(|k| keys::trailing_id(k)).collect())
    }

    /// Ids of every stored document, liaison record or not.
    pub fn all_documents(&self) -> Result<Vec<DocumentId>, StoreError> {
        Ok(self.kv.scan_keys(keys::META_PREFIX)?.iter().filter_map(|k| keys::trailing_id(k)).collect())
    }

    /// Every KOL profile summary, merged losers included, unsorted.
    fn all_summaries(&self) -> Result<Vec<KolSummary>, StoreError> {
        let mut out = Vec::new();
        for (k, v) in self.kv.scan_prefix(keys::SUMMARY_PREFIX)? {
            // A damaged entry hides one KOL from the list, not the whole list; the document
            // itself is still there and rewrites its summary on its next change.
            let Some(id) = keys::trailing_id(&k) else {
                tracing::warn!("skipping a malformed KOL summary key");
                continue;
            };
            match minicbor::decode::<StoredKolSummary>(&v) {
                Ok(stored) => out.push(stored.into_summary(id)),
                Err(_) => tracing::warn!(document = %id, "skipping an unreadable KOL summary"),
            }
        }
        Ok(out)
    }

    /// The KOLs to show: merged duplicates are left out when their winner is here. Sorted by
    /// reading (kana) or name.
    pub fn list_kols(&self) -> Result<Vec<KolSummary>, StoreError> {
        let all = self.all_summaries()?;
        let resolver = Resolver::new(&all);
        let mut shown: Vec<KolSummary> = all.into_iter().filter(|s| resolver.resolve(s.id) == s.id).collect();
        shown.sort_by_cached_key(|s| (s.sort_key(), s.id));
        Ok(shown)
    }

    /// KOLs whose name, reading or institution contain every term of `query` (kana-, width- and
    /// case-insensitive).
    pub fn search_kols(&self, query: &str) -> Result<Vec<KolSummary>, StoreError> {
        let terms: Vec<String> = query.split_whitespace().map(fold).collect();
        Ok(self.list_kols()?.into_iter().filter(|s| s.matches(&terms)).collect())
    }

    /// The profile a KOL id stands for now: itself, or the profile it was merged into.
    pub fn resolve_kol(&self, id: &DocumentId) -> Result<DocumentId, StoreError> {
        let all = self.all_summaries()?;
        Ok(Resolver::new(&all).resolve(*id))
    }

    /// Records of `kind` that belong to a KOL, including those filed under profiles merged into it.
    pub fn records_for_kol(&self, kol: &DocumentId, kind: Kind) -> Result<Vec<DocumentId>, StoreError> {
        let all = self.all_summaries()?;
        let resolver = Resolver::new(&all);
        let target = resolver.resolve(*kol);
        let mut members: HashSet<DocumentId> =
            all.iter().map(|s| s.id).filter(|id| resolver.resolve(*id) == target).collect();
        members.insert(target);
        members.insert(*kol);
        let mut out = Vec::new();
        for m in members {
            for k in self.kv.scan_keys(&keys::kol_ref_prefix(&m, kind))? {
                out.extend(keys::trailing_id(&k));
            }
        }
        out.sort();
        out.dedup();
        Ok(out)
    }

    /// Merges duplicate KOL profiles: `winner` absorbs `loser`'s details, `loser` records
    /// `merged_into`. Both changes are written in one batch. Records filed under the loser are
    /// not touched (some are locked); lookups resolve them to the winner.
    pub fn merge_kols(&self, winner: &DocumentId, loser: &DocumentId) -> Result<(), StoreError> {
        let winner = self.resolve_kol(winner)?;
        if winner == *loser || self.resolve_kol(loser)? == winner {
            return Ok(());
        }
        let now = self.clock.now_ms();
        let who = &self.identity;
        let mut cache = lock(&self.cache);
        let mut l = self.take_pending(&mut cache, loser, Origin::Local)?;
        let mut w = self.take_pending(&mut cache, &winner, Origin::Local)?;
        let loser_profile: KolProfile = model::read_record(&l.doc)?;
        if loser_profile.merged_into.is_some() {
            return Err(StoreError::Invalid("that profile is already merged into another"));
        }
        let winner_str = winner.to_string();
        model::update_record::<KolProfile, _>(&mut l.doc, who, now, |p| p.merged_into = Some(winner_str))?;
        model::update_record::<KolProfile, _>(&mut w.doc, who, now, |p| {
            model::absorb_profile(p, &loser_profile, &loser.to_string())
        })?;
        self.commit(&mut cache, vec![l, w])
    }

    /// Every change to a document, with authors.
    pub fn history(&self, id: &DocumentId) -> Result<Vec<HistoryEntry>, StoreError> {
        Ok(model::history(&self.load_cached(id)?)?)
    }

    /// The changes that touched one field (for example `institution` or `notes`).
    pub fn field_history(&self, id: &DocumentId, field: &str) -> Result<Vec<HistoryEntry>, StoreError> {
        Ok(model::field_history(&self.load_cached(id)?, field)?)
    }

    // -----------------------------------------------------------------------------------------
    // Raw documents, for sync and export

    /// The document as automerge-repo would load it.
    pub fn load(&self, id: &DocumentId) -> Result<Automerge, StoreError> {
        self.load_cached(id)
    }

    /// The whole document as one `save()`.
    pub fn export(&self, id: &DocumentId) -> Result<Vec<u8>, StoreError> {
        Ok(self.load_cached(id)?.save())
    }

    /// Merges changes received from elsewhere (`save()` or `save_after()` output) into a
    /// document, creating it if it is new here. Returns whether anything changed.
    pub fn merge_remote(&self, id: &DocumentId, bytes: &[u8]) -> Result<bool, StoreError> {
        let mut incoming =
            Automerge::load_with_options(bytes, LoadOptions::new().on_partial_load(OnPartialLoad::Error))
                .map_err(|_| StoreError::Invalid("received bytes are not an automerge document"))?;
        let mut cache = lock(&self.cache);
        let mut p = self.take_or_new_remote(&mut cache, id)?;
        p.doc.merge(&mut incoming).map_err(ModelError::from)?;
        let changed = p.doc.get_heads() != p.before;
        self.commit(&mut cache, vec![p])?;
        Ok(changed)
    }

    /// Edits any document, liaison record or not, in one automerge transaction (for documents
    /// other automerge-repo clients created). Typed records should use [`DocStore::update`].
    pub fn edit_raw<T>(
        &self,
        id: &DocumentId,
        f: impl FnOnce(&mut automerge::transaction::Transaction<'_>) -> Result<T, automerge::AutomergeError>,
    ) -> Result<T, StoreError> {
        let now = self.clock.now_ms();
        let actor = self.identity.actor_id();
        self.edit(id, move |doc| {
            doc.set_actor(actor);
            let mut tx = doc.transaction();
            let out = f(&mut tx).map_err(ModelError::from)?;
            tx.commit_with(automerge::transaction::CommitOptions::default().with_time(now));
            Ok(out)
        })
    }

    /// Deletes a document and its index entries (erasure).
    pub fn delete(&self, id: &DocumentId) -> Result<(), StoreError> {
        if self.delete_with(id, Batch::new())? { Ok(()) } else { Err(StoreError::NotFound(*id)) }
    }

    /// Deletes a document, if stored, together with `extra` writes in one atomic batch (an
    /// erasure's tombstone and quarantine entries go with the document or not at all). Returns
    /// whether the document was stored; `extra` is applied either way.
    pub fn delete_with(&self, id: &DocumentId, extra: Batch) -> Result<bool, StoreError> {
        let mut cache = lock(&self.cache);
        let Some(meta) = self.read_meta(id)? else {
            if !extra.is_empty() {
                self.kv.apply(extra)?;
                self.durable()?;
            }
            return Ok(false);
        };
        cache.take(id);
        let mut batch = extra;
        for k in self.kv.scan_keys(&keys::chunk_prefix(id))? {
            batch.delete(k);
        }
        for k in self.kv.scan_keys(&keys::sync_prefix(id))? {
            batch.delete(k);
        }
        batch.delete(keys::meta(id));
        if let Some(kind) = meta.kind() {
            batch.delete(keys::kind(kind, id));
            batch.delete(keys::summary(id));
            for r in &meta.refs {
                if let Ok(kol) = r.parse::<DocumentId>() {
                    batch.delete(keys::kol_ref(&kol, kind, id));
                }
            }
        }
        self.kv.apply(batch)?;
        self.durable()?;
        self.notify(DocChange { id: *id, kind: meta.kind(), origin: Origin::Local, heads: Vec::new(), deleted: true });
        Ok(true)
    }

    /// Rewrites a document as a single chunk.
    pub fn compact(&self, id: &DocumentId) -> Result<(), StoreError> {
        let mut cache = lock(&self.cache);
        let p = self.take_pending(&mut cache, id, Origin::Local)?;
        let batch = self.compaction_batch(&p)?;
        let meta = DocMeta { next_chunk: p.meta.next_chunk + 1, chunks: 1, ..p.meta.clone() };
        let mut batch = batch;
        batch.put(keys::meta(id), encode(&meta));
        self.kv.apply(batch)?;
        self.durable()?;
        cache.put(*id, p.doc, self.options.cache_docs);
        Ok(())
    }

    /// Tenant, team and kind of a stored liaison document (from its envelope), without loading it.
    #[allow(clippy::type_complexity)]
    pub fn owner_of(&self, id: &DocumentId) -> Result<Option<(String, String, Option<Kind>)>, StoreError> {
        Ok(self.read_meta(id)?.and_then(|m| {
            let kind = m.kind();
            Some((m.tenant?, m.team?, kind))
        }))
    }

    /// How many chunks a document is stored in.
    pub fn chunk_count(&self, id: &DocumentId) -> Result<u64, StoreError> {
        Ok(self.read_meta(id)?.ok_or(StoreError::NotFound(*id))?.chunks)
    }

    /// For the sync engine: the stored document (all chunks, concatenated) and the sync states
    /// kept for it, or `None` if it is not stored.
    #[allow(clippy::type_complexity)]
    pub fn load_for_sync(&self, id: &DocumentId) -> Result<Option<(Vec<u8>, Vec<(String, Vec<u8>)>)>, StoreError> {
        let chunks = self.kv.scan_prefix(&keys::chunk_prefix(id))?;
        if chunks.is_empty() {
            return Ok(None);
        }
        let mut data = Vec::new();
        for (_, v) in &chunks {
            data.extend_from_slice(unframe(v).map_err(|reason| StoreError::Corrupt { id: *id, reason })?);
        }
        let prefix = keys::sync_prefix(id);
        let mut states = Vec::new();
        for (k, v) in self.kv.scan_prefix(&prefix)? {
            let storage = String::from_utf8_lossy(&k[prefix.len()..]).into_owned();
            states.push((storage, v));
        }
        Ok(Some((data, states)))
    }

    /// For the sync engine: applies changes received from peers (`save_after` output) and the
    /// peers' sync states in one atomic, durable batch. Creates the document if it is new here.
    pub fn apply_sync_changes(
        &self,
        id: &DocumentId,
        changes: &[u8],
        sync_states: &[(String, Vec<u8>)],
    ) -> Result<(), StoreError> {
        let mut cache = lock(&self.cache);
        let mut p = self.take_or_new_remote(&mut cache, id)?;
        p.doc.load_incremental(changes).map_err(|_| StoreError::Invalid("received changes do not load"))?;
        let mut extra = Batch::new();
        for (storage, state) in sync_states {
            extra.put(keys::sync_state(id, storage), state.clone());
        }
        self.commit_with(&mut cache, vec![p], extra)
    }

    /// For the sync engine: stores peers' sync states for a document.
    pub fn save_sync_states(&self, id: &DocumentId, sync_states: &[(String, Vec<u8>)]) -> Result<(), StoreError> {
        let mut batch = Batch::new();
        for (storage, state) in sync_states {
            batch.put(keys::sync_state(id, storage), state.clone());
        }
        self.kv.apply(batch)?;
        self.durable()
    }

    /// For relays: stores the sync writes of many documents in one atomic batch and one flush
    /// (group commit), without loading the documents. Received changes are appended as they
    /// came, as a chunk; a document is loaded only when it is new here or not yet known to be a
    /// liaison record (to index its kind and owner), and every `compact_after_chunks` appends
    /// (to rewrite it as one chunk). The kind and owner never change once known (the relay's
    /// policy refuses owner changes), so KOL summaries and references, which a relay does not
    /// list, are indexed only when a document is loaded. Several writes for one document are
    /// stored in order. Returns one outcome per write: a write whose document cannot be read
    /// (damaged chunks, unreadable metadata) fails alone and the others are stored. `Err` when
    /// the batch could not be written or flushed: then nothing of it is stored.
    pub fn append_sync_batch(&self, writes: &[SyncWrite<'_>]) -> Result<Vec<Result<(), StoreError>>, StoreError> {
        let mut cache = lock(&self.cache);
        let mut batch = Batch::new();
        let mut state = GroupState::default();
        let mut events = Vec::new();
        let mut outcomes = Vec::with_capacity(writes.len());
        for w in writes {
            if !w.changes.is_empty() {
                // What the cache holds is about to be stale.
                cache.take(&w.doc);
            }
            match self.prepare_sync_write(w, &mut state) {
                Ok((ops, event)) => {
                    batch.extend(ops);
                    events.extend(event);
                    outcomes.push(Ok(()));
                }
                Err(e) => {
                    // A damaged document fails only its own write, never its neighbours'.
                    tracing::warn!(document = %w.doc, error = %e, "sync write not stored; the rest of the group is");
                    outcomes.push(Err(e));
                }
            }
        }
        if !batch.is_empty() {
            self.kv.apply(batch)?;
            self.durable()?;
        }
        drop(cache);
        for e in events {
            self.notify(e);
        }
        Ok(outcomes)
    }

    /// One write of a group commit: its batch operations and change-feed event. On error nothing
    /// of it is in `state` or in what it returns.
    fn prepare_sync_write(
        &self,
        w: &SyncWrite<'_>,
        state: &mut GroupState,
    ) -> Result<(Batch, Option<DocChange>), StoreError> {
        let mut batch = Batch::new();
        for (storage, st) in w.sync_states {
            batch.put(keys::sync_state(&w.doc, storage), st.clone());
        }
        if w.changes.is_empty() {
            return Ok((batch, None));
        }
        let mut meta = match state.metas.get(&w.doc) {
            Some(m) => m.clone(),
            None => self.read_meta(&w.doc)?.unwrap_or_default(),
        };
        let must_load = meta.chunks == 0 || meta.kind.is_none();
        let (earlier, seqs): (&[u8], &[u64]) =
            state.added.get(&w.doc).map(|(b, s)| (b.as_slice(), s.as_slice())).unwrap_or_default();
        let loaded = if must_load || meta.chunks + 1 > self.options.compact_after_chunks {
            let whole = self.stored_bytes(&w.doc).and_then(|mut data| {
                data.extend_from_slice(earlier);
                data.extend_from_slice(w.changes);
                Automerge::load_with_options(&data, LoadOptions::new().on_partial_load(OnPartialLoad::Error))
                    .map_err(|_| StoreError::Corrupt { id: w.doc, reason: "stored and received changes do not load" })
            });
            match whole {
                Ok(doc) => Some(doc),
                // Without its kind and owner the relay cannot place a document: refuse the write.
                Err(e) if must_load => return Err(e),
                Err(e) => {
                    // Compaction is an optimisation: the changes are appended as received.
                    tracing::warn!(document = %w.doc, error = %e, "cannot compact; appending as received");
                    None
                }
            }
        } else {
            None
        };
        let chunk = meta.next_chunk;
        let compacted = match loaded {
            Some(doc) => {
                for k in self.kv.scan_keys(&keys::chunk_prefix(&w.doc))? {
                    batch.delete(k);
                }
                for seq in seqs {
                    batch.delete(keys::chunk(&w.doc, *seq));
                }
                batch.put(keys::chunk(&w.doc, chunk), frame(&doc.save()));
                let old = meta.clone();
                reindex(&mut batch, &w.doc, &old, &mut meta, &index_data(&doc));
                meta.chunks = 1;
                true
            }
            None => {
                batch.put(keys::chunk(&w.doc, chunk), frame(w.changes));
                meta.chunks += 1;
                false
            }
        };
        meta.next_chunk += 1;
        batch.put(keys::meta(&w.doc), encode(&meta));
        let event =
            DocChange { id: w.doc, kind: meta.kind(), origin: Origin::Remote, heads: w.heads.to_vec(), deleted: false };
        state.metas.insert(w.doc, meta);
        let added = state.added.entry(w.doc).or_default();
        if compacted {
            *added = (Vec::new(), vec![chunk]);
        } else {
            added.0.extend_from_slice(w.changes);
            added.1.push(chunk);
        }
        Ok((batch, Some(event)))
    }

    /// Changes to a document since `heads` (for telling the sync engine about local edits).
    pub fn changes_since(&self, id: &DocumentId, heads: &[ChangeHash]) -> Result<Vec<u8>, StoreError> {
        Ok(self.load_cached(id)?.save_after(heads))
    }

    // -----------------------------------------------------------------------------------------
    // Internals

    fn read_meta(&self, id: &DocumentId) -> Result<Option<DocMeta>, StoreError> {
        match self.kv.get(&keys::meta(id))? {
            Some(v) => Ok(Some(
                minicbor::decode(&v).map_err(|_| StoreError::Corrupt { id: *id, reason: "metadata unreadable" })?,
            )),
            None => Ok(None),
        }
    }

    /// Loads a document from its chunks.
    /// A document's chunks, concatenated (empty if it has none).
    fn stored_bytes(&self, id: &DocumentId) -> Result<Vec<u8>, StoreError> {
        let chunks = self.kv.scan_prefix(&keys::chunk_prefix(id))?;
        let mut data = Vec::with_capacity(chunks.iter().map(|(_, v)| v.len()).sum());
        for (_, v) in &chunks {
            data.extend_from_slice(unframe(v).map_err(|reason| StoreError::Corrupt { id: *id, reason })?);
        }
        Ok(data)
    }

    fn load_from_disk(&self, id: &DocumentId) -> Result<Automerge, StoreError> {
        let data = self.stored_bytes(id)?;
        if data.is_empty() {
            return Err(StoreError::NotFound(*id));
        }
        let doc = Automerge::load_with_options(&data, LoadOptions::new().on_partial_load(OnPartialLoad::Error))
            .map_err(|_| StoreError::Corrupt { id: *id, reason: "automerge data does not load" })?;
        Ok(doc.with_actor(self.identity.actor_id()))
    }

    fn load_cached(&self, id: &DocumentId) -> Result<Automerge, StoreError> {
        let mut cache = lock(&self.cache);
        if let Some(doc) = cache.take(id) {
            let copy = doc.clone();
            cache.put(*id, doc, self.options.cache_docs);
            return Ok(copy);
        }
        drop(cache);
        self.load_from_disk(id)
    }

    fn take_pending(&self, cache: &mut Cache, id: &DocumentId, origin: Origin) -> Result<Pending, StoreError> {
        let meta = self.read_meta(id)?.ok_or(StoreError::NotFound(*id))?;
        let doc = match cache.take(id) {
            Some(d) => d,
            None => self.load_from_disk(id)?,
        };
        let before = doc.get_heads();
        Ok(Pending { id: *id, doc, before, meta, origin })
    }

    /// The stored document for a remote write, or a new empty one if it is new here.
    fn take_or_new_remote(&self, cache: &mut Cache, id: &DocumentId) -> Result<Pending, StoreError> {
        match self.take_pending(cache, id, Origin::Remote) {
            Err(StoreError::NotFound(_)) => Ok(Pending {
                id: *id,
                doc: Automerge::new().with_actor(self.identity.actor_id()),
                before: Vec::new(),
                meta: DocMeta::default(),
                origin: Origin::Remote,
            }),
            other => other,
        }
    }

    /// Runs `f` on a document and commits whatever it changed.
    fn edit<T>(
        &self,
        id: &DocumentId,
        f: impl FnOnce(&mut Automerge) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let mut cache = lock(&self.cache);
        let mut p = self.take_pending(&mut cache, id, Origin::Local)?;
        // On error the document is dropped, not cached: it is reloaded from disk next time.
        let out = f(&mut p.doc)?;
        self.commit(&mut cache, vec![p])?;
        Ok(out)
    }

    fn compaction_batch(&self, p: &Pending) -> Result<Batch, StoreError> {
        let mut batch = Batch::new();
        for k in self.kv.scan_keys(&keys::chunk_prefix(&p.id))? {
            batch.delete(k);
        }
        batch.put(keys::chunk(&p.id, p.meta.next_chunk), frame(&p.doc.save()));
        Ok(batch)
    }

    /// Writes every pending document in one atomic batch, flushes, caches, and notifies.
    fn commit(&self, cache: &mut Cache, pending: Vec<Pending>) -> Result<(), StoreError> {
        self.commit_with(cache, pending, Batch::new())
    }

    /// Like `commit`, with `extra` writes in the same atomic batch (sync states).
    fn commit_with(&self, cache: &mut Cache, pending: Vec<Pending>, extra: Batch) -> Result<(), StoreError> {
        let mut batch = Batch::new();
        let mut events = Vec::new();
        let mut written = Vec::new();
        for mut p in pending {
            let heads = p.doc.get_heads();
            if heads == p.before && p.meta.chunks > 0 {
                cache.put(p.id, p.doc, self.options.cache_docs);
                continue;
            }
            let old_meta = p.meta.clone();
            if p.meta.chunks == 0 {
                batch.put(keys::chunk(&p.id, p.meta.next_chunk), frame(&p.doc.save()));
                p.meta.chunks = 1;
            } else if p.meta.chunks + 1 > self.options.compact_after_chunks {
                batch.extend(self.compaction_batch(&p)?);
                p.meta.chunks = 1;
            } else {
                batch.put(keys::chunk(&p.id, p.meta.next_chunk), frame(&p.doc.save_after(&p.before)));
                p.meta.chunks += 1;
            }
            p.meta.next_chunk += 1;

            let idx = index_data(&p.doc);
            reindex(&mut batch, &p.id, &old_meta, &mut p.meta, &idx);
            batch.put(keys::meta(&p.id), encode(&p.meta));
            events.push(DocChange { id: p.id, kind: idx.kind, origin: p.origin, heads, deleted: false });
            written.push((p.id, p.doc));
        }
        batch.extend(extra);
        if batch.is_empty() {
            return Ok(());
        }
        // If the write fails, the edited documents are dropped (not cached): memory never holds
        // an edit the disk does not.
        self.kv.apply(batch)?;
        self.durable()?;
        for (id, doc) in written {
            cache.put(id, doc, self.options.cache_docs);
        }
        for e in events {
            self.notify(e);
        }
        Ok(())
    }

    fn durable(&self) -> Result<(), StoreError> {
        if self.options.durability == Durability::Immediate {
            self.kv.flush()?;
        }
        Ok(())
    }

    fn notify(&self, change: DocChange) {
        lock(&self.subscribers).retain(|s| s.send(change.clone()).is_ok());
    }
}

fn default_retention(kind: Kind) -> &'static str {
    match kind {
        Kind::MedicalInformationRequest => "mir",
        _ => "standard",
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding the lock cannot leave half a write behind: writes go to the kv
    // store as one batch, and the cache only ever holds committed documents.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Follows `merged_into` links. Two devices may merge a pair in opposite directions while
/// offline; the resulting cycle resolves to its smallest id, the same answer on every device.
struct Resolver {
    next: HashMap<DocumentId, DocumentId>,
}

impl Resolver {
    fn new(all: &[KolSummary]) -> Self {
        let present: HashSet<DocumentId> = all.iter().map(|s| s.id).collect();
        let next =
            all.iter().filter_map(|s| s.merged_into.filter(|t| present.contains(t)).map(|t| (s.id, t))).collect();
        Self { next }
    }

    fn resolve(&self, start: DocumentId) -> DocumentId {
        let mut seen = vec![start];
        let mut cur = start;
        while let Some(&n) = self.next.get(&cur) {
            if let Some(pos) = seen.iter().position(|s| *s == n) {
                return seen[pos..].iter().copied().min().unwrap_or(n);
            }
            seen.push(n);
            cur = n;
        }
        cur
    }
}
