//! What the ffi tests share: a store per user in one directory, and copying a document from one
//! store to another as sync would.
#![allow(dead_code, clippy::unwrap_used)]

use std::sync::Arc;

use futures::executor::block_on;

use liaison_core::DocumentId;
use liaison_core::model::{Channel, EngagementPlan, Interaction};
use liaison_ffi::{LiaisonStore, StoreConfig};

/// An MSL's store of tenant `pharma-a`, team `onc-east`, under `dir/user`.
pub fn open(dir: &tempfile::TempDir, user: &str) -> Arc<LiaisonStore> {
    block_on(LiaisonStore::open(StoreConfig {
        path: dir.path().join(user).display().to_string(),
        tenant: "pharma-a".into(),
        user: user.into(),
        device: format!("{user}-phone"),
        role: liaison_core::Role::Msl,
        team: "onc-east".into(),
    }))
    .unwrap()
}

/// Copies a document from one store to the other, as sync would.
pub fn send(from: &LiaisonStore, to: &LiaisonStore, id: &str) {
    let doc = id.parse().unwrap();
    to.core().unwrap().merge_remote(&doc, &from.core().unwrap().export(&doc).unwrap()).unwrap();
}

/// An empty engagement plan for the KOL `kol_id`.
pub fn new_plan(kol_id: String, title: &str) -> EngagementPlan {
    EngagementPlan { kol_id, ..EngagementPlan::new(&DocumentId::random(), title) }
}

/// A draft interaction with the KOL `kol_id`.
pub fn new_interaction(kol_id: String, start: i64, channel: Channel) -> Interaction {
    Interaction { kol_id, ..Interaction::new(&DocumentId::random(), start, channel) }
}
