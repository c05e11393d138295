//! Reloading policies when a file in the directory changes (polled, so it works on every
//! filesystem and editor save style) or on SIGHUP.
//!
//! Each look at the directory (listing, then reading and parsing on a change) runs on a
//! blocking thread under `policies.read_timeout`: a hung filesystem must not freeze the
//! watcher silently. A look that overruns is reported as a refused reload, and `/readyz`
//! shows the watcher stalled until it completes.

use std::path::{Path, PathBuf};
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
    pub read_timeout: Duration,
    pub hangups: Mutex<Option<broadcast::Receiver<()>>>,
}

type Snapshot = Vec<(PathBuf, Option<SystemTime>, u64, u64)>;

/// What a directory looks like: each `*.toml` with its modification time, size and inode (of
/// what a link points to, so an atomic swap of Kubernetes' `..data` link counts as a change
/// even when the new file has the old one's size and time).
fn snapshot(dir: &Path) -> Snapshot {
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
            let len = meta.as_ref().map_or(0, |m| m.len());
            let inode = meta.map_or(0, |m| std::os::unix::fs::MetadataExt::ino(&m));
            (p, modified, len, inode)
        })
        .collect();
    files.sort();
    files
}

/// Why a look at the directory happens.
#[derive(Clone, Copy)]
enum Cause {
    Poll,
    Hangup,
}

/// The outcome of one look: the new snapshot, and the reload result when one was attempted.
type Look = (Snapshot, Option<Result<(), String>>);

impl PolicyReloader {
    /// Lists the directory and reloads when it changed (or always, on SIGHUP), off the
    /// async workers and under the read timeout.
    async fn look(&self, last: &Snapshot, cause: Cause) -> Option<Snapshot> {
        let store = Arc::clone(&self.store);
        let last_copy = last.clone();
        let mut task = tokio::task::spawn_blocking(move || -> Look {
            let now = snapshot(&store.dir);
            let changed = now != last_copy || matches!(cause, Cause::Hangup);
            let result = changed.then(|| store.reload());
            (now, result)
        });
        let joined = match tokio::time::timeout(self.read_timeout, &mut task).await {
            Ok(joined) => joined,
            Err(_) => {
                self.report_stall();
                // Wait for the stuck look rather than pile up more threads behind it.
                task.await
            }
        };
        let (now, result) = joined.ok()?;
        self.store.mark_polled();
        if let Some(result) = result {
            self.report(result, cause);
        }
        Some(now)
    }

    fn report_stall(&self) {
        let msg = format!(
            "{}: reading the policy directory took longer than policies.read_timeout_ms ({} ms): the previous policy stays in force",
            self.store.dir.display(),
            self.read_timeout.as_millis()
        );
        self.store.set_error(Some(msg.clone()));
        self.metrics
            .policy_reloads
            .with_label_values(&["error"])
            .inc();
        tracing::error!(error = %msg, "policy watcher stalled");
    }

    fn report(&self, result: Result<(), String>, cause: Cause) {
        let why = match cause {
            Cause::Poll => "file change",
            Cause::Hangup => "SIGHUP",
        };
        match result {
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
        let dir = self.store.dir.clone();
        let mut last = tokio::task::spawn_blocking(move || snapshot(&dir))
            .await
            .unwrap_or_default();
        let mut tick = tokio::time::interval(self.interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let cause = tokio::select! {
                _ = tick.tick() => Cause::Poll,
                Ok(()) = async { match hup.as_mut() { Some(h) => h.recv().await, None => std::future::pending().await } } => Cause::Hangup,
                _ = shutdown.changed() => return,
            };
            if let Some(now) = self.look(&last, cause).await {
                last = now;
            }
        }
    }
}
