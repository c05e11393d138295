//! Quotas as a plugin after model access: an org at its hard limit gets 429 `quota_exceeded`
//! until the period resets; a model request reserves its maximum cost and has its completion
//! capped to what the budget allows; every authenticated response says the org's standing
//! (`X-Quota-Limit`, `X-Quota-Used`, and `X-Quota-Warning` past the soft limit).

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use bytes::Bytes;
use pingora_http::ResponseHeader;
use pingora_proxy::Session;

use super::{Flow, Plugin};
use crate::context::RequestCtx;
use crate::errors::GatewayError;
use crate::policy::Period;
use crate::quota::{body, period, Ask, Backend, Outcome, QuotaStore, Reservation};
use crate::routes::OllamaEndpoint;

pub struct Quota {
    pub store: Arc<QuotaStore>,
    /// With Redis: the admission decides the reservation (see `admission`).
    pub shared: Option<Arc<crate::admission::Shared>>,
    /// Says whether Redis is usable now (not in its back-off after a failure).
    pub limiter: Arc<crate::limits::Limiter>,
    pub default_completion_tokens: u64,
    pub metrics: Arc<crate::metrics::Metrics>,
    /// (org, period) pairs whose soft-limit crossing was already logged.
    warned: Mutex<HashSet<(String, String)>>,
}

impl Quota {
    pub fn new(
        store: Arc<QuotaStore>,
        shared: Option<Arc<crate::admission::Shared>>,
        limiter: Arc<crate::limits::Limiter>,
        default_completion_tokens: u64,
        metrics: Arc<crate::metrics::Metrics>,
    ) -> Self {
        Self {
            store,
            shared,
            limiter,
            default_completion_tokens,
            metrics,
            warned: Mutex::new(HashSet::new()),
        }
    }

    fn exceeded(&self, org: &str, hard: u64, key: &str, end: i64, now: i64) -> GatewayError {
        self.metrics
            .quota_rejections
            .with_label_values(&[org])
            .inc();
        let reset = period::rfc3339(end);
        let mut e = GatewayError::new(
            429,
            "quota_exceeded",
            format!(
                "org \"{org}\" has used its quota of {hard} tokens for {key}; it resets at {reset}"
            ),
        );
        e.retry_after = Some((end - now).max(1) as u64);
        e.with_header("X-Quota-Limit", hard.to_string())
            .with_header("X-Quota-Reset", reset)
    }

    fn note_soft(&self, org: &str, key: &str, used: u64, soft: u64) {
        if soft == 0 || used < soft {
            return;
        }
        let first = self
            .warned
            .lock()
            .map(|mut w| w.insert((org.to_string(), key.to_string())))
            .unwrap_or(false);
        if first {
            tracing::warn!(
                org,
                period = key,
                used,
                soft_limit = soft,
                "org passed its soft token limit"
            );
        }
    }
}

/// The body with its completion capped and usage requested, when either changes it.
fn rewrite(
    mut v: serde_json::Value,
    path: &str,
    cap: Option<u64>,
    client: Option<u64>,
    ctx: &mut RequestCtx,
) -> Option<Bytes> {
    let mut changed = false;
    if let Some(cap) = cap.filter(|c| client.is_none_or(|cl| *c < cl)) {
        body::set_cap(&mut v, path, cap);
        changed = true;
    }
    if body::request_usage(&mut v, path) {
        ctx.strip_usage = true;
        changed = true;
    }
    changed.then(|| Bytes::from(serde_json::to_vec(&v).unwrap_or_default()))
}

/// A request's quota standing to decide: what to reserve, and what is needed to apply the
/// answer (the limits, the period, the parsed body to cap).
pub struct Prepared {
    pub org: String,
    quota: crate::policy::Quota,
    pub period: String,
    pub period_start: i64,
    end: i64,
    now: i64,
    pub ttl_s: i64,
    path: String,
    model_request: bool,
    parsed: Option<serde_json::Value>,
    client: Option<u64>,
    pub ask: Ask,
}

