//! One connection of a hostile upstream: requests one after another on the same socket
//! (the gateway reuses upstream connections), probes answered like a healthy Ollama,
//! model requests answered by playing the current behaviour's [`Script`].

use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::behaviour::{Script, CUT_PAUSE};
use super::http1::{self, Framing, Head};
use super::replies::{self, ModelRequest};
use super::state::{ReceivedRequest, Shared};

/// How much to read at a time.
const READ_SIZE: usize = 16 * 1024;

/// Serves requests until the peer closes, a response ends the connection, or the
/// task is aborted.
pub(crate) async fn serve_connection(stream: TcpStream, shared: Arc<Shared>) {
    // Each line must leave when written, not wait for Nagle: tests time them.
    let _ = stream.set_nodelay(true);
    let mut conn = Conn::new(stream);
    while let Some(request) = conn.next_request().await {
        shared.record(request.received.clone());
        let keep_open = answer(&mut conn, &shared, &request).await;
        if !keep_open || !request.keep_alive {
            break;
        }
    }
    conn.close().await;
}

/// A request as read off the socket.
struct Request {
    received: ReceivedRequest,
    keep_alive: bool,
}

enum ReadError {
    /// The peer closed or reset the connection, possibly mid-request.
    Gone,
    /// Not HTTP/1.1 this upstream can frame: answered 400, then closed.
    Malformed,
}

/// A socket with the bytes read but not yet consumed (the start of the next request).
struct Conn {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl Conn {
    fn new(stream: TcpStream) -> Self {
        Self {
            stream,
            buf: Vec::new(),
        }
    }

    /// The next request; `None` once the connection is over (a malformed request gets
    /// its 400 first).
    async fn next_request(&mut self) -> Option<Request> {
        match self.read_request().await {
            Ok(request) => request,
            Err(ReadError::Gone) => None,
            Err(ReadError::Malformed) => {
                let body = b"400 Bad Request";
                self.write(&response(400, "text/plain; charset=utf-8", body, true))
                    .await;
                None
            }
        }
    }

    async fn read_request(&mut self) -> Result<Option<Request>, ReadError> {
        let Some(head) = self.read_head().await? else {
            return Ok(None);
        };
        let mut start = head.start_line.split_whitespace();
        let (Some(method), Some(target), Some(version)) =
            (start.next(), start.next(), start.next())
        else {
            return Err(ReadError::Malformed);
        };
        let framing = http1::request_framing(&head.headers).ok_or(ReadError::Malformed)?;
        if http1::has_token(&head.headers, "expect", "100-continue") {
            self.write(b"HTTP/1.1 100 Continue\r\n\r\n").await;
        }
        let body = self.read_body(framing).await?;
        let keep_alive = keeps_alive(version, &head.headers);
        let received = ReceivedRequest {
            method: method.to_string(),
            path: target.to_string(),
            headers: head.headers,
            body,
        };
        Ok(Some(Request {
            received,
            keep_alive,
        }))
    }

    /// The next head; `None` when the peer closed cleanly between requests.
    async fn read_head(&mut self) -> Result<Option<Head>, ReadError> {
        loop {
            // RFC 9112 §2.2: ignore empty lines before a request line.
            while self.buf.starts_with(b"\r\n") {
                self.buf.drain(..2);
            }
            if let Some(len) = http1::head_end(&self.buf) {
                let head = http1::parse_head(&self.buf[..len]);
                self.buf.drain(..len);
                return Ok(Some(head));
            }
            if self.buf.len() > http1::MAX_HEAD {
                return Err(ReadError::Malformed);
            }
            match self.fill().await {
                Ok(0) if self.buf.is_empty() => return Ok(None),
                Ok(0) | Err(_) => return Err(ReadError::Gone),
                Ok(_) => {}
            }
        }
    }

    async fn read_body(&mut self, framing: Framing) -> Result<Vec<u8>, ReadError> {
        match framing {
            Framing::Length(n) => self.read_exact(n).await,
            Framing::Chunked => self.read_chunked().await,
            Framing::Empty | Framing::UntilClose => Ok(Vec::new()),
        }
    }

