//! The control API over real HTTP against real storage: SQLite always, PostgreSQL too when
//! `TANDEM_TEST_POSTGRES_URL` names a server (CI starts one; see scripts/with-postgres).
//!
//! Each check runs once per back end on a fresh database.

use serde_json::{json, Value};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tandem_controlplane::api::{self, ApiState};
use tandem_controlplane::storage::{CallRecordRow, Storage};

struct Server {
    addr: SocketAddr,
    state: ApiState,
    admin: String,
}

async fn fresh_storage(backend: &str) -> Option<Storage> {
    match backend {
        "sqlite" => {
            let dir = std::env::temp_dir().join(format!("tandem-api-{}", uuid_like()));
            std::fs::create_dir_all(&dir).unwrap();
            Some(
                Storage::open(&format!("sqlite://{}", dir.join("t.db").display()))
                    .await
                    .unwrap(),
            )
        }
        _ => {
            let admin_url = std::env::var("TANDEM_TEST_POSTGRES_URL").ok()?;
            let db = format!("t_{}", uuid_like());
            sqlx::any::install_default_drivers();
            let pool = sqlx::AnyPool::connect(&admin_url).await.unwrap();
            sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {db}")))
                .execute(&pool)
                .await
                .unwrap();
            let base = admin_url.rsplit_once('/').unwrap().0;
            Some(Storage::open(&format!("{base}/{db}")).await.unwrap())
        }
    }
}

fn uuid_like() -> String {
    let b: [u8; 8] = api::auth::random_bytes();
    b.iter().map(|x| format!("{x:02x}")).collect()
}

async fn start(backend: &str) -> Option<Server> {
    let storage = fresh_storage(backend).await?;
    let state = ApiState::new(storage.clone(), [3; 32]);
    let admin = api::tenants::system_token(&storage, "tests").await.unwrap();
    let app = api::router(state.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(
            listener,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .await
        .unwrap();
    });
    Some(Server { addr, state, admin })
}

struct Reply {
    status: u16,
    etag: Option<String>,
    body: Value,
}

impl Server {
    async fn call(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
        if_match: Option<&str>,
    ) -> Reply {
        self.raw(
            method,
            path,
            token,
            body.map(|b| b.to_string()),
            if_match,
            "application/json",
        )
        .await
    }

