//! `/healthz` (the process serves) and `/readyz` (it can do its job: the database answers
//! and its schema is at this binary's migration version), in the gateway's JSON shape.

use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use crate::api::AppState;
use crate::db::migrate;

/// A database check slower than this fails readiness.
const CHECK_TIMEOUT: Duration = Duration::from_secs(2);

pub async fn healthz() -> Json<serde_json::Value> {
    Json(json!({"status": "ok"}))
}

pub async fn readyz(State(state): State<AppState>) -> Response {
    let started = Instant::now();
    let version = tokio::time::timeout(CHECK_TIMEOUT, migrate::current_version(&state.pool)).await;
    let latency_ms = started.elapsed().as_millis() as u64;
    let (database, migrations, ok) = match version {
        Ok(Ok(applied)) => {
            let current = applied >= state.migrations_latest;
            (
                json!({"status": "ok", "latency_ms": latency_ms}),
                json!({
                    "status": if current { "ok" } else { "error" },
                    "applied_version": applied,
                    "expected_version": state.migrations_latest,
                }),
                current,
            )
        }
        Ok(Err(e)) => (
            json!({"status": "error", "error": e.to_string()}),
            json!({"status": "unknown", "expected_version": state.migrations_latest}),
            false,
        ),
        Err(_) => (
            json!({"status": "error", "error": format!("no answer within {} ms", CHECK_TIMEOUT.as_millis())}),
            json!({"status": "unknown", "expected_version": state.migrations_latest}),
            false,
        ),
    };
    let body = json!({
        "status": if ok { "ok" } else { "error" },
        "checks": {"database": database, "migrations": migrations},
        "version": env!("CARGO_PKG_VERSION"),
        "uptime_s": state.started.elapsed().as_secs(),
    });
    let status = if ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(body)).into_response()
}
