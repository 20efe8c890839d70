-- The relay's whole persistent state: core's document store and the relay's own keys
-- (server/src/keys.rs) share one ordered key-value map, as they do in sled.
--
-- bytea compares bytewise (memcmp, then length), the order core's KvStore promises; it is not
-- a collatable type, so no COLLATE or locale can change it. Prefix scans are the range
-- key >= prefix AND key < successor(prefix) over the primary key's index.
CREATE TABLE kv (
    key   bytea PRIMARY KEY,
    value bytea NOT NULL
);
