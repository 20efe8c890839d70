//! Typed operations on one Automerge document: create, read, update, submit, unlock, history.

use automerge::transaction::{CommitOptions, Transactable};
use automerge::{Automerge, ChangeHash, ObjType, PatchAction, Prop, ReadDoc, ScalarValue, Value};
use autosurgeon::{hydrate_prop, reconcile_prop};

use super::{
    CreatedBy, EditViolation, Envelope, Kind, ModelError, Record, RecordStatus, SCHEMA_VERSION, Submission, Unlock,
};
use crate::id::{Identity, Role};

/// Retention and ownership chosen when a document is created.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewDocument {
    /// The team or territory that will own the document; the relay grants access per team.
    pub team: String,
    /// The retention rule's name, copied into [`Envelope::retention_class`].
    pub retention_class: String,
}

/// Creates a document holding `record`, as one change by `who` at `now`.
pub fn create_document<R: Record>(
    who: &Identity,
    new: &NewDocument,
    record: &R,
    now: i64,
) -> Result<Automerge, ModelError> {
    record.validate()?;
    if record.is_locked() {
        return Err(ModelError::Invalid { field: "status", reason: "create as a draft, then submit" });
    }
    let mut doc = Automerge::new().with_actor(who.actor_id());
    let envelope = Envelope {
        tenant: who.tenant.clone(),
        team: new.team.clone(),
        created_by: CreatedBy { user: who.user.clone(), device: who.device.clone() },
        created_at: now,
        retention_class: new.retention_class.clone(),
        legal_hold: false,
    };
    let mut tx = doc.transaction();
    tx.put(automerge::ROOT, "schema", SCHEMA_VERSION)?;
    tx.put(automerge::ROOT, "kind", R::KIND.as_str())?;
    reconcile_prop(&mut tx, automerge::ROOT, "envelope", &envelope)?;
    record_author(&mut tx, who)?;
    reconcile_prop(&mut tx, automerge::ROOT, "record", record)?;
    reads_back::<R>(&tx)?;
    tx.commit_with(CommitOptions::default().with_time(now).with_message(format!("create {}", R::KIND)));
    Ok(doc)
}

/// The kind of a document, checking that it is a liaison document this build can read.
pub fn document_kind(doc: &Automerge) -> Result<Kind, ModelError> {
    let schema = match doc.get(automerge::ROOT, "schema")? {
        Some((Value::Scalar(s), _)) => match s.as_ref() {
            ScalarValue::Uint(v) => *v,
            ScalarValue::Int(v) if *v >= 0 => *v as u64,
            _ => return Err(ModelError::NotLiaison("schema is not a number")),
        },
        _ => return Err(ModelError::NotLiaison("no schema")),
    };
    if schema > SCHEMA_VERSION {
        return Err(ModelError::UnsupportedSchema(schema));
    }
    match doc.get(automerge::ROOT, "kind")? {
        Some((Value::Scalar(s), _)) => match s.as_ref() {
            ScalarValue::Str(k) => Kind::parse(k).ok_or(ModelError::NotLiaison("unknown kind")),
            _ => Err(ModelError::NotLiaison("kind is not a string")),
        },
        _ => Err(ModelError::NotLiaison("no kind")),
    }
}

fn expect_kind<R: Record>(doc: &Automerge) -> Result<(), ModelError> {
    let found = document_kind(doc)?;
    if found != R::KIND {
        return Err(ModelError::WrongKind { expected: R::KIND, found: found.as_str() });
    }
    Ok(())
}

/// Reads the typed record.
pub fn read_record<R: Record>(doc: &Automerge) -> Result<R, ModelError> {
    expect_kind::<R>(doc)?;
    Ok(hydrate_prop(doc, automerge::ROOT, "record")?)
}

/// Reads the envelope.
pub fn read_envelope(doc: &Automerge) -> Result<Envelope, ModelError> {
    document_kind(doc)?;
    Ok(hydrate_prop(doc, automerge::ROOT, "envelope")?)
}

/// The envelope's tenant and team only: what the relay checks on every incoming change, without
/// hydrating the whole envelope.
pub fn read_owner(doc: &Automerge) -> Result<(String, String), ModelError> {
    document_kind(doc)?;
    let Some((Value::Object(ObjType::Map), envelope)) = doc.get(automerge::ROOT, "envelope")? else {
        return Err(ModelError::NotLiaison("no envelope"));
    };
    Ok((hydrate_prop(doc, &envelope, "tenant")?, hydrate_prop(doc, &envelope, "team")?))
}

