//! Deciding a request's pending admission after the plugin chain: the script, its retries
//! (a quota counter to rebuild, a stream slot to wait for), and the in-memory fallback when
//! Redis fails.

use std::time::Duration;

use tokio::time::Instant;

use crate::config::FailureMode;
use crate::context::RequestCtx;
use crate::errors::GatewayError;
use crate::plugins::rate_limit::{decide_locally, header_values, refused, streams_full};
use crate::quota::{Backend, Outcome};
use crate::state::AppState;

use super::{Pending, Shared, Verdict, STREAM_POLL};

/// Decides `p`; `Some` is the refusal to answer with.
pub async fn admit(state: &AppState, ctx: &mut RequestCtx, mut p: Pending) -> Option<GatewayError> {
    let Some(shared) = state.shared.as_ref() else {
        return fallback(state, ctx, p).await;
    };
    let deadline = Instant::now() + state.config.pool.queue_timeout;
    if let (Some(prompt), Some(id)) = (&ctx.prompt, &ctx.identity) {
        p.blocks = super::blocks(&id.org, prompt);
    }
    let member = ctx.request_id.clone();
    let mut rebuilt = false;
    loop {
        let verdict = match shared.admit(&p, &member).await {
            Ok(Some(v)) => v,
            Ok(None) if !rebuilt => {
                rebuilt = true;
                match rebuild(state, &p).await {
                    Ok(()) => continue,
                    Err(e) => return failed(state, ctx, p, &e).await,
                }
            }
            Ok(None) => return failed(state, ctx, p, "quota counter could not be rebuilt").await,
            Err(e) => return failed(state, ctx, p, &e).await,
        };
        state.limiter.mark_redis(true, None);
        match verdict {
            Verdict::StreamsFull if Instant::now() < deadline => {
                wait_for_a_slot(shared, deadline).await;
            }
            Verdict::StreamsFull => {
                ctx.metrics_scope = Some("streams");
                return Some(streams_full(&p));
            }
            Verdict::RateRefused(i, d) => {
                ctx.metrics_scope = Some(p.checks[i].scope);
                return Some(refused(&p.checks, i, d));
            }
            Verdict::QuotaExceeded { used } => {
                let q = p.quota.take()?;
                return state
                    .quota
                    .apply(ctx, q, Outcome::Exceeded { used }, Backend::Redis);
            }
            Verdict::Admitted {
                decisions,
                lease,
                used,
                grant,
                cap,
                owner,
            } => {
                ctx.shared_owner = owner;
                // The settlement names the new owner under the same keys.
                ctx.block_keys = std::mem::take(&mut p.blocks);
                if !p.checks.is_empty() {
                    ctx.rate_headers = Some(header_values(&p.checks, &decisions));
                }
                ctx.lease = lease;
                let q = p.quota.take()?;
                let granted = Outcome::Granted { used, grant, cap };
                return state.quota.apply(ctx, q, granted, Backend::Redis);
            }
        }
    }
}

/// A slot freed here wakes the wait at once; one freed on another replica is seen at the
/// next poll.
async fn wait_for_a_slot(shared: &Shared, deadline: Instant) {
    let freed = shared.leases.freed.notified();
    let until = deadline.min(Instant::now() + STREAM_POLL);
    let _ = tokio::time::timeout_at(until, freed).await;
}

async fn rebuild(state: &AppState, p: &Pending) -> Result<(), String> {
    let Some(q) = &p.quota else {
        return Ok(());
    };
    state
        .quota_store
        .init_counter(&q.org, &q.period, q.period_start, q.ttl_s)
        .await
}

/// Redis failed: counted and backed off, then decided by the failure mode.
async fn failed(
    state: &AppState,
    ctx: &mut RequestCtx,
    p: Pending,
    error: &str,
) -> Option<GatewayError> {
    state.limiter.mark_redis(false, Some(error));
    if state.config.redis.failure_mode == FailureMode::Closed {
        return Some(GatewayError::unavailable(
            "the shared rate limiter (Redis) is unavailable",
            1,
        ));
    }
    fallback(state, ctx, p).await
}

/// This process's own limits, streams and quota counters.
async fn fallback(state: &AppState, ctx: &mut RequestCtx, mut p: Pending) -> Option<GatewayError> {
    let wait: Duration = state.config.pool.queue_timeout;
    if let Some(e) = decide_locally(&state.limiter, &state.streams, wait, ctx, &p).await {
        return Some(e);
    }
    let q = p.quota.take()?;
    state.quota.reserve_locally(ctx, q).await
}
