//! The first request header of each new connection, read under a deadline and a size limit
//! before Pingora parses it (see the module above for why).

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::BytesMut;
use pingora_core::apps::ServerApp;
use pingora_core::protocols::{Stream, ALPN};
use pingora_core::server::ShutdownWatch;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::Instant;

use super::replay::Replay;
use crate::metrics::Metrics;

/// HTTP/2 with prior knowledge starts with this instead of a request line.
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

#[derive(Debug, Clone, Copy)]
pub struct HeaderLimits {
    pub max_bytes: usize,
    pub timeout: Duration,
}

/// Wraps the HTTP application (Pingora's proxy) of a listening service.
pub struct HeaderGuard<A> {
    pub inner: Arc<A>,
    pub limits: HeaderLimits,
    pub metrics: Arc<Metrics>,
}

/// Why a connection's first header was not handed on.
enum Refusal {
    TooLarge(usize),
    Timeout,
    /// The client closed or reset the connection: nothing to answer.
    Gone,
}

#[async_trait]
impl<A: ServerApp + Send + Sync + 'static> ServerApp for HeaderGuard<A> {
    async fn process_new(
        self: &Arc<Self>,
        mut stream: Stream,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        // HTTP/2 by ALPN has its own header-list limit and framing.
        if matches!(stream.selected_alpn_proto(), Some(ALPN::H2)) {
            return self.inner.process_new(stream, shutdown).await;
        }
        match read_head(&mut stream, self.limits).await {
            Ok(head) => {
                let replay: Stream = Box::new(Replay::new(head, stream));
                self.inner.process_new(replay, shutdown).await
            }
            Err(refusal) => {
                self.refuse(stream, refusal).await;
                None
            }
        }
    }

    async fn cleanup(&self) {
        self.inner.cleanup().await
    }
}

impl<A> HeaderGuard<A> {
    /// Answers 431 or 408 (the project's JSON error; the connection then closes).
    async fn refuse(&self, mut stream: Stream, refusal: Refusal) {
        let (status, reason, kind, message) = match refusal {
            Refusal::Gone => return,
            Refusal::TooLarge(n) => (
                431,
                "Request Header Fields Too Large",
                "header_too_large",
                format!(
                    "the request header block is over {n} bytes, larger than the limit of {}",
                    self.limits.max_bytes
                ),
            ),
            Refusal::Timeout => (
                408,
                "Request Timeout",
                "timeout",
                format!(
                    "the request headers did not arrive within {} ms",
                    self.limits.timeout.as_millis()
                ),
            ),
        };
        self.metrics.client_errors.with_label_values(&[kind]).inc();
        tracing::debug!(status, kind, "connection refused before its first request");
        let code = if status == 431 {
            "request_header_too_large"
        } else {
            "request_timeout"
        };
        let body = json!({ "error": message, "code": code }).to_string();
        let answer = format!(
            "HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        // A client too slow to send is likely too slow to read: do not wait on it for long.
        let write = async {
            stream.write_all(answer.as_bytes()).await?;
            stream.flush().await
        };
        let _ = tokio::time::timeout(Duration::from_secs(1), write).await;
    }
}

/// Reads until the end of the first header block (or the whole HTTP/2 preface).
async fn read_head(stream: &mut Stream, limits: HeaderLimits) -> Result<BytesMut, Refusal> {
    let deadline = Instant::now() + limits.timeout;
    let mut buf = BytesMut::with_capacity(4096);
    loop {
        if head_complete(&buf) {
            return Ok(buf);
        }
        if buf.len() > limits.max_bytes {
            return Err(Refusal::TooLarge(limits.max_bytes));
        }
        match tokio::time::timeout_at(deadline, stream.read_buf(&mut buf)).await {
            Err(_) => return Err(Refusal::Timeout),
            Ok(Ok(0)) | Ok(Err(_)) => return Err(Refusal::Gone),
            Ok(Ok(_)) => {}
        }
    }
}

/// A blank line ends a header block (a bare `\n\n` too: Pingora's parser accepts it); an
/// HTTP/2 preface is complete at its 24 bytes.
fn head_complete(buf: &[u8]) -> bool {
    if H2_PREFACE.starts_with(&buf[..buf.len().min(H2_PREFACE.len())]) && !buf.is_empty() {
        return buf.len() >= H2_PREFACE.len();
    }
    buf.windows(4).any(|w| w == b"\r\n\r\n") || buf.windows(2).any(|w| w == b"\n\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_blocks_and_the_h2_preface_end_where_expected() {
        assert!(head_complete(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"));
        assert!(head_complete(b"GET / HTTP/1.1\nHost: a\n\n"));
        assert!(!head_complete(b"GET / HTTP/1.1\r\nHost: a\r\n"));
        assert!(!head_complete(b"PRI * HTTP/2.0\r\n\r\n"));
        assert!(head_complete(H2_PREFACE));
        assert!(!head_complete(b""));
    }
}
