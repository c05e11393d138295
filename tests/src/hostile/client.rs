//! Clients that misbehave on purpose, for hostile-client tests against the gateway.
//!
//! reqwest will not send a malformed request, trickle a head byte by byte, or report
//! half a response; these helpers write bytes exactly as given on a plain TCP socket
//! and read whatever comes back, stopping when the response is complete (by
//! `Content-Length` or chunked framing), when the server closes, or at a deadline, so
//! a test can assert on each of those outcomes. The reqwest helpers at the end play a
//! well-formed client that cancels mid-stream.

use std::time::Duration;

use futures::StreamExt;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{timeout_at, Instant};

use super::http1::{self, ResponseParser};

/// How much to read at a time.
const READ_SIZE: usize = 16 * 1024;

/// What came back for one request, however it ended.
#[derive(Debug, Clone, Default)]
pub struct RawResponse {
    /// 0 when no status line arrived.
    pub status: u16,
    /// In arrival order, original case, duplicates kept.
    pub headers: Vec<(String, String)>,
    /// The body with any chunked framing removed, as much of it as arrived.
    pub body: Vec<u8>,
    /// The server closed (or reset) the connection before the response was complete.
    pub closed: bool,
    /// The response's framing said it had ended (or the server closed a body delimited
    /// by close).
    pub complete: bool,
    /// Every byte received for this response, framing included: for asserting what is
    /// missing, such as a chunked terminator.
    pub raw: Vec<u8>,
}

impl RawResponse {
    /// The first value of a header, by case-insensitive name.
    pub fn header(&self, name: &str) -> Option<&str> {
        http1::header(&self.headers, name)
    }

    /// The body as JSON.
    ///
    /// # Panics
    /// When the body is not JSON, showing it: the test expected JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("response body is not JSON ({e}): {}", self.text()))
    }

    /// The body as text, invalid UTF-8 replaced.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// Neither complete nor closed: the deadline passed while the server was silent
    /// or still sending.
    pub fn timed_out(&self) -> bool {
        !self.complete && !self.closed
    }
}

/// One client connection, kept open across exchanges: for pipelining, smuggling and
/// keep-alive tests where what matters is what the next request on the same socket sees.
#[derive(Debug)]
pub struct RawConnection {
    stream: TcpStream,
    /// Bytes read past the end of the last response: the start of the next one.
    leftover: Vec<u8>,
}

impl RawConnection {
    /// Connects to `addr` (`127.0.0.1:PORT`, an `http://` prefix is accepted).
    ///
    /// # Panics
    /// When the connection is refused: the test has no server to talk to.
    pub async fn connect(addr: &str) -> Self {
        let addr = host_port(addr);
        let stream = TcpStream::connect(addr)
            .await
            .unwrap_or_else(|e| panic!("cannot connect to {addr}: {e}"));
        // Trickled bytes must leave one by one, not be coalesced by Nagle.
        let _ = stream.set_nodelay(true);
        Self {
            stream,
            leftover: Vec::new(),
        }
    }

    /// Writes `request` as given and reads one response (see [`raw_exchange`]).
    pub async fn exchange(&mut self, request: &[u8], timeout: Duration) -> RawResponse {
        self.send(request).await;
        self.read_response(is_head(request), timeout).await
    }

    /// Writes bytes as given; false when the server already closed. A failed write is
    /// not fatal: a server may answer (431, 400) and close before reading everything.
    pub async fn send(&mut self, bytes: &[u8]) -> bool {
        self.stream.write_all(bytes).await.is_ok()
    }

    /// Reads the next response; `head_request` says it answers a HEAD (no body).
    pub async fn read_response(&mut self, head_request: bool, timeout: Duration) -> RawResponse {
        let deadline = Instant::now() + timeout;
        let mut reception = Reception::new(std::mem::take(&mut self.leftover), head_request);
        reception.receive(&mut self.stream, deadline).await;
        self.finish(reception)
    }

