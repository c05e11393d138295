//! Ollama's native streams (`/api/chat`, `/api/generate`): one JSON object per line, the last
//! with `done: true` and the counts.

use super::doc::Doc;
use super::lines::LineBuffer;
use super::Usage;

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
    // One final count per response: whatever follows the first `done` line (a second one
    // from a broken upstream) is not charged again.
    if usage.finished || line.iter().all(u8::is_ascii_whitespace) {
        return;
    }
    // Fast path for the many token lines: a `"done"` key that is not `true` and no `"error"`
    // key means one more chunk, without parsing the line. (Inside JSON strings quotes are
    // escaped, so these byte patterns only match keys.)
    if !contains(line, b"\"error\"") && done_is_false(line) {
        usage.chunks += 1;
        return;
    }
    let Some(doc) = Doc::parse(line) else {
        return;
    };
    if let Some(msg) = doc.error_message() {
        usage.stream_error = Some(msg);
        return;
    }
    if doc.is_done() {
        usage.finished = true;
        doc.read_counts(usage);
    } else {
        usage.chunks += 1;
    }
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// True when the line has a `"done"` key whose value is `false`.
fn done_is_false(line: &[u8]) -> bool {
    let key = b"\"done\"";
    let Some(pos) = line.windows(key.len()).position(|w| w == key) else {
        return false;
    };
    let rest = &line[pos + key.len()..];
    let rest = trim_start(rest);
    let Some(rest) = rest.strip_prefix(b":") else {
        return false;
    };
    trim_start(rest).starts_with(b"false")
}

fn trim_start(mut s: &[u8]) -> &[u8] {
    while let [first, rest @ ..] = s {
        if !first.is_ascii_whitespace() {
            break;
        }
        s = rest;
    }
    s
}