    async fn read_exact(&mut self, n: usize) -> Result<Vec<u8>, ReadError> {
        while self.buf.len() < n {
            self.fill_or_gone().await?;
        }
        Ok(self.buf.drain(..n).collect())
    }

    async fn read_chunked(&mut self) -> Result<Vec<u8>, ReadError> {
        let mut dechunker = http1::Dechunker::default();
        loop {
            dechunker.advance(&self.buf);
            if dechunker.is_done() {
                self.buf.drain(..dechunker.consumed());
                return Ok(dechunker.into_body());
            }
            if dechunker.is_malformed() {
                return Err(ReadError::Malformed);
            }
            self.fill_or_gone().await?;
        }
    }

    async fn fill_or_gone(&mut self) -> Result<(), ReadError> {
        match self.fill().await {
            Ok(0) | Err(_) => Err(ReadError::Gone),
            Ok(_) => Ok(()),
        }
    }

    /// Reads what is available into the buffer; `Ok(0)` when the peer closed.
    /// Cancel-safe: a `select!` that drops it loses no bytes.
    async fn fill(&mut self) -> std::io::Result<usize> {
        self.buf.reserve(READ_SIZE);
        self.stream.read_buf(&mut self.buf).await
    }

    /// Writes everything; false when the peer is gone.
    async fn write(&mut self, bytes: &[u8]) -> bool {
        self.stream.write_all(bytes).await.is_ok()
    }

    /// Sleeps `delay` while watching the socket, so a client that goes away is noticed
    /// within one delay rather than at the next write; false if it went away. Bytes
    /// that arrive meanwhile (a pipelined request) are kept.
    async fn wait_watching(&mut self, delay: Duration) -> bool {
        let sleep = tokio::time::sleep(delay);
        tokio::pin!(sleep);
        loop {
            tokio::select! {
                _ = &mut sleep => return true,
                read = self.fill() => if !matches!(read, Ok(n) if n > 0) {
                    return false;
                },
            }
        }
    }

    /// Keeps the connection open without answering until the peer closes it.
    async fn hold(&mut self) {
        while matches!(self.fill().await, Ok(n) if n > 0) {}
    }

