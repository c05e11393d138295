//! Ollama's native streams (`/api/chat`, `/api/generate`): one JSON object per line, the last
//! with `done: true` and the counts.

use serde_json::Value;

use super::lines::LineBuffer;
use super::{error_message, read_counts, Usage};

#[derive(Debug, Default)]
pub struct NdjsonParser {
    lines: LineBuffer,
    pub usage: Usage,
}

impl NdjsonParser {
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
    if line.iter().all(u8::is_ascii_whitespace) {
        return;
    }
    let Ok(v) = serde_json::from_slice::<Value>(line) else {
        return;
    };
    if let Some(msg) = error_message(&v) {
        usage.stream_error = Some(msg);
        return;
    }
    if v.get("done").and_then(Value::as_bool) == Some(true) {
        usage.finished = true;
        read_counts(&v, usage);
    } else {
        usage.chunks += 1;
    }
}
