//! Contract end: export a tenant's documents for the pharma client, then purge the tenant.

use crate::now_ms;
use std::path::Path;

use liaison_core::{DocStore, DocumentId};
use serde_json::json;

use crate::auth::AuthStore;

/// Writes every document of `tenant` as `<id>.automerge` (a full Automerge save, loadable by any
/// Automerge implementation) and a `manifest.json` into `dest`, which must not exist yet.
pub fn export_tenant(store: &DocStore, tenant: &str, dest: &Path) -> Result<usize, String> {
    if dest.exists() {
        return Err(format!("{} already exists; choose a new directory", dest.display()));
    }
    std::fs::create_dir_all(dest).map_err(|e| format!("cannot create the export directory: {e}"))?;
    let mut manifest = Vec::new();
    for id in tenant_documents(store, tenant)? {
        let doc = store.load(&id).map_err(|e| e.to_string())?;
        std::fs::write(dest.join(format!("{id}.automerge")), doc.save())
            .map_err(|e| format!("cannot write {id}: {e}"))?;
        let (_, team, kind) = store.owner_of(&id).map_err(|e| e.to_string())?.unwrap_or_default();
        manifest.push(json!({
            "id": id.to_string(),
            "kind": kind.map(|k| k.as_str()),
            "team": team,
            "heads": doc.get_heads().iter().map(ToString::to_string).collect::<Vec<_>>(),
        }));
    }
    let n = manifest.len();
    let body = json!({ "tenant": tenant, "exported_at_ms": now_ms(), "documents": manifest });
    let text = serde_json::to_string_pretty(&body).map_err(|e| e.to_string())?;
    std::fs::write(dest.join("manifest.json"), text).map_err(|e| format!("cannot write the manifest: {e}"))?;
    Ok(n)
}

/// Every stored document whose envelope names `tenant`.
pub fn tenant_documents(store: &DocStore, tenant: &str) -> Result<Vec<DocumentId>, String> {
    let mut out = Vec::new();
    for id in store.all_documents().map_err(|e| e.to_string())? {
        if let Some((t, _, _)) = store.owner_of(&id).map_err(|e| e.to_string())?
            && t == tenant
        {
            out.push(id);
        }
    }
    Ok(out)
}

/// Erases every document of `tenant` (tombstoned, so devices delete their copies) and marks the
/// tenant purged, which revokes all its credentials. The tenant record stays, with the time, as
/// the record that the purge happened. Returns the erased documents.
pub fn purge_tenant(store: &DocStore, auth: &AuthStore, tenant: &str) -> Result<Vec<DocumentId>, String> {
    auth.tenant(tenant).map_err(|e| e.to_string())?.ok_or_else(|| "no such tenant".to_owned())?;
    let docs = tenant_documents(store, tenant)?;
    for id in &docs {
        crate::relay::erase_stored(store, id)?;
    }
    auth.mark_tenant_purged(tenant, now_ms()).map_err(|e| e.to_string())?;
    Ok(docs)
}
