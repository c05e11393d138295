//! Accepting connections by hand, so the fake can die like a real process.
//!
//! `axum::serve` only offers graceful shutdown, which waits for open streams; tests of
//! failover need the opposite: [`stop`](super::FakeOllama::stop) drops the listener and
//! every open connection at once. Each connection runs in a task of one `JoinSet` owned
//! by the accept loop, so shutting the set down aborts them all.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{Method, Request};
use axum::response::Response;
use axum::routing::{any, get, post};
use axum::Router;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::oneshot;
use tokio::task::JoinSet;
use tower::ServiceExt;

use super::generation::{DropConnection, InstanceDied};
use super::state::{RecordedRequest, Shared};
use super::{native, openai, sim};

/// Listen backlog: room for a thousand clients connecting at once.
const BACKLOG: u32 = 4096;

/// Paths whose requests run a model; [`super::FakeOllama::requests`] counts them.
const MODEL_PATHS: &[&str] = &[
    "/api/chat",
    "/api/generate",
    "/api/embed",
    "/api/embeddings",
    "/v1/chat/completions",
    "/v1/completions",
    "/v1/embeddings",
];

/// Every route Ollama answers, with the fake's handlers.
pub(crate) fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/", get(native::root))
        .route("/api/version", get(native::version))
        .route("/api/tags", get(native::tags))
        .route("/api/ps", get(native::ps))
        .route("/api/show", post(native::show))
        .route("/api/chat", post(native::chat))
        .route("/api/generate", post(native::generate))
        .route("/api/embed", post(native::embed))
        .route("/api/embeddings", post(native::embeddings))
        .route("/api/pull", any(native::manage))
        .route("/api/push", any(native::manage))
        .route("/api/create", any(native::manage))
        .route("/api/copy", any(native::manage))
        .route("/api/delete", any(native::manage))
        .route("/api/blobs/{digest}", any(native::manage))
        .route("/v1/chat/completions", post(openai::chat_completions))
        .route("/v1/completions", post(openai::completions))
        .route("/v1/embeddings", post(openai::embeddings))
        .route("/v1/models", get(openai::models))
        .route("/v1/models/{*model}", get(openai::model))
        .route("/sim/stats", get(sim::stats))
        .fallback(|| async { (axum::http::StatusCode::NOT_FOUND, "404 page not found") })
        .with_state(shared)
}

/// Binds `127.0.0.1:port` with `SO_REUSEADDR`, so a stopped instance's port can be
/// bound again at once even with connections in `TIME_WAIT`.
pub(crate) fn bind(port: u16) -> std::io::Result<TcpListener> {
    let socket = TcpSocket::new_v4()?;
    socket.set_reuseaddr(true)?;
    socket.bind(SocketAddr::from(([127, 0, 0, 1], port)))?;
    socket.listen(BACKLOG)
}

/// Accepts until `stop` fires, then drops the listener and aborts every connection.
pub(crate) async fn accept_loop(
    listener: TcpListener,
    app: Router,
    shared: Arc<Shared>,
    mut stop: oneshot::Receiver<()>,
) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            _ = &mut stop => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    connections.spawn(serve_connection(stream, app.clone(), Arc::clone(&shared)));
                }
                // Out of file descriptors and the like: back off instead of spinning.
                Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
    drop(listener);
    connections.shutdown().await;
}

/// HTTP/1.1 only, like Ollama (Go's net/http without h2c), with Go's header casing.
async fn serve_connection(stream: TcpStream, app: Router, shared: Arc<Shared>) {
    // Each NDJSON line must leave when produced, not wait for Nagle.
    let _ = stream.set_nodelay(true);
    let service = hyper::service::service_fn(move |request| {
        answer(app.clone(), Arc::clone(&shared), request)
    });
    let _ = hyper::server::conn::http1::Builder::new()
        .title_case_headers(true)
        .serve_connection(TokioIo::new(stream), service)
        .await;
}

/// Records the request, routes it, and turns a [`DropConnection`] answer into a service
/// error: hyper then closes the connection without writing a response.
async fn answer(
    app: Router,
    shared: Arc<Shared>,
    request: Request<Incoming>,
) -> Result<Response, InstanceDied> {
    let (parts, body) = request.into_parts();
    let body = body.collect().await.map_err(|_| InstanceDied)?.to_bytes();
    if parts.method == Method::POST && MODEL_PATHS.contains(&parts.uri.path()) {
        shared.count_request();
    }
    shared.record(recorded(&parts, &body));
    let response = match app
        .oneshot(Request::from_parts(parts, Body::from(body)))
        .await
    {
        Ok(response) => response,
        Err(never) => match never {},
    };
    if response.extensions().get::<DropConnection>().is_some() {
        return Err(InstanceDied);
    }
    Ok(response)
}

fn recorded(parts: &axum::http::request::Parts, body: &bytes::Bytes) -> RecordedRequest {
    let mut headers: BTreeMap<String, String> = BTreeMap::new();
    for (name, value) in &parts.headers {
        let value = String::from_utf8_lossy(value.as_bytes()).into_owned();
        headers
            .entry(name.as_str().to_string())
            .and_modify(|v| {
                v.push_str(", ");
                v.push_str(&value);
            })
            .or_insert(value);
    }
    RecordedRequest {
        method: parts.method.to_string(),
        path: parts.uri.path().to_string(),
        query: parts.uri.query().map(str::to_string),
        headers,
        body: serde_json::from_slice(body).unwrap_or(serde_json::Value::Null),
        raw_body: body.clone(),
    }
}
