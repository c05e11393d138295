//! The retention job: at start and then every `retention.interval_s`, messages older than
//! their org's retention are deleted. Deleting what is already gone deletes nothing, so the
//! job is idempotent and a missed or doubled run does no harm.

use std::time::Duration;

use crate::db::{retention, Pool};

/// Runs until the process ends.
pub fn spawn(pool: Pool, default_days: u32, interval: Duration) {
    tokio::spawn(async move {
        let mut ticker = tokio::time::interval(interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticker.tick().await;
            run_once(&pool, default_days).await;
        }
    });
}

/// One pass; failures are logged and retried at the next tick.
pub async fn run_once(pool: &Pool, default_days: u32) {
    match retention::delete_expired(pool, default_days).await {
        Ok(deleted) => {
            crate::metrics::get().retention_deleted.inc_by(deleted);
            tracing::info!(deleted, default_days, "retention: expired messages deleted");
        }
        Err(e) => tracing::warn!(error = %e, "retention: pass failed; will retry"),
    }
}
