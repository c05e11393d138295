//! Streams pass through without buffering, and token counts come out exact in both formats,
//! however the upstream's bytes are split.

use std::time::Duration;

use corral_tests::fake_ollama::FakeOllama;
use corral_tests::gateway::GatewayProcess;
use corral_tests::support::{chat, metric_sum, metrics, metrics_when, openai_chat, post_timed};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::test]
async fn the_first_token_arrives_long_before_the_last_is_produced() {
    let a = FakeOllama::builder()
        .tokens(10)
        .token_delay(Duration::from_millis(100))
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
        &chat("llama3:8b", true),
    )
    .await;
    assert_eq!(r.status, 200);
    let first = r.first_byte.expect("a first byte");
    assert!(
        r.total >= Duration::from_millis(1000),
        "ten tokens 100 ms apart: {:?}",
        r.total
    );
    assert!(
        first < Duration::from_millis(500),
        "first token after {first:?}, whole stream {:?}",
        r.total
    );
    assert_eq!(r.lines().len(), 11);
    gw.stop().await;
}

#[tokio::test]
async fn token_counts_are_exact_for_native_and_openai_replies() {
    let a = FakeOllama::builder().tokens(7).start().await;
    let gw = GatewayProcess::builder()
        .instances(&[a.url()])
        .start()
        .await;
    gw.wait_pool_healthy(1).await;
    let client = reqwest::Client::new();
    let base = gw.url();
    let bodies = [
        (format!("{base}/api/chat"), chat("llama3:8b", true)),
        (format!("{base}/api/chat"), chat("llama3:8b", false)),
        (
            format!("{base}/api/generate"),
            serde_json::json!({"model": "llama3:8b", "prompt": "one two three"}),
        ),
        (
            format!("{base}/v1/chat/completions"),
            openai_chat("llama3:8b", false, false),
        ),
        (
            format!("{base}/v1/chat/completions"),
            openai_chat("llama3:8b", true, true),
        ),
    ];
    for (url, body) in &bodies {
        let r = post_timed(&client, url, body).await;
        assert_eq!(r.status, 200, "{url}: {}", r.body);
    }
    let m = metrics_when(
        &base,
        "corral_tokens_total",
        &[("model", "llama3:8b"), ("kind", "completion")],
        35.0,
    )
    .await;
    let completion = metric_sum(
        &m,
        "corral_tokens_total",
        &[("model", "llama3:8b"), ("kind", "completion")],
    );
    let prompt = metric_sum(
        &m,
        "corral_tokens_total",
        &[("model", "llama3:8b"), ("kind", "prompt")],
    );
    assert_eq!(completion as u64, a.total_completion_tokens());
    assert_eq!(prompt as u64, a.total_prompt_tokens());
    assert_eq!(completion, 35.0, "five replies of seven tokens");
    gw.stop().await;
}

