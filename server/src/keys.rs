//! Every key the relay writes into the database it shares with core's document store, in one
//! place (core's own layout is in `core/src/store/keys.rs`).
//!
//! | key                                   | value                                              |
//! |---------------------------------------|----------------------------------------------------|
//! | `r/install`                           | the relay's 8 install bytes (see `backup`)         |
//! | `a/t/TENANT`                          | a tenant (JSON)                                    |
//! | `a/m/TENANT/TEAM`                     | a team (JSON string)                               |
//! | `a/u/TENANT/USER`                     | a user with role and teams (JSON)                  |
//! | `a/k/HASH`                            | a token, by the SHA-256 of its secret (JSON)       |
//! | `a/i/TOKENID`                         | the hash of a token, by its id                     |
//! | `a/g/TENANT/GRANTID`                  | a support grant (JSON)                             |
//! | `a/audit/TENANT/TIME-RANDOM`          | a tenant's audit log entry (JSON)                  |
//! | `a/sid/STORAGEID`                     | `TENANT/USER/DEVICE` that owns a storage id        |
//! | `a/sidd/TENANT/USER/DEVICE/STORAGEID` | empty: a device's storage ids                      |
//! | `e/ID`                                | an erased document's tombstone (see `policy`)      |
//! | `q/ID/HASH`                           | a refused change, kept in quarantine               |
//! | `qt/TENANT/ID/HASH`                   | empty: which tenant's device sent a quarantined change |
//!
//! Tenant, team, user and device names are checked names (no `/`), so every prefix that ends in
//! `/` is unambiguous. `ID` is a document id's 16 raw bytes.
//!
//! **Architecture Invariant:** no relay key shares a namespace with core's, so a scan by either
//! never reads the other's entries (tested below). The one exception is the install key under
//! core's `r/` (KOL references), which predates this module: it is read and written whole only,
//! and is shorter than any key core stores or scans under `r/` (see the test).

use liaison_core::DocumentId;

/// The relay's install bytes, the random part of the actor it writes under.
pub const INSTALL: &[u8] = b"r/install";

/// Tenants.
pub const TENANTS: &[u8] = b"a/t/";
/// Tokens by the hash of their secret.
pub const TOKENS: &[u8] = b"a/k/";
/// Support grants of every tenant.
pub const SUPPORT_GRANTS: &[u8] = b"a/g/";
/// Storage ids by id.
pub const STORAGE_IDS: &[u8] = b"a/sid/";
/// Quarantine index entries of every tenant.
pub const QUARANTINE_INDEX: &[u8] = b"qt/";

const TEAMS: &str = "a/m/";
const USERS: &str = "a/u/";
const TOKEN_IDS: &str = "a/i/";
const AUDIT: &str = "a/audit/";
const STORAGE_IDS_BY_DEVICE: &str = "a/sidd/";
const TOMBSTONES: &[u8] = b"e/";
const QUARANTINE: &[u8] = b"q/";

/// Every prefix above: what the collision test checks.
pub const PREFIXES: [&[u8]; 13] = [
    INSTALL,
    TENANTS,
    TEAMS.as_bytes(),
    USERS.as_bytes(),
    TOKENS,
    TOKEN_IDS.as_bytes(),
    SUPPORT_GRANTS,
    AUDIT.as_bytes(),
    STORAGE_IDS,
    STORAGE_IDS_BY_DEVICE.as_bytes(),
    TOMBSTONES,
    QUARANTINE,
    QUARANTINE_INDEX,
];

fn text(prefix: &[u8], rest: &str) -> Vec<u8> {
    [prefix, rest.as_bytes()].concat()
}

pub fn tenant(tenant: &str) -> Vec<u8> {
    text(TENANTS, tenant)
}

pub fn team(tenant: &str, team: &str) -> Vec<u8> {
    format!("{TEAMS}{tenant}/{team}").into_bytes()
}

pub fn teams_of(tenant: &str) -> Vec<u8> {
    format!("{TEAMS}{tenant}/").into_bytes()
}

pub fn user(tenant: &str, user: &str) -> Vec<u8> {
    format!("{USERS}{tenant}/{user}").into_bytes()
}

pub fn users_of(tenant: &str) -> Vec<u8> {
    format!("{USERS}{tenant}/").into_bytes()
}

/// A token by the hash of its secret.
pub fn token(hash: &str) -> Vec<u8> {
    text(TOKENS, hash)
}

/// A token's hash by its id.
pub fn token_id(id: &str) -> Vec<u8> {
    format!("{TOKEN_IDS}{id}").into_bytes()
}

pub fn support_grant(tenant: &str, id: &str) -> Vec<u8> {
    [support_grants_of(tenant), id.as_bytes().to_vec()].concat()
}

pub fn support_grants_of(tenant: &str) -> Vec<u8> {
    text(SUPPORT_GRANTS, &format!("{tenant}/"))
}

/// An audit entry: time first (zero-padded), so a prefix scan reads the log in order; `suffix`
/// keeps entries of the same millisecond apart.
pub fn audit(tenant: &str, at_ms: i64, suffix: &str) -> Vec<u8> {
    format!("{AUDIT}{tenant}/{at_ms:020}-{suffix}").into_bytes()
}

pub fn audit_of(tenant: &str) -> Vec<u8> {
    format!("{AUDIT}{tenant}/").into_bytes()
}

