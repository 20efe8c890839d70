//! The routing key the relay last handed this device (key `!route`), sent back as the
//! `Liaison-Route` header on every connection so a load balancer in front of a relay cluster
//! sends a team's devices to one node ([`ROUTE_HEADER`]). An opaque hash; nothing
//! depends on it but which node a connection reaches.

use super::{DocStore, StoreError};
use crate::storage::Batch;

const KEY: &[u8] = b"!route";

/// The header of a relay's routing key: the relay's answer to the WebSocket upgrade carries
/// it, and the device sends it back on its next connections, so a load balancer in front of a
/// relay cluster that hashes it sends a team's devices to one node (docs/operator-guide.md).
pub const ROUTE_HEADER: &str = "liaison-route";

/// Longest key kept: a relay's is 16 hex digits.
const MAX_LEN: usize = 64;

/// Whether `key` is one to keep and send: 1 to 64 lowercase hex digits (never anything that
/// could break the header or carry personal data).
pub fn is_route_key(key: &str) -> bool {
    (1..=MAX_LEN).contains(&key.len()) && key.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

impl DocStore {
    /// The routing key stored by [`DocStore::set_route`], if any (an unreadable one is none).
    pub fn route(&self) -> Result<Option<String>, StoreError> {
        let Some(bytes) = self.kv.get(KEY)? else { return Ok(None) };
        Ok(String::from_utf8(bytes).ok().filter(|k| is_route_key(k)))
    }

    /// Keeps `key` for the next connections (not flushed: losing it costs one connection
    /// routed anywhere). A key that is not [`is_route_key`] is refused with `Invalid`.
    pub fn set_route(&self, key: &str) -> Result<(), StoreError> {
        if !is_route_key(key) {
            return Err(StoreError::Invalid("not a routing key"));
        }
        let mut batch = Batch::new();
        batch.put(KEY.to_vec(), key.as_bytes().to_vec());
        Ok(self.kv.apply(batch)?)
    }

    /// Forgets the routing key (a remote wipe leaves nothing of the tenant).
    pub fn clear_route(&self) -> Result<(), StoreError> {
        let mut batch = Batch::new();
        batch.delete(KEY.to_vec());
        Ok(self.kv.apply(batch)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::test_stores::memory_store;

    #[test]
    fn a_key_round_trips_and_anything_else_is_refused_or_ignored() {
        let (store, _) = memory_store("t");
        assert_eq!(store.route().unwrap(), None);
        store.set_route("0123456789abcdef").unwrap();
        assert_eq!(store.route().unwrap().as_deref(), Some("0123456789abcdef"));
        for bad in ["", "ABCDEF", "ab\r\nx-evil: 1", "sato@acme", &"a".repeat(65)] {
            assert!(store.set_route(bad).is_err(), "{bad:?}");
        }
        store.kv().put(KEY, b"not hex\n").unwrap();
        assert_eq!(store.route().unwrap(), None, "an unreadable key is none");
        store.set_route("ff").unwrap();
        store.clear_route().unwrap();
        assert_eq!(store.route().unwrap(), None);
    }
}
