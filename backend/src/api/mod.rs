//! The HTTP API: shared state, the route table, and the layer every request passes (metrics,
//! access log, request id). One file per resource; errors are mapped in `errors.rs` only.

mod access;
mod audit;
mod conversations;
pub mod errors;
mod extract;
mod idempotency;
mod keys;
mod messages;
mod page;
mod usage;

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::{HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::Router;
use tokio_util::task::TaskTracker;

use crate::auth::Verifier;
use crate::config::Config;
use crate::db::Pool;
use errors::ApiError;

/// What every handler shares; cheap to clone.
#[derive(Clone)]
pub struct AppState {
    pub config: Arc<Config>,
    pub pool: Pool,
    pub verifier: Arc<Verifier>,
    /// Client for the gateway (chat calls); keeps connections alive between turns.
    pub http: reqwest::Client,
    /// Chat relays still storing replies; shutdown waits for them.
    pub relays: TaskTracker,
    /// The newest migration this binary knows (readiness compares the database to it).
    pub migrations_latest: i64,
    pub started: Instant,
}

pub fn router(state: AppState) -> Router {
    // Large enough that an over-long message gets the 400 naming `content`, small enough
    // to bound what one request can make the backend hold.
    let body_limit = state.config.chat.max_message_bytes * 2 + 64 * 1024;
    Router::new()
        .route("/healthz", get(crate::health::healthz))
        .route("/readyz", get(crate::health::readyz))
        .route("/metrics", get(metrics))
        .route(
            "/api/conversations",
            get(conversations::list).post(conversations::create),
        )
        .route(
            "/api/conversations/{id}",
            get(conversations::get)
                .patch(conversations::update)
                .delete(conversations::delete),
        )
        .route(
            "/api/conversations/{id}/messages",
            get(messages::list).post(messages::post),
        )
        .route("/api/orgs/{org}/usage", get(usage::report))
        .route("/api/orgs/{org}/keys", get(keys::list).post(keys::create))
        .route("/api/orgs/{org}/keys/{id}/rotate", post(keys::rotate))
        .route("/api/orgs/{org}/keys/{id}", delete(keys::revoke))
        .route("/api/orgs/{org}/audit", get(audit::list))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(body_limit))
        .layer(middleware::from_fn_with_state(state.clone(), observe))
        .with_state(state)
}

async fn metrics(State(state): State<AppState>) -> Response {
    let text = crate::metrics::render(&state.pool.status());
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    )
        .into_response()
}

async fn not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such endpoint")
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "method not allowed on this endpoint",
    )
}

/// Counts and times every request under its route pattern, logs it, and echoes its
/// `X-Request-Id` (the gateway's, or a new one).
async fn observe(State(_state): State<AppState>, req: Request, next: Next) -> Response {
    let started = Instant::now();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or("unmatched", |p| p.as_str())
        .to_owned();
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let request_id = req
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
        .unwrap_or_else(|| uuid::Uuid::new_v4().simple().to_string());
    let mut resp = next.run(req).await;
    let status = resp.status().as_u16();
    let elapsed = started.elapsed();
    let m = crate::metrics::get();
    m.requests
        .with_label_values(&[route.as_str(), method.as_str(), &status.to_string()])
        .inc();
    m.duration
        .with_label_values(&[route.as_str()])
        .observe(elapsed.as_secs_f64());
    if !resp.headers().contains_key("x-request-id") {
        if let Ok(v) = HeaderValue::from_str(&request_id) {
            resp.headers_mut().insert("x-request-id", v);
        }
    }
    if route != "/healthz" && route != "/readyz" && route != "/metrics" {
        tracing::info!(
            target: "access",
            request_id = %request_id,
            method = %method,
            path = %path,
            status,
            duration_ms = elapsed.as_secs_f64() * 1000.0,
            "request"
        );
    }
    resp
}