/// Who owns a storage id.
pub fn storage_id(storage_id: &str) -> Vec<u8> {
    text(STORAGE_IDS, storage_id)
}

/// The storage ids of one device.
pub fn storage_ids_of_device(tenant: &str, user: &str, device: &str) -> Vec<u8> {
    format!("{STORAGE_IDS_BY_DEVICE}{tenant}/{user}/{device}/").into_bytes()
}

/// The storage ids of every device of a tenant.
pub fn storage_ids_of_tenant(tenant: &str) -> Vec<u8> {
    format!("{STORAGE_IDS_BY_DEVICE}{tenant}/").into_bytes()
}

/// An erased document's tombstone: its id is never served or accepted again.
pub fn tombstone(doc: &DocumentId) -> Vec<u8> {
    [TOMBSTONES, doc.as_bytes()].concat()
}

/// A refused change, kept.
pub fn quarantine(doc: &DocumentId, hash: &[u8]) -> Vec<u8> {
    [quarantine_of(doc).as_slice(), hash].concat()
}

/// A document's quarantined changes.
pub fn quarantine_of(doc: &DocumentId) -> Vec<u8> {
    [QUARANTINE, doc.as_bytes(), b"/"].concat()
}

/// The index entry naming the tenant whose device sent a quarantined change.
pub fn quarantine_index(tenant: &str, doc: &DocumentId, hash: &[u8]) -> Vec<u8> {
    [quarantine_index_of(tenant).as_slice(), doc.as_bytes(), b"/", hash].concat()
}

/// The quarantine index entries of one tenant.
pub fn quarantine_index_of(tenant: &str) -> Vec<u8> {
    text(QUARANTINE_INDEX, &format!("{tenant}/"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Core's key prefixes (`core/src/store/keys.rs`, a private module): copied
    /// here as bytes, so a new namespace on either side that overlaps the other fails this test.
    const CORE: [&[u8]; 15] = [
        b"!install",
        b"!feed",
        b"!feed-v1",
        b"!pending-v1",
        b"!catalog",
        b"!index-v",
        b"x/",
        b"m/",
        b"c/",
        b"k/",
        b"s/",
        b"r/",
        b"y/",
        b"f/",
        b"p/",
    ];

    /// The shortest key core writes or scans under `r/`: `r/KOLID/KIND/` (16 id bytes, a kind
    /// name of at least one byte).
    const CORE_SHORTEST_R: usize = 2 + 16 + 1 + 1 + 1;

    fn overlap(a: &[u8], b: &[u8]) -> bool {
        a.starts_with(b) || b.starts_with(a)
    }

    #[test]
    fn relay_keys_never_share_a_namespace_with_cores() {
        for relay in PREFIXES {
            for core in CORE {
                if relay == INSTALL && core == b"r/" {
                    // Read and written whole, never scanned; shorter than anything of core's
                    // under `r/`, so no core scan and no core key reaches it.
                    assert!(INSTALL.len() < CORE_SHORTEST_R);
                    continue;
                }
                assert!(
                    !overlap(relay, core),
                    "relay prefix {:?} overlaps core's {:?}",
                    String::from_utf8_lossy(relay),
                    String::from_utf8_lossy(core)
                );
            }
        }
    }

    #[test]
    fn relay_prefixes_are_distinct_namespaces() {
        for (i, a) in PREFIXES.iter().enumerate() {
            for b in &PREFIXES[i + 1..] {
                assert!(!overlap(a, b), "{:?} and {:?}", String::from_utf8_lossy(a), String::from_utf8_lossy(b));
            }
        }
    }

    /// The disk layout is a format: these bytes are what existing data directories hold.
    #[test]
    fn keys_are_laid_out_as_stored() {
        let doc = DocumentId::from_bytes([7; 16]);
        let id = String::from_utf8_lossy(doc.as_bytes()).into_owned();
        let text = |k: Vec<u8>| String::from_utf8_lossy(&k).into_owned();
        assert_eq!(text(tenant("t")), "a/t/t");
        assert_eq!(text(team("t", "m")), "a/m/t/m");
        assert_eq!(text(teams_of("t")), "a/m/t/");
        assert_eq!(text(user("t", "u")), "a/u/t/u");
        assert_eq!(text(users_of("t")), "a/u/t/");
        assert_eq!(text(token("h")), "a/k/h");
        assert_eq!(text(token_id("tok_1")), "a/i/tok_1");
        assert_eq!(text(support_grant("t", "g")), "a/g/t/g");
        assert_eq!(text(support_grants_of("t")), "a/g/t/");
        assert_eq!(text(audit("t", 42, "ab")), "a/audit/t/00000000000000000042-ab");
        assert_eq!(text(audit_of("t")), "a/audit/t/");
        assert_eq!(text(storage_id("s")), "a/sid/s");
        assert_eq!(text(storage_ids_of_device("t", "u", "d")), "a/sidd/t/u/d/");
        assert_eq!(text(storage_ids_of_tenant("t")), "a/sidd/t/");
        assert_eq!(text(tombstone(&doc)), format!("e/{id}"));
        assert_eq!(text(quarantine(&doc, b"h")), format!("q/{id}/h"));
        assert_eq!(text(quarantine_of(&doc)), format!("q/{id}/"));
        assert_eq!(text(quarantine_index("t", &doc, b"h")), format!("qt/t/{id}/h"));
        assert_eq!(text(quarantine_index_of("t")), "qt/t/");
    }
}
