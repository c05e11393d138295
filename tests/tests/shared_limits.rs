//! Limits shared through Redis: two gateway replicas hold one limit together, and a Redis
//! that goes away is handled per the failure mode (fall back locally, or refuse with 503),
//! with shared limiting resuming by itself when it returns.

use std::time::Duration;

use corral_tests::fake_ollama::FakeOllama;
use corral_tests::gateway::GatewayProcess;
use corral_tests::jwt::{self, claims};
use corral_tests::redis_server::{redis_cli, unique_prefix, RedisServer};
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

/// Calls of each command Redis has run so far, from its own command statistics. Commands a
/// script runs count too: `time` (once per script of the gateway's) tells scripts apart.
fn command_calls(redis: &RedisServer) -> std::collections::HashMap<String, u64> {
    redis_cli(redis.port, &["INFO", "commandstats"])
        .lines()
        .filter_map(|l| {
            let (name, rest) = l.strip_prefix("cmdstat_")?.split_once(':')?;
            let calls = rest
                .strip_prefix("calls=")?
                .split(',')
                .next()?
                .parse()
                .ok()?;
            Some((name.to_string(), calls))
        })
        .collect()
}

/// What ran since `before`, INFO (this probe) left out.
fn since(
    redis: &RedisServer,
    before: &std::collections::HashMap<String, u64>,
) -> std::collections::HashMap<String, u64> {
    command_calls(redis)
        .into_iter()
        .filter(|(k, _)| k != "info")
        .map(|(k, n)| {
            let d = n - before.get(&k).copied().unwrap_or(0);
            (k, d)
        })
        .filter(|(_, d)| *d > 0)
        .collect()
}

#[tokio::test]
async fn a_model_request_makes_one_redis_round_trip_before_going_upstream() {
    let redis = RedisServer::start();
    let a = FakeOllama::builder()
        .tokens(3)
        .first_token_delay(Duration::from_millis(800))
        .start()
        .await;
    let policy =
        "[orgs.acme]\nrequests_per_minute = 600\nburst = 50\nuser_requests_per_minute = 600\n\
                  tokens_per_minute = 100000\nmax_concurrent_streams = 4\n\
                  [orgs.acme.quota]\nhard_tokens = 1000000\n";
    let gw = GatewayProcess::builder()
        .instances(&[a.url()])
        .env("JWT_SECRET", SECRET)
        .env("REDIS_URL", &redis.url())
        .env("REDIS_KEY_PREFIX", &unique_prefix())
        .policy("p.toml", policy)
        .start()
        .await;
    gw.wait_pool_healthy(1).await;
    let tok = jwt::hs256(SECRET, &claims("acme", "bob", 600));
    // The first request loads the scripts (and rebuilds the quota counter).
    assert_eq!(status(&gw, &tok).await, 200);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before = command_calls(&redis);
    let url = gw.url();
    let request = tokio::spawn({
        let tok = tok.clone();
        async move { chat_as(&url, &tok, "llama3:8b").await.status().as_u16() }
    });
    eventually(Duration::from_secs(5), "request upstream", || async {
        a.in_flight() == 1
    })
    .await;
    // Org rate, user rate, token balances, stream slots and the quota: one script call, and
    // nothing else sent (every command but those run by that one script is a round trip).
    let ran = since(&redis, &before);
    assert_eq!(ran.get("evalsha"), Some(&1), "{ran:?}");
    assert_eq!(ran.get("time"), Some(&1), "one script ran: {ran:?}");
    let outside = ["ping", "eval", "script|load"];
    assert!(outside.iter().all(|c| !ran.contains_key(*c)), "{ran:?}");
    assert_eq!(request.await.expect("join"), 200);
    // Settlement: one more script, after the response.
    eventually(Duration::from_secs(2), "settled", || async {
        let ran = since(&redis, &before);
        ran.get("evalsha") == Some(&2) && ran.get("time") == Some(&2)
    })
    .await;
    gw.stop().await;
}

