//! The end of every request: metrics, interrupted-stream accounting and the access log line.

use pingora_error::{Error, ErrorSource};
use pingora_proxy::Session;

use crate::client_text::Clean;
use crate::context::RequestCtx;
use crate::limits::{Check, Mode};
use crate::plugins::rate_limit::checks_for;
use std::sync::Arc;

use crate::admission::{BlockOwner, QuotaSettle, Settlement};
use crate::quota::ledger::UsageEvent;
use crate::quota::Backend;
use crate::state::AppState;

/// Prompt tokens a request may cost beyond its body's bytes (a token is at least a byte of
/// text): the model's template and Modelfile system prompt, and images, whose tokens their
/// bytes do not show.
const PROMPT_OVERHEAD: u64 = 131_072;
/// Completion tokens a reply may report when the request set no cap: beyond the context
/// window of any model, so only a broken or hostile upstream reaches it.
const MAX_REPLY_TOKENS: u64 = 2_097_152;

/// The tokens one response is charged, decided once when the request ends and used alike by
/// the access log, `corral_tokens_total`, the token rates, the quota and the ledger.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Charge {
    pub prompt: u64,
    pub completion: u64,
}

impl Charge {
    pub fn total(&self) -> u64 {
        self.prompt.saturating_add(self.completion)
    }
}

/// The upstream's counts, or for a stream cut before its final chunk, the chunks it produced
/// (about one token each); each bounded by what the request could produce, so an absurd
/// count (a broken or hostile instance) is clamped, logged, and never wraps a counter.
pub fn charge(ctx: &RequestCtx) -> Charge {
    let Some(usage) = ctx.usage.as_ref().map(|u| u.usage()) else {
        return Charge::default();
    };
    let reported = Charge {
        prompt: usage.prompt_tokens.unwrap_or(0),
        completion: usage.completion_tokens.unwrap_or(if usage.finished {
            0
        } else {
            usage.chunks
        }),
    };
    let body = ctx.body.as_ref().map_or(ctx.body_bytes, |b| b.len()) as u64;
    let bound = Charge {
        prompt: body.saturating_add(PROMPT_OVERHEAD),
        completion: ctx.completion_cap.unwrap_or(MAX_REPLY_TOKENS),
    };
    let charged = Charge {
        prompt: reported.prompt.min(bound.prompt),
        completion: reported.completion.min(bound.completion),
    };
    if charged != reported {
        tracing::warn!(
            request_id = %ctx.request_id,
            instance = ctx.instance().unwrap_or("-"),
            reported_prompt = reported.prompt,
            reported_completion = reported.completion,
            max_prompt = bound.prompt,
            max_completion = bound.completion,
            "upstream reported more tokens than the request could produce: counts clamped"
        );
    }
    charged
}

/// The token-rate checks charged with the real counts after the fact (the limit refuses the
/// next request while the balance is in debt).
fn token_charges(ctx: &mut RequestCtx, charge: Charge) -> Vec<Check> {
    let tokens = charge.total();
    if tokens == 0 || ctx.identity.is_none() {
        return Vec::new();
    }
    let mut checks: Vec<Check> = checks_for(ctx)
        .into_iter()
        .filter(|c| c.scope.ends_with("tokens"))
        .collect();
    for c in &mut checks {
        c.cost = tokens as f64;
        c.mode = Mode::Charge;
    }
    checks
}

/// Settles what the request holds: token charges, its stream slot, its quota reservation
/// (replaced by the real count). What lives in Redis joins the next batch of settlements,
/// written off the request path (the request keeps its place in SIGTERM's drain until it is
/// written, so it is not cut short; see `admission::settler`); what lives in memory is
/// settled here. Then the charge goes to the ledger.
pub fn settle_usage(state: &Arc<AppState>, ctx: &mut RequestCtx, charge: Charge) {
    let charges = token_charges(ctx, charge);
    let total = charge.total();
    let reservation = ctx.reservation.take();
    if reservation.is_some() {
        state.metrics.reservations.dec();
    }
    let (in_redis, local) = match reservation {
        Some(r) if r.backend == Backend::Redis => (Some(r), None),
        r => (None, r),
    };
    if let Some(r) = local {
        state
            .quota_store
            .settle_local(&r.org, &r.period, r.grant, total);
    }
    let shared = state
        .shared
        .as_ref()
        .filter(|_| state.limiter.redis_ready());
    let blocks = shared.and_then(|_| block_owner(ctx));
    let any = !charges.is_empty() || in_redis.is_some() || ctx.lease.is_some() || blocks.is_some();
    match shared {
        Some(_) if any => {
            let s = Settlement {
                // Only an identified request holds anything in Redis (its keys are its org's).
                org: ctx
                    .identity
                    .as_ref()
                    .map(|id| id.org.clone())
                    .unwrap_or_default(),
                blocks,
                charges,
                lease: ctx.lease.take(),
                quota: in_redis.map(|r| QuotaSettle {
                    hold: r.hold,
                    org: r.org,
                    period: r.period,
                    grant: r.grant,
                    actual: total,
                }),
            };
            crate::admission::settle(state, s, ctx.flight.take());
        }
        Some(_) => {}
        None => {
            let _ = state.limiter.check(&charges);
            if let Some(r) = in_redis {
                state
                    .quota_store
                    .settle_local(&r.org, &r.period, r.grant, total);
            }
        }
    }
    ledger(state, ctx, charge);
}

