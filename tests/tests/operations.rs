//! What an operator does: check a config, scrape metrics, read health, stop and upgrade the
//! gateway without dropping streams.

use std::process::Command;
use std::time::Duration;

use corral_tests::fake_ollama::FakeOllama;
use corral_tests::gateway::{binary, GatewayProcess};
use corral_tests::support::{chat, metric_sum, metrics, post_timed};
use nix::sys::signal::Signal;
use serde_json::Value;

fn check(config: &str) -> (i32, String) {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("gateway.toml");
    std::fs::write(&path, config).expect("write");
    let out = Command::new(binary("gateway"))
        .args(["check", "--config"])
        .arg(&path)
        .env_remove("OLLAMA_BASE_URL")
        .env_remove("GATEWAY_LISTEN")
        .output()
        .expect("run gateway check");
    let text =
        String::from_utf8_lossy(&out.stderr).to_string() + &String::from_utf8_lossy(&out.stdout);
    (
        out.status.code().unwrap_or(-1),
        text.replace(&path.display().to_string(), "gateway.toml"),
    )
}

#[test]
fn check_accepts_the_shipped_config_and_names_errors() {
    let shipped =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../conf/gateway.toml"))
            .expect("conf");
    let (code, out) = check(&shipped);
    assert_eq!(code, 0, "{out}");

    let (code, out) = check("[server]\nlisten = \"0.0.0.0:8080\"\nthreds = 2\n");
    assert_ne!(code, 0);
    assert!(out.starts_with("gateway.toml:3: "), "{out}");
    assert!(out.contains("threds"), "{out}");

    let (code, out) =
        check("[pool]\ninstances = [\n  \"http://127.0.0.1:11434\",\n  \"https://gpu:1\",\n]\n");
    assert_ne!(code, 0);
    assert!(
        out.starts_with("gateway.toml:4: pool.instances: \"https://gpu:1\""),
        "{out}"
    );

    let (code, out) = check("[pool]\nmax_inflight_per_instance = 0\n");
    assert_ne!(code, 0);
    assert!(
        out.contains("gateway.toml:2: pool.max_inflight_per_instance: 0 is out of range"),
        "{out}"
    );

    let (code, out) = check("[pool\n");
    assert_ne!(code, 0);
    assert!(out.starts_with("gateway.toml:1: "), "{out}");
}

#[test]
fn check_reports_bad_environment_variables() {
    let out = Command::new(binary("gateway"))
        .args([
            "check",
            "--config",
            concat!(env!("CARGO_MANIFEST_DIR"), "/../conf/gateway.toml"),
        ])
        .env("OLLAMA_BASE_URL", "http://a:1,gpu-2:11434")
        .output()
        .expect("run");
    assert_ne!(out.status.code(), Some(0));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("OLLAMA_BASE_URL=\"http://a:1,gpu-2:11434\" is not valid"),
        "{err}"
    );
}

#[tokio::test]
async fn metrics_health_and_readiness() {
    let a = FakeOllama::builder().start().await;
    let gw = GatewayProcess::builder()
        .instances(&[a.url(), "http://127.0.0.1:9".to_string()])
        .start()
        .await;
    gw.wait_pool_healthy(1).await;
    let r = reqwest::get(format!("{}/healthz", gw.url()))
        .await
        .expect("healthz");
    assert_eq!(r.status(), 200);
    let r = reqwest::get(format!("{}/readyz", gw.url()))
        .await
        .expect("readyz");
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.expect("json");
    assert_eq!(v["status"], "degraded", "one of two instances is down: {v}");
    assert!(v["version"].is_string() && v["uptime_s"].is_u64());

    let r = post_timed(
        &reqwest::Client::new(),
        &format!("{}/api/chat", gw.url()),
        &chat("llama3:8b", false),
    )
    .await;
    assert_eq!(r.status, 200);
    assert!(r.headers.contains_key("x-request-id"));
    // A request is counted in its logging phase, just after its reply is written.
    let counted = |m: &prometheus_parse::Scrape| {
        metric_sum(
            m,
            "corral_requests_total",
            &[("route", "/api/"), ("status", "200")],
        )
    };
    corral_tests::support::eventually(Duration::from_secs(5), "the request counted", || {
        let url = gw.url();
        async move { counted(&metrics(&url).await) >= 1.0 }
    })
    .await;
    let m = metrics(&gw.url()).await;
    assert_eq!(counted(&m), 1.0);
    assert!(
        metric_sum(
            &m,
            "corral_request_duration_seconds_count",
            &[("route", "/api/")]
        ) >= 1.0
    );
    assert_eq!(
        metric_sum(
            &m,
            "corral_upstream_healthy",
            &[("instance", a.url().as_str())]
        ),
        1.0
    );
    // The slot is given back as the logging phase ends.
    corral_tests::support::eventually(Duration::from_secs(5), "nothing in flight", || {
        let url = gw.url();
        async move { metric_sum(&metrics(&url).await, "corral_upstream_in_flight", &[]) == 0.0 }
    })
    .await;
    gw.stop().await;
}

