//! Bad input and failing instances: every case gets a clear answer and nothing hangs.

use std::time::Duration;

use corral_tests::fake_ollama::FakeOllama;
use corral_tests::gateway::GatewayProcess;
use corral_tests::hostile::{Behaviour, HostileUpstream};
use corral_tests::support::{chat, metric_sum, metrics, post_timed};
use serde_json::Value;

#[tokio::test]
async fn oversize_and_malformed_bodies_never_reach_an_instance() {
    let a = FakeOllama::builder().start().await;
    let gw = GatewayProcess::builder()
        .instances(&[a.url()])
        .toml("")
        .env("GATEWAY_MAX_BODY_BYTES", "2048")
        .start()
        .await;
    gw.wait_pool_healthy(1).await;
    let client = reqwest::Client::new();
    let url = format!("{}/api/chat", gw.url());

    let big = serde_json::json!({"model": "llama3:8b", "messages": [{"role": "user", "content": "x".repeat(4096)}]});
    let r = client.post(&url).json(&big).send().await.expect("send");
    assert_eq!(r.status(), 413);
    let body: Value = r.json().await.expect("json");
    assert_eq!(body["code"], "payload_too_large");

    // Chunked upload (no Content-Length) over the limit: refused while reading.
    let chunks = futures::stream::iter((0..8).map(|_| Ok::<_, std::io::Error>(vec![b' '; 1024])));
    let r = client
        .post(&url)
        .body(reqwest::Body::wrap_stream(chunks))
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), 413);

    let r = client
        .post(&url)
        .body("{\"model\": \"llama3:8b\", \"messages\": [")
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), 400);
    let body: Value = r.json().await.expect("json");
    assert_eq!(body["code"], "bad_request");
    assert!(
        body["error"]
            .as_str()
            .is_some_and(|m| m.contains("invalid JSON")),
        "{body}"
    );

    let r = client
        .post(&url)
        .body("{\"messages\": []}")
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), 400);

    let r = client
        .post(format!("{}/v1/chat/completions", gw.url()))
        .body("not json")
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), 400);
    let body: Value = r.json().await.expect("json");
    assert_eq!(
        body["error"]["type"], "invalid_request_error",
        "OpenAI shape on /v1: {body}"
    );

    assert_eq!(a.requests(), 0, "no bad request reached the instance");
    gw.stop().await;
}

#[tokio::test]
async fn model_management_is_refused() {
    let a = FakeOllama::builder().start().await;
    let gw = GatewayProcess::builder()
        .instances(&[a.url()])
        .start()
        .await;
    gw.wait_pool_healthy(1).await;
    let client = reqwest::Client::new();
    for path in [
        "/api/pull",
        "/api/push",
        "/api/create",
        "/api/copy",
        "/api/delete",
    ] {
        let r = client
            .post(format!("{}{path}", gw.url()))
            .json(&serde_json::json!({"model": "x"}))
            .send()
            .await
            .expect("send");
        assert_eq!(r.status(), 403, "{path}");
        let body: Value = r.json().await.expect("json");
        assert_eq!(body["code"], "forbidden");
    }
    assert!(!a.saw_path("/api/pull") && !a.saw_path("/api/delete"));
    gw.stop().await;
}

#[tokio::test]
async fn a_full_queue_answers_503_with_retry_after() {
    let a = FakeOllama::builder()
        .tokens(20)
        .token_delay(Duration::from_millis(50))
        .start()
        .await;
    let gw = GatewayProcess::builder()
        .instances(&[a.url()])
        .pool("max_inflight_per_instance = 1\nqueue_size = 1\nqueue_timeout_ms = 300")
        .start()
        .await;
    gw.wait_pool_healthy(1).await;
    let client = reqwest::Client::new();
    let url = format!("{}/api/chat", gw.url());
    let body = chat("llama3:8b", true);
    let results = futures::future::join_all((0..4).map(|_| post_timed(&client, &url, &body))).await;
    let ok = results.iter().filter(|r| r.status == 200).count();
    let refused: Vec<_> = results.iter().filter(|r| r.status == 503).collect();
    assert_eq!(ok, 1, "one slot, one stream at a time");
    assert_eq!(refused.len(), 3);
    for r in &refused {
        assert!(
            r.headers.contains_key("retry-after"),
            "503 carries Retry-After"
        );
        let v: Value = serde_json::from_str(&r.body).expect("json");
        assert_eq!(v["code"], "upstream_unavailable");
    }
    assert_eq!(a.max_in_flight(), 1, "the cap held at the instance");
    let m = metrics(&gw.url()).await;
    assert_eq!(
        metric_sum(&m, "corral_queue_rejections_total", &[("reason", "full")]),
        2.0
    );
    assert_eq!(
        metric_sum(
            &m,
            "corral_queue_rejections_total",
            &[("reason", "timeout")]
        ),
        1.0
    );
    gw.stop().await;
}

