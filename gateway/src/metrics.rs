//! Prometheus metrics: one registry, created at start, served at `/metrics`.

use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
};

/// Every metric the gateway exports. Names carry the `corral_` prefix.
pub struct Metrics {
    pub registry: Registry,
    pub requests: IntCounterVec,
    pub duration: HistogramVec,
    pub upstream_in_flight: IntGaugeVec,
    pub upstream_healthy: IntGaugeVec,
    pub tokens: IntCounterVec,
    pub retries: IntCounter,
    pub ejections: IntCounterVec,
    pub streams_interrupted: IntCounterVec,
    pub client_errors: IntCounterVec,
    pub api_key_checks: IntCounterVec,
    pub api_key_lookups: IntCounterVec,
    pub queue_waiting: IntGauge,
    pub queue_rejections: IntCounterVec,
    pub tls_reloads: IntCounterVec,
    pub tls_cert_expiry: IntGaugeVec,
    pub policy_reloads: IntCounterVec,
    pub rate_limited: IntCounterVec,
    pub redis_errors: IntCounter,
    pub ledger_dropped: IntCounter,
    pub ledger_pending: IntGauge,
    pub quota_rejections: IntCounterVec,
    pub org_tokens: IntCounterVec,
    pub reservations: IntGauge,
    pub quota_used: IntGaugeVec,
    pub quota_limit: IntGaugeVec,
    pub time_to_first_token: HistogramVec,
    pub affinity: IntCounterVec,
    pub affinity_blocks: prometheus::Histogram,
    pub model_loads: IntCounterVec,
    pub routing_decision: HistogramVec,
    pub warm_waits: IntCounterVec,
    pub model_load_estimate: prometheus::GaugeVec,
}

impl Metrics {
    pub fn new() -> Result<Self, prometheus::Error> {
        let registry = Registry::new();
        let m = Self {
            requests: IntCounterVec::new(
                Opts::new("corral_requests_total", "Requests answered, by route and status"),
                &["route", "status"],
            )?,
            duration: HistogramVec::new(
                HistogramOpts::new(
                    "corral_request_duration_seconds",
                    "Time from request start to the last byte sent, by route",
                )
                .buckets(vec![
                    0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0,
                ]),
                &["route"],
            )?,
            upstream_in_flight: IntGaugeVec::new(
                Opts::new("corral_upstream_in_flight", "Requests in flight per Ollama instance"),
                &["instance"],
            )?,
            upstream_healthy: IntGaugeVec::new(
                Opts::new("corral_upstream_healthy", "1 when the instance is healthy, else 0"),
                &["instance"],
            )?,
            tokens: IntCounterVec::new(
                Opts::new("corral_tokens_total", "Tokens reported by upstreams, by model and kind (prompt|completion)"),
                &["model", "kind"],
            )?,
            retries: IntCounter::new("corral_upstream_retries_total", "Requests retried on another instance")?,
            ejections: IntCounterVec::new(
                Opts::new("corral_upstream_ejections_total", "Times an instance was taken out of the pool, by reason"),
                &["instance", "reason"],
            )?,
            streams_interrupted: IntCounterVec::new(
                Opts::new(
                    "corral_streams_interrupted_total",
                    "Responses that ended before their upstream finished, by cause (upstream|client)",
                ),
                &["cause"],
            )?,
            client_errors: IntCounterVec::new(
                Opts::new(
                    "corral_client_errors_total",
                    "Requests that failed on the client's side, by kind (gone|timeout|malformed|header_too_large)",
                ),
                &["kind"],
            )?,
            api_key_checks: IntCounterVec::new(
                Opts::new(
                    "corral_api_key_checks_total",
                    "API keys presented, by result (ok|invalid|revoked|expired|blocked|unavailable)",
                ),
                &["result"],
            )?,
            api_key_lookups: IntCounterVec::new(
                Opts::new(
                    "corral_api_key_lookups_total",
                    "API keys read from the database (cache misses), by result (found|unknown|error)",
                ),
                &["result"],
            )?,
            queue_waiting: IntGauge::new("corral_queue_waiting", "Requests waiting for a free instance slot")?,
            queue_rejections: IntCounterVec::new(
                Opts::new("corral_queue_rejections_total", "Requests refused by the pool queue (full|timeout)"),
                &["reason"],
            )?,
            tls_cert_expiry: IntGaugeVec::new(
                Opts::new(
                    "corral_tls_cert_expiry_timestamp_seconds",
                    "When each served certificate (by file) expires, in Unix seconds",
                ),
                &["cert_file"],
            )?,
            tls_reloads: IntCounterVec::new(
                Opts::new("corral_tls_reloads_total", "Certificate reloads, by result (ok|error)"),
                &["result"],
            )?,
            policy_reloads: IntCounterVec::new(
                Opts::new("corral_policy_reloads_total", "Policy reloads, by result (ok|error)"),
                &["result"],
            )?,
            rate_limited: IntCounterVec::new(
                Opts::new("corral_rate_limited_total", "Requests refused by a limit, by scope (org|user|ip|tokens|streams)"),
                &["scope"],
            )?,
            redis_errors: IntCounter::new("corral_redis_errors_total", "Redis calls that failed or timed out")?,
            ledger_dropped: IntCounter::new("corral_ledger_dropped_total", "Usage events lost because the ledger buffer was full")?,
            ledger_pending: IntGauge::new("corral_ledger_pending", "Usage events waiting to be written to PostgreSQL (ledger lag)")?,
            quota_rejections: IntCounterVec::new(Opts::new("corral_quota_rejections_total", "Requests refused by an org's hard quota"), &["org"])?,
            org_tokens: IntCounterVec::new(Opts::new("corral_org_tokens_total", "Tokens charged, by org, model and kind"), &["org", "model", "kind"])?,
            reservations: IntGauge::new("corral_quota_reservations", "Quota reservations outstanding (requests in flight)")?,
            quota_used: IntGaugeVec::new(
                Opts::new("corral_quota_used_tokens", "Tokens an org has used this quota period, as of its last request"),
                &["org"],
            )?,
            quota_limit: IntGaugeVec::new(
                Opts::new("corral_quota_limit_tokens", "An org's hard token limit for the period (0 = unlimited)"),
                &["org"],
            )?,
            time_to_first_token: HistogramVec::new(
                HistogramOpts::new(
                    "corral_time_to_first_token_seconds",
                    "Time from a model request's arrival to the first byte of its reply, by model",
                )
                .buckets(vec![
                    0.025, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 7.5, 10.0, 20.0, 60.0,
                ]),
                &["model"],
            )?,
            affinity: IntCounterVec::new(
                Opts::new(
                    "corral_affinity_total",
                    "How cache-aware routing chose instances: hit (the prefix's owner), miss (no owner), overloaded (owner too busy), none",
                ),
                &["result"],
            )?,
            affinity_blocks: prometheus::Histogram::with_opts(
                HistogramOpts::new("corral_affinity_matched_blocks", "Prompt blocks (messages) an affinity hit found cached")
                    .buckets(vec![1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0]),
            )?,
            model_loads: IntCounterVec::new(
                Opts::new("corral_model_loads_total", "Requests sent to an instance that did not have their model loaded"),
                &["instance"],
            )?,
            routing_decision: HistogramVec::new(
                HistogramOpts::new(
                    "corral_routing_decision_seconds",
                    "CPU time of choosing an instance (hashing the prompt, the prefix index, ranking), queue waits left out, by balance mode",
                )
                .buckets(vec![
                    1e-6, 2e-6, 5e-6, 1e-5, 2e-5, 5e-5, 1e-4, 2e-4, 5e-4, 1e-3,
                ]),
                &["balance"],
            )?,
            warm_waits: IntCounterVec::new(
                Opts::new(
                    "corral_warm_waits_total",
                    "Requests that waited for a slot where their model is loaded instead of loading it on a free instance, by outcome: warm (got one: a load avoided), cold (waited out the load estimate, then loaded it), failed (no slot in the queue timeout)",
                ),
                &["result"],
            )?,
            model_load_estimate: prometheus::GaugeVec::new(
                Opts::new(
                    "corral_model_load_estimate_seconds",
                    "What the pool expects a load of the model to cost before its first token: pool.model_load_estimate_ms, then learned from cold requests",
                ),
                &["model"],
            )?,
            registry,
        };
        m.register_all()?;
        Ok(m)
    }

