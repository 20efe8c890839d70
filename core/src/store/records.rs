//! The typed API: creating, reading, editing, submitting and listing records.

use super::commit::Pending;
use super::index::DocMeta;
use super::{DocStore, Origin, StoreError, keys, lock};
use crate::id::DocumentId;
use crate::model::{
    self, Envelope, HistoryEntry, Interaction, Kind, MedicalInformationRequest, MedicalInsight, NewDocument, Record,
};

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
            vec![Pending {
                id,
                doc,
                before: Vec::new(),
                meta: DocMeta::default(),
                origin: Origin::Local,
                merged_away: false,
                stored: None,
            }],
        )
    }

    /// Reads a record.
    pub fn get<R: Record>(&self, id: &DocumentId) -> Result<R, StoreError> {
        let doc = self.load_cached(id)?;
        Ok(model::read_record(&doc)?)
    }

    /// Reads a record with the version it was read at, for a save that merges
    /// ([`DocStore::update_at`]).
    pub fn get_versioned<R: Record>(&self, id: &DocumentId) -> Result<(R, model::Version), StoreError> {
        let doc = self.load_cached(id)?;
        Ok((model::read_record(&doc)?, model::Version::of(&doc)))
    }

    /// A document's envelope: owner, creator, creation time, retention class, legal hold.
    /// [`StoreError::Model`] if the document is not a liaison record.
    pub fn envelope(&self, id: &DocumentId) -> Result<Envelope, StoreError> {
        let doc = self.load_cached(id)?;
        Ok(model::read_envelope(&doc)?)
    }

    /// The kind of a stored document; `None` if it is not a liaison record.
    pub fn kind_of(&self, id: &DocumentId) -> Result<Option<Kind>, StoreError> {
        Ok(self.read_meta(id)?.ok_or(StoreError::NotFound(*id))?.kind())
    }

    /// Edits a record as one change. Refused with [`StoreError::Model`] holding
    /// [`ModelError::Locked`](crate::model::ModelError::Locked) if it is submitted.
    pub fn update<R: Record, T>(&self, id: &DocumentId, edit: impl FnOnce(&mut R) -> T) -> Result<T, StoreError> {
        let now = self.clock.now_ms();
        let who = self.identity.clone();
        self.edit(id, move |doc| Ok(model::update_record(doc, &who, now, edit)?.1))
    }

    /// Edits a record as it was at `base` (the version it was read at) and merges the edit with
    /// everything that happened since: a colleague's concurrent edits of other fields, list items
    /// and text ranges survive (see [`model::update_record_at`]). What a form's save calls.
    /// Errors as [`DocStore::update`], and [`model::ModelError::UnknownVersion`] for a version
    /// this document does not have.
    pub fn update_at<R: Record, T>(
        &self,
        id: &DocumentId,
        base: &model::Version,
        edit: impl FnOnce(&mut R) -> T,
    ) -> Result<T, StoreError> {
        let now = self.clock.now_ms();
        let who = self.identity.clone();
        self.edit(id, move |doc| Ok(model::update_record_at(doc, base, &who, now, edit)?.1))
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

    /// Submits a record of whatever kind it is, for callers that hold an id, not a type (the
    /// apps, the relay's admin API). Refused with [`StoreError::NotLockable`] unless its kind
    /// locks ([`Kind::locks_on_submit`], the one place that rule is written).
    pub fn submit_any(&self, id: &DocumentId) -> Result<(), StoreError> {
        match self.lockable_kind(id)? {
            Kind::Interaction => self.submit::<Interaction>(id),
            Kind::MedicalInsight => self.submit::<MedicalInsight>(id),
            Kind::MedicalInformationRequest => self.submit::<MedicalInformationRequest>(id),
            kind => Err(StoreError::NotLockable { id: *id, kind: Some(kind) }),
        }
    }

    /// Unlocks a submitted record of whatever kind it is (admins only); as [`DocStore::submit_any`].
    pub fn unlock_any(&self, id: &DocumentId, reason: &str) -> Result<(), StoreError> {
        match self.lockable_kind(id)? {
            Kind::Interaction => self.unlock::<Interaction>(id, reason),
            Kind::MedicalInsight => self.unlock::<MedicalInsight>(id, reason),
            Kind::MedicalInformationRequest => self.unlock::<MedicalInformationRequest>(id, reason),
            kind => Err(StoreError::NotLockable { id: *id, kind: Some(kind) }),
        }
    }

    /// The kind of a stored record if it locks; [`StoreError::NotLockable`] otherwise. The
    /// typed dispatch in `submit_any` and `unlock_any` follows it; a kind that locks here
    /// without an arm there is refused, and `store::records::tests` fails.
    fn lockable_kind(&self, id: &DocumentId) -> Result<Kind, StoreError> {
        match self.kind_of(id)? {
            Some(kind) if kind.locks_on_submit() => Ok(kind),
            kind => Err(StoreError::NotLockable { id: *id, kind }),
        }
    }

    /// Sets or clears the legal hold on a document's envelope, as one change; nothing is written
    /// if it is already so. Only admins and medical-information staff may: others get
    /// [`StoreError::Model`] holding [`ModelError::NotPermitted`](crate::model::ModelError::NotPermitted).
    /// A recorded flag only: erasure does not consult it yet. It is the one change the relay takes
    /// for a submitted record ([`crate::model::check_locked_edit`]).
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use std::sync::Arc;

    use automerge::transaction::Transactable;

    use super::*;
    use crate::model::{
        Channel, DeliveryMethod, EngagementPlan, Fulfilment, KolProfile, RecordStatus, RequestOrigin, is_locked,
    };
    use crate::storage::MemoryKv;
    use crate::store::{ManualClock, StoreOptions};
    use crate::{Identity, Role};

    fn admin_store() -> DocStore {
        let who = Identity {
            tenant: "t".into(),
            user: "admin".into(),
            device: "desk".into(),
            role: Role::Admin,
            install: [1; 8],
        };
        let clock = Arc::new(ManualClock::new(1_700_000_000_000));
        DocStore::with_kv(Arc::new(MemoryKv::default()), who, clock, StoreOptions::default()).unwrap()
    }

    fn create_one(s: &DocStore, kind: Kind) -> DocumentId {
        let kol = DocumentId::from_bytes([2; 16]);
        match kind {
            Kind::KolProfile => s.create("x", &KolProfile::new("Dr. A", "Univ")),
            Kind::Interaction => s.create("x", &Interaction::new(&kol, 1, Channel::Phone)),
            Kind::MedicalInsight => s.create("x", &MedicalInsight::new("seen", &[kol])),
            Kind::MedicalInformationRequest => s.create(
                "x",
                &MedicalInformationRequest {
                    kol_id: kol.to_string(),
                    interaction_id: None,
                    question: "q".into(),
                    products: vec![],
                    origin: RequestOrigin::Unsolicited,
                    origin_detail: "d".into(),
                    recipient: "r".into(),
                    delivery_method: DeliveryMethod::Email,
                    answer: Default::default(),
                    signature: None,
                    fulfilment: Fulfilment::Open,
                    status: RecordStatus::Draft,
                    submission: None,
                    unlocks: vec![],
                },
            ),
            Kind::EngagementPlan => s.create("x", &EngagementPlan::new(&kol, "plan")),
        }
        .unwrap()
    }

    /// `submit_any` and `unlock_any` lock exactly the kinds `Kind::locks_on_submit` names.
    #[test]
    fn submit_any_and_unlock_any_lock_exactly_the_kinds_that_lock() {
        let s = admin_store();
        for kind in Kind::ALL {
            let id = create_one(&s, kind);
            if kind.locks_on_submit() {
                s.submit_any(&id).unwrap();
                assert!(is_locked(&s.load(&id).unwrap()), "{kind} submitted");
                s.unlock_any(&id, "typo").unwrap();
                assert!(!is_locked(&s.load(&id).unwrap()), "{kind} unlocked");
            } else {
                let before = s.load(&id).unwrap().get_heads();
                for result in [s.submit_any(&id), s.unlock_any(&id, "typo")] {
                    let err = result.unwrap_err();
                    assert!(matches!(err, StoreError::NotLockable { kind: Some(k), .. } if k == kind), "{kind}: {err}");
                }
                assert_eq!(s.load(&id).unwrap().get_heads(), before, "{kind} untouched");
            }
        }
    }

    #[test]
    fn submit_any_refuses_other_documents_and_names_missing_ones() {
        let s = admin_store();
        let foreign = DocumentId::from_bytes([9; 16]);
        let mut doc = automerge::Automerge::new();
        let mut tx = doc.transaction();
        tx.put(automerge::ROOT, "title", "not a liaison record").unwrap();
        tx.commit();
        s.merge_remote(&foreign, &doc.save()).unwrap();
        assert!(matches!(s.submit_any(&foreign), Err(StoreError::NotLockable { kind: None, .. })));
        assert!(matches!(s.unlock_any(&foreign, "r"), Err(StoreError::NotLockable { kind: None, .. })));

        let missing = DocumentId::from_bytes([8; 16]);
        assert!(matches!(s.submit_any(&missing), Err(StoreError::NotFound(id)) if id == missing));
        assert!(matches!(s.unlock_any(&missing, "r"), Err(StoreError::NotFound(id)) if id == missing));
    }
}