/// Two replicas and a policy for the concurrent tests below.
async fn pair(
    redis: &RedisServer,
    a: &FakeOllama,
    prefix: &str,
    policy: &str,
) -> (GatewayProcess, GatewayProcess) {
    let start = || {
        GatewayProcess::builder()
            .instances(&[a.url()])
            .env("JWT_SECRET", SECRET)
            .env("REDIS_URL", &redis.url())
            .env("REDIS_KEY_PREFIX", prefix)
            // Only the policy's limits refuse here: no instance cap, and a short wait for a
            // stream slot.
            .env("GATEWAY_MAX_INFLIGHT_PER_INSTANCE", "100")
            .pool("queue_timeout_ms = 100")
            .policy("p.toml", policy)
            .start()
    };
    let (g1, g2) = (start().await, start().await);
    g1.wait_pool_healthy(1).await;
    g2.wait_pool_healthy(1).await;
    (g1, g2)
}

/// `n` requests at once, half to each replica; their statuses.
async fn at_once(g1: &GatewayProcess, g2: &GatewayProcess, tok: &str, n: usize) -> Vec<u16> {
    let calls = (0..n).map(|i| {
        let url = if i % 2 == 0 { g1.url() } else { g2.url() };
        let tok = tok.to_string();
        async move { chat_as(&url, &tok, "llama3:8b").await.status().as_u16() }
    });
    futures::future::join_all(calls).await
}

/// Requests that arrive together share admission calls (those that queue while their org's
/// call is in flight go in the next one), and the shared limit still admits exactly its
/// burst: the script decides them one after the other, as separate calls would.
#[tokio::test]
async fn concurrent_requests_share_admission_calls_and_the_rate_stays_exact() {
    let redis = RedisServer::start();
    let a = FakeOllama::builder().tokens(2).start().await;
    let policy = "[orgs.acme]\nrequests_per_minute = 6\nburst = 14\nuser_requests_per_minute = 0\n\
                  [orgs.acme.quota]\nhard_tokens = 1000000\n";
    let prefix = unique_prefix();
    let (g1, g2) = pair(&redis, &a, &prefix, policy).await;
    let tok = jwt::hs256(SECRET, &claims("acme", "bob", 600));
    let before = command_calls(&redis);
    let statuses = at_once(&g1, &g2, &tok, 40).await;
    let ok = statuses.iter().filter(|s| **s == 200).count();
    // Fifteen at once (rate + burst of 14), plus at most one more for the time it took.
    assert!((15..=16).contains(&ok), "admitted {ok} of 40: {statuses:?}");
    assert_eq!(statuses.iter().filter(|s| **s == 429).count(), 40 - ok);
    assert_eq!(a.requests(), ok);
    // Every hold settled (the holds' set is gone once empty), then the scripts are counted:
    // one per request would be 40 admissions and a settlement per admitted request.
    let holds = format!("{prefix}{{acme}}:quota:*:holds");
    eventually(Duration::from_secs(5), "every hold settled", || async {
        redis_cli(redis.port, &["--scan", "--pattern", &holds])
            .trim()
            .is_empty()
    })
    .await;
    let scripts = since(&redis, &before).get("evalsha").copied().unwrap_or(0);
    println!("40 requests at once, {ok} admitted: {scripts} scripts");
    assert!(
        scripts < 40,
        "{scripts} scripts for 40 requests: admissions were not shared"
    );
    g1.stop().await;
    g2.stop().await;
}

/// In a shared admission call each admitted request takes its own stream slot: never more
/// streams than the limit, across both replicas.
#[tokio::test]
async fn concurrent_requests_never_hold_more_stream_slots_than_the_limit() {
    let redis = RedisServer::start();
    let a = FakeOllama::builder()
        .tokens(2)
        .first_token_delay(Duration::from_millis(600))
        .start()
        .await;
    let policy = "[orgs.acme]\nmax_concurrent_streams = 5\n";
    let (g1, g2) = pair(&redis, &a, &unique_prefix(), policy).await;
    let tok = jwt::hs256(SECRET, &claims("acme", "bob", 600));
    let statuses = at_once(&g1, &g2, &tok, 20).await;
    let ok = statuses.iter().filter(|s| **s == 200).count();
    assert_eq!(ok, 5, "{statuses:?}");
    assert_eq!(a.max_in_flight(), 5);
    g1.stop().await;
    g2.stop().await;
}

