//! The admin API's authorisation, route by route, through `app(state).oneshot(request)` over a
//! real store and relay actor: who may call what, and that nothing about an id is revealed before
//! the caller is known to be allowed to ask about it.
//!
//! The order every admin route follows: authenticate (no or bad token: 401), then the role (not an
//! admin, or not a system admin where one is needed: 403), and only then look anything up. A
//! tenant's admin asking about another tenant's tenant, token or document gets the answer a
//! missing one gets (404, same bytes).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderMap, Request, StatusCode, header};
use http_body_util::BodyExt;
use liaison_core::model::{Channel, Interaction, Kind};
use liaison_core::storage::MemoryKv;
use liaison_core::store::{StoreOptions, SystemClock};
use liaison_core::{DocStore, DocumentId, Identity, Role};
use liaison_server::auth::RoleName;
use liaison_server::config::{Config, Secret};
use liaison_server::http::{AdminOptions, AppState, app};
use liaison_server::{now_ms, open_data, relay};
use serde_json::{Value, json};
use tower::ServiceExt;

/// One response, whole: what "byte-identical" compares.
#[derive(Debug, PartialEq)]
struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    body: Vec<u8>,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }
}

/// A relay's state over a temporary sled store: the system tenant, `pharma-a` (an admin, an MSL, a
/// manager, a medical-information user, one submitted interaction) and `pharma-b` (an admin).
struct Fixture {
    _dir: tempfile::TempDir,
    app: Router,
    relay: relay::RelayHandle,
    system: String,
    admin_a: String,
    admin_b: String,
    msl_a: String,
    manager_a: String,
    medical_information_a: String,
    /// The id of the MSL's token (pharma-a).
    msl_token_id: String,
    /// pharma-a's submitted interaction.
    doc: DocumentId,
    /// pharma-a's support grant to the system admin.
    grant_id: String,
}

impl Fixture {
    async fn new() -> Self {
        Self::with(AdminOptions::default()).await
    }

    async fn with(admin: AdminOptions) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let config = Config { data_dir: dir.path().join("data"), ..Config::default() };
        let data = open_data(&config).unwrap();
        let (store, auth) = (data.store.clone(), data.auth.clone());
        let now = now_ms();
        auth.bootstrap_admin("bootstrap", now).unwrap();
        let (_, system) = auth.issue_token("system", "admin", "console", None, now).unwrap();
        for (tenant, team) in [("pharma-a", "onc-east"), ("pharma-b", "onc-west")] {
            auth.add_tenant(tenant, now).unwrap();
            auth.add_team(tenant, team).unwrap();
        }
        let team = ["onc-east".to_owned()];
        auth.put_user("pharma-a", "admin-a", RoleName::Admin, &[]).unwrap();
        auth.put_user("pharma-a", "sato", RoleName::Msl, &team).unwrap();
        auth.put_user("pharma-a", "kato", RoleName::Manager, &team).unwrap();
        auth.put_user("pharma-a", "mori", RoleName::MedicalInformation, &team).unwrap();
        auth.put_user("pharma-b", "admin-b", RoleName::Admin, &[]).unwrap();
        let token = |tenant: &str, user: &str| auth.issue_token(tenant, user, "laptop", None, now).unwrap();
        let (msl_record, msl_a) = token("pharma-a", "sato");

        // The interaction is made on sato's device and arrives at the relay's store.
        let device = DocStore::with_kv(
            Arc::new(MemoryKv::new()),
            Identity {
                tenant: "pharma-a".into(),
                user: "sato".into(),
                device: "laptop".into(),
                role: Role::Msl,
                install: [1; 8],
            },
            Arc::new(SystemClock),
            StoreOptions::default(),
        )
        .unwrap();
        let kol = DocumentId::from_bytes([9; 16]);
        let doc = device.create("onc-east", &Interaction::new(&kol, now, Channel::InPerson)).unwrap();
        device.submit::<Interaction>(&doc).unwrap();
        store.merge_remote(&doc, &device.export(&doc).unwrap()).unwrap();
        assert_eq!(
            store.owner_of(&doc).unwrap(),
            Some(("pharma-a".into(), "onc-east".into(), Some(Kind::Interaction)))
        );

        let admin_a_principal = auth.authenticate(&token("pharma-a", "admin-a").1, now).unwrap();
        let grant = auth.add_support_grant(&admin_a_principal, "pharma-a", "admin", 3600, "ticket 1", now).unwrap();

