//! Removes the usage-only chunk (`"choices": []` with `usage`) from an OpenAI stream, when the
//! gateway asked for usage on the client's behalf: the client receives exactly the stream it
//! asked for. Only whole events are passed on, so at most one partial event is held.

use bytes::{Bytes, BytesMut};

#[derive(Debug, Default)]
pub struct UsageStripper {
    partial: BytesMut,
}

impl UsageStripper {
    /// The bytes to send on for this chunk.
    pub fn push(&mut self, chunk: &[u8]) -> Bytes {
        self.partial.extend_from_slice(chunk);
        let mut out = BytesMut::new();
        while let Some(end) = find_event_end(&self.partial) {
            let event = self.partial.split_to(end);
            if !is_usage_only(&event) {
                out.extend_from_slice(&event);
            }
        }
        out.freeze()
    }

    /// What is left at the end of the stream.
    pub fn finish(&mut self) -> Bytes {
        std::mem::take(&mut self.partial).freeze()
    }
}

/// The end (exclusive) of the first complete event: after its blank line.
fn find_event_end(buf: &[u8]) -> Option<usize> {
    let lf = buf.windows(2).position(|w| w == b"\n\n").map(|p| p + 2);
    let crlf = buf.windows(4).position(|w| w == b"\r\n\r\n").map(|p| p + 4);
    match (lf, crlf) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

fn is_usage_only(event: &[u8]) -> bool {
    let Some(start) = event.windows(5).position(|w| w == b"data:") else {
        return false;
    };
    let data = event[start + 5..].trim_ascii();
    super::doc::Doc::parse(data).is_some_and(|doc| doc.is_usage_only())
}

#[cfg(test)]
mod tests {
    use super::*;

    const STREAM: &str = concat!(
        "data: {\"choices\":[{\"delta\":{\"content\":\"Hi\"}}]}\n\n",
        "data: {\"choices\":[],\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":1}}\n\n",
        "data: [DONE]\n\n",
    );

    #[test]
    fn drops_only_the_usage_chunk_at_any_split() {
        let want = "data: {\"choices\":[{\"delta\":{\"content\":\"Hi\"}}]}\n\ndata: [DONE]\n\n";
        for split in 0..STREAM.len() {
            let mut s = UsageStripper::default();
            let mut out = s.push(&STREAM.as_bytes()[..split]).to_vec();
            out.extend_from_slice(&s.push(&STREAM.as_bytes()[split..]));
            out.extend_from_slice(&s.finish());
            assert_eq!(String::from_utf8(out).expect("utf8"), want, "split {split}");
        }
    }
}