#[tokio::test]
async fn stream_slots_are_shared_by_replicas_and_a_killed_replicas_come_back_after_the_lease() {
    let redis = RedisServer::start();
    let prefix = unique_prefix();
    let a = FakeOllama::builder()
        .tokens(60)
        .token_delay(Duration::from_millis(100))
        .start()
        .await;
    let start = || {
        GatewayProcess::builder()
            .instances(&[a.url()])
            .env("JWT_SECRET", SECRET)
            .env("REDIS_URL", &redis.url())
            .env("REDIS_KEY_PREFIX", &prefix)
            .pool("queue_timeout_ms = 200")
            .toml("[redis]\nstream_lease_ms = 1500\n")
            .policy("p.toml", "[orgs.acme]\nmax_concurrent_streams = 1\n")
            .start()
    };
    let (mut g1, g2) = (start().await, start().await);
    g1.wait_pool_healthy(1).await;
    g2.wait_pool_healthy(1).await;
    let tok = jwt::hs256(SECRET, &claims("acme", "bob", 600));
    let stream = reqwest::Client::new()
        .post(format!("{}/api/chat", g1.url()))
        .bearer_auth(&tok)
        .json(&chat("llama3:8b", true))
        .send()
        .await
        .expect("stream on the first replica");
    assert_eq!(stream.status(), 200);
    // The status of a streamed request, at its headers (its body would take 6 s).
    let admitted = || async {
        reqwest::Client::new()
            .post(format!("{}/api/chat", g2.url()))
            .bearer_auth(&tok)
            .json(&chat("llama3:8b", true))
            .send()
            .await
            .expect("send")
            .status()
            .as_u16()
    };
    assert_eq!(
        admitted().await,
        429,
        "the slot is held on the other replica"
    );
    // Longer than the lease: renewal keeps the slot while the stream runs.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(admitted().await, 429, "a running stream's lease is renewed");
    g1.kill();
    let killed = std::time::Instant::now();
    drop(stream);
    assert_eq!(admitted().await, 429, "the dead replica's lease still runs");
    eventually(
        Duration::from_secs(5),
        "slot back after the lease",
        || async { admitted().await == 200 },
    )
    .await;
    let back = killed.elapsed();
    assert!(
        back >= Duration::from_millis(500) && back < Duration::from_secs(4),
        "a dead replica's slot comes back within its 1.5 s lease (took {back:?})"
    );
    g2.stop().await;
}

#[tokio::test]
async fn a_sentinel_managed_redis_is_shared_and_followed_through_a_failover() {
    let mut sentinel = corral_tests::redis_sentinel::RedisSentinel::start();
    let prefix = unique_prefix();
    let a = FakeOllama::builder().tokens(1).start().await;
    let start = || {
        GatewayProcess::builder()
            .instances(&[a.url()])
            .env("JWT_SECRET", SECRET)
            .env("REDIS_URL", &sentinel.url())
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
    assert!(
        (10..=11).contains(&allowed),
        "one shared limit admits 10, got {allowed}"
    );

    // The primary dies; the sentinel promotes the replica, and the gateways follow it.
    let old = sentinel.primary.port;
    sentinel.primary.stop();
    let new = sentinel.replica.port;
    sentinel.wait(
        || sentinel.primary_port() == Some(new),
        "the replica's promotion",
    );
    assert_ne!(old, new);
    let other = jwt::hs256(SECRET, &claims("globex", "g", 600));
    eventually(
        Duration::from_secs(10),
        "shared limits on the new primary",
        || async {
            let ready: Value = reqwest::get(format!("{}/readyz", g1.url()))
                .await
                .expect("readyz")
                .json()
                .await
                .expect("json");
            status(&g1, &other).await == 200 && ready["checks"]["redis"]["status"] == "ok"
        },
    )
    .await;
    let keys = redis_cli(
        new,
        &["--scan", "--pattern", &format!("{prefix}{{globex}}*")],
    );
    assert!(
        !keys.trim().is_empty(),
        "globex's limits are kept on the promoted primary"
    );
    g1.stop().await;
    g2.stop().await;
}
