//! The fake must be faithful: these tests pin the wire shapes the gateway parses
//! and the failure behaviours its tests rely on.

mod catalog;
mod gpu;
mod lifecycle;
mod wire;

use std::time::{Duration, Instant};

use futures::StreamExt;
use serde_json::{json, Value};

use super::FakeOllama;

pub(super) fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("reqwest client")
}

pub(super) async fn post(fake: &FakeOllama, path: &str, body: Value) -> reqwest::Response {
    client()
        .post(format!("{}{path}", fake.url()))
        .json(&body)
        .send()
        .await
        .expect("request")
}

/// Reads a streamed body to its end: each complete line with its arrival time, and
/// whether the body ended in an error (a dropped connection).
pub(super) async fn read_lines(response: reqwest::Response) -> (Vec<(String, Instant)>, bool) {
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

pub(super) fn json_lines(lines: &[(String, Instant)]) -> Vec<Value> {
    lines
        .iter()
        .map(|(l, _)| serde_json::from_str(l).expect("ndjson line"))
        .collect()
}

/// The JSON payloads of an SSE body, and whether it ended with `data: [DONE]`.
pub(super) fn sse_payloads(lines: &[(String, Instant)]) -> (Vec<Value>, bool) {
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

pub(super) fn chat_body(stream: Option<bool>) -> Value {
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

pub(super) const CHAT_PROMPT_TOKENS: u64 = 2 + 5 + 10;
