//! Just enough HTTP/1.1 framing, by hand, for both ends of a hostile exchange.
//!
//! hyper would reject or repair exactly the messages these tests send and observe, so
//! the hostile upstream and the raw client frame messages themselves: a head up to the
//! blank line, then a body by `Content-Length`, by chunks, or until the peer closes.
//! Everything here works on a buffer that grows as bytes arrive, so a reader can ask
//! "complete yet?" after every read and still see a message that was cut short.

/// Largest head either end accepts before giving up on the peer.
pub(crate) const MAX_HEAD: usize = 1 << 20;

/// Start line and header fields, in arrival order with their original case and
/// duplicates kept: smuggling tests care about exactly what was sent.
#[derive(Debug, Clone, Default)]
pub(crate) struct Head {
    pub start_line: String,
    pub headers: Vec<(String, String)>,
}

/// Length of the head at the start of `buf`, blank line included, once it has arrived.
pub(crate) fn head_end(buf: &[u8]) -> Option<usize> {
    buf.windows(4).position(|w| w == b"\r\n\r\n").map(|p| p + 4)
}

/// Parses a head without judging it: lines without a colon become a name with an
/// empty value, so a test can still see them.
pub(crate) fn parse_head(bytes: &[u8]) -> Head {
    let text = String::from_utf8_lossy(bytes);
    let mut lines = text.split("\r\n");
    let start_line = lines.next().unwrap_or_default().to_string();
    let headers = lines
        .filter(|line| !line.is_empty())
        .map(|line| match line.split_once(':') {
            Some((name, value)) => (name.to_string(), value.trim().to_string()),
            None => (line.to_string(), String::new()),
        })
        .collect();
    Head {
        start_line,
        headers,
    }
}

/// The first value of a header, by case-insensitive name.
pub(crate) fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

/// Whether any value of `name` lists `token` (comma-separated, case-insensitive), as
/// `Connection: keep-alive, close` or `Transfer-Encoding: gzip, chunked` do.
pub(crate) fn has_token(headers: &[(String, String)], name: &str, token: &str) -> bool {
    headers
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case(name))
        .flat_map(|(_, v)| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

/// How a message body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Framing {
    Empty,
    Length(usize),
    Chunked,
    UntilClose,
}

/// A request's framing: chunked wins over `Content-Length` (RFC 9112 §6.3); `None` when
/// `Content-Length` is not a number, which the upstream answers with a 400.
pub(crate) fn request_framing(headers: &[(String, String)]) -> Option<Framing> {
    if has_token(headers, "transfer-encoding", "chunked") {
        return Some(Framing::Chunked);
    }
    match header(headers, "content-length") {
        Some(value) => value.trim().parse().ok().map(Framing::Length),
        None => Some(Framing::Empty),
    }
}

/// A response's framing, which also depends on the request method and the status.
pub(crate) fn response_framing(
    status: u16,
    head_request: bool,
    headers: &[(String, String)],
) -> Framing {
    if head_request || status == 204 || status == 304 || (100..200).contains(&status) {
        return Framing::Empty;
    }
    if has_token(headers, "transfer-encoding", "chunked") {
        return Framing::Chunked;
    }
    match header(headers, "content-length").and_then(|v| v.trim().parse().ok()) {
        Some(n) => Framing::Length(n),
        None => Framing::UntilClose,
    }
}

/// Frames `data` as one chunk of a chunked body.
pub(crate) fn chunk(data: &[u8]) -> Vec<u8> {
    let mut out = format!("{:x}\r\n", data.len()).into_bytes();
    out.extend_from_slice(data);
    out.extend_from_slice(b"\r\n");
    out
}

/// The last chunk and the empty trailer section that end a chunked body.
pub(crate) const LAST_CHUNK: &[u8] = b"0\r\n\r\n";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
enum ChunkState {
    #[default]
    Size,
    Data(usize),
    DataEnd,
    Trailer,
    Done,
    Malformed,
}

/// Decodes a chunked body incrementally, keeping the data of a chunk cut short.
///
/// Feed it the bytes after the head each time more arrive (the same, growing slice);
/// it resumes where it stopped.
#[derive(Debug, Default)]
pub(crate) struct Dechunker {
    state: ChunkState,
    pos: usize,
    body: Vec<u8>,
}

impl Dechunker {
    pub fn advance(&mut self, raw: &[u8]) {
        while self.step(raw) {}
    }

    /// The last chunk and trailers have arrived.
    pub fn is_done(&self) -> bool {
        self.state == ChunkState::Done
    }

    /// The framing broke (a size that is not hex, data not followed by CRLF): nothing
    /// after that point can be decoded.
    pub fn is_malformed(&self) -> bool {
        self.state == ChunkState::Malformed
    }

    /// Bytes of the encoded body consumed so far.
    pub fn consumed(&self) -> usize {
        self.pos
    }

    pub fn into_body(self) -> Vec<u8> {
        self.body
    }

    /// Takes one step; false when it needs more bytes or has finished.
    fn step(&mut self, raw: &[u8]) -> bool {
        match self.state {
            ChunkState::Size => self.size_line(raw),
            ChunkState::Data(left) => self.data(raw, left),
            ChunkState::DataEnd => self.data_end(raw),
            ChunkState::Trailer => self.trailer_line(raw),
            ChunkState::Done | ChunkState::Malformed => false,
        }
    }