/// Applies `edit` to the record as one change by `who`.
///
/// Refuses with [`ModelError::Locked`] if the record is submitted; returns the new change's hash,
/// or `None` when the edit changed nothing.
pub fn update_record<R: Record, T>(
    doc: &mut Automerge,
    who: &Identity,
    now: i64,
    edit: impl FnOnce(&mut R) -> T,
) -> Result<(Option<ChangeHash>, T), ModelError> {
    transact_record(doc, who, now, format!("update {}", R::KIND), |record: &mut R| {
        if record.is_locked() {
            return Err(ModelError::Locked);
        }
        let out = edit(record);
        if record.is_locked() {
            // Locking goes through `submit_record`, which records who and when.
            return Err(ModelError::Invalid { field: "status", reason: "submit through the submit call" });
        }
        Ok(out)
    })
}

/// Submits (locks) a record, recording who and when. Submitting twice is refused as locked.
pub fn submit_record<R: Record>(
    doc: &mut Automerge,
    who: &Identity,
    now: i64,
) -> Result<Option<ChangeHash>, ModelError> {
    let (hash, ()) = transact_record(doc, who, now, format!("submit {}", R::KIND), |record: &mut R| {
        if record.is_locked() {
            return Err(ModelError::Locked);
        }
        let Some(fields) = record.lock_fields() else {
            return Err(ModelError::Invalid { field: "kind", reason: "records of this kind do not lock" });
        };
        *fields.status = RecordStatus::Submitted;
        *fields.submission = Some(Submission { at: now, user: who.user.clone(), device: who.device.clone() });
        Ok(())
    })?;
    Ok(hash)
}

/// Unlocks a submitted record. Admins only; the unlock is kept in the record for audit.
pub fn unlock_record<R: Record>(
    doc: &mut Automerge,
    who: &Identity,
    now: i64,
    unlock_id: String,
    reason: &str,
) -> Result<Option<ChangeHash>, ModelError> {
    if who.role != Role::Admin {
        return Err(ModelError::NotPermitted("unlock a submitted record"));
    }
    let (hash, ()) = transact_record(doc, who, now, format!("unlock {}", R::KIND), |record: &mut R| {
        if !record.is_locked() {
            return Ok(());
        }
        if let Some(fields) = record.lock_fields() {
            *fields.status = RecordStatus::Draft;
            *fields.submission = None;
            fields.unlocks.push(Unlock { id: unlock_id, at: now, user: who.user.clone(), reason: reason.to_owned() });
        }
        Ok(())
    })?;
    Ok(hash)
}

/// Sets or clears the legal hold on a document's envelope.
pub fn set_legal_hold(
    doc: &mut Automerge,
    who: &Identity,
    now: i64,
    hold: bool,
) -> Result<Option<ChangeHash>, ModelError> {
    if !matches!(who.role, Role::Admin | Role::MedicalInformation) {
        return Err(ModelError::NotPermitted("change a legal hold"));
    }
    let mut envelope = read_envelope(doc)?;
    if envelope.legal_hold == hold {
        return Ok(None);
    }
    envelope.legal_hold = hold;
    doc.set_actor(who.actor_id());
    let mut tx = doc.transaction();
    record_author(&mut tx, who)?;
    reconcile_prop(&mut tx, automerge::ROOT, "envelope", &envelope)?;
    let (hash, _) = tx.commit_with(CommitOptions::default().with_time(now).with_message("legal hold"));
    Ok(hash)
}

/// Hydrates the record, lets `f` change it, and reconciles it back, all in one transaction.
///
/// The record is hydrated from the transaction, not the document: automerge 0.12 adds the
/// actor's own last change to a transaction's deps when it is no longer a head, so the
/// document's heads and the transaction's base heads can differ, and autosurgeon's `Text`
/// refuses (`StaleHeads`) when the heads it was hydrated at are not the ones it reconciles at.
fn transact_record<R: Record, T>(
    doc: &mut Automerge,
    who: &Identity,
    now: i64,
    message: String,
    f: impl FnOnce(&mut R) -> Result<T, ModelError>,
) -> Result<(Option<ChangeHash>, T), ModelError> {
    expect_kind::<R>(doc)?;
    doc.set_actor(who.actor_id());
    let mut tx = doc.transaction();
    let mut record: R = hydrate_prop(&tx, automerge::ROOT, "record")?;
    // An error drops `tx`, which rolls the transaction back.
    let out = f(&mut record)?;
    record.validate()?;
    reconcile_prop(&mut tx, automerge::ROOT, "record", &record)?;
    reads_back::<R>(&tx)?;
    if tx.pending_ops() == 0 {
        tx.rollback();
        return Ok((None, out));
    }
    record_author(&mut tx, who)?;
    let (hash, _) = tx.commit_with(CommitOptions::default().with_time(now).with_message(message));
    Ok((hash, out))
}

