//! Non-streaming responses: one JSON document, parsed once at the end.

use super::doc::Doc;
use super::lines::MAX_LINE;
use super::Usage;

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
        let body = std::mem::take(&mut self.body);
        let Some(doc) = Doc::parse(&body) else {
            return;
        };
        if let Some(msg) = doc.error_message() {
            self.usage.stream_error = Some(msg);
            return;
        }
        self.usage.finished = true;
        doc.read_counts(&mut self.usage);
    }
}
