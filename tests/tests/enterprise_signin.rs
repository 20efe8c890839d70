//! End-to-end: enterprise sign-in against a real relay. The test is the identity provider: it
//! makes its keys (ES256 with ring; RS256 from a test-only fixture key, `tests/fixtures/idp/`),
//! serves its JWKS over HTTP on 127.0.0.1, writes the relay's `[[oidc]]` configuration pointing
//! at it, and signs access tokens.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use futures::future::BoxFuture;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use liaison_core::Role;
use liaison_core::client::{
    ClientOptions, ConnState, Credential, CredentialProvider, CredentialReason, IssuedCredential, ProviderFailed,
    SyncClient, SyncProblem, Trust, WipeReason,
};
use liaison_core::model::*;
use liaison_core::storage::SledKv;
use liaison_core::store::{StoreOptions, SystemClock};
use liaison_core::{DocStore, Identity};
use liaison_e2e::*;
use ring::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair as _};
use serde_json::{Value, json};

const ISSUER: &str = "https://login.example.test/pharma-a/v2.0";
const AUDIENCE: &str = "api://liaison";
/// The relay fetches the keys again for an unknown `kid` at most this often.
const MIN_REFRESH_SECS: u64 = 2;

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// One signing key of the test IdP.
#[derive(Clone)]
struct Key {
    kid: String,
    alg: Algorithm,
    encoding: Arc<EncodingKey>,
    /// Its public JWK, as published.
    jwk: Value,
}

impl Key {
    fn es256(kid: &str) -> Self {
        let rng = ring::rand::SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
        let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng).unwrap();
        // An uncompressed point: 0x04, then X and Y (32 bytes each).
        let point = pair.public_key().as_ref();
        let jwk = json!({
            "kty": "EC", "crv": "P-256", "use": "sig", "kid": kid,
            "x": b64(&point[1..33]), "y": b64(&point[33..65]),
        });
        Self {
            kid: kid.into(),
            alg: Algorithm::ES256,
            encoding: Arc::new(EncodingKey::from_ec_der(pkcs8.as_ref())),
            jwk,
        }
    }

    fn rs256(kid: &str) -> Self {
        let der = include_bytes!("../fixtures/idp/rsa-2048-private-pkcs1.der");
        let mut jwk: Value = serde_json::from_str(include_str!("../fixtures/idp/rsa-2048-public.jwk.json")).unwrap();
        jwk["kid"] = json!(kid);
        jwk["use"] = json!("sig");
        jwk["alg"] = json!("RS256");
        Self { kid: kid.into(), alg: Algorithm::RS256, encoding: Arc::new(EncodingKey::from_rsa_der(der)), jwk }
    }

    fn sign(&self, claims: &Value) -> String {
        let mut header = Header::new(self.alg);
        header.kid = Some(self.kid.clone());
        jsonwebtoken::encode(&header, claims, &self.encoding).unwrap()
    }
}

/// The test's identity provider: the keys it publishes, and how often the relay fetched them.
struct Idp {
    published: Arc<Mutex<Vec<Value>>>,
    fetches: Arc<AtomicUsize>,
    jwks_url: String,
}