        let state = AppState::start(data, &config, admin);
        let relay = state.relay.clone();
        Self {
            app: app(state),
            relay,
            system,
            admin_a: token("pharma-a", "admin-a").1,
            admin_b: token("pharma-b", "admin-b").1,
            manager_a: token("pharma-a", "kato").1,
            medical_information_a: token("pharma-a", "mori").1,
            msl_a,
            msl_token_id: msl_record.id,
            doc,
            grant_id: grant.id,
            _dir: dir,
        }
    }

    async fn call(&self, method: &str, path: &str, token: Option<&str>, body: Option<&Value>) -> Answer {
        let mut request = Request::builder().method(method).uri(path);
        if let Some(token) = token {
            request = request.header(header::AUTHORIZATION, format!("Bearer {token}"));
        }
        let request = match body {
            Some(body) => request
                .header(header::CONTENT_TYPE, "application/json")
                .body(Body::from(serde_json::to_vec(body).unwrap())),
            None => request.body(Body::empty()),
        }
        .unwrap();
        let response = self.app.clone().oneshot(request).await.unwrap();
        let (parts, body) = response.into_parts();
        Answer { status: parts.status, headers: parts.headers, body: body.collect().await.unwrap().to_bytes().to_vec() }
    }

    /// Every admin route (the `/admin/v1/...` list in `app()`), with what a system admin sends.
    fn routes(&self) -> Vec<AdminRoute> {
        let missing_doc = DocumentId::from_bytes([0x5a; 16]);
        let (doc, token_id, grant_id) = (self.doc, &self.msl_token_id, &self.grant_id);
        let route = |method, path: String, missing: Option<String>, body: Option<Value>, scope| AdminRoute {
            method,
            path,
            missing,
            body,
            scope,
        };
        use Scope::*;
        vec![
            route("POST", "/admin/v1/tenants".into(), None, Some(json!({ "tenant": "pharma-c" })), System),
            route("GET", "/admin/v1/tenants".into(), None, None, System),
            route(
                "DELETE",
                "/admin/v1/tenants/pharma-a".into(),
                Some("/admin/v1/tenants/pharma-z".into()),
                None,
                System,
            ),
            route(
                "POST",
                "/admin/v1/tenants/pharma-a/export".into(),
                Some("/admin/v1/tenants/pharma-z/export".into()),
                None,
                Tenant,
            ),
            route(
                "POST",
                "/admin/v1/tenants/pharma-a/teams".into(),
                Some("/admin/v1/tenants/pharma-z/teams".into()),
                Some(json!({ "team": "onc-west" })),
                Tenant,
            ),
            route(
                "PUT",
                "/admin/v1/tenants/pharma-a/users/sato".into(),
                Some("/admin/v1/tenants/pharma-z/users/sato".into()),
                Some(json!({ "role": "manager", "teams": ["onc-east"] })),
                Tenant,
            ),
            route(
                "POST",
                "/admin/v1/tenants/pharma-a/users/sato/tokens".into(),
                Some("/admin/v1/tenants/pharma-z/users/sato/tokens".into()),
                Some(json!({ "device": "tablet" })),
                Tenant,
            ),
            route(
                "POST",
                "/admin/v1/tenants/pharma-a/support-grants".into(),
                Some("/admin/v1/tenants/pharma-z/support-grants".into()),
                Some(json!({ "user": "admin", "ttl_secs": 3600, "reason": "ticket 2" })),
                Own,
            ),
            route(
                "GET",
                "/admin/v1/tenants/pharma-a/support-grants".into(),
                Some("/admin/v1/tenants/pharma-z/support-grants".into()),
                None,
                Tenant,
            ),
            route(
                "DELETE",
                format!("/admin/v1/tenants/pharma-a/support-grants/{grant_id}"),
                Some(format!("/admin/v1/tenants/pharma-z/support-grants/{grant_id}")),
                None,
                Own,
            ),
            route(
                "GET",
                "/admin/v1/tenants/pharma-a/audit".into(),
                Some("/admin/v1/tenants/pharma-z/audit".into()),
                None,
                Own,
            ),
            route("GET", "/admin/v1/tokens".into(), None, None, EveryAdmin),
            route(
                "GET",
                "/admin/v1/tokens?tenant=pharma-a".into(),
                Some("/admin/v1/tokens?tenant=pharma-z".into()),
                None,
                Tenant,
            ),
            route(
                "DELETE",
                format!("/admin/v1/tokens/{token_id}"),
                Some("/admin/v1/tokens/tok_000000000000".into()),
                None,
                Tenant,
            ),
            route(
                "POST",
                format!("/admin/v1/documents/{doc}/unlock"),
                Some(format!("/admin/v1/documents/{missing_doc}/unlock")),
                Some(json!({ "reason": "wrong date" })),
                Tenant,
            ),
            route(
                "DELETE",
                format!("/admin/v1/documents/{doc}"),
                Some(format!("/admin/v1/documents/{missing_doc}")),
                None,
                Tenant,
            ),
            route("GET", "/admin/v1/stats".into(), None, None, System),
            route("POST", "/admin/v1/backup".into(), None, None, System),
        ]
    }
}

