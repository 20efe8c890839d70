//! An issuer's signing keys: the JWKS document parsed ([`parse`]), cached per tenant
//! ([`KeyCache`]), and fetched ([`fetch`], blocking: run it off the async threads).
//!
//! The refresh rule, all of it in [`KeyCache::lookup`] and tested with times passed in:
//! - a known `kid` is used while the keys are younger than `jwks_max_age_secs`;
//! - an unknown `kid`, or keys that old, fetch the document again, but never sooner than
//!   `jwks_min_refresh_secs` after the last attempt (a stream of tokens with made-up `kid`s
//!   cannot make the relay hammer the IdP);
//! - a fetch replaces the keys (a key the IdP withdrew is gone), a failed fetch keeps them.

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use jsonwebtoken::DecodingKey;
use serde_json::Value;

use super::config::SigningAlgorithm;

/// The most bytes of a JWKS document read (Entra's is ~5 KiB).
pub const MAX_JWKS_BYTES: u64 = 256 * 1024;
/// The most keys kept from one document.
pub const MAX_KEYS: usize = 64;
/// How long a fetch may take, all of it.
const FETCH_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum JwksError {
    #[error("cannot read the JWKS CA file: {0}")]
    CaFile(std::io::Error),
    #[error("the JWKS CA file holds no certificate")]
    NoCaCertificate,
    #[error("fetching the JWKS failed: {0}")]
    Fetch(String),
    #[error("the JWKS endpoint answered HTTP {0}")]
    Status(u16),
    #[error("the JWKS document is not a JSON object with a \"keys\" array")]
    NotJwks,
}

/// The kind of a published key, which decides the algorithm it may verify.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyKind {
    Rsa,
    /// EC on P-256.
    EcP256,
}

/// One signing key of the document.
#[derive(Clone)]
pub struct PublishedKey {
    pub kind: KeyKind,
    /// The `alg` the document pins the key to, if it does.
    pub alg: Option<String>,
    pub key: DecodingKey,
}

impl std::fmt::Debug for PublishedKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PublishedKey").field("kind", &self.kind).field("alg", &self.alg).finish_non_exhaustive()
    }
}

impl PublishedKey {
    /// Whether this key may verify a token signed with `alg`.
    pub fn fits(&self, alg: SigningAlgorithm) -> bool {
        let kind_fits = matches!(
            (alg, self.kind),
            (SigningAlgorithm::RS256, KeyKind::Rsa) | (SigningAlgorithm::ES256, KeyKind::EcP256)
        );
        kind_fits && self.alg.as_deref().is_none_or(|pinned| pinned == alg.as_str())
    }
}

/// When to fetch again, in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RefreshRule {
    pub min_refresh_ms: i64,
    pub max_age_ms: i64,
}

impl RefreshRule {
    pub fn from_secs(min_refresh_secs: u64, max_age_secs: u64) -> Self {
        let ms = |secs: u64| i64::try_from(secs).unwrap_or(i64::MAX / 1000).saturating_mul(1000);
        Self { min_refresh_ms: ms(min_refresh_secs), max_age_ms: ms(max_age_secs) }
    }
}

/// What the cache says about a `kid`.
#[derive(Debug)]
pub enum Lookup<'a> {
    Found(&'a PublishedKey),
    /// Fetch the document, then look again with [`KeyCache::lookup_after_fetch`].
    Fetch,
    /// Not published, as of a fetch too recent to repeat.
    Unknown,
    /// The keys are too old to trust and cannot be fetched again yet.
    Stale,
}

/// One tenant's keys, and when they were fetched.
#[derive(Debug, Default)]
pub struct KeyCache {
    keys: HashMap<String, PublishedKey>,
    /// The last fetch that succeeded.
    fetched_at: Option<i64>,
    /// The last fetch tried, whatever its outcome.
    attempted_at: Option<i64>,
}

impl KeyCache {
    pub fn lookup(&self, kid: &str, now: i64, rule: RefreshRule) -> Lookup<'_> {
        let fresh = self.fetched_at.is_some_and(|at| now.saturating_sub(at) < rule.max_age_ms);
        if fresh && let Some(key) = self.keys.get(kid) {
            return Lookup::Found(key);
        }
        let may_fetch = self.attempted_at.is_none_or(|at| now.saturating_sub(at) >= rule.min_refresh_ms);
        if may_fetch {
            Lookup::Fetch
        } else if fresh {
            Lookup::Unknown
        } else {
            Lookup::Stale
        }
    }

    /// The answer right after a fetch (which [`Self::fetched`] or [`Self::fetch_failed`]
    /// recorded): never another fetch.
    pub fn lookup_after_fetch(&self, kid: &str, now: i64, rule: RefreshRule) -> Lookup<'_> {
        match self.lookup(kid, now, rule) {
            Lookup::Fetch => Lookup::Stale,
            other => other,
        }
    }

    /// A fetch at `now` gave these keys: they replace the old ones.
    pub fn fetched(&mut self, keys: HashMap<String, PublishedKey>, now: i64) {
        self.keys = keys;
        self.fetched_at = Some(now);
        self.attempted_at = Some(now);
    }

    /// A fetch at `now` failed: the keys stay, as fresh as they were.
    pub fn fetch_failed(&mut self, now: i64) {
        self.attempted_at = Some(now);
    }
}

