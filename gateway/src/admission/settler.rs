//! Settlements written in batches, off the request path (group commit). The end of a
//! request (token charges, its stream lease, its quota hold, the owner of its prompt's
//! blocks) joins a queue. When no write is in flight the queue is written at once, so at a
//! low rate each settlement goes alone and right away, ahead of the same client's next
//! admission on the same connection; while a write is in flight the queue grows, and the
//! next write takes all of it, as one script per org (one hash slot each) sent together on
//! the multiplexed connection. Under load Redis then runs one script for many requests.
//!
//! Nothing is lost by waiting: a request's place in SIGTERM's drain is held until its
//! settlement is written, its lease is renewed until then, and a quota hold only ever counts
//! more than the final count, so a later settlement refuses earlier, never overshoots. When
//! a write fails, its requests' charges and counts go to this process's counters (the Redis
//! holds and leases expire by themselves), as for one request before batching.

use std::sync::{Arc, Mutex};

use crate::drain::Flight;
use crate::state::AppState;

use super::Settlement;

/// The most settlements written at once.
const MAX_BATCH: usize = 256;

#[derive(Default)]
pub struct Queue(Mutex<Waiting>);

#[derive(Default)]
struct Waiting {
    items: Vec<Item>,
    /// A write is in flight; the waiting go in the next one.
    writing: bool,
}

struct Item {
    s: Settlement,
    /// The request's place in the drain, held until the settlement is written.
    _flight: Option<Flight>,
}

/// Queues `s`; writes the queue now unless a write is in flight (then right after it).
pub fn settle(state: &Arc<AppState>, s: Settlement, flight: Option<Flight>) {
    let Some(shared) = &state.shared else { return };
    let item = Item { s, _flight: flight };
    let start = {
        let mut w = shared.queue.0.lock().unwrap_or_else(|p| p.into_inner());
        w.items.push(item);
        !std::mem::replace(&mut w.writing, true)
    };
    if start {
        let state = Arc::clone(state);
        tokio::spawn(async move {
            while let Some(batch) = next(&state) {
                write(&state, batch).await;
            }
        });
    }
}

/// The next batch to write, or `None` (and no write in flight any more) when none waits.
fn next(state: &AppState) -> Option<Vec<Item>> {
    let shared = state.shared.as_ref()?;
    let mut w = shared.queue.0.lock().unwrap_or_else(|p| p.into_inner());
    if w.items.is_empty() {
        w.writing = false;
        return None;
    }
    let n = w.items.len().min(MAX_BATCH);
    Some(w.items.drain(..n).collect())
}

/// One script per org, all sent at once; a failed one is counted in this process.
async fn write(state: &AppState, mut batch: Vec<Item>) {
    let Some(shared) = &state.shared else { return };
    if batch.is_empty() {
        return;
    }
    batch.sort_by(|a, b| a.s.org.cmp(&b.s.org));
    let orgs: Vec<&[Item]> = batch.chunk_by(|a, b| a.s.org == b.s.org).collect();
    let calls = orgs.iter().map(|items| async move {
        let settlements: Vec<&Settlement> = items.iter().map(|i| &i.s).collect();
        shared.settle(&settlements).await
    });
    let results = futures::future::join_all(calls).await;
    for (items, result) in orgs.iter().zip(results) {
        if let Err(e) = result {
            state.limiter.mark_redis(false, Some(&e));
            tracing::error!(error = %e, org = %items[0].s.org, settlements = items.len(),
                "settling in Redis failed; counted in this process");
            for i in items.iter() {
                count_locally(state, &i.s);
            }
        }
    }
    let freed = batch.iter().any(|i| i.s.lease.is_some());
    // The leases go (no more renewal) and the requests leave the drain.
    drop(batch);
    if freed {
        shared.leases.freed.notify_waiters();
    }
}

/// A settlement Redis could not take: its charges and quota count go to this process's
/// counters.
fn count_locally(state: &AppState, s: &Settlement) {
    let _ = state.limiter.check(&s.charges);
    if let Some(q) = &s.quota {
        state
            .quota_store
            .settle_local(&q.org, &q.period, q.grant, q.actual);
    }
}
