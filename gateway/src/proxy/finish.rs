//! The end of every request: metrics, interrupted-stream accounting and the access log line.

use pingora_error::{Error, ErrorSource};
use pingora_proxy::Session;

use crate::context::RequestCtx;
use crate::state::AppState;

pub fn record(state: &AppState, session: &Session, e: Option<&Error>, ctx: &mut RequestCtx) {
    let status = session
        .response_written()
        .map(|r| r.status.as_u16())
        .or(ctx.answered)
        .unwrap_or(0);
    let route = ctx
        .route
        .as_ref()
        .map_or("gateway", |r| r.label())
        .to_string();
    let elapsed = ctx.started.elapsed();
    let m = &state.metrics;
    m.requests
        .with_label_values(&[route.as_str(), &status.to_string()])
        .inc();
    m.duration
        .with_label_values(&[route.as_str()])
        .observe(elapsed.as_secs_f64());

    let usage = ctx
        .usage
        .as_ref()
        .map(|u| u.usage().clone())
        .unwrap_or_default();
    let model = ctx.model_name().unwrap_or("-").to_string();
    if let Some(n) = usage.prompt_tokens {
        m.tokens
            .with_label_values(&[model.as_str(), "prompt"])
            .inc_by(n);
    }
    if let Some(n) = usage.completion_tokens {
        m.tokens
            .with_label_values(&[model.as_str(), "completion"])
            .inc_by(n);
    }
    let interrupted = ctx.response_started && ctx.usage.is_some() && !usage.finished;
    if interrupted {
        let cause = match e.map(|e| e.esource()) {
            Some(ErrorSource::Downstream) => "client",
            _ => "upstream",
        };
        m.streams_interrupted.with_label_values(&[cause]).inc();
    }

    let req = session.req_header();
    tracing::info!(
        target: "access",
        request_id = %ctx.request_id,
        method = %req.method,
        path = %req.uri.path(),
        status,
        instance = ctx.instance().unwrap_or("-"),
        model = %model,
        prompt_tokens = usage.prompt_tokens.unwrap_or(0),
        completion_tokens = usage.completion_tokens.unwrap_or(0),
        retries = ctx.retries,
        interrupted,
        error = e.map(|e| e.etype().as_str()).unwrap_or("-"),
        duration_ms = elapsed.as_secs_f64() * 1000.0,
        "request"
    );
    // Frees the instance slot now rather than when Pingora drops the context.
    ctx.slot.take();
}