/// The signing keys of a JWKS document: RSA keys and EC keys on P-256 with a `kid`, not marked
/// for encryption. Others (other curves, symmetric `oct` keys, keys without a `kid`) are
/// skipped: one odd key does not cost the tenant its sign-in.
pub fn parse(document: &[u8]) -> Result<HashMap<String, PublishedKey>, JwksError> {
    let document: Value = serde_json::from_slice(document).map_err(|_| JwksError::NotJwks)?;
    let keys = document.get("keys").and_then(Value::as_array).ok_or(JwksError::NotJwks)?;
    let mut out = HashMap::new();
    for jwk in keys {
        if out.len() >= MAX_KEYS {
            break;
        }
        let text = |name: &str| jwk.get(name).and_then(Value::as_str);
        let Some(kid) = text("kid") else { continue };
        if text("use").is_some_and(|usage| usage != "sig") {
            continue;
        }
        let published = match (text("kty"), text("crv")) {
            (Some("RSA"), _) => match (text("n"), text("e")) {
                (Some(n), Some(e)) => DecodingKey::from_rsa_components(n, e).ok().map(|key| (KeyKind::Rsa, key)),
                _ => None,
            },
            (Some("EC"), Some("P-256")) => match (text("x"), text("y")) {
                (Some(x), Some(y)) => DecodingKey::from_ec_components(x, y).ok().map(|key| (KeyKind::EcP256, key)),
                _ => None,
            },
            _ => None,
        };
        if let Some((kind, key)) = published {
            out.insert(kid.to_owned(), PublishedKey { kind, alg: text("alg").map(str::to_owned), key });
        }
    }
    Ok(out)
}

