//! The typed API: creating, reading, editing, submitting and listing records.

use super::commit::Pending;
use super::index::DocMeta;
use super::{DocStore, Origin, StoreError, keys, lock};
use crate::id::DocumentId;
use crate::model::{self, Envelope, HistoryEntry, Kind, NewDocument, Record};

impl DocStore {
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

    /// Every change to a document, with authors.
    pub fn history(&self, id: &DocumentId) -> Result<Vec<HistoryEntry>, StoreError> {
        Ok(model::history(&self.load_cached(id)?)?)
    }

    /// The changes that touched one field (for example `institution` or `notes`).
    pub fn field_history(&self, id: &DocumentId, field: &str) -> Result<Vec<HistoryEntry>, StoreError> {
        Ok(model::field_history(&self.load_cached(id)?, field)?)
    }
}

fn default_retention(kind: Kind) -> &'static str {
    match kind {
        Kind::MedicalInformationRequest => "mir",
        _ => "standard",
    }
}
