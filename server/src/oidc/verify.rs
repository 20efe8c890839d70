//! Checking an IdP access token, in this order: its shape; its issuer, which chooses the tenant
//! (`wrong-issuer` for one no tenant trusts); its header's algorithm against the tenant's list
//! (`bad-algorithm`: `none`, `HS256` and anything else not listed, before any key is touched);
//! its `kid` in the tenant's keys (`unknown-key`, fetched again as `jwks` rules); the signature
//! (`bad-signature`); then the claims: issuer and audience (`wrong-audience`), `exp`
//! (`expired`) and `nbf` (`not-yet-valid`) with the tenant's clock skew, at the time passed in.
//!
//! The issuer is read before the signature is checked, only to choose whose keys check it; it is
//! checked again, with everything else, once the signature holds.

use base64::Engine as _;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{DecodingKey, Validation};
use serde_json::Value;

use super::Refusal;
use super::config::{OidcTenant, SigningAlgorithm};

/// The longest token read, in bytes (Entra's access tokens are 1.5 to 3 KiB).
pub const MAX_TOKEN_BYTES: usize = 16 * 1024;

/// What a token says about itself before anything is verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peeked {
    pub alg: String,
    pub kid: Option<String>,
    pub iss: Option<String>,
}

/// Reads the header's `alg` and `kid` and the payload's `iss`, unverified.
pub fn peek(token: &str) -> Result<Peeked, Refusal> {
    if token.len() > MAX_TOKEN_BYTES {
        return Err(Refusal::Malformed);
    }
    let mut parts = token.split('.');
    let (Some(header), Some(payload), Some(_signature), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(Refusal::Malformed);
    };
    let header = decode_part(header)?;
    let payload = decode_part(payload)?;
    let text = |v: &Value, name: &str| v.get(name).and_then(Value::as_str).map(str::to_owned);
    let alg = text(&header, "alg").ok_or(Refusal::Malformed)?;
    Ok(Peeked { alg, kid: text(&header, "kid"), iss: text(&payload, "iss") })
}

fn decode_part(part: &str) -> Result<Value, Refusal> {
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(part).map_err(|_| Refusal::Malformed)?;
    let value: Value = serde_json::from_slice(&bytes).map_err(|_| Refusal::Malformed)?;
    if value.is_object() { Ok(value) } else { Err(Refusal::Malformed) }
}

/// The tenant whose issuer `peeked` names, and the algorithm its header asks for, if the
/// tenant accepts it.
pub fn choose(tenants: &[OidcTenant], peeked: &Peeked) -> Result<(usize, SigningAlgorithm), Refusal> {
    let iss = peeked.iss.as_deref().ok_or(Refusal::MissingClaim)?;
    let index = tenants.iter().position(|t| t.issuer == iss).ok_or(Refusal::WrongIssuer)?;
    let alg = SigningAlgorithm::from_header(&peeked.alg)
        .filter(|alg| tenants[index].algorithms.contains(alg))
        .ok_or(Refusal::BadAlgorithm)?;
    Ok((index, alg))
}

