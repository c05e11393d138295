//! Each behaviour puts its documented bytes on the wire.

use std::time::{Duration, Instant};

use serde_json::json;

use super::super::http1::LAST_CHUNK;
use super::super::{read_stream_lines_then_drop, Behaviour, HostileUpstream, PROMPT_TOKENS};
use super::{exchange, native_chat, ndjson, openai_chat, parse, sse_data, wait_idle, TIMEOUT};

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[tokio::test]
async fn normal_streams_ndjson_with_final_counts() {
    let upstream = HostileUpstream::start(Behaviour::Normal { tokens: 3 }).await;
    let reply = exchange(&upstream, &native_chat("/api/chat", None)).await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.header("content-type"), Some("application/x-ndjson"));
    assert_eq!(reply.header("transfer-encoding"), Some("chunked"));
    assert!(reply.complete && reply.raw.ends_with(LAST_CHUNK));
    let text = reply.text();
    let first = text.lines().next().expect("a line");
    assert_eq!(
        first,
        r#"{"model":"llama3:8b","created_at":"2024-01-01T00:00:00Z","message":{"role":"assistant","content":"tok0 "},"done":false}"#
    );
    let lines = ndjson(&reply.body);
    assert_eq!(lines.len(), 4);
    assert_eq!(lines[2]["message"]["content"], "tok2 ");
    let last = &lines[3];
    assert_eq!(last["done"], true);
    assert_eq!(last["done_reason"], "stop");
    assert_eq!(last["prompt_eval_count"], PROMPT_TOKENS);
    assert_eq!(last["eval_count"], 3);
    wait_idle(&upstream, TIMEOUT).await;
    assert_eq!(upstream.max_in_flight(), 1);
}

#[tokio::test]
async fn normal_streams_sse_with_usage_when_asked() {
    let upstream = HostileUpstream::start(Behaviour::Normal { tokens: 2 }).await;
    let request = openai_chat("/v1/chat/completions", Some(true), true);
    let reply = exchange(&upstream, &request).await;
    assert_eq!(reply.header("content-type"), Some("text/event-stream"));
    let data = sse_data(&reply.body);
    assert_eq!(data.len(), 5, "2 content, finish, usage, [DONE]: {data:?}");
    assert_eq!(
        data[0],
        r#"{"id":"chatcmpl-1","object":"chat.completion.chunk","created":1,"model":"llama3:8b","choices":[{"index":0,"delta":{"role":"assistant","content":"tok0 "},"finish_reason":null}]}"#
    );
    assert_eq!(parse(&data[2])["choices"][0]["finish_reason"], "stop");
    let usage = parse(&data[3]);
    assert_eq!(usage["choices"], json!([]));
    assert_eq!(
        usage["usage"],
        json!({"prompt_tokens": 10, "completion_tokens": 2, "total_tokens": 12})
    );
    assert_eq!(data[4], "[DONE]");

    let without = exchange(
        &upstream,
        &openai_chat("/v1/chat/completions", Some(true), false),
    )
    .await;
    assert_eq!(
        sse_data(&without.body).len(),
        4,
        "no usage chunk unless asked"
    );
}

#[tokio::test]
async fn non_streaming_requests_get_one_object_with_counts() {
    let upstream = HostileUpstream::start(Behaviour::Normal { tokens: 2 }).await;
    let native = exchange(&upstream, &native_chat("/api/chat", Some(false))).await;
    assert_eq!(
        native.header("content-type"),
        Some("application/json; charset=utf-8")
    );
    let native = native.json();
    assert_eq!(native["message"]["content"], "tok0 tok1 ");
    assert_eq!(
        (
            native["prompt_eval_count"].clone(),
            native["eval_count"].clone()
        ),
        (json!(10), json!(2))
    );

    let openai = exchange(&upstream, &openai_chat("/v1/chat/completions", None, false)).await;
    let openai = openai.json();
    assert_eq!(openai["object"], "chat.completion");
    assert_eq!(openai["choices"][0]["message"]["content"], "tok0 tok1 ");
    assert_eq!(openai["usage"]["total_tokens"], 12);
}

