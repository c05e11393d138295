//! Concurrent-stream slots held in Redis as leases: a sorted-set member per stream, scored by
//! when it expires. A running stream's lease is renewed in the background; a gateway that
//! dies stops renewing, so its slots come back within one lease instead of never.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use pingora_core::server::ShutdownWatch;
use pingora_core::services::background::BackgroundService;
use tokio::sync::Notify;

use super::Shared;

/// The leases this process holds, for renewal.
#[derive(Default, Debug)]
pub struct Leases {
    held: Mutex<HashMap<String, Vec<String>>>,
    /// Woken when a lease of this process is freed (a waiting request asks again at once).
    pub freed: Notify,
}

/// One stream's lease; freed by the settlement script at the end of the request, or by
/// expiry if this process dies first.
#[derive(Debug)]
pub struct Lease {
    pub member: String,
    pub keys: Vec<String>,
    leases: Arc<Leases>,
}

impl Leases {
    pub fn hold(self: &Arc<Self>, member: String, keys: Vec<String>) -> Lease {
        if let Ok(mut held) = self.held.lock() {
            held.insert(member.clone(), keys.clone());
        }
        Lease {
            member,
            keys,
            leases: Arc::clone(self),
        }
    }

    fn snapshot(&self) -> Vec<(String, Vec<String>)> {
        self.held
            .lock()
            .map(|h| h.iter().map(|(m, k)| (m.clone(), k.clone())).collect())
            .unwrap_or_default()
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        if let Ok(mut held) = self.leases.held.lock() {
            held.remove(&self.member);
        }
    }
}

/// Renews every held lease three times per lease period.
pub struct LeaseKeeper {
    pub shared: Arc<Shared>,
}

#[async_trait]
impl BackgroundService for LeaseKeeper {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let mut tick = tokio::time::interval(self.shared.lease / 3);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => self.renew_all().await,
                _ = shutdown.changed() => return,
            }
        }
    }
}

impl LeaseKeeper {
    async fn renew_all(&self) {
        let held = self.shared.leases.snapshot();
        if held.is_empty() {
            return;
        }
        // Sent together: the multiplexed connection pipelines them.
        let calls = held
            .iter()
            .map(|(member, keys)| self.shared.renew(member, keys));
        let failed = futures::future::join_all(calls)
            .await
            .into_iter()
            .filter(Result::is_err)
            .count();
        if failed > 0 {
            tracing::warn!(
                failed,
                held = held.len(),
                "stream leases not renewed in Redis; they expire unless renewed next time"
            );
        }
    }
}
