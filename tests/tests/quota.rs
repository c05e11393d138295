//! Token quotas through the real gateway: exact accounting into the PostgreSQL ledger, hard
//! limits that 200 concurrent streams cannot overshoot, soft warnings, period resets, usage
//! that survives a restart, and OpenAI streams counted without changing what clients see.

use std::time::Duration;

use corral_tests::backend::TestDb;
use corral_tests::fake_ollama::FakeOllama;
use corral_tests::gateway::{GatewayBuilder, GatewayProcess};
use corral_tests::jwt::{self, claims};
use corral_tests::redis_server::unique_prefix;
use corral_tests::support::{
    chat, eventually, metric_sum, metrics, openai_chat, post_timed, quota_used,
};
use serde_json::Value;

const SECRET: &str = "quota-test-secret-quota-test-secret-x";
const UNLIMITED_RATES: &str = "[defaults]\nrequests_per_minute = 0\nuser_requests_per_minute = 0\nmax_concurrent_streams = 0\n";

fn gateway(a: &FakeOllama, policy: &str) -> GatewayBuilder {
    GatewayProcess::builder()
        .instances(&[a.url()])
        .env("JWT_SECRET", SECRET)
        .pool("max_inflight_per_instance = 1000")
        .policy("p.toml", &format!("{UNLIMITED_RATES}\n{policy}"))
}

fn tok(org: &str) -> String {
    jwt::hs256(SECRET, &claims(org, "u1", 600))
}