    /// Writes `bytes` one at a time, `per_byte_delay` apart, stopping early if the
    /// server answers or closes, then reads the response until `timeout` (counted from
    /// the first byte) passes.
    pub async fn send_slowly(
        &mut self,
        bytes: &[u8],
        per_byte_delay: Duration,
        timeout: Duration,
    ) -> SlowSend {
        let started = Instant::now();
        let deadline = started + timeout;
        let mut reception = Reception::new(std::mem::take(&mut self.leftover), is_head(bytes));
        let mut sent = 0;
        let trickle = self.trickle(bytes, per_byte_delay, &mut reception, &mut sent);
        let _ = timeout_at(deadline, trickle).await;
        reception.receive(&mut self.stream, deadline).await;
        SlowSend {
            sent,
            response: self.finish(reception),
            elapsed: started.elapsed(),
        }
    }

    async fn trickle(
        &mut self,
        bytes: &[u8],
        per_byte_delay: Duration,
        reception: &mut Reception,
        sent: &mut usize,
    ) {
        let (mut reader, mut writer) = self.stream.split();
        for byte in bytes {
            if reception.is_over() || writer.write_all(&[*byte]).await.is_err() {
                return;
            }
            *sent += 1;
            let pause = tokio::time::sleep(per_byte_delay);
            tokio::pin!(pause);
            while !reception.is_over() {
                tokio::select! {
                    _ = &mut pause => break,
                    _ = reception.read_once(&mut reader) => {}
                }
            }
        }
    }

    fn finish(&mut self, reception: Reception) -> RawResponse {
        let (response, leftover) = reception.finish();
        self.leftover = leftover;
        response
    }
}

/// A response being received: the bytes so far and what the parser made of them.
struct Reception {
    raw: Vec<u8>,
    parser: ResponseParser,
    closed: bool,
    complete: bool,
}

impl Reception {
    fn new(raw: Vec<u8>, head_request: bool) -> Self {
        let mut parser = ResponseParser::new(head_request);
        let complete = parser.advance(&raw);
        Self {
            raw,
            parser,
            closed: false,
            complete,
        }
    }

    fn is_over(&self) -> bool {
        self.complete || self.closed
    }

    /// Reads until the response is over or the deadline passes.
    async fn receive<R: AsyncRead + Unpin>(&mut self, reader: &mut R, deadline: Instant) {
        while !self.is_over() {
            if timeout_at(deadline, self.read_once(reader)).await.is_err() {
                return;
            }
        }
    }

    /// One read. Cancel-safe, so it can race a timer in `select!`.
    async fn read_once<R: AsyncRead + Unpin>(&mut self, reader: &mut R) {
        self.raw.reserve(READ_SIZE);
        match reader.read_buf(&mut self.raw).await {
            Ok(0) | Err(_) => self.closed = true,
            Ok(_) => self.complete = self.parser.advance(&self.raw),
        }
    }

    /// The response, and the bytes after it.
    fn finish(mut self) -> (RawResponse, Vec<u8>) {
        let parsed = self.parser.finish(&self.raw, self.closed);
        let leftover = if parsed.complete {
            self.raw.split_off(parsed.consumed.min(self.raw.len()))
        } else {
            Vec::new()
        };
        let response = RawResponse {
            status: parsed.status,
            headers: parsed.headers,
            body: parsed.body,
            closed: self.closed && !parsed.complete,
            complete: parsed.complete,
            raw: self.raw,
        };
        (response, leftover)
    }
}

/// Opens a connection to `addr`, writes `request` exactly as given, and reads one
/// response until it is complete, the server closes, or `timeout` passes; whichever
/// happened shows in the [`RawResponse`].
///
/// # Panics
/// When the connection is refused.
pub async fn raw_exchange(addr: &str, request: &[u8], timeout: Duration) -> RawResponse {
    RawConnection::connect(addr)
        .await
        .exchange(request, timeout)
        .await
}

