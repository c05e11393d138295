//! Reading Ollama's `/api/chat` NDJSON stream as it passes through, without holding it:
//! chunks do not align with lines, so a partial line is kept until its newline arrives.
//! From the lines it keeps the reply text so far, and the final line's token counts.

use serde::Deserialize;

/// Longest line kept while waiting for its newline (a chunk line is small; a huge one is
/// not a chat chunk, and is dropped rather than grown without bound).
const MAX_LINE: usize = 1024 * 1024;

#[derive(Debug, Default)]
pub struct ReplyParser {
    partial: Vec<u8>,
    /// The assistant's text so far.
    pub content: String,
    /// Set by the final line (`done: true`).
    pub done: bool,
    pub prompt_tokens: Option<i64>,
    pub completion_tokens: Option<i64>,
    /// An `{"error": ...}` line: the stream failed after it began.
    pub error: Option<String>,
}

#[derive(Deserialize)]
struct Line {
    #[serde(default)]
    message: Option<LineMessage>,
    #[serde(default)]
    done: bool,
    #[serde(default)]
    prompt_eval_count: Option<i64>,
    #[serde(default)]
    eval_count: Option<i64>,
    #[serde(default)]
    error: Option<serde_json::Value>,
}

#[derive(Deserialize)]
struct LineMessage {
    #[serde(default)]
    content: String,
}

impl ReplyParser {
    /// Feeds one chunk of the body.
    pub fn feed(&mut self, chunk: &[u8]) {
        let mut rest = chunk;
        while let Some(pos) = rest.iter().position(|b| *b == b'\n') {
            let (line, tail) = rest.split_at(pos);
            if self.partial.is_empty() {
                self.line(line);
            } else {
                self.partial.extend_from_slice(line);
                let whole = std::mem::take(&mut self.partial);
                self.line(&whole);
            }
            rest = &tail[1..];
        }
        if self.partial.len() + rest.len() <= MAX_LINE {
            self.partial.extend_from_slice(rest);
        } else {
            self.partial.clear();
        }
    }

    /// The body ended: a last line without a newline still counts.
    pub fn finish(&mut self) {
        let last = std::mem::take(&mut self.partial);
        self.line(&last);
    }

    fn line(&mut self, line: &[u8]) {
        let line = line.trim_ascii();
        if line.is_empty() {
            return;
        }
        let Ok(parsed) = serde_json::from_slice::<Line>(line) else {
            return;
        };
        if let Some(err) = parsed.error {
            self.error = Some(match err {
                serde_json::Value::String(s) => s,
                other => other.to_string(),
            });
            return;
        }
        if let Some(m) = parsed.message {
            self.content.push_str(&m.content);
        }
        if parsed.done {
            self.done = true;
            self.prompt_tokens = parsed.prompt_eval_count;
            self.completion_tokens = parsed.eval_count;
        }
    }

    /// The reply ended as a model reply should: a final line and no error.
    pub fn complete(&self) -> bool {
        self.done && self.error.is_none()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const STREAM: &str = concat!(
        "{\"model\":\"m\",\"message\":{\"role\":\"assistant\",\"content\":\"Hel\"},\"done\":false}\n",
        "{\"model\":\"m\",\"message\":{\"role\":\"assistant\",\"content\":\"lo\"},\"done\":false}\n",
        "{\"model\":\"m\",\"message\":{\"role\":\"assistant\",\"content\":\"\"},\"done\":true,",
        "\"done_reason\":\"stop\",\"prompt_eval_count\":12,\"eval_count\":2}\n"
    );

    #[test]
    fn any_chunking_gives_the_same_reply() {
        for size in [1, 2, 7, 64, STREAM.len()] {
            let mut p = ReplyParser::default();
            for chunk in STREAM.as_bytes().chunks(size) {
                p.feed(chunk);
            }
            p.finish();
            assert_eq!(p.content, "Hello", "chunk size {size}");
            assert!(p.complete());
            assert_eq!((p.prompt_tokens, p.completion_tokens), (Some(12), Some(2)));
        }
    }

    #[test]
    fn error_line_marks_the_reply_incomplete() {
        let mut p = ReplyParser::default();
        p.feed(
            b"{\"message\":{\"content\":\"par\"},\"done\":false}\n{\"error\":\"model crashed\"}\n",
        );
        p.finish();
        assert_eq!(p.content, "par");
        assert_eq!(p.error.as_deref(), Some("model crashed"));
        assert!(!p.complete());
    }

    #[test]
    fn cut_stream_is_incomplete() {
        let mut p = ReplyParser::default();
        p.feed(b"{\"message\":{\"content\":\"a\"},\"done\":false}\n{\"message\":{\"con");
        p.finish();
        assert_eq!(p.content, "a");
        assert!(!p.complete());
    }
}
