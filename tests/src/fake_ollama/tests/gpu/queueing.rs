//! Requests beyond `num_parallel` wait in line for a slot; beyond `max_queue` they get
//! Ollama's 503.

use serde_json::{json, Value};

use super::super::super::{FakeOllama, GpuModel, BUSY_MESSAGE};
use super::{chat, conversation, gpu, long_system, post, stats, until};

const MODEL: &str = "llama3:8b";

#[tokio::test]
async fn requests_beyond_num_parallel_wait_for_a_slot() {
    let fake = FakeOllama::builder()
        .gpu(GpuModel {
            num_parallel: 2,
            ..gpu(0.5)
        })
        .loaded(&[MODEL])
        .tokens(10)
        .start()
        .await;
    let requests = (0..5).map(|i| {
        // 100 prompt tokens: 20 ms of evaluation between taking a slot and answering.
        let body = conversation(MODEL, &long_system(&i.to_string(), 100), &["go"]);
        let fake = fake.clone();
        async move { chat(&fake, body).await }
    });
    let replies = futures::future::join_all(requests).await;

    let gpu = stats(&fake);
    assert_eq!(
        gpu.max_busy_slots, 2,
        "never more than num_parallel at once"
    );
    assert_eq!(fake.max_in_flight(), 5, "all five were accepted");
    assert!(gpu.max_waiting >= 1);
    // What clients saw: at no first token were more than two replies under way...
    let spans: Vec<_> = replies.iter().map(|r| (r.first_at, r.ended)).collect();
    for (start, _) in &spans {
        let running = spans
            .iter()
            .filter(|(s, e)| s <= start && start <= e)
            .count();
        assert!(running <= 2, "{running} replies streaming at once");
    }
    // ...and three of them began only after an earlier one had ended.
    let first_end = spans.iter().map(|(_, e)| *e).min().expect("replies");
    let waited = spans.iter().filter(|(s, _)| *s >= first_end).count();
    assert_eq!(waited, 3, "{spans:?}");
}

#[tokio::test]
async fn a_full_queue_answers_ollamas_503() {
    let fake = FakeOllama::builder()
        .gpu(GpuModel {
            num_parallel: 1,
            max_queue: 1,
            ..gpu(0.2)
        })
        .loaded(&[MODEL])
        .tokens(100)
        .start()
        .await;
    let running = tokio::spawn({
        let fake = fake.clone();
        async move { chat(&fake, conversation(MODEL, "one", &["go"])).await }
    });
    until(&fake, "the first request runs", |s| s.busy_slots == 1).await;
    let queued = tokio::spawn({
        let fake = fake.clone();
        async move { chat(&fake, conversation(MODEL, "two", &["go"])).await }
    });
    until(&fake, "the second request waits", |s| s.waiting == 1).await;

    let refused = post(&fake, "/api/chat", conversation(MODEL, "three", &["go"])).await;
    assert_eq!(refused.status(), 503);
    let body: Value = refused.json().await.expect("json");
    assert_eq!(body, json!({"error": BUSY_MESSAGE}));
    let openai = json!({"model": MODEL, "messages": [{"role": "user", "content": "x"}]});
    let refused = post(&fake, "/v1/chat/completions", openai).await;
    assert_eq!(refused.status(), 503);
    let body: Value = refused.json().await.expect("json");
    assert_eq!(body["error"]["message"], BUSY_MESSAGE);

    assert_eq!(running.await.expect("first").count("eval_count"), 100);
    assert_eq!(queued.await.expect("second").count("eval_count"), 100);
    assert_eq!(stats(&fake).rejected, 2);
}