impl Quota {
    /// What this request asks of its org's budget; `None` without an identity.
    fn prepare(&self, session: &Session, ctx: &RequestCtx) -> Option<Prepared> {
        let (id, policy) = (ctx.identity.as_ref()?, ctx.policy.as_ref()?);
        let q = policy.org(&id.org).quota.clone();
        let now = period::now_s();
        let (key, start, end) = period::period_of(q.period, now);
        let ttl = end - now
            + match q.period {
                Period::Day => 86_400,
                Period::Month => 86_400 * 3,
            };
        let path = session.req_header().uri.path().to_string();
        let model_request = ctx.endpoint == Some(OllamaEndpoint::Model) && ctx.body.is_some();
        let raw = ctx.body.clone().unwrap_or_default();
        // Parsed once here; the rewrite in `apply` edits this same value.
        let parsed: Option<serde_json::Value> = if model_request {
            serde_json::from_slice(&raw).ok()
        } else {
            None
        };
        let client = parsed.as_ref().and_then(|v| body::client_cap(v, &path));
        let ask = if model_request {
            Ask {
                hold: ctx.request_id.clone(),
                hard: q.hard_tokens,
                // Bytes bound tokens from above: a token is at least one byte of text.
                prompt_estimate: raw.len() as u64,
                wanted_cap: if body::generates(&path) {
                    client
                } else {
                    Some(0)
                },
                default_cap: self.default_completion_tokens,
            }
        } else {
            Ask {
                hold: String::new(),
                hard: 0,
                prompt_estimate: 0,
                wanted_cap: Some(0),
                default_cap: 0,
            }
        };
        Some(Prepared {
            org: id.org.clone(),
            quota: q,
            period: key,
            period_start: start,
            end,
            now,
            ttl_s: ttl,
            path,
            model_request,
            parsed,
            client,
            ask,
        })
    }

    /// Reserves in this process's counters (no Redis, or Redis away) and applies the answer.
    pub async fn reserve_locally(&self, ctx: &mut RequestCtx, p: Prepared) -> Option<GatewayError> {
        let outcome = self
            .store
            .reserve(&p.org, &p.period, p.period_start, p.ask.clone())
            .await;
        self.apply(ctx, p, outcome, Backend::Local)
    }

    /// The reservation's answer: a refusal, or the headers, the hold to settle and the
    /// completion cap written into the body.
    pub fn apply(
        &self,
        ctx: &mut RequestCtx,
        p: Prepared,
        outcome: Outcome,
        backend: Backend,
    ) -> Option<GatewayError> {
        let q = &p.quota;
        let used = match outcome {
            Outcome::Exceeded { used } | Outcome::Granted { used, .. } => used,
        };
        let m = &self.metrics;
        m.quota_used
            .with_label_values(&[p.org.as_str()])
            .set(used as i64);
        m.quota_limit
            .with_label_values(&[p.org.as_str()])
            .set(q.hard_tokens as i64);
        match outcome {
            Outcome::Exceeded { used } => {
                ctx.quota_headers = Some((q.hard_tokens, used, None));
                Some(self.exceeded(&p.org, q.hard_tokens, &p.period, p.end, p.now))
            }
            Outcome::Granted { used, grant, cap } => {
                self.note_soft(&p.org, &p.period, used, q.soft_tokens);
                let warning = (q.soft_tokens > 0 && used >= q.soft_tokens).then(|| {
                    format!(
                        "org has used {used} of its {} soft-limit tokens for {}",
                        q.soft_tokens, p.period
                    )
                });
                ctx.quota_headers = Some((q.hard_tokens, used, warning));
                if p.model_request {
                    self.hold(ctx, p, grant, cap, backend);
                }
                None
            }
        }
    }

    fn hold(
        &self,
        ctx: &mut RequestCtx,
        p: Prepared,
        grant: u64,
        cap: Option<u64>,
        backend: Backend,
    ) {
        self.metrics.reservations.inc();
        ctx.reservation = Some(Reservation {
            org: p.org,
            period: p.period,
            grant,
            backend,
            hold: ctx.request_id.clone(),
        });
        let cap = if p.quota.hard_tokens > 0 && body::generates(&p.path) {
            cap
        } else {
            None
        };
        ctx.completion_cap = match (cap, p.client) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        if let Some(v) = p.parsed {
            ctx.body_rewrite = rewrite(v, &p.path, cap, p.client, ctx);
        }
    }
}

#[async_trait]
impl Plugin for Quota {
    fn name(&self) -> &'static str {
        "quota"
    }

    /// With Redis, the reservation joins the request's admission (one round trip for rate
    /// limits, streams and quota, after the chain); otherwise it is made here, in memory.
    async fn on_request(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
    ) -> pingora_error::Result<Flow> {
        let Some(p) = self.prepare(session, ctx) else {
            return Ok(Flow::Continue);
        };
        if self.shared.is_some() && self.limiter.redis_ready() {
            ctx.admission.get_or_insert_with(Default::default).quota = Some(p);
            return Ok(Flow::Continue);
        }
        Ok(match self.reserve_locally(ctx, p).await {
            Some(e) => Flow::Respond(e),
            None => Flow::Continue,
        })
    }

    fn on_response(&self, header: &mut ResponseHeader, ctx: &RequestCtx) {
        if let Some((limit, used, warning)) = &ctx.quota_headers {
            let _ = header.insert_header("X-Quota-Limit", limit.to_string());
            let _ = header.insert_header("X-Quota-Used", used.to_string());
            if let Some(w) = warning {
                let _ = header.insert_header("X-Quota-Warning", w.as_str());
            }
        }
    }
}
