//! The fake must be faithful: these tests pin the wire shapes the gateway parses.

use std::time::{Duration, Instant};

use futures::StreamExt;
use serde_json::{json, Value};

use super::{prompt_tokens_for, FakeOllama, BUSY_MESSAGE};

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("reqwest client")
}

async fn post(fake: &FakeOllama, path: &str, body: Value) -> reqwest::Response {
    client()
        .post(format!("{}{path}", fake.url()))
        .json(&body)
        .send()
        .await
        .expect("request")
}

/// Reads a streamed body to its end: each complete line with its arrival time, and
/// whether the body ended in an error (a dropped connection).
async fn read_lines(response: reqwest::Response) -> (Vec<(String, Instant)>, bool) {
    let mut body = response.bytes_stream();
    let mut lines = Vec::new();
    let mut partial = Vec::new();
    while let Some(chunk) = body.next().await {
        let Ok(chunk) = chunk else {
            return (lines, true);
        };
        partial.extend_from_slice(&chunk);
        while let Some(end) = partial.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = partial.drain(..=end).collect();
            let line = String::from_utf8(line).expect("utf-8").trim().to_string();
            if !line.is_empty() {
                lines.push((line, Instant::now()));
            }
        }
    }
    (lines, false)
}

fn json_lines(lines: &[(String, Instant)]) -> Vec<Value> {
    lines
        .iter()
        .map(|(l, _)| serde_json::from_str(l).expect("ndjson line"))
        .collect()
}

/// The JSON payloads of an SSE body, and whether it ended with `data: [DONE]`.
fn sse_payloads(lines: &[(String, Instant)]) -> (Vec<Value>, bool) {
    let data: Vec<&str> = lines
        .iter()
        .map(|(l, _)| l.strip_prefix("data: ").expect("SSE data line"))
        .collect();
    let done = data.last() == Some(&"[DONE]");
    let values = data
        .iter()
        .filter(|d| **d != "[DONE]")
        .map(|d| serde_json::from_str(d).expect("SSE JSON"))
        .collect();
    (values, done)
}

fn chat_body(stream: Option<bool>) -> Value {
    let mut body = json!({
        "model": "llama3:8b",
        "messages": [
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": "why is the sky blue?"}
        ]
    });
    if let Some(stream) = stream {
        body["stream"] = json!(stream);
    }
    body
}

const CHAT_PROMPT_TOKENS: u64 = 2 + 5 + 10;

#[tokio::test]
async fn native_chat_streams_ndjson_with_final_counts() {
    let fake = FakeOllama::builder().tokens(3).start().await;
    let response = post(&fake, "/api/chat", chat_body(None)).await;
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.headers()["content-type"],
        "application/x-ndjson",
        "streaming is the default on /api/chat"
    );
    let (lines, died) = read_lines(response).await;
    assert!(!died);
    let lines = json_lines(&lines);
    assert_eq!(lines.len(), 4);
    for (i, line) in lines[..3].iter().enumerate() {
        assert_eq!(line["model"], "llama3:8b");
        assert_eq!(line["done"], false);
        assert_eq!(line["message"]["role"], "assistant");
        assert_eq!(line["message"]["content"], format!("tok{} ", i + 1));
        assert!(line["created_at"]
            .as_str()
            .expect("created_at")
            .ends_with('Z'));
        assert!(line.get("eval_count").is_none());
    }
    let last = &lines[3];
    assert_eq!(last["done"], true);
    assert_eq!(last["done_reason"], "stop");
    assert_eq!(last["message"]["content"], "");
    assert_eq!(last["eval_count"], 3);
    assert_eq!(last["prompt_eval_count"], CHAT_PROMPT_TOKENS);
    for key in [
        "total_duration",
        "load_duration",
        "prompt_eval_duration",
        "eval_duration",
    ] {
        assert!(last[key].is_u64(), "{key} in {last}");
    }
    assert_eq!(
        prompt_tokens_for(&["be brief", "why is the sky blue?"]),
        CHAT_PROMPT_TOKENS
    );
    assert_eq!(fake.requests(), 1);
    assert_eq!(fake.total_completion_tokens(), 3);
    assert_eq!(fake.total_prompt_tokens(), CHAT_PROMPT_TOKENS);
    assert_eq!(fake.in_flight(), 0);
    assert_eq!(fake.max_in_flight(), 1);
    let seen = fake.last_request().expect("recorded");
    assert_eq!(seen.method, "POST");
    assert_eq!(seen.path, "/api/chat");
    assert_eq!(seen.body["messages"][1]["content"], "why is the sky blue?");
    assert_eq!(
        seen.header("Host"),
        Some(format!("127.0.0.1:{}", fake.port()).as_str())
    );
}

