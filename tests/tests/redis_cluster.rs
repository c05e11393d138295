//! Replicas that act as one on a real Redis Cluster (three primaries on loopback): the org's
//! request rate, token quota and stream limit hold across two gateways, every key of one
//! org lands in one slot, and a primary killed mid-run degrades by the failure mode without
//! losing a usage event.

use std::time::Duration;

use corral_tests::backend::TestDb;
use corral_tests::fake_ollama::FakeOllama;
use corral_tests::gateway::GatewayProcess;
use corral_tests::jwt::{self, claims};
use corral_tests::redis_cluster::RedisCluster;
use corral_tests::redis_server::unique_prefix;
use corral_tests::support::{chat, chat_as, eventually};
use serde_json::Value;

const SECRET: &str = "redis-cluster-secret-redis-cluster-secret";

fn tok(org: &str) -> String {
    jwt::hs256(SECRET, &claims(org, "bob", 600))
}

async fn pair(
    a: &FakeOllama,
    cluster: &RedisCluster,
    prefix: &str,
    policy: &str,
) -> (GatewayProcess, GatewayProcess) {
    let start = || {
        GatewayProcess::builder()
            .instances(&[a.url()])
            .env("JWT_SECRET", SECRET)
            .env("REDIS_URL", &cluster.url())
            .env("REDIS_KEY_PREFIX", prefix)
            .pool("queue_timeout_ms = 300")
            .policy("p.toml", policy)
            .start()
    };
    let (g1, g2) = (start().await, start().await);
    g1.wait_pool_healthy(1).await;
    g2.wait_pool_healthy(1).await;
    (g1, g2)
}

