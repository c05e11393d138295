//! Token counts read from responses as they pass, without holding the stream.
//!
//! Chunks do not align with NDJSON lines or SSE events, so each parser keeps the partial line
//! between calls; the counts come out the same wherever the stream was split.

mod doc;
mod frames;
mod json;
mod lines;
mod ndjson;
mod sse;
mod strip;

pub use frames::FrameGate;
pub use strip::UsageStripper;

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

#[cfg(test)]
mod proptests;
#[cfg(test)]
mod tests;