#[tokio::test]
async fn client_request_ids_are_kept_and_logged() {
    let a = FakeOllama::builder().start().await;
    let gw = GatewayProcess::builder()
        .instances(&[a.url()])
        .env("LOG_FORMAT", "json")
        .start()
        .await;
    gw.wait_pool_healthy(1).await;
    let r = reqwest::Client::new()
        .post(format!("{}/api/chat", gw.url()))
        .header("X-Request-Id", "req-abc-123")
        .header("X-Corral-Org", "spoofed")
        .json(&chat("llama3:8b", false))
        .send()
        .await
        .expect("send");
    assert_eq!(r.headers()["x-request-id"], "req-abc-123");
    let seen = a.last_request().expect("request");
    assert_eq!(seen.header("x-request-id"), Some("req-abc-123"));
    assert!(
        seen.header("x-corral-org").is_none(),
        "client-sent identity is stripped"
    );
    let _ = r.text().await;
    corral_tests::support::eventually(Duration::from_secs(5), "access log line", || async {
        gw.log().lines().any(|l| {
            l.contains("\"request_id\":\"req-abc-123\"") && l.contains("\"completion_tokens\":8")
        })
    })
    .await;
    gw.stop().await;
}

#[tokio::test]
async fn sigterm_lets_an_in_flight_stream_finish_and_readyz_turns_503() {
    let a = FakeOllama::builder()
        .tokens(15)
        .token_delay(Duration::from_millis(100))
        .start()
        .await;
    let mut gw = GatewayProcess::builder()
        .instances(&[a.url()])
        .start()
        .await;
    gw.wait_pool_healthy(1).await;
    let client = reqwest::Client::new();
    let url = format!("{}/api/chat", gw.url());
    let body = chat("llama3:8b", true);
    let stream = tokio::spawn({
        let client = client.clone();
        async move { post_timed(&client, &url, &body).await }
    });
    corral_tests::support::eventually(Duration::from_secs(5), "stream started", || async {
        a.in_flight() == 1
    })
    .await;
    let ready = client.get(format!("{}/readyz", gw.url())).send().await;
    assert_eq!(ready.expect("readyz").status(), 200, "ready before SIGTERM");
    gw.signal(Signal::SIGTERM);
    // Load balancers must stop sending from the moment SIGTERM arrives (the signal is
    // delivered asynchronously: a probe sent in the same instant may still see 200).
    let readyz = || async {
        let r = reqwest::Client::new()
            .get(format!("{}/readyz", gw.url()))
            .send()
            .await
            .expect("readyz during the drain");
        (r.status().as_u16(), r.json::<Value>().await.expect("json"))
    };
    corral_tests::support::eventually(Duration::from_millis(500), "readyz 503", || async {
        readyz().await.0 == 503
    })
    .await;
    let (status, body) = readyz().await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["status"], "draining", "{body}");
    let r = stream.await.expect("join");
    let ended = std::time::Instant::now();
    assert_eq!(r.status, 200);
    assert!(r.error.is_none(), "{:?}", r.error);
    let lines = r.lines();
    assert_eq!(lines.len(), 16, "all fifteen tokens and the final line");
    assert_eq!(
        lines.last().map(|l| l["done"].clone()),
        Some(Value::Bool(true))
    );
    assert!(
        gw.wait_exit(Duration::from_secs(20)).await.is_some(),
        "exits once the stream is done"
    );
    // The test config's grace period is 3 s; the stream took 1.5 s of it: the gateway must
    // not sit out the rest.
    assert!(
        ended.elapsed() < Duration::from_millis(1000),
        "exited {:?} after the last stream ended",
        ended.elapsed()
    );
}