    async fn raw(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<String>,
        if_match: Option<&str>,
        content_type: &str,
    ) -> Reply {
        let stream = tokio::net::TcpStream::connect(self.addr).await.unwrap();
        let (mut sender, conn) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
                .await
                .unwrap();
        tokio::spawn(conn);
        let mut req = hyper::Request::builder()
            .method(method)
            .uri(path)
            .header("host", "test");
        if let Some(t) = token {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        if let Some(v) = if_match {
            req = req.header("if-match", v);
        }
        if body.is_some() {
            req = req.header("content-type", content_type);
        }
        let req = req
            .body(http_body_util::Full::new(bytes::Bytes::from(
                body.unwrap_or_default(),
            )))
            .unwrap();
        let res = sender.send_request(req).await.unwrap();
        let status = res.status().as_u16();
        let etag = res
            .headers()
            .get("etag")
            .map(|v| v.to_str().unwrap().to_string());
        use http_body_util::BodyExt;
        let bytes = res.into_body().collect().await.unwrap().to_bytes();
        let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        Reply { status, etag, body }
    }

    async fn login(&self, tenant: &str, username: &str, password: &str) -> Reply {
        let body = json!({"tenant": tenant, "username": username, "password": password});
        self.call("POST", "/api/v1/sessions", None, Some(body), None)
            .await
    }

    async fn post(&self, path: &str, token: &str, body: Value) -> Reply {
        self.call("POST", path, Some(token), Some(body), None).await
    }

    async fn get(&self, path: &str, token: &str) -> Reply {
        self.call("GET", path, Some(token), None, None).await
    }

    /// Two tenants with an admin token each, plus agent and supervisor tokens for acme.
    async fn two_tenants(&self) -> Tenants {
        for (name, domain) in [("acme", "acme.test"), ("globex", "globex.test")] {
            let r = self
                .post(
                    "/api/v1/tenants",
                    &self.admin,
                    json!({"name": name, "domain": domain}),
                )
                .await;
            assert_eq!(r.status, 201, "{}", r.body);
        }
        let token = |tenant: &'static str, role: &'static str| async move {
            let r = self
                .post(
                    &format!("/api/v1/tenants/{tenant}/tokens"),
                    &self.admin,
                    json!({"name": role, "role": role}),
                )
                .await;
            assert_eq!(r.status, 201, "{}", r.body);
            r.body["token"].as_str().unwrap().to_string()
        };
        Tenants {
            acme: token("acme", "tenant_admin").await,
            globex: token("globex", "tenant_admin").await,
            agent: token("acme", "agent").await,
            supervisor: token("acme", "supervisor").await,
        }
    }
}

struct Tenants {
    acme: String,
    globex: String,
    agent: String,
    supervisor: String,
}

fn error_code(r: &Reply) -> &str {
    r.body["error"]["code"].as_str().unwrap_or("")
}

/// Runs `check` against each available back end.
macro_rules! both_backends {
    ($name:ident, $check:ident) => {
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $name() {
            for backend in ["sqlite", "postgres"] {
                match start(backend).await {
                    Some(server) => $check(&server).await,
                    None => eprintln!("{backend}: skipped (TANDEM_TEST_POSTGRES_URL not set)"),
                }
            }
        }
    };
}

both_backends!(login_sessions_and_tokens, check_auth);
both_backends!(tenant_isolation, check_isolation);
both_backends!(roles, check_roles);
both_backends!(validation_errors, check_validation);
both_backends!(versions_and_etags, check_versions);
both_backends!(sip_directory_crud, check_directory);
both_backends!(call_records_search, check_calls);
both_backends!(lists_page_and_sort, check_paging);
both_backends!(audit_log, check_audit);
both_backends!(webhooks_signed_and_retried, check_webhooks);
both_backends!(events_websocket_resumes, check_events);
both_backends!(contact_centre_crud, check_contact_centre);
both_backends!(contact_centre_agent_actions, check_acd_requests);
both_backends!(queue_events_and_stats, check_queue_events);
both_backends!(config_seeds_contact_centre, check_seed);

async fn check_auth(s: &Server) {
    let t = s.two_tenants().await;
    // No token, a garbage token, a forged API token: 401 with our error shape.
    let r = s.call("GET", "/api/v1/me", None, None, None).await;
    assert_eq!((r.status, error_code(&r)), (401, "unauthenticated"));
    assert_eq!(s.get("/api/v1/me", "nonsense").await.status, 401);
    let forged = format!("{}x", &t.acme);
    assert_eq!(s.get("/api/v1/me", &forged).await.status, 401);
    let me = s.get("/api/v1/me", &t.acme).await;
    assert_eq!(me.body["tenant"], "acme");
    assert_eq!(me.body["role"], "tenant_admin");

    // A user logs in with a password and gets a session token.
    let r = s
        .post(
            "/api/v1/tenants/acme/users",
            &t.acme,
            json!({"username": "ann", "role": "supervisor", "password": "long enough"}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.body);
    assert!(r.body.get("password_hash").is_none(), "hash never leaves");
    let user_id = r.body["id"].as_str().unwrap().to_string();
    let bad = s.login("acme", "ann", "wrong one").await;
    assert_eq!(bad.status, 401);
    let wrong_tenant = s.login("globex", "ann", "long enough").await;
    assert_eq!(wrong_tenant.status, 401);
    let login = s.login("acme", "ann", "long enough").await;
    assert_eq!(login.status, 201, "{}", login.body);
    let session = login.body["token"].as_str().unwrap().to_string();
    // Password guessing: after five failures from this address, even the right password is
    // refused (429 + Retry-After) for this login; other logins are unaffected.
    let r = s
        .post(
            "/api/v1/tenants/acme/users",
            &t.acme,
            json!({"username": "bob", "role": "agent", "password": "bob's password"}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.body);
    for _ in 0..5 {
        assert_eq!(s.login("acme", "bob", "guess guess").await.status, 401);
    }
    let locked = s.login("acme", "bob", "bob's password").await;
    assert_eq!((locked.status, error_code(&locked)), (429, "locked"));
    let ann_again = s.login("acme", "ann", "long enough").await;
    assert_eq!(ann_again.status, 201, "{}", ann_again.body);
    assert!(session.starts_with("tds_"));
    let me = s.get("/api/v1/me", &session).await;
    assert_eq!(me.body["role"], "supervisor");
    // A password change ends the session (after the principal cache's few seconds at most;
    // this node forgets at once).
    let r = s
        .call(
            "PATCH",
            &format!("/api/v1/tenants/acme/users/{user_id}"),
            Some(&session),
            Some(json!({"password": "another long one"})),
            None,
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(s.get("/api/v1/me", &session).await.status, 401);

    // Tokens: created once with the secret, listed without it, revoked for good.
    let r = s
        .post(
            "/api/v1/tenants/acme/tokens",
            &t.acme,
            json!({"name": "crm", "role": "agent", "expires_in_s": 3600}),
        )
        .await;
    assert_eq!(r.status, 201);
    let crm = r.body["token"].as_str().unwrap().to_string();
    let id = r.body["id"].as_str().unwrap().to_string();
    let list = s.get("/api/v1/tenants/acme/tokens", &t.acme).await;
    assert!(list.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .all(|i| i.get("token").is_none() && i.get("secret_sha256").is_none()));
    assert_eq!(s.get("/api/v1/me", &crm).await.status, 200);
    let r = s
        .call(
            "DELETE",
            &format!("/api/v1/tenants/acme/tokens/{id}"),
            Some(&t.acme),
            None,
            None,
        )
        .await;
    assert_eq!(r.status, 204);
    assert_eq!(s.get("/api/v1/me", &crm).await.status, 401);
}

async fn check_isolation(s: &Server) {
    let t = s.two_tenants().await;
    let acct = s
        .post(
            "/api/v1/tenants/acme/sip-accounts",
            &t.acme,
            json!({"username": "agent1", "password": "sip secret 1"}),
        )
        .await;
    assert_eq!(acct.status, 201);
    let id = acct.body["id"].as_str().unwrap();
    // globex's admin: every read, change or delete of acme's things is a plain 404.
    for path in [
        "/api/v1/tenants/acme".to_string(),
        "/api/v1/tenants/acme/users".to_string(),
        "/api/v1/tenants/acme/sip-accounts".to_string(),
        format!("/api/v1/tenants/acme/sip-accounts/{id}"),
        "/api/v1/tenants/acme/calls".to_string(),
        "/api/v1/tenants/acme/audit".to_string(),
        "/api/v1/tenants/acme/webhooks".to_string(),
        "/api/v1/tenants/acme/tokens".to_string(),
    ] {
        let r = s.get(&path, &t.globex).await;
        assert_eq!((r.status, error_code(&r)), (404, "not_found"), "{path}");
        assert!(r.body.get("items").is_none());
    }
    // Naming its own tenant with acme's object id does not reach it either.
    let r = s
        .get(
            &format!("/api/v1/tenants/globex/sip-accounts/{id}"),
            &t.globex,
        )
        .await;
    assert_eq!(r.status, 404);
    let r = s
        .call(
            "PATCH",
            &format!("/api/v1/tenants/acme/sip-accounts/{id}"),
            Some(&t.globex),
            Some(json!({"display_name": "pwned"})),
            None,
        )
        .await;
    assert_eq!(r.status, 404);
    let r = s
        .call(
            "DELETE",
            &format!("/api/v1/tenants/globex/sip-accounts/{id}"),
            Some(&t.globex),
            None,
            None,
        )
        .await;
    assert_eq!(r.status, 404);
    let r = s
        .post(
            "/api/v1/tenants/acme/users",
            &t.globex,
            json!({"username": "spy", "role": "agent", "password": "12345678"}),
        )
        .await;
    assert_eq!(r.status, 404);
    // The account is untouched, and the tenant list shows each only itself.
    let r = s
        .get(&format!("/api/v1/tenants/acme/sip-accounts/{id}"), &t.acme)
        .await;
    assert_eq!(r.body["display_name"], "agent1");
    let r = s.get("/api/v1/tenants", &t.globex).await;
    let names: Vec<_> = r.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].clone())
        .collect();
    assert_eq!(names, vec![json!("globex")]);
    let r = s.get("/api/v1/tenants", &s.admin).await;
    assert_eq!(r.body["items"].as_array().unwrap().len(), 2);
}

async fn check_roles(s: &Server) {
    let t = s.two_tenants().await;
    // An agent may not administer; a supervisor reads but does not write; nobody creates
    // tenants but system administrators; nobody grants above their own role.
    let denied = [
        (
            "POST",
            "/api/v1/tenants/acme/users",
            &t.agent,
            Some(json!({"username": "x", "role": "agent", "password": "12345678"})),
        ),
        ("GET", "/api/v1/tenants/acme/users", &t.agent, None),
        (
            "POST",
            "/api/v1/tenants/acme/sip-accounts",
            &t.supervisor,
            Some(json!({"username": "x", "password": "12345678"})),
        ),
        ("GET", "/api/v1/tenants/acme/audit", &t.supervisor, None),
        ("GET", "/api/v1/tenants/acme/tokens", &t.supervisor, None),
        ("GET", "/api/v1/tenants/acme/calls", &t.agent, None),
        (
            "POST",
            "/api/v1/tenants",
            &t.acme,
            Some(json!({"name": "x", "domain": "x.test"})),
        ),
        ("GET", "/api/v1/audit", &t.acme, None),
        (
            "POST",
            "/api/v1/tenants/acme/tokens",
            &t.acme,
            Some(json!({"name": "x", "role": "system_admin"})),
        ),
    ];
    for (method, path, token, body) in denied {
        let r = s.call(method, path, Some(token), body, None).await;
        assert_eq!(
            (r.status, error_code(&r)),
            (403, "forbidden"),
            "{method} {path}"
        );
    }
    assert_eq!(
        s.get("/api/v1/tenants/acme/users", &t.supervisor)
            .await
            .status,
        200
    );
    assert_eq!(
        s.get("/api/v1/tenants/acme/calls", &t.supervisor)
            .await
            .status,
        200
    );
    assert_eq!(s.get("/api/v1/tenants/acme", &t.agent).await.status, 200);
}

async fn check_validation(s: &Server) {
    let t = s.two_tenants().await;
    // A tenant's transcode list: codecs the data plane has, stored, and `null` for the global.
    let tenant = "/api/v1/tenants/acme";
    let patch = |body: serde_json::Value| s.call("PATCH", tenant, Some(&s.admin), Some(body), None);
    let r = patch(json!({"transcode": ["G722", "opus"]})).await;
    assert_eq!(
        (r.status, &r.body["transcode"]),
        (200, &json!(["G722", "opus"])),
        "{}",
        r.body
    );
    let r = patch(json!({"transcode": ["GSM"]})).await;
    assert_eq!((r.status, error_code(&r)), (422, "invalid"), "{}", r.body);
    let r = patch(json!({"transcode": null})).await;
    assert_eq!(
        (r.status, &r.body["transcode"]),
        (200, &json!(null)),
        "{}",
        r.body
    );
    assert_eq!(s.get(tenant, &t.acme).await.body["transcode"], json!(null));
    let path = "/api/v1/tenants/acme/users";
    let cases = [
        (
            json!({"role": "agent", "password": "12345678"}),
            400,
            "username",
        ),
        (
            json!({"username": 5, "role": "agent", "password": "12345678"}),
            400,
            "username",
        ),
        (
            json!({"username": "a", "role": "agent", "password": "12345678", "admin": true}),
            400,
            "admin",
        ),
        (
            json!({"username": "x".repeat(65), "role": "agent", "password": "12345678"}),
            422,
            "username",
        ),
        (
            json!({"username": "Bad Name", "role": "agent", "password": "12345678"}),
            422,
            "username",
        ),
        (
            json!({"username": "a", "role": "king", "password": "12345678"}),
            422,
            "role",
        ),
        (
            json!({"username": "a", "role": "agent", "password": "short"}),
            422,
            "password",
        ),
    ];
    for (body, status, field) in cases {
        let r = s.post(path, &t.acme, body.clone()).await;
        assert_eq!(r.status, status, "{body} → {}", r.body);
        assert_eq!(r.body["error"]["field"], field, "{body} → {}", r.body);
        assert!(r.body["error"]["message"].as_str().unwrap().len() > 5);
    }
    // Not JSON at all, the wrong media type, an oversized body.
    let r = s
        .raw(
            "POST",
            path,
            Some(&t.acme),
            Some("{nope".into()),
            None,
            "application/json",
        )
        .await;
    assert_eq!((r.status, error_code(&r)), (400, "bad_request"));
    let r = s
        .raw(
            "POST",
            path,
            Some(&t.acme),
            Some("a=b".into()),
            None,
            "text/plain",
        )
        .await;
    assert_eq!(r.status, 415);
    let huge = json!({"username": "a", "role": "agent", "password": "p".repeat(100_000)});
    let r = s.post(path, &t.acme, huge).await;
    assert_eq!(r.status, 413);
    // Bad query parameters and sort fields.
    let r = s.get(&format!("{path}?limit=0"), &t.acme).await;
    assert_eq!(
        (r.status, r.body["error"]["field"].as_str()),
        (422, Some("limit"))
    );
    let r = s.get(&format!("{path}?limit=abc"), &t.acme).await;
    assert_eq!(r.status, 400);
    let r = s.get(&format!("{path}?sort=password_hash"), &t.acme).await;
    assert_eq!(r.status, 422);
    let r = s.get(&format!("{path}?color=red"), &t.acme).await;
    assert_eq!(r.status, 400);
    // Trunks and routes check what the SIP engine would choke on.
    let r = s
        .post(
            "/api/v1/tenants/acme/trunks",
            &t.acme,
            json!({"name": "c", "address": "carrier.example:5060"}),
        )
        .await;
    assert_eq!(
        (r.status, r.body["error"]["field"].as_str()),
        (422, Some("address"))
    );
    let r = s
        .post(
            "/api/v1/tenants/acme/trunks",
            &t.acme,
            json!({"name": "c", "address": "10.0.0.1:5060", "allow": ["10.0.0.0/33"]}),
        )
        .await;
    assert_eq!(
        (r.status, r.body["error"]["field"].as_str()),
        (422, Some("allow"))
    );
    let r = s
        .post(
            "/api/v1/tenants/acme/trunks",
            &t.acme,
            json!({"name": "c", "address": "10.0.0.1:5060", "dtmf": "2833"}),
        )
        .await;
    assert_eq!(
        (r.status, r.body["error"]["field"].as_str()),
        (422, Some("dtmf"))
    );
    let r = s
        .post(
            "/api/v1/tenants/acme/routes",
            &t.acme,
            json!({"pattern": "44*", "target": "trunk:nowhere"}),
        )
        .await;
    assert_eq!(
        (r.status, r.body["error"]["field"].as_str()),
        (422, Some("target"))
    );
    // Unknown paths answer in the same shape.
    let r = s.get("/api/v1/nothing", &t.acme).await;
    assert_eq!((r.status, error_code(&r)), (404, "not_found"));
}

async fn check_versions(s: &Server) {
    let t = s.two_tenants().await;
    let r = s
        .post(
            "/api/v1/tenants/acme/sip-accounts",
            &t.acme,
            json!({"username": "a1", "password": "12345678"}),
        )
        .await;
    assert_eq!(r.etag.as_deref(), Some("\"1\""));
    let path = format!(
        "/api/v1/tenants/acme/sip-accounts/{}",
        r.body["id"].as_str().unwrap()
    );
    let r = s
        .call(
            "PATCH",
            &path,
            Some(&t.acme),
            Some(json!({"display_name": "one"})),
            Some("\"1\""),
        )
        .await;
    assert_eq!((r.status, r.etag.as_deref()), (200, Some("\"2\"")));
    // A writer still holding version 1 is told, not silently overwritten.
    let r = s
        .call(
            "PATCH",
            &path,
            Some(&t.acme),
            Some(json!({"display_name": "stale"})),
            Some("\"1\""),
        )
        .await;
    assert_eq!((r.status, error_code(&r)), (412, "version_mismatch"));
    let r = s
        .call("DELETE", &path, Some(&t.acme), None, Some("\"1\""))
        .await;
    assert_eq!(r.status, 412);
    let r = s.get(&path, &t.acme).await;
    assert_eq!(r.body["display_name"], "one");
    let r = s
        .call("DELETE", &path, Some(&t.acme), None, Some("\"2\""))
        .await;
    assert_eq!(r.status, 204);
    assert_eq!(s.get(&path, &t.acme).await.status, 404);
}

async fn check_directory(s: &Server) {
    let t = s.two_tenants().await;
    let r = s
        .post(
            "/api/v1/tenants/acme/sip-accounts",
            &t.acme,
            json!({"username": "agent1", "password": "sip secret 1"}),
        )
        .await;
    assert_eq!(r.status, 201);
    assert!(r.body.get("ha1_md5").is_none());
    assert_eq!(r.body["dtmf"], "rfc4733", "the default");
    let account_path = format!(
        "/api/v1/tenants/acme/sip-accounts/{}",
        r.body["id"].as_str().unwrap()
    );
    let bad = s
        .call(
            "PATCH",
            &account_path,
            Some(&t.acme),
            Some(json!({"dtmf": "2833"})),
            Some("\"1\""),
        )
        .await;
    assert_eq!(
        (bad.status, bad.body["error"]["field"].as_str()),
        (422, Some("dtmf"))
    );
    let r = s
        .call(
            "PATCH",
            &account_path,
            Some(&t.acme),
            Some(json!({"dtmf": "auto"})),
            Some("\"1\""),
        )
        .await;
    assert_eq!(
        (r.status, &r.body["dtmf"]),
        (200, &json!("auto")),
        "{}",
        r.body
    );
    let bad = s
        .post(
            "/api/v1/tenants/acme/sip-accounts",
            &t.acme,
            json!({"username": "agent9", "password": "sip secret 9", "dtmf": "tones"}),
        )
        .await;
    assert_eq!(
        (bad.status, bad.body["error"]["field"].as_str()),
        (422, Some("dtmf"))
    );
    let dup = s
        .post(
            "/api/v1/tenants/acme/sip-accounts",
            &t.acme,
            json!({"username": "agent1", "password": "sip secret 2"}),
        )
        .await;
    assert_eq!((dup.status, error_code(&dup)), (409, "conflict"));
    // The same name in another tenant is fine: names are per tenant.
    let other = s
        .post(
            "/api/v1/tenants/globex/sip-accounts",
            &t.globex,
            json!({"username": "agent1", "password": "sip secret 3"}),
        )
        .await;
    assert_eq!(other.status, 201);
    let trunk = s
        .post(
            "/api/v1/tenants/acme/trunks",
            &t.acme,
            json!({"name": "carrier", "address": "10.1.1.1:5060", "allow": ["10.1.1.0/24"],
                   "username": "acme", "password": "trunkpw", "register": true, "dtmf": "info"}),
        )
        .await;
    assert_eq!(trunk.status, 201, "{}", trunk.body);
    assert!(trunk.body.get("password").is_none());
    assert_eq!(trunk.body["dtmf"], "info");
    for (pattern, target, position) in [
        ("2001", "user:agent1", 10),
        ("*", "trunk:carrier", 90),
        ("3000", "uri:sip:ivr@10.9.9.9:5080", 20),
    ] {
        let r = s
            .post(
                "/api/v1/tenants/acme/routes",
                &t.acme,
                json!({"pattern": pattern, "target": target, "position": position}),
            )
            .await;
        assert_eq!(r.status, 201, "{}", r.body);
    }
    let routes = s.get("/api/v1/tenants/acme/routes", &t.acme).await;
    let order: Vec<_> = routes.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["pattern"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(order, ["2001", "3000", "*"], "listed in match order");
    // What the SIP engine gets: HA1s, tenant-qualified trunk names, routes in order.
    let sip = s.state.storage.directory().await.unwrap().to_sip();
    let acme_routes: Vec<_> = sip.routes.iter().filter(|r| r.tenant == "acme").collect();
    assert_eq!(acme_routes[2].target, "trunk:acme/carrier");
    assert_eq!(sip.trunks[0].name, "acme/carrier");
    assert_eq!(
        sip.trunks[0].dtmf,
        tandem_controlplane::sip::config::DtmfMode::Info
    );
    let a = sip.accounts.iter().find(|a| a.tenant == "acme").unwrap();
    let (md5, sha) = api::directory::ha1s("agent1", "acme.test", "sip secret 1");
    assert_eq!((a.ha1_md5.clone(), a.ha1_sha256.clone()), (md5, sha));
    assert_eq!(a.dtmf, tandem_controlplane::sip::config::DtmfMode::Auto);
}

fn record(tenant: &str, i: i64, caller: &str, disposition: &str, direction: &str) -> CallRecordRow {
    CallRecordRow {
        id: format!("c{tenant}{i:04}"),
        tenant: tenant.into(),
        direction: direction.into(),
        caller: caller.into(),
        dialled: "2001".into(),
        target: "sip:agent1@10.0.0.2".into(),
        caller_call_id: format!("cid{i}"),
        callee_call_id: Some(format!("b{i}")),
        started_ms: 1_000_000 + i * 1000,
        answered_ms: Some(1_000_500 + i * 1000),
        ended_ms: 1_000_900 + i * 1000 + i,
        setup_ms: Some(500),
        duration_ms: 400 + i,
        disposition: disposition.into(),
        final_code: 200,
        ended_by: "caller".into(),
        codecs: vec!["PCMA".into()],
        media: serde_json::value::to_raw_value(&json!({"caller": {"rtp_packets_received": 50}}))
            .ok(),
    }
}

async fn check_calls(s: &Server) {
    let t = s.two_tenants().await;
    let mut rows = Vec::new();
    for i in 0..30 {
        let disposition = if i % 3 == 0 { "busy" } else { "answered" };
        let caller = if i % 2 == 0 {
            "+442079460000"
        } else {
            "+15550001"
        };
        let direction = if i < 20 { "inbound" } else { "internal" };
        rows.push(record("acme", i, caller, disposition, direction));
    }
    rows.push(record("globex", 0, "+442079460000", "answered", "inbound"));
    s.state.storage.insert_call_records(&rows).await.unwrap();
    let count = |r: &Reply| r.body["items"].as_array().unwrap().len();
    let base = "/api/v1/tenants/acme/calls";
    let r = s.get(&format!("{base}?limit=100"), &t.acme).await;
    assert_eq!(count(&r), 30, "globex's call is not here");
    assert_eq!(
        r.body["items"][0]["id"], "cacme0029",
        "newest first by default"
    );
    let r = s
        .get(
            &format!("{base}?number=%2B442079460000&disposition=answered&limit=100"),
            &t.acme,
        )
        .await;
    assert_eq!(count(&r), 10);
    let r = s
        .get(
            &format!("{base}?from_ms=1010000&to_ms=1015000&sort=started"),
            &t.acme,
        )
        .await;
    assert_eq!(count(&r), 5);
    assert_eq!(r.body["items"][0]["id"], "cacme0010");
    let r = s.get(&format!("{base}?direction=internal"), &t.acme).await;
    assert_eq!(count(&r), 10);
    let r = s
        .get(&format!("{base}?sort=-duration&limit=1"), &t.acme)
        .await;
    assert_eq!(r.body["items"][0]["duration_ms"], 429);
    let r = s.get(&format!("{base}/cacme0007"), &t.acme).await;
    assert_eq!(r.body["media"]["caller"]["rtp_packets_received"], 50);
    assert_eq!(
        s.get(&format!("{base}/cglobex0000"), &t.acme).await.status,
        404
    );
    let r = s.get(&format!("{base}?direction=sideways"), &t.acme).await;
    assert_eq!(r.status, 422);
    let r = s.get(&format!("{base}?from_ms=10&to_ms=5"), &t.acme).await;
    assert_eq!(r.status, 422);
}

async fn check_paging(s: &Server) {
    let t = s.two_tenants().await;
    for i in 0..7 {
        let r = s
            .post(
                "/api/v1/tenants/acme/sip-accounts",
                &t.acme,
                json!({"username": format!("u{i}"), "password": "12345678"}),
            )
            .await;
        assert_eq!(r.status, 201);
    }
    let mut seen = Vec::new();
    let mut offset = Some(0);
    while let Some(o) = offset {
        let r = s
            .get(
                &format!("/api/v1/tenants/acme/sip-accounts?limit=3&offset={o}&sort=-username"),
                &t.acme,
            )
            .await;
        for item in r.body["items"].as_array().unwrap() {
            seen.push(item["username"].as_str().unwrap().to_string());
        }
        offset = r.body["next_offset"].as_i64();
    }
    assert_eq!(seen, ["u6", "u5", "u4", "u3", "u2", "u1", "u0"]);
}

async fn check_audit(s: &Server) {
    let t = s.two_tenants().await;
    let r = s
        .post(
            "/api/v1/tenants/acme/routes",
            &t.acme,
            json!({"pattern": "2001", "target": "user:agent1"}),
        )
        .await;
    let id = r.body["id"].as_str().unwrap().to_string();
    s.call(
        "DELETE",
        &format!("/api/v1/tenants/acme/routes/{id}"),
        Some(&t.acme),
        None,
        None,
    )
    .await;
    let log = s.get("/api/v1/tenants/acme/audit", &t.acme).await;
    let entries = log.body["items"].as_array().unwrap();
    let latest = &entries[0];
    assert_eq!(latest["action"], "delete");
    assert_eq!(latest["object_type"], "route");
    assert_eq!(latest["object_id"], id.as_str());
    assert_eq!(latest["source"], "127.0.0.1");
    assert!(latest["actor"].as_str().unwrap().starts_with("token:"));
    assert_eq!(entries[1]["action"], "create");
    assert_eq!(entries[1]["detail"]["target"], "user:agent1");
    // globex's log has none of it; the system log has both tenants' creation.
    let other = s.get("/api/v1/tenants/globex/audit", &t.globex).await;
    assert!(other.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .all(|e| e["tenant"] == "globex"));
    let all = s.get("/api/v1/audit?limit=500", &s.admin).await;
    let tenants_created = all.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["object_type"] == "tenant" && e["action"] == "create")
        .count();
    assert_eq!(tenants_created, 2);
}

/// A receiver that fails the first `fail` requests with 503, then answers 204; it records
/// what it was sent.
async fn receiver(fail: usize) -> (String, Arc<std::sync::Mutex<Vec<(String, String)>>>) {
    use axum::routing::post;
    let got: Arc<std::sync::Mutex<Vec<(String, String)>>> = Arc::default();
    let seen = got.clone();
    let app = axum::Router::new().route(
        "/hook",
        post(move |headers: axum::http::HeaderMap, body: String| {
            let seen = seen.clone();
            async move {
                let mut s = seen.lock().unwrap();
                let sig = headers
                    .get("x-tandem-signature")
                    .map(|v| v.to_str().unwrap().to_string())
                    .unwrap_or_default();
                s.push((sig, body));
                if s.len() <= fail {
                    axum::http::StatusCode::SERVICE_UNAVAILABLE
                } else {
                    axum::http::StatusCode::NO_CONTENT
                }
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, got)
}

async fn check_webhooks(s: &Server) {
    let t = s.two_tenants().await;
    let (url, got) = receiver(2).await;
    // Loopback is not a public address: refused until the operator allows it.
    let refused = s
        .post(
            "/api/v1/tenants/acme/webhooks",
            &t.acme,
            json!({"url": url, "events": ["call.ended"]}),
        )
        .await;
    assert_eq!((refused.status, error_code(&refused)), (422, "invalid"));
    assert_eq!(refused.body["error"]["field"], "url");
    s.state.allow_webhook_networks(vec!["127.0.0.0/8".into()]);
    let r = s
        .post(
            "/api/v1/tenants/acme/webhooks",
            &t.acme,
            json!({"url": url, "events": ["call.ended"]}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.body);
    let secret = r.body["secret"].as_str().unwrap().to_string();
    let hook = r.body["id"].as_str().unwrap().to_string();
    let bad = s
        .post(
            "/api/v1/tenants/acme/webhooks",
            &t.acme,
            json!({"url": "ftp://x", "events": ["call.ended"]}),
        )
        .await;
    assert_eq!(bad.status, 422);
    let worker = tokio::spawn(api::webhooks::run_deliveries(
        s.state.clone(),
        api::webhooks::Retry {
            attempts: 4,
            first_wait: Duration::from_millis(50),
        },
    ));
    tokio::time::sleep(Duration::from_millis(100)).await;
    // Other tenants' events and other types are not delivered.
    s.state
        .events
        .publish("globex", "call.ended", json!({"id": "g"}));
    s.state
        .events
        .publish("acme", "call.offered", json!({"id": "o"}));
    let seq = s
        .state
        .events
        .publish("acme", "call.ended", json!({"id": "c1"}));
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while got.lock().unwrap().len() < 3 && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let deliveries = got.lock().unwrap().clone();
    assert_eq!(deliveries.len(), 3, "two 503s then success");
    for (sig, body) in &deliveries {
        let event: Value = serde_json::from_str(body).unwrap();
        assert_eq!(event["type"], "call.ended");
        assert_eq!(event["tenant"], "acme");
        assert_eq!(event["seq"], seq);
        // The receiver can check the signature with its secret.
        let t_ms: i64 = sig
            .split(',')
            .next()
            .unwrap()
            .trim_start_matches("t=")
            .parse()
            .unwrap();
        assert_eq!(
            *sig,
            api::webhooks::signature(&secret, t_ms, body.as_bytes())
        );
    }
    let log = s
        .get(
            &format!("/api/v1/tenants/acme/webhooks/{hook}/deliveries?sort=at"),
            &t.acme,
        )
        .await;
    let statuses: Vec<_> = log.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            (
                d["attempt"].as_i64().unwrap(),
                d["status"].as_i64().unwrap(),
            )
        })
        .collect();
    assert_eq!(statuses, [(1, 503), (2, 503), (3, 204)]);
    worker.abort();
}

async fn check_events(s: &Server) {
    use futures_util_lite::next_text;
    let t = s.two_tenants().await;
    let url = format!("ws://{}/api/v1/events?access_token={}", s.addr, t.acme);
    let (mut ws, _) = tokio_tungstenite::connect_async(&url).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let first = s
        .state
        .events
        .publish("acme", "call.offered", json!({"n": 1}));
    s.state
        .events
        .publish("globex", "call.offered", json!({"n": 99}));
    s.state
        .events
        .publish("acme", "call.answered", json!({"n": 2}));
    let a: Value = serde_json::from_str(&next_text(&mut ws).await).unwrap();
    let b: Value = serde_json::from_str(&next_text(&mut ws).await).unwrap();
    assert_eq!(
        (a["data"]["n"].clone(), b["data"]["n"].clone()),
        (json!(1), json!(2))
    );
    drop(ws);
    // Disconnected: events happen meanwhile; a resume from the last seen seq misses none.
    s.state
        .events
        .publish("acme", "call.ended", json!({"n": 3}));
    s.state
        .events
        .publish("acme", "registration.changed", json!({"n": 4}));
    let resume = format!("{url}&cursor={}", b["seq"]);
    let (mut ws, _) = tokio_tungstenite::connect_async(&resume).await.unwrap();
    let c: Value = serde_json::from_str(&next_text(&mut ws).await).unwrap();
    let d: Value = serde_json::from_str(&next_text(&mut ws).await).unwrap();
    assert_eq!(
        (c["data"]["n"].clone(), d["data"]["n"].clone()),
        (json!(3), json!(4))
    );
    assert!(c["seq"].as_u64().unwrap() > first);
    // Without a token there is no stream.
    let no_token = format!("ws://{}/api/v1/events", s.addr);
    assert!(tokio_tungstenite::connect_async(&no_token).await.is_err());
}

/// A tenant with a SIP account `alice`, skills `en` and `fr`, and queues `sales` and `support`.
async fn contact_centre(s: &Server, t: &Tenants) {
    let r = s
        .post(
            "/api/v1/tenants/acme/sip-accounts",
            &t.acme,
            json!({"username": "alice", "password": "sip secret 1"}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.body);
    for name in ["en", "fr"] {
        let r = s
            .post(
                "/api/v1/tenants/acme/skills",
                &t.acme,
                json!({"name": name, "description": "language"}),
            )
            .await;
        assert_eq!(r.status, 201, "{}", r.body);
    }
    let r = s
        .post(
            "/api/v1/tenants/acme/queues",
            &t.acme,
            json!({"name": "support", "strategy": "ring-all"}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.body);
    let r = s
        .post(
            "/api/v1/tenants/acme/queues",
            &t.acme,
            json!({"name": "sales", "skills": [{"skill": "en", "level": 2}], "max_wait_s": 120,
                   "overflow": "queue:support", "relax": [{"after_s": 30, "min_level": 1}], "wrapup_s": 10,
                   "callback_key": "#", "announce_period_s": 45, "announce_wait": false, "greeting": true}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!(r.etag.as_deref(), Some("\"1\""));
    assert_eq!(r.body["callback_key"], "#", "stored and read back");
    assert_eq!(r.body["strategy"], "longest-idle", "defaults filled in");
    assert_eq!(r.body["service_level_s"], 20);
    assert_eq!(
        (
            &r.body["announce_period_s"],
            &r.body["announce_position"],
            &r.body["announce_wait"]
        ),
        (&json!(45), &json!(true), &json!(false)),
        "announcement settings stored"
    );
    let stored = s.get("/api/v1/tenants/acme/queues/sales", &t.acme).await;
    assert_eq!(stored.body["announce_period_s"], 45, "{}", stored.body);
    assert_eq!(stored.body["announce_wait"], false);
    assert_eq!(stored.body["greeting"], true, "{}", stored.body);
}

async fn check_contact_centre(s: &Server) {
    let t = s.two_tenants().await;
    contact_centre(s, &t).await;
    // Agents: the SIP account must exist, skills too.
    let r = s
        .post(
            "/api/v1/tenants/acme/agents",
            &t.acme,
            json!({"name": "alice", "user": "alice", "skills": [{"skill": "en", "level": 4}]}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.body);
    let dup = s
        .post(
            "/api/v1/tenants/acme/agents",
            &t.acme,
            json!({"name": "alice", "user": "alice"}),
        )
        .await;
    assert_eq!((dup.status, error_code(&dup)), (409, "conflict"));
    // Its SIP account cannot go while the agent uses it.
    let accounts = s.get("/api/v1/tenants/acme/sip-accounts", &t.acme).await;
    let account = accounts.body["items"][0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let r = s
        .call(
            "DELETE",
            &format!("/api/v1/tenants/acme/sip-accounts/{account}"),
            Some(&t.acme),
            None,
            None,
        )
        .await;
    assert_eq!((r.status, error_code(&r)), (409, "conflict"), "{}", r.body);
    // Validation: each error names its field.
    let cases = [
        (
            "/api/v1/tenants/acme/queues",
            json!({"name": "q1", "strategy": "fastest"}),
            "strategy",
        ),
        (
            "/api/v1/tenants/acme/queues",
            json!({"name": "q1", "priority": 0}),
            "priority",
        ),
        (
            "/api/v1/tenants/acme/queues",
            json!({"name": "Q 1"}),
            "name",
        ),
        (
            "/api/v1/tenants/acme/queues",
            json!({"name": "q1", "skills": [{"skill": "de", "level": 2}]}),
            "skills",
        ),
        (
            "/api/v1/tenants/acme/queues",
            json!({"name": "q1", "skills": [{"skill": "en", "level": 9}]}),
            "skills",
        ),
        (
            "/api/v1/tenants/acme/queues",
            json!({"name": "q1", "overflow": "queue:nowhere"}),
            "overflow",
        ),
        (
            "/api/v1/tenants/acme/queues",
            json!({"name": "q1", "overflow": "queue:q1"}),
            "overflow",
        ),
        (
            "/api/v1/tenants/acme/queues",
            json!({"name": "q1", "overflow": "trunk:none"}),
            "overflow",
        ),
        (
            "/api/v1/tenants/acme/queues",
            json!({"name": "q1", "relax": [{"after_s": 5, "min_level": 7}]}),
            "relax",
        ),
        (
            "/api/v1/tenants/acme/queues",
            json!({"name": "q1", "callback_key": "12"}),
            "callback_key",
        ),
        (
            "/api/v1/tenants/acme/queues",
            json!({"name": "q1", "callback_key": "0", "leave_key": "0"}),
            "callback_key",
        ),
        (
            "/api/v1/tenants/acme/queues",
            json!({"name": "q1", "announce_period_s": 5}),
            "announce_period_s",
        ),
        (
            "/api/v1/tenants/acme/agents",
            json!({"name": "bob", "user": "nobody"}),
            "user",
        ),
        (
            "/api/v1/tenants/acme/agents",
            json!({"name": "bob", "user": "alice", "skills": [{"skill": "xx", "level": 1}]}),
            "skills",
        ),
        ("/api/v1/tenants/acme/skills", json!({"name": "EN"}), "name"),
        (
            "/api/v1/tenants/acme/routes",
            json!({"pattern": "5000", "target": "queue:nowhere"}),
            "target",
        ),
    ];
    for (path, body, field) in cases {
        let r = s.post(path, &t.acme, body.clone()).await;
        assert_eq!(
            (r.status, error_code(&r), r.body["error"]["field"].as_str()),
            (422, "invalid", Some(field)),
            "{path} {body}: {}",
            r.body
        );
    }
    let r = s
        .post(
            "/api/v1/tenants/acme/queues",
            &t.acme,
            json!({"name": "q1", "colour": "red"}),
        )
        .await;
    assert_eq!(
        (r.status, r.body["error"]["field"].as_str()),
        (400, Some("colour"))
    );
    // Memberships: PUT creates, PUT again changes, 404 for unknown agents or queues.
    let path = "/api/v1/tenants/acme/agents/alice/queues/sales";
    let r = s
        .call(
            "PUT",
            path,
            Some(&t.acme),
            Some(json!({"tier": 1, "delay_s": 5})),
            None,
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.body);
    let r = s
        .call(
            "PUT",
            path,
            Some(&t.acme),
            Some(json!({"tier": 2})),
            Some("\"1\""),
        )
        .await;
    assert_eq!(
        (r.status, r.body["tier"].clone(), r.body["weight"].clone()),
        (200, json!(2), json!(1))
    );
    let r = s
        .call(
            "PUT",
            path,
            Some(&t.acme),
            Some(json!({"tier": 3})),
            Some("\"1\""),
        )
        .await;
    assert_eq!(r.status, 412, "stale If-Match");
    let r = s
        .call("PUT", path, Some(&t.acme), Some(json!({"weight": 0})), None)
        .await;
    assert_eq!(
        (r.status, r.body["error"]["field"].as_str()),
        (422, Some("weight"))
    );
    let r = s
        .call(
            "PUT",
            "/api/v1/tenants/acme/agents/ghost/queues/sales",
            Some(&t.acme),
            Some(json!({})),
            None,
        )
        .await;
    assert_eq!(r.status, 404);
    let r = s
        .call(
            "PUT",
            "/api/v1/tenants/acme/agents/alice/queues/support",
            Some(&t.acme),
            Some(json!({})),
            None,
        )
        .await;
    assert_eq!(r.status, 201);
    let r = s
        .get("/api/v1/tenants/acme/agents/alice/queues", &t.acme)
        .await;
    let queues: Vec<_> = r.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["queue"].clone())
        .collect();
    assert_eq!(queues, [json!("sales"), json!("support")]);
    let r = s
        .get("/api/v1/tenants/acme/queues/sales/members", &t.acme)
        .await;
    assert_eq!(r.body["items"][0]["agent"], "alice");
    // Patch: null clears, ETag moves on, stale writers get 412.
    let r = s
        .call(
            "PATCH",
            "/api/v1/tenants/acme/queues/sales",
            Some(&t.acme),
            Some(json!({"max_wait_s": null, "priority": 3})),
            Some("\"1\""),
        )
        .await;
    assert_eq!(
        (r.status, r.etag.as_deref()),
        (200, Some("\"2\"")),
        "{}",
        r.body
    );
    assert_eq!(
        (r.body["max_wait_s"].clone(), r.body["priority"].clone()),
        (json!(null), json!(3))
    );
    assert_eq!(r.body["overflow"], "queue:support", "absent fields stay");
    let r = s
        .call(
            "PATCH",
            "/api/v1/tenants/acme/queues/sales",
            Some(&t.acme),
            Some(json!({"wrapup_s": 5})),
            Some("\"1\""),
        )
        .await;
    assert_eq!(r.status, 412);
    // What the SIP engine gets.
    let sip = s.state.storage.directory().await.unwrap().to_sip();
    let sales = sip.queues.iter().find(|q| q.name == "sales").unwrap();
    assert_eq!(
        (sales.priority, sales.max_wait_s, sales.wrapup_s),
        (3, None, 10)
    );
    assert_eq!(sales.skills[0].skill, "en");
    assert_eq!(sales.relax[0].min_level, Some(1));
    let alice = sip.agents.iter().find(|a| a.name == "alice").unwrap();
    assert_eq!(alice.user, "alice");
    assert_eq!(alice.queues.len(), 2);
    assert_eq!(
        (alice.queues[0].queue.as_str(), alice.queues[0].tier),
        ("sales", 2)
    );
    for q in &sip.queues {
        q.validate().unwrap();
    }
    // A route to a queue; then the queue cannot go while something names it.
    let r = s
        .post(
            "/api/v1/tenants/acme/routes",
            &t.acme,
            json!({"pattern": "5000", "target": "queue:support"}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.body);
    let route = r.body["id"].as_str().unwrap().to_string();
    let r = s
        .call(
            "DELETE",
            "/api/v1/tenants/acme/queues/support",
            Some(&t.acme),
            None,
            None,
        )
        .await;
    assert_eq!((r.status, error_code(&r)), (409, "conflict"));
    let message = r.body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("route 5000") && message.contains("queue sales"),
        "{message}"
    );
    let r = s
        .call(
            "DELETE",
            "/api/v1/tenants/acme/skills/en",
            Some(&t.acme),
            None,
            None,
        )
        .await;
    assert_eq!(
        (r.status, error_code(&r)),
        (409, "conflict"),
        "en is in use"
    );
    let r = s
        .call(
            "DELETE",
            "/api/v1/tenants/acme/skills/fr",
            Some(&t.acme),
            None,
            None,
        )
        .await;
    assert_eq!(r.status, 204);
    let r = s
        .call(
            "DELETE",
            &format!("/api/v1/tenants/acme/routes/{route}"),
            Some(&t.acme),
            None,
            None,
        )
        .await;
    assert_eq!(r.status, 204);
    let r = s
        .call(
            "PATCH",
            "/api/v1/tenants/acme/queues/sales",
            Some(&t.acme),
            Some(json!({"overflow": null})),
            None,
        )
        .await;
    assert_eq!(r.status, 200);
    let r = s
        .call(
            "DELETE",
            "/api/v1/tenants/acme/queues/support",
            Some(&t.acme),
            None,
            None,
        )
        .await;
    assert_eq!(r.status, 204, "{}", r.body);
    // Its memberships went with it.
    let r = s
        .get("/api/v1/tenants/acme/agents/alice/queues", &t.acme)
        .await;
    assert_eq!(r.body["items"].as_array().unwrap().len(), 1);
    // Roles and tenants: supervisors read, agents do not; another tenant sees nothing.
    assert_eq!(
        s.get("/api/v1/tenants/acme/queues", &t.supervisor)
            .await
            .status,
        200
    );
    let r = s
        .post(
            "/api/v1/tenants/acme/skills",
            &t.supervisor,
            json!({"name": "de"}),
        )
        .await;
    assert_eq!(r.status, 403);
    assert_eq!(
        s.get("/api/v1/tenants/acme/queues", &t.agent).await.status,
        403
    );
    for path in [
        "/api/v1/tenants/acme/queues",
        "/api/v1/tenants/acme/queues/sales",
        "/api/v1/tenants/acme/agents/alice",
        "/api/v1/tenants/acme/skills/en",
    ] {
        assert_eq!(s.get(path, &t.globex).await.status, 404, "{path}");
    }
    assert_eq!(
        s.get("/api/v1/tenants/globex/queues/sales", &t.globex)
            .await
            .status,
        404
    );
    // Paging.
    let r = s
        .get("/api/v1/tenants/acme/skills?limit=1&sort=-name", &t.acme)
        .await;
    assert_eq!(r.body["items"][0]["name"], "en");
    // Audited.
    let r = s.get("/api/v1/tenants/acme/audit?limit=500", &t.acme).await;
    let types: Vec<_> = r.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["object_type"].as_str().unwrap().to_string())
        .collect();
    for kind in ["skill", "queue", "agent", "membership"] {
        assert!(types.iter().any(|t| t == kind), "{kind} audited");
    }
    // Deleting the agent deletes its memberships.
    let r = s
        .call(
            "DELETE",
            "/api/v1/tenants/acme/agents/alice",
            Some(&t.acme),
            None,
            None,
        )
        .await;
    assert_eq!(r.status, 204);
    let sip = s.state.storage.directory().await.unwrap().to_sip();
    assert!(sip.agents.is_empty());
}

/// A stand-in for the SIP engine's ACD: answers requests like the engine would for an agent
/// `alice` and a queue `sales` with one waiting caller (contact 7).
fn fake_engine(
    mut requests: tokio::sync::mpsc::Receiver<tandem_controlplane::sip::queues::AcdRequest>,
) -> Arc<std::sync::Mutex<Vec<String>>> {
    use tandem_controlplane::sip::queues::*;
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let log = seen.clone();
    tokio::spawn(async move {
        let mut logged_in = false;
        let mut held = Vec::new();
        while let Some(req) = requests.recv().await {
            log.lock()
                .unwrap()
                .push(format!("{} {:?}", req.tenant, req.op));
            let agent = |name: &str, state: &str| AgentStatusView {
                name: name.into(),
                user: name.into(),
                state: state.into(),
                reason: None,
                in_state_s: 1.0,
                contact: None,
                calls_taken: 0,
                missed_in_a_row: 0,
                registered: true,
            };
            let reply = match req.op {
                AcdOp::Agent { agent, .. } if agent != "alice" => {
                    Err(AcdRefusal::NotFound(format!("no agent {agent}")))
                }
                AcdOp::Agent {
                    action: AgentAction::Login,
                    ..
                } => {
                    logged_in = true;
                    Ok(AcdReply::Done)
                }
                AcdOp::Agent {
                    action: AgentAction::Ready,
                    ..
                } if !logged_in => Err(AcdRefusal::Conflict("alice is logged out".into())),
                AcdOp::Agent { .. } => Ok(AcdReply::Done),
                AcdOp::Agents { agent: Some(a) } if a != "alice" => {
                    Err(AcdRefusal::NotFound("no agent".into()))
                }
                AcdOp::Agents { .. } => Ok(AcdReply::Agents(vec![agent(
                    "alice",
                    if logged_in { "available" } else { "logged-out" },
                )])),
                AcdOp::Queues { queue } if queue.as_deref().is_some_and(|q| q != "sales") => {
                    Err(AcdRefusal::NotFound("no queue".into()))
                }
                AcdOp::Queues { .. } => Ok(AcdReply::Queues(vec![QueueStatusView {
                    name: "sales".into(),
                    waiting: 1,
                    callbacks: 0,
                    longest_wait_s: 12.5,
                    staffed: 1,
                    available: 0,
                    on_break: 0,
                    ringing: 0,
                    on_call: 1,
                    wrap_up: 0,
                    ewt_s: Some(30.0),
                    aht_s: 120.0,
                    callers: vec![WaitingCallerView {
                        contact: 7,
                        position: 1,
                        waited_s: 12.5,
                        priority: 0,
                        caller: "+4420".into(),
                    }],
                }])),
                AcdOp::MoveCaller { contact, .. } | AcdOp::SetPriority { contact, .. }
                    if contact != 7 =>
                {
                    Err(AcdRefusal::NotFound("no such caller".into()))
                }
                AcdOp::MoveCaller { queue, .. } if queue == "sales" => {
                    Err(AcdRefusal::Invalid("already in sales".into()))
                }
                AcdOp::MoveCaller { .. } | AcdOp::SetPriority { .. } => Ok(AcdReply::Done),
                // Call 42 is answered and monitored; it is the only live call.
                AcdOp::Calls { call: Some(call) } if call != 42 => {
                    Err(AcdRefusal::NotFound(format!("no call {call}")))
                }
                AcdOp::Calls { .. } => Ok(AcdReply::Calls(vec![live_call(42)])),
                // Call 42 is answered; `boss` is the only supervisor with a phone.
                AcdOp::Monitor { call, .. } if call != 42 => {
                    Err(AcdRefusal::NotFound(format!("no call {call}")))
                }
                AcdOp::Monitor {
                    op: MonitorOp::Start { supervisor, .. },
                    ..
                } if supervisor != "boss" => Err(AcdRefusal::Conflict("no phone".into())),
                AcdOp::Monitor { call, op } => Ok(AcdReply::Monitor(MonitorView {
                    call,
                    supervisor: "boss".into(),
                    mode: match op {
                        MonitorOp::Start { mode, .. } | MonitorOp::SetMode(mode) => mode,
                        MonitorOp::Stop => SupervisorMode::Listen,
                    },
                    state: "ringing".into(),
                })),
            };
            // Requests of tenant `slow` are dropped unanswered, `stalled`'s held unanswered.
            match req.tenant.as_str() {
                "slow" => drop(req.reply),
                // Held, never answered: the API gives up after 2 s.
                "stalled" => held.push(req.reply),
                _ => {
                    let _ = req.reply.send(reply);
                }
            }
        }
    });
    seen
}

/// The fake engine's answered call: PCMA to the caller, G.722 to the agent, `boss` whispering.
fn live_call(call: u64) -> tandem_controlplane::sip::queues::LiveCallView {
    use tandem_controlplane::sip::queues::*;
    let leg = |codec: &str| LiveLegView {
        codec: Some(codec.into()),
        quality: Some(json!({"loss_percent": 0.0, "mos": 4.4})),
    };
    LiveCallView {
        call,
        state: "answered".into(),
        direction: "inbound".into(),
        target: "sip:alice@192.168.1.11:5060".into(),
        from: "sip:+4420@carrier.test".into(),
        to: "3000".into(),
        queue: Some("sales".into()),
        agent: Some("alice".into()),
        started_unix_ms: 1_700_000_000_000,
        answered_unix_ms: Some(1_700_000_004_000),
        legs: [leg("PCMA"), leg("G722")],
        transcoded: true,
        monitor: Some(MonitorView {
            call,
            supervisor: "boss".into(),
            mode: SupervisorMode::Whisper,
            state: "active".into(),
        }),
    }
}

async fn check_acd_requests(s: &Server) {
    let t = s.two_tenants().await;
    contact_centre(s, &t).await;
    // An agent-role user named like the agent acts as that agent.
    let r = s
        .post(
            "/api/v1/tenants/acme/users",
            &t.acme,
            json!({"username": "alice", "role": "agent", "password": "alice's password"}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.body);
    let alice = s.login("acme", "alice", "alice's password").await.body["token"]
        .as_str()
        .unwrap()
        .to_string();
    let state = "/api/v1/tenants/acme/agents/alice/state";
    // No engine: 503.
    let r = s.post(state, &alice, json!({"action": "login"})).await;
    assert_eq!((r.status, error_code(&r)), (503, "unavailable"));
    let (tx, rx) = tokio::sync::mpsc::channel(16);
    s.state.attach_acd(tx);
    let seen = fake_engine(rx);
    let r = s.post(state, &alice, json!({"action": "ready"})).await;
    assert_eq!((r.status, error_code(&r)), (409, "conflict"), "{}", r.body);
    let r = s.post(state, &alice, json!({"action": "login"})).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let r = s
        .post(state, &alice, json!({"action": "break", "reason": "lunch"}))
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let r = s
        .post(
            state,
            &alice,
            json!({"action": "extend_wrap_up", "seconds": 30}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let r = s
        .post(
            state,
            &alice,
            json!({"action": "extend_wrap_up", "seconds": 0}),
        )
        .await;
    assert_eq!(
        (r.status, r.body["error"]["field"].as_str()),
        (422, Some("seconds"))
    );
    let r = s.post(state, &alice, json!({"action": "dance"})).await;
    assert_eq!(r.status, 400);
    // Agents do not force, and do not act for others; supervisors do both.
    let r = s
        .post(
            state,
            &alice,
            json!({"action": "force", "state": "available"}),
        )
        .await;
    assert_eq!(r.status, 403);
    let r = s
        .post(
            "/api/v1/tenants/acme/agents/bob/state",
            &alice,
            json!({"action": "login"}),
        )
        .await;
    assert_eq!(r.status, 403);
    let r = s
        .post(
            "/api/v1/tenants/acme/agents/bob/state",
            &t.agent,
            json!({"action": "login"}),
        )
        .await;
    assert_eq!(r.status, 403, "an agent token is nobody in particular");
    let r = s
        .post(
            state,
            &t.supervisor,
            json!({"action": "force", "state": "break", "reason": "meeting"}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let r = s
        .post(
            state,
            &t.supervisor,
            json!({"action": "force", "state": "on-call"}),
        )
        .await;
    assert_eq!(
        (r.status, r.body["error"]["field"].as_str()),
        (422, Some("state"))
    );
    let r = s
        .post(
            "/api/v1/tenants/acme/agents/bob/state",
            &t.supervisor,
            json!({"action": "login"}),
        )
        .await;
    assert_eq!(r.status, 404, "the engine knows no bob");
    // Status.
    let r = s
        .get("/api/v1/tenants/acme/agents/alice/status", &alice)
        .await;
    assert_eq!(
        (r.status, r.body["state"].clone()),
        (200, json!("available")),
        "{}",
        r.body
    );
    let r = s.get("/api/v1/tenants/acme/agents-status", &alice).await;
    assert_eq!(r.status, 403);
    let r = s
        .get("/api/v1/tenants/acme/agents-status", &t.supervisor)
        .await;
    assert_eq!(r.body["items"][0]["name"], "alice");
    let r = s
        .get("/api/v1/tenants/acme/queues/sales/status", &alice)
        .await;
    assert_eq!(
        (r.status, r.body["callers"][0]["contact"].clone()),
        (200, json!(7)),
        "{}",
        r.body
    );
    let r = s
        .get("/api/v1/tenants/acme/queues/nope/status", &t.supervisor)
        .await;
    assert_eq!(r.status, 404);
    let r = s
        .get("/api/v1/tenants/acme/queues-status", &t.supervisor)
        .await;
    assert_eq!(r.body["items"][0]["waiting"], 1);
    assert_eq!(
        s.get("/api/v1/tenants/acme/queues-status", &t.globex)
            .await
            .status,
        404
    );
    // Supervisors move waiting callers and change their priority.
    let r = s
        .post(
            "/api/v1/tenants/acme/queue-callers/7/move",
            &t.supervisor,
            json!({"queue": "support"}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let r = s
        .post(
            "/api/v1/tenants/acme/queue-callers/7/move",
            &t.supervisor,
            json!({"queue": "sales"}),
        )
        .await;
    assert_eq!((r.status, error_code(&r)), (422, "invalid"));
    let r = s
        .post(
            "/api/v1/tenants/acme/queue-callers/8/priority",
            &t.supervisor,
            json!({"priority": 5}),
        )
        .await;
    assert_eq!(r.status, 404);
    let r = s
        .post(
            "/api/v1/tenants/acme/queue-callers/7/priority",
            &t.supervisor,
            json!({"priority": 5}),
        )
        .await;
    assert_eq!(r.status, 200);
    let r = s
        .post(
            "/api/v1/tenants/acme/queue-callers/7/priority",
            &alice,
            json!({"priority": 5}),
        )
        .await;
    assert_eq!(r.status, 403);
    let r = s
        .post(
            "/api/v1/tenants/acme/queue-callers/x/priority",
            &t.supervisor,
            json!({"priority": 5}),
        )
        .await;
    assert_eq!(r.status, 404);
    // Supervisors and tenant administrators list the live calls; agents may not; another
    // tenant's call is not found.
    let r = s
        .get("/api/v1/tenants/acme/live-calls", &t.supervisor)
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let listed = &r.body["items"][0];
    assert_eq!(
        (
            listed["call"].clone(),
            listed["state"].clone(),
            listed["queue"].clone()
        ),
        (json!(42), json!("answered"), json!("sales"))
    );
    assert_eq!(listed["legs"][1]["codec"], "G722");
    assert_eq!(listed["legs"][0]["quality"]["mos"], 4.4);
    assert_eq!(
        (
            listed["transcoded"].clone(),
            listed["monitor"]["mode"].clone()
        ),
        (json!(true), json!("whisper"))
    );
    let r = s.get("/api/v1/tenants/acme/live-calls/42", &t.acme).await;
    assert_eq!((r.status, r.body["agent"].clone()), (200, json!("alice")));
    for (path, token, status) in [
        ("/api/v1/tenants/acme/live-calls", &alice, 403),
        ("/api/v1/tenants/acme/live-calls/42", &alice, 403),
        ("/api/v1/tenants/globex/live-calls", &t.acme, 404),
        ("/api/v1/tenants/globex/live-calls/42", &t.supervisor, 404),
        ("/api/v1/tenants/acme/live-calls/43", &t.supervisor, 404),
        ("/api/v1/tenants/acme/live-calls/x", &t.supervisor, 404),
        ("/api/v1/tenants/nobody/live-calls", &s.admin, 404),
    ] {
        assert_eq!(s.get(path, token).await.status, status, "{path}");
    }
    let r = s.get("/api/v1/tenants/acme/live-calls", &s.admin).await;
    assert_eq!(r.status, 200);
    let r = s
        .call("GET", "/api/v1/tenants/acme/live-calls", None, None, None)
        .await;
    assert_eq!(r.status, 401);
    assert!(seen
        .lock()
        .unwrap()
        .iter()
        .any(|l| l == "acme Calls { call: Some(42) }"));

    // Supervisors monitor answered calls; agents may not; other tenants see nothing.
    let monitor = "/api/v1/tenants/acme/calls/42/monitor";
    let start = json!({"supervisor": "boss", "mode": "whisper"});
    let r = s.post(monitor, &t.supervisor, start.clone()).await;
    assert_eq!(
        (r.status, r.body["mode"].clone(), r.body["state"].clone()),
        (202, json!("whisper"), json!("ringing")),
        "{}",
        r.body
    );
    assert_eq!(s.post(monitor, &alice, start.clone()).await.status, 403);
    let r = s
        .post(
            "/api/v1/tenants/globex/calls/42/monitor",
            &t.acme,
            start.clone(),
        )
        .await;
    assert_eq!(r.status, 404);
    let r = s
        .post(
            "/api/v1/tenants/acme/calls/43/monitor",
            &t.supervisor,
            start.clone(),
        )
        .await;
    assert_eq!(r.status, 404);
    let r = s
        .post("/api/v1/tenants/acme/calls/x/monitor", &t.supervisor, start)
        .await;
    assert_eq!(r.status, 404);
    let r = s
        .post(
            monitor,
            &t.acme,
            json!({"supervisor": "carol", "mode": "barge"}),
        )
        .await;
    assert_eq!((r.status, error_code(&r)), (409, "conflict"));
    let r = s
        .post(
            monitor,
            &t.acme,
            json!({"supervisor": "boss", "mode": "shout"}),
        )
        .await;
    assert_eq!(r.status / 100, 4);
    let r = s
        .call(
            "PATCH",
            monitor,
            Some(&t.supervisor),
            Some(json!({"mode": "barge"})),
            None,
        )
        .await;
    assert_eq!(
        (r.status, r.body["mode"].clone()),
        (200, json!("barge")),
        "{}",
        r.body
    );
    let r = s
        .call("DELETE", monitor, Some(&t.supervisor), None, None)
        .await;
    assert_eq!(r.status, 204);
    let r = s.call("DELETE", monitor, Some(&alice), None, None).await;
    assert_eq!(r.status, 403);
    assert!(seen
        .lock()
        .unwrap()
        .iter()
        .any(|l| l.starts_with("acme Monitor { call: 42, op: SetMode(Barge)")));
    // An engine that drops a request unanswered: 503.
    s.post(
        "/api/v1/tenants",
        &s.admin,
        json!({"name": "slow", "domain": "slow.test"}),
    )
    .await;
    let r = s.get("/api/v1/tenants/slow/queues-status", &s.admin).await;
    assert_eq!((r.status, error_code(&r)), (503, "unavailable"));
    // One that never answers: 503 after 2 s.
    s.post(
        "/api/v1/tenants",
        &s.admin,
        json!({"name": "stalled", "domain": "stalled.test"}),
    )
    .await;
    let asked = std::time::Instant::now();
    let r = s
        .get("/api/v1/tenants/stalled/queues-status", &s.admin)
        .await;
    assert_eq!((r.status, error_code(&r)), (503, "unavailable"));
    let waited = asked.elapsed();
    assert!(
        waited >= Duration::from_millis(1900) && waited < Duration::from_secs(4),
        "{waited:?}"
    );
    // What a supervisor did to alice is audited; what alice did herself is in the queue log.
    let r = s.get("/api/v1/tenants/acme/audit?limit=500", &t.acme).await;
    let actions: Vec<_> = r.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["action"] == "agent_action")
        .map(|e| e["detail"]["action"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(actions, ["force"], "{actions:?}");
    let seen = seen.lock().unwrap().clone();
    assert!(
        seen.iter()
            .any(|r| r
                .contains("acme Agent { agent: \"alice\", action: Break { reason: \"lunch\" } }")),
        "{seen:?}"
    );
    assert!(
        seen.iter()
            .any(|r| r.contains("MoveCaller { contact: 7, queue: \"support\" }")),
        "{seen:?}"
    );
    assert!(
        seen.iter()
            .all(|r| !r.contains("bob") || r.starts_with("acme Agent")),
        "{seen:?}"
    );
}

fn acd_event(
    at: u64,
    kind: &'static str,
    queue: Option<&str>,
    agent: Option<&str>,
    contact: Option<u64>,
    detail: Value,
) -> tandem_controlplane::sip::queues::AcdEvent {
    tandem_controlplane::sip::queues::AcdEvent {
        at_unix_ms: at,
        tenant: "acme".into(),
        kind,
        queue: queue.map(str::to_string),
        agent: agent.map(str::to_string),
        contact,
        call: contact.map(|c| c + 1000),
        detail: detail.as_object().unwrap().clone(),
    }
}

async fn check_queue_events(s: &Server) {
    let t = s.two_tenants().await;
    contact_centre(s, &t).await;
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(tandem_controlplane::acd_log::run_writer(
        s.state.storage.clone(),
        rx,
        s.state.events.clone(),
    ));
    // An interval boundary (a multiple of 15 minutes), and a known day in the queue.
    let t0: u64 = 1_699_999_200_000;
    let state = |at: u64, from: &str, to: &str| {
        acd_event(
            at,
            "agent_state",
            None,
            Some("alice"),
            None,
            json!({"from": from, "to": to}),
        )
    };
    let sales = Some("sales");
    let alice = Some("alice");
    let events = vec![
        state(t0, "logged-out", "available"),
        acd_event(
            t0 + 1_000,
            "enter",
            sales,
            None,
            Some(1),
            json!({"position": 1, "ewt_ms": 0}),
        ),
        state(t0 + 2_000, "available", "reserved"),
        acd_event(
            t0 + 2_000,
            "offer",
            sales,
            alice,
            Some(1),
            json!({"caller": "+442071234567", "data": {"account": "A-17"}}),
        ),
        state(t0 + 3_000, "reserved", "ringing"),
        acd_event(
            t0 + 11_000,
            "connect",
            sales,
            alice,
            Some(1),
            json!({"wait_ms": 10_000, "ring_ms": 8_000}),
        ),
        state(t0 + 11_000, "ringing", "on-call"),
        acd_event(
            t0 + 71_000,
            "complete_caller",
            sales,
            alice,
            Some(1),
            json!({"wait_ms": 10_000, "talk_ms": 60_000}),
        ),
        state(t0 + 71_000, "on-call", "wrap-up"),
        state(t0 + 81_000, "wrap-up", "available"),
        acd_event(
            t0 + 100_000,
            "enter",
            sales,
            None,
            Some(2),
            json!({"position": 1, "ewt_ms": 0}),
        ),
        acd_event(
            t0 + 130_000,
            "abandon",
            sales,
            None,
            Some(2),
            json!({"wait_ms": 30_000}),
        ),
        acd_event(
            t0 + 200_000,
            "enter",
            sales,
            None,
            Some(3),
            json!({"position": 1, "ewt_ms": 0}),
        ),
        acd_event(
            t0 + 225_000,
            "connect",
            sales,
            alice,
            Some(3),
            json!({"wait_ms": 25_000, "ring_ms": 2_000}),
        ),
        acd_event(
            t0 + 300_000,
            "enter",
            Some("support"),
            None,
            Some(4),
            json!({"position": 1}),
        ),
        acd_event(
            t0 + 901_000,
            "enter",
            sales,
            None,
            Some(5),
            json!({"position": 1, "ewt_ms": 0}),
        ),
        acd_event(
            t0 + 903_000,
            "abandon",
            sales,
            None,
            Some(5),
            json!({"wait_ms": 2_000}),
        ),
    ];
    let n = events.len();
    // Each tenant's WebSocket carries its own ACD events only.
    let url = |token: &str| format!("ws://{}/api/v1/events?access_token={token}", s.addr);
    let (mut acme_ws, _) = tokio_tungstenite::connect_async(&url(&t.supervisor))
        .await
        .unwrap();
    let (mut globex_ws, _) = tokio_tungstenite::connect_async(&url(&t.globex))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    for e in events {
        tx.send(e).unwrap();
    }
    let mut globex_event = acd_event(t0, "agent_login", None, Some("gina"), None, json!({}));
    globex_event.tenant = "globex".into();
    tx.send(globex_event).unwrap();
    let first: Value =
        serde_json::from_str(&futures_util_lite::next_text(&mut acme_ws).await).unwrap();
    assert_eq!(
        (first["type"].as_str(), first["tenant"].as_str()),
        (Some("acd.agent_state"), Some("acme"))
    );
    assert_eq!(first["data"]["detail"]["to"], "available");
    let theirs: Value =
        serde_json::from_str(&futures_util_lite::next_text(&mut globex_ws).await).unwrap();
    assert_eq!(
        (theirs["type"].as_str(), theirs["data"]["agent"].as_str()),
        (Some("acd.agent_login"), Some("gina"))
    );
    // The screen-pop went out on the event stream with the caller's data.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    let pop = loop {
        let (all, _) = s.state.events.since(0);
        if let Some(e) = all.iter().find(|e| e.kind == "acd.offer") {
            break e.clone();
        }
        assert!(std::time::Instant::now() < deadline, "no acd.offer event");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(pop.tenant, "acme");
    assert_eq!(pop.data["detail"]["data"]["account"], "A-17");
    assert_eq!(pop.data["agent"], "alice");
    // Webhooks may subscribe to the contact centre's events.
    let r = s
        .post(
            "/api/v1/tenants/acme/webhooks",
            &t.acme,
            json!({"url": "https://crm.example/pop", "events": ["acd.offer", "call.ended"]}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.body);
    let r = s
        .post(
            "/api/v1/tenants/acme/webhooks",
            &t.acme,
            json!({"url": "https://crm.example/pop", "events": ["acd.dance"]}),
        )
        .await;
    assert_eq!(
        (r.status, r.body["error"]["field"].as_str()),
        (422, Some("events"))
    );
    // Stored, in order, filterable.
    let list = loop {
        let r = s
            .get(
                "/api/v1/tenants/acme/queue-events?limit=100&sort=at",
                &t.supervisor,
            )
            .await;
        assert_eq!(r.status, 200, "{}", r.body);
        if r.body["items"].as_array().unwrap().len() == n {
            break r;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "events not stored: {}",
            r.body
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let kinds: Vec<_> = list.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        &kinds[..4],
        ["agent_state", "enter", "agent_state", "offer"]
    );
    assert_eq!(list.body["items"][1]["contact"], 1);
    assert_eq!(list.body["items"][1]["call"], 1001);
    let r = s
        .get("/api/v1/tenants/acme/queue-events?queue=support", &t.acme)
        .await;
    assert_eq!(r.body["items"].as_array().unwrap().len(), 1);
    let r = s
        .get("/api/v1/tenants/acme/queue-events?kind=abandon", &t.acme)
        .await;
    assert_eq!(r.body["items"].as_array().unwrap().len(), 2);
    assert_eq!(r.body["items"][0]["contact"], 5, "newest first by default");
    let r = s
        .get(
            &format!(
                "/api/v1/tenants/acme/queue-events?agent=alice&kind=connect&from_ms={}",
                t0 + 100_000
            ),
            &t.acme,
        )
        .await;
    assert_eq!(r.body["items"].as_array().unwrap().len(), 1);
    let r = s
        .get(
            &format!(
                "/api/v1/tenants/acme/queue-events?limit=5&to_ms={}",
                t0 + 2_000
            ),
            &t.acme,
        )
        .await;
    assert_eq!(r.body["items"].as_array().unwrap().len(), 2);
    let r = s
        .get("/api/v1/tenants/acme/queue-events?kind=nonsense", &t.acme)
        .await;
    assert_eq!(
        (r.status, r.body["error"]["field"].as_str()),
        (422, Some("kind"))
    );
    assert_eq!(
        s.get("/api/v1/tenants/acme/queue-events", &t.agent)
            .await
            .status,
        403
    );
    assert_eq!(
        s.get("/api/v1/tenants/acme/queue-events", &t.globex)
            .await
            .status,
        404
    );
    let r = loop {
        let r = s
            .get("/api/v1/tenants/globex/queue-events", &t.globex)
            .await;
        if !r.body["items"].as_array().unwrap().is_empty() {
            break r;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "globex's event not stored"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(r.body["items"].as_array().unwrap().len(), 1, "{}", r.body);
    assert_eq!(r.body["items"][0]["agent"], "gina");
    // Statistics per METRICS.md, per 15 minutes.
    let r = s
        .get(
            &format!(
                "/api/v1/tenants/acme/queues/sales/stats?from={}&to={}",
                t0,
                t0 + 1_800_000
            ),
            &t.supervisor,
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let first = &r.body["intervals"][0];
    assert_eq!(first["start_ms"], t0);
    assert_eq!(
        (
            first["offered"].clone(),
            first["answered"].clone(),
            first["abandoned"].clone()
        ),
        (json!(2 + 1), json!(2), json!(1))
    );
    assert_eq!(first["answered_within_sl"], 1);
    // SL = answered within 20 s ÷ (answered + abandoned after 20 s) = 1 / 3.
    assert!(
        (first["service_level_pct"].as_f64().unwrap() - 100.0 / 3.0).abs() < 1e-9,
        "{first}"
    );
    assert_eq!(first["asa_s"], 17.5);
    assert_eq!(
        (
            first["handled"].clone(),
            first["aht_s"].clone(),
            first["acw_s"].clone()
        ),
        (json!(1), json!(70.0), json!(10.0))
    );
    assert!((first["abandonment_rate_pct"].as_f64().unwrap() - 100.0 / 3.0).abs() < 1e-9);
    assert_eq!(first["longest_wait_s"], 30.0);
    let second = &r.body["intervals"][1];
    assert_eq!(
        (
            second["offered"].clone(),
            second["abandoned"].clone(),
            second["short_abandoned"].clone()
        ),
        (json!(1), json!(1), json!(1))
    );
    assert_eq!(
        second["service_level_pct"],
        Value::Null,
        "no answered and no late abandons"
    );
    assert_eq!(second["abandonment_rate_pct"], 100.0);
    assert_eq!(r.body["intervals"].as_array().unwrap().len(), 2);
    assert_eq!(
        (
            r.body["totals"]["offered"].clone(),
            r.body["totals"]["abandoned"].clone()
        ),
        (json!(4), json!(2))
    );
    // Short abandons left out on request; hourly intervals; another SL formula.
    let r = s
        .get(&format!("/api/v1/tenants/acme/queues/sales/stats?from={}&to={}&interval=3600&exclude_short_abandons=true&sl=asterisk", t0, t0 + 3_600_000), &t.supervisor)
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["intervals"].as_array().unwrap().len(), 1);
    let total = &r.body["totals"];
    assert_eq!(
        (total["abandoned"].clone(), total["short_abandoned"].clone()),
        (json!(1), json!(1))
    );
    assert_eq!(
        total["service_level_pct"], 50.0,
        "asterisk: answered within T / answered"
    );
    for (query, field) in [
        ("interval=61", "interval"),
        ("sl=best", "sl"),
        ("from=10&to=5", "to"),
        ("from=0&to=4000000000", "to"),
        ("to=-9223372036768375809", "to"),
        ("to=9223372036854775807", "to"),
        ("from=-1", "from"),
    ] {
        let r = s
            .get(
                &format!("/api/v1/tenants/acme/queues/sales/stats?{query}"),
                &t.acme,
            )
            .await;
        assert_eq!(
            (r.status, r.body["error"]["field"].as_str()),
            (422, Some(field)),
            "{query}: {}",
            r.body
        );
    }
    assert_eq!(
        s.get("/api/v1/tenants/acme/queues/nope/stats", &t.acme)
            .await
            .status,
        404
    );
    assert_eq!(
        s.get("/api/v1/tenants/acme/queues/sales/stats", &t.agent)
            .await
            .status,
        403
    );
    // An agent's figures: its answers, handle time and occupancy (on contacts 60 s talk + 10 s
    // wrap-up, available 2 s before its first offer; the later idle spell has not ended).
    let r = s
        .get(
            &format!(
                "/api/v1/tenants/acme/agents/alice/stats?from={t0}&to={}",
                t0 + 900_000
            ),
            &t.supervisor,
        )
        .await;
    assert_eq!(
        r.status, 404,
        "no agent alice is stored in this test: {}",
        r.body
    );
    let r = s
        .post(
            "/api/v1/tenants/acme/agents",
            &t.acme,
            json!({"name": "alice", "user": "alice"}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.body);
    let r = s
        .get(
            &format!(
                "/api/v1/tenants/acme/agents/alice/stats?from={t0}&to={}",
                t0 + 900_000
            ),
            &t.supervisor,
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let total = &r.body["totals"];
    assert_eq!(
        (
            total["answered"].clone(),
            total["answered_within_sl"].clone(),
            total["handled"].clone()
        ),
        (json!(2), json!(1), json!(1))
    );
    assert_eq!(
        (
            total["aht_s"].clone(),
            total["acw_s"].clone(),
            total["asa_s"].clone()
        ),
        (json!(70.0), json!(10.0), json!(17.5))
    );
    assert!(
        (total["occupancy_pct"].as_f64().unwrap() - 7000.0 / 72.0).abs() < 1e-9,
        "{total}"
    );
    assert_eq!(total["offered"], 0, "offered is a queue figure");
    let r = s
        .get("/api/v1/tenants/acme/queues/sales/stats", &t.supervisor)
        .await;
    assert_eq!(r.body["totals"]["occupancy_pct"], Value::Null);
}

async fn check_seed(s: &Server) {
    let sip: tandem_controlplane::sip::config::SipConfig = toml::from_str(
        r#"
        [[tenants]]
        name = "acme"
        domain = "acme.test"
        [[accounts]]
        tenant = "acme"
        user = "alice"
        password = "sip secret"
        [[queues]]
        tenant = "acme"
        name = "support"
        [[queues]]
        tenant = "acme"
        name = "sales"
        strategy = "ring-all"
        overflow = "queue:support"
        skills = [{ skill = "en", level = 2 }]
        [[agents]]
        tenant = "acme"
        name = "alice"
        user = "alice"
        skills = [{ skill = "fr", level = 3 }]
        queues = [{ queue = "sales", tier = 1 }, { queue = "support" }]
        "#,
    )
    .unwrap();
    sip.validate().unwrap();
    let (added, kept) = s.state.storage.seed(&sip).await.unwrap();
    // tenant, account, two queues, the agent and its two memberships
    assert_eq!((added, kept), (7, 0));
    let r = s.get("/api/v1/tenants/acme/skills", &s.admin).await;
    let skills: Vec<_> = r.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].clone())
        .collect();
    assert_eq!(
        skills,
        [json!("en"), json!("fr")],
        "the skills they name exist"
    );
    // Storage wins after the first start: a change through the API survives a second seed.
    let r = s
        .call(
            "PATCH",
            "/api/v1/tenants/acme/queues/sales",
            Some(&s.admin),
            Some(json!({"strategy": "top-down"})),
            None,
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(s.state.storage.seed(&sip).await.unwrap(), (0, 7));
    let d = s.state.storage.directory().await.unwrap().to_sip();
    let sales = d.queues.iter().find(|q| q.name == "sales").unwrap();
    assert_eq!(
        (sales.strategy.as_str(), sales.overflow.as_deref()),
        ("top-down", Some("queue:support"))
    );
    let alice = &d.agents[0];
    assert_eq!(
        alice
            .queues
            .iter()
            .map(|m| (m.queue.as_str(), m.tier))
            .collect::<Vec<_>>(),
        [("sales", 1), ("support", 0)]
    );
    assert_eq!(alice.skills[0].skill, "fr");
}

mod futures_util_lite {
    use tokio_tungstenite::tungstenite::Message;

    /// The next text message, within two seconds.
    pub async fn next_text<S>(ws: &mut S) -> String
    where
        S: futures_core_stream::Stream<
                Item = Result<Message, tokio_tungstenite::tungstenite::Error>,
            > + Unpin,
    {
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(2);
        loop {
            let msg = tokio::time::timeout_at(deadline, futures_core_stream::next(ws))
                .await
                .expect("an event within 2 s")
                .expect("stream open")
                .expect("no error");
            if let Message::Text(t) = msg {
                return t.to_string();
            }
        }
    }

    /// `StreamExt::next` without pulling in futures-util.
    pub mod futures_core_stream {
        pub use futures_core::Stream;
        use std::pin::Pin;

        pub async fn next<S: Stream + Unpin>(s: &mut S) -> Option<S::Item> {
            std::future::poll_fn(|cx| Pin::new(&mut *s).poll_next(cx)).await
        }
    }
}
