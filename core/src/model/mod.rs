//! The KOL record model: typed records stored as Automerge documents.
//!
//! Every document has the same root layout (guarded by a fixture test):
//!
//! ```text
//! { "schema": 1, "kind": "interaction",
//!   "envelope": { tenant, team, created_by: { user, device }, created_at, retention_class, legal_hold },
//!   "authors": { "<actor hex>": { user, device, install } },
//!   "record": { ...the typed record... } }
//! ```
//!
//! This module does no IO: it turns records and edits into Automerge changes and back.

mod document;
mod guard;
mod open_enum;
mod records;
mod version;

pub use document::*;
pub use guard::*;
pub use records::*;
pub use version::{Version, update_record_at};

use autosurgeon::{Hydrate, Reconcile};

use crate::DocumentId;

/// Version of the document layout this build writes. Older layouts are migrated on read;
/// newer ones are refused rather than misread.
pub const SCHEMA_VERSION: u64 = 1;

/// The five kinds of liaison document.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    /// A [`KolProfile`]: one per healthcare professional.
    KolProfile,
    /// An [`Interaction`]: a visit, call or meeting with a KOL.
    Interaction,
    /// A [`MedicalInsight`].
    MedicalInsight,
    /// A [`MedicalInformationRequest`] (MIR).
    MedicalInformationRequest,
    /// An [`EngagementPlan`], co-edited by the team.
    EngagementPlan,
}

impl Kind {
    /// Every kind, in declaration order.
    pub const ALL: [Kind; 5] = [
        Kind::KolProfile,
        Kind::Interaction,
        Kind::MedicalInsight,
        Kind::MedicalInformationRequest,
        Kind::EngagementPlan,
    ];

    /// The name stored in a document's root `kind` field, for example `"medical_insight"`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Kind::KolProfile => "kol_profile",
            Kind::Interaction => "interaction",
            Kind::MedicalInsight => "medical_insight",
            Kind::MedicalInformationRequest => "medical_information_request",
            Kind::EngagementPlan => "engagement_plan",
        }
    }

    /// The kind named by a root `kind` field; `None` for a name this build does not know.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == s)
    }

    /// Whether records of this kind lock on submission.
    pub const fn locks_on_submit(self) -> bool {
        matches!(self, Kind::Interaction | Kind::MedicalInsight | Kind::MedicalInformationRequest)
    }
}

impl std::fmt::Display for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The user and device that created a document.
#[derive(Debug, Clone, PartialEq, Eq, Hydrate, Reconcile)]
pub struct CreatedBy {
    /// The creating user, as the relay names them.
    pub user: String,
    /// The device the document was created on.
    pub device: String,
}

/// Carried by every document: who owns it, who made it, how long it is kept.
#[derive(Debug, Clone, PartialEq, Eq, Hydrate, Reconcile)]
pub struct Envelope {
    /// The pharma client whose data this is.
    pub tenant: String,
    /// Team or territory; the relay grants access per team.
    pub team: String,
    /// Who created it; fixed at creation.
    pub created_by: CreatedBy,
    /// When it was created, in milliseconds since the Unix epoch; fixed at creation.
    pub created_at: i64,
    /// The retention rule that applies, by name: the store writes `"mir"` for medical information
    /// requests and `"standard"` for everything else. Fixed at creation; nothing in liaison enforces
    /// retention yet.
    pub retention_class: String,
    /// Set while the document is under legal hold. Only admins and medical-information staff may
    /// change it ([`set_legal_hold`]). A recorded flag only: neither core nor the relay checks it
    /// yet (erasure does not consult it).
    pub legal_hold: bool,
}

/// The locking fields shared by submittable records.
#[derive(Debug)]
pub struct LockFields<'a> {
    /// Draft or submitted.
    pub status: &'a mut RecordStatus,
    /// Who submitted and when; `Some` while submitted.
    pub submission: &'a mut Option<Submission>,
    /// The record's audit trail of admin unlocks.
    pub unlocks: &'a mut Vec<Unlock>,
}

/// A typed record that lives in the `record` part of a document.
pub trait Record: Hydrate + Reconcile + Clone + std::fmt::Debug {
    /// The document kind this record type is stored as.
    const KIND: Kind;

    /// The KOLs this record belongs to, for the store's indexes.
    fn kol_refs(&self) -> Vec<String>;

    /// The locking fields, for kinds that lock on submission.
    fn lock_fields(&mut self) -> Option<LockFields<'_>> {
        None
    }

    /// Whether the record is submitted and so refuses edits.
    fn is_locked(&self) -> bool;

    /// Checks invariants before a write. The error names the field, never its value.
    fn validate(&self) -> Result<(), ModelError> {
        for r in self.kol_refs() {
            check_id("kol_id", &r)?;
        }
        Ok(())
    }
}

fn check_id(field: &'static str, s: &str) -> Result<(), ModelError> {
    s.parse::<DocumentId>().map(|_| ()).map_err(|_| ModelError::Invalid { field, reason: "not a document id" })
}

fn check_submission(status: RecordStatus, sub: &Option<Submission>) -> Result<(), ModelError> {
    if status == RecordStatus::Submitted && sub.is_none() {
        return Err(ModelError::Invalid {
            field: "status",
            reason: "submit through the submit call, which records who and when",
        });
    }
    Ok(())
}

