//! liaison's core: KOL records as Automerge documents and the on-device store.
//!
//! - [`model`]: the typed records and how they map onto Automerge documents (no IO).
//! - [`storage`]: the small key-value trait with a memory and a sled backend.
//! - [`clock`]: where "now" comes from ([`clock::SystemClock`], or a [`clock::ManualClock`] in tests).
//! - [`store`]: the document store on top: incremental saves, compaction, indexes, change feed.
//! - [`id`]: document ids and the actor ids derived from (tenant, user, device).
//! - [`live`]: how a live query's new rows differ from its previous ones.
//! - [`sync`]: the automerge-repo wire protocol and the sans-IO engine that speaks it.
//! - `client` (feature `client`): the device's network driver, the engine over a WebSocket.

#![warn(missing_docs)]

#[cfg(feature = "client")]
pub mod client;
pub mod clock;
pub mod id;
pub mod live;
pub mod model;
pub mod storage;

pub use id::{DocumentId, Identity, Role};
pub mod store;
pub mod sync;

pub use store::{DocStore, StoreError, SyncWrite};
