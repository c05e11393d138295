//! Choosing an instance for a request: healthy, has the model, has it loaded, least in flight;
//! waiting in a bounded queue when every candidate is at its in-flight cap.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use super::instance::{Instance, SlotGuard};
use super::Pool;
use crate::errors::GatewayError;

/// Why no instance could be given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SelectError {
    /// No healthy instance serves this model.
    ModelNotFound(String),
    /// No healthy instance at all (or all tried already).
    NoHealthyInstance,
    /// The wait queue is full.
    QueueFull,
    /// Waited the whole queue timeout.
    QueueTimeout,
}

impl SelectError {
    pub fn into_gateway_error(self, retry_after: u64) -> GatewayError {
        match self {
            SelectError::ModelNotFound(m) => GatewayError::model_not_found(&m),
            SelectError::NoHealthyInstance => {
                GatewayError::unavailable("no healthy Ollama instance is available", retry_after)
            }
            SelectError::QueueFull => GatewayError::unavailable(
                "every Ollama instance is busy and the wait queue is full",
                retry_after,
            ),
            SelectError::QueueTimeout => GatewayError::unavailable(
                "every Ollama instance stayed busy for the whole queue timeout",
                retry_after,
            ),
        }
    }
}

enum Attempt {
    Got(SlotGuard),
    AllBusy,
    Failed(SelectError),
}

impl Pool {
    /// Takes a slot on the best instance for `model` (any instance when `None`), skipping
    /// `exclude` (instances already tried for this request).
    pub async fn acquire(
        &self,
        model: Option<&str>,
        exclude: &[usize],
    ) -> Result<SlotGuard, SelectError> {
        match self.try_acquire(model, exclude) {
            Attempt::Got(g) => return Ok(g),
            Attempt::Failed(e) => return Err(e),
            Attempt::AllBusy => {}
        }
        let waiting = self.waiting.fetch_add(1, Ordering::AcqRel);
        let _leave = WaitTicket(self);
        if waiting >= self.config.queue_size {
            self.metrics
                .queue_rejections
                .with_label_values(&["full"])
                .inc();
            return Err(SelectError::QueueFull);
        }
        let deadline = Instant::now() + self.config.queue_timeout;
        loop {
            let notified = self.released.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            match self.try_acquire(model, exclude) {
                Attempt::Got(g) => return Ok(g),
                Attempt::Failed(e) => return Err(e),
                Attempt::AllBusy => {}
            }
            let remaining = deadline.saturating_duration_since(Instant::now());
            if tokio::time::timeout(remaining, notified).await.is_err() {
                self.metrics
                    .queue_rejections
                    .with_label_values(&["timeout"])
                    .inc();
                return Err(SelectError::QueueTimeout);
            }
        }
    }

    fn try_acquire(&self, model: Option<&str>, exclude: &[usize]) -> Attempt {
        let candidates: Vec<&Arc<Instance>> = self
            .instances
            .iter()
            .filter(|i| i.is_healthy() && !exclude.contains(&i.index))
            .filter(|i| model.is_none_or(|m| i.has_model(m)))
            .collect();
        if candidates.is_empty() {
            return Attempt::Failed(self.why_no_candidate(model, exclude));
        }
        let cap = self.config.max_inflight_per_instance;
        for instance in rank(candidates, model, self.next_tiebreak()) {
            if instance.try_take_slot(cap) {
                return Attempt::Got(SlotGuard {
                    instance: Arc::clone(instance),
                    released: Arc::clone(&self.released),
                });
            }
        }
        Attempt::AllBusy
    }

    /// A model that some instance has (even one that is down or already tried) is a 503,
    /// so clients retry; a model that no instance has is Ollama's own 404.
    fn why_no_candidate(&self, model: Option<&str>, exclude: &[usize]) -> SelectError {
        let usable = self
            .instances
            .iter()
            .any(|i| i.is_healthy() && !exclude.contains(&i.index));
        match model {
            Some(m) if usable && !self.instances.iter().any(|i| i.has_model(m)) => {
                SelectError::ModelNotFound(m.to_string())
            }
            _ => SelectError::NoHealthyInstance,
        }
    }

    fn next_tiebreak(&self) -> usize {
        self.tiebreak.fetch_add(1, Ordering::Relaxed)
    }
}

/// Orders candidates: model loaded first, then least in flight; equal ones rotate so load
/// spreads instead of piling onto the first instance.
fn rank<'a>(
    mut c: Vec<&'a Arc<Instance>>,
    model: Option<&str>,
    rotate: usize,
) -> Vec<&'a Arc<Instance>> {
    let n = c.len();
    c.rotate_left(rotate % n);
    c.sort_by_key(|i| {
        let not_loaded = model.is_some_and(|m| !i.has_loaded(m));
        (not_loaded, i.in_flight())
    });
    c
}

/// Leaves the wait queue on every exit path.
struct WaitTicket<'a>(&'a Pool);

impl Drop for WaitTicket<'_> {
    fn drop(&mut self) {
        self.0.waiting.fetch_sub(1, Ordering::AcqRel);
    }
}
