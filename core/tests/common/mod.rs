#![allow(dead_code, clippy::unwrap_used)]

use std::sync::Arc;

use liaison_core::storage::MemoryKv;
use liaison_core::store::{ManualClock, StoreOptions};
use liaison_core::{DocStore, Identity, Role};

pub fn identity(user: &str, device: &str, role: Role) -> Identity {
    Identity { tenant: "pharma-a".into(), user: user.into(), device: device.into(), role, install: [0; 8] }
}

/// A device with an in-memory store and its own clock.
pub fn device(user: &str, device_name: &str, role: Role) -> DocStore {
    DocStore::with_kv(
        Arc::new(MemoryKv::new()),
        identity(user, device_name, role),
        Arc::new(ManualClock::new(1_700_000_000_000)),
        StoreOptions::default(),
    )
    .unwrap()
}

/// Exchanges every document both ways, as a sync would.
pub fn sync(a: &DocStore, b: &DocStore) {
    for (from, to) in [(a, b), (b, a)] {
        for id in from.all_documents().unwrap() {
            to.merge_remote(&id, &from.export(&id).unwrap()).unwrap();
        }
    }
}

/// Proptest cases: `PROPTEST_CASES` when set (a soak: see docs/testing in ARCHITECTURE.md),
/// else the suite's everyday count.
#[allow(dead_code)]
pub fn proptest_cases(everyday: u32) -> u32 {
    std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(everyday)
}
