//! Active health checks and model discovery, in the background.
//!
//! Each round asks every instance for `/api/tags` (what it has: also the liveness probe) and
//! `/api/ps` (what it has loaded). An instance that answers is admitted; one that does not is
//! ejected until it answers again. Names are resolved here, never on the request path.

use std::collections::HashSet;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use pingora_core::server::ShutdownWatch;
use pingora_core::services::background::BackgroundService;
use serde::Deserialize;

use super::instance::{normalize_model, Instance, ModelSets};
use super::Pool;

/// Runs health checks every `pool.health_interval` until shutdown.
pub struct HealthChecker {
    pool: Arc<Pool>,
    client: reqwest::Client,
}

#[derive(Deserialize)]
struct ModelList {
    #[serde(default)]
    models: Vec<serde_json::Value>,
}

impl HealthChecker {
    pub fn new(pool: Arc<Pool>) -> Self {
        let client = reqwest::Client::builder()
            .timeout(pool.config.health_timeout)
            .connect_timeout(pool.config.health_timeout)
            .pool_max_idle_per_host(2)
            .build()
            .unwrap_or_default();
        Self { pool, client }
    }

    /// One round over every instance, concurrently.
    pub async fn check_all(&self) {
        let checks = self.pool.instances.iter().map(|i| self.check(i));
        futures::future::join_all(checks).await;
        // Admitted instances and newly found models may serve requests waiting in the queue.
        self.pool.dispatch();
    }

    /// Probes the instances whose replies kept failing (see `Pool::report_status`): a failed
    /// probe ejects with reason `5xx`, a good one clears the count.
    async fn check_wanted(&self) {
        let wanted = self
            .pool
            .instances
            .iter()
            .filter(|i| i.probe_wanted.load(Ordering::Acquire));
        let checks = wanted.map(|i| async move {
            self.check_as(i, "5xx").await;
            i.probe_wanted.store(false, Ordering::Release);
        });
        futures::future::join_all(checks).await;
        self.pool.dispatch();
    }

    async fn check(&self, instance: &Arc<Instance>) {
        self.check_as(instance, "health_check").await;
    }

    async fn check_as(&self, instance: &Arc<Instance>, reason_label: &str) {
        let outcome = self.probe(instance).await;
        instance.events.mark_checked();
        match outcome {
            Ok(models) => {
                instance.models.store(Arc::new(models));
                self.pool.admit(instance);
            }
            Err(reason) => {
                if instance.is_healthy() {
                    tracing::warn!(instance = %instance.url.base, %reason, "health check failed");
                }
                self.pool.eject(instance, reason_label, &reason);
            }
        }
    }

    async fn probe(&self, instance: &Instance) -> Result<ModelSets, String> {
        let target = format!("{}:{}", instance.url.host, instance.url.port);
        let addr = tokio::net::lookup_host(&target)
            .await
            .map_err(|e| format!("cannot resolve {target}: {e}"))?
            .next()
            .ok_or_else(|| format!("{target} resolves to no address"))?;
        instance.addr.store(Arc::new(Some(addr)));
        let tags = self.fetch(instance, "/api/tags").await?;
        // /api/ps is informative: an old Ollama without it is still healthy.
        let ps = self.fetch(instance, "/api/ps").await.unwrap_or_default();
        Ok(ModelSets {
            available: names(&tags),
            loaded: names(&ps),
            tags,
            ps,
        })
    }

    async fn fetch(
        &self,
        instance: &Instance,
        path: &str,
    ) -> Result<Vec<serde_json::Value>, String> {
        let url = format!("{}{path}", instance.url.base);
        let resp = self
            .client
            .get(&url)
            .send()
            .await
            .map_err(|e| format!("GET {url}: {e}"))?;
        if !resp.status().is_success() {
            return Err(format!("GET {url}: status {}", resp.status()));
        }
        let list: ModelList = resp
            .json()
            .await
            .map_err(|e| format!("GET {url}: bad JSON: {e}"))?;
        Ok(list.models)
    }
}

fn names(models: &[serde_json::Value]) -> HashSet<String> {
    models
        .iter()
        .filter_map(|m| {
            m.get("name")
                .or_else(|| m.get("model"))
                .and_then(|n| n.as_str())
        })
        .map(normalize_model)
        .collect()
}

#[async_trait]
impl BackgroundService for HealthChecker {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let mut tick = tokio::time::interval(self.pool.config.health_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => self.check_all().await,
                _ = self.pool.probe_requested() => self.check_wanted().await,
                _ = shutdown.changed() => return,
            }
        }
    }
}

/// How long to tell clients to wait before retrying when the pool cannot take them.
pub fn retry_after_secs(interval: Duration) -> u64 {
    interval.as_secs().clamp(1, 30)
}
