//! The hostile helpers must put exactly the documented bytes on the wire: these tests
//! pin each behaviour, the upstream's HTTP handling and the raw client's reading.

mod behaviours;
mod client;
mod framing;
mod upstream;

use std::time::Duration;

use serde_json::{json, Value};

use super::{chat_request, HostileUpstream, RawResponse};

/// Generous: a test that waits this long has failed anyway.
pub(super) const TIMEOUT: Duration = Duration::from_secs(5);

/// A native chat request; `stream: None` leaves Ollama's default (streaming).
pub(super) fn native_chat(path: &str, stream: Option<bool>) -> Vec<u8> {
    let mut body = json!({"model": "llama3:8b", "messages": [{"role": "user", "content": "hi"}]});
    if let Some(stream) = stream {
        body["stream"] = json!(stream);
    }
    chat_request(path, body.to_string(), &[])
}

/// An OpenAI chat request; `stream: None` leaves the default (not streaming).
pub(super) fn openai_chat(path: &str, stream: Option<bool>, include_usage: bool) -> Vec<u8> {
    let mut body = json!({"model": "llama3:8b", "messages": [{"role": "user", "content": "hi"}]});
    if let Some(stream) = stream {
        body["stream"] = json!(stream);
    }
    if include_usage {
        body["stream_options"] = json!({"include_usage": true});
    }
    chat_request(path, body.to_string(), &[])
}

pub(super) async fn exchange(upstream: &HostileUpstream, request: &[u8]) -> RawResponse {
    super::raw_exchange(&upstream.addr(), request, TIMEOUT).await
}

/// Each NDJSON line of a body, parsed.
pub(super) fn ndjson(body: &[u8]) -> Vec<Value> {
    String::from_utf8_lossy(body)
        .lines()
        .filter(|l| !l.is_empty())
        .map(|l| serde_json::from_str(l).expect("NDJSON line"))
        .collect()
}

/// The payloads of an SSE body's `data:` lines, `[DONE]` included as a string.
pub(super) fn sse_data(body: &[u8]) -> Vec<String> {
    let text = String::from_utf8_lossy(body);
    assert!(
        text.ends_with("\n\n"),
        "events end with a blank line: {text:?}"
    );
    text.split("\n\n")
        .filter(|e| !e.is_empty())
        .map(|e| e.strip_prefix("data: ").expect("data event").to_string())
        .collect()
}

pub(super) fn parse(data: &str) -> Value {
    serde_json::from_str(data).expect("SSE JSON")
}

pub(super) async fn wait_idle(upstream: &HostileUpstream, within: Duration) {
    crate::support::eventually(within, "upstream in_flight back to 0", || async {
        upstream.in_flight() == 0
    })
    .await;
}