    fn register_all(&self) -> Result<(), prometheus::Error> {
        let r = &self.registry;
        r.register(Box::new(self.requests.clone()))?;
        r.register(Box::new(self.duration.clone()))?;
        r.register(Box::new(self.upstream_in_flight.clone()))?;
        r.register(Box::new(self.upstream_healthy.clone()))?;
        r.register(Box::new(self.tokens.clone()))?;
        r.register(Box::new(self.retries.clone()))?;
        r.register(Box::new(self.ejections.clone()))?;
        r.register(Box::new(self.streams_interrupted.clone()))?;
        r.register(Box::new(self.client_errors.clone()))?;
        r.register(Box::new(self.api_key_checks.clone()))?;
        r.register(Box::new(self.api_key_lookups.clone()))?;
        r.register(Box::new(self.queue_waiting.clone()))?;
        r.register(Box::new(self.queue_rejections.clone()))?;
        r.register(Box::new(self.tls_reloads.clone()))?;
        r.register(Box::new(self.tls_cert_expiry.clone()))?;
        r.register(Box::new(self.policy_reloads.clone()))?;
        r.register(Box::new(self.rate_limited.clone()))?;
        r.register(Box::new(self.redis_errors.clone()))?;
        r.register(Box::new(self.ledger_dropped.clone()))?;
        r.register(Box::new(self.ledger_pending.clone()))?;
        r.register(Box::new(self.quota_rejections.clone()))?;
        r.register(Box::new(self.org_tokens.clone()))?;
        r.register(Box::new(self.reservations.clone()))?;
        r.register(Box::new(self.quota_used.clone()))?;
        r.register(Box::new(self.quota_limit.clone()))?;
        r.register(Box::new(self.time_to_first_token.clone()))?;
        r.register(Box::new(self.affinity.clone()))?;
        r.register(Box::new(self.affinity_blocks.clone()))?;
        r.register(Box::new(self.model_loads.clone()))?;
        r.register(Box::new(self.routing_decision.clone()))?;
        r.register(Box::new(self.warm_waits.clone()))?;
        r.register(Box::new(self.model_load_estimate.clone()))?;
        Ok(())
    }

    /// The text exposition format, as scraped.
    pub fn render(&self) -> String {
        let mut out = Vec::new();
        if let Err(e) = TextEncoder::new().encode(&self.registry.gather(), &mut out) {
            tracing::error!(error = %e, "cannot encode metrics");
        }
        String::from_utf8(out).unwrap_or_default()
    }
}
