//! Model-aware routing across a pool of fake Ollama instances, through the real gateway.

use std::time::Duration;

use corral_tests::fake_ollama::FakeOllama;
use corral_tests::gateway::GatewayProcess;
use corral_tests::support::{chat, metric_sum, metrics, post_timed};
use serde_json::Value;

#[tokio::test]
async fn routes_by_model_to_the_only_instance_that_has_it() {
    let a = FakeOllama::builder().models(&["llama3:8b"]).start().await;
    let b = FakeOllama::builder().models(&["qwen2.5:7b"]).start().await;
    let gw = GatewayProcess::builder()
        .instances(&[a.url(), b.url()])
        .start()
        .await;
    gw.wait_pool_healthy(2).await;
    let client = reqwest::Client::new();
    for _ in 0..5 {
        let r = post_timed(
            &client,
            &format!("{}/api/chat", gw.url()),
            &chat("qwen2.5:7b", false),
        )
        .await;
        assert_eq!(r.status, 200, "{}", r.body);
    }
    let r = post_timed(
        &client,
        &format!("{}/api/chat", gw.url()),
        &chat("llama3:8b", true),
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!((a.requests(), b.requests()), (1, 5));

    // The upstream saw its own Host (Ollama refuses unknown hosts on loopback) and no Origin.
    let seen = b.last_request().expect("b saw a request");
    assert_eq!(
        seen.header("host"),
        Some(format!("127.0.0.1:{}", b.port()).as_str())
    );
    assert!(seen.header("origin").is_none());
    gw.stop().await;
}

#[tokio::test]
async fn bare_model_names_mean_latest() {
    let a = FakeOllama::builder()
        .models(&["llama3:latest"])
        .start()
        .await;
    let gw = GatewayProcess::builder()
        .instances(&[a.url()])
        .start()
        .await;
    gw.wait_pool_healthy(1).await;
    let r = post_timed(
        &reqwest::Client::new(),
        &format!("{}/api/chat", gw.url()),
        &chat("llama3", false),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    gw.stop().await;
}

#[tokio::test]
async fn unknown_model_is_ollamas_own_404() {
    let a = FakeOllama::builder().models(&["llama3:8b"]).start().await;
    let gw = GatewayProcess::builder()
        .instances(&[a.url()])
        .start()
        .await;
    gw.wait_pool_healthy(1).await;
    let client = reqwest::Client::new();
    let r = post_timed(
        &client,
        &format!("{}/api/chat", gw.url()),
        &chat("mistral", true),
    )
    .await;
    assert_eq!(r.status, 404);
    let body: Value = serde_json::from_str(&r.body).expect("JSON error");
    assert_eq!(
        body["error"],
        "model \"mistral\" not found, try pulling it first"
    );
    let r = post_timed(
        &client,
        &format!("{}/v1/chat/completions", gw.url()),
        &corral_tests::support::openai_chat("mistral", false, false),
    )
    .await;
    assert_eq!(r.status, 404);
    let body: Value = serde_json::from_str(&r.body).expect("JSON error");
    assert_eq!(body["error"]["code"], "model_not_found", "{body}");
    assert!(body["error"]["message"]
        .as_str()
        .is_some_and(|m| m.contains("mistral")));
    assert_eq!(a.requests(), 0, "no instance was bothered");
    gw.stop().await;
}

#[tokio::test]
async fn prefers_the_instance_with_the_model_loaded() {
    let cold = FakeOllama::builder().models(&["llama3:8b"]).start().await;
    let warm = FakeOllama::builder()
        .models(&["llama3:8b"])
        .loaded(&["llama3:8b"])
        .start()
        .await;
    let gw = GatewayProcess::builder()
        .instances(&[cold.url(), warm.url()])
        .start()
        .await;
    gw.wait_pool_healthy(2).await;
    let client = reqwest::Client::new();
    for _ in 0..6 {
        let r = post_timed(
            &client,
            &format!("{}/api/generate", gw.url()),
            &serde_json::json!({"model": "llama3:8b", "prompt": "hi", "stream": false}),
        )
        .await;
        assert_eq!(r.status, 200, "{}", r.body);
    }
    assert_eq!((cold.requests(), warm.requests()), (0, 6));
    gw.stop().await;
}

#[tokio::test]
async fn spreads_concurrent_requests_by_in_flight_count() {
    let fakes = [
        FakeOllama::builder()
            .tokens(10)
            .token_delay(Duration::from_millis(30))
            .start()
            .await,
        FakeOllama::builder()
            .tokens(10)
            .token_delay(Duration::from_millis(30))
            .start()
            .await,
        FakeOllama::builder()
            .tokens(10)
            .token_delay(Duration::from_millis(30))
            .start()
            .await,
    ];
    let urls: Vec<String> = fakes.iter().map(FakeOllama::url).collect();
    // Six copies of one prompt: cache-aware routing would keep them together up to its load
    // bound (tests/tests/routing_cache.rs); this is the least-busy rule's test.
    let gw = GatewayProcess::builder()
        .instances(&urls)
        .env("GATEWAY_POOL_BALANCE", "least_busy")
        .start()
        .await;
    gw.wait_pool_healthy(3).await;
    let client = reqwest::Client::new();
    let url = format!("{}/api/chat", gw.url());
    let body = chat("llama3:8b", true);
    let calls = (0..6).map(|_| post_timed(&client, &url, &body));
    for r in futures::future::join_all(calls).await {
        assert_eq!(r.status, 200);
    }
    let counts: Vec<usize> = fakes.iter().map(FakeOllama::requests).collect();
    assert_eq!(
        counts,
        vec![2, 2, 2],
        "six concurrent streams over three idle instances"
    );
    gw.stop().await;
}

#[tokio::test]
async fn listings_are_merged_across_the_pool() {
    let a = FakeOllama::builder()
        .models(&["llama3:8b", "qwen2.5:7b"])
        .loaded(&["llama3:8b"])
        .start()
        .await;
    let b = FakeOllama::builder()
        .models(&["qwen2.5:7b", "mistral:7b"])
        .loaded(&["mistral:7b"])
        .start()
        .await;
    let gw = GatewayProcess::builder()
        .instances(&[a.url(), b.url()])
        .start()
        .await;
    gw.wait_pool_healthy(2).await;
    let names = |v: &Value| -> Vec<String> {
        v["models"]
            .as_array()
            .expect("models array")
            .iter()
            .map(|m| m["name"].as_str().unwrap_or("").to_string())
            .collect()
    };
    let tags: Value = reqwest::get(format!("{}/api/tags", gw.url()))
        .await
        .expect("tags")
        .json()
        .await
        .expect("json");
    assert_eq!(names(&tags), vec!["llama3:8b", "mistral:7b", "qwen2.5:7b"]);
    assert!(
        tags["models"][0]["details"]["family"].is_string(),
        "entries keep Ollama's shape"
    );
    let ps: Value = reqwest::get(format!("{}/api/ps", gw.url()))
        .await
        .expect("ps")
        .json()
        .await
        .expect("json");
    assert_eq!(names(&ps), vec!["llama3:8b", "mistral:7b"]);
    let models: Value = reqwest::get(format!("{}/v1/models", gw.url()))
        .await
        .expect("models")
        .json()
        .await
        .expect("json");
    assert_eq!(models["object"], "list");
    assert_eq!(models["data"].as_array().map(Vec::len), Some(3));
    let one = reqwest::get(format!("{}/v1/models/mistral:7b", gw.url()))
        .await
        .expect("model");
    assert_eq!(one.status(), 200);
    let missing = reqwest::get(format!("{}/v1/models/nope:1b", gw.url()))
        .await
        .expect("model");
    assert_eq!(missing.status(), 404);
    let version: Value = reqwest::get(format!("{}/api/version", gw.url()))
        .await
        .expect("version")
        .json()
        .await
        .expect("json");
    assert!(version["version"].is_string());
    let m = metrics(&gw.url()).await;
    assert_eq!(metric_sum(&m, "corral_upstream_healthy", &[]), 2.0);
    gw.stop().await;
}
