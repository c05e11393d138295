//! The Ollama pool: its instances, their health and models, and how a request gets one.

mod affinity;
mod discovery;
mod estimates;
pub mod events;
mod fair;
mod instance;
mod listing;

pub use discovery::retry_after_secs;
pub use listing::{openai_model as openai_entry, Listing};
pub mod prefix;
mod select;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

pub use discovery::HealthChecker;
pub use instance::{normalize_model, Affinity, Instance, SlotGuard};
pub use select::{Hint, Requester, SelectError};

use crate::config::PoolConfig;
use crate::metrics::Metrics;

pub struct Pool {
    pub instances: Vec<Arc<Instance>>,
    pub config: PoolConfig,
    metrics: Arc<Metrics>,
    queue: std::sync::Mutex<fair::FairQueue>,
    tiebreak: AtomicUsize,
    /// Wakes the health checker for an instance whose replies failed (see `report_status`).
    probe_now: tokio::sync::Notify,
    /// Which instance holds which prompt prefix (cache-aware routing).
    index: affinity::PrefixIndex,
    /// Per model: what a load costs, how long a request holds a slot (learned as requests end).
    estimates: estimates::Estimates,
}

impl Pool {
    pub fn new(config: PoolConfig, metrics: Arc<Metrics>) -> Self {
        let instances = config
            .instances
            .iter()
            .enumerate()
            .map(|(i, url)| Arc::new(Instance::new(i, url.clone())))
            .collect();
        Self {
            instances,
            index: affinity::PrefixIndex::new(config.affinity_entries),
            estimates: estimates::Estimates::new(config.model_load_estimate),
            // Only cache-aware routing bends the fair order (least_busy and round_robin keep
            // today's strict order, to be compared against).
            queue: std::sync::Mutex::new(fair::FairQueue::with_window(match config.balance {
                crate::config::Balance::CacheAware => config.affinity_queue_window,
                _ => 0,
            })),
            config,
            metrics,
            tiebreak: AtomicUsize::new(0),
            probe_now: tokio::sync::Notify::new(),
        }
    }

    pub fn healthy_count(&self) -> usize {
        self.instances.iter().filter(|i| i.is_healthy()).count()
    }

    pub fn waiting(&self) -> usize {
        self.queue.lock().map_or(0, |q| q.len())
    }

    /// Passive ejection: a connect failure takes the instance out at once; the health checker
    /// re-admits it when it answers again.
    pub fn report_connect_failure(&self, instance: &Instance) {
        self.eject(instance, "connect", "connecting failed");
    }

    /// Repeated 5xx replies ask for a health probe of the instance at once; only a failed
    /// probe ejects it. A client can make an instance answer 500 (a body it cannot digest),
    /// so replies to client requests alone must never take an instance out of the pool.
    /// Ollama's 503 "server busy" is load, not sickness, and does not count.
    pub fn report_status(&self, instance: &Instance, status: u16) {
        if (500..600).contains(&status) && status != 503 {
            instance.events.push("error", format!("answered {status}"));
            let n = instance.consecutive_5xx.fetch_add(1, Ordering::AcqRel) + 1;
            if n >= self.config.eject_after_5xx
                && !instance.probe_wanted.swap(true, Ordering::AcqRel)
            {
                tracing::info!(instance = %instance.url.base, consecutive_5xx = n, "instance keeps answering 5xx: probing it before ejecting");
                self.probe_now.notify_one();
            }
        } else if status < 500 {
            instance.consecutive_5xx.store(0, Ordering::Release);
        }
    }

    /// Resolves when some instance wants an immediate probe (for the health checker).
    pub(crate) async fn probe_requested(&self) {
        self.probe_now.notified().await;
    }

    fn eject(&self, instance: &Instance, reason: &str, detail: &str) {
        if instance.healthy.swap(false, Ordering::AcqRel) {
            tracing::warn!(instance = %instance.url.base, reason, "instance ejected from the pool");
            instance
                .events
                .push("ejected", format!("{reason}: {detail}"));
            // Whatever it held in its prompt caches may be gone (a restart): its
            // conversations go elsewhere and are remembered there.
            self.index.forget_instance(instance.index);
            self.metrics
                .ejections
                .with_label_values(&[instance.url.base.as_str(), reason])
                .inc();
            self.metrics
                .upstream_healthy
                .with_label_values(&[instance.url.base.as_str()])
                .set(0);
        }
    }

    /// Marks an instance healthy after a successful check.
    fn admit(&self, instance: &Instance) {
        instance.consecutive_5xx.store(0, Ordering::Release);
        if !instance.healthy.swap(true, Ordering::AcqRel) {
            tracing::info!(instance = %instance.url.base, "instance admitted to the pool");
            instance
                .events
                .push("admitted", "answered its health check");
        }
        self.metrics
            .upstream_healthy
            .with_label_values(&[instance.url.base.as_str()])
            .set(1);
    }

    /// Updates the per-instance in-flight gauges (called when metrics are scraped).
    pub fn export_gauges(&self) {
        for i in &self.instances {
            let label = [i.url.base.as_str()];
            self.metrics
                .upstream_in_flight
                .with_label_values(&label)
                .set(i.in_flight() as i64);
            self.metrics
                .upstream_healthy
                .with_label_values(&label)
                .set(i64::from(i.is_healthy()));
        }
        self.metrics.queue_waiting.set(self.waiting() as i64);
        // Every model the pool serves, learned or still at the configured value.
        for i in &self.instances {
            for model in &i.models.load().available {
                self.metrics
                    .model_load_estimate
                    .with_label_values(&[model.as_str()])
                    .set(self.estimates.get(model).load.as_secs_f64());
            }
        }
    }

    /// What a request that ended teaches about its model: a warm one how long a request holds
    /// its slot; a cold one whose reply streamed (`first_token`: when its first byte came) what
    /// a load costs before the first token. A non-streamed reply's first byte comes after its
    /// whole generation, and a failed request's times say nothing, so neither teaches.
    pub fn learn(&self, slot: &SlotGuard, model: &str, ok: bool, first_token: Option<Instant>) {
        if !ok {
            return;
        }
        if !slot.cold {
            self.estimates.learn_hold(model, slot.taken.elapsed());
        } else if let Some(at) = first_token {
            let load = at.saturating_duration_since(slot.taken);
            self.estimates.learn_load(model, load);
        }
    }
}
