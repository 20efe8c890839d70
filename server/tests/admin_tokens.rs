//! Token lifetimes, through the admin API
//! (`app(state).oneshot(request)` over a real store and relay actor).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use http_body_util::BodyExt;
use liaison_server::auth::RoleName;
use liaison_server::config::Config;
use liaison_server::connections::PerToken;
use liaison_server::http::{AppState, app};
use liaison_server::metrics::Metrics;
use liaison_server::{now_ms, open_data, relay};
use serde_json::{Value, json};
use tower::ServiceExt;

/// A relay's state: `pharma-a` (an admin, an MSL).
struct Fixture {
    _dir: tempfile::TempDir,
    app: Router,
    admin_a: String,
}

impl Fixture {
    async fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let config = Config { data_dir: dir.path().join("data"), ..Config::default() };
        let data = open_data(&config).unwrap();
        let (store, auth) = (data.store.clone(), data.auth.clone());
        let now = now_ms();
        auth.add_tenant("pharma-a", now).unwrap();
        auth.add_team("pharma-a", "onc-east").unwrap();
        auth.put_user("pharma-a", "admin-a", RoleName::Admin, &[]).unwrap();
        auth.put_user("pharma-a", "sato", RoleName::Msl, &["onc-east".to_owned()]).unwrap();
        let (_, admin_a) = auth.issue_token("pharma-a", "admin-a", "laptop", None, now).unwrap();
        let metrics = Arc::new(Metrics::default());
        let relay = relay::spawn(
            store.clone(),
            auth.clone(),
            data.ledger.clone(),
            metrics.clone(),
            relay::RelaySettings::from_config(&config),
        );
        let state = AppState {
            store,
            auth,
            data,
            backup_root: config.backup_root(),
            export_root: config.export_root(),
            relay,
            metrics,
            limits: config.limits.clone(),
            connections_per_token: PerToken::default(),
        };
        Self { _dir: dir, app: app(state), admin_a }
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

    /// The stored record of the token issued for `device` of `tenant` (as an admin lists it).
    async fn token_record(&self, admin: &str, tenant: &str, device: &str) -> Value {
        let (status, body) = self.call("GET", &format!("/admin/v1/tokens?tenant={tenant}"), admin, None).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        body["tokens"].as_array().unwrap().iter().find(|t| t["device"] == device).expect("the token is listed").clone()
    }
}

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