#[tokio::test]
async fn sigterm_with_nothing_in_flight_exits_at_once() {
    let a = FakeOllama::builder().start().await;
    let mut gw = GatewayProcess::builder()
        .instances(&[a.url()])
        .start()
        .await;
    gw.wait_pool_healthy(1).await;
    // An idle keep-alive connection is not work in flight.
    let client = reqwest::Client::new();
    let r = client.get(format!("{}/healthz", gw.url())).send().await;
    assert_eq!(r.expect("healthz").status(), 200);
    let sent = std::time::Instant::now();
    gw.signal(Signal::SIGTERM);
    let status = gw.wait_exit(Duration::from_secs(10)).await;
    assert!(
        status.is_some_and(|s| s.success()),
        "exit status {status:?}"
    );
    assert!(
        sent.elapsed() < Duration::from_secs(1),
        "took {:?} (the grace period is 3 s)",
        sent.elapsed()
    );
    assert!(gw.log().contains("drained: exiting"), "{}", gw.log());
}

#[tokio::test]
async fn sigterm_cuts_a_stream_that_outlives_the_grace_period() {
    let a = FakeOllama::builder()
        .tokens(100)
        .token_delay(Duration::from_millis(100))
        .start()
        .await;
    let mut gw = GatewayProcess::builder()
        .instances(&[a.url()])
        .start()
        .await;
    gw.wait_pool_healthy(1).await;
    let client = reqwest::Client::new();
    let url = format!("{}/api/chat", gw.url());
    let body = chat("llama3:8b", true);
    let stream = tokio::spawn(async move { post_timed(&client, &url, &body).await });
    corral_tests::support::eventually(Duration::from_secs(5), "stream started", || async {
        a.in_flight() == 1
    })
    .await;
    let sent = std::time::Instant::now();
    gw.signal(Signal::SIGTERM);
    assert!(gw.wait_exit(Duration::from_secs(20)).await.is_some());
    let took = sent.elapsed();
    assert!(
        took >= Duration::from_millis(2900) && took < Duration::from_secs(6),
        "a 10 s stream holds the exit for the 3 s grace period, no more: {took:?}"
    );
    let r = stream.await.expect("join");
    assert!(r.lines().len() < 101, "the stream was cut");
    assert!(
        gw.log()
            .contains("grace period over with requests still in flight"),
        "{}",
        gw.log()
    );
}

#[tokio::test]
async fn graceful_upgrade_hands_over_the_socket_without_dropping_a_stream() {
    let a = FakeOllama::builder()
        .tokens(10)
        .token_delay(Duration::from_millis(100))
        .start()
        .await;
    let mut old = GatewayProcess::builder()
        .instances(&[a.url()])
        .start()
        .await;
    old.wait_pool_healthy(1).await;
    let client = reqwest::Client::new();
    let url = format!("{}/api/chat", old.url());
    let body = chat("llama3:8b", true);
    let stream = tokio::spawn({
        let (client, url) = (client.clone(), url.clone());
        async move { post_timed(&client, &url, &body).await }
    });
    corral_tests::support::eventually(Duration::from_secs(5), "stream started", || async {
        a.in_flight() == 1
    })
    .await;

    // The new binary waits on the upgrade socket; SIGQUIT makes the old one send its sockets.
    let new_gw = tokio::spawn(
        GatewayProcess::builder()
            .instances(&[a.url()])
            .port(old.port)
            .upgrade_from(old.dir())
            .start(),
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    old.signal(Signal::SIGQUIT);
    let new_gw = new_gw.await.expect("new gateway started");
    new_gw.wait_pool_healthy(1).await;

    let r = stream.await.expect("join");
    assert_eq!(r.status, 200);
    assert!(r.error.is_none(), "{:?}", r.error);
    assert_eq!(
        r.lines().len(),
        11,
        "the stream on the old process finished"
    );
    let fresh = post_timed(&reqwest::Client::new(), &url, &chat("llama3:8b", false)).await;
    assert_eq!(fresh.status, 200, "the new process serves the same port");
    assert!(
        old.wait_exit(Duration::from_secs(20)).await.is_some(),
        "the old process exits"
    );
    new_gw.stop().await;
}