/// GETs the JWKS document (blocking): the public web roots, or `ca_file`'s certificates; no
/// redirects; at most [`MAX_JWKS_BYTES`]; within 10 s.
pub fn fetch(url: &str, ca_file: Option<&Path>) -> Result<Vec<u8>, JwksError> {
    let mut tls = ureq::tls::TlsConfig::builder();
    if let Some(ca_file) = ca_file {
        let pem = std::fs::read(ca_file).map_err(JwksError::CaFile)?;
        let certs: Vec<ureq::tls::Certificate<'static>> = ureq::tls::parse_pem(&pem)
            .filter_map(|item| match item {
                Ok(ureq::tls::PemItem::Certificate(cert)) => Some(cert),
                _ => None,
            })
            .collect();
        if certs.is_empty() {
            return Err(JwksError::NoCaCertificate);
        }
        tls = tls.root_certs(ureq::tls::RootCerts::new_with_certs(&certs));
    }
    let agent = ureq::Agent::config_builder()
        .tls_config(tls.build())
        .timeout_global(Some(FETCH_TIMEOUT))
        .max_redirects(0)
        .http_status_as_error(false)
        .build()
        .new_agent();
    let mut response = agent.get(url).call().map_err(|e| JwksError::Fetch(e.to_string()))?;
    let status = response.status().as_u16();
    if status != 200 {
        return Err(JwksError::Status(status));
    }
    response.body_mut().with_config().limit(MAX_JWKS_BYTES).read_to_vec().map_err(|e| JwksError::Fetch(e.to_string()))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    /// A P-256 public key (any valid point will do for the cache; signatures are tested end to end).
    fn ec_jwk(kid: &str) -> Value {
        json!({
            "kty": "EC", "crv": "P-256", "kid": kid, "use": "sig",
            "x": "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU",
            "y": "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0",
        })
    }

    fn keys(kids: &[&str]) -> HashMap<String, PublishedKey> {
        let document = json!({ "keys": kids.iter().map(|k| ec_jwk(k)).collect::<Vec<_>>() });
        parse(document.to_string().as_bytes()).unwrap()
    }

    const RULE: RefreshRule = RefreshRule { min_refresh_ms: 300_000, max_age_ms: 3_600_000 };

    fn is_found(l: Lookup<'_>) -> bool {
        matches!(l, Lookup::Found(_))
    }

    #[test]
    fn the_first_use_fetches_and_known_keys_are_used_without_fetching() {
        let mut cache = KeyCache::default();
        assert!(matches!(cache.lookup("a", 0, RULE), Lookup::Fetch));
        cache.fetched(keys(&["a"]), 1_000);
        assert!(is_found(cache.lookup("a", 1_000, RULE)));
        assert!(is_found(cache.lookup("a", 1_000 + 3_599_999, RULE)), "until the keys are an hour old");
    }

    #[test]
    fn an_unknown_kid_fetches_again_at_most_once_per_minimum_interval() {
        let mut cache = KeyCache::default();
        cache.fetched(keys(&["old"]), 0);
        // Rotation just after the fetch: the new kid waits for the interval.
        assert!(matches!(cache.lookup("new", 1, RULE), Lookup::Unknown));
        assert!(matches!(cache.lookup("new", 299_999, RULE), Lookup::Unknown));
        assert!(matches!(cache.lookup("new", 300_000, RULE), Lookup::Fetch));
        cache.fetched(keys(&["old", "new"]), 300_000);
        assert!(is_found(cache.lookup_after_fetch("new", 300_000, RULE)));
        assert!(is_found(cache.lookup("old", 300_001, RULE)), "the old key, still published, still works");
        // A kid nobody published: one fetch, then refused until the interval passed again.
        assert!(matches!(cache.lookup("made-up", 600_000, RULE), Lookup::Fetch));
        cache.fetched(keys(&["old", "new"]), 600_000);
        assert!(matches!(cache.lookup_after_fetch("made-up", 600_000, RULE), Lookup::Unknown));
        for later in [600_001, 700_000, 899_999] {
            assert!(matches!(cache.lookup("made-up", later, RULE), Lookup::Unknown), "no fetch at {later}");
        }
    }

    #[test]
    fn a_fetch_replaces_the_keys_and_a_failed_one_keeps_them_without_retrying_at_once() {
        let mut cache = KeyCache::default();
        cache.fetched(keys(&["a", "b"]), 0);
        cache.fetched(keys(&["b"]), 400_000);
        assert!(matches!(cache.lookup("a", 400_001, RULE), Lookup::Unknown), "a withdrawn key is gone");
        cache.fetch_failed(800_000);
        assert!(is_found(cache.lookup("b", 800_001, RULE)));
        assert!(matches!(cache.lookup("c", 800_001, RULE), Lookup::Unknown), "no retry within the interval");
        assert!(matches!(cache.lookup("c", 1_100_000, RULE), Lookup::Fetch));
    }

    #[test]
    fn keys_past_their_maximum_age_are_fetched_again_and_never_used_stale() {
        let mut cache = KeyCache::default();
        cache.fetched(keys(&["a"]), 0);
        assert!(matches!(cache.lookup("a", 3_600_000, RULE), Lookup::Fetch));
        cache.fetch_failed(3_600_000);
        assert!(matches!(cache.lookup_after_fetch("a", 3_600_000, RULE), Lookup::Stale));
        assert!(matches!(cache.lookup("a", 3_700_000, RULE), Lookup::Stale), "the IdP is down: fail closed");
        assert!(matches!(cache.lookup("a", 3_900_000, RULE), Lookup::Fetch));
    }

    #[test]
    fn only_signing_keys_of_known_kinds_with_a_kid_are_kept() {
        let mut no_kid = ec_jwk("x");
        no_kid.as_object_mut().unwrap().remove("kid");
        let mut encryption = ec_jwk("enc");
        encryption["use"] = json!("enc");
        let mut p384 = ec_jwk("p384");
        p384["crv"] = json!("P-384");
        let oct = json!({ "kty": "oct", "kid": "hmac", "k": "c2VjcmV0" });
        let rsa = json!({ "kty": "RSA", "kid": "rsa", "n": "sXch", "e": "AQAB", "alg": "RS256" });
        let document = json!({ "keys": [no_kid, encryption, p384, oct, rsa, ec_jwk("ec"), "junk"] });
        let parsed = parse(document.to_string().as_bytes()).unwrap();
        let mut kids: Vec<&str> = parsed.keys().map(String::as_str).collect();
        kids.sort_unstable();
        assert_eq!(kids, ["ec", "rsa"]);
        assert!(parsed["rsa"].fits(SigningAlgorithm::RS256) && !parsed["rsa"].fits(SigningAlgorithm::ES256));
        assert!(parsed["ec"].fits(SigningAlgorithm::ES256) && !parsed["ec"].fits(SigningAlgorithm::RS256));
        assert!(matches!(parse(b"[]"), Err(JwksError::NotJwks)));
        assert!(matches!(parse(b"{\"keys\": 1}"), Err(JwksError::NotJwks)));
    }
}