#[tokio::test]
async fn two_hundred_concurrent_streams_never_overshoot_the_hard_limit() {
    let a = FakeOllama::builder()
        .tokens(50)
        .token_delay(Duration::from_millis(5))
        .start()
        .await;
    let gw = gateway(&a, "[orgs.acme.quota]\nhard_tokens = 3000\n")
        .start()
        .await;
    gw.wait_pool_healthy(1).await;
    let t = tok("acme");
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(300)
        .build()
        .expect("client");
    let url = format!("{}/api/chat", gw.url());
    // Clients that state their completion cap reserve only that much.
    let mut body = chat("llama3:8b", true);
    body["options"] = serde_json::json!({"num_predict": 30});
    let calls = (0..200).map(|_| {
        let req = client.post(&url).bearer_auth(&t).json(&body);
        async move {
            let r = req.send().await.expect("send");
            let status = r.status().as_u16();
            let _ = r.text().await;
            status
        }
    });
    let statuses = futures::future::join_all(calls).await;
    let ok = statuses.iter().filter(|s| **s == 200).count();
    let refused = statuses.iter().filter(|s| **s == 429).count();
    assert_eq!(ok + refused, 200, "{statuses:?}");
    assert!(
        ok > 0 && refused > 0,
        "some served, the rest refused: {ok} ok, {refused} refused"
    );
    let generated = a.total_prompt_tokens() + a.total_completion_tokens();
    // Each reply is settled just after its last byte reaches the client: wait for the last.
    let mut used = quota_used(&gw.url(), &t).await;
    for _ in 0..100 {
        if used == generated {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        used = quota_used(&gw.url(), &t).await;
    }
    println!("200 streams: {ok} served, {refused} refused; Ollama generated {generated}, recorded {used}, hard limit 3000");
    assert_eq!(
        used, generated,
        "recorded exactly what the instance reported"
    );
    assert!(
        used <= 3000,
        "recorded {used} passes the hard limit of 3000"
    );
    let r = post_timed(&client.clone(), &url, &body).await;
    assert_eq!(r.status, 401, "sanity: no token");
    let refused = reqwest::Client::new()
        .post(&url)
        .bearer_auth(&t)
        .json(&chat("llama3:8b", false))
        .send()
        .await
        .expect("send");
    if refused.status() == 429 {
        let v: Value = refused.json().await.expect("json");
        assert_eq!(v["code"], "quota_exceeded");
    }
    gw.stop().await;
}

#[tokio::test]
async fn hard_limit_answers_429_with_the_reset_and_soft_limit_warns() {
    let a = FakeOllama::builder().tokens(30).start().await;
    let gw = gateway(
        &a,
        "[orgs.acme.quota]\nperiod = \"day\"\nsoft_tokens = 40\nhard_tokens = 400\n",
    )
    .start()
    .await;
    gw.wait_pool_healthy(1).await;
    let t = tok("acme");
    let client = reqwest::Client::new();
    let url = format!("{}/api/chat", gw.url());
    let first = client
        .post(&url)
        .bearer_auth(&t)
        .json(&chat("llama3:8b", false))
        .send()
        .await
        .expect("send");
    assert_eq!(first.status(), 200);
    assert_eq!(first.headers()["x-quota-limit"], "400");
    assert_eq!(first.headers()["x-quota-used"], "0");
    assert!(first.headers().get("x-quota-warning").is_none());
    let _ = first.text().await;
    // The first reply is settled just after its last byte: wait for it before the second.
    eventually(Duration::from_secs(3), "first reply settled", || async {
        quota_used(&gw.url(), &t).await > 0
    })
    .await;
    let second = client
        .post(&url)
        .bearer_auth(&t)
        .json(&chat("llama3:8b", false))
        .send()
        .await
        .expect("send");
    assert!(
        second.headers().get("x-quota-warning").is_some(),
        "past the soft limit of 40"
    );
    let _ = second.text().await;
    let mut last = None;
    for _ in 0..20 {
        let r = client
            .post(&url)
            .bearer_auth(&t)
            .json(&chat("llama3:8b", false))
            .send()
            .await
            .expect("send");
        if r.status() == 429 {
            last = Some(r);
            break;
        }
        let _ = r.text().await;
    }
    let refused = last.expect("the hard limit refuses");
    let retry: u64 = refused.headers()["retry-after"]
        .to_str()
        .expect("ascii")
        .parse()
        .expect("seconds");
    assert!(
        retry > 0 && retry <= 86_400,
        "seconds to midnight UTC: {retry}"
    );
    let v: Value = refused.json().await.expect("json");
    assert_eq!(v["code"], "quota_exceeded");
    assert!(
        v["error"]
            .as_str()
            .is_some_and(|m| m.contains("resets at") && m.contains("T00:00:00Z")),
        "{v}"
    );
    let used_header = quota_used(&gw.url(), &t).await;
    assert!(used_header <= 400);
    let other = client
        .post(&url)
        .bearer_auth(tok("globex"))
        .json(&chat("llama3:8b", false))
        .send()
        .await
        .expect("send");
    assert_eq!(other.status(), 200, "other orgs unaffected");
    let m = metrics(&gw.url()).await;
    assert!(metric_sum(&m, "corral_quota_rejections_total", &[("org", "acme")]) >= 1.0);
    // What the "org past 90% of its hard quota" alert reads.
    assert_eq!(
        metric_sum(&m, "corral_quota_limit_tokens", &[("org", "acme")]),
        400.0
    );
    let used = metric_sum(&m, "corral_quota_used_tokens", &[("org", "acme")]);
    assert_eq!(
        used, used_header as f64,
        "the gauge says what X-Quota-Used said"
    );
    assert!(used > 0.0);
    assert_eq!(
        metric_sum(&m, "corral_quota_limit_tokens", &[("org", "globex")]),
        0.0
    );
    // Every reply served counted its time to first token.
    let served = metric_sum(&m, "corral_requests_total", &[("status", "200")]);
    let ttft = metric_sum(
        &m,
        "corral_time_to_first_token_seconds_count",
        &[("model", "llama3:8b")],
    );
    assert!(
        ttft >= 3.0 && ttft <= served,
        "{ttft} first tokens for {served} replies"
    );
    gw.stop().await;
}

#[tokio::test]
async fn completions_are_capped_to_what_the_budget_allows() {
    let a = FakeOllama::builder().tokens(500).start().await;
    let gw = gateway(&a, "[orgs.acme.quota]\nhard_tokens = 200\n")
        .start()
        .await;
    gw.wait_pool_healthy(1).await;
    let r = reqwest::Client::new()
        .post(format!("{}/api/chat", gw.url()))
        .bearer_auth(tok("acme"))
        .json(&chat("llama3:8b", false))
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), 200);
    let seen = a.last_request().expect("request");
    let cap = seen.body["options"]["num_predict"]
        .as_u64()
        .expect("num_predict set by the gateway");
    assert!(cap < 200, "cap {cap} fits the budget");
    let v: Value = r.json().await.expect("json");
    assert_eq!(v["done_reason"], "length");
    assert!(v["eval_count"].as_u64().expect("count") <= cap);
    gw.stop().await;
}

