//! OpenAI-compatible streams (`/v1/*`): `data: {...}` events ending with `data: [DONE]`; the
//! counts come in a `usage` object (only when `stream_options.include_usage` was asked for).

use super::doc::Doc;
use super::lines::LineBuffer;
use super::Usage;

#[derive(Debug, Default)]
pub struct SseParser {
    lines: LineBuffer,
    pub usage: Usage,
}

impl SseParser {
    pub fn feed(&mut self, chunk: &[u8]) {
        let usage = &mut self.usage;
        self.lines.feed(chunk, &mut |line| on_line(line, usage));
    }

    pub fn finish(&mut self) {
        let rest = self.lines.take_rest();
        on_line(&rest, &mut self.usage);
    }
}

fn on_line(line: &[u8], usage: &mut Usage) {
    // One final count per response: nothing after the end of the stream is charged.
    if usage.finished {
        return;
    }
    let Some(data) = line.strip_prefix(b"data:") else {
        return; // event:, id:, comments and blank separators carry no counts
    };
    let data = data.strip_prefix(b" ").unwrap_or(data);
    if data == b"[DONE]" {
        usage.finished = true;
        return;
    }
    let Some(doc) = Doc::parse(data) else {
        return;
    };
    if let Some(msg) = doc.error_message() {
        usage.stream_error = Some(msg);
        return;
    }
    doc.read_counts(usage);
    let kind = doc.kind();
    if doc.has_choice_content() || kind == Some("content_block_delta") {
        usage.chunks += 1;
    }
    if matches!(kind, Some("message_stop" | "response.completed")) {
        usage.finished = true;
    }
}
