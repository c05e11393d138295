//! What Prometheus scrapes: the gateway's `/metrics`, after traffic that gives most metric
//! families samples (chats streamed and not, both APIs, refusals by rate limit and quota,
//! errors), passes `promtool check metrics`, the Prometheus project's own check of the text
//! format and its naming conventions. The dashboard and alert rules in
//! `deploy/observability/` are checked by `scripts/validate-deploy`.

use std::io::Write;
use std::process::{Command, Stdio};

use corral_tests::fake_ollama::FakeOllama;
use corral_tests::gateway::GatewayProcess;
use corral_tests::jwt::{self, claims};
use corral_tests::support::{chat, metric_sum, metrics_when, openai_chat, post_timed};

const SECRET: &str = "observability-test-secret-observability";

/// Rates unlimited by default; `tiny` gets one request a minute, `broke` a hard quota no
/// request fits in.
const POLICY: &str = r#"
[defaults]
requests_per_minute = 0
user_requests_per_minute = 0
max_concurrent_streams = 0

[orgs.tiny]
requests_per_minute = 1
burst = 0

[orgs.broke.quota]
hard_tokens = 1
"#;

/// The promtool binary; fails the test, saying how to get it, when it is not installed.
fn promtool() -> String {
    match Command::new("promtool").arg("--version").output() {
        Ok(out) if out.status.success() => "promtool".to_string(),
        _ => panic!(
            "promtool is not installed: this test checks /metrics with `promtool check metrics`. \
             Install it with `apt-get install prometheus` (Debian's package carries promtool); \
             ./scripts/test does so when it runs as root."
        ),
    }
}

/// `promtool check metrics` on `text`: its exit status and everything it printed.
fn check_metrics(promtool: &str, text: &str) -> (bool, String) {
    let mut child = Command::new(promtool)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run promtool check metrics");
    child
        .stdin
        .take()
        .expect("promtool stdin")
        .write_all(text.as_bytes())
        .expect("write /metrics to promtool");
    let out = child.wait_with_output().expect("promtool output");
    let said =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), said)
}

#[tokio::test]
async fn metrics_after_real_traffic_pass_promtool_check_metrics() {
    let promtool = promtool();
    let a = FakeOllama::builder().tokens(3).start().await;
    let gw = GatewayProcess::builder()
        .instances(&[a.url(), "http://127.0.0.1:9".to_string()])
        .env("JWT_SECRET", SECRET)
        .policy("p.toml", POLICY)
        .start()
        .await;
    gw.wait_pool_healthy(1).await;
    let client = reqwest::Client::new();
    let token = |org: &str| jwt::hs256(SECRET, &claims(org, "u1", 600));
    let post = |path: &str, org: &str, body: serde_json::Value| {
        client
            .post(format!("{}{path}", gw.url()))
            .bearer_auth(token(org))
            .json(&body)
            .send()
    };

    // Chats on both APIs, streamed and not: requests, durations, tokens, org tokens.
    for stream in [false, true] {
        let r = post("/api/chat", "acme", chat("llama3:8b", stream))
            .await
            .expect("chat");
        assert_eq!(r.status(), 200);
        r.text().await.expect("chat body");
        let r = post(
            "/v1/chat/completions",
            "acme",
            openai_chat("llama3:8b", stream, true),
        )
        .await
        .expect("openai chat");
        assert_eq!(r.status(), 200);
        r.text().await.expect("openai body");
    }
    // A model no instance has (404), malformed JSON (400), no token (401).
    let r = post("/api/chat", "acme", chat("mistral:7b", false))
        .await
        .expect("404");
    assert_eq!(r.status(), 404);
    let r = client
        .post(format!("{}/api/chat", gw.url()))
        .bearer_auth(token("acme"))
        .body("{not json")
        .send()
        .await
        .expect("400");
    assert_eq!(r.status(), 400);
    let unauthenticated = post_timed(
        &client,
        &format!("{}/api/chat", gw.url()),
        &chat("llama3:8b", false),
    )
    .await;
    assert_eq!(unauthenticated.status, 401);
    // Refusals: a rate limit and a hard quota (429 both).
    assert_eq!(
        post("/api/chat", "tiny", chat("llama3:8b", false))
            .await
            .expect("tiny")
            .status(),
        200
    );
    assert_eq!(
        post("/api/chat", "tiny", chat("llama3:8b", false))
            .await
            .expect("tiny")
            .status(),
        429
    );
    assert_eq!(
        post("/api/chat", "broke", chat("llama3:8b", false))
            .await
            .expect("broke")
            .status(),
        429
    );

    // Counters move just after the client's last byte: wait for the last request's.
    let m = metrics_when(
        &gw.url(),
        "corral_quota_rejections_total",
        &[("org", "broke")],
        1.0,
    )
    .await;
    assert_eq!(
        metric_sum(&m, "corral_quota_rejections_total", &[("org", "broke")]),
        1.0
    );
    assert_eq!(
        metric_sum(&m, "corral_rate_limited_total", &[("scope", "org")]),
        1.0
    );
    assert!(metric_sum(&m, "corral_org_tokens_total", &[("org", "acme")]) > 0.0);
    assert_eq!(
        metric_sum(
            &m,
            "corral_upstream_healthy",
            &[("instance", "http://127.0.0.1:9")]
        ),
        0.0
    );

    let text = reqwest::get(format!("{}/metrics", gw.url()))
        .await
        .expect("GET /metrics")
        .text()
        .await
        .expect("metrics body");
    for family in [
        "corral_requests_total",
        "corral_request_duration_seconds_bucket",
        "corral_tokens_total",
        "corral_org_tokens_total",
        "corral_upstream_healthy",
        "corral_upstream_in_flight",
        "corral_rate_limited_total",
        "corral_quota_rejections_total",
        "corral_queue_waiting",
        "corral_ledger_pending",
    ] {
        assert!(
            text.contains(&format!("\n{family}")),
            "no {family} sample in /metrics:\n{text}"
        );
    }
    let (ok, said) = check_metrics(&promtool, &text);
    assert!(
        ok,
        "promtool check metrics refused the gateway's /metrics:\n{said}\n--- /metrics ---\n{text}"
    );
    gw.stop().await;
}