#[tokio::test]
async fn openai_streams_are_counted_without_showing_the_usage_chunk() {
    let a = FakeOllama::builder().tokens(6).start().await;
    let gw = gateway(&a, "").start().await;
    gw.wait_pool_healthy(1).await;
    let client = reqwest::Client::builder()
        .default_headers(
            [(
                reqwest::header::AUTHORIZATION,
                format!("Bearer {}", tok("acme")).parse().expect("h"),
            )]
            .into_iter()
            .collect(),
        )
        .build()
        .expect("client");
    let r = post_timed(
        &client,
        &format!("{}/v1/chat/completions", gw.url()),
        &openai_chat("llama3:8b", true, false),
    )
    .await;
    assert_eq!(r.status, 200);
    assert!(
        !r.body.contains("\"usage\""),
        "the client did not ask for usage and sees none: {}",
        r.body
    );
    assert!(r.body.ends_with("data: [DONE]\n\n"));
    let seen = a.last_request().expect("request");
    assert_eq!(
        seen.body["stream_options"]["include_usage"], true,
        "the gateway asked Ollama for it"
    );
    eventually(Duration::from_secs(3), "tokens counted", || async {
        let m = metrics(&gw.url()).await;
        metric_sum(
            &m,
            "corral_org_tokens_total",
            &[("org", "acme"), ("kind", "completion")],
        ) == 6.0
    })
    .await;
    // A client that asked for usage still gets it.
    let r = post_timed(
        &client,
        &format!("{}/v1/chat/completions", gw.url()),
        &openai_chat("llama3:8b", true, true),
    )
    .await;
    assert!(r.body.contains("\"usage\""));
    gw.stop().await;
}

#[tokio::test]
async fn the_ledger_matches_the_instances_and_survives_a_restart() {
    let db = TestDb::create().await;
    db.migrate();
    let a = FakeOllama::builder().tokens(9).start().await;
    let b = FakeOllama::builder().tokens(4).start().await;
    let prefix = unique_prefix();
    let start = |policy: &str| {
        GatewayProcess::builder()
            .instances(&[a.url(), b.url()])
            .env("JWT_SECRET", SECRET)
            .env("DATABASE_URL", &db.url())
            .env("REDIS_KEY_PREFIX", &prefix)
            .pool("max_inflight_per_instance = 1000")
            .policy("p.toml", &format!("{UNLIMITED_RATES}\n{policy}"))
            .start()
    };
    let gw = start("[orgs.acme.quota]\nhard_tokens = 1000000\n").await;
    gw.wait_pool_healthy(2).await;
    let t = tok("acme");
    let client = reqwest::Client::new();
    let calls = (0..40).map(|i| {
        let (path, body) = match i % 4 {
            0 => ("/api/chat", chat("llama3:8b", true)),
            1 => ("/api/chat", chat("llama3:8b", false)),
            2 => (
                "/v1/chat/completions",
                openai_chat("llama3:8b", true, false),
            ),
            _ => (
                "/v1/chat/completions",
                openai_chat("llama3:8b", false, false),
            ),
        };
        let req = client
            .post(format!("{}{path}", gw.url()))
            .bearer_auth(&t)
            .json(&body);
        async move {
            let r = req.send().await.expect("send");
            assert_eq!(r.status(), 200);
            let _ = r.text().await;
        }
    });
    futures::future::join_all(calls).await;
    let expected = (a.total_prompt_tokens()
        + a.total_completion_tokens()
        + b.total_prompt_tokens()
        + b.total_completion_tokens()) as i64;
    eventually(Duration::from_secs(5), "ledger written", || async {
        db.ledger("acme").await == (expected, 40)
    })
    .await;
    let used_before = quota_used(&gw.url(), &t).await;
    assert_eq!(used_before as i64, expected);
    gw.stop().await;

    // A new process (memory counters empty) rebuilds the period's usage from the ledger.
    let gw = start("[orgs.acme.quota]\nhard_tokens = 1000000\n").await;
    gw.wait_pool_healthy(2).await;
    assert_eq!(
        quota_used(&gw.url(), &t).await,
        used_before,
        "a restart never resets an org's spend"
    );
    gw.stop().await;
}
