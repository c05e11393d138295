//! The end of every request: metrics, interrupted-stream accounting and the access log line.

use pingora_error::{Error, ErrorSource};
use pingora_proxy::Session;

use crate::context::RequestCtx;
use crate::limits::{Check, Mode};
use crate::plugins::rate_limit::checks_for;
use crate::quota::ledger::UsageEvent;
use crate::state::AppState;

/// The tokens a response is charged: the upstream's counts, or for a stream cut before its
/// final chunk, the chunks it produced (about one token each).
fn charged(ctx: &RequestCtx) -> (u64, u64) {
    let usage = ctx
        .usage
        .as_ref()
        .map(|u| u.usage().clone())
        .unwrap_or_default();
    let prompt = usage.prompt_tokens.unwrap_or(0);
    let completion =
        usage
            .completion_tokens
            .unwrap_or(if usage.finished { 0 } else { usage.chunks });
    (prompt, completion)
}

/// Charges the real token counts to the caller's token-rate limits (after the fact: the
/// limit refuses the next request while the balance is in debt).
pub async fn charge_tokens(state: &AppState, ctx: &mut RequestCtx) {
    let (prompt, completion) = charged(ctx);
    let tokens = prompt + completion;
    if tokens == 0 || ctx.identity.is_none() {
        return;
    }
    let mut checks: Vec<Check> = checks_for(ctx)
        .into_iter()
        .filter(|c| c.scope.ends_with("tokens"))
        .collect();
    for c in &mut checks {
        c.cost = tokens as f64;
        c.mode = Mode::Charge;
    }
    if !checks.is_empty() {
        let _ = state.limiter.check(&checks).await;
    }
}

/// Settles the quota reservation with the real count and appends the charge to the ledger.
/// A stream cut short is charged for what was generated before the cut (its chunks).
pub async fn settle_usage(state: &AppState, ctx: &mut RequestCtx) {
    let (prompt, completion) = charged(ctx);
    if let Some(r) = ctx.reservation.take() {
        state.metrics.reservations.dec();
        let total = prompt + completion;
        state
            .quota_store
            .settle(r.backend, &r.org, &r.period, &r.hold, r.grant, total)
            .await;
    }
    let Some(id) = &ctx.identity else { return };
    if prompt + completion == 0 {
        return;
    }
    let model = ctx.model_name().unwrap_or("-").to_string();
    let m = &state.metrics;
    m.org_tokens
        .with_label_values(&[id.org.as_str(), model.as_str(), "prompt"])
        .inc_by(prompt);
    m.org_tokens
        .with_label_values(&[id.org.as_str(), model.as_str(), "completion"])
        .inc_by(completion);
    if let Some(ledger) = &state.ledger {
        ledger.record(UsageEvent {
            request_id: ctx.request_id.clone(),
            org: id.org.clone(),
            user: id.user.clone(),
            model,
            instance: ctx.instance().unwrap_or("-").to_string(),
            prompt_tokens: prompt as i64,
            completion_tokens: completion as i64,
            at: crate::quota::period::now_s(),
        });
    }
}

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
    if let Some(scope) = ctx.metrics_scope {
        m.rate_limited.with_label_values(&[scope]).inc();
    }

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
}
