//! Running the backend: a database outage (through a TCP hop the test cuts) answered with
//! 503 and `Retry-After`, then recovery without a restart; readiness following the database;
//! the retention job; metrics.

use std::time::Duration;

use corral_tests::backend::{Api, BackendProcess, TcpProxy, TestDb};
use corral_tests::support::{eventually, metric_sum, metrics};
use serde_json::Value;

#[tokio::test]
async fn a_database_outage_gives_503_and_the_backend_recovers_by_itself() {
    let db = TestDb::create().await;
    let proxy = TcpProxy::start(&db.server_addr()).await;
    let be = BackendProcess::builder()
        .database(&db.url_via(proxy.port))
        .toml("[database]\nacquire_timeout_ms = 500\nconnect_timeout_ms = 500")
        .start()
        .await;
    let alice = Api::as_user(&be.url(), "acme", "alice", None);
    let id = alice.create_conversation("before", "llama3:8b").await;
    let ready = be.url() + "/readyz";
    assert_eq!(reqwest::get(&ready).await.expect("readyz").status(), 200);

    proxy.cut();
    for path in [
        "/api/conversations".to_string(),
        format!("/api/conversations/{id}"),
    ] {
        let r = alice.get(&path).await;
        assert_eq!(r.status, 503, "{path}: {:?}", r.body);
        assert_eq!(r.body["code"], "upstream_unavailable");
        assert!(r.headers.contains_key("retry-after"));
    }
    let r = reqwest::get(&ready).await.expect("readyz");
    assert_eq!(r.status(), 503);
    let body: Value = r.json().await.expect("json");
    assert_eq!(body["status"], "error");
    assert_eq!(body["checks"]["database"]["status"], "error");

    proxy.restore();
    eventually(Duration::from_secs(15), "requests succeed again", || {
        let alice = alice.clone();
        async move { alice.get("/api/conversations").await.status == 200 }
    })
    .await;
    let r = alice.get(&format!("/api/conversations/{id}")).await;
    assert_eq!(r.body["title"], "before");
    assert_eq!(
        alice.create_conversation("after", "llama3:8b").await.len(),
        36
    );
    let r = reqwest::get(&ready).await.expect("readyz");
    assert_eq!(r.status(), 200);
    let m = metrics(&be.url()).await;
    assert!(metric_sum(&m, "corral_backend_db_unavailable_total", &[]) >= 2.0);
    be.stop().await;
}

#[tokio::test]
async fn the_retention_job_deletes_old_messages() {
    let db = TestDb::create().await;
    let be = BackendProcess::builder()
        .database(&db.url())
        .toml("[retention]\ndays = 30\ninterval_s = 1")
        .start()
        .await;
    let client = db.client().await;
    // acme keeps the default (30 days); globex keeps 100 days.
    client
        .batch_execute(
            "INSERT INTO orgs (id, retention_days) VALUES ('globex', 100); \
             INSERT INTO conversations (id, org_id, user_id, title, model) VALUES \
               ('11111111-1111-1111-1111-111111111111', 'acme', 'alice', 't', 'm'), \
               ('22222222-2222-2222-2222-222222222222', 'globex', 'gina', 't', 'm'); \
             INSERT INTO messages (conversation_id, role, content, created_at) VALUES \
               ('11111111-1111-1111-1111-111111111111', 'user', 'old', now() - interval '40 days'), \
               ('11111111-1111-1111-1111-111111111111', 'user', 'recent', now() - interval '5 days'), \
               ('22222222-2222-2222-2222-222222222222', 'user', 'kept by policy', now() - interval '40 days'), \
               ('22222222-2222-2222-2222-222222222222', 'user', 'too old', now() - interval '101 days');",
        )
        .await
        .expect("insert");
    eventually(Duration::from_secs(10), "old messages are deleted", || {
        let db = &db;
        async move {
            let n: i64 = db
                .client()
                .await
                .query_one("SELECT count(*) FROM messages", &[])
                .await
                .expect("count")
                .get(0);
            n == 2
        }
    })
    .await;
    let left: Vec<String> = client
        .query("SELECT content FROM messages ORDER BY content", &[])
        .await
        .expect("rows")
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(left, vec!["kept by policy", "recent"]);
    // Later passes find nothing more and say so.
    eventually(Duration::from_secs(5), "an idle pass is logged", || {
        let log = be.log();
        async move { log.contains("deleted=0") }
    })
    .await;
    assert!(be.log().contains("retention: expired messages deleted"));
    let m = metrics(&be.url()).await;
    assert_eq!(
        metric_sum(&m, "corral_backend_retention_deleted_total", &[]),
        2.0
    );
    be.stop().await;
}

#[tokio::test]
async fn health_readiness_and_metrics() {
    let db = TestDb::create().await;
    let be = BackendProcess::builder().database(&db.url()).start().await;
    let r = reqwest::get(be.url() + "/healthz").await.expect("healthz");
    assert_eq!(r.status(), 200);
    let r = reqwest::get(be.url() + "/readyz").await.expect("readyz");
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.expect("json");
    assert_eq!(body["status"], "ok");
    assert_eq!(body["checks"]["database"]["status"], "ok");
    assert_eq!(body["checks"]["migrations"]["status"], "ok");
    assert_eq!(body["checks"]["migrations"]["applied_version"], 3);
    assert!(body["version"].is_string());
    assert!(body["uptime_s"].is_u64());

    let alice = Api::as_user(&be.url(), "acme", "alice", None);
    alice.create_conversation("t", "m").await;
    alice.get("/api/conversations").await;
    let m = metrics(&be.url()).await;
    let created = metric_sum(
        &m,
        "corral_backend_requests_total",
        &[
            ("route", "/api/conversations"),
            ("method", "POST"),
            ("status", "201"),
        ],
    );
    assert_eq!(created, 1.0);
    assert!(metric_sum(&m, "corral_backend_db_connections", &[("state", "open")]) >= 1.0);
    // SIGTERM stops it cleanly.
    let status = be.stop().await.expect("exited");
    assert!(status.success(), "{status}");
}
