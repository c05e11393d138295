//! Sequences decoding together share the GPU: each token takes longer the more slots
//! are busy, and streams are paced token by token at that rate.

use std::time::Duration;

use serde_json::json;

use super::super::super::{FakeOllama, GpuModel};
use super::{chat, conversation, gpu, post, stats};

const MODEL: &str = "llama3:8b";

fn per_token(reply: &super::Reply) -> Duration {
    let tokens = u32::try_from(reply.count("eval_count")).expect("count");
    reply.nanos("eval_duration") / tokens
}

/// A 20-token reply, however many tokens the instance would give.
fn short(system: &str) -> serde_json::Value {
    let mut body = conversation(MODEL, system, &["go"]);
    body["options"] = json!({"num_predict": 20});
    body
}

#[tokio::test]
async fn tokens_slow_down_when_several_slots_are_busy() {
    // 10 ms/token at half speed is 5 ms alone; 0.5 per other busy slot makes it
    // 5 × (1 + 0.5 × 3) = 12.5 ms with all four slots busy.
    let model = GpuModel {
        num_parallel: 4,
        batch_slowdown: 0.5,
        ..gpu(0.5)
    };
    let fake = FakeOllama::builder()
        .gpu(model)
        .loaded(&[MODEL])
        .tokens(1_000)
        .start()
        .await;
    let alone = per_token(&chat(&fake, short("alone")).await);
    assert!(alone >= Duration::from_millis(5), "{alone:?}");
    assert!(alone < Duration::from_millis(8), "{alone:?}");

    // Three long replies hold three slots (headers leave with their first token) and
    // are not read; the fourth is measured while all four slots are busy.
    let mut background = Vec::new();
    for i in 0..3 {
        let response = post(
            &fake,
            "/api/chat",
            conversation(MODEL, &i.to_string(), &["go"]),
        )
        .await;
        background.push(response);
    }
    assert_eq!(stats(&fake).busy_slots, 3);
    let batched = per_token(&chat(&fake, short("batched")).await);
    assert_eq!(stats(&fake).max_busy_slots, 4);
    assert!(batched >= Duration::from_micros(12_500), "{batched:?}");
    assert!(batched < Duration::from_millis(16), "{batched:?}");
    drop(background);
}

#[tokio::test]
async fn streams_are_paced_at_the_batched_rate() {
    // Default batching (0.1 per other busy slot) with two busy: 10 × 1.1 = 11 ms a token.
    let model = GpuModel {
        num_parallel: 2,
        ..gpu(1.0)
    };
    let fake = FakeOllama::builder()
        .gpu(model)
        .loaded(&[MODEL])
        .tokens(1_000)
        .start()
        .await;
    let held = post(&fake, "/api/chat", conversation(MODEL, "held", &["go"])).await;
    let reply = chat(&fake, short("paced")).await;
    // The final chunk leaves 20 steps after the first token (19 allow for the client
    // reading that token late), and the counters agree.
    let streamed = reply.ended - reply.first_at;
    assert!(streamed >= Duration::from_millis(19 * 11), "{streamed:?}");
    assert!(per_token(&reply) >= Duration::from_millis(11));
    assert!(per_token(&reply) < Duration::from_millis(14));
    drop(held);
}