/// How a slow send went: a slowloris test checks the server cut it off (`sent` short
/// of the request, a 408 or a close) well before the request could finish.
#[derive(Debug, Clone)]
pub struct SlowSend {
    /// Bytes written before the server answered or closed, or the deadline passed.
    pub sent: usize,
    pub response: RawResponse,
    /// From the first byte to the end of the response (or the deadline).
    pub elapsed: Duration,
}

/// Connects and trickles `bytes` one at a time (see [`RawConnection::send_slowly`]):
/// a client that holds a connection by sending its head as slowly as it can.
///
/// # Panics
/// When the connection is refused.
pub async fn send_slowly(
    addr: &str,
    bytes: &[u8],
    per_byte_delay: Duration,
    timeout: Duration,
) -> SlowSend {
    RawConnection::connect(addr)
        .await
        .send_slowly(bytes, per_byte_delay, timeout)
        .await
}

/// A `POST path HTTP/1.1` with `Host: localhost` and `Content-Type: application/json`
/// (each left out when `extra_headers` has its own), a `Content-Length` for `body`,
/// then `extra_headers` as given: repeat or contradict a header there (a second
/// `Content-Length`, a `Transfer-Encoding`) to build a smuggling attempt.
pub fn chat_request(path: &str, body: impl AsRef<[u8]>, extra_headers: &[(&str, &str)]) -> Vec<u8> {
    let body = body.as_ref();
    let has = |name: &str| {
        extra_headers
            .iter()
            .any(|(n, _)| n.eq_ignore_ascii_case(name))
    };
    let mut head = format!("POST {path} HTTP/1.1\r\n");
    if !has("host") {
        head.push_str("Host: localhost\r\n");
    }
    if !has("content-type") {
        head.push_str("Content-Type: application/json\r\n");
    }
    head.push_str(&format!("Content-Length: {}\r\n", body.len()));
    for (name, value) in extra_headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    let mut bytes = head.into_bytes();
    bytes.extend_from_slice(body);
    bytes
}

/// POSTs `body` as JSON to `url`, reads `n_lines` non-empty lines of the streamed
/// answer (NDJSON lines or SSE `data:` lines), then drops the response: a client that
/// cancels mid-stream. Returns the lines read (fewer if the stream ended first).
///
/// # Panics
/// When the request cannot be sent.
pub async fn read_stream_lines_then_drop(
    url: &str,
    body: &serde_json::Value,
    n_lines: usize,
) -> Vec<String> {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap_or_else(|e| panic!("reqwest client: {e}"));
    read_lines_then_drop(client.post(url).json(body), n_lines).await
}

/// [`read_stream_lines_then_drop`] for a request the test built itself (with a bearer
/// token, another method, other headers).
///
/// # Panics
/// When the request cannot be sent.
pub async fn read_lines_then_drop(request: reqwest::RequestBuilder, n_lines: usize) -> Vec<String> {
    let response = request
        .send()
        .await
        .unwrap_or_else(|e| panic!("streaming request failed: {e}"));
    let mut body = response.bytes_stream();
    let mut lines = Vec::new();
    let mut partial = Vec::new();
    while lines.len() < n_lines {
        let Some(Ok(chunk)) = body.next().await else {
            break;
        };
        partial.extend_from_slice(&chunk);
        take_lines(&mut partial, &mut lines);
    }
    lines.truncate(n_lines);
    // Dropping an unfinished body closes its connection: the cancellation under test.
    drop(body);
    lines
}

/// Moves each complete, non-empty line out of `partial`.
fn take_lines(partial: &mut Vec<u8>, lines: &mut Vec<String>) {
    while let Some(end) = partial.iter().position(|b| *b == b'\n') {
        let line: Vec<u8> = partial.drain(..=end).collect();
        let line = String::from_utf8_lossy(&line).trim().to_string();
        if !line.is_empty() {
            lines.push(line);
        }
    }
}

fn is_head(request: &[u8]) -> bool {
    request.starts_with(b"HEAD ")
}

fn host_port(addr: &str) -> &str {
    let addr = addr.strip_prefix("http://").unwrap_or(addr);
    addr.trim_end_matches('/')
}
