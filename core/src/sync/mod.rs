//! Sync: the automerge-repo wire protocol and (next) the sans-IO engine that speaks it.

pub mod wire;
