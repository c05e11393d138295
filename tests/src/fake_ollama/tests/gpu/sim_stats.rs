//! What benchmarks read from a fake run as a process: `GET /sim/stats`, and the prompt
//! size a chat request has before any caching.

use serde_json::Value;

use super::super::super::gpu::chat_prompt_tokens;
use super::super::super::{FakeOllama, SimStats};
use super::{chat, client, conversation, gpu, long_system, stats};

const MODEL: &str = "llama3:8b";

async fn sim_stats(fake: &FakeOllama) -> SimStats {
    client()
        .get(format!("{}/sim/stats", fake.url()))
        .send()
        .await
        .expect("GET /sim/stats")
        .json()
        .await
        .expect("SimStats JSON")
}

#[tokio::test]
async fn a_cold_prompt_evaluates_exactly_the_tokens_chat_prompt_tokens_counts() {
    let fake = FakeOllama::builder()
        .gpu(gpu(0.01))
        .loaded(&[MODEL])
        .tokens(3)
        .start()
        .await;
    let body = conversation(MODEL, &long_system("S", 300), &["hello there"]);
    let reply = chat(&fake, body.clone()).await;
    assert_eq!(
        reply.count("prompt_eval_count"),
        chat_prompt_tokens(&body, 4) as u64
    );
    let served = sim_stats(&fake).await;
    assert_eq!(served.gpu, Some(stats(&fake)));
    assert_eq!(served.bytes_per_token, Some(4));
    assert_eq!((served.in_flight, served.max_in_flight), (0, 1));
    assert_eq!(served.requests, 1);
    assert!(fake.last_request().is_some_and(|r| r.path == "/api/chat"));
}

#[tokio::test]
async fn without_a_gpu_sim_stats_has_no_gpu_counters() {
    let fake = FakeOllama::builder().start().await;
    let served = sim_stats(&fake).await;
    assert_eq!(served.gpu, None);
    assert_eq!(served.bytes_per_token, None);
    let raw: Value = client()
        .get(format!("{}/sim/stats", fake.url()))
        .send()
        .await
        .expect("GET")
        .json()
        .await
        .expect("json");
    assert!(raw["gpu"].is_null(), "{raw}");
}
