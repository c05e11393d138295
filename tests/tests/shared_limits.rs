//! Limits shared through Redis: two gateway replicas hold one limit together, and a Redis
//! that goes away is handled per the failure mode (fall back locally, or refuse with 503),
//! with shared limiting resuming by itself when it returns.

use std::time::Duration;

use corral_tests::fake_ollama::FakeOllama;
use corral_tests::gateway::GatewayProcess;
use corral_tests::jwt::{self, claims};
use corral_tests::redis_server::{unique_prefix, RedisServer};
use corral_tests::support::{chat, chat_as, eventually};
use serde_json::Value;

const SECRET: &str = "shared-limits-secret-shared-limits-secret";
const POLICY: &str =
    "[orgs.acme]\nrequests_per_minute = 6\nburst = 9\nuser_requests_per_minute = 0\n";

async fn status(gw: &GatewayProcess, tok: &str) -> u16 {
    chat_as(&gw.url(), tok, "llama3:8b").await.status().as_u16()
}

#[tokio::test]
async fn two_replicas_hold_one_limit_through_redis() {
    let redis = RedisServer::start();
    let prefix = unique_prefix();
    let a = FakeOllama::builder().tokens(1).start().await;
    let start = || {
        GatewayProcess::builder()
            .instances(&[a.url()])
            .env("JWT_SECRET", SECRET)
            .env("REDIS_URL", &redis.url())
            .env("REDIS_KEY_PREFIX", &prefix)
            .policy("p.toml", POLICY)
            .start()
    };
    let (g1, g2) = (start().await, start().await);
    g1.wait_pool_healthy(1).await;
    g2.wait_pool_healthy(1).await;
    let tok = jwt::hs256(SECRET, &claims("acme", "bob", 600));
    let mut allowed = 0;
    for i in 0..20 {
        let gw = if i % 2 == 0 { &g1 } else { &g2 };
        if status(gw, &tok).await == 200 {
            allowed += 1;
        }
    }
    // Ten at once (rate + burst of nine), plus at most one more for the time the loop took.
    assert!(
        (10..=11).contains(&allowed),
        "the pair admitted {allowed} of 20; one shared limit admits 10"
    );
    let ready: Value = reqwest::get(format!("{}/readyz", g1.url()))
        .await
        .expect("readyz")
        .json()
        .await
        .expect("json");
    assert_eq!(ready["checks"]["redis"]["status"], "ok");
    g1.stop().await;
    g2.stop().await;
}

#[tokio::test]
async fn redis_going_away_fails_open_to_local_limits_then_resumes() {
    let mut redis = RedisServer::start();
    let port = redis.port;
    let a = FakeOllama::builder().tokens(1).start().await;
    let gw = GatewayProcess::builder()
        .instances(&[a.url()])
        .env("JWT_SECRET", SECRET)
        .env("REDIS_URL", &redis.url())
        .env("REDIS_KEY_PREFIX", &unique_prefix())
        .policy("p.toml", POLICY)
        .start()
        .await;
    gw.wait_pool_healthy(1).await;
    let tok = jwt::hs256(SECRET, &claims("acme", "bob", 600));
    assert_eq!(status(&gw, &tok).await, 200);
    redis.stop();

    // Requests keep being served, limited by the local fallback (10 at once, then 429).
    let mut codes = Vec::new();
    for _ in 0..14 {
        codes.push(status(&gw, &tok).await);
    }
    assert!(codes[..9].iter().all(|c| *c == 200), "{codes:?}");
    assert!(
        codes.contains(&429),
        "the local limiter still limits: {codes:?}"
    );
    let ready: Value = reqwest::get(format!("{}/readyz", gw.url()))
        .await
        .expect("readyz")
        .json()
        .await
        .expect("json");
    assert_eq!(ready["status"], "degraded", "{ready}");
    assert_eq!(ready["checks"]["redis"]["status"], "error");

    let _redis = RedisServer::start_on(port);
    eventually(Duration::from_secs(10), "redis back in /readyz", || async {
        let v: Value = reqwest::get(format!("{}/readyz", gw.url()))
            .await
            .expect("readyz")
            .json()
            .await
            .expect("json");
        v["checks"]["redis"]["status"] == "ok"
    })
    .await;
    // A fresh Redis has no state: the shared limit starts over, served from Redis again.
    assert_eq!(
        status(&gw, &jwt::hs256(SECRET, &claims("acme", "carol", 600))).await,
        200
    );
    gw.stop().await;
}

#[tokio::test]
async fn redis_going_away_fails_closed_with_503() {
    let mut redis = RedisServer::start();
    let a = FakeOllama::builder().tokens(1).start().await;
    let gw = GatewayProcess::builder()
        .instances(&[a.url()])
        .env("JWT_SECRET", SECRET)
        .env("REDIS_URL", &redis.url())
        .env("REDIS_KEY_PREFIX", &unique_prefix())
        .toml("[redis]\nfailure_mode = \"fail_closed\"\ntimeout_ms = 200\n")
        .policy("p.toml", POLICY)
        .start()
        .await;
    gw.wait_pool_healthy(1).await;
    let tok = jwt::hs256(SECRET, &claims("acme", "bob", 600));
    assert_eq!(status(&gw, &tok).await, 200);
    redis.stop();
    let r = reqwest::Client::new()
        .post(format!("{}/api/chat", gw.url()))
        .bearer_auth(&tok)
        .json(&chat("llama3:8b", false))
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), 503);
    assert!(r.headers().contains_key("retry-after"));
    assert_eq!(
        a.requests(),
        1,
        "nothing passed while the limiter was blind"
    );
    gw.stop().await;
}