impl Idp {
    async fn start(keys: &[&Key]) -> Self {
        let published = Arc::new(Mutex::new(keys.iter().map(|k| k.jwk.clone()).collect::<Vec<_>>()));
        let fetches = Arc::new(AtomicUsize::new(0));
        let (served, counted) = (published.clone(), fetches.clone());
        let app = axum::Router::new().route(
            "/keys",
            axum::routing::get(move || {
                let (served, counted) = (served.clone(), counted.clone());
                async move {
                    counted.fetch_add(1, Ordering::SeqCst);
                    let keys = served.lock().unwrap().clone();
                    axum::Json(json!({ "keys": keys }))
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        Self { published, fetches, jwks_url: format!("http://{addr}/keys") }
    }

    fn publish(&self, keys: &[&Key]) {
        *self.published.lock().unwrap() = keys.iter().map(|k| k.jwk.clone()).collect();
    }

    fn fetches(&self) -> usize {
        self.fetches.load(Ordering::SeqCst)
    }
}

fn now_secs() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64
}

/// Claims of a good access token for `user` with IdP roles `roles`.
fn claims(user: &str, roles: &[&str]) -> Value {
    let now = now_secs();
    json!({
        "iss": ISSUER, "aud": AUDIENCE, "iat": now, "nbf": now - 5, "exp": now + 600,
        "sub": format!("sub-{user}"), "preferred_username": user, "roles": roles,
    })
}

/// A relay whose tenant pharma-a signs in through `idp` (Entra-like claims: app roles in
/// `roles`), with team onc-east and an admin-issued colleague, suzuki.
fn relay_for(idp: &Idp, data: &std::path::Path) -> Relay {
    setup_tenant(data, "pharma-a", "onc-east", &[("suzuki", "msl"), ("admin-a", "admin")]);
    let config = format!(
        r#"
[[oidc]]
tenant = "pharma-a"
issuer = "{ISSUER}"
audiences = ["{AUDIENCE}"]
jwks_url = "{}"
algorithms = ["RS256", "ES256"]
clock_skew_secs = 30
jwks_min_refresh_secs = {MIN_REFRESH_SECS}
credential_ttl_secs = 3600
user_claim = "preferred_username"
roles_claim = "roles"

[oidc.roles]
"Liaison.MSL" = "msl"
"Liaison.Manager" = "manager"

[oidc.teams]
"Liaison.Team.OncEast" = "onc-east"
"Liaison.Team.OncWest" = "onc-west"
"#,
        idp.jwks_url
    );
    let path = data.join("relay.toml");
    std::fs::write(&path, config).unwrap();
    Relay::start(data, &["--config", path.to_str().unwrap()]).unwrap()
}

/// `POST /v1/enrol` with `token` for `device`: (status, body).
fn enrol(relay: &Relay, token: &str, device: &str) -> (u16, Value) {
    relay.api_on(&relay.base, "POST", "/v1/enrol", token, Some(json!({ "device": device })))
}

fn refusal(relay: &Relay, token: &str) -> (u16, String) {
    let (status, body) = enrol(relay, token, "some-phone");
    (status, body["reason"].as_str().unwrap_or_default().to_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_valid_token_enrols_a_device_that_syncs_and_knows_who_it_is() {
    let (es, rs) = (Key::es256("es-1"), Key::rs256("rs-1"));
    let idp = Idp::start(&[&es, &rs]).await;
    let data = tempfile::tempdir().unwrap();
    let relay = relay_for(&idp, data.path());

    let idp_token = es.sign(&claims("sato@pharma-a.example", &["Liaison.MSL", "Liaison.Team.OncEast", "Other"]));
    let (status, enrolled) = enrol(&relay, &idp_token, "sato-phone");
    assert_eq!(status, 201, "{enrolled}");
    assert_eq!(
        (&enrolled["tenant"], &enrolled["user"], &enrolled["device"], &enrolled["role"], &enrolled["teams"]),
        (
            &json!("pharma-a"),
            &json!("sato@pharma-a.example"),
            &json!("sato-phone"),
            &json!("msl"),
            &json!(["onc-east"])
        )
    );
    let credential = enrolled["token"].as_str().unwrap().to_owned();
    assert!(credential.starts_with("lsn_"));
    let now_ms = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64;
    let lifetime = enrolled["expires_at"].as_i64().unwrap() - now_ms;
    assert!((3_500_000..=3_600_000).contains(&lifetime), "capped at credential_ttl_secs: {lifetime}");

    // whoami answers from the credential.
    let (status, me) = relay.api_on(&relay.base, "GET", "/v1/whoami", &credential, None);
    assert_eq!(status, 200, "{me}");
    assert_eq!(
        me,
        json!({
            "tenant": "pharma-a", "user": "sato@pharma-a.example", "device": "sato-phone", "role": "msl",
            "teams": ["onc-east"], "token_id": enrolled["id"],
        })
    );
    let (status, _) = relay.api_on(&relay.base, "GET", "/v1/whoami", &idp_token, None);
    assert_eq!(status, 401, "an IdP token is not a device credential");

    // The enrolled device syncs with a colleague whose token an admin issued (which still works).
    let sato = Device::new(&relay, "pharma-a", "sato@pharma-a.example", "sato-phone", &credential, Role::Msl);
    let (_, suzuki_token) = relay.issue_live("pharma-a", "suzuki", "suzuki-phone");
    let suzuki = Device::new(&relay, "pharma-a", "suzuki", "suzuki-phone", &suzuki_token, Role::Msl);
    let kol = sato.store.create("onc-east", &KolProfile::new("Dr. Ito", "Osaka")).unwrap();
    sato.created(kol);
    sato.synced().await;
    suzuki.client().find(kol);
    suzuki.until_store("sato's record arrives", |s| s.get::<KolProfile>(&kol).is_ok()).await;

    // Removed from the IdP's group: the next check of one of sato's tokens finds no role, and
    // every credential of the user goes; the live device is cut within a second.
    let removed = es.sign(&claims("sato@pharma-a.example", &["Other"]));
    assert_eq!(refusal(&relay, &removed), (401, "no-role".to_owned()));
    let (status, _) = relay.api_on(&relay.base, "GET", "/v1/whoami", &credential, None);
    assert_eq!(status, 401, "the enrolled credential is revoked");
    sato.until("the live device is cut and refused, and wipes its records", |s| {
        matches!(s.problem, Some(SyncProblem::Revoked { http_status: Some(401), wiped: true, .. }))
    })
    .await;

    // RS256 works too; enrolling again updates the user's grants from the token.
    let (status, manager) =
        enrol(&relay, &rs.sign(&claims("kato", &["Liaison.Manager", "Liaison.Team.OncWest"])), "kato-tablet");
    assert_eq!(status, 201, "{manager}");
    assert_eq!((&manager["role"], &manager["teams"]), (&json!("manager"), &json!(["onc-west"])));
    let again = es.sign(&claims("kato", &["Liaison.MSL", "Liaison.Team.OncEast"]));
    let (status, second) = enrol(&relay, &again, "kato-phone");
    assert_eq!(status, 201, "{second}");
    let (_, me) = relay.api_on(&relay.base, "GET", "/v1/whoami", manager["token"].as_str().unwrap(), None);
    assert_eq!((&me["role"], &me["teams"]), (&json!("msl"), &json!(["onc-east"])), "the tablet's grants follow");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_bad_token_is_refused_with_its_reason() {
    let es = Key::es256("es-1");
    let idp = Idp::start(&[&es]).await;
    let data = tempfile::tempdir().unwrap();
    let relay = relay_for(&idp, data.path());
    let good = claims("sato", &["Liaison.MSL"]);
    let with = |edit: &dyn Fn(&mut Value)| {
        let mut c = good.clone();
        edit(&mut c);
        es.sign(&c)
    };
    let now = now_secs();

    // The public key's bytes as an HMAC secret (the classic algorithm confusion).
    let public_bytes = serde_json::to_vec(&es.jwk).unwrap();
    let mut hs_header = Header::new(Algorithm::HS256);
    hs_header.kid = Some(es.kid.clone());
    let hs256 = jsonwebtoken::encode(&hs_header, &good, &EncodingKey::from_secret(&public_bytes)).unwrap();
    let alg_none = format!(
        "{}.{}.",
        b64(json!({ "alg": "none", "kid": "es-1", "typ": "JWT" }).to_string().as_bytes()),
        b64(good.to_string().as_bytes())
    );
    // A good token with its signature swapped for another token's.
    let other = with(&|c| c["sub"] = json!("someone-else"));
    let good_token = es.sign(&good);
    let forged = format!("{}.{}", good_token.rsplit_once('.').unwrap().0, other.rsplit_once('.').unwrap().1);

    let cases: Vec<(&str, String, u16, &str)> = vec![
        ("wrong issuer", with(&|c| c["iss"] = json!("https://evil.example/v2.0")), 401, "wrong-issuer"),
        ("wrong audience", with(&|c| c["aud"] = json!("api://something-else")), 401, "wrong-audience"),
        ("expired", with(&|c| c["exp"] = json!(now - 120)), 401, "expired"),
        ("not yet valid", with(&|c| c["nbf"] = json!(now + 600)), 401, "not-yet-valid"),
        ("alg none", alg_none, 401, "bad-algorithm"),
        ("HS256 with the public key", hs256, 401, "bad-algorithm"),
        ("a swapped signature", forged, 401, "bad-signature"),
        ("no mapped role", with(&|c| c["roles"] = json!(["Liaison.Team.OncEast", "Other"])), 401, "no-role"),
        ("two roles", with(&|c| c["roles"] = json!(["Liaison.MSL", "Liaison.Manager"])), 401, "ambiguous-role"),
        (
            "no user claim",
            with(&|c| {
                c.as_object_mut().unwrap().remove("preferred_username");
            }),
            401,
            "missing-claim",
        ),
        ("not a JWT", "not-a-token".to_owned(), 401, "malformed"),
    ];
    for (what, token, status, reason) in &cases {
        assert_eq!(refusal(&relay, token), (*status, (*reason).to_owned()), "{what}");
    }
    let (status, body) = relay.api_on(&relay.base, "POST", "/v1/enrol", "", Some(json!({ "device": "d" })));
    assert_eq!((status, &body["reason"]), (401, &json!("no-token")));
    // Within the skew, time is forgiven.
    let (status, body) = enrol(&relay, &with(&|c| c["exp"] = json!(now - 10)), "skewed-phone");
    assert_eq!(status, 201, "{body}");

    // A refusal after the token was verified is in the tenant's audit log, with its reason.
    let (_, admin_a) = relay.issue_live("pharma-a", "admin-a", "admin-laptop");
    let (status, audit) = relay.admin_api("GET", "/admin/v1/tenants/pharma-a/audit", &admin_a, None);
    assert_eq!(status, 200, "{audit}");
    let refused: Vec<&str> = audit["entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["action"] == "enrolment-refused")
        .map(|e| e["reason"].as_str().unwrap())
        .collect();
    assert_eq!(refused, ["no-role", "ambiguous-role"], "{audit}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_key_is_fetched_for_its_unknown_kid_at_most_once_per_interval() {
    let (old, new, never) = (Key::es256("2026-old"), Key::es256("2026-new"), Key::es256("never-published"));
    let idp = Idp::start(&[&old]).await;
    let data = tempfile::tempdir().unwrap();
    let relay = relay_for(&idp, data.path());
    let token = |key: &Key| key.sign(&claims("sato", &["Liaison.MSL"]));
    let settle = Duration::from_millis(MIN_REFRESH_SECS * 1000 + 100);

    assert_eq!(enrol(&relay, &token(&old), "phone-1").0, 201);
    assert_eq!(idp.fetches(), 1, "fetched on first use");
    assert_eq!(enrol(&relay, &token(&old), "phone-2").0, 201);
    assert_eq!(idp.fetches(), 1, "then from the cache");

    // The IdP rotates: the new key signs, the old one is still published.
    idp.publish(&[&new, &old]);
    assert_eq!(refusal(&relay, &token(&new)), (401, "unknown-key".into()), "too soon to fetch again");
    assert_eq!(idp.fetches(), 1);
    tokio::time::sleep(settle).await;
    assert_eq!(enrol(&relay, &token(&new), "phone-3").0, 201, "the unknown kid is fetched");
    assert_eq!(idp.fetches(), 2);
    assert_eq!(enrol(&relay, &token(&old), "phone-4").0, 201, "the old key, still cached, still works");
    assert_eq!(idp.fetches(), 2);

    // A kid nobody publishes: refused without a fetch within the interval, and after one too.
    assert_eq!(refusal(&relay, &token(&never)), (401, "unknown-key".into()));
    assert_eq!(idp.fetches(), 2);
    tokio::time::sleep(settle).await;
    assert_eq!(refusal(&relay, &token(&never)), (401, "unknown-key".into()));
    assert_eq!(idp.fetches(), 3, "one fetch for it, and it was not there");
    for _ in 0..5 {
        assert_eq!(refusal(&relay, &token(&never)), (401, "unknown-key".into()));
    }
    assert_eq!(idp.fetches(), 3, "a stream of made-up kids does not hammer the IdP");

    // Withdrawn at the IdP, the old key stops working once the keys are fetched again.
    idp.publish(&[&new]);
    tokio::time::sleep(settle).await;
    assert_eq!(refusal(&relay, &token(&never)), (401, "unknown-key".into()));
    assert_eq!(idp.fetches(), 4);
    assert_eq!(refusal(&relay, &token(&old)), (401, "unknown-key".into()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_audit_log_records_every_admin_action_and_no_secret() {
    let es = Key::es256("es-1");
    let idp = Idp::start(&[&es]).await;
    let data = tempfile::tempdir().unwrap();
    let relay = relay_for(&idp, data.path());
    let bootstrap = relay.bootstrap_token();
    let system = relay.admin_token();
    let mut secrets = vec![bootstrap, system.clone()];

    // System-wide: a tenant is added (the system's log); then its team, user and tokens (its own).
    let (status, _) = relay.admin_api("POST", "/admin/v1/tenants", &system, Some(json!({ "tenant": "pharma-b" })));
    assert_eq!(status, 201);
    let calls: Vec<(&str, &str, Option<Value>, u16)> = vec![
        ("POST", "/admin/v1/tenants/pharma-b/teams", Some(json!({ "team": "cardio" })), 201),
        ("PUT", "/admin/v1/tenants/pharma-b/users/admin-b", Some(json!({ "role": "admin" })), 200),
        ("PUT", "/admin/v1/tenants/pharma-b/users/kim", Some(json!({ "role": "msl", "teams": ["cardio"] })), 200),
        ("PUT", "/admin/v1/tenants/pharma-b/users/lee", Some(json!({ "role": "msl", "teams": ["nope"] })), 404),
    ];
    for (method, path, body, status) in &calls {
        assert_eq!(relay.admin_api(method, path, &system, body.clone()).0, *status, "{method} {path}");
    }
    let (status, issued) = relay.admin_api(
        "POST",
        "/admin/v1/tenants/pharma-b/users/admin-b/tokens",
        &system,
        Some(json!({ "device": "laptop-b" })),
    );
    assert_eq!(status, 201);
    let admin_b = issued["token"].as_str().unwrap().to_owned();
    secrets.push(admin_b.clone());
    let (status, kim) = relay.admin_api(
        "POST",
        "/admin/v1/tenants/pharma-b/users/kim/tokens",
        &admin_b,
        Some(json!({ "device": "kim-phone" })),
    );
    assert_eq!(status, 201);
    secrets.push(kim["token"].as_str().unwrap().to_owned());
    let kim_id = kim["id"].as_str().unwrap();
    // The system admin revokes kim's token: pharma-b's business, so pharma-b's log.
    assert_eq!(relay.admin_api("DELETE", &format!("/admin/v1/tokens/{kim_id}"), &system, None).0, 200);
    // An MSL at the admin API: refused, and recorded.
    let (_, kim2) = relay.admin_api(
        "POST",
        "/admin/v1/tenants/pharma-b/users/kim/tokens",
        &admin_b,
        Some(json!({ "device": "kim-tablet" })),
    );
    secrets.push(kim2["token"].as_str().unwrap().to_owned());
    assert_eq!(relay.admin_api("GET", "/admin/v1/tokens", kim2["token"].as_str().unwrap(), None).0, 403);
    // Without a valid credential there is no admin action: nothing to record.
    assert_eq!(relay.admin_api("GET", "/admin/v1/tokens", "lsn_nobody", None).0, 401);
    // An enrolment, in pharma-a's log.
    let idp_token = es.sign(&claims("sato", &["Liaison.MSL"]));
    secrets.push(idp_token.clone());
    let (status, enrolled) = enrol(&relay, &idp_token, "sato-phone");
    assert_eq!(status, 201);
    secrets.push(enrolled["token"].as_str().unwrap().to_owned());

    let (status, log_b) = relay.admin_api("GET", "/admin/v1/tenants/pharma-b/audit", &admin_b, None);
    assert_eq!(status, 200, "{log_b}");
    let lines = |log: &Value| -> Vec<(String, String, u64, String)> {
        log["entries"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["action"] == "admin-request")
            .map(|e| {
                (
                    e["request"].as_str().unwrap().to_owned(),
                    format!("{}/{}", e["by_tenant"].as_str().unwrap(), e["by_user"].as_str().unwrap()),
                    e["status"].as_u64().unwrap(),
                    e["outcome"].as_str().unwrap().to_owned(),
                )
            })
            .collect()
    };
    let line = |request: &str, by: &str, status: u64, outcome: &str| {
        (request.to_owned(), by.to_owned(), status, outcome.to_owned())
    };
    assert_eq!(
        lines(&log_b),
        [
            line("POST /admin/v1/tenants/pharma-b/teams", "system/admin", 201, "success"),
            line("PUT /admin/v1/tenants/pharma-b/users/admin-b", "system/admin", 200, "success"),
            line("PUT /admin/v1/tenants/pharma-b/users/kim", "system/admin", 200, "success"),
            line("PUT /admin/v1/tenants/pharma-b/users/lee", "system/admin", 404, "refused"),
            line("POST /admin/v1/tenants/pharma-b/users/admin-b/tokens", "system/admin", 201, "success"),
            line("POST /admin/v1/tenants/pharma-b/users/kim/tokens", "pharma-b/admin-b", 201, "success"),
            line(&format!("DELETE /admin/v1/tokens/{kim_id}"), "system/admin", 200, "success"),
            line("POST /admin/v1/tenants/pharma-b/users/kim/tokens", "pharma-b/admin-b", 201, "success"),
            line("GET /admin/v1/tokens", "pharma-b/kim", 403, "refused"),
        ],
        "{log_b}"
    );
    for entry in log_b["entries"].as_array().unwrap() {
        assert_eq!(entry["from"], "127.0.0.1", "{entry}");
        assert!(entry["at"].as_i64().unwrap() > 0);
    }

    // The system's log: the bootstrap exchange, the new tenant; only system admins read it.
    let (status, log_system) = relay.admin_api("GET", "/admin/v1/tenants/system/audit", &system, None);
    assert_eq!(status, 200, "{log_system}");
    assert_eq!(
        lines(&log_system)[..2],
        [
            line("POST /admin/v1/tenants/system/users/admin/tokens", "system/admin", 201, "success"),
            line("POST /admin/v1/tenants", "system/admin", 201, "success"),
        ],
        "{log_system}"
    );
    assert_eq!(relay.admin_api("GET", "/admin/v1/tenants/system/audit", &admin_b, None).0, 404);

    // pharma-a's log has the enrolment, naming the credential by id.
    let (_, admin_a) = relay.issue_live("pharma-a", "admin-a", "admin-laptop");
    secrets.push(admin_a.clone());
    let (status, log_a) = relay.admin_api("GET", "/admin/v1/tenants/pharma-a/audit", &admin_a, None);
    assert_eq!(status, 200, "{log_a}");
    let enrolment = log_a["entries"].as_array().unwrap().iter().find(|e| e["action"] == "device-enrolled").unwrap();
    assert_eq!(
        (&enrolment["by_user"], &enrolment["by_device"], &enrolment["token_id"], &enrolment["from"]),
        (&json!("sato"), &json!("sato-phone"), &enrolled["id"], &json!("127.0.0.1"))
    );

    // No secret anywhere in any log: not a credential, not the bootstrap one, not the IdP's token
    // nor its signature.
    let all = format!("{log_a}{log_b}{log_system}");
    for secret in &secrets {
        assert!(!all.contains(secret.as_str()), "a secret is in the audit log");
        let tail = &secret[secret.len().saturating_sub(20)..];
        assert!(!all.contains(tail), "part of a secret is in the audit log");
    }
}

/// The app's side of sign-in, as MSAL or AppAuth would do it: each call hands out a fresh IdP
/// access token for the user with the IdP roles set now; what it was asked and what the library
/// handed back are recorded.
#[derive(Debug)]
struct IdpProvider {
    key: Key,
    user: String,
    roles: Mutex<Vec<String>>,
    asked: Mutex<Vec<CredentialReason>>,
    issued: Mutex<Vec<IssuedCredential>>,
}

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.kid)
    }
}

impl CredentialProvider for IdpProvider {
    fn credential(&self, reason: CredentialReason) -> BoxFuture<'static, Result<Option<Credential>, ProviderFailed>> {
        self.asked.lock().unwrap().push(reason);
        let roles = self.roles.lock().unwrap().clone();
        let roles: Vec<&str> = roles.iter().map(String::as_str).collect();
        let token = self.key.sign(&claims(&self.user, &roles));
        Box::pin(async move { Ok(Some(Credential::IdpAccessToken(token))) })
    }

    fn issued(&self, credential: IssuedCredential) {
        self.issued.lock().unwrap().push(credential);
    }
}

/// The library itself enrols: the app's provider gives an IdP access token, the library
/// exchanges it at `POST /v1/enrol` for a device credential, hands that back to the app, and
/// syncs. When the user loses the role at the IdP, the relay revokes the user's credentials on
/// the next check of a token, the live socket is cut, the provider is asked again, its new token
/// maps to no role, and the device wipes its records (remote wipe).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_library_enrols_the_providers_idp_token_and_wipes_when_the_user_loses_the_role() {
    let es = Key::es256("es-1");
    let idp = Idp::start(&[&es]).await;
    let data = tempfile::tempdir().unwrap();
    let relay = relay_for(&idp, data.path());
    let user = "sato@pharma-a.example";

    let dir = tempfile::tempdir().unwrap();
    let who = Identity {
        tenant: "pharma-a".into(),
        user: user.into(),
        device: "sato-phone".into(),
        role: Role::Msl,
        install: [5; 8],
    };
    let kv = SledKv::open(dir.path()).unwrap();
    let store = Arc::new(DocStore::with_kv(Arc::new(kv), who, Arc::new(SystemClock), StoreOptions::default()).unwrap());
    let provider = Arc::new(IdpProvider {
        key: es.clone(),
        user: user.into(),
        roles: Mutex::new(vec!["Liaison.MSL".into(), "Liaison.Team.OncEast".into()]),
        asked: Mutex::new(Vec::new()),
        issued: Mutex::new(Vec::new()),
    });
    let client = SyncClient::start(
        store.clone(),
        ClientOptions {
            url: relay.url.clone(),
            token: String::new(),
            credentials: Some(provider.clone()),
            peer_id: "sato-phone".into(),
            storage_id: "sato-phone-store".into(),
            trust: Trust::PinnedKeys { pins: vec![relay.spki_pin] },
            backoff_min: Duration::from_millis(50),
            backoff_max: Duration::from_millis(200),
        },
    )
    .unwrap();
    let kol = store.create("onc-east", &KolProfile::new("Dr. Ito", "Osaka")).unwrap();
    client.announce(kol);
    let mut rx = client.watch_status();
    let synced = tokio::time::timeout(WAIT, async {
        while !matches!(&*rx.borrow_and_update(), s if s.state == ConnState::UpToDate && s.pending_documents == 0) {
            rx.changed().await.unwrap();
        }
    })
    .await;
    assert!(synced.is_ok(), "enrolled and synced: {:?}", client.status());
    assert_eq!(*provider.asked.lock().unwrap(), vec![CredentialReason::Initial]);
    let issued = provider.issued.lock().unwrap().clone();
    assert_eq!(issued.len(), 1, "the device credential was handed to the app to keep");
    assert!(issued[0].token.starts_with("lsn_") && issued[0].expires_at_ms.is_some());
    let (status, me) = relay.api_on(&relay.base, "GET", "/v1/whoami", &issued[0].token, None);
    assert_eq!((status, &me["user"], &me["device"]), (200, &json!(user), &json!("sato-phone")));
    // A colleague reads the record: it reached the relay under the enrolled identity.
    let (_, suzuki_token) = relay.issue_live("pharma-a", "suzuki", "suzuki-phone");
    let suzuki = Device::new(&relay, "pharma-a", "suzuki", "suzuki-phone", &suzuki_token, Role::Msl);
    suzuki.client().find(kol);
    suzuki.until_store("sato's record arrives", |s| s.get::<KolProfile>(&kol).is_ok()).await;

    // Removed from the IdP's group: the next token the relay checks maps to no role.
    *provider.roles.lock().unwrap() = vec!["Other".into()];
    assert_eq!(refusal(&relay, &es.sign(&claims(user, &["Other"]))), (401, "no-role".to_owned()));
    let mut rx = client.watch_status();
    let wiped = tokio::time::timeout(WAIT, async {
        while rx.borrow_and_update().wiped.is_none() {
            rx.changed().await.unwrap();
        }
    })
    .await;
    let s = client.status();
    assert!(wiped.is_ok(), "the device wiped itself: {s:?}");
    assert_eq!(s.wiped, Some(WipeReason::Revoked));
    assert!(matches!(s.problem, Some(SyncProblem::Revoked { wiped: true, .. })), "{s:?}");
    assert!(provider.asked.lock().unwrap().len() >= 2, "asked again after the cut");
    assert!(store.get::<KolProfile>(&kol).is_err(), "the record is gone from the phone");
    assert!(store.all_documents().unwrap().is_empty());
    // No retry storm: sync stopped, the provider is not asked again.
    let asked = provider.asked.lock().unwrap().len();
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(provider.asked.lock().unwrap().len(), asked, "stopped after the wipe");
    client.shutdown().await;
}