/// Refuses a write after which the record would not read back: one that set a value this build
/// does not know (an open enum's `Unknown`) where nothing was stored (a new record or list item).
/// Saving back an `Unknown` read from the document writes nothing and passes.
fn reads_back<R: Record>(tx: &automerge::transaction::Transaction<'_>) -> Result<(), ModelError> {
    match hydrate_prop::<_, R, _, _>(tx, automerge::ROOT, "record") {
        Ok(_) => Ok(()),
        Err(_) => Err(ModelError::Invalid { field: "record", reason: "a value this app does not know cannot be set" }),
    }
}

/// Records `who` in the document's `authors` map the first time its actor writes.
fn record_author(tx: &mut automerge::transaction::Transaction<'_>, who: &Identity) -> Result<(), ModelError> {
    let authors = match tx.get(automerge::ROOT, "authors")? {
        Some((Value::Object(ObjType::Map), id)) => id,
        _ => tx.put_object(automerge::ROOT, "authors", ObjType::Map)?,
    };
    let key = who.actor_id().to_hex_string();
    if tx.get(&authors, key.as_str())?.is_some() {
        return Ok(());
    }
    let entry = tx.put_object(&authors, key.as_str(), ObjType::Map)?;
    tx.put(&entry, "user", who.user.as_str())?;
    tx.put(&entry, "device", who.device.as_str())?;
    tx.put(&entry, "install", hex(&who.install))?;
    Ok(())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// One change in a document's history, with its author resolved through the `authors` map.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoryEntry {
    /// The change's hash.
    pub hash: ChangeHash,
    /// The change's actor id, as lowercase hex.
    pub actor: String,
    /// `None` for actors not in the `authors` map (for example a plain automerge-repo client).
    pub user: Option<String>,
    /// The device recorded for the actor in the `authors` map; `None` as for `user`.
    pub device: Option<String>,
    /// Whether the actor id is the one derived from the recorded (tenant, user, device, install).
    pub verified: bool,
    /// The change's timestamp, as the writing device claimed it. liaison writes milliseconds since
    /// the Unix epoch; other automerge clients may write other units.
    pub time: i64,
    /// The commit message, such as `create interaction`, `update kol_profile`, `submit medical_insight`,
    /// `unlock interaction` or `legal hold`.
    pub message: Option<String>,
    /// Paths under `record` (or `envelope/...`) this change touched, like `institution` or
    /// `activities/2/status`.
    pub fields: Vec<String>,
}

/// The full history of a document, oldest first (causal order).
pub fn history(doc: &Automerge) -> Result<Vec<HistoryEntry>, ModelError> {
    let tenant: Option<String> = read_envelope(doc).ok().map(|e| e.tenant);
    let mut out = Vec::new();
    for meta in causal_order(doc.get_changes_meta(&[])) {
        let actor_hex = meta.actor.to_hex_string();
        let (user, device, install) = author_of(doc, &actor_hex)?;
        let verified = match (&tenant, &user, &device, install) {
            (Some(t), Some(u), Some(d), Some(i)) => crate::id::actor_id_for(t, u, d, &i) == *meta.actor,
            _ => false,
        };
        let mut fields: Vec<String> =
            doc.diff(&meta.deps, &[meta.hash]).into_iter().filter_map(|p| field_path(&p)).collect();
        fields.sort();
        fields.dedup();
        out.push(HistoryEntry {
            hash: meta.hash,
            actor: actor_hex,
            user,
            device,
            verified,
            time: meta.timestamp,
            message: meta.message.map(|m| m.into_owned()),
            fields,
        });
    }
    Ok(out)
}

