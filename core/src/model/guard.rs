//! The rules a document's state must keep when changes arrive from the network.
//!
//! A device is hostile until checked: the relay judges the document *exactly as it will be
//! stored* (before and after the changes it will apply) against the authenticated writer:
//!
//! - every change is made under one of the writer's own actor ids ([`crate::id::actor_belongs_to`]);
//! - a new document is a whole liaison record (envelope and typed record hydrate) created by the
//!   writer, in the writer's tenant, as a draft or submitted by the writer;
//! - the envelope never changes after creation, except `legal_hold`, and that only by an admin
//!   or medical-information staff;
//! - the typed record still hydrates and validates after the changes;
//! - `authors` entries are added only for the writer's own actors, naming the writer, and never
//!   rewritten, so history names who really wrote each change;
//! - `submission` is set only by a submit naming the writer; `unlocks` never change from a device
//!   (unlocks happen on the relay, through the admin API).
//!
//! Which roles may write which documents at all is the relay's policy, not this module's.

use std::collections::BTreeMap;

use automerge::{Automerge, Change, ChangeHash, ObjType, ReadDoc, Value};

use super::{
    EngagementPlan, Envelope, Interaction, Kind, KolProfile, MedicalInformationRequest, MedicalInsight, ModelError,
    Record, RecordStatus, Submission, Unlock, document_kind, read_envelope, read_record,
};
use crate::id::{ACTOR_PRINCIPAL_BYTES, Role, actor_belongs_to, actor_principal};

/// Who sent changes, as the relay authenticated them.
#[derive(Debug, Clone, Copy)]
pub struct RemoteWriter<'a> {
    /// The writer's tenant.
    pub tenant: &'a str,
    /// The authenticated user.
    pub user: &'a str,
    /// The device the changes came from.
    pub device: &'a str,
    /// The user's role, which decides who may change a legal hold.
    pub role: Role,
}

impl RemoteWriter<'_> {
    fn principal(&self) -> [u8; ACTOR_PRINCIPAL_BYTES] {
        actor_principal(self.tenant, self.user, self.device)
    }

    fn may_change_legal_hold(&self) -> bool {
        matches!(self.role, Role::Admin | Role::MedicalInformation)
    }
}

/// Why changes from a device were refused. Codes are stable and sent to the device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum EditViolation {
    /// A change was made under an actor id that is not one of the writer's (code `foreign-actor`).
    #[error("changes must be made under your own actor id (see the actor scheme)")]
    ForeignActor,
    /// After the changes the document has no valid kind, envelope or record, or the record fails
    /// validation (code `not-a-record`).
    #[error("the document is not a complete liaison record after these changes")]
    NotARecord,
    /// The changes move the document to another tenant or team (code `owner-change`).
    #[error("a document cannot move to another tenant or team")]
    OwnerChange,
    /// The changes alter the kind, creator, creation time or retention class (code `envelope-change`).
    #[error("the envelope (kind, creator, creation time, retention) cannot change")]
    EnvelopeChange,
    /// The legal hold changed, or a document was created under hold, by someone other than an admin
    /// or medical-information staff (code `legal-hold`).
    #[error("only an admin or medical information may change a legal hold")]
    LegalHold,
    /// A new document names another creator or tenant than the writer's (code `bad-creation`).
    #[error("a new record must be created by you, in your tenant")]
    BadCreation,
    /// An `authors` entry was added for another principal's actor, names someone other than the
    /// writer, or was changed or removed (code `forged-author`).
    #[error("authors entries may only name you, for your own actor ids, and never change")]
    ForgedAuthor,
    /// `unlocks` changed, or `status` and `submission` changed other than by the writer submitting a
    /// draft (code `forged-submission`).
    #[error("submission and unlock entries change only through submit (by you) and an admin's unlock")]
    ForgedSubmission,
    /// A change reached a submitted record (code `locked`).
    #[error("the record is submitted and locked; an admin must unlock it")]
    Locked,
}

