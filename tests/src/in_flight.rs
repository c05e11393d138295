//! Exchanges in flight at a fake upstream, and the most seen at once: how tests check that
//! the gateway's per-instance cap bounds what an instance really sees.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

#[derive(Debug, Default)]
pub struct InFlightCounter {
    now: AtomicUsize,
    max: AtomicUsize,
}

impl InFlightCounter {
    /// Counts one exchange until the returned guard is dropped (handler finished, peer gone,
    /// or aborted).
    pub fn enter(self: &Arc<Self>) -> InFlight {
        let now = self.now.fetch_add(1, Ordering::Relaxed) + 1;
        self.max.fetch_max(now, Ordering::Relaxed);
        InFlight(Arc::clone(self))
    }

    pub fn current(&self) -> usize {
        self.now.load(Ordering::Relaxed)
    }

    pub fn max(&self) -> usize {
        self.max.load(Ordering::Relaxed)
    }
}

/// One exchange in flight; dropping it ends it.
pub struct InFlight(Arc<InFlightCounter>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.now.fetch_sub(1, Ordering::Relaxed);
    }
}