    fn size_line(&mut self, raw: &[u8]) -> bool {
        let Some(line) = self.take_line(raw) else {
            return false;
        };
        self.state = match chunk_size(line) {
            Some(0) => ChunkState::Trailer,
            Some(n) => ChunkState::Data(n),
            None => ChunkState::Malformed,
        };
        true
    }

    fn data(&mut self, raw: &[u8], left: usize) -> bool {
        let available = raw.len().saturating_sub(self.pos);
        if available == 0 {
            return false;
        }
        let take = left.min(available);
        self.body.extend_from_slice(&raw[self.pos..self.pos + take]);
        self.pos += take;
        self.state = if take == left {
            ChunkState::DataEnd
        } else {
            ChunkState::Data(left - take)
        };
        true
    }

    fn data_end(&mut self, raw: &[u8]) -> bool {
        let Some(crlf) = raw.get(self.pos..self.pos + 2) else {
            return false;
        };
        self.state = if crlf == b"\r\n" {
            self.pos += 2;
            ChunkState::Size
        } else {
            ChunkState::Malformed
        };
        true
    }

    fn trailer_line(&mut self, raw: &[u8]) -> bool {
        let Some(line) = self.take_line(raw) else {
            return false;
        };
        if line.is_empty() {
            self.state = ChunkState::Done;
        }
        true
    }

    /// The next CRLF-terminated line (without the CRLF), consuming it.
    fn take_line<'a>(&mut self, raw: &'a [u8]) -> Option<&'a [u8]> {
        let rest = raw.get(self.pos..)?;
        let end = rest.windows(2).position(|w| w == b"\r\n")?;
        self.pos += end + 2;
        Some(&rest[..end])
    }
}

/// A chunk-size line's size, chunk extensions ignored.
fn chunk_size(line: &[u8]) -> Option<usize> {
    let text = std::str::from_utf8(line).ok()?;
    let hex = text.split(';').next()?.trim();
    usize::from_str_radix(hex, 16).ok()
}

/// Status, headers and framing of a response head.
#[derive(Debug, Clone)]
struct ResponseHead {
    status: u16,
    headers: Vec<(String, String)>,
    framing: Framing,
    /// Where the body starts in the received bytes.
    body_start: usize,
}

/// Follows one response as its bytes arrive, skipping interim `1xx` heads (but not
/// `101 Switching Protocols`, which ends the HTTP exchange).
#[derive(Debug)]
pub(crate) struct ResponseParser {
    head_request: bool,
    head: Option<ResponseHead>,
    /// Start of the head not yet parsed (after any interim responses).
    offset: usize,
    dechunker: Dechunker,
}

/// What a response parser made of the bytes it was given.
#[derive(Debug, Clone, Default)]
pub(crate) struct ParsedResponse {
    /// 0 when no status line arrived.
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    pub complete: bool,
    /// Bytes that belong to this response; the rest is the start of the next one.
    pub consumed: usize,
}

impl ResponseParser {
    /// `head_request`: the request was a HEAD, whose response has no body whatever its
    /// headers say.
    pub fn new(head_request: bool) -> Self {
        Self {
            head_request,
            head: None,
            offset: 0,
            dechunker: Dechunker::default(),
        }
    }

    /// Looks at everything received so far; true once the response is complete.
    /// A body delimited by the connection closing is never complete here.
    pub fn advance(&mut self, raw: &[u8]) -> bool {
        let Some(head) = self.head_or_parse(raw) else {
            return false;
        };
        let (framing, start) = (head.framing, head.body_start);
        match framing {
            Framing::Empty => true,
            Framing::Length(n) => raw.len().saturating_sub(start) >= n,
            Framing::Chunked => {
                self.dechunker.advance(&raw[start..]);
                self.dechunker.is_done() || self.dechunker.is_malformed()
            }
            Framing::UntilClose => false,
        }
    }

    /// The response as received; `closed` says the server closed the connection,
    /// which completes a body delimited by close.
    pub fn finish(mut self, raw: &[u8], closed: bool) -> ParsedResponse {
        let complete = self.advance(raw);
        let Some(head) = self.head.take() else {
            return ParsedResponse::default();
        };
        let start = head.body_start;
        let (body, end) = match head.framing {
            Framing::Empty => (Vec::new(), start),
            Framing::Length(n) => {
                let end = raw.len().min(start.saturating_add(n));
                (raw[start..end].to_vec(), end)
            }
            Framing::Chunked => {
                let end = start + self.dechunker.consumed();
                (self.dechunker.into_body(), end)
            }
            Framing::UntilClose => (raw[start..].to_vec(), raw.len()),
        };
        ParsedResponse {
            status: head.status,
            headers: head.headers,
            body,
            complete: complete || (closed && head.framing == Framing::UntilClose),
            consumed: end,
        }
    }

    fn head_or_parse(&mut self, raw: &[u8]) -> Option<&ResponseHead> {
        while self.head.is_none() {
            let rest = raw.get(self.offset..)?;
            let len = head_end(rest)?;
            let head = parse_head(&rest[..len]);
            let status = status_code(&head.start_line);
            if (100..200).contains(&status) && status != 101 {
                self.offset += len;
                continue;
            }
            let framing = response_framing(status, self.head_request, &head.headers);
            self.head = Some(ResponseHead {
                status,
                headers: head.headers,
                framing,
                body_start: self.offset + len,
            });
        }
        self.head.as_ref()
    }
}

/// The status code of a status line, 0 when there is none.
fn status_code(start_line: &str) -> u16 {
    start_line
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or(0)
}
