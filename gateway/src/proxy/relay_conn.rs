//! One HTTP/1.1 exchange with an instance on a connection the relay owns.
//!
//! The per-instance cap must bound what each Ollama really sees. When a client leaves in the
//! middle of a relayed reply, the connection to the instance has to be closed before the
//! instance's slot goes to the next request; a pooled client (reqwest) closes it later, on a
//! task of its own. Here the connection's task is aborted and awaited in [`Conn::close`], so
//! the socket is closed when that returns.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::task::JoinHandle;

/// Why an exchange failed: `connect` failures may be retried on another instance.
#[derive(Debug)]
pub struct SendError {
    pub connect: bool,
    pub message: String,
}

/// The connection of one exchange; close it before freeing the instance's slot.
pub struct Conn {
    task: JoinHandle<()>,
}

impl Conn {
    /// Closes the connection (if the exchange did not end it already) and waits until the
    /// socket is gone.
    pub async fn close(self) {
        self.task.abort();
        let _ = self.task.await;
    }
}

/// What a relayed request needs to be sent.
pub struct Outgoing<'a> {
    pub addr: SocketAddr,
    pub authority: &'a str,
    pub path: &'a str,
    pub headers: Vec<(&'static str, String)>,
    pub body: Bytes,
    pub connect_timeout: Duration,
}

/// Connects, sends the request and returns the response head (the body streams after).
pub async fn send(out: Outgoing<'_>) -> Result<(http::Response<Incoming>, Conn), SendError> {
    let connect_err = |message: String| SendError {
        connect: true,
        message,
    };
    let stream = tokio::time::timeout(out.connect_timeout, TcpStream::connect(out.addr))
        .await
        .map_err(|_| connect_err(format!("connecting to {} timed out", out.addr)))?
        .map_err(|e| connect_err(format!("connecting to {}: {e}", out.addr)))?;
    let _ = stream.set_nodelay(true);
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| connect_err(format!("HTTP handshake with {}: {e}", out.addr)))?;
    let task = tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::debug!(error = %e, "relay connection ended");
        }
    });
    let conn = Conn { task };
    let mut builder = http::Request::post(out.path)
        .header(http::header::HOST, out.authority)
        .header(http::header::CONTENT_TYPE, "application/json");
    for (name, value) in out.headers {
        builder = builder.header(name, value);
    }
    let request = match builder.body(Full::new(out.body)) {
        Ok(r) => r,
        Err(e) => {
            conn.close().await;
            return Err(SendError {
                connect: false,
                message: format!("cannot build the request: {e}"),
            });
        }
    };
    match sender.send_request(request).await {
        Ok(resp) => Ok((resp, conn)),
        Err(e) => {
            conn.close().await;
            Err(SendError {
                connect: false,
                message: format!("the Ollama instance failed: {e}"),
            })
        }
    }
}

/// The next piece of the body: `Ok(None)` at its end; an error when the instance failed or
/// was silent for longer than `read_timeout`.
pub async fn next_chunk(
    body: &mut Incoming,
    read_timeout: Duration,
) -> Result<Option<Bytes>, String> {
    loop {
        let frame = tokio::time::timeout(read_timeout, body.frame())
            .await
            .map_err(|_| format!("no data from the instance for {} s", read_timeout.as_secs()))?;
        match frame {
            None => return Ok(None),
            Some(Err(e)) => return Err(e.to_string()),
            Some(Ok(frame)) => {
                if let Ok(data) = frame.into_data() {
                    return Ok(Some(data));
                }
                // trailers carry nothing the relay passes on
            }
        }
    }
}