#[tokio::test]
async fn num_predict_caps_the_reply_with_length() {
    let fake = FakeOllama::builder().tokens(8).start().await;
    let mut body = chat_body(Some(false));
    body["options"] = json!({"num_predict": 2});
    let response = post(&fake, "/api/chat", body).await;
    assert_eq!(response.status(), 200);
    assert!(response.headers()["content-type"]
        .to_str()
        .expect("ascii")
        .starts_with("application/json"));
    let reply: Value = response.json().await.expect("json");
    assert_eq!(reply["message"]["content"], "tok1 tok2 ");
    assert_eq!(reply["done"], true);
    assert_eq!(reply["done_reason"], "length");
    assert_eq!(reply["eval_count"], 2);
    assert_eq!(fake.total_completion_tokens(), 2);
}

#[tokio::test]
async fn generate_uses_response_field() {
    let fake = FakeOllama::builder().tokens(2).start().await;
    let body = json!({"model": "llama3:8b", "prompt": "one two three"});
    let (lines, _) = read_lines(post(&fake, "/api/generate", body).await).await;
    let lines = json_lines(&lines);
    assert_eq!(lines.len(), 3);
    assert_eq!(lines[0]["response"], "tok1 ");
    assert_eq!(lines[2]["done"], true);
    assert_eq!(lines[2]["prompt_eval_count"], 13);
    assert_eq!(lines[2]["eval_count"], 2);

    let body = json!({"model": "llama3:8b", "prompt": "x", "stream": false});
    let reply: Value = post(&fake, "/api/generate", body)
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(reply["response"], "tok1 tok2 ");
    assert_eq!(fake.requests(), 2);
}

#[tokio::test]
async fn errors_have_ollama_shapes() {
    let fake = FakeOllama::builder().start().await;
    let body = json!({"model": "nope:1b", "messages": [{"role": "user", "content": "hi"}]});
    let response = post(&fake, "/api/chat", body.clone()).await;
    assert_eq!(response.status(), 404);
    let error: Value = response.json().await.expect("json");
    assert_eq!(
        error,
        json!({"error": "model \"nope:1b\" not found, try pulling it first"})
    );

    let response = post(&fake, "/v1/chat/completions", body).await;
    assert_eq!(response.status(), 404);
    let error: Value = response.json().await.expect("json");
    assert_eq!(error["error"]["type"], "not_found_error");
    assert_eq!(error["error"]["param"], Value::Null);
    assert_eq!(error["error"]["code"], Value::Null);
    assert!(error["error"]["message"]
        .as_str()
        .expect("message")
        .contains("nope:1b"));

    let response = client()
        .post(format!("{}/api/chat", fake.url()))
        .body("{not json")
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), 400);
    let error: Value = response.json().await.expect("json");
    assert!(error["error"].is_string());

    // A tag-less name means :latest, as in Ollama.
    fake.set_models(&["mistral:latest"]);
    let body = json!({"model": "mistral", "messages": [{"role": "user", "content": "hi"}], "stream": false});
    assert_eq!(post(&fake, "/api/chat", body).await.status(), 200);
    assert_eq!(fake.requests(), 4, "refused requests were received too");
}

#[tokio::test]
async fn busy_answers_503_before_streaming() {
    let fake = FakeOllama::builder().busy(true).start().await;
    let response = post(&fake, "/api/chat", chat_body(None)).await;
    assert_eq!(response.status(), 503);
    let error: Value = response.json().await.expect("json");
    assert_eq!(error["error"], BUSY_MESSAGE);
    let response = post(&fake, "/v1/chat/completions", chat_body(None)).await;
    assert_eq!(response.status(), 503);
    let error: Value = response.json().await.expect("json");
    assert_eq!(error["error"]["type"], "api_error");
    fake.set_busy(false);
    assert_eq!(
        post(&fake, "/api/chat", chat_body(None)).await.status(),
        200
    );
    assert_eq!(fake.requests(), 3);
}

