//! Erasure (GDPR, APPI) and the purge at a contract's end, and the quarantine they clear.
//!
//! Refused changes are kept in quarantine (`q/DOC/HASH`), indexed by the tenant of the device
//! that sent them (`qt/TENANT/DOC/HASH`), so a purge finds every entry a tenant's devices left,
//! also for documents that were never stored. Erasing a document writes its tombstone, deletes
//! its chunks, index entries and quarantine in **one atomic batch**: after a crash the document
//! is either erased or untouched, never half.

use liaison_core::storage::Batch;
use liaison_core::{DocStore, DocumentId};

use crate::auth::AuthStore;
use crate::error::MaintenanceError;
use crate::keys;
use crate::policy::{Owner, encode_tombstone, tombstone_key};

/// Where a refused change is kept.
pub fn quarantine_key(doc: &DocumentId, hash: &[u8]) -> Vec<u8> {
    keys::quarantine(doc, hash)
}

/// The index entry naming the tenant whose device sent a quarantined change (tenant names are
/// checked names, without `/`).
pub fn quarantine_index_key(tenant: &str, doc: &DocumentId, hash: &[u8]) -> Vec<u8> {
    keys::quarantine_index(tenant, doc, hash)
}

/// Tenant, document and change hash of a quarantine index key.
fn parse_index(key: &[u8]) -> Option<(&[u8], DocumentId, &[u8])> {
    let rest = key.strip_prefix(keys::QUARANTINE_INDEX)?;
    let slash = rest.iter().position(|b| *b == b'/')?;
    let (tenant, rest) = (&rest[..slash], &rest[slash + 1..]);
    let doc: [u8; 16] = rest.get(..16)?.try_into().ok()?;
    let hash = rest.get(16..)?.strip_prefix(b"/")?;
    Some((tenant, DocumentId::from_bytes(doc), hash))
}

/// The writes that quarantine one refused change sent by a device of `tenant`.
pub fn quarantine(batch: &mut Batch, tenant: &str, doc: &DocumentId, hash: &[u8], raw: Vec<u8>) {
    batch.put(quarantine_key(doc, hash), raw);
    batch.put(quarantine_index_key(tenant, doc, hash), Vec::new());
}

/// Erases a document: tombstone (keeping whose it was), document and quarantine, atomically.
pub fn erase_stored(store: &DocStore, doc: &DocumentId, now_ms: i64) -> Result<(), MaintenanceError> {
    let kv = store.kv();
    let mut batch = Batch::new();
    // An existing tombstone keeps its owner; otherwise the owner comes from the stored meta.
    if kv.get(&tombstone_key(doc))?.is_none() {
        let owner = store.owner_of(doc)?.map(|(tenant, team, kind)| Owner { tenant, team, kind });
        batch.put(tombstone_key(doc), encode_tombstone(now_ms, owner.as_ref()));
    }
    let quarantined = kv.scan_keys(&keys::quarantine_of(doc))?;
    if !quarantined.is_empty() {
        // Their index entries, under whichever tenant sent them.
        for key in kv.scan_keys(keys::QUARANTINE_INDEX)? {
            if parse_index(&key).is_some_and(|(_, d, _)| d == *doc) {
                batch.delete(key);
            }
        }
    }
    for k in quarantined {
        batch.delete(k);
    }
    store.delete_with(doc, batch)?;
    Ok(kv.flush()?)
}

/// Every document whose stored envelope names `tenant`.
pub fn tenant_documents(store: &DocStore, tenant: &str) -> Result<Vec<DocumentId>, MaintenanceError> {
    let mut out = Vec::new();
    for id in store.all_documents()? {
        if let Some((t, _, _)) = store.owner_of(&id)?
            && t == tenant
        {
            out.push(id);
        }
    }
    Ok(out)
}

/// Contract end: marks the tenant purged (every credential of it stops working at once, before
/// anything is erased), erases every document it owns, one atomic batch each, and deletes every
/// quarantine entry and storage-id claim its devices left. Idempotent. Returns the documents
/// erased. The caller cuts the tenant's connections (the relay's actor re-checks credentials).
pub fn purge_stored(
    store: &DocStore,
    auth: &AuthStore,
    tenant: &str,
    now_ms: i64,
) -> Result<Vec<DocumentId>, MaintenanceError> {
    let record = auth.tenant(tenant)?.ok_or(MaintenanceError::NoSuchTenant)?;
    if record.purged_at.is_none() {
        auth.mark_tenant_purged(tenant, now_ms)?;
    }
    let docs = tenant_documents(store, tenant)?;
    for id in &docs {
        erase_stored(store, id, now_ms)?;
    }
    // Quarantine its devices left elsewhere (documents never stored, or not its own).
    let kv = store.kv();
    let index = keys::quarantine_index_of(tenant);
    let mut batch = Batch::new();
    for k in kv.scan_keys(&index)? {
        if let Some((_, doc, hash)) = parse_index(&k) {
            batch.delete(quarantine_key(&doc, hash));
        }
        batch.delete(k);
    }
    for k in crate::storage_ids::tenant_keys(kv.as_ref(), tenant)? {
        batch.delete(k);
    }
    kv.apply(batch)?;
    kv.flush()?;
    // The erasures above left erased entries in the tenant's feed (ids, teams, kinds): they go
    // too, nothing of the tenant stays.
    store.forget_feed(tenant)?;
    Ok(docs)
}