    /// Sends FIN, so bytes already written reach the peer before it sees the end.
    async fn close(&mut self) {
        let _ = self.stream.shutdown().await;
    }
}

/// HTTP/1.1 keeps the connection unless told `close`; HTTP/1.0 only with `keep-alive`.
fn keeps_alive(version: &str, headers: &[(String, String)]) -> bool {
    if version.eq_ignore_ascii_case("HTTP/1.0") {
        http1::has_token(headers, "connection", "keep-alive")
    } else {
        !http1::has_token(headers, "connection", "close")
    }
}

/// Answers one request; false when the connection must end after it.
async fn answer(conn: &mut Conn, shared: &Arc<Shared>, request: &Request) -> bool {
    let close = !request.keep_alive;
    match request.received.method.as_str() {
        "POST" => model(conn, shared, request).await,
        "GET" | "HEAD" => probe(conn, shared, request).await,
        _ => {
            let bytes = response(
                405,
                "text/plain; charset=utf-8",
                b"405 method not allowed",
                close,
            );
            conn.write(&bytes).await
        }
    }
}

/// A health probe or catalog request: healthy whatever the behaviour, unless probes were
/// set to fail.
async fn probe(conn: &mut Conn, shared: &Shared, request: &Request) -> bool {
    let close = !request.keep_alive;
    let found = replies::probe(request.received.route(), &shared.models());
    let (status, content_type, body) = match found {
        _ if shared.probes_failing() => (
            500,
            "application/json; charset=utf-8",
            r#"{"error":"unhealthy"}"#.to_string(),
        ),
        Some((content_type, body)) => (200, content_type, body),
        None => (
            404,
            "text/plain; charset=utf-8",
            "404 page not found".to_string(),
        ),
    };
    let mut bytes = response(status, content_type, body.as_bytes(), close);
    if request.received.method == "HEAD" {
        bytes.truncate(bytes.len() - body.len());
    }
    conn.write(&bytes).await
}

/// A model request: counted, in flight until this returns, answered by the behaviour.
async fn model(conn: &mut Conn, shared: &Arc<Shared>, request: &Request) -> bool {
    shared.count_model_request();
    let _in_flight = shared.in_flight.enter();
    let default_model = shared.models().first().cloned().unwrap_or_default();
    let received = &request.received;
    let model_request = ModelRequest::parse(received.route(), &received.body, &default_model);
    let close = !request.keep_alive;
    match shared.behaviour().script(&model_request) {
        Script::Stream {
            content_type,
            lines,
            delay,
            cut,
        } => stream(conn, content_type, &lines, delay, cut, close).await,
        Script::Whole {
            status,
            body,
            delay,
            cut,
        } => whole(conn, status, &body, delay, cut, close).await,
        Script::Raw(bytes) => {
            conn.write(&bytes).await;
            false
        }
        Script::Hold => {
            conn.hold().await;
            false
        }
    }
}

/// A chunked 200, one chunk per line; with `cut`, that partial chunk, a pause, and
/// no terminator.
async fn stream(
    conn: &mut Conn,
    content_type: &str,
    lines: &[Vec<u8>],
    delay: Duration,
    cut: Option<Vec<u8>>,
    close: bool,
) -> bool {
    let fields = [
        ("Content-Type", content_type.to_string()),
        ("Transfer-Encoding", "chunked".to_string()),
    ];
    if !conn.write(&head(200, &fields, close)).await {
        return false;
    }
    for (i, line) in lines.iter().enumerate() {
        if i > 0 && !delay.is_zero() && !conn.wait_watching(delay).await {
            return false;
        }
        if !conn.write(&http1::chunk(line)).await {
            return false;
        }
    }
    let Some(half) = cut else {
        return conn.write(http1::LAST_CHUNK).await && !close;
    };
    conn.write(&http1::chunk(&half)).await;
    conn.wait_watching(CUT_PAUSE).await;
    false
}

/// A JSON body with `Content-Length` after `delay`; with `cut`, only its first half.
async fn whole(
    conn: &mut Conn,
    status: u16,
    body: &[u8],
    delay: Duration,
    cut: bool,
    close: bool,
) -> bool {
    if !delay.is_zero() && !conn.wait_watching(delay).await {
        return false;
    }
    let mut bytes = response(status, replies::json_content_type(), body, close);
    if !cut {
        return conn.write(&bytes).await && !close;
    }
    bytes.truncate(bytes.len() - (body.len() - body.len() / 2));
    conn.write(&bytes).await;
    conn.wait_watching(CUT_PAUSE).await;
    false
}

/// A complete response with `Content-Length`.
fn response(status: u16, content_type: &str, body: &[u8], close: bool) -> Vec<u8> {
    let fields = [
        ("Content-Type", content_type.to_string()),
        ("Content-Length", body.len().to_string()),
    ];
    let mut bytes = head(status, &fields, close);
    bytes.extend_from_slice(body);
    bytes
}

/// A status line and header fields; `close` adds `Connection: close`.
fn head(status: u16, fields: &[(&str, String)], close: bool) -> Vec<u8> {
    let mut text = format!("HTTP/1.1 {status} {}\r\n", reason(status));
    for (name, value) in fields {
        text.push_str(&format!("{name}: {value}\r\n"));
    }
    if close {
        text.push_str("Connection: close\r\n");
    }
    text.push_str("\r\n");
    text.into_bytes()
}

fn reason(status: u16) -> &'static str {
    axum::http::StatusCode::from_u16(status)
        .ok()
        .and_then(|s| s.canonical_reason())
        .unwrap_or("Unknown")
}