#[tokio::test]
async fn sse_without_usage_ends_with_done() {
    let fake = FakeOllama::builder().tokens(2).start().await;
    let response = post(&fake, "/v1/chat/completions", chat_body(Some(true))).await;
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    let (lines, died) = read_lines(response).await;
    assert!(!died);
    let (chunks, done) = sse_payloads(&lines);
    assert!(done, "stream ends with data: [DONE]");
    assert_eq!(chunks.len(), 3);
    for chunk in &chunks {
        assert_eq!(chunk["object"], "chat.completion.chunk");
        assert_eq!(chunk["system_fingerprint"], "fp_ollama");
        assert_eq!(chunk["model"], "llama3:8b");
        assert!(chunk.get("usage").is_none());
    }
    assert_eq!(chunks[0]["choices"][0]["delta"]["content"], "tok1 ");
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    assert_eq!(chunks[0]["choices"][0]["finish_reason"], Value::Null);
    assert_eq!(chunks[2]["choices"][0]["finish_reason"], "stop");
    assert_eq!(chunks[2]["choices"][0]["delta"]["content"], "");
}

#[tokio::test]
async fn sse_with_include_usage_adds_a_usage_chunk() {
    let fake = FakeOllama::builder().tokens(5).start().await;
    let mut body = chat_body(Some(true));
    body["stream_options"] = json!({"include_usage": true});
    body["max_tokens"] = json!(3);
    let (lines, _) = read_lines(post(&fake, "/v1/chat/completions", body).await).await;
    let (chunks, done) = sse_payloads(&lines);
    assert!(done);
    assert_eq!(chunks.len(), 5, "3 tokens, finish, usage");
    assert_eq!(chunks[3]["choices"][0]["finish_reason"], "length");
    let usage = &chunks[4];
    assert_eq!(usage["choices"], json!([]));
    assert_eq!(
        usage["usage"],
        json!({"prompt_tokens": CHAT_PROMPT_TOKENS, "completion_tokens": 3, "total_tokens": CHAT_PROMPT_TOKENS + 3})
    );
    assert_eq!(fake.total_prompt_tokens(), CHAT_PROMPT_TOKENS);
}

#[tokio::test]
async fn openai_non_streaming_is_the_default() {
    let fake = FakeOllama::builder().tokens(2).start().await;
    let response = post(&fake, "/v1/chat/completions", chat_body(None)).await;
    assert!(response.headers()["content-type"]
        .to_str()
        .expect("ascii")
        .starts_with("application/json"));
    let reply: Value = response.json().await.expect("json");
    assert_eq!(reply["object"], "chat.completion");
    assert!(reply["id"].as_str().expect("id").starts_with("chatcmpl-"));
    assert_eq!(reply["choices"][0]["message"]["content"], "tok1 tok2 ");
    assert_eq!(reply["choices"][0]["finish_reason"], "stop");
    assert_eq!(reply["usage"]["completion_tokens"], 2);
    assert_eq!(reply["usage"]["total_tokens"], CHAT_PROMPT_TOKENS + 2);

    let body = json!({"model": "llama3:8b", "prompt": "say hi", "stream": true});
    let (lines, _) = read_lines(post(&fake, "/v1/completions", body).await).await;
    let (chunks, done) = sse_payloads(&lines);
    assert!(done);
    assert_eq!(chunks[0]["object"], "text_completion");
    assert_eq!(chunks[0]["choices"][0]["text"], "tok1 ");
    assert_eq!(chunks[2]["choices"][0]["finish_reason"], "stop");
}

