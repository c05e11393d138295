//! A conversation's next turn finds its prompt cached on the instance that served the
//! turn before, and in the slot that holds it.

use std::time::Duration;

use serde_json::Value;

use super::super::super::{FakeOllama, GpuModel};
use super::{chat, conversation, gpu, long_system, post, stats, until};

const MODEL: &str = "llama3:8b";

#[tokio::test]
async fn a_second_turn_is_cached_where_the_first_ran_and_not_elsewhere() {
    // 0.4 ms/token at a quarter of real time: a 2,000-token history costs 200 ms.
    let model = GpuModel {
        num_parallel: 1,
        ..gpu(0.25)
    };
    let warm = FakeOllama::builder()
        .gpu(model.clone())
        .loaded(&[MODEL])
        .tokens(4)
        .start()
        .await;
    let cold = FakeOllama::builder()
        .gpu(model)
        .loaded(&[MODEL])
        .tokens(4)
        .start()
        .await;
    let system = long_system("A", 2_000);
    let first = chat(
        &warm,
        conversation(MODEL, &system, &["why is the sky blue?"]),
    )
    .await;
    assert!(first.count("prompt_eval_count") > 2_000, "{}", first.done);
    let second_turn = conversation(
        MODEL,
        &system,
        &["why is the sky blue?", &first.text, "and at sunset?"],
    );

    let cached = chat(&warm, second_turn.clone()).await;
    let uncached = chat(&cold, second_turn).await;

    let evaluated = cached.count("prompt_eval_count");
    assert!(
        (1..40).contains(&evaluated),
        "only the new turn: {evaluated}"
    );
    let full = uncached.count("prompt_eval_count");
    assert!(full > 2_000, "the whole history: {full}");
    // Time to first token follows the evaluated tokens: 0.4 ms × 0.25 each.
    let full_eval = Duration::from_micros(full * 100);
    assert!(
        uncached.first >= full_eval,
        "{:?} < {full_eval:?}",
        uncached.first
    );
    assert!(uncached.nanos("prompt_eval_duration") >= full_eval);
    assert!(
        cached.first * 4 < uncached.first,
        "cached {:?} vs uncached {:?}",
        cached.first,
        uncached.first
    );
    assert_eq!(cached.count("load_duration"), 0, "the model was loaded");
    let warm_stats = stats(&warm);
    assert_eq!((warm_stats.prompts, warm_stats.cache_hits), (2, 1));
    assert_eq!(
        warm_stats.evaluated_tokens,
        first.count("prompt_eval_count") + evaluated
    );
    assert_eq!(stats(&cold).cache_hits, 0);
    assert_eq!(warm.total_prompt_tokens(), warm_stats.evaluated_tokens);
}

#[tokio::test]
async fn a_request_takes_the_free_slot_with_the_longest_shared_prefix() {
    let fake = FakeOllama::builder()
        .gpu(GpuModel {
            num_parallel: 2,
            ..gpu(0.2)
        })
        .loaded(&[MODEL])
        .tokens(20)
        .start()
        .await;
    let (system_a, system_b) = (long_system("A", 400), long_system("B", 400));
    // A takes slot 0 and is still generating when B arrives, so B takes slot 1.
    let a1 = tokio::spawn({
        let fake = fake.clone();
        let body = conversation(MODEL, &system_a, &["hello"]);
        async move { chat(&fake, body).await }
    });
    until(&fake, "A holds a slot", |s| s.busy_slots == 1).await;
    let b1 = chat(&fake, conversation(MODEL, &system_b, &["hello"])).await;
    let a1 = a1.await.expect("A's first turn");
    assert_eq!(stats(&fake).max_busy_slots, 2);

    // Slot 0 is both the first and the least recently used free slot; B's second
    // turn must still go to slot 1, which holds its history.
    let b2 = chat(
        &fake,
        conversation(MODEL, &system_b, &["hello", &b1.text, "more"]),
    )
    .await;
    let a2 = chat(
        &fake,
        conversation(MODEL, &system_a, &["hello", &a1.text, "more"]),
    )
    .await;
    for (name, turn) in [("B", &b2), ("A", &a2)] {
        let evaluated = turn.count("prompt_eval_count");
        assert!(
            evaluated < 30,
            "{name}'s second turn evaluated {evaluated} tokens"
        );
    }
    // The first turns found empty slots; only the second turns hit.
    assert_eq!(stats(&fake).cache_hits, 2);
}

#[tokio::test]
async fn openai_usage_reports_only_the_evaluated_prompt_tokens() {
    let fake = FakeOllama::builder()
        .gpu(gpu(0.1))
        .loaded(&[MODEL])
        .tokens(3)
        .start()
        .await;
    let system = long_system("O", 500);
    let mut body = conversation(MODEL, &system, &["hi"]);
    let first: Value = post(&fake, "/v1/chat/completions", body.clone())
        .await
        .json()
        .await
        .expect("json");
    let reply = first["choices"][0]["message"]["content"]
        .as_str()
        .expect("text");
    assert!(first["usage"]["prompt_tokens"].as_u64().expect("usage") > 500);
    body["messages"].as_array_mut().expect("messages").extend([
        serde_json::json!({"role": "assistant", "content": reply}),
        serde_json::json!({"role": "user", "content": "again"}),
    ]);
    let second: Value = post(&fake, "/v1/chat/completions", body)
        .await
        .json()
        .await
        .expect("json");
    let usage = &second["usage"];
    assert!(
        usage["prompt_tokens"].as_u64().expect("prompt") < 30,
        "{usage}"
    );
    assert_eq!(usage["completion_tokens"], 3);
}
