//! Token counts read from responses as they pass, without holding the stream.
//!
//! Chunks do not align with NDJSON lines or SSE events, so each parser keeps the partial line
//! between calls; the counts come out the same wherever the stream was split.

mod json;
mod lines;
mod ndjson;
mod sse;
mod strip;

pub use strip::UsageStripper;

use serde_json::Value;

/// What a response reported about its tokens.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Usage {
    pub prompt_tokens: Option<u64>,
    pub completion_tokens: Option<u64>,
    /// The upstream said it finished (`done: true`, `data: [DONE]`, a complete JSON body).
    pub finished: bool,
    /// Content chunks seen: about one token each on Ollama streams.
    pub chunks: u64,
    /// An error the upstream reported inside a 200 stream.
    pub stream_error: Option<String>,
}

/// The parser for one response, chosen by its `Content-Type`.
#[derive(Debug)]
pub enum UsageParser {
    Ndjson(ndjson::NdjsonParser),
    Sse(sse::SseParser),
    Json(json::JsonParser),
}

impl UsageParser {
    /// `None` when the content type carries no counts (e.g. plain text).
    pub fn for_content_type(content_type: &str) -> Option<Self> {
        let ct = content_type.to_ascii_lowercase();
        if ct.starts_with("application/x-ndjson") || ct.starts_with("application/ndjson") {
            Some(Self::Ndjson(ndjson::NdjsonParser::default()))
        } else if ct.starts_with("text/event-stream") {
            Some(Self::Sse(sse::SseParser::default()))
        } else if ct.starts_with("application/json") {
            Some(Self::Json(json::JsonParser::default()))
        } else {
            None
        }
    }

    pub fn feed(&mut self, chunk: &[u8]) {
        match self {
            Self::Ndjson(p) => p.feed(chunk),
            Self::Sse(p) => p.feed(chunk),
            Self::Json(p) => p.feed(chunk),
        }
    }

    /// Called once at the end of the body: parses whatever is left.
    pub fn finish(&mut self) {
        match self {
            Self::Ndjson(p) => p.finish(),
            Self::Sse(p) => p.finish(),
            Self::Json(p) => p.finish(),
        }
    }

    pub fn usage(&self) -> &Usage {
        match self {
            Self::Ndjson(p) => &p.usage,
            Self::Sse(p) => &p.usage,
            Self::Json(p) => &p.usage,
        }
    }
}

/// Reads counts from any of the shapes Ollama answers in: native (`prompt_eval_count`,
/// `eval_count`), OpenAI (`usage.prompt_tokens`, `usage.completion_tokens`) and the
/// Anthropic-style and Responses shapes (`usage.input_tokens`, `usage.output_tokens`, possibly
/// under `message` or `response`).
fn read_counts(v: &Value, usage: &mut Usage) {
    if let Some(n) = v.get("prompt_eval_count").and_then(Value::as_u64) {
        usage.prompt_tokens = Some(n);
    }
    if let Some(n) = v.get("eval_count").and_then(Value::as_u64) {
        usage.completion_tokens = Some(n);
    }
    let nested = [
        v.get("usage"),
        v.pointer("/message/usage"),
        v.pointer("/response/usage"),
    ];
    for u in nested.into_iter().flatten() {
        let prompt = u.get("prompt_tokens").or_else(|| u.get("input_tokens"));
        if let Some(n) = prompt.and_then(Value::as_u64) {
            usage.prompt_tokens = Some(n);
        }
        let completion = u
            .get("completion_tokens")
            .or_else(|| u.get("output_tokens"));
        if let Some(n) = completion.and_then(Value::as_u64) {
            usage.completion_tokens = Some(n);
        }
    }
}

/// The message of an `{"error": ...}` object, in Ollama's or OpenAI's shape.
fn error_message(v: &Value) -> Option<String> {
    match v.get("error")? {
        Value::String(s) => Some(s.clone()),
        Value::Object(o) => o.get("message").and_then(Value::as_str).map(str::to_string),
        Value::Null => None,
        other => Some(other.to_string()),
    }
}

#[cfg(test)]
mod tests;