/// Who may call a route.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Scope {
    /// System admins only: every other admin gets 403.
    System,
    /// System admins and the tenant's own admins; another tenant's admin gets what a missing
    /// tenant, token or document gets.
    Tenant,
    /// Any admin (the answer is limited to the admin's tenant).
    EveryAdmin,
    /// The tenant's own admins only (support grants, the audit log: how a tenant oversees the
    /// system admins): system admins get 403, another tenant's admin what a missing tenant gets.
    Own,
}

#[derive(Debug, Clone)]
struct AdminRoute {
    method: &'static str,
    /// The route naming pharma-a's tenant, token or document (or no id).
    path: String,
    /// The same route naming a tenant, token or document that does not exist.
    missing: Option<String>,
    body: Option<Value>,
    scope: Scope,
}

impl AdminRoute {
    fn label(&self) -> String {
        format!("{} {}", self.method, self.path)
    }
}

const NO_TOKEN: Option<&str> = None;

/// A table test's findings: every route is checked, then every failure is reported at once.
#[derive(Debug, Default)]
struct Findings(Vec<String>);

impl Findings {
    fn check(&mut self, ok: bool, what: impl FnOnce() -> String) {
        if !ok {
            self.0.push(what());
        }
    }

    fn assert_none(self) {
        assert!(self.0.is_empty(), "{} failures:\n{}", self.0.len(), self.0.join("\n"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn callers_without_a_valid_token_or_an_admin_role_are_refused_before_any_lookup() {
    let f = Fixture::new().await;
    let mut findings = Findings::default();
    for route in f.routes() {
        let label = route.label();
        let body = route.body.as_ref();
        for token in [NO_TOKEN, Some("lsn_not-a-token")] {
            let answer = f.call(route.method, &route.path, token, body).await;
            findings.check(answer.json() == json!({ "error": "unauthorized" }) && answer.status == 401, || {
                format!("{label} with token {token:?}: {} {}", answer.status, answer.json())
            });
        }
        if body.is_some() {
            // Authentication comes before the body is read.
            let answer = f.call(route.method, &route.path, NO_TOKEN, None).await;
            findings.check(answer.status == 401, || format!("{label} with no token nor body: {}", answer.status));
        }
        for (role, token) in
            [("msl", &f.msl_a), ("manager", &f.manager_a), ("medical-information", &f.medical_information_a)]
        {
            let answer = f.call(route.method, &route.path, Some(token), body).await;
            findings.check(answer.json() == json!({ "error": "forbidden" }) && answer.status == 403, || {
                format!("{label} as {role}: {} {}", answer.status, answer.json())
            });
        }
    }
    findings.assert_none();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_tenants_admin_is_refused_and_learns_nothing_about_ids() {
    let f = Fixture::new().await;
    let mut findings = Findings::default();
    for route in f.routes() {
        let label = route.label();
        let body = route.body.as_ref();
        let answer = f.call(route.method, &route.path, Some(&f.admin_b), body).await;
        match route.scope {
            Scope::System => findings.check(answer.status == 403, || {
                format!("{label} as pharma-b's admin: {} {} (want 403)", answer.status, answer.json())
            }),
            Scope::Tenant | Scope::Own => {
                let missing = route.missing.as_deref().expect("tenant routes name something");
                let for_missing = f.call(route.method, missing, Some(&f.admin_b), body).await;
                findings.check(answer.status == 404 && answer == for_missing, || {
                    format!(
                        "{label} as pharma-b's admin: {} {}, for a missing one {} {} (want 404, alike)",
                        answer.status,
                        answer.json(),
                        for_missing.status,
                        for_missing.json()
                    )
                });
            }
            Scope::EveryAdmin => findings.check(answer.status == 200, || {
                format!("{label} as pharma-b's admin: {} {} (want 200)", answer.status, answer.json())
            }),
        }
    }
    // Listing tokens shows pharma-b's admin its own tenant's only.
    let listed = f.call("GET", "/admin/v1/tokens", Some(&f.admin_b), None).await.json();
    let tenants: Vec<&str> =
        listed["tokens"].as_array().into_iter().flatten().filter_map(|t| t["tenant"].as_str()).collect();
    findings.check(tenants == ["pharma-b"], || format!("pharma-b's admin lists tokens: {listed}"));
    findings.assert_none();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_are_byte_identical_for_existing_and_missing_ids() {
    let f = Fixture::new().await;
    let mut findings = Findings::default();
    for route in f.routes() {
        let Some(missing) = route.missing.as_deref() else { continue };
        let label = route.label();
        let body = route.body.as_ref();
        for (who, token) in [
            ("nobody", None),
            ("a bad token", Some("lsn_not-a-token")),
            ("an msl", Some(f.msl_a.as_str())),
            ("another tenant's admin", Some(f.admin_b.as_str())),
        ] {
            let existing = f.call(route.method, &route.path, token, body).await;
            let for_missing = f.call(route.method, missing, token, body).await;
            findings.check(!existing.status.is_success() && existing == for_missing, || {
                format!(
                    "{label} as {who}: {} {}, for a missing id {} {}",
                    existing.status,
                    existing.json(),
                    for_missing.status,
                    for_missing.json()
                )
            });
        }
    }
    // A malformed document id is not looked at before the caller is.
    for (token, want) in [(None, 401), (Some(f.msl_a.as_str()), 403)] {
        let answer = f.call("DELETE", "/admin/v1/documents/not-an-id", token, None).await;
        findings.check(answer.status == want, || format!("a malformed document id: {} (want {want})", answer.status));
    }
    findings.assert_none();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn system_admins_and_the_tenants_own_admin_succeed() {
    let mut findings = Findings::default();
    let count = Fixture::new().await.routes().len();
    for index in 0..count {
        let scope = Fixture::new().await.routes()[index].scope;
        let mut callers = Vec::new();
        if scope != Scope::Own {
            callers.push("a system admin");
        }
        if scope != Scope::System {
            callers.push("pharma-a's admin");
        }
        for who in callers {
            // A fresh relay for each call: some of them erase or purge.
            let f = Fixture::new().await;
            let route = f.routes().swap_remove(index);
            let token = if who == "a system admin" { &f.system } else { &f.admin_a };
            let answer = f.call(route.method, &route.path, Some(token), route.body.as_ref()).await;
            findings.check(answer.status.is_success(), || {
                format!("{} as {who}: {} {}", route.label(), answer.status, answer.json())
            });
        }
    }
    // Routes for the tenant's own admins refuse system admins.
    let f = Fixture::new().await;
    for route in f.routes().into_iter().filter(|r| r.scope == Scope::Own) {
        let answer = f.call(route.method, &route.path, Some(&f.system), route.body.as_ref()).await;
        findings.check(answer.status == 403, || {
            format!("{} as a system admin: {} {} (want 403)", route.label(), answer.status, answer.json())
        });
    }
    // A missing token or document is 404 for a system admin too.
    let f = Fixture::new().await;
    for route in f.routes() {
        let Some(missing) = route.missing.as_deref() else { continue };
        if !missing.contains("/tokens/") && !missing.contains("/documents/") {
            continue;
        }
        let answer = f.call(route.method, missing, Some(&f.system), route.body.as_ref()).await;
        findings.check(answer.status == 404, || {
            format!("{} for a missing id: {} {}", route.label(), answer.status, answer.json())
        });
    }
    findings.assert_none();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_need_the_metrics_token_when_one_is_set() {
    let open = Fixture::new().await;
    assert_eq!(open.call("GET", "/metrics", None, None).await.status, StatusCode::OK);
    let secret = "scrape-0123456789abcdef";
    let f = Fixture::with(AdminOptions { metrics_token: Some(Secret::new(secret)), ..AdminOptions::default() }).await;
    for token in [None, Some("scrape-0123456789abcdeF"), Some(&secret[..8]), Some(f.system.as_str())] {
        let answer = f.call("GET", "/metrics", token, None).await;
        assert_eq!((answer.status, answer.json()), (StatusCode::UNAUTHORIZED, json!({ "error": "unauthorized" })));
    }
    let answer = f.call("GET", "/metrics", Some(secret), None).await;
    assert_eq!(answer.status, StatusCode::OK);
    assert!(String::from_utf8_lossy(&answer.body).contains("liaison_connections_open"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_answers_only_while_the_sync_engine_does() {
    let f = Fixture::new().await;
    assert_eq!(f.call("GET", "/readyz", None, None).await.status, StatusCode::OK);
    // The actor that owns the engine stops: the relay is no longer ready, though HTTP still is.
    f.relay.shutdown().await;
    let answer = f.call("GET", "/readyz", None, None).await;
    assert_eq!(answer.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(answer.body, b"sync engine not responding\n");
    assert_eq!(f.call("GET", "/healthz", None, None).await.status, StatusCode::OK);
}
