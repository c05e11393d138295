//! Prometheus metrics, served at `GET /metrics`. One process-wide set (the errors module
//! counts database outages wherever they surface), registered in its own registry.

use std::sync::OnceLock;

use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
};

use crate::db::PoolStatus;

pub struct Metrics {
    registry: Registry,
    /// `corral_backend_requests_total{route,method,status}`; route is the matched pattern
    /// (`/api/conversations/{id}`), never the raw path, so cardinality stays bounded.
    pub requests: IntCounterVec,
    pub duration: HistogramVec,
    /// `corral_backend_chat_streams_total{outcome}`: complete, client_gone, upstream_error,
    /// refused (the gateway said no before streaming), unreachable.
    pub chat_streams: IntCounterVec,
    pub chat_streams_active: IntGauge,
    /// `corral_backend_chat_tokens_total{kind}`: prompt, completion (from final chunks).
    pub chat_tokens: IntCounterVec,
    pub db_unavailable: IntCounter,
    pub db_connections: IntGaugeVec,
    pub retention_deleted: IntCounter,
    /// A reply that could not be written after retries (logged with its message id).
    pub replies_lost: IntCounter,
}

fn build() -> Result<Metrics, prometheus::Error> {
    let registry = Registry::new();
    let requests = IntCounterVec::new(
        Opts::new("corral_backend_requests_total", "HTTP requests answered"),
        &["route", "method", "status"],
    )?;
    let duration = HistogramVec::new(
        HistogramOpts::new(
            "corral_backend_request_duration_seconds",
            "Time to the response head (streams: until they start)",
        )
        .buckets(vec![
            0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
        ]),
        &["route"],
    )?;
    let chat_streams = IntCounterVec::new(
        Opts::new(
            "corral_backend_chat_streams_total",
            "Chat turns by how they ended",
        ),
        &["outcome"],
    )?;
    let chat_streams_active = IntGauge::new(
        "corral_backend_chat_streams_active",
        "Chat replies streaming now",
    )?;
    let chat_tokens = IntCounterVec::new(
        Opts::new(
            "corral_backend_chat_tokens_total",
            "Tokens of stored replies",
        ),
        &["kind"],
    )?;
    let db_unavailable = IntCounter::new(
        "corral_backend_db_unavailable_total",
        "Requests answered 503 because the database was unavailable",
    )?;
    let db_connections = IntGaugeVec::new(
        Opts::new(
            "corral_backend_db_connections",
            "Pooled PostgreSQL connections",
        ),
        &["state"],
    )?;
    let retention_deleted = IntCounter::new(
        "corral_backend_retention_deleted_total",
        "Messages deleted by the retention job",
    )?;
    let replies_lost = IntCounter::new(
        "corral_backend_replies_lost_total",
        "Replies that could not be stored after retries",
    )?;
    registry.register(Box::new(requests.clone()))?;
    registry.register(Box::new(duration.clone()))?;
    registry.register(Box::new(chat_streams.clone()))?;
    registry.register(Box::new(chat_streams_active.clone()))?;
    registry.register(Box::new(chat_tokens.clone()))?;
    registry.register(Box::new(db_unavailable.clone()))?;
    registry.register(Box::new(db_connections.clone()))?;
    registry.register(Box::new(retention_deleted.clone()))?;
    registry.register(Box::new(replies_lost.clone()))?;
    Ok(Metrics {
        registry,
        requests,
        duration,
        chat_streams,
        chat_streams_active,
        chat_tokens,
        db_unavailable,
        db_connections,
        retention_deleted,
        replies_lost,
    })
}

static METRICS: OnceLock<Metrics> = OnceLock::new();

/// The process's metrics.
pub fn get() -> &'static Metrics {
    // Names and labels are constants: registering them cannot fail at run time.
    METRICS.get_or_init(|| build().expect("metric definitions are valid"))
}

/// The text exposition, with the pool gauges updated first.
pub fn render(pool: &PoolStatus) -> String {
    let m = get();
    m.db_connections
        .with_label_values(&["open"])
        .set(i64::from(pool.connections));
    m.db_connections
        .with_label_values(&["idle"])
        .set(i64::from(pool.idle));
    let mut out = Vec::new();
    if let Err(e) = TextEncoder::new().encode(&m.registry.gather(), &mut out) {
        tracing::error!(error = %e, "metrics encoding failed");
    }
    String::from_utf8(out).unwrap_or_default()
}
