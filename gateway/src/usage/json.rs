//! Non-streaming responses: one JSON document, parsed once at the end.

use serde_json::Value;

use super::lines::MAX_LINE;
use super::{error_message, read_counts, Usage};

#[derive(Debug, Default)]
pub struct JsonParser {
    body: Vec<u8>,
    too_big: bool,
    pub usage: Usage,
}

impl JsonParser {
    pub fn feed(&mut self, chunk: &[u8]) {
        if self.too_big || self.body.len() + chunk.len() > MAX_LINE {
            self.too_big = true;
            self.body = Vec::new();
            return;
        }
        self.body.extend_from_slice(chunk);
    }

    pub fn finish(&mut self) {
        if self.too_big {
            tracing::warn!("response body too large to read token counts from");
            return;
        }
        let Ok(v) = serde_json::from_slice::<Value>(&self.body) else {
            return;
        };
        self.body = Vec::new();
        if let Some(msg) = error_message(&v) {
            self.usage.stream_error = Some(msg);
            return;
        }
        self.usage.finished = true;
        read_counts(&v, &mut self.usage);
    }
}