impl Record for KolProfile {
    const KIND: Kind = Kind::KolProfile;
    fn kol_refs(&self) -> Vec<String> {
        Vec::new()
    }
    fn is_locked(&self) -> bool {
        false
    }
    fn validate(&self) -> Result<(), ModelError> {
        if self.name.trim().is_empty() {
            return Err(ModelError::Invalid { field: "name", reason: "must not be empty" });
        }
        if let Some(m) = &self.merged_into {
            check_id("merged_into", m)?;
        }
        Ok(())
    }
}

macro_rules! lockable {
    ($ty:ty, $kind:expr, |$s:ident| $refs:expr) => {
        impl Record for $ty {
            const KIND: Kind = $kind;
            fn kol_refs(&self) -> Vec<String> {
                let $s = self;
                $refs
            }
            fn lock_fields(&mut self) -> Option<LockFields<'_>> {
                Some(LockFields {
                    status: &mut self.status,
                    submission: &mut self.submission,
                    unlocks: &mut self.unlocks,
                })
            }
            fn is_locked(&self) -> bool {
                self.status == RecordStatus::Submitted
            }
            fn validate(&self) -> Result<(), ModelError> {
                for r in self.kol_refs() {
                    check_id("kol_id", &r)?;
                }
                check_submission(self.status, &self.submission)
            }
        }
    };
}

lockable!(Interaction, Kind::Interaction, |s| vec![s.kol_id.clone()]);
lockable!(MedicalInsight, Kind::MedicalInsight, |s| s.kol_ids.clone());
lockable!(MedicalInformationRequest, Kind::MedicalInformationRequest, |s| vec![s.kol_id.clone()]);

impl Record for EngagementPlan {
    const KIND: Kind = Kind::EngagementPlan;
    fn kol_refs(&self) -> Vec<String> {
        vec![self.kol_id.clone()]
    }
    fn is_locked(&self) -> bool {
        false
    }
}

/// Errors of the model layer. Messages name fields and kinds, never values.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// An edit, or a second submit, reached a submitted record.
    #[error("the record is submitted and locked; an admin must unlock it before it can change")]
    Locked,
    /// A save named a version (heads) this document does not have: read it again.
    #[error("the version this edit was based on is not in this document; read the record again")]
    UnknownVersion,
    /// The caller's role may not do this; the text names the action (for example "unlock a submitted
    /// record").
    #[error("only an admin may {0}")]
    NotPermitted(&'static str),
    /// A record or edit breaks an invariant: a reference that is not a document id, an empty
    /// name, a status set outside submit, or a submit of a kind that does not lock.
    #[error("{field} is invalid: {reason}")]
    Invalid {
        /// The field at fault (never its value).
        field: &'static str,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The document is of another kind than the record type asked for.
    #[error("expected a {expected} document, found {found}")]
    WrongKind {
        /// The kind of the record type asked for.
        expected: Kind,
        /// The kind the document holds.
        found: &'static str,
    },
    /// The document lacks liaison's root layout (`schema`, `kind`, `envelope`); the text says what is
    /// missing.
    #[error("not a liaison document: {0}")]
    NotLiaison(&'static str),
    /// The document was written by a newer build, with this schema version.
    #[error("document schema {0} is newer than this build understands ({SCHEMA_VERSION})")]
    UnsupportedSchema(u64),
    // The three below are boxed: they are large and rare, and every Result in the store carries them.
    /// The document's record does not have the shape of the record type.
    #[error("document does not match the record type")]
    Hydrate(#[source] Box<autosurgeon::HydrateError>),
    /// autosurgeon could not write the record into the document.
    #[error("could not write the record into the document")]
    Reconcile(#[source] Box<autosurgeon::ReconcileError>),
    /// An Automerge operation failed.
    #[error("automerge: {0}")]
    Automerge(#[source] Box<automerge::AutomergeError>),
}

impl From<autosurgeon::HydrateError> for ModelError {
    fn from(e: autosurgeon::HydrateError) -> Self {
        Self::Hydrate(Box::new(e))
    }
}

impl From<autosurgeon::ReconcileError> for ModelError {
    fn from(e: autosurgeon::ReconcileError) -> Self {
        Self::Reconcile(Box::new(e))
    }
}

impl From<automerge::AutomergeError> for ModelError {
    fn from(e: automerge::AutomergeError) -> Self {
        Self::Automerge(Box::new(e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::id::{Identity, Role};

    fn who() -> Identity {
        Identity { tenant: "t".into(), user: "u".into(), device: "d".into(), role: Role::Msl, install: [1; 8] }
    }

    #[test]
    fn text_splices_after_multibyte_characters_land_where_asked() {
        let kol = DocumentId::from_bytes([3; 16]);
        let plan = EngagementPlan { notes: "次回：学会で面談".into(), ..EngagementPlan::new(&kol, "p") };
        let new = NewDocument { team: "x".into(), retention_class: "standard".into() };
        let mut doc = create_document(&who(), &new, &plan, 0).unwrap();
        update_record(&mut doc, &who(), 1, |p: &mut EngagementPlan| {
            let at = p.notes.as_str().find('学').unwrap();
            p.notes.splice(at, 0, "日本癌治療");
        })
        .unwrap();
        let p: EngagementPlan = read_record(&doc).unwrap();
        assert_eq!(p.notes.as_str(), "次回：日本癌治療学会で面談");
    }
}
