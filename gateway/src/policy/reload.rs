//! Reloading policies when a file in the directory changes (polled, so it works on every
//! filesystem and editor save style) or on SIGHUP.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use pingora_core::server::ShutdownWatch;
use pingora_core::services::background::BackgroundService;
use tokio::sync::broadcast;

use super::PolicyStore;
use crate::metrics::Metrics;

pub struct PolicyReloader {
    pub store: Arc<PolicyStore>,
    pub metrics: Arc<Metrics>,
    pub interval: Duration,
    pub hangups: Mutex<Option<broadcast::Receiver<()>>>,
}

/// What a directory looks like: each `*.toml` with its modification time and size.
fn snapshot(dir: &PathBuf) -> Vec<(PathBuf, Option<SystemTime>, u64)> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut files: Vec<_> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .map(|p| {
            let meta = std::fs::metadata(&p).ok();
            let modified = meta.as_ref().and_then(|m| m.modified().ok());
            let len = meta.map_or(0, |m| m.len());
            (p, modified, len)
        })
        .collect();
    files.sort();
    files
}

impl PolicyReloader {
    fn reload(&self, why: &str) {
        match self.store.reload() {
            Ok(()) => {
                self.metrics.policy_reloads.with_label_values(&["ok"]).inc();
                tracing::info!(reason = why, dir = %self.store.dir.display(), "policies reloaded");
            }
            Err(e) => {
                self.metrics
                    .policy_reloads
                    .with_label_values(&["error"])
                    .inc();
                tracing::error!(reason = why, error = %e, "policy reload refused; the previous policy stays in force");
            }
        }
    }
}

#[async_trait]
impl BackgroundService for PolicyReloader {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let mut hup = self.hangups.lock().ok().and_then(|mut h| h.take());
        let mut last = snapshot(&self.store.dir);
        let mut tick = tokio::time::interval(self.interval);
        loop {
            tokio::select! {
                _ = tick.tick() => {
                    let now = snapshot(&self.store.dir);
                    if now != last {
                        last = now;
                        self.reload("file change");
                    }
                }
                Ok(()) = async { match hup.as_mut() { Some(h) => h.recv().await, None => std::future::pending().await } } => {
                    last = snapshot(&self.store.dir);
                    self.reload("SIGHUP");
                }
                _ = shutdown.changed() => return,
            }
        }
    }
}