async fn status(gw: &GatewayProcess, t: &str) -> (u16, Value) {
    let r = chat_as(&gw.url(), t, "llama3:8b").await;
    let s = r.status().as_u16();
    (s, r.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn an_orgs_request_rate_holds_across_replicas_and_its_keys_share_a_slot() {
    let cluster = RedisCluster::start();
    let prefix = unique_prefix();
    let a = FakeOllama::builder().tokens(1).start().await;
    let policy =
        "[orgs.rateco]\nrequests_per_minute = 6\nburst = 9\nuser_requests_per_minute = 600\n";
    let (g1, g2) = pair(&a, &cluster, &prefix, policy).await;
    let t = tok("rateco");
    let mut allowed = 0;
    for i in 0..20 {
        let gw = if i % 2 == 0 { &g1 } else { &g2 };
        if status(gw, &t).await.0 == 200 {
            allowed += 1;
        }
    }
    assert!(
        (10..=11).contains(&allowed),
        "the pair admitted {allowed} of 20; one shared limit admits 10"
    );
    // Org limit, user limit, quota counter: all on the node that owns the org's tag.
    let owner = cluster.owner_of("{rateco}");
    let keys = cluster.keys_on(owner, &format!("{prefix}*"));
    assert!(
        keys.iter().any(|k| k.ends_with(":rl:org")) && keys.iter().any(|k| k.contains(":rl:user:")),
        "keys on the owner of {{rateco}}: {keys:?}"
    );
    for port in cluster.ports.iter().filter(|p| **p != owner) {
        assert!(cluster.keys_on(*port, &format!("{prefix}*")).is_empty());
    }
    g1.stop().await;
    g2.stop().await;
}

#[tokio::test]
async fn a_hard_quota_holds_across_replicas_on_a_cluster() {
    let cluster = RedisCluster::start();
    let a = FakeOllama::builder().tokens(20).start().await;
    let policy =
        "[orgs.quotaco]\nrequests_per_minute = 6000\n[orgs.quotaco.quota]\nhard_tokens = 600\n";
    let (g1, g2) = pair(&a, &cluster, &unique_prefix(), policy).await;
    let t = tok("quotaco");
    // Turns about until both replicas refuse in a row: the budget is spent for both. (A
    // request may be refused a moment early while the previous one's hold is still being
    // settled, off the request path; never late.)
    let mut refusals_in_a_row = 0;
    for i in 0..80 {
        let gw = if i % 2 == 0 { &g1 } else { &g2 };
        let (s, body) = status(gw, &t).await;
        if s == 429 {
            assert_eq!(body["code"], "quota_exceeded", "{body}");
            refusals_in_a_row += 1;
            if refusals_in_a_row == 2 {
                break;
            }
        } else {
            assert_eq!(s, 200, "{body}");
            refusals_in_a_row = 0;
        }
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
    assert_eq!(
        refusals_in_a_row, 2,
        "both replicas refuse once the quota is spent"
    );
    let spent = a.total_prompt_tokens() + a.total_completion_tokens();
    assert!(
        spent <= 600,
        "the instances produced {spent} tokens for a 600 quota"
    );
    g1.stop().await;
    g2.stop().await;
}

#[tokio::test]
async fn one_stream_at_a_time_across_replicas_on_a_cluster() {
    let cluster = RedisCluster::start();
    let a = FakeOllama::builder()
        .tokens(10)
        .token_delay(Duration::from_millis(100))
        .start()
        .await;
    let policy = "[orgs.streamco]\nmax_concurrent_streams = 1\n";
    let (g1, g2) = pair(&a, &cluster, &unique_prefix(), policy).await;
    let t = tok("streamco");
    let client = reqwest::Client::new();
    let first = client
        .post(format!("{}/api/chat", g1.url()))
        .bearer_auth(&t)
        .json(&chat("llama3:8b", true))
        .send()
        .await
        .expect("first stream");
    assert_eq!(first.status(), 200);
    let (s, body) = status(&g2, &t).await;
    assert_eq!(
        s, 429,
        "the org's one stream is running on the other replica: {body}"
    );
    assert!(body["error"]
        .as_str()
        .is_some_and(|e| e.contains("concurrent streams")));
    let _ = first.text().await;
    // Freed by the first replica's settlement: the second replica admits at once.
    eventually(
        Duration::from_secs(2),
        "slot freed across replicas",
        || async { status(&g2, &t).await.0 == 200 },
    )
    .await;
    g1.stop().await;
    g2.stop().await;
}

#[tokio::test]
async fn a_killed_primary_degrades_by_failure_mode_without_losing_a_usage_event() {
    let db = TestDb::create().await;
    db.migrate();
    let mut cluster = RedisCluster::start();
    let a = FakeOllama::builder().tokens(2).start().await;
    let policy = "[orgs.acme]\nrequests_per_minute = 6000\nburst = 100\n[orgs.acme.quota]\nhard_tokens = 1000000\n";
    let prefix = unique_prefix();
    let start = |mode: &'static str| {
        GatewayProcess::builder()
            .instances(&[a.url()])
            .env("JWT_SECRET", SECRET)
            .env("REDIS_URL", &cluster.url())
            .env("REDIS_KEY_PREFIX", &prefix)
            .env("DATABASE_URL", &db.url())
            .toml(&format!(
                "[redis]\nfailure_mode = \"{mode}\"\ntimeout_ms = 200\n"
            ))
            .policy("p.toml", policy)
            .start()
    };
    let (open1, open2, closed) = (
        start("fail_open").await,
        start("fail_open").await,
        start("fail_closed").await,
    );
    for g in [&open1, &open2, &closed] {
        g.wait_pool_healthy(1).await;
    }
    let t = tok("acme");
    for i in 0..10 {
        let gw = if i % 2 == 0 { &open1 } else { &open2 };
        assert_eq!(status(gw, &t).await.0, 200);
    }
    assert_eq!(status(&closed, &t).await.0, 200);
    cluster.kill(cluster.owner_of("{acme}"));
    for i in 0..10 {
        let gw = if i % 2 == 0 { &open1 } else { &open2 };
        let (s, body) = status(gw, &t).await;
        assert_eq!(s, 200, "fail_open serves on with local limits: {body}");
    }
    let (s, body) = status(&closed, &t).await;
    assert_eq!(
        s, 503,
        "fail_closed refuses while its Redis slot is down: {body}"
    );
    // Every served request is in the ledger: 11 before the kill, 10 after.
    eventually(
        Duration::from_secs(10),
        "all usage events written",
        || async { db.ledger("acme").await.1 == 21 },
    )
    .await;
    let tokens = (a.total_prompt_tokens() + a.total_completion_tokens()) as i64;
    assert_eq!(db.ledger("acme").await.0, tokens);
    for g in [open1, open2, closed] {
        g.stop().await;
    }
}