impl EditViolation {
    /// The stable machine-readable code sent in refusal notices.
    pub const fn code(self) -> &'static str {
        match self {
            Self::ForeignActor => "foreign-actor",
            Self::NotARecord => "not-a-record",
            Self::OwnerChange => "owner-change",
            Self::EnvelopeChange => "envelope-change",
            Self::LegalHold => "legal-hold",
            Self::BadCreation => "bad-creation",
            Self::ForgedAuthor => "forged-author",
            Self::ForgedSubmission => "forged-submission",
            Self::Locked => "locked",
        }
    }
}

/// The changes among `new` not made under one of the writer's actor ids.
pub fn foreign_actor_changes(new: &[Change], writer: &RemoteWriter<'_>) -> Vec<ChangeHash> {
    let principal = writer.principal();
    new.iter().filter(|c| !actor_belongs_to(c.actor_id(), &principal)).map(Change::hash).collect()
}

/// Checks a document that did not exist before the writer's changes.
pub fn check_creation(after: &Automerge, writer: &RemoteWriter<'_>) -> Result<Kind, EditViolation> {
    let (kind, envelope, lock) = whole_record(after)?;
    if envelope.tenant != writer.tenant
        || envelope.created_by.user != writer.user
        || envelope.created_by.device != writer.device
    {
        return Err(EditViolation::BadCreation);
    }
    if envelope.legal_hold && !writer.may_change_legal_hold() {
        return Err(EditViolation::LegalHold);
    }
    // Created as a draft, or created and submitted offline before the first sync (the
    // submission then names the writer, as `submit` records it); never with unlocks.
    if let Some(lock) = lock {
        let draft = LockState { status: RecordStatus::Draft, submission: None, unlocks: Vec::new() };
        check_lock_transition(&draft, &lock, writer)?;
    }
    check_authors(&BTreeMap::new(), &authors(after), writer)?;
    Ok(kind)
}

/// Checks a stored document after the writer's changes against the document before them.
pub fn check_update(before: &Automerge, after: &Automerge, writer: &RemoteWriter<'_>) -> Result<(), EditViolation> {
    let (old_kind, old_envelope, old_lock) = whole_record(before).map_err(|_| EditViolation::NotARecord)?;
    let (kind, envelope, lock) = whole_record(after)?;
    if kind != old_kind {
        return Err(EditViolation::EnvelopeChange);
    }
    if envelope.tenant != old_envelope.tenant || envelope.team != old_envelope.team {
        return Err(EditViolation::OwnerChange);
    }
    if envelope.created_by != old_envelope.created_by
        || envelope.created_at != old_envelope.created_at
        || envelope.retention_class != old_envelope.retention_class
    {
        return Err(EditViolation::EnvelopeChange);
    }
    if envelope.legal_hold != old_envelope.legal_hold && !writer.may_change_legal_hold() {
        return Err(EditViolation::LegalHold);
    }
    if !envelope_untouched(before, after) {
        return Err(EditViolation::EnvelopeChange);
    }
    if let (Some(old), Some(new)) = (&old_lock, &lock) {
        check_lock_transition(old, new, writer)?;
    }
    check_authors(&authors(before), &authors(after), writer)
}

/// The lock rule as the relay applies it: a submitted record refuses every change from a device
/// ([`EditViolation::Locked`]) but one: a legal hold set or lifted with nothing else changed.
/// Litigation holds submitted records above all; whether the writer may change a hold at all
/// is [`check_update`]'s rule, which still runs.
pub fn check_locked_edit(before: &Automerge, after: &Automerge) -> Result<(), EditViolation> {
    if !super::is_locked(before) || only_the_legal_hold_changed(before, after) {
        Ok(())
    } else {
        Err(EditViolation::Locked)
    }
}

/// Same kind, record, lock state and envelope but for `legal_hold`.
fn only_the_legal_hold_changed(before: &Automerge, after: &Automerge) -> bool {
    fn same<R: Record + PartialEq>(before: &Automerge, after: &Automerge) -> bool {
        matches!((read_record::<R>(before), read_record::<R>(after)), (Ok(b), Ok(a)) if a == b)
    }
    let (Ok((kind, old_envelope, old_lock)), Ok((new_kind, envelope, lock))) =
        (whole_record(before), whole_record(after))
    else {
        return false;
    };
    let same_record = match kind {
        Kind::KolProfile => same::<KolProfile>(before, after),
        Kind::Interaction => same::<Interaction>(before, after),
        Kind::MedicalInsight => same::<MedicalInsight>(before, after),
        Kind::MedicalInformationRequest => same::<MedicalInformationRequest>(before, after),
        Kind::EngagementPlan => same::<EngagementPlan>(before, after),
    };
    kind == new_kind
        && old_lock == lock
        && same_record
        && Envelope { legal_hold: old_envelope.legal_hold, ..envelope } == old_envelope
        && touches_only_the_legal_hold(before, after)
}

