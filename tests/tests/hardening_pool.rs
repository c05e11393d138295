//! Hostile clients against the pool (issue 10, cases 2 and 6): a member must not be able to
//! eject instances with requests the instance cannot digest, and clients that cancel must not
//! push an instance past its cap.

use std::time::Duration;

use corral_tests::gateway::GatewayProcess;
use corral_tests::hostile::{read_stream_lines_then_drop, Behaviour, HostileUpstream};
use corral_tests::support::{chat, eventually, metric_sum, metrics, post_timed};
use serde_json::Value;

/// A chat whose extra field nests `depth` arrays.
fn deeply_nested_chat(depth: usize) -> String {
    format!(
        "{{\"model\":\"llama3:8b\",\"messages\":[{{\"role\":\"user\",\"content\":\"hi\"}}],\"extra\":{}{}}}",
        "[".repeat(depth),
        "]".repeat(depth)
    )
}

#[tokio::test]
async fn absurd_nesting_is_refused_before_any_instance_sees_it() {
    let a = HostileUpstream::start(Behaviour::Normal { tokens: 2 }).await;
    let gw = GatewayProcess::builder()
        .instances(&[a.url()])
        .start()
        .await;
    gw.wait_pool_healthy(1).await;
    let client = reqwest::Client::new();
    for path in ["/api/chat", "/v1/chat/completions"] {
        let r = client
            .post(format!("{}{path}", gw.url()))
            .header("content-type", "application/json")
            .body(deeply_nested_chat(1200))
            .send()
            .await
            .expect("send");
        assert_eq!(r.status(), 400, "{path}");
        let body: Value = r.json().await.expect("json");
        let message = body["error"]["message"]
            .as_str()
            .or(body["error"].as_str())
            .unwrap_or_default()
            .to_string();
        assert!(
            message.contains("nested deeper than 64 levels at line 1 column"),
            "{body}"
        );
    }
    assert_eq!(a.model_requests(), 0, "no instance saw the body");
    // Ordinary nesting (tools, JSON schemas) still passes.
    let r = client
        .post(format!("{}/api/chat", gw.url()))
        .header("content-type", "application/json")
        .body(deeply_nested_chat(20))
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), 200);
    gw.stop().await;
}

#[tokio::test]
async fn replies_to_clients_alone_never_eject_a_healthy_instance() {
    // The only instance answers every chat with 500 (a body it cannot digest, say) but its
    // health probes are fine: members must not be able to take it out of the pool.
    let a = HostileUpstream::start(Behaviour::Status {
        code: 500,
        body: r#"{"error":"json: exceeded max depth"}"#.to_string(),
    })
    .await;
    let gw = GatewayProcess::builder()
        .instances(&[a.url()])
        .pool("eject_after_5xx = 3\nhealth_interval_ms = 60000")
        .start()
        .await;
    gw.wait_pool_healthy(1).await;
    let client = reqwest::Client::new();
    let url = format!("{}/api/chat", gw.url());
    for _ in 0..12 {
        let r = post_timed(&client, &url, &chat("llama3:8b", false)).await;
        assert_eq!(
            r.status, 500,
            "the instance's answer passes through, never a 503"
        );
    }
    // Each third 5xx asks for a probe; let the probes finish before looking.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let m = metrics(&gw.url()).await;
    assert_eq!(metric_sum(&m, "corral_upstream_ejections_total", &[]), 0.0);
    assert_eq!(metric_sum(&m, "corral_upstream_healthy", &[]), 1.0);
    a.set_behaviour(Behaviour::Normal { tokens: 2 });
    let r = post_timed(&client, &url, &chat("llama3:8b", false)).await;
    assert_eq!(r.status, 200, "the pool still serves: {}", r.body);
    gw.stop().await;
}

/// Fifty clients that read one line and leave, against an instance capped at 4: the instance
/// must never see more than 4 at once.
async fn cancelling_clients(body: Value) {
    let a = HostileUpstream::start(Behaviour::Delay {
        tokens: 40,
        token_delay: Duration::from_millis(25),
    })
    .await;
    let gw = GatewayProcess::builder()
        .instances(&[a.url()])
        .pool("max_inflight_per_instance = 4\nqueue_size = 100\nqueue_timeout_ms = 30000")
        .start()
        .await;
    gw.wait_pool_healthy(1).await;
    let url = format!("{}/api/chat", gw.url());
    let clients = (0..50).map(|_| read_stream_lines_then_drop(&url, &body, 1));
    let read = futures::future::join_all(clients).await;
    let short: Vec<_> = read.iter().filter(|lines| lines.len() != 1).collect();
    assert!(
        short.is_empty(),
        "every client got its first line: {short:?}\n{}",
        gw.log()
    );
    eventually(
        Duration::from_secs(10),
        "the instance is idle again",
        || async { a.in_flight() == 0 },
    )
    .await;
    assert!(
        a.max_in_flight() <= 4,
        "the instance saw {} requests at once with a cap of 4",
        a.max_in_flight()
    );
    assert_eq!(a.model_requests(), 50);
    let m = metrics(&gw.url()).await;
    assert_eq!(metric_sum(&m, "corral_upstream_in_flight", &[]), 0.0);
    let log = gw.log();
    assert!(
        !log.contains(" ERROR "),
        "a client going away is not an error:\n{log}"
    );
    assert!(metric_sum(&m, "corral_client_errors_total", &[("kind", "gone")]) >= 1.0);
    gw.stop().await;
}

#[tokio::test]
async fn clients_that_cancel_never_push_an_instance_past_its_cap() {
    cancelling_clients(chat("llama3:8b", true)).await;
}

#[tokio::test]
async fn clients_that_cancel_relayed_requests_never_push_an_instance_past_its_cap() {
    // Over Pingora's 64 KiB replay buffer: these go through the relay (chats with images).
    let body = serde_json::json!({
        "model": "llama3:8b",
        "messages": [{"role": "user", "content": "x".repeat(100_000)}],
    });
    cancelling_clients(body).await;
}
