//! Prompt evaluation uses the whole GPU: concurrent prompts share its rate, and a long
//! prompt holds up the tokens of every other stream on the instance while it runs,
//! whereas a cached prompt barely does.

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::super::super::{FakeOllama, GpuModel};
use super::{chat, conversation, gpu, long_system, post, read_lines, stats, Reply};

const MODEL: &str = "llama3:8b";

/// A request that stops after `tokens` tokens.
fn capped(mut body: Value, tokens: usize) -> Value {
    body["options"] = json!({ "num_predict": tokens });
    body
}

/// Lines of a stream that arrived within `[from, to)`.
fn arrived_between(lines: &[(String, Instant)], from: Instant, to: Instant) -> usize {
    lines
        .iter()
        .filter(|(_, at)| *at >= from && *at < to)
        .count()
}

/// A fake with `slots` slots at `time_scale`, its model loaded, 200-token replies.
async fn instance(slots: usize, time_scale: f64) -> FakeOllama {
    FakeOllama::builder()
        .gpu(GpuModel {
            num_parallel: slots,
            ..gpu(time_scale)
        })
        .loaded(&[MODEL])
        .tokens(200)
        .start()
        .await
}

#[tokio::test]
async fn two_uncached_prompts_at_once_take_twice_as_long_as_one() {
    // About 2,000 tokens at 0.4 ms × 0.25: 200 ms alone, in chunks of 512 (51 ms).
    let fake = instance(2, 0.25).await;
    let prompt = |tag: &str| capped(conversation(MODEL, &long_system(tag, 2_000), &["go"]), 2);
    let alone = chat(&fake, prompt("1")).await;
    let own = Duration::from_micros(alone.count("prompt_eval_count") * 100);
    assert!(alone.first >= own, "{:?} < {own:?}", alone.first);

    let (a, b) = tokio::join!(chat(&fake, prompt("2")), chat(&fake, prompt("3")));
    for reply in [&a, &b] {
        assert!(reply.count("prompt_eval_count") > 2_000, "{}", reply.done);
    }
    // They take turns: the first done a chunk before the end, the other at twice the
    // time of one alone, and each reports the shared evaluation as its own duration.
    let (early, late) = if a.first < b.first {
        (&a, &b)
    } else {
        (&b, &a)
    };
    assert!(early.first >= own * 3 / 2, "{:?} vs {own:?}", early.first);
    assert!(late.first >= own * 19 / 10, "{:?} vs {own:?}", late.first);
    assert!(late.first < alone.first * 5 / 2, "{:?}", late.first);
    assert!(early.nanos("prompt_eval_duration") >= own * 3 / 2);
    let gpu = stats(&fake);
    assert_eq!(gpu.max_busy_slots, 2);
    assert_eq!(gpu.evaluating, 0);
    let counts: u64 = [&alone, &a, &b]
        .iter()
        .map(|r| r.count("prompt_eval_count"))
        .sum();
    assert_eq!(
        gpu.evaluated_tokens, counts,
        "prompt_eval_count stays exact"
    );
}

#[tokio::test]
async fn a_stream_slows_while_another_slot_evaluates_a_long_prompt_then_recovers() {
    // Half speed: a token every 5 ms (5.5 with two slots busy); a 4,000-token prompt
    // takes 800 ms in chunks of 512 tokens (102 ms), and the stream gets one token per
    // chunk meanwhile.
    let fake = instance(2, 0.5).await;
    let response = post(&fake, "/api/chat", conversation(MODEL, "stream", &["go"])).await;
    let stream = tokio::spawn(read_lines(response));
    let sent = Instant::now();
    let long = chat(
        &fake,
        capped(conversation(MODEL, &long_system("L", 4_000), &["go"]), 4),
    )
    .await;
    let (lines, died) = stream.await.expect("the stream's reader");
    assert!(!died && lines.len() == 201, "a whole stream");
    assert!(long.first >= Duration::from_millis(800), "{:?}", long.first);

    // While the prompt is evaluated (after its first chunk began): a token per chunk,
    // against ~120 at the stream's own rate.
    let stalled = arrived_between(&lines, sent + Duration::from_millis(150), long.first_at);
    assert!(stalled <= 15, "{stalled} tokens during the long prompt");
    let longest_gap = lines
        .windows(2)
        .map(|w| w[1].1 - w[0].1)
        .max()
        .expect("lines");
    assert!(longest_gap >= Duration::from_millis(80), "{longest_gap:?}");
    // Once it is evaluated, the stream is back to a token every 5 ms or so.
    let after = long.ended + Duration::from_millis(20);
    let recovered = arrived_between(&lines, after, after + Duration::from_millis(200));
    assert!(
        recovered >= 20,
        "{recovered} tokens in 200 ms after the prompt"
    );
}

#[tokio::test]
async fn cached_prompts_do_not_stall_other_streams() {
    // Half speed, as above. The stream takes slot 0 first, so the conversation's turns
    // find their history in slot 1.
    let fake = instance(2, 0.5).await;
    let response = post(&fake, "/api/chat", conversation(MODEL, "stream", &["go"])).await;
    let stream = tokio::spawn(read_lines(response));
    let system = long_system("C", 2_000);
    let mut turns = vec!["go".to_string()];
    let mut replies: Vec<Reply> = Vec::new();
    for _ in 0..6 {
        let history: Vec<&str> = turns.iter().map(String::as_str).collect();
        let reply = chat(&fake, capped(conversation(MODEL, &system, &history), 4)).await;
        turns.push(reply.text.clone());
        turns.push("and then?".to_string());
        replies.push(reply);
    }
    let (lines, died) = stream.await.expect("the stream's reader");
    assert!(!died && lines.len() == 201, "a whole stream");

    assert!(replies[0].count("prompt_eval_count") > 2_000);
    let (from, to) = (replies[1].first_at, replies[5].ended);
    for turn in &replies[1..] {
        let evaluated = turn.count("prompt_eval_count");
        assert!(evaluated < 40, "a cached turn evaluated {evaluated}");
        assert!(turn.first < Duration::from_millis(40), "{:?}", turn.first);
    }
    // Five cached turns cost the stream a few milliseconds of chunks in all: it keeps
    // close to its rate of a token every 5.5 ms.
    let expected = (to - from).as_secs_f64() / 0.0055;
    let streamed = arrived_between(&lines, from, to) as f64;
    assert!(
        streamed >= expected * 0.6,
        "{streamed} tokens while cached turns ran, ~{expected:.0} expected"
    );
    assert_eq!(stats(&fake).cache_hits, 5);
}