#[tokio::test]
async fn generate_and_completions_use_their_own_shapes() {
    let upstream = HostileUpstream::start(Behaviour::Normal { tokens: 1 }).await;
    let generate = exchange(&upstream, &native_chat("/api/generate", None)).await;
    assert_eq!(ndjson(&generate.body)[0]["response"], "tok0 ");
    let completions = exchange(
        &upstream,
        &openai_chat("/v1/completions", Some(true), false),
    )
    .await;
    let first = parse(&sse_data(&completions.body)[0]);
    assert_eq!(first["object"], "text_completion");
    assert_eq!(first["choices"][0]["text"], "tok0 ");
}

#[tokio::test]
async fn cut_mid_line_sends_half_a_line_and_no_terminator() {
    let upstream = HostileUpstream::start(Behaviour::CutMidLine { lines: 2 }).await;
    let reply = exchange(&upstream, &native_chat("/api/chat", None)).await;
    assert_eq!(reply.status, 200);
    assert!(reply.closed && !reply.complete, "closed mid-body");
    assert!(!reply.raw.ends_with(LAST_CHUNK));
    let text = reply.text();
    let lines: Vec<&str> = text.split_inclusive('\n').collect();
    assert_eq!(lines.len(), 3, "{text}");
    assert!(lines[..2].iter().all(|l| l.ends_with("\n")));
    let partial = lines[2];
    assert!(partial.starts_with(r#"{"model":"#) && !partial.ends_with('\n'));
    assert!(serde_json::from_str::<serde_json::Value>(partial).is_err());
    let full_len = lines[0].len();
    assert_eq!(partial.len(), full_len / 2, "half of a content line");
    wait_idle(&upstream, TIMEOUT).await;
}

#[tokio::test]
async fn cut_mid_line_on_sse_and_whole_bodies() {
    let upstream = HostileUpstream::start(Behaviour::CutMidLine { lines: 1 }).await;
    let sse = exchange(
        &upstream,
        &openai_chat("/v1/chat/completions", Some(true), true),
    )
    .await;
    let text = sse.text();
    let (event, partial) = text.split_once("\n\n").expect("one whole event");
    assert!(event.starts_with("data: {"));
    assert!(partial.starts_with(r#"data: {"id":"chatcmpl-1","#) && !partial.contains('\n'));
    assert!(sse.closed && !sse.raw.ends_with(LAST_CHUNK));

    let whole = exchange(&upstream, &native_chat("/api/chat", Some(false))).await;
    let promised: usize = whole
        .header("content-length")
        .expect("length")
        .parse()
        .expect("number");
    assert!(whole.closed && !whole.complete);
    assert_eq!(whole.body.len(), promised / 2);
}

#[tokio::test]
async fn giant_line_has_content_of_the_given_size() {
    let upstream = HostileUpstream::start(Behaviour::GiantLine { bytes: 300_000 }).await;
    let reply = exchange(&upstream, &native_chat("/api/chat", None)).await;
    let lines = ndjson(&reply.body);
    assert_eq!(lines.len(), 2);
    let content = lines[0]["message"]["content"].as_str().expect("content");
    assert_eq!(content.len(), 300_000);
    assert_eq!(lines[1]["done"], true);
}

#[tokio::test]
async fn counts_are_written_verbatim() {
    let upstream = HostileUpstream::start(Behaviour::Counts {
        prompt: u64::MAX,
        completion: u64::MAX,
        lines: 1,
    })
    .await;
    let native = exchange(&upstream, &native_chat("/api/chat", None)).await;
    assert!(contains(
        &native.body,
        br#""prompt_eval_count":18446744073709551615,"prompt_eval_duration":1,"eval_count":18446744073709551615"#
    ));
    assert_eq!(ndjson(&native.body).len(), 2);
    let openai = exchange(
        &upstream,
        &openai_chat("/v1/chat/completions", Some(true), true),
    )
    .await;
    assert!(contains(
        &openai.body,
        br#""total_tokens":36893488147419103230"#
    ));
}

#[tokio::test]
async fn duplicate_done_sends_two_final_parts() {
    let upstream = HostileUpstream::start(Behaviour::DuplicateDone {
        first: (5, 6),
        second: (7, 8),
    })
    .await;
    let native = exchange(&upstream, &native_chat("/api/chat", None)).await;
    let done: Vec<_> = ndjson(&native.body)
        .into_iter()
        .filter(|l| l["done"] == true)
        .map(|l| (l["prompt_eval_count"].clone(), l["eval_count"].clone()))
        .collect();
    assert_eq!(done, [(json!(5), json!(6)), (json!(7), json!(8))]);

    let sse = exchange(
        &upstream,
        &openai_chat("/v1/chat/completions", Some(true), true),
    )
    .await;
    let usages: Vec<_> = sse_data(&sse.body)
        .iter()
        .filter(|d| d.contains("\"usage\""))
        .map(|d| parse(d)["usage"]["total_tokens"].clone())
        .collect();
    assert_eq!(usages, [json!(11), json!(15)]);
}

#[tokio::test]
async fn never_answer_holds_until_the_client_leaves() {
    let upstream = HostileUpstream::start(Behaviour::NeverAnswer).await;
    let reply = super::super::raw_exchange(
        &upstream.addr(),
        &native_chat("/api/chat", None),
        Duration::from_millis(300),
    )
    .await;
    assert!(reply.timed_out() && reply.raw.is_empty());
    // raw_exchange dropped its connection when it returned.
    wait_idle(&upstream, TIMEOUT).await;
    assert_eq!(
        (upstream.model_requests(), upstream.max_in_flight()),
        (1, 1)
    );
}

#[tokio::test]
async fn status_answers_at_once_and_keeps_the_connection() {
    let upstream = HostileUpstream::start(Behaviour::Status {
        code: 500,
        body: r#"{"error":"boom"}"#.into(),
    })
    .await;
    let mut conn = super::super::RawConnection::connect(&upstream.addr()).await;
    let reply = conn
        .exchange(&native_chat("/api/chat", None), TIMEOUT)
        .await;
    assert_eq!(reply.status, 500);
    assert_eq!(reply.json(), json!({"error": "boom"}));
    let probe = conn
        .exchange(b"GET /api/tags HTTP/1.1\r\nHost: a\r\n\r\n", TIMEOUT)
        .await;
    assert_eq!(probe.status, 200, "probes still healthy");
}

#[tokio::test]
async fn raw_writes_exact_bytes_then_closes() {
    let bytes = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 7\r\n\r\nhello".to_vec();
    let upstream = HostileUpstream::start(Behaviour::Raw(bytes.clone())).await;
    let mut conn = super::super::RawConnection::connect(&upstream.addr()).await;
    let reply = conn
        .exchange(&native_chat("/api/chat", None), TIMEOUT)
        .await;
    assert_eq!(reply.raw, bytes);
    assert_eq!(
        reply.body, b"hello",
        "the client's parser takes the first Content-Length"
    );
    let rest = conn.read_response(false, TIMEOUT).await;
    assert!(rest.closed, "then closes: {rest:?}");
}

#[tokio::test]
async fn delay_notices_a_client_that_leaves() {
    let upstream = HostileUpstream::start(Behaviour::Delay {
        tokens: 100,
        token_delay: Duration::from_millis(100),
    })
    .await;
    let url = format!("{}/api/chat", upstream.url());
    let body = json!({"model": "llama3:8b", "messages": []});
    let lines = read_stream_lines_then_drop(&url, &body, 2).await;
    assert_eq!(lines.len(), 2);
    let left = Instant::now();
    wait_idle(&upstream, Duration::from_secs(2)).await;
    assert!(
        left.elapsed() < Duration::from_secs(1),
        "noticed within a delay or so"
    );
    assert_eq!(upstream.max_in_flight(), 1);
}

#[tokio::test]
async fn delay_spaces_lines_and_whole_answers() {
    let upstream = HostileUpstream::start(Behaviour::Delay {
        tokens: 3,
        token_delay: Duration::from_millis(50),
    })
    .await;
    let started = Instant::now();
    let stream = exchange(&upstream, &native_chat("/api/chat", None)).await;
    assert_eq!(ndjson(&stream.body).len(), 4);
    assert!(
        started.elapsed() >= Duration::from_millis(150),
        "3 gaps between 4 lines"
    );
    let started = Instant::now();
    let whole = exchange(&upstream, &native_chat("/api/chat", Some(false))).await;
    assert_eq!(whole.json()["eval_count"], 3);
    assert!(started.elapsed() >= Duration::from_millis(150));
}
