//! Concurrent streams per org (and per user when a policy says so), counted in this process:
//! without Redis, or while it is away. With Redis a slot is a lease shared by every replica
//! (see `admission`).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

#[derive(Default)]
pub struct Streams {
    counts: Mutex<HashMap<String, u64>>,
    released: Notify,
}

/// A held stream slot; dropping it frees the slot.
pub struct StreamGuard {
    streams: Arc<Streams>,
    keys: Vec<String>,
}

impl Drop for StreamGuard {
    fn drop(&mut self) {
        if let Ok(mut counts) = self.streams.counts.lock() {
            for k in &self.keys {
                if let Some(n) = counts.get_mut(k) {
                    *n = n.saturating_sub(1);
                    if *n == 0 {
                        counts.remove(k);
                    }
                }
            }
        }
        self.streams.released.notify_waiters();
    }
}

impl Streams {
    /// Takes a slot under every `(key, max)` (max 0 = unlimited), waiting up to `wait` for
    /// one to free; `None` when none did.
    pub async fn acquire(
        self: &Arc<Self>,
        limits: &[(String, u64)],
        wait: Duration,
    ) -> Option<StreamGuard> {
        let deadline = Instant::now() + wait;
        loop {
            let notified = self.released.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if let Some(g) = self.try_acquire(limits) {
                return Some(g);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if tokio::time::timeout(left, notified).await.is_err() {
                return None;
            }
        }
    }

    fn try_acquire(self: &Arc<Self>, limits: &[(String, u64)]) -> Option<StreamGuard> {
        let mut counts = self.counts.lock().ok()?;
        let full = limits
            .iter()
            .any(|(k, max)| *max > 0 && counts.get(k).copied().unwrap_or(0) >= *max);
        if full {
            return None;
        }
        for (k, _) in limits {
            *counts.entry(k.clone()).or_insert(0) += 1;
        }
        Some(StreamGuard {
            streams: Arc::clone(self),
            keys: limits.iter().map(|(k, _)| k.clone()).collect(),
        })
    }
}
