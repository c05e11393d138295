//! Rate limits as a plugin after auth: per org, per user and (without a token) per client IP,
//! plus the token-rate balance and concurrent streams. Refusals are 429 `rate_limited` with
//! `Retry-After` and the IETF `RateLimit-Policy` / `RateLimit` fields; allowed responses
//! carry `RateLimit` too.

use std::sync::Arc;

use async_trait::async_trait;
use pingora_http::ResponseHeader;
use pingora_proxy::Session;

use super::{Flow, Plugin};
use crate::admission::Pending;
use crate::context::RequestCtx;
use crate::errors::GatewayError;
use crate::limits::{org_key, Check, Decision, Limiter, Mode, Rule, Streams, Verdict};
use crate::routes::OllamaEndpoint;

pub struct RateLimit {
    pub limiter: Arc<Limiter>,
    pub streams: Arc<Streams>,
    pub queue_timeout: std::time::Duration,
    /// With Redis: the checks join the request's admission (see `admission`).
    pub shared: Option<Arc<crate::admission::Shared>>,
}

/// The checks that apply to this caller under the request's policy.
pub fn checks_for(ctx: &mut RequestCtx) -> Vec<Check> {
    let eff = ctx.limits();
    let Some(policy) = ctx.policy.clone() else {
        return Vec::new();
    };
    let mut checks = Vec::new();
    // Keys are built only for the limits that are on (most requests have few).
    let mut add = |scope, key: &dyn Fn() -> String, per_minute: u64, burst: u64| {
        if per_minute > 0 {
            let rule = Rule::per_minute(per_minute, burst);
            checks.push(Check {
                scope,
                key: key(),
                rule,
                cost: 1.0,
                mode: Mode::Admit,
                per_minute,
            });
        }
    };
    match (&ctx.identity, eff) {
        (Some(id), Some(eff)) => {
            add(
                "org",
                &|| org_key(&id.org, "rl:org"),
                eff.org.requests_per_minute,
                eff.org.burst,
            );
            // A user may burst ten seconds' worth of their own rate.
            let user_rpm = eff.user_requests_per_minute;
            add(
                "user",
                &|| org_key(&id.org, &format!("rl:user:{}", id.user)),
                user_rpm,
                user_rpm / 6,
            );
            // Token rates: the balance must not be in debt past a minute's worth; the real
            // counts are charged when the response ends.
            let tpm = eff.org.tokens_per_minute;
            add("tokens", &|| org_key(&id.org, "tpm:org"), tpm, tpm);
            let utpm = eff.user_tokens_per_minute;
            add(
                "user_tokens",
                &|| org_key(&id.org, &format!("tpm:user:{}", id.user)),
                utpm,
                utpm,
            );
        }
        _ => {
            let ip = ctx.client_ip;
            // An IP's key is tagged by itself: one key, one slot.
            let key = || {
                ip.map_or_else(
                    || "{ip:unknown}:rl".to_string(),
                    |ip| format!("{{ip:{ip}}}:rl"),
                )
            };
            add(
                "ip",
                &key,
                policy.anonymous.requests_per_minute,
                policy.anonymous.burst,
            );
        }
    }
    for c in checks.iter_mut().filter(|c| c.scope.ends_with("tokens")) {
        c.cost = 0.0;
    }
    checks
}

/// `RateLimit-Policy` and `RateLimit` values (structured-field lists).
pub fn header_values(checks: &[Check], decisions: &[Decision]) -> (String, String) {
    let policy = checks
        .iter()
        .map(|c| format!("\"{}\";q={};w=60", c.scope, c.per_minute))
        .collect::<Vec<_>>()
        .join(", ");
    let state = checks
        .iter()
        .zip(decisions)
        .map(|(c, d)| {
            format!(
                "\"{}\";r={};t={}",
                c.scope,
                d.remaining,
                d.reset_ms.div_ceil(1000)
            )
        })
        .collect::<Vec<_>>()
        .join(", ");
    (policy, state)
}

