//! Token lifetimes and the single-use bootstrap credential, through the admin API
//! (`app(state).oneshot(request)` over a real store and relay actor).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use http_body_util::BodyExt;
use liaison_server::auth::RoleName;
use liaison_server::config::Config;
use liaison_server::http::{AdminOptions, AppState, app};
use liaison_server::{now_ms, open_data};
use serde_json::{Value, json};
use tower::ServiceExt;

/// A relay's state: the system tenant with its bootstrap credential, and `pharma-a` (an admin,
/// an MSL).
struct Fixture {
    _dir: tempfile::TempDir,
    app: Router,
    /// The credential a first start writes to `DATA/bootstrap-admin-token`.
    bootstrap: String,
    admin_a: String,
}

impl Fixture {
    async fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let config = Config { data_dir: dir.path().join("data"), ..Config::default() };
        let data = open_data(&config).unwrap();
        let auth = data.auth.clone();
        let now = now_ms();
        let (_, bootstrap) = auth.bootstrap_admin("console", now).unwrap();
        auth.add_tenant("pharma-a", now).unwrap();
        auth.add_team("pharma-a", "onc-east").unwrap();
        auth.put_user("pharma-a", "admin-a", RoleName::Admin, &[]).unwrap();
        auth.put_user("pharma-a", "sato", RoleName::Msl, &["onc-east".to_owned()]).unwrap();
        let (_, admin_a) = auth.issue_token("pharma-a", "admin-a", "laptop", None, now).unwrap();
        let state = AppState::start(data, &config, AdminOptions::default());
        Self { _dir: dir, app: app(state), bootstrap, admin_a }
    }

    async fn call(&self, method: &str, path: &str, token: &str, body: Option<Value>) -> (StatusCode, Value) {
        let request = Request::builder()
            .method(method)
            .uri(path)
            .header(header::AUTHORIZATION, format!("Bearer {token}"))
            .header(header::CONTENT_TYPE, "application/json");
        let request = match body {
            Some(body) => request.body(Body::from(serde_json::to_vec(&body).unwrap())),
            None => request.body(Body::empty()),
        }
        .unwrap();
        let response = self.app.clone().oneshot(request).await.unwrap();
        let status = response.status();
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        (status, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
    }

    /// The stored record of the token issued for `device` of `tenant` (as a system admin lists it).
    async fn token_record(&self, admin: &str, tenant: &str, device: &str) -> Value {
        let (status, body) = self.call("GET", &format!("/admin/v1/tokens?tenant={tenant}"), admin, None).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        body["tokens"].as_array().unwrap().iter().find(|t| t["device"] == device).expect("the token is listed").clone()
    }
}

const SYSTEM_TOKENS: &str = "/admin/v1/tenants/system/users/admin/tokens";
const SATO_TOKENS: &str = "/admin/v1/tenants/pharma-a/users/sato/tokens";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_issued_without_a_lifetime_expires_after_the_default() {
    let f = Fixture::new().await;
    let (status, body) = f.call("POST", SATO_TOKENS, &f.admin_a, Some(json!({ "device": "sato-phone" }))).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let token = f.token_record(&f.admin_a, "pharma-a", "sato-phone").await;
    let lifetime_ms = token["expires_at"].as_i64().expect("the token expires") - token["issued_at"].as_i64().unwrap();
    assert_eq!(lifetime_ms, 90 * 86_400 * 1000, "90 days by default: {token}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lifetime_above_the_cap_is_refused_with_a_clear_reason() {
    let f = Fixture::new().await;
    let cap = 365 * 86_400;
    let (status, body) =
        f.call("POST", SATO_TOKENS, &f.admin_a, Some(json!({ "device": "forever", "ttl_secs": 10 * cap }))).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    let reason = body["error"].as_str().unwrap();
    assert!(reason.contains("ttl_secs") && reason.contains(&cap.to_string()), "{reason}");
    let (status, body) =
        f.call("POST", SATO_TOKENS, &f.admin_a, Some(json!({ "device": "a-year", "ttl_secs": cap }))).await;
    assert_eq!(status, StatusCode::CREATED, "up to the cap is fine: {body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_bootstrap_credential_authenticates_exactly_one_admin_request() {
    let f = Fixture::new().await;
    let (status, body) = f.call("POST", SYSTEM_TOKENS, &f.bootstrap, Some(json!({ "device": "ops-laptop" }))).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let operator = body["token"].as_str().unwrap().to_owned();
    for (method, path) in [("POST", SYSTEM_TOKENS), ("GET", "/admin/v1/tenants")] {
        let (status, body) = f.call(method, path, &f.bootstrap, Some(json!({ "device": "again" }))).await;
        assert_eq!((status, body), (StatusCode::UNAUTHORIZED, json!({ "error": "unauthorized" })), "{method} {path}");
    }
    // The operator's own token works, and the bootstrap credential is listed as spent.
    let (status, _) = f.call("GET", "/admin/v1/tenants", &operator, None).await;
    assert_eq!(status, StatusCode::OK);
    let bootstrap = f.token_record(&operator, "system", "console").await;
    assert!(bootstrap["revoked_at"].is_number(), "{bootstrap}");
    let lifetime_ms = bootstrap["expires_at"].as_i64().expect("it expires") - bootstrap["issued_at"].as_i64().unwrap();
    assert_eq!(lifetime_ms, 86_400 * 1000, "a day at most: {bootstrap}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn of_requests_racing_with_the_bootstrap_credential_exactly_one_succeeds() {
    let f = Fixture::new().await;
    let racing =
        (0..8).map(|i| f.call("POST", SYSTEM_TOKENS, &f.bootstrap, Some(json!({ "device": format!("d{i}") }))));
    let statuses: Vec<StatusCode> = futures::future::join_all(racing).await.into_iter().map(|(s, _)| s).collect();
    assert_eq!(statuses.iter().filter(|s| **s == StatusCode::CREATED).count(), 1, "{statuses:?}");
    assert_eq!(statuses.iter().filter(|s| **s == StatusCode::UNAUTHORIZED).count(), 7, "{statuses:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_that_fails_does_not_spend_the_bootstrap_credential() {
    let f = Fixture::new().await;
    let missing_user = "/admin/v1/tenants/system/users/nobody/tokens";
    let (status, _) = f.call("POST", missing_user, &f.bootstrap, Some(json!({ "device": "d" }))).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = f.call("POST", SYSTEM_TOKENS, &f.bootstrap, Some(json!({ "device": "bad name!" }))).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, body) = f.call("POST", SYSTEM_TOKENS, &f.bootstrap, Some(json!({ "device": "ops-laptop" }))).await;
    assert_eq!(status, StatusCode::CREATED, "the typo did not lock the operator out: {body}");
    let (status, _) = f.call("POST", SYSTEM_TOKENS, &f.bootstrap, Some(json!({ "device": "again" }))).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "spent by the request that succeeded");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_bootstrap_credential_opens_no_device_endpoint() {
    let f = Fixture::new().await;
    let (status, _) = f.call("GET", "/v1/catalog", &f.bootstrap, None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    // Refused there, it is still good for its one admin request.
    let (status, _) = f.call("POST", SYSTEM_TOKENS, &f.bootstrap, Some(json!({ "device": "ops-laptop" }))).await;
    assert_eq!(status, StatusCode::CREATED);
}