/// An upstream that answers every chat with the same NDJSON or SSE reply, written in pieces of
/// `piece` bytes with a flush between, so chunk boundaries fall mid-line and mid-UTF-8.
async fn split_upstream(piece: usize) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        loop {
            let Ok((mut sock, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let mut buf = vec![0u8; 65536];
                let mut got = Vec::new();
                loop {
                    let Ok(n) = sock.read(&mut buf).await else {
                        return;
                    };
                    if n == 0 {
                        return;
                    }
                    got.extend_from_slice(&buf[..n]);
                    if let Some(end) = find(&got, b"\r\n\r\n") {
                        let head = String::from_utf8_lossy(&got[..end]).to_ascii_lowercase();
                        let len: usize = head
                            .lines()
                            .find_map(|l| l.strip_prefix("content-length:"))
                            .and_then(|v| v.trim().parse().ok())
                            .unwrap_or(0);
                        if got.len() >= end + 4 + len {
                            break;
                        }
                    }
                }
                let head = String::from_utf8_lossy(&got).to_string();
                let (ctype, body) = if head.starts_with("GET /api/tags") {
                    ("application/json", r#"{"models":[{"name":"m:1","model":"m:1","size":1,"digest":"d","details":{}}]}"#.to_string())
                } else if head.starts_with("GET /api/ps") {
                    ("application/json", r#"{"models":[]}"#.to_string())
                } else if head.starts_with("POST /v1/") {
                    ("text/event-stream", sse_reply())
                } else {
                    ("application/x-ndjson", ndjson_reply())
                };
                let header = format!("HTTP/1.1 200 OK\r\nContent-Type: {ctype}\r\nTransfer-Encoding: chunked\r\n\r\n");
                if sock.write_all(header.as_bytes()).await.is_err() {
                    return;
                }
                for part in body.as_bytes().chunks(piece) {
                    let chunk =
                        [format!("{:x}\r\n", part.len()).as_bytes(), part, b"\r\n"].concat();
                    if sock.write_all(&chunk).await.is_err() || sock.flush().await.is_err() {
                        return;
                    }
                    tokio::time::sleep(Duration::from_micros(300)).await;
                }
                let _ = sock.write_all(b"0\r\n\r\n").await;
            });
        }
    });
    format!("http://{addr}")
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn ndjson_reply() -> String {
    let mut s = String::new();
    for word in ["Grüße ", "aus ", "Zürich — ", "🦙"] {
        s.push_str(&serde_json::json!({"model": "m:1", "message": {"role": "assistant", "content": word}, "done": false}).to_string());
        s.push('\n');
    }
    s.push_str(r#"{"model":"m:1","message":{"role":"assistant","content":""},"done":true,"done_reason":"stop","prompt_eval_count":31,"eval_count":4}"#);
    s.push('\n');
    s
}

fn sse_reply() -> String {
    let mut s = String::new();
    for word in ["Grüße ", "🦙"] {
        let ev = serde_json::json!({"id": "c", "object": "chat.completion.chunk", "choices": [{"index": 0, "delta": {"content": word}, "finish_reason": null}]});
        s.push_str(&format!("data: {ev}\n\n"));
    }
    s.push_str("data: {\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"choices\":[],\"usage\":{\"prompt_tokens\":13,\"completion_tokens\":2,\"total_tokens\":15}}\n\ndata: [DONE]\n\n");
    s
}

#[tokio::test]
async fn counts_survive_awkward_byte_boundaries() {
    for piece in [1usize, 3, 7, 64] {
        let upstream = split_upstream(piece).await;
        let gw = GatewayProcess::builder()
            .instances(&[upstream])
            .start()
            .await;
        gw.wait_pool_healthy(1).await;
        let client = reqwest::Client::new();
        let r = post_timed(
            &client,
            &format!("{}/api/chat", gw.url()),
            &chat("m:1", true),
        )
        .await;
        assert_eq!(r.status, 200);
        assert_eq!(
            r.body,
            ndjson_reply(),
            "bytes pass through untouched (piece {piece})"
        );
        let r = post_timed(
            &client,
            &format!("{}/v1/chat/completions", gw.url()),
            &openai_chat("m:1", true, true),
        )
        .await;
        assert_eq!(r.body, sse_reply());
        let m = metrics_when(
            &gw.url(),
            "corral_tokens_total",
            &[("model", "m:1"), ("kind", "completion")],
            6.0,
        )
        .await;
        let tokens = |kind| {
            metric_sum(
                &m,
                "corral_tokens_total",
                &[("model", "m:1"), ("kind", kind)],
            )
        };
        assert_eq!(
            (tokens("prompt"), tokens("completion")),
            (44.0, 6.0),
            "piece size {piece}"
        );
        gw.stop().await;
    }
}

#[tokio::test]
async fn large_bodies_with_images_are_routed_and_counted() {
    let a = FakeOllama::builder()
        .models(&["llava:7b"])
        .tokens(5)
        .start()
        .await;
    let b = FakeOllama::builder().models(&["llama3:8b"]).start().await;
    let gw = GatewayProcess::builder()
        .instances(&[b.url(), a.url()])
        .start()
        .await;
    gw.wait_pool_healthy(2).await;
    let image = "iVBORw0KGgo".repeat(100_000); // ~1.1 MB of base64, past Pingora's replay buffer
    let body = serde_json::json!({
        "messages": [{"role": "user", "content": "what is in this picture?", "images": [image]}],
        "stream": true,
        "model": "llava:7b",
    });
    let client = reqwest::Client::new();
    let r = post_timed(&client, &format!("{}/api/chat", gw.url()), &body).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.lines().len(), 6);
    let seen = a.last_request().expect("llava instance saw it");
    assert_eq!(
        seen.raw_body.len(),
        serde_json::to_vec(&body).expect("json").len(),
        "body arrives whole"
    );
    assert_eq!(b.requests(), 0);
    let m = metrics(&gw.url()).await;
    assert_eq!(
        metric_sum(
            &m,
            "corral_tokens_total",
            &[("model", "llava:7b"), ("kind", "completion")]
        ),
        5.0
    );

    // A large malformed body is refused like a small one.
    let bad = format!("{{\"model\": \"llava:7b\", \"images\": [\"{image}\"");
    let r = client
        .post(format!("{}/api/chat", gw.url()))
        .body(bad)
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), 400);
    gw.stop().await;
}

#[tokio::test]
async fn http2_cleartext_clients_stream_too() {
    let a = FakeOllama::builder()
        .tokens(6)
        .token_delay(Duration::from_millis(20))
        .start()
        .await;
    let gw = GatewayProcess::builder()
        .instances(&[a.url()])
        .start()
        .await;
    gw.wait_pool_healthy(1).await;
    let client = reqwest::Client::builder()
        .http2_prior_knowledge()
        .build()
        .expect("h2 client");
    let resp = client
        .post(format!("{}/api/chat", gw.url()))
        .json(&chat("llama3:8b", true))
        .send()
        .await
        .expect("send");
    assert_eq!(resp.version(), reqwest::Version::HTTP_2);
    assert_eq!(resp.status(), 200);
    let text = resp.text().await.expect("body");
    assert_eq!(text.lines().count(), 7);
    let r = post_timed(
        &client,
        &format!("{}/v1/chat/completions", gw.url()),
        &openai_chat("llama3:8b", true, true),
    )
    .await;
    assert_eq!(r.status, 200);
    assert!(r.body.ends_with("data: [DONE]\n\n"));
    let m = metrics_when(
        &gw.url(),
        "corral_tokens_total",
        &[("kind", "completion")],
        12.0,
    )
    .await;
    assert_eq!(
        metric_sum(&m, "corral_tokens_total", &[("kind", "completion")]),
        12.0
    );
    gw.stop().await;
}