#[tokio::test]
async fn queued_requests_run_when_a_slot_frees() {
    let a = FakeOllama::builder()
        .tokens(4)
        .token_delay(Duration::from_millis(20))
        .start()
        .await;
    let gw = GatewayProcess::builder()
        .instances(&[a.url()])
        .pool("max_inflight_per_instance = 1\nqueue_size = 10\nqueue_timeout_ms = 10000")
        .start()
        .await;
    gw.wait_pool_healthy(1).await;
    let client = reqwest::Client::new();
    let url = format!("{}/api/chat", gw.url());
    let body = chat("llama3:8b", true);
    let results = futures::future::join_all((0..5).map(|_| post_timed(&client, &url, &body))).await;
    assert!(results.iter().all(|r| r.status == 200));
    assert_eq!(a.max_in_flight(), 1);
    assert_eq!(a.requests(), 5);
    gw.stop().await;
}

#[tokio::test]
async fn a_stopped_instance_is_ejected_skipped_and_readmitted() {
    let a = FakeOllama::builder().tokens(3).start().await;
    let b = FakeOllama::builder().tokens(3).start().await;
    let b_port = b.port();
    // Least busy: the same prompt ten times must reach the stopped instance (cache-aware
    // routing would keep it on the first one and never try the other).
    let gw = GatewayProcess::builder()
        .instances(&[a.url(), b.url()])
        .env("GATEWAY_POOL_BALANCE", "least_busy")
        .start()
        .await;
    gw.wait_pool_healthy(2).await;
    let client = reqwest::Client::new();
    let url = format!("{}/api/chat", gw.url());
    b.stop().await;
    // Requests sent right after the stop (before any health check noticed) must all succeed:
    // a refused connection is retried on the other instance.
    for _ in 0..10 {
        let r = post_timed(&client, &url, &chat("llama3:8b", false)).await;
        assert_eq!(r.status, 200, "{}", r.body);
    }
    assert_eq!(a.requests(), 10);
    let m = metrics(&gw.url()).await;
    assert_eq!(metric_sum(&m, "corral_upstream_healthy", &[]), 1.0);
    assert!(metric_sum(&m, "corral_upstream_ejections_total", &[]) >= 1.0);

    let b = FakeOllama::builder().tokens(3).port(b_port).start().await;
    gw.wait_pool_healthy(2).await;
    let body = chat("llama3:8b", true);
    let results = futures::future::join_all((0..4).map(|_| post_timed(&client, &url, &body))).await;
    assert!(results.iter().all(|r| r.status == 200));
    assert!(b.requests() > 0, "re-admitted instance takes traffic again");
    gw.stop().await;
}

#[tokio::test]
async fn an_instance_dying_mid_stream_ends_the_stream_cleanly() {
    let a = FakeOllama::builder()
        .tokens(20)
        .token_delay(Duration::from_millis(10))
        .fail_after_tokens(Some(5))
        .start()
        .await;
    let gw = GatewayProcess::builder()
        .instances(&[a.url()])
        .start()
        .await;
    gw.wait_pool_healthy(1).await;
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("client");
    let r = post_timed(
        &client,
        &format!("{}/api/chat", gw.url()),
        &chat("llama3:8b", true),
    )
    .await;
    assert_eq!(r.status, 200);
    assert!(
        r.error.is_none(),
        "the client sees a clean end, not a broken connection: {:?}",
        r.error
    );
    let lines = r.lines();
    assert_eq!(
        lines.iter().filter(|l| l["done"] == false).count(),
        5,
        "the tokens sent before the cut arrive"
    );
    let last = lines.last().expect("a last line");
    assert_eq!(
        last["code"], "upstream_unavailable",
        "last line names the failure: {last}"
    );
    assert!(last["error"].is_string());
    let m = metrics(&gw.url()).await;
    assert_eq!(
        metric_sum(
            &m,
            "corral_streams_interrupted_total",
            &[("cause", "upstream")]
        ),
        1.0
    );

    // The same on an OpenAI stream.
    let r = post_timed(
        &client,
        &format!("{}/v1/chat/completions", gw.url()),
        &corral_tests::support::openai_chat("llama3:8b", true, true),
    )
    .await;
    assert_eq!(r.status, 200);
    assert!(r.error.is_none(), "{:?}", r.error);
    let last_event = r
        .body
        .trim_end()
        .rsplit("\n\n")
        .next()
        .expect("an event")
        .to_string();
    assert!(last_event.starts_with("data: {\"error\""), "{last_event}");
    gw.stop().await;
}

