//! What the ffi tests share: a store per user in one directory, and copying a document from one
//! store to another as sync would.
#![allow(dead_code, clippy::unwrap_used)]

use std::sync::Arc;

use liaison_ffi::{LiaisonStore, StoreConfig};

/// An MSL's store of tenant `pharma-a`, team `onc-east`, under `dir/user`.
pub fn open(dir: &tempfile::TempDir, user: &str) -> Arc<LiaisonStore> {
    LiaisonStore::open(StoreConfig {
        path: dir.path().join(user).display().to_string(),
        tenant: "pharma-a".into(),
        user: user.into(),
        device: format!("{user}-phone"),
        role: liaison_core::Role::Msl,
        team: "onc-east".into(),
    })
    .unwrap()
}

/// Copies a document from one store to the other, as sync would.
pub fn send(from: &LiaisonStore, to: &LiaisonStore, id: &str) {
    let doc = id.parse().unwrap();
    to.core().unwrap().merge_remote(&doc, &from.core().unwrap().export(&doc).unwrap()).unwrap();
}