#[tokio::test]
async fn catalog_endpoints() {
    let fake = FakeOllama::builder()
        .models(&["llama3:8b", "acme/coder:1b"])
        .loaded(&["llama3:8b"])
        .version("0.9.9")
        .start()
        .await;
    let get = |path: &str| client().get(format!("{}{path}", fake.url())).send();
    assert_eq!(
        get("/").await.expect("root").text().await.expect("text"),
        "Ollama is running"
    );
    let head = client().head(fake.url()).send().await.expect("head");
    assert_eq!(head.status(), 200);
    let version: Value = get("/api/version")
        .await
        .expect("v")
        .json()
        .await
        .expect("json");
    assert_eq!(version, json!({"version": "0.9.9"}));
    let tags: Value = get("/api/tags")
        .await
        .expect("tags")
        .json()
        .await
        .expect("json");
    assert_eq!(tags["models"][0]["name"], "llama3:8b");
    assert_eq!(tags["models"][0]["details"]["family"], "llama");
    assert_eq!(tags["models"][0]["details"]["parameter_size"], "8.0B");
    assert_eq!(tags["models"][1]["model"], "acme/coder:1b");
    assert_eq!(
        tags["models"][0]["digest"].as_str().expect("digest").len(),
        64
    );
    let ps: Value = get("/api/ps")
        .await
        .expect("ps")
        .json()
        .await
        .expect("json");
    assert_eq!(ps["models"].as_array().expect("models").len(), 1);
    assert_eq!(ps["models"][0]["expires_at"], "2099-01-01T00:00:00Z");
    assert!(ps["models"][0]["size_vram"].is_u64());
    fake.set_loaded(&[]);
    let ps: Value = get("/api/ps")
        .await
        .expect("ps")
        .json()
        .await
        .expect("json");
    assert_eq!(ps["models"], json!([]));
    let models: Value = get("/v1/models")
        .await
        .expect("models")
        .json()
        .await
        .expect("json");
    assert_eq!(models["object"], "list");
    assert_eq!(models["data"][1]["owned_by"], "acme");
    let one: Value = get("/v1/models/acme/coder:1b")
        .await
        .expect("model")
        .json()
        .await
        .expect("json");
    assert_eq!(one["id"], "acme/coder:1b");
    assert_eq!(get("/v1/models/other:1b").await.expect("404").status(), 404);
    let show = post(&fake, "/api/show", json!({"model": "llama3:8b"})).await;
    let show: Value = show.json().await.expect("json");
    assert_eq!(show["capabilities"], json!(["completion"]));
    assert!(show["modelfile"]
        .as_str()
        .expect("modelfile")
        .contains("FROM"));
    assert_eq!(
        post(&fake, "/api/show", json!({"model": "x"}))
            .await
            .status(),
        404
    );
    // Probes do not displace the last real request.
    assert_eq!(fake.last_request().expect("show").path, "/api/show");
    assert_eq!(fake.requests(), 0, "catalog calls are not model requests");
}

#[tokio::test]
async fn embeddings_in_both_shapes() {
    let fake = FakeOllama::builder().start().await;
    let body = json!({"model": "llama3:8b", "input": ["a b", "c"]});
    let reply: Value = post(&fake, "/api/embed", body)
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(reply["embeddings"].as_array().expect("list").len(), 2);
    assert_eq!(reply["embeddings"][0].as_array().expect("vector").len(), 8);
    assert_eq!(reply["prompt_eval_count"], 13);
    let body = json!({"model": "llama3:8b", "prompt": "a"});
    let reply: Value = post(&fake, "/api/embeddings", body)
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(reply["embedding"].as_array().expect("vector").len(), 8);
    let body = json!({"model": "llama3:8b", "input": "hello"});
    let reply: Value = post(&fake, "/v1/embeddings", body)
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(reply["object"], "list");
    assert_eq!(reply["data"][0]["object"], "embedding");
    assert_eq!(
        reply["usage"],
        json!({"prompt_tokens": 11, "total_tokens": 11})
    );
    assert_eq!(fake.requests(), 3);
    assert_eq!(fake.total_prompt_tokens(), 24);
}

#[tokio::test]
async fn management_paths_answer_and_are_recorded() {
    let fake = FakeOllama::builder().start().await;
    assert!(!fake.saw_path("/api/pull"));
    let reply = post(&fake, "/api/pull", json!({"model": "x"})).await;
    assert_eq!(reply.status(), 200);
    assert_eq!(
        reply.json::<Value>().await.expect("json"),
        json!({"status": "success"})
    );
    let deleted = client()
        .delete(format!("{}/api/delete", fake.url()))
        .json(&json!({"model": "x"}))
        .send()
        .await
        .expect("delete");
    assert_eq!(deleted.status(), 200);
    assert!(fake.saw_path("/api/pull"));
    assert!(fake.saw_path("/api/delete"));
    assert_eq!(fake.last_request().expect("recorded").method, "DELETE");
    assert_eq!(fake.requests_log().len(), 2);
    assert_eq!(fake.requests(), 0);
}

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