/// Verifies the signature with `key`, then the claims at `now_secs`; returns the claims.
pub fn check(
    token: &str,
    alg: SigningAlgorithm,
    key: &DecodingKey,
    tenant: &OidcTenant,
    now_secs: i64,
) -> Result<Value, Refusal> {
    let mut validation = Validation::new(alg.jwt());
    validation.set_issuer(&[&tenant.issuer]);
    validation.set_audience(&tenant.audiences);
    validation.set_required_spec_claims(&["exp", "iss", "aud"]);
    // Time is checked below, at the time passed in (jsonwebtoken reads the system clock).
    validation.validate_exp = false;
    validation.validate_nbf = false;
    let data = jsonwebtoken::decode::<Value>(token, key, &validation).map_err(|e| match e.kind() {
        ErrorKind::InvalidSignature | ErrorKind::InvalidEcdsaKey | ErrorKind::InvalidRsaKey(_) => Refusal::BadSignature,
        ErrorKind::InvalidAlgorithm | ErrorKind::InvalidAlgorithmName | ErrorKind::MissingAlgorithm => {
            Refusal::BadAlgorithm
        }
        ErrorKind::InvalidIssuer => Refusal::WrongIssuer,
        ErrorKind::InvalidAudience => Refusal::WrongAudience,
        ErrorKind::MissingRequiredClaim(_) => Refusal::MissingClaim,
        _ => Refusal::Malformed,
    })?;
    let claims = data.claims;
    let skew = i64::try_from(tenant.clock_skew_secs).unwrap_or(0);
    let time = |name: &str| claims.get(name).and_then(Value::as_f64).map(|t| t.floor() as i64);
    let exp = time("exp").ok_or(Refusal::MissingClaim)?;
    if now_secs >= exp.saturating_add(skew) {
        return Err(Refusal::Expired);
    }
    if let Some(nbf) = time("nbf")
        && now_secs.saturating_add(skew) < nbf
    {
        return Err(Refusal::NotYetValid);
    }
    Ok(claims)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn token(header: &Value, payload: &Value) -> String {
        let b64 = |v: &Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string());
        format!("{}.{}.c2ln", b64(header), b64(payload))
    }

    fn tenant(issuer: &str, algorithms: &[SigningAlgorithm]) -> OidcTenant {
        let mut t: OidcTenant = toml::from_str(
            "tenant = \"t\"\nissuer = \"x\"\naudiences = [\"a\"]\njwks_url = \"https://x\"\nroles_claim = \"r\"\n[roles]\nx = \"msl\"\n",
        )
        .unwrap();
        t.issuer = issuer.into();
        t.algorithms = algorithms.to_vec();
        t
    }

    #[test]
    fn the_issuer_chooses_the_tenant_and_only_its_algorithms_pass() {
        use SigningAlgorithm::*;
        let tenants = [tenant("https://a", &[RS256]), tenant("https://b", &[RS256, ES256])];
        let peeked = |alg: &str, iss: Option<&str>| Peeked { alg: alg.into(), kid: None, iss: iss.map(Into::into) };
        assert_eq!(choose(&tenants, &peeked("RS256", Some("https://b"))), Ok((1, RS256)));
        assert_eq!(choose(&tenants, &peeked("ES256", Some("https://b"))), Ok((1, ES256)));
        assert_eq!(choose(&tenants, &peeked("ES256", Some("https://a"))), Err(Refusal::BadAlgorithm));
        for alg in ["none", "None", "HS256", "RS512", "rs256", ""] {
            assert_eq!(choose(&tenants, &peeked(alg, Some("https://b"))), Err(Refusal::BadAlgorithm), "{alg}");
        }
        assert_eq!(choose(&tenants, &peeked("RS256", Some("https://c"))), Err(Refusal::WrongIssuer));
        assert_eq!(choose(&tenants, &peeked("RS256", Some("https://a/"))), Err(Refusal::WrongIssuer), "exactly");
        assert_eq!(choose(&tenants, &peeked("RS256", None)), Err(Refusal::MissingClaim));
    }

    /// An ES256 key pair: (signing key, verifying key).
    fn es256() -> (jsonwebtoken::EncodingKey, DecodingKey) {
        use ring::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair as _};
        let rng = ring::rand::SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
        let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng).unwrap();
        let point = pair.public_key().as_ref();
        let b64 = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
        let decoding = DecodingKey::from_ec_components(&b64(&point[1..33]), &b64(&point[33..65])).unwrap();
        (jsonwebtoken::EncodingKey::from_ec_der(pkcs8.as_ref()), decoding)
    }

    #[test]
    fn signature_audience_and_time_are_checked_at_the_time_passed_in() {
        let (signing, verifying) = es256();
        let (_, other_key) = es256();
        let mut t = tenant("https://a", &[SigningAlgorithm::ES256]);
        t.audiences = vec!["api://liaison".into(), "liaison-relay".into()];
        t.clock_skew_secs = 30;
        let sign = |claims: Value| {
            jsonwebtoken::encode(&jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256), &claims, &signing).unwrap()
        };
        let at =
            |now: i64, claims: Value, key: &DecodingKey| check(&sign(claims), SigningAlgorithm::ES256, key, &t, now);
        let good = json!({ "iss": "https://a", "aud": "liaison-relay", "nbf": 1_000, "exp": 2_000, "sub": "u" });
        assert_eq!(at(1_500, good.clone(), &verifying).unwrap()["sub"], "u");
        assert_eq!(at(1_500, good.clone(), &other_key), Err(Refusal::BadSignature));
        // exp and nbf, with 30 s of skew either way.
        assert!(at(2_029, good.clone(), &verifying).is_ok());
        assert_eq!(at(2_030, good.clone(), &verifying), Err(Refusal::Expired));
        assert!(at(970, good.clone(), &verifying).is_ok());
        assert_eq!(at(969, good.clone(), &verifying), Err(Refusal::NotYetValid));
        let edited = |edit: &dyn Fn(&mut Value)| {
            let mut claims = good.clone();
            edit(&mut claims);
            at(1_500, claims, &verifying)
        };
        assert_eq!(edited(&|c| c["aud"] = json!("api://other")), Err(Refusal::WrongAudience));
        assert!(edited(&|c| c["aud"] = json!(["api://other", "api://liaison"])).is_ok(), "one of ours is enough");
        assert_eq!(edited(&|c| c["iss"] = json!("https://b")), Err(Refusal::WrongIssuer));
        for claim in ["exp", "aud", "iss"] {
            let missing = edited(&|c| {
                c.as_object_mut().unwrap().remove(claim);
            });
            assert_eq!(missing, Err(Refusal::MissingClaim), "{claim}");
        }
        assert!(
            edited(&|c| {
                c.as_object_mut().unwrap().remove("nbf");
            })
            .is_ok()
        );
        // A token signed with ES256 presented as RS256 (a key of another kind) is refused.
        let as_rs256 = check(&sign(good.clone()), SigningAlgorithm::RS256, &verifying, &t, 1_500);
        assert_eq!(as_rs256, Err(Refusal::BadAlgorithm));
    }

    #[test]
    fn peeking_reads_header_and_issuer_and_refuses_anything_else_as_malformed() {
        let t = token(&json!({ "alg": "none", "kid": "k1" }), &json!({ "iss": "https://a", "sub": "u" }));
        assert_eq!(peek(&t), Ok(Peeked { alg: "none".into(), kid: Some("k1".into()), iss: Some("https://a".into()) }));
        assert_eq!(peek(&format!("{t}.more")), Err(Refusal::Malformed));
        assert_eq!(peek("a.b"), Err(Refusal::Malformed));
        assert_eq!(peek("!!.!!.!!"), Err(Refusal::Malformed));
        assert_eq!(peek(&token(&json!({ "kid": "k" }), &json!({}))), Err(Refusal::Malformed), "no alg");
        assert_eq!(peek(&token(&json!("RS256"), &json!({}))), Err(Refusal::Malformed));
        let long = token(&json!({ "alg": "RS256" }), &json!({ "pad": "x".repeat(MAX_TOKEN_BYTES) }));
        assert_eq!(peek(&long), Err(Refusal::Malformed));
    }
}
