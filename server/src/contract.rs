//! Contract end, step 1: export a tenant's documents for the pharma client (the purge, step 2,
//! is in [`crate::erasure`]).
//!
//! Exports go under the configured export root, into a directory the relay names (an admin
//! never chooses a path on the relay's machine). The relay keeps serving meanwhile: each
//! document is read whole and consistent by the store, one at a time.

use std::path::Path;

use liaison_core::DocStore;
use serde_json::json;

use crate::error::MaintenanceError;
use crate::now_ms;

/// Writes every document of `tenant` as `<id>.automerge` (a full Automerge save, loadable by any
/// Automerge implementation) and a `manifest.json` into `dest`, an empty directory made by
/// [`crate::backup::fresh_dir`]. Files are readable by the relay's user only.
pub fn export_tenant(store: &DocStore, tenant: &str, dest: &Path) -> Result<usize, MaintenanceError> {
    let write = |name: &str, bytes: &[u8]| {
        use std::io::Write as _;
        use std::os::unix::fs::OpenOptionsExt as _;
        std::fs::OpenOptions::new()
            .create_new(true)
            .write(true)
            .mode(0o600)
            .open(dest.join(name))
            .and_then(|mut f| f.write_all(bytes).and_then(|()| f.sync_data()))
            .map_err(|source| MaintenanceError::Write { file: name.to_owned(), source })
    };
    let mut manifest = Vec::new();
    for id in crate::erasure::tenant_documents(store, tenant)? {
        let doc = match store.load(&id) {
            Ok(doc) => doc,
            // Erased since the list was made.
            Err(liaison_core::StoreError::NotFound(_)) => continue,
            Err(e) => return Err(e.into()),
        };
        write(&format!("{id}.automerge"), &doc.save())?;
        let (_, team, kind) = store.owner_of(&id)?.unwrap_or_default();
        manifest.push(json!({
            "id": id.to_string(),
            "kind": kind.map(|k| k.as_str()),
            "team": team,
            "heads": doc.get_heads().iter().map(ToString::to_string).collect::<Vec<_>>(),
        }));
    }
    let n = manifest.len();
    let body = json!({ "tenant": tenant, "exported_at_ms": now_ms(), "documents": manifest });
    let text = serde_json::to_vec_pretty(&body)
        .map_err(|source| MaintenanceError::Encode { file: "manifest.json", source })?;
    write("manifest.json", &text)?;
    Ok(n)
}