/// Whether the changes from `before` to `after` touch nothing but the envelope's `legal_hold`
/// (and the `authors` entry of a new writer), read from the changes themselves: a typed
/// comparison cannot see a field this build does not know, or one open enum value a newer app
/// wrote replaced by another (both read as `Unknown`).
fn touches_only_the_legal_hold(before: &Automerge, after: &Automerge) -> bool {
    use automerge::{PatchAction, Prop};
    after.diff(&before.get_heads(), &after.get_heads()).iter().all(|p| {
        let root = p.path.first().map(|(_, prop)| prop);
        let key = match &p.action {
            PatchAction::PutMap { key, .. } | PatchAction::DeleteMap { key } => Some(key.as_str()),
            PatchAction::Conflict { prop: Prop::Map(key) } => Some(key.as_str()),
            _ => None,
        };
        match root {
            Some(Prop::Map(top)) if top == "authors" => true,
            Some(Prop::Map(top)) if top == "envelope" => p.path.len() == 1 && key == Some("legal_hold"),
            None => key == Some("authors"),
            _ => false,
        }
    })
}

/// The envelope as stored, key by key and with its conflicts, is the same object holding the same
/// operations before and after, but for `legal_hold` (judged on its typed value with the
/// writer's rights). The typed comparison cannot see a key this build does not know, added
/// under the envelope or a map within it, nor a conflicting value that loses to the old one.
/// Cheap: the envelope is a dozen keys, compared by operation id, not by a diff.
fn envelope_untouched(before: &Automerge, after: &Automerge) -> bool {
    let root = automerge::ROOT;
    let (Ok(b), Ok(a)) = (before.get_all(&root, "envelope"), after.get_all(&root, "envelope")) else { return false };
    match (b.as_slice(), a.as_slice()) {
        ([(Value::Object(ObjType::Map), b)], [(Value::Object(ObjType::Map), a)]) if a == b => {
            same_map(before, after, a, Some("legal_hold"))
        }
        _ => false,
    }
}

/// Whether map `obj` holds the same operations in `before` and `after`, recursively (`skip`: a
/// key left out).
fn same_map(before: &Automerge, after: &Automerge, obj: &automerge::ObjId, skip: Option<&str>) -> bool {
    let keys = |doc: &Automerge| doc.keys(obj).filter(|k| Some(k.as_str()) != skip).collect::<Vec<_>>();
    let names = keys(after);
    names == keys(before)
        && names
            .iter()
            .all(|key| same_values(before, after, before.get_all(obj, key.as_str()), after.get_all(obj, key.as_str())))
}

