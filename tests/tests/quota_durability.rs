//! The quota's durability: a database outage loses no usage event, a flushed Redis is rebuilt
//! from the ledger, two replicas share one quota, a cut stream is charged for what it
//! generated, and a new period starts from zero.

use std::time::Duration;

use corral_tests::backend::TcpProxy;
use corral_tests::backend::TestDb;
use corral_tests::fake_ollama::FakeOllama;
use corral_tests::gateway::GatewayProcess;
use corral_tests::jwt::{self, claims};
use corral_tests::redis_server::{unique_prefix, RedisServer};
use corral_tests::support::{chat, chat_as, eventually, metric_sum, metrics, quota_used};

const SECRET: &str = "quota-durability-secret-quota-durability";
const UNLIMITED_RATES: &str = "[defaults]\nrequests_per_minute = 0\nuser_requests_per_minute = 0\nmax_concurrent_streams = 0\n";

fn tok(org: &str) -> String {
    jwt::hs256(SECRET, &claims(org, "u1", 600))
}

async fn chat_ok(gw: &GatewayProcess, t: &str) {
    let r = chat_as(&gw.url(), t, "llama3:8b").await;
    assert_eq!(r.status(), 200);
    let _ = r.text().await;
}

async fn used(gw: &GatewayProcess, t: &str) -> u64 {
    quota_used(&gw.url(), t).await
}

#[tokio::test]
async fn a_database_outage_loses_no_usage_event() {
    let db = TestDb::create().await;
    db.migrate();
    let proxy = TcpProxy::start(&db.server_addr()).await;
    let a = FakeOllama::builder().tokens(5).start().await;
    let gw = ledger_gateway(&a, &db.url_via(proxy.port)).await;
    let t = tok("acme");
    chat_ok(&gw, &t).await;
    eventually(Duration::from_secs(5), "first event written", || async {
        db.ledger("acme").await.1 == 1
    })
    .await;

    proxy.cut();
    let started = std::time::Instant::now();
    for _ in 0..10 {
        chat_ok(&gw, &t).await;
    }
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "an absent database never delays responses"
    );
    let ready: serde_json::Value = reqwest::get(format!("{}/readyz", gw.url()))
        .await
        .expect("readyz")
        .json()
        .await
        .expect("json");
    assert_eq!(ready["checks"]["database"]["status"], "error", "{ready}");
    // Now that the database is known to be away, a new org's first request does not wait for
    // a usage rebuild from the ledger either (it counts from 0 at once).
    let before = a.total_prompt_tokens() + a.total_completion_tokens();
    let started = std::time::Instant::now();
    chat_ok(&gw, &tok("newco")).await;
    assert!(
        started.elapsed() < Duration::from_millis(1500),
        "a new org waited {:?} for the absent database",
        started.elapsed()
    );
    let newco_tokens = (a.total_prompt_tokens() + a.total_completion_tokens() - before) as i64;
    let m = metrics(&gw.url()).await;
    assert!(
        metric_sum(&m, "corral_ledger_pending", &[]) >= 1.0,
        "events wait in the buffer"
    );

    proxy.restore();
    let expected = (a.total_prompt_tokens() + a.total_completion_tokens()) as i64 - newco_tokens;
    eventually(
        Duration::from_secs(15),
        "buffered events written once the database is back",
        || async { db.ledger("acme").await == (expected, 11) },
    )
    .await;
    let m = metrics(&gw.url()).await;
    assert_eq!(metric_sum(&m, "corral_ledger_dropped_total", &[]), 0.0);
    gw.stop().await;
}

/// A gateway with JWT auth, no rate limits, and its ledger at `url` (through a `TcpProxy`).
async fn ledger_gateway(a: &FakeOllama, url: &str) -> GatewayProcess {
    let gw = GatewayProcess::builder()
        .instances(&[a.url()])
        .env("JWT_SECRET", SECRET)
        .env("DATABASE_URL", url)
        .policy("p.toml", UNLIMITED_RATES)
        .start()
        .await;
    gw.wait_pool_healthy(1).await;
    gw
}

#[tokio::test]
async fn stopping_writes_buffered_events_and_those_of_requests_in_flight() {
    let db = TestDb::create().await;
    db.migrate();
    let proxy = TcpProxy::start(&db.server_addr()).await;
    let a = FakeOllama::builder()
        .tokens(3)
        .token_delay(Duration::from_millis(300))
        .start()
        .await;
    let mut gw = ledger_gateway(&a, &db.url_via(proxy.port)).await;
    let t = tok("stopco");
    proxy.cut();
    for _ in 0..3 {
        chat_ok(&gw, &t).await;
    }
    eventually(Duration::from_secs(5), "events buffered", || async {
        metric_sum(&metrics(&gw.url()).await, "corral_ledger_pending", &[]) == 3.0
    })
    .await;
    // The writer is backing off (up to 5 s between attempts); the database comes back just
    // as the gateway is told to stop: the stop must not leave the events behind.
    // A request still running when SIGTERM comes ends during the grace period: its event too.
    tokio::time::sleep(Duration::from_secs(2)).await;
    proxy.restore();
    let url = gw.url();
    let in_flight = tokio::spawn({
        let t = t.clone();
        async move { chat_as(&url, &t, "llama3:8b").await.status() }
    });
    eventually(Duration::from_secs(5), "fourth request running", || async {
        a.in_flight() == 1
    })
    .await;
    gw.signal(nix::sys::signal::Signal::SIGTERM);
    assert_eq!(in_flight.await.expect("join"), 200);
    assert!(
        gw.wait_exit(Duration::from_secs(20)).await.is_some(),
        "exits after the grace period"
    );
    let expected = (a.total_prompt_tokens() + a.total_completion_tokens()) as i64;
    assert_eq!(db.ledger("stopco").await, (expected, 4), "{}", gw.log());
    assert!(
        !gw.log().contains("not written at shutdown"),
        "{}",
        gw.log()
    );
}

