//! Rate limits: request rates per org, per user and per client IP, token rates per org and
//! user, and concurrent streams per org, decided here in memory without Redis (and as the
//! fallback when Redis is away and the failure mode is `fail_open`); with Redis the admission
//! script decides them (see `admission`) and this module keeps Redis's health.

pub mod gcra;
mod local;
mod redis;
mod streams;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

pub use gcra::{Decision, Mode, Rule};
pub use streams::{StreamGuard, Streams};

use crate::config::{FailureMode, RedisConfig};
use crate::metrics::Metrics;

/// One limit to check for a request.
#[derive(Debug, Clone)]
pub struct Check {
    /// Names the limit in headers and metrics: `org`, `user`, `ip`, `tokens`.
    pub scope: &'static str,
    pub key: String,
    pub rule: Rule,
    pub cost: f64,
    pub mode: Mode,
    /// The policy's units per minute, for `RateLimit-Policy`.
    pub per_minute: u64,
}

/// The outcome of a set of checks.
#[derive(Debug)]
pub enum Verdict {
    Allowed(Vec<Decision>),
    /// The first refusing check and its decision.
    Refused(usize, Decision),
    /// Redis failed and the failure mode is `fail_closed`.
    Unavailable,
}

pub struct Limiter {
    local: local::LocalLimiter,
    redis: Option<redis::RedisHealth>,
    mode: FailureMode,
    metrics: Arc<Metrics>,
    /// Whether the last Redis call worked (for `/readyz`).
    redis_ok: AtomicBool,
    /// After a failure Redis is skipped until then, so requests do not each wait out a
    /// timeout while it is away; the next call after it tries Redis again.
    retry_redis_at: std::sync::Mutex<Option<std::time::Instant>>,
}

/// How long Redis is left alone after a failure.
const REDIS_BACKOFF: std::time::Duration = std::time::Duration::from_secs(1);

/// A Redis key of one org, carrying the org as its Redis Cluster hash tag: every key one
/// request's admission script touches is then in the same slot.
pub fn org_key(org: &str, rest: &str) -> String {
    format!("{{{org}}}:{rest}")
}

impl Limiter {
    pub fn new(
        redis: Option<Arc<crate::redis_conn::LazyRedis>>,
        config: &RedisConfig,
        metrics: Arc<Metrics>,
    ) -> Limiter {
        Limiter {
            local: local::LocalLimiter::default(),
            redis: redis.map(redis::RedisHealth::new),
            mode: config.failure_mode,
            metrics,
            redis_ok: AtomicBool::new(true),
            retry_redis_at: std::sync::Mutex::new(None),
        }
    }

    /// Decides all checks together in this process's memory (all must pass; none is
    /// charged otherwise). With Redis, the admission script decides instead; this is the
    /// fallback while Redis is away.
    pub fn check(&self, checks: &[Check]) -> Verdict {
        if checks.is_empty() {
            return Verdict::Allowed(Vec::new());
        }
        if self.redis.is_some() && self.mode == FailureMode::Closed {
            return Verdict::Unavailable;
        }
        let decisions = self.local.decide_all(checks);
        match decisions.iter().position(|d| !d.allowed) {
            Some(i) => Verdict::Refused(i, decisions[i]),
            None => Verdict::Allowed(decisions),
        }
    }

    /// Redis is configured and not in its back-off after a failure.
    pub fn redis_ready(&self) -> bool {
        self.redis.is_some() && !self.backing_off()
    }

    fn backing_off(&self) -> bool {
        let guard = self
            .retry_redis_at
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        guard.is_some_and(|at| std::time::Instant::now() < at)
    }

    /// Records how the last Redis call went: a failure starts the back-off, is counted, and
    /// is logged once per outage.
    pub fn mark_redis(&self, ok: bool, error: Option<&str>) {
        if let Ok(mut at) = self.retry_redis_at.lock() {
            *at = (!ok).then(|| std::time::Instant::now() + REDIS_BACKOFF);
        }
        let was = self.redis_ok.swap(ok, Ordering::AcqRel);
        if !ok {
            self.metrics.redis_errors.inc();
            if was {
                tracing::warn!(error = error.unwrap_or("-"), mode = ?self.mode, "Redis unavailable for limits and quotas");
            }
        } else if !was {
            tracing::info!("Redis is back: shared limits and quotas resume");
        }
    }

    /// `None` without Redis; otherwise whether Redis answers now.
    pub async fn redis_status(&self) -> Option<Result<(), String>> {
        let redis = self.redis.as_ref()?;
        let r = redis.ping().await;
        self.mark_redis(r.is_ok(), r.as_ref().err().map(String::as_str));
        Some(r)
    }
}