/// Whether the values (conflicts included) at one key or index are the same operations, and
/// the objects among them hold the same operations in turn.
fn same_values(
    before: &Automerge,
    after: &Automerge,
    b: Result<Vec<(Value<'_>, automerge::ObjId)>, automerge::AutomergeError>,
    a: Result<Vec<(Value<'_>, automerge::ObjId)>, automerge::AutomergeError>,
) -> bool {
    let (Ok(b), Ok(a)) = (b, a) else { return false };
    a.len() == b.len()
        && a.iter().zip(&b).all(|((va, id), (vb, idb))| {
            id == idb
                && va == vb
                && match va {
                    Value::Object(ObjType::Map | ObjType::Table) => same_map(before, after, id, None),
                    Value::Object(ObjType::List) => {
                        let n = after.length(id);
                        n == before.length(id)
                            && (0..n).all(|i| same_values(before, after, before.get_all(id, i), after.get_all(id, i)))
                    }
                    Value::Object(ObjType::Text) => before.text(id).ok() == after.text(id).ok(),
                    Value::Scalar(_) => true,
                }
        })
}

/// The submit rule: `unlocks` never change from a device; `submission` and `status` change
/// only together, from a draft to a submission naming the writer.
fn check_lock_transition(old: &LockState, new: &LockState, writer: &RemoteWriter<'_>) -> Result<(), EditViolation> {
    if new.unlocks != old.unlocks {
        return Err(EditViolation::ForgedSubmission);
    }
    if new.status == old.status && new.submission == old.submission {
        return Ok(());
    }
    let submits = old.status == RecordStatus::Draft
        && old.submission.is_none()
        && new.status == RecordStatus::Submitted
        && new.submission.as_ref().is_some_and(|s| s.user == writer.user && s.device == writer.device);
    if submits { Ok(()) } else { Err(EditViolation::ForgedSubmission) }
}

#[derive(Debug, PartialEq)]
struct LockState {
    status: RecordStatus,
    submission: Option<Submission>,
    unlocks: Vec<Unlock>,
}

/// The kind, envelope and lock state of a document whose record hydrates and validates.
fn whole_record(doc: &Automerge) -> Result<(Kind, Envelope, Option<LockState>), EditViolation> {
    fn lock_state<R: Record>(doc: &Automerge) -> Result<Option<LockState>, ModelError> {
        let mut record: R = read_record(doc)?;
        record.validate()?;
        Ok(record.lock_fields().map(|f| LockState {
            status: *f.status,
            submission: f.submission.clone(),
            unlocks: f.unlocks.clone(),
        }))
    }
    let kind = document_kind(doc).map_err(|_| EditViolation::NotARecord)?;
    let envelope = read_envelope(doc).map_err(|_| EditViolation::NotARecord)?;
    let lock = match kind {
        Kind::KolProfile => lock_state::<KolProfile>(doc),
        Kind::Interaction => lock_state::<Interaction>(doc),
        Kind::MedicalInsight => lock_state::<MedicalInsight>(doc),
        Kind::MedicalInformationRequest => lock_state::<MedicalInformationRequest>(doc),
        Kind::EngagementPlan => lock_state::<EngagementPlan>(doc),
    }
    .map_err(|_| EditViolation::NotARecord)?;
    Ok((kind, envelope, lock))
}

/// One `authors` entry as stored: the actor's hex id and every field, as text.
type Authors = BTreeMap<String, BTreeMap<String, Option<String>>>;

fn authors(doc: &Automerge) -> Authors {
    let mut out = Authors::new();
    let Ok(Some((Value::Object(ObjType::Map), map))) = doc.get(automerge::ROOT, "authors") else { return out };
    for key in doc.keys(&map) {
        let mut fields = BTreeMap::new();
        if let Ok(Some((Value::Object(ObjType::Map), entry))) = doc.get(&map, key.as_str()) {
            for field in doc.keys(&entry) {
                let value = match doc.get(&entry, field.as_str()) {
                    Ok(Some((Value::Scalar(s), _))) => s.as_str().map(str::to_owned),
                    _ => None,
                };
                fields.insert(field, value);
            }
        } else {
            // Not a map: recorded as a marker field no honest writer produces.
            fields.insert(String::new(), None);
        }
        out.insert(key, fields);
    }
    out
}

/// Entries that existed stay as they were; new ones are keyed by one of the writer's actor ids
/// and name the writer.
fn check_authors(before: &Authors, after: &Authors, writer: &RemoteWriter<'_>) -> Result<(), EditViolation> {
    let principal = writer.principal();
    for (key, fields) in after {
        if let Some(old) = before.get(key) {
            if old != fields {
                return Err(EditViolation::ForgedAuthor);
            }
            continue;
        }
        let own_actor = automerge::ActorId::try_from(key.as_str()).is_ok_and(|a| actor_belongs_to(&a, &principal));
        let names_writer = fields.get("user").is_some_and(|u| u.as_deref() == Some(writer.user))
            && fields.get("device").is_some_and(|d| d.as_deref() == Some(writer.device));
        if !own_actor || !names_writer {
            return Err(EditViolation::ForgedAuthor);
        }
    }
    if before.keys().any(|k| !after.contains_key(k)) {
        return Err(EditViolation::ForgedAuthor);
    }
    Ok(())
}