#[tokio::test]
async fn stopping_while_the_database_is_away_reports_the_loss() {
    let db = TestDb::create().await;
    db.migrate();
    let proxy = TcpProxy::start(&db.server_addr()).await;
    let a = FakeOllama::builder().tokens(2).start().await;
    let mut gw = ledger_gateway(&a, &db.url_via(proxy.port)).await;
    let t = tok("lostco");
    proxy.cut();
    for _ in 0..2 {
        chat_ok(&gw, &t).await;
    }
    gw.signal(nix::sys::signal::Signal::SIGTERM);
    assert!(
        gw.wait_exit(Duration::from_secs(30)).await.is_some(),
        "gives up on the database after its flush deadline"
    );
    let log = gw.log();
    assert!(
        log.contains("usage events not written at shutdown") && log.contains("lost=2"),
        "the loss is logged with its size: {log}"
    );
    proxy.restore();
    assert_eq!(db.ledger("lostco").await.1, 0);
}

#[tokio::test]
async fn a_flushed_redis_is_rebuilt_from_the_ledger_and_replicas_share_the_quota() {
    let db = TestDb::create().await;
    db.migrate();
    let redis = RedisServer::start();
    let prefix = unique_prefix();
    let a = FakeOllama::builder().tokens(5).start().await;
    let start = || {
        GatewayProcess::builder()
            .instances(&[a.url()])
            .env("JWT_SECRET", SECRET)
            .env("DATABASE_URL", &db.url())
            .env("REDIS_URL", &redis.url())
            .env("REDIS_KEY_PREFIX", &prefix)
            .policy(
                "p.toml",
                &format!("{UNLIMITED_RATES}\n[orgs.acme.quota]\nhard_tokens = 1000000\n"),
            )
            .start()
    };
    let (g1, g2) = (start().await, start().await);
    g1.wait_pool_healthy(1).await;
    g2.wait_pool_healthy(1).await;
    let t = tok("acme");
    for i in 0..6 {
        chat_ok(if i % 2 == 0 { &g1 } else { &g2 }, &t).await;
    }
    let total = a.total_prompt_tokens() + a.total_completion_tokens();
    // Settlements are written to Redis just after each answer (off the request path).
    eventually(
        Duration::from_secs(5),
        "one quota across both replicas",
        || async { used(&g1, &t).await == total },
    )
    .await;
    assert_eq!(used(&g2, &t).await, total);
    eventually(Duration::from_secs(5), "ledger written", || async {
        db.ledger("acme").await.1 == 6
    })
    .await;

    // Redis loses everything: the next decision rebuilds the counter from the ledger.
    let client = redis::Client::open(redis.url()).expect("redis url");
    let mut conn = client
        .get_multiplexed_async_connection()
        .await
        .expect("redis connection");
    let _: () = redis::cmd("FLUSHALL")
        .query_async(&mut conn)
        .await
        .expect("flush");
    assert_eq!(used(&g2, &t).await, total, "rebuilt from usage_events");
    g1.stop().await;
    g2.stop().await;
}

#[tokio::test]
async fn a_cut_stream_is_charged_for_what_it_generated() {
    let a = FakeOllama::builder()
        .tokens(20)
        .token_delay(Duration::from_millis(5))
        .fail_after_tokens(Some(7))
        .start()
        .await;
    let gw = GatewayProcess::builder()
        .instances(&[a.url()])
        .env("JWT_SECRET", SECRET)
        .policy("p.toml", UNLIMITED_RATES)
        .start()
        .await;
    gw.wait_pool_healthy(1).await;
    let t = tok("acme");
    let r = reqwest::Client::new()
        .post(format!("{}/api/chat", gw.url()))
        .bearer_auth(&t)
        .json(&chat("llama3:8b", true))
        .send()
        .await
        .expect("send");
    let _ = r.text().await;
    eventually(Duration::from_secs(3), "charged", || async {
        used(&gw, &t).await == 7
    })
    .await;
    let m = metrics(&gw.url()).await;
    assert_eq!(
        metric_sum(
            &m,
            "corral_org_tokens_total",
            &[("org", "acme"), ("kind", "completion")]
        ),
        7.0
    );
    gw.stop().await;
}

#[tokio::test]
async fn usage_starts_over_when_the_period_changes() {
    // The gateway's clock set 3 s before midnight UTC: a day quota resets 3 s into the test.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs() as i64;
    let offset = (86_400 - now.rem_euclid(86_400)) - 3;
    let a = FakeOllama::builder().tokens(5).start().await;
    let gw = GatewayProcess::builder()
        .instances(&[a.url()])
        .env("JWT_SECRET", SECRET)
        .env("CORRAL_CLOCK_OFFSET_S", &offset.to_string())
        .policy(
            "p.toml",
            &format!(
                "{UNLIMITED_RATES}\n[orgs.acme.quota]\nperiod = \"day\"\nhard_tokens = 100000\n"
            ),
        )
        .start()
        .await;
    gw.wait_pool_healthy(1).await;
    let t = tok("acme");
    chat_ok(&gw, &t).await;
    assert!(used(&gw, &t).await > 0);
    tokio::time::sleep(Duration::from_millis(3500)).await;
    assert_eq!(used(&gw, &t).await, 0, "a new day, a new quota");
    gw.stop().await;
}
