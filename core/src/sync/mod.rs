//! Sync: the automerge-repo wire protocol and the sans-IO engine that speaks it.

pub mod catalog;
pub mod engine;
mod expansion;
pub mod inflation;
pub mod notice;
pub mod presence;
mod screen;
pub mod store_tasks;
#[cfg(feature = "testing")]
pub mod testing;
pub mod wire;

pub use engine::{
    Access, ConnId, Engine, EngineConfig, Event, Input, OpenPolicy, Output, PeerInfo, Policy, Refusal, Side,
    StorageResult, StorageTask, TaskId, refuse_changes_to_locked,
};
