//! The engine's configuration.

use crate::sync::catalog::CatalogRequest;
use crate::sync::wire::{self, PeerId, StorageId};

/// The engine's settings. [`EngineConfig::new`] gives the defaults; a device's driver also sets
/// `announce` and its `storage_id`.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Our peer id, sent in `join` and `peer`.
    pub peer_id: PeerId,
    /// Our storage id, advertised so peers keep sync state for us across connections.
    pub storage_id: Option<StorageId>,
    /// Advertised in our metadata: we will not come back with this storage id, so peers need
    /// not keep sync state for us.
    pub is_ephemeral: bool,
    /// Frames longer than this many bytes are refused unread and close the connection.
    pub max_frame: usize,
    /// Loaded documents kept at most; the least recently used idle ones are evicted past it.
    pub resident_cap: usize,
    /// A document unused for this long is evicted on the next tick.
    pub idle_evict_ms: i64,
    /// A connection that has not completed the handshake by then is closed.
    pub handshake_timeout_ms: i64,
    /// Sync every document we are told about with every peer (a device). A relay leaves this off
    /// and answers what peers ask.
    pub announce: bool,
    /// Distinct documents one connection may touch; past it the connection is closed.
    pub max_docs_per_conn: usize,
    /// Bytes the changes of one sync message may inflate to (and a quarter as many column items
    /// they may decode to, see [`crate::sync::inflation::Bounds::for_max_bytes`]); past it the
    /// connection is closed before anything is inflated or expanded.
    pub max_inflated_bytes: u64,
    /// Bytes of messages all connections together may have waiting for a policy that cannot
    /// tell (its store unreachable); one connection may have at most `max_frame`. Past either,
    /// that connection is closed "try again later".
    pub max_unjudged_bytes: usize,
    /// Documents loading at once for peers' messages; messages for further documents wait, in
    /// order, as messages rather than as document entries (see `engine::admission`).
    pub max_loading: usize,
    /// Bytes of one connection's messages that may wait for their documents' loads; past it
    /// the connection is closed (`CloseReason::TooMuchWaiting`).
    pub max_waiting_bytes: usize,
    /// Messages exchanged for one document with one peer without either side's heads moving,
    /// after which the sync state is reset (guards a known automerge sync loop).
    pub loop_guard: u32,
    /// A device's catalog request, sent in its next `join` (see [`crate::sync::catalog`]); the
    /// driver sets it before each connection with [`Engine::set_catalog_request`](super::Engine::set_catalog_request).
    pub catalog: Option<CatalogRequest>,
}

impl EngineConfig {
    /// Defaults for `peer_id`: no storage id, not ephemeral, [`wire::DEFAULT_MAX_FRAME`] (8 MiB)
    /// frames, 10 000 resident documents, eviction after 10 idle minutes, a 10 s handshake
    /// timeout, `announce` off, no per-connection document limit, changes inflating to at most
    /// four frames (32 MiB), 64 MiB of messages waiting for a policy that cannot tell, loads
    /// not bounded (64 MiB of one connection's messages may wait for them), and a loop guard of
    /// 16 messages.
    pub fn new(peer_id: impl Into<String>) -> Self {
        Self {
            peer_id: PeerId(peer_id.into()),
            storage_id: None,
            is_ephemeral: false,
            max_frame: wire::DEFAULT_MAX_FRAME,
            resident_cap: 10_000,
            idle_evict_ms: 10 * 60 * 1000,
            handshake_timeout_ms: 10_000,
            announce: false,
            max_docs_per_conn: usize::MAX,
            max_inflated_bytes: 4 * wire::DEFAULT_MAX_FRAME as u64,
            max_unjudged_bytes: 64 << 20,
            max_loading: usize::MAX,
            max_waiting_bytes: 64 << 20,
            loop_guard: 16,
            catalog: None,
        }
    }
}
