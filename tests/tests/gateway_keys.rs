//! API keys at the gateway (issue 11): keys made by the backend's admin API carry the same
//! identity a JWT does through the gateway, rotation keeps the old secret for its grace
//! period, revocation reaches every replica within a second, a database outage neither
//! accepts nor refuses falsely, guessing is throttled per IP, and the ledger records the key.

use std::time::{Duration, Instant};

use corral_tests::backend::{token, Api, BackendProcess, TcpProxy, TestDb, PEPPER, SECRET};
use corral_tests::fake_ollama::FakeOllama;
use corral_tests::gateway::GatewayProcess;
use corral_tests::support::{chat, eventually, metric_sum, metrics, openai_chat};
use serde_json::{json, Value};

struct Setup {
    db: TestDb,
    backend: BackendProcess,
    fake: FakeOllama,
    admin: Api,
}

async fn setup() -> Setup {
    let db = TestDb::create().await;
    let backend = BackendProcess::keyed(&db).start().await;
    let fake = FakeOllama::builder().tokens(3).start().await;
    let admin = Api::as_user(&backend.url(), "acme", "alice", Some("admin"));
    Setup {
        db,
        backend,
        fake,
        admin,
    }
}

async fn gateway(s: &Setup, database_url: &str) -> GatewayProcess {
    let gw = GatewayProcess::builder()
        .instances(&[s.fake.url()])
        .env("JWT_SECRET", SECRET)
        .env("API_KEY_PEPPER", PEPPER)
        .env("DATABASE_URL", database_url)
        .start()
        .await;
    gw.wait_pool_healthy(1).await;
    gw
}

async fn create_key(s: &Setup, body: Value) -> (String, String) {
    let r = s.admin.post("/api/orgs/acme/keys", &body).await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    (
        r.body["id"].as_str().expect("id").to_string(),
        r.body["key"].as_str().expect("key").to_string(),
    )
}

async fn chat_with(gw: &GatewayProcess, key: &str) -> reqwest::Response {
    reqwest::Client::new()
        .post(format!("{}/api/chat", gw.url()))
        .bearer_auth(key)
        .json(&chat("llama3:8b", true))
        .send()
        .await
        .expect("send")
}

async fn status_with(gw: &GatewayProcess, key: &str) -> u16 {
    let r = chat_with(gw, key).await;
    let status = r.status().as_u16();
    let _ = r.bytes().await;
    status
}

#[tokio::test]
async fn a_key_carries_the_orgs_identity_on_every_path() {
    let s = setup().await;
    let gw = gateway(&s, &s.db.url()).await;
    let (id, key) = create_key(&s, json!({"name": "ci"})).await;

    let r = chat_with(&gw, &key).await;
    assert_eq!(r.status(), 200);
    let text = r.text().await.expect("body");
    assert!(
        text.lines()
            .last()
            .is_some_and(|l| l.contains("\"done\":true")),
        "{text}"
    );
    let seen = s.fake.last_request().expect("request");
    assert_eq!(seen.header("x-corral-org"), Some("acme"));
    assert_eq!(seen.header("x-corral-user"), Some("key:ci"));
    assert_eq!(
        seen.header("authorization"),
        None,
        "the key stays at the edge"
    );

    // OpenAI-style path, and `x-api-key` as Anthropic-style clients send it.
    let r = reqwest::Client::new()
        .post(format!("{}/v1/chat/completions", gw.url()))
        .header("x-api-key", &key)
        .json(&openai_chat("llama3:8b", true, true))
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), 200);
    assert!(r.text().await.expect("body").contains("data: [DONE]"));
    assert_eq!(
        s.fake.last_request().expect("request").header("x-api-key"),
        None
    );

    // The ledger records which key made each request, and the access log names only its id.
    let client = s.db.client().await;
    let ledger_id = id.clone();
    eventually(
        Duration::from_secs(10),
        "usage events with the key id",
        || {
            let client = &client;
            let id = ledger_id.clone();
            async move {
                client
                    .query_one(
                        "SELECT count(*) FROM usage_events WHERE key_id = $1",
                        &[&id],
                    )
                    .await
                    .map(|r| r.get::<_, i64>(0) == 2)
                    .unwrap_or(false)
            }
        },
    )
    .await;
    // last_used_at is written in batches, off the request path.
    let used_id = id.clone();
    eventually(Duration::from_secs(10), "last_used_at written", || {
        let client = &client;
        let id = used_id.clone();
        async move {
            client
                .query_one(
                    "SELECT last_used_at IS NOT NULL FROM api_keys WHERE id = $1",
                    &[&id],
                )
                .await
                .map(|r| r.get::<_, bool>(0))
                .unwrap_or(false)
        }
    })
    .await;
    let report = s.admin.get("/api/orgs/acme/usage").await;
    assert_eq!(report.status, 200, "{:?}", report.body);
    let by_key = report.body["by_key"].as_array().expect("by_key");
    assert!(
        by_key
            .iter()
            .any(|k| k["key_id"] == id.as_str() && k["requests"] == 2),
        "{by_key:?}"
    );
    let log = gw.log();
    assert!(log.contains(&format!("key_id=\"{id}\"")), "{log}");
    assert!(!log.contains(&key[17..]), "no secret in the log");

    // Narrower model patterns than the org's are enforced.
    let (_, narrow) = create_key(&s, json!({"name": "narrow", "models": ["qwen*"]})).await;
    let r = chat_with(&gw, &narrow).await;
    assert_eq!(r.status(), 403);
    let body: Value = r.json().await.expect("json");
    assert_eq!(body["code"], "model_not_allowed");
    gw.stop().await;
    s.backend.stop().await;
}