#[tokio::test]
async fn no_instances_means_503_and_not_ready() {
    let gw = GatewayProcess::builder()
        .instances(&["http://127.0.0.1:9".to_string()])
        .start()
        .await;
    let r = reqwest::get(format!("{}/readyz", gw.url()))
        .await
        .expect("readyz");
    assert_eq!(r.status(), 503);
    let body: Value = r.json().await.expect("json");
    assert_eq!(body["status"], "error");
    let r = post_timed(
        &reqwest::Client::new(),
        &format!("{}/api/chat", gw.url()),
        &chat("llama3:8b", true),
    )
    .await;
    assert_eq!(r.status, 503);
    assert!(r.headers.contains_key("retry-after"));
    gw.stop().await;
}

#[tokio::test]
async fn a_busy_instance_is_skipped_before_anything_streams() {
    let busy = FakeOllama::builder()
        .loaded(&["llama3:8b"])
        .busy(true)
        .start()
        .await;
    let idle = FakeOllama::builder().start().await;
    let gw = GatewayProcess::builder()
        .instances(&[busy.url(), idle.url()])
        .start()
        .await;
    gw.wait_pool_healthy(2).await;
    let client = reqwest::Client::new();
    for _ in 0..3 {
        let r = post_timed(
            &client,
            &format!("{}/api/chat", gw.url()),
            &chat("llama3:8b", true),
        )
        .await;
        assert_eq!(r.status, 200, "{}", r.body);
        assert_eq!(
            r.lines().last().map(|l| l["done"].clone()),
            Some(Value::Bool(true))
        );
    }
    assert_eq!(idle.requests(), 3);
    assert!(
        busy.requests() >= 1,
        "the loaded (preferred) instance was asked first"
    );
    let m = metrics(&gw.url()).await;
    assert!(metric_sum(&m, "corral_upstream_retries_total", &[]) >= 1.0);
    assert_eq!(
        metric_sum(&m, "corral_upstream_healthy", &[]),
        2.0,
        "busy is not sick"
    );

    idle.set_busy(true);
    let r = post_timed(
        &client,
        &format!("{}/api/chat", gw.url()),
        &chat("llama3:8b", true),
    )
    .await;
    assert_eq!(r.status, 503);
    assert!(r.headers.contains_key("retry-after"));
    gw.stop().await;
}

#[tokio::test]
async fn repeated_5xx_from_a_sick_instance_eject_it_after_a_failed_probe() {
    // One instance turns sick: every chat gets a 500 and its health
    // probes fail too. The periodic check is far off, so only the probe that the third 5xx
    // asks for can take it out.
    let sick = HostileUpstream::builder()
        .behaviour(Behaviour::Normal { tokens: 2 })
        .start()
        .await;
    let well = FakeOllama::builder().start().await;
    let gw = GatewayProcess::builder()
        .instances(&[sick.url(), well.url()])
        .pool("health_interval_ms = 60000\nmax_inflight_per_instance = 1")
        .start()
        .await;
    gw.wait_pool_healthy(2).await;
    sick.set_behaviour(Behaviour::Status {
        code: 500,
        body: r#"{"error":"CUDA error: out of memory"}"#.to_string(),
    });
    sick.set_probes_failing(true);
    let client = reqwest::Client::new();
    let url = format!("{}/api/chat", gw.url());
    let mut statuses = Vec::new();
    for _ in 0..12 {
        statuses.push(
            post_timed(&client, &url, &chat("llama3:8b", false))
                .await
                .status,
        );
    }
    let errors = statuses.iter().filter(|s| **s == 500).count();
    assert!(
        (3..=4).contains(&errors),
        "the instance's own errors pass through until the probe ejects it: {statuses:?}"
    );
    assert!(
        statuses[7..].iter().all(|s| *s == 200),
        "after the failed probe, traffic goes to the healthy instance: {statuses:?}"
    );
    let m = metrics(&gw.url()).await;
    assert_eq!(
        metric_sum(&m, "corral_upstream_ejections_total", &[("reason", "5xx")]),
        1.0
    );
    assert!(well.requests() >= 8);
    gw.stop().await;
}