/// The concurrent-stream limits of a model request: org and user keys (org-tagged).
fn stream_limits(ctx: &mut RequestCtx, p: &mut Pending) {
    if ctx.endpoint != Some(OllamaEndpoint::Model) {
        return;
    }
    if let (Some(eff), Some(id)) = (ctx.limits(), ctx.identity.as_ref()) {
        p.streams = vec![
            (
                org_key(&id.org, "streams:org"),
                eff.org.max_concurrent_streams,
            ),
            (
                org_key(&id.org, &format!("streams:user:{}", id.user)),
                eff.user_max_concurrent_streams,
            ),
        ];
        // A limit that is off (0) holds no slot: nothing to count, lease or free.
        p.streams.retain(|(_, max)| *max > 0);
        p.org = id.org.clone();
        p.org_max_streams = eff.org.max_concurrent_streams;
    }
}

/// The refusal for check `i`.
pub fn refused(checks: &[Check], i: usize, d: Decision) -> GatewayError {
    let c = &checks[i];
    let what = if c.scope.ends_with("tokens") {
        "tokens"
    } else {
        "requests"
    };
    let retry = d.retry_after_ms.div_ceil(1000).max(1);
    let mut e = GatewayError::new(
        429,
        "rate_limited",
        format!(
            "rate limit exceeded ({} limit: {} {what} per minute); retry in {retry} s",
            c.scope, c.per_minute
        ),
    );
    e.retry_after = Some(retry);
    let (policy, state) = header_values(std::slice::from_ref(c), &[d]);
    e.with_header("RateLimit-Policy", policy)
        .with_header("RateLimit", state)
}

/// The refusal when the org's (or user's) streams stay full for the whole wait.
pub fn streams_full(p: &Pending) -> GatewayError {
    let mut e = GatewayError::new(
        429,
        "rate_limited",
        format!(
            "too many concurrent streams for org \"{}\" (limit {})",
            p.org, p.org_max_streams
        ),
    );
    e.retry_after = Some(1);
    e
}

/// Decides in this process's memory: without Redis, or while it is away.
pub async fn decide_locally(
    limiter: &Limiter,
    streams: &Arc<Streams>,
    wait: std::time::Duration,
    ctx: &mut RequestCtx,
    p: &Pending,
) -> Option<GatewayError> {
    match limiter.check(&p.checks) {
        Verdict::Allowed(decisions) => {
            if !p.checks.is_empty() {
                ctx.rate_headers = Some(header_values(&p.checks, &decisions));
            }
        }
        Verdict::Refused(i, d) => {
            ctx.metrics_scope = Some(p.checks[i].scope);
            return Some(refused(&p.checks, i, d));
        }
        Verdict::Unavailable => {
            return Some(GatewayError::unavailable(
                "the shared rate limiter (Redis) is unavailable",
                1,
            ));
        }
    }
    if p.streams.is_empty() {
        return None;
    }
    match streams.acquire(&p.streams, wait).await {
        Some(guard) => {
            ctx.stream_guard = Some(guard);
            None
        }
        None => {
            ctx.metrics_scope = Some("streams");
            Some(streams_full(p))
        }
    }
}

#[async_trait]
impl Plugin for RateLimit {
    fn name(&self) -> &'static str {
        "rate_limit"
    }

    /// With Redis, the checks join the request's admission (one round trip after the
    /// chain); otherwise they are decided here, in memory.
    async fn on_request(
        &self,
        _session: &mut Session,
        ctx: &mut RequestCtx,
    ) -> pingora_error::Result<Flow> {
        let mut p = Pending {
            checks: checks_for(ctx),
            ..Pending::default()
        };
        stream_limits(ctx, &mut p);
        if self.shared.is_some() && self.limiter.redis_ready() {
            let pending = ctx.admission.get_or_insert_with(Default::default);
            pending.checks = p.checks;
            pending.streams = p.streams;
            pending.org = p.org;
            pending.org_max_streams = p.org_max_streams;
            return Ok(Flow::Continue);
        }
        let wait = self.queue_timeout;
        Ok(
            match decide_locally(&self.limiter, &self.streams, wait, ctx, &p).await {
                Some(e) => Flow::Respond(e),
                None => Flow::Continue,
            },
        )
    }

    fn on_response(&self, header: &mut ResponseHeader, ctx: &RequestCtx) {
        if let Some((policy, state)) = &ctx.rate_headers {
            let _ = header.insert_header("RateLimit-Policy", policy.as_str());
            let _ = header.insert_header("RateLimit", state.as_str());
        }
    }
}
