//! Only whole lines (NDJSON) or whole events (SSE) reach the client.
//!
//! When an instance dies inside a chunk, the client must not be left holding half a line:
//! its parser would choke on it before it ever read the gateway's error line. So the
//! unfinished tail of each chunk is held back until the rest of its line (or event) arrives,
//! and dropped if the stream fails instead. Chunks that end on a boundary (nearly all of
//! Ollama's) pass through without a copy. A line longer than [`MAX_HELD`] is passed on as it
//! comes rather than held, so a hostile instance cannot make the gateway buffer without
//! limit; should the stream then fail mid-line, [`FrameGate::terminator`] ends that line
//! first.

use bytes::{Bytes, BytesMut};

use super::UsageParser;

/// Most bytes of an unfinished line or event held back.
pub const MAX_HELD: usize = 1024 * 1024;

#[derive(Debug)]
pub struct FrameGate {
    held: BytesMut,
    /// SSE events end with a blank line; NDJSON lines with a newline.
    sse: bool,
    /// What was sent so far ends on a line (or event) boundary.
    at_boundary: bool,
}

impl FrameGate {
    /// A gate for streams whose format has lines or events (NDJSON, SSE).
    pub fn for_parser(parser: &UsageParser) -> Option<Self> {
        let sse = match parser {
            UsageParser::Ndjson(_) => false,
            UsageParser::Sse(_) => true,
            UsageParser::Json(_) => return None,
        };
        Some(Self {
            held: BytesMut::new(),
            sse,
            at_boundary: true,
        })
    }

    /// The part of what arrived so far that may be sent now.
    pub fn push(&mut self, chunk: Bytes) -> Bytes {
        if self.held.is_empty() {
            let end = self.last_boundary(&chunk);
            if end == chunk.len() {
                if end > 0 {
                    self.at_boundary = true;
                }
                return chunk;
            }
        }
        self.held.extend_from_slice(&chunk);
        let end = self.last_boundary(&self.held);
        if self.held.len() - end > MAX_HELD {
            // An unfinished line too long to hold: pass it on as it comes.
            self.at_boundary = false;
            return self.held.split().freeze();
        }
        if end == 0 {
            return Bytes::new();
        }
        self.at_boundary = true;
        self.held.split_to(end).freeze()
    }

    /// What is left when the stream ended normally (the upstream's own unterminated tail).
    pub fn finish(&mut self) -> Bytes {
        self.held.split().freeze()
    }

    /// What to write before a final error line so that it starts on a line (or event) of
    /// its own: nothing when the client's last byte ended one.
    pub fn terminator(&self) -> &'static [u8] {
        match (self.at_boundary, self.sse) {
            (true, _) => b"",
            (false, false) => b"\n",
            (false, true) => b"\n\n",
        }
    }

    /// The end (exclusive) of the last complete line or event in `buf`; 0 when none.
    fn last_boundary(&self, buf: &[u8]) -> usize {
        if !self.sse {
            return buf.iter().rposition(|b| *b == b'\n').map_or(0, |p| p + 1);
        }
        let lf = buf.windows(2).rposition(|w| w == b"\n\n").map(|p| p + 2);
        let crlf = buf
            .windows(4)
            .rposition(|w| w == b"\r\n\r\n")
            .map(|p| p + 4);
        lf.max(crlf).unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ndjson() -> FrameGate {
        FrameGate::for_parser(
            &UsageParser::for_content_type("application/x-ndjson").expect("ndjson"),
        )
        .expect("gate")
    }

    #[test]
    fn holds_the_unfinished_tail_until_its_line_ends() {
        let mut g = ndjson();
        assert_eq!(
            g.push(Bytes::from_static(b"{\"a\":1}\n{\"b\"")),
            "{\"a\":1}\n"
        );
        assert_eq!(g.terminator(), b"");
        assert_eq!(g.push(Bytes::from_static(b":2}")), "");
        assert_eq!(g.push(Bytes::from_static(b"\n")), "{\"b\":2}\n");
        assert_eq!(g.finish(), "");
    }

    #[test]
    fn sse_waits_for_the_blank_line() {
        let p = UsageParser::for_content_type("text/event-stream").expect("sse");
        let mut g = FrameGate::for_parser(&p).expect("gate");
        assert_eq!(
            g.push(Bytes::from_static(b"data: {}\n\ndata: {\"x\"")),
            "data: {}\n\n"
        );
        assert_eq!(g.push(Bytes::from_static(b":1}\n")), "");
        assert_eq!(g.push(Bytes::from_static(b"\n")), "data: {\"x\":1}\n\n");
    }

    #[test]
    fn a_giant_line_passes_and_is_ended_before_an_error() {
        let mut g = ndjson();
        let giant = Bytes::from(vec![b'x'; MAX_HELD + 1]);
        assert_eq!(g.push(giant).len(), MAX_HELD + 1);
        assert_eq!(g.terminator(), b"\n");
        assert_eq!(g.push(Bytes::from_static(b"x\n")), "x\n");
        assert_eq!(g.terminator(), b"");
    }
}
