//! Timing, in-flight accounting, dying mid-stream, and stop/restart.

use std::time::{Duration, Instant};

use futures::StreamExt;
use serde_json::{json, Value};

use super::super::{FakeOllama, MODEL_ERROR};
use super::{chat_body, client, json_lines, post, read_lines};

#[tokio::test]
async fn token_delay_streams_each_line_as_produced() {
    let delay = Duration::from_millis(80);
    let fake = FakeOllama::builder()
        .tokens(5)
        .token_delay(delay)
        .start()
        .await;
    let sent = Instant::now();
    let response = post(&fake, "/api/chat", chat_body(None)).await;
    let (lines, _) = read_lines(response).await;
    assert_eq!(lines.len(), 6);
    let first = lines[0].1 - sent;
    let last = lines[5].1 - sent;
    assert!(first >= delay, "first token after one delay: {first:?}");
    assert!(last >= delay * 5, "all five delays spent: {last:?}");
    // Buffered lines would arrive together; streamed ones arrive a delay apart.
    assert!(
        last - first >= delay * 3,
        "lines arrive spread out: {first:?} {last:?}"
    );
}

#[tokio::test]
async fn first_token_delay_holds_the_headers() {
    let delay = Duration::from_millis(150);
    let fake = FakeOllama::builder()
        .tokens(1)
        .first_token_delay(delay)
        .start()
        .await;
    let sent = Instant::now();
    let response = post(&fake, "/api/chat", chat_body(None)).await;
    assert!(
        sent.elapsed() >= delay,
        "headers leave with the first token"
    );
    let (lines, _) = read_lines(response).await;
    let last: Value = serde_json::from_str(&lines[1].0).expect("json");
    assert!(last["prompt_eval_duration"].as_u64().expect("ns") >= 150_000_000);
}

#[tokio::test]
async fn in_flight_counts_concurrent_streams() {
    let fake = FakeOllama::builder()
        .tokens(10)
        .token_delay(Duration::from_millis(50))
        .start()
        .await;
    let streams =
        (0..3).map(|_| async { read_lines(post(&fake, "/api/chat", chat_body(None)).await).await });
    let watcher = async {
        let deadline = Instant::now() + Duration::from_secs(5);
        while fake.in_flight() < 3 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        fake.in_flight()
    };
    let (results, seen) = tokio::join!(futures::future::join_all(streams), watcher);
    assert!(results
        .iter()
        .all(|(lines, died)| lines.len() == 11 && !died));
    assert_eq!(seen, 3, "three streams in flight at once");
    assert_eq!(fake.max_in_flight(), 3);
    assert_eq!(fake.in_flight(), 0, "finished streams leave");
    assert_eq!(fake.total_completion_tokens(), 30);
}

#[tokio::test]
async fn fail_after_tokens_drops_the_connection_mid_stream() {
    let fake = FakeOllama::builder()
        .tokens(6)
        .fail_after_tokens(Some(2))
        .start()
        .await;
    let response = post(&fake, "/api/chat", chat_body(None)).await;
    assert_eq!(response.status(), 200);
    let (lines, died) = read_lines(response).await;
    assert!(died, "the body ends in an error, not a clean end");
    assert_eq!(lines.len(), 2);
    assert!(json_lines(&lines).iter().all(|l| l["done"] == false));
    assert_eq!(fake.total_completion_tokens(), 2);
    assert_eq!(fake.total_prompt_tokens(), 0);
    assert_eq!(fake.in_flight(), 0);

    let error = client()
        .post(format!("{}/api/chat", fake.url()))
        .json(&chat_body(Some(false)))
        .send()
        .await
        .expect_err("a non-streaming request gets no response");
    assert!(!error.is_status());

    let dead = FakeOllama::builder()
        .fail_after_tokens(Some(0))
        .start()
        .await;
    let error = client()
        .post(format!("{}/api/chat", dead.url()))
        .json(&chat_body(None))
        .send()
        .await
        .expect_err("dies before the headers");
    assert!(!error.is_status());
}

#[tokio::test]
async fn stop_refuses_connections_and_the_port_can_be_reused() {
    let fake = FakeOllama::builder()
        .tokens(1000)
        .token_delay(Duration::from_millis(20))
        .start()
        .await;
    let port = fake.port();
    let response = post(&fake, "/api/chat", chat_body(None)).await;
    let mut body = response.bytes_stream();
    assert!(body.next().await.expect("first chunk").is_ok());

    let stopping = Instant::now();
    fake.clone().stop().await;
    assert!(
        stopping.elapsed() < Duration::from_millis(500),
        "stop is prompt"
    );
    let ended = tokio::time::timeout(Duration::from_secs(2), async {
        while let Some(chunk) = body.next().await {
            if chunk.is_err() {
                return true;
            }
        }
        false
    })
    .await
    .expect("the open stream ends promptly");
    assert!(ended, "the open stream ends in an error");

    let refused = client()
        .get(format!("http://127.0.0.1:{port}/"))
        .send()
        .await;
    assert!(refused.expect_err("refused").is_connect());

    let again = FakeOllama::builder().port(port).start().await;
    assert_eq!(again.port(), port);
    let reply = client().get(again.url()).send().await.expect("restarted");
    assert_eq!(reply.status(), 200);
    again.stop().await;
}

#[tokio::test]
async fn error_after_tokens_ends_streams_with_ollamas_error() {
    let fake = FakeOllama::builder()
        .tokens(6)
        .error_after_tokens(Some(2))
        .start()
        .await;
    let response = post(&fake, "/api/chat", chat_body(None)).await;
    assert_eq!(
        response.status(),
        200,
        "the status left with the first token"
    );
    let (lines, died) = read_lines(response).await;
    assert!(!died, "the body ends cleanly");
    let lines = json_lines(&lines);
    assert_eq!(lines.len(), 3);
    assert_eq!(lines[2], json!({ "error": MODEL_ERROR }));

    let (lines, _) =
        read_lines(post(&fake, "/v1/chat/completions", chat_body(Some(true))).await).await;
    let last = lines.last().expect("lines").0.clone();
    assert!(last.starts_with("data: {\"error\""), "{last}");
    assert!(lines.iter().all(|(l, _)| l != "data: [DONE]"));

    let response = post(&fake, "/api/chat", chat_body(Some(false))).await;
    assert_eq!(response.status(), 500);
    let body: Value = response.json().await.expect("json");
    assert_eq!(body["error"], MODEL_ERROR);
    assert_eq!(fake.total_completion_tokens(), 6);
    assert_eq!(fake.total_prompt_tokens(), 0, "no reply completed");
}