/// The instance that served this prompt, to name in Redis for the other replicas.
fn block_owner(ctx: &mut RequestCtx) -> Option<BlockOwner> {
    let slot = ctx.slot.as_ref()?;
    if ctx.upstream_status != Some(200) || ctx.block_keys.is_empty() {
        return None;
    }
    let keys = std::mem::take(&mut ctx.block_keys)
        .into_iter()
        .map(|(k, _)| k)
        .collect();
    Some(BlockOwner {
        keys,
        instance: slot.instance.url.base.clone(),
    })
}

/// Appends the charge to the ledger and the token metrics.
fn ledger(state: &AppState, ctx: &RequestCtx, charge: Charge) {
    let Charge { prompt, completion } = charge;
    let Some(id) = &ctx.identity else { return };
    if charge.total() == 0 {
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
            key_id: id.key.as_ref().map(|k| k.id.clone()),
        });
    }
}

pub fn record(
    state: &AppState,
    session: &Session,
    e: Option<&Error>,
    ctx: &mut RequestCtx,
    charge: Charge,
) {
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

    let finished = ctx.usage.as_ref().is_some_and(|u| u.usage().finished);
    let model = ctx.model_name().unwrap_or("-").to_string();
    if charge.prompt > 0 {
        m.tokens
            .with_label_values(&[model.as_str(), "prompt"])
            .inc_by(charge.prompt);
    }
    if charge.completion > 0 {
        m.tokens
            .with_label_values(&[model.as_str(), "completion"])
            .inc_by(charge.completion);
    }
    if let Some(e) = e.filter(|e| e.esource() == &ErrorSource::Downstream) {
        let kind = client_error_kind(e);
        m.client_errors.with_label_values(&[kind]).inc();
        tracing::debug!(request_id = %Clean(&ctx.request_id), kind, error = %e, "client-side failure");
    }
    if let Some(t) = ctx.first_token.filter(|_| status == 200) {
        m.time_to_first_token
            .with_label_values(&[model.as_str()])
            .observe(t.as_secs_f64());
    }
    let interrupted = ctx.response_started && ctx.usage.is_some() && !finished;
    if interrupted {
        let cause = match e.map(|e| e.esource()) {
            Some(ErrorSource::Downstream) => "client",
            _ => "upstream",
        };
        m.streams_interrupted.with_label_values(&[cause]).inc();
        if let Some(slot) = ctx.slot.as_ref().filter(|_| cause == "upstream") {
            slot.instance.events.push("error", "reply cut mid-stream");
        }
    }
    remember(state, ctx, status, charge, &model);

    let req = session.req_header();
    let agent = req
        .headers
        .get(http::header::USER_AGENT)
        .map(|v| String::from_utf8_lossy(v.as_bytes()))
        .unwrap_or_default();
    // Client values are escaped and cut (see `client_text`): a forged line or a 10 MB field
    // must not reach the log as such.
    tracing::info!(
        target: "access",
        request_id = %Clean(&ctx.request_id),
        method = %Clean(req.method.as_str()),
        path = %Clean(req.uri.path()),
        status,
        instance = ctx.instance().unwrap_or("-"),
        model = %Clean(&model),
        user_agent = %Clean(&agent),
        key_id = ctx
            .identity
            .as_ref()
            .and_then(|id| id.key.as_ref())
            .map_or("-", |k| k.id.as_str()),
        prompt_tokens = charge.prompt,
        completion_tokens = charge.completion,
        retries = ctx.retries,
        interrupted,
        error = e.map(|e| e.etype().as_str()).unwrap_or("-"),
        duration_ms = elapsed.as_secs_f64() * 1000.0,
        ttft_ms = ctx.first_token.map_or(-1.0, |t| t.as_secs_f64() * 1000.0),
        affinity = ctx.slot.as_ref().map_or("-", |s| s.affinity.as_str()),
        "request"
    );
}

/// Counts the request for the console: the pool's traffic series and its org's counters
/// (requests to the pool only: not probes, scrapes or the backend's routes, whose chat turns
/// come back through the gateway and are counted then).
fn remember(state: &AppState, ctx: &RequestCtx, status: u16, charge: Charge, model: &str) {
    let to_pool = ctx
        .route
        .as_ref()
        .is_some_and(|r| r.target() == crate::config::Target::Ollama);
    if !to_pool {
        return;
    }
    let ttft = ctx
        .first_token
        .filter(|_| status == 200)
        .map(|t| t.as_secs_f64() * 1000.0);
    let now = crate::quota::period::now_s();
    state.activity.series.record(now, status >= 500, ttft);
    let Some(id) = &ctx.identity else { return };
    let limited = status == 429;
    state.activity.orgs.record(&crate::activity::Outcome {
        org: &id.org,
        model: ctx.model.as_ref().map(|_| model),
        prompt_tokens: charge.prompt,
        completion_tokens: charge.completion,
        rate_limited: limited && ctx.metrics_scope.is_some(),
        quota_refused: limited && ctx.metrics_scope.is_none(),
    });
}

/// How a client-side failure is counted: gone (closed or reset), timeout, or malformed.
fn client_error_kind(e: &Error) -> &'static str {
    use pingora_error::ErrorType;
    match e.etype() {
        ErrorType::ReadError | ErrorType::WriteError | ErrorType::ConnectionClosed => "gone",
        ErrorType::ReadTimedout | ErrorType::WriteTimedout => "timeout",
        _ => "malformed",
    }
}