#[tokio::test]
async fn rotation_keeps_the_old_secret_for_its_grace_period_only() {
    let s = setup().await;
    let gw = gateway(&s, &s.db.url()).await;
    let (id, old) = create_key(&s, json!({"name": "ci"})).await;
    assert_eq!(status_with(&gw, &old).await, 200);
    let r = s
        .admin
        .post(
            &format!("/api/orgs/acme/keys/{id}/rotate"),
            &json!({"grace_s": 2}),
        )
        .await;
    assert_eq!(r.status, 200);
    let new = r.body["key"].as_str().expect("key").to_string();
    assert_eq!(
        status_with(&gw, &old).await,
        200,
        "old works in the grace period"
    );
    assert_eq!(status_with(&gw, &new).await, 200, "new works at once");
    tokio::time::sleep(Duration::from_millis(2300)).await;
    assert_eq!(status_with(&gw, &old).await, 401, "old refused after it");
    assert_eq!(status_with(&gw, &new).await, 200);
    gw.stop().await;
    s.backend.stop().await;
}

#[tokio::test]
async fn a_revocation_reaches_both_replicas_within_a_second() {
    revocation_reaches_both_replicas(None).await;
}

#[tokio::test]
async fn a_revocation_reaches_both_replicas_sharing_redis_within_a_second() {
    let prefix = format!("corral-test-{}:", std::process::id());
    revocation_reaches_both_replicas(Some(("redis://127.0.0.1:6379", prefix.as_str()))).await;
}

