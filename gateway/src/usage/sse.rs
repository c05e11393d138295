//! OpenAI-compatible streams (`/v1/*`): `data: {...}` events ending with `data: [DONE]`; the
//! counts come in a `usage` object (only when `stream_options.include_usage` was asked for).

use serde_json::Value;

use super::lines::LineBuffer;
use super::{error_message, read_counts, Usage};

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
    let Some(data) = line.strip_prefix(b"data:") else {
        return; // event:, id:, comments and blank separators carry no counts
    };
    let data = data.strip_prefix(b" ").unwrap_or(data);
    if data == b"[DONE]" {
        usage.finished = true;
        return;
    }
    let Ok(v) = serde_json::from_slice::<Value>(data) else {
        return;
    };
    if let Some(msg) = error_message(&v) {
        usage.stream_error = Some(msg);
        return;
    }
    read_counts(&v, usage);
    let has_content = v
        .get("choices")
        .and_then(Value::as_array)
        .is_some_and(|c| c.iter().any(choice_has_content));
    if has_content || v.get("type").and_then(Value::as_str) == Some("content_block_delta") {
        usage.chunks += 1;
    }
    if matches!(
        v.get("type").and_then(Value::as_str),
        Some("message_stop" | "response.completed")
    ) {
        usage.finished = true;
    }
}

fn choice_has_content(choice: &Value) -> bool {
    let text = choice
        .pointer("/delta/content")
        .or_else(|| choice.get("text"))
        .and_then(Value::as_str);
    text.is_some_and(|t| !t.is_empty())
}
