//! NDJSON and SSE streams, whole answers, caps and error shapes.

use serde_json::{json, Value};

use super::super::{prompt_tokens_for, FakeOllama, BUSY_MESSAGE};
use super::{chat_body, client, json_lines, post, read_lines, sse_payloads, CHAT_PROMPT_TOKENS};

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