async fn revocation_reaches_both_replicas(redis: Option<(&str, &str)>) {
    let s = setup().await;
    let replica = || {
        let mut b = GatewayProcess::builder()
            .instances(&[s.fake.url()])
            .env("JWT_SECRET", SECRET)
            .env("API_KEY_PEPPER", PEPPER)
            .env("DATABASE_URL", &s.db.url());
        if let Some((url, prefix)) = redis {
            b = b.env("REDIS_URL", url).env("REDIS_KEY_PREFIX", prefix);
        }
        b.start()
    };
    let a = replica().await;
    let b = replica().await;
    a.wait_pool_healthy(1).await;
    b.wait_pool_healthy(1).await;
    let (id, key) = create_key(&s, json!({"name": "leaked"})).await;
    // Both replicas have the key cached (positive entries live a minute).
    for gw in [&a, &b] {
        assert_eq!(status_with(gw, &key).await, 200);
        let r = reqwest::get(format!("{}/readyz", gw.url()))
            .await
            .expect("readyz");
        let ready: Value = r.json().await.expect("json");
        assert_eq!(
            ready["checks"]["api_keys"]["change_channel"], "listening",
            "{ready}"
        );
    }
    let revoked = Instant::now();
    assert_eq!(
        s.admin
            .delete(&format!("/api/orgs/acme/keys/{id}"))
            .await
            .status,
        204
    );
    for gw in [&a, &b] {
        loop {
            let status = status_with(gw, &key).await;
            if status == 401 {
                break;
            }
            assert_eq!(status, 200);
            assert!(
                revoked.elapsed() < Duration::from_secs(1),
                "the revoked key still works after {:?}",
                revoked.elapsed()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    println!(
        "revocation reached both replicas in {:?}",
        revoked.elapsed()
    );
    a.stop().await;
    b.stop().await;
    s.backend.stop().await;
}

#[tokio::test]
async fn a_database_outage_neither_accepts_nor_refuses_falsely() {
    let s = setup().await;
    let hop = TcpProxy::start(&s.db.server_addr()).await;
    let gw = gateway(&s, &s.db.url_via(hop.port)).await;
    // The change channel drops the whole cache when it (re)connects: wait for it, so the key
    // cached below is not dropped by its first connection.
    eventually(
        Duration::from_secs(10),
        "the key change channel",
        || async {
            let r = reqwest::get(format!("{}/readyz", gw.url())).await;
            let ready: Value = match r {
                Ok(r) => r.json().await.unwrap_or_default(),
                Err(_) => return false,
            };
            ready["checks"]["api_keys"]["change_channel"] == "listening"
        },
    )
    .await;
    let (_, cached) = create_key(&s, json!({"name": "cached"})).await;
    let (_, unseen) = create_key(&s, json!({"name": "unseen"})).await;
    assert_eq!(status_with(&gw, &cached).await, 200);
    // Its creation's announcement may land just after that first use and drop it: use it
    // again once the announcement is surely in, so it is cached when the database goes.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(status_with(&gw, &cached).await, 200);

    hop.cut();
    assert_eq!(
        status_with(&gw, &cached).await,
        200,
        "a cached key keeps working"
    );
    let r = chat_with(&gw, &unseen).await;
    assert_eq!(
        r.status(),
        503,
        "an unknown key is neither accepted nor refused"
    );
    assert!(r.headers().contains_key("retry-after"));
    let body: Value = r.json().await.expect("json");
    assert_eq!(body["code"], "auth_unavailable");

    hop.restore();
    // Nothing is lost: the usage of the requests served during the outage reaches the ledger.
    let client = s.db.client().await;
    let mut written = 0;
    for _ in 0..150 {
        written = client
            .query_one(
                "SELECT count(*) FROM usage_events WHERE user_id = 'key:cached'",
                &[],
            )
            .await
            .map(|r| r.get::<_, i64>(0))
            .unwrap_or(-1);
        // Two uses before the outage, one during it.
        if written == 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        written,
        3,
        "the outage's usage in the ledger:\n{}",
        gw.log()
    );
    let base = gw.url();
    eventually(
        Duration::from_secs(10),
        "the unseen key works once the database is back",
        || {
            let unseen = unseen.clone();
            let base = base.clone();
            async move {
                reqwest::Client::new()
                    .get(format!("{base}/api/tags"))
                    .bearer_auth(&unseen)
                    .send()
                    .await
                    .is_ok_and(|r| r.status() == 200)
            }
        },
    )
    .await;
    gw.stop().await;
    s.backend.stop().await;
}

#[tokio::test]
async fn guessing_keys_is_throttled_per_ip_before_any_lookup() {
    let s = setup().await;
    let gw = gateway(&s, &s.db.url()).await;
    let client = reqwest::Client::new();
    let mut statuses = Vec::new();
    for i in 0..100 {
        let guess = format!("crl_{:0>12}_{}", i, "x".repeat(43));
        let r = client
            .get(format!("{}/api/tags", gw.url()))
            .bearer_auth(guess)
            .send()
            .await
            .expect("send");
        statuses.push(r.status().as_u16());
    }
    assert!(statuses[..30].iter().all(|s| *s == 401), "{statuses:?}");
    assert!(statuses[30..].iter().all(|s| *s == 429), "{statuses:?}");
    let m = metrics(&gw.url()).await;
    let lookups = metric_sum(&m, "corral_api_key_lookups_total", &[]);
    assert!(lookups <= 30.0, "no lookups once blocked: {lookups}");
    // A JWT from the same address is not affected.
    let r = client
        .get(format!("{}/api/tags", gw.url()))
        .bearer_auth(token("acme", "alice", None))
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), 200);
    gw.stop().await;
    s.backend.stop().await;
}

#[tokio::test]
async fn policy_files_limit_a_key_by_name() {
    let s = setup().await;
    let gw = GatewayProcess::builder()
        .instances(&[s.fake.url()])
        .env("JWT_SECRET", SECRET)
        .env("API_KEY_PEPPER", PEPPER)
        .env("DATABASE_URL", &s.db.url())
        .policy(
            "keys.toml",
            "[orgs.acme.keys.ci]\nuser_requests_per_minute = 2\n",
        )
        .start()
        .await;
    gw.wait_pool_healthy(1).await;
    let (_, ci) = create_key(&s, json!({"name": "ci"})).await;
    let (_, other) = create_key(&s, json!({"name": "other"})).await;
    // 2 a minute, smoothed: the first passes, the next ones are refused at once.
    let mut statuses = Vec::new();
    for _ in 0..4 {
        statuses.push(status_with(&gw, &ci).await);
    }
    assert_eq!(statuses, [200, 429, 429, 429]);
    assert_eq!(
        status_with(&gw, &other).await,
        200,
        "another key of the org is not limited"
    );
    gw.stop().await;
    s.backend.stop().await;
}

#[tokio::test]
async fn racing_first_uses_of_a_key_cause_one_lookup() {
    let s = setup().await;
    let gw = gateway(&s, &s.db.url()).await;
    let (_, key) = create_key(&s, json!({"name": "burst"})).await;
    let client = reqwest::Client::new();
    let requests = (0..20).map(|_| {
        client
            .get(format!("{}/api/tags", gw.url()))
            .bearer_auth(&key)
            .send()
    });
    let answers = futures::future::join_all(requests).await;
    assert!(answers
        .iter()
        .all(|r| r.as_ref().is_ok_and(|r| r.status() == 200)));
    let m = metrics(&gw.url()).await;
    assert_eq!(
        metric_sum(&m, "corral_api_key_lookups_total", &[("result", "found")]),
        1.0,
        "one database read for 20 racing requests"
    );
    assert_eq!(
        metric_sum(&m, "corral_api_key_checks_total", &[("result", "ok")]),
        20.0
    );
    gw.stop().await;
    s.backend.stop().await;
}
