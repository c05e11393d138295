//! Endpoints the gateway answers itself: `/healthz`, `/readyz`, `/metrics`, the admin API
//! (`api.rs`) and the console's files (`crate::console`).

pub mod api;
mod orgs_view;
mod policy_view;
mod pool_view;

use pingora_proxy::Session;
use serde_json::json;

use crate::context::RequestCtx;
use crate::errors::{write_bytes, write_json};
use crate::state::AppState;

/// Answers an admin path; `Ok(false)` when the path is not one.
pub async fn handle(
    session: &mut Session,
    ctx: &mut RequestCtx,
    state: &AppState,
) -> pingora_error::Result<bool> {
    if api::handle(session, ctx, state).await? || crate::console::serve(session, ctx, state).await?
    {
        return Ok(true);
    }
    let method = &session.req_header().method;
    if method != http::Method::GET && method != http::Method::HEAD {
        return Ok(false);
    }
    let path = session.req_header().uri.path();
    let own = matches!(path, "/healthz" | "/readyz")
        || path == "/metrics" && state.config.metrics_enabled;
    if !own {
        return Ok(false);
    }
    // Built only for these paths: every request passes here.
    let id = own_headers(ctx);
    match session.req_header().uri.path() {
        "/healthz" => {
            write_json(session, 200, &json!({"status": "ok"}), &id).await?;
            ctx.answered = Some(200);
        }
        "/readyz" => {
            let (status, body) = readiness(state).await;
            write_json(session, status, &body, &id).await?;
            ctx.answered = Some(status);
        }
        _ => {
            state.pool.export_gauges();
            let text = state.metrics.render();
            let ct = "text/plain; version=0.0.4; charset=utf-8";
            write_bytes(session, 200, ct, text.into(), &id).await?;
            ctx.answered = Some(200);
        }
    }
    Ok(true)
}

/// The headers of every answer the gateway writes itself: the request id, and HSTS on TLS.
pub(crate) fn own_headers(ctx: &RequestCtx) -> Vec<(&'static str, String)> {
    let mut h = vec![("X-Request-Id", ctx.request_id.clone())];
    if let Some(hsts) = &ctx.hsts {
        h.push(("Strict-Transport-Security", hsts.to_string()));
    }
    h
}

/// Ready when at least one Ollama instance is healthy and the gateway is not draining;
/// degraded when some instances are not healthy.
pub async fn readiness(state: &AppState) -> (u16, serde_json::Value) {
    let total = state.pool.instances.len();
    let healthy = state.pool.healthy_count();
    let pool_status = match (healthy, total) {
        (0, _) => "error",
        (h, t) if h < t => "degraded",
        _ => "ok",
    };
    let instances: serde_json::Map<String, serde_json::Value> = state
        .pool
        .instances
        .iter()
        .map(|i| {
            let v = json!({"healthy": i.is_healthy(), "in_flight": i.in_flight()});
            (i.url.base.clone(), v)
        })
        .collect();
    let policy_error = state.policies.last_error();
    let policy_cfg = &state.config.policies;
    // The watcher looks every interval; one that has not finished a look for several intervals
    // and the read timeout is stuck (a hung filesystem): edits are not being seen.
    let since_poll = state.policies.since_last_poll();
    let stalled = since_poll > policy_cfg.read_timeout + policy_cfg.watch_interval * 4;
    let policy = json!({
        "status": if policy_error.is_some() || stalled { "degraded" } else { "ok" },
        "watcher": if stalled { "stalled" } else { "ok" },
        "last_check_s": since_poll.as_secs(),
        "age_s": state.policies.age_s(),
        "files": state.policies.current().files.len(),
        "last_error": policy_error,
    });
    let redis = match state.limiter.redis_status().await {
        None => json!({"status": "off", "note": "no REDIS_URL: limits are per process"}),
        Some(Ok(())) => json!({"status": "ok"}),
        Some(Err(e)) => {
            json!({"status": "error", "error": e, "failure_mode": format!("{:?}", state.config.redis.failure_mode)})
        }
    };
    let database = match &state.ledger {
        None => {
            json!({"status": "off", "note": "no DATABASE_URL: usage goes to logs and metrics only"})
        }
        Some(l) => match l.ping().await {
            Ok(()) => json!({"status": "ok", "pending_events": state.metrics.ledger_pending.get()}),
            Err(e) => {
                json!({"status": "error", "error": e, "pending_events": state.metrics.ledger_pending.get()})
            }
        },
    };
    let api_keys = match &state.keys {
        None => json!({"status": "off", "note": "no API_KEY_PEPPER: API keys are not accepted"}),
        Some(keys) => keys.status(),
    };
    let redis_down = redis["status"] == "error"
        || database["status"] == "error"
        || api_keys["status"] == "degraded";
    let draining = state.drain.is_draining();
    let overall = match (pool_status, policy_error.is_some() || stalled || redis_down) {
        _ if draining => "draining",
        ("error", _) => "error",
        ("ok", true) => "degraded",
        (s, _) => s,
    };
    let body = json!({
        "status": overall,
        "checks": {
            "pool": {"status": pool_status, "healthy": healthy, "total": total, "instances": instances},
            "policy": policy,
            "redis": redis,
            "database": database,
            "api_keys": api_keys,
        },
        "version": env!("CARGO_PKG_VERSION"),
        "uptime_s": state.started.elapsed().as_secs(),
    });
    // Draining (after SIGTERM): load balancers must stop sending while requests finish.
    let status = if pool_status == "error" || draining {
        503
    } else {
        200
    };
    (status, body)
}