/// Changes in a causal order that is the same on every replica: a change comes after its
/// deps; among changes that are ready together, the earlier timestamp (then the smaller hash)
/// goes first.
fn causal_order(metas: Vec<automerge::ChangeMetadata<'_>>) -> Vec<automerge::ChangeMetadata<'_>> {
    use std::cmp::Reverse;
    use std::collections::{BinaryHeap, HashMap};
    let index: HashMap<ChangeHash, usize> = metas.iter().enumerate().map(|(i, m)| (m.hash, i)).collect();
    let mut waiting: Vec<usize> =
        metas.iter().map(|m| m.deps.iter().filter(|d| index.contains_key(d)).count()).collect();
    let mut children: Vec<Vec<usize>> = vec![Vec::new(); metas.len()];
    for (i, m) in metas.iter().enumerate() {
        for d in &m.deps {
            if let Some(&p) = index.get(d) {
                children[p].push(i);
            }
        }
    }
    let mut ready: BinaryHeap<Reverse<(i64, ChangeHash, usize)>> = BinaryHeap::new();
    for (i, m) in metas.iter().enumerate() {
        if waiting[i] == 0 {
            ready.push(Reverse((m.timestamp, m.hash, i)));
        }
    }
    let mut order = Vec::with_capacity(metas.len());
    while let Some(Reverse((_, _, i))) = ready.pop() {
        order.push(i);
        for &c in &children[i] {
            waiting[c] -= 1;
            if waiting[c] == 0 {
                ready.push(Reverse((metas[c].timestamp, metas[c].hash, c)));
            }
        }
    }
    let mut slots: Vec<Option<automerge::ChangeMetadata<'_>>> = metas.into_iter().map(Some).collect();
    order.into_iter().filter_map(|i| slots[i].take()).collect()
}

/// The changes that touched `field` (a path prefix such as `institution` or `notes`).
pub fn field_history(doc: &Automerge, field: &str) -> Result<Vec<HistoryEntry>, ModelError> {
    Ok(history(doc)?
        .into_iter()
        .filter(|e| e.fields.iter().any(|f| f == field || f.starts_with(&format!("{field}/"))))
        .collect())
}

type AuthorFields = (Option<String>, Option<String>, Option<[u8; 8]>);

fn author_of(doc: &Automerge, actor_hex: &str) -> Result<AuthorFields, ModelError> {
    let Some((Value::Object(ObjType::Map), authors)) = doc.get(automerge::ROOT, "authors")? else {
        return Ok((None, None, None));
    };
    let Some((Value::Object(ObjType::Map), entry)) = doc.get(&authors, actor_hex)? else {
        return Ok((None, None, None));
    };
    let get_str = |k: &str| -> Result<Option<String>, ModelError> {
        Ok(match doc.get(&entry, k)? {
            Some((Value::Scalar(s), _)) => s.as_str().map(str::to_owned),
            _ => None,
        })
    };
    let install = get_str("install")?.and_then(|h| parse_hex8(&h));
    Ok((get_str("user")?, get_str("device")?, install))
}

fn parse_hex8(h: &str) -> Option<[u8; 8]> {
    if h.len() != 16 || !h.is_ascii() {
        return None;
    }
    let mut out = [0u8; 8];
    for (i, b) in out.iter_mut().enumerate() {
        *b = u8::from_str_radix(&h[i * 2..i * 2 + 2], 16).ok()?;
    }
    Some(out)
}

fn field_path(p: &automerge::Patch) -> Option<String> {
    let mut parts: Vec<String> = p
        .path
        .iter()
        .map(|(_, prop)| match prop {
            Prop::Map(k) => k.clone(),
            Prop::Seq(i) => i.to_string(),
        })
        .collect();
    // Text splices are reported at the text object; everything else names the key it changed.
    match &p.action {
        PatchAction::PutMap { key, .. } | PatchAction::DeleteMap { key } => parts.push(key.clone()),
        PatchAction::PutSeq { index, .. } | PatchAction::Insert { index, .. } => parts.push(index.to_string()),
        PatchAction::DeleteSeq { index, .. } => parts.push(index.to_string()),
        PatchAction::Increment { prop, .. } | PatchAction::Conflict { prop } => parts.push(match prop {
            Prop::Map(k) => k.clone(),
            Prop::Seq(i) => i.to_string(),
        }),
        _ => {}
    }
    match parts.first().map(String::as_str) {
        Some("record") => Some(parts[1..].join("/")).filter(|s| !s.is_empty()),
        Some("envelope") => Some(parts.join("/")),
        _ => None,
    }
}

/// The lock rule: a submitted record refuses every further change from a device until an
/// admin unlocks it on the relay. (Changes that submit a draft are judged on the draft.)
pub fn check_unlocked(before: &Automerge) -> Result<(), EditViolation> {
    if is_locked(before) { Err(EditViolation::Locked) } else { Ok(()) }
}

/// Whether a document holds a submitted (locked) record, read without knowing its type: the
/// relay checks this on every incoming change to a lockable document.
pub fn is_locked(doc: &Automerge) -> bool {
    let Ok(kind) = document_kind(doc) else { return false };
    if !kind.locks_on_submit() {
        return false;
    }
    let Ok(Some((Value::Object(ObjType::Map), record))) = doc.get(automerge::ROOT, "record") else { return false };
    matches!(doc.get(&record, "status"), Ok(Some((Value::Scalar(s), _))) if s.as_str() == Some("submitted"))
}
