//! Choosing an instance for a request: healthy, has the model, has it loaded, least in flight;
//! waiting in a bounded queue when every candidate is at its in-flight cap.
//!
//! Cache-aware routing also waits when the only free instances would have to load the model
//! while a slot where it is loaded should free sooner than a load takes (`Attempt::WaitWarm`):
//! the request is parked in the fair queue for a warm slot, for at most the load estimate,
//! then takes whatever instance is free. The check runs only once every warm candidate was
//! found full; a request whose best instance is warm and free pays nothing for it.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use super::affinity::Owner;
use super::fair::{FairQueue, Want};
use super::instance::{Affinity, Instance, SlotGuard};
use super::prefix::PromptChain;
use super::Pool;
use crate::config::Balance;
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
    /// Only instances that must load the model are free, and a warm slot should free sooner
    /// than the load (the estimate, the longest the request waits for one).
    WaitWarm(Duration),
}

/// What cache-aware routing knows of a request: its prompt, and the instance Redis names as
/// holding its deepest block (URL, blocks).
#[derive(Debug, Clone, Copy, Default)]
pub struct Hint<'a> {
    pub prompt: Option<&'a PromptChain>,
    pub shared: Option<(&'a str, usize)>,
    /// What hashing the prompt cost (part of the routing decision's cost).
    pub hashing: Duration,
}

/// Who is asking, for the fair queue.
#[derive(Debug, Clone, Copy)]
pub struct Requester<'a> {
    pub org: &'a str,
    pub weight: u64,
}

impl Pool {
    /// Takes a slot on the best instance for `model` (any instance when `None`), skipping
    /// `exclude` (instances already tried for this request). When every candidate is full the
    /// request waits in the fair queue, up to the queue timeout.
    pub async fn acquire(
        self: &Arc<Self>,
        model: Option<&str>,
        exclude: &[usize],
        who: Requester<'_>,
        hint: Hint<'_>,
    ) -> Result<SlotGuard, SelectError> {
        let prompt = hint.prompt;
        let started = Instant::now();
        let affinity = self.affinity_for(hint);
        let looked_up = started.elapsed();
        let mut slot = self.acquire_any(model, exclude, who, affinity).await?;
        slot.cold = model.is_some_and(|m| !slot.instance.has_loaded(m));
        // The decision's own cost (hashing the prompt, the index, ranking, recording), for
        // requests placed at once: a queued one waited, which is not the decision's cost.
        let decided = slot.decided.take();
        let usable = |i: usize| {
            self.instances
                .get(i)
                .is_some_and(|i| i.is_healthy() && model.is_none_or(|m| i.has_loaded(m)))
        };
        slot.affinity = match affinity.owner {
            Some(o) if o.instance == slot.instance.index => Affinity::Hit(o.blocks),
            // Its owner was there, warm, but too busy: bounded load sent it elsewhere (an owner
            // that is gone or has unloaded the model is a miss).
            Some(o) if usable(o.instance) => Affinity::Overloaded,
            Some(_) => Affinity::Miss,
            None if prompt.is_some() && self.config.balance == Balance::CacheAware => {
                Affinity::Miss
            }
            None => Affinity::None,
        };
        let recording = Instant::now();
        if let (Some(p), Balance::CacheAware) = (prompt, self.config.balance) {
            self.index.record(p, slot.instance.index);
        }
        if let Some(ranked) = decided {
            let decision = hint.hashing + looked_up + ranked + recording.elapsed();
            self.metrics
                .routing_decision
                .with_label_values(&[self.config.balance.as_str()])
                .observe(decision.as_secs_f64());
        }
        Ok(slot)
    }

    /// The deeper of this process's own index and what Redis said (another replica's
    /// choices), when routing by prefix.
    fn affinity_for(&self, hint: Hint<'_>) -> Wish {
        let (Some(p), Balance::CacheAware) = (hint.prompt, self.config.balance) else {
            return Wish::default();
        };
        let local = self.index.owner(p);
        let shared = hint.shared.and_then(|(url, blocks)| {
            let i = self.instances.iter().find(|i| i.url.base == url)?;
            Some(Owner {
                instance: i.index,
                blocks,
            })
        });
        let owner = match (local, shared) {
            (Some(l), Some(s)) if s.blocks > l.blocks => Some(s),
            (l, s) => l.or(s),
        };
        Wish { owner }
    }

    async fn acquire_any(
        self: &Arc<Self>,
        model: Option<&str>,
        exclude: &[usize],
        who: Requester<'_>,
        wish: Wish,
    ) -> Result<SlotGuard, SelectError> {
        let (id, rx, park) = {
            let mut queue = self.lock_queue();
            // Newcomers do not jump a queue that is waiting (waiters parked for a warm slot
            // wait for something no free slot offers: they let newcomers look).
            let attempt = if queue.only_parked() {
                let tried = Instant::now();
                let may_park = (queue.len() < self.config.queue_size).then_some(&*queue);
                match self.try_acquire(model, exclude, wish, may_park) {
                    Attempt::Got(mut g) => {
                        g.decided = Some(tried.elapsed());
                        Attempt::Got(g)
                    }
                    other => other,
                }
            } else {
                match self.candidates(model, exclude).is_empty() {
                    true => Attempt::Failed(self.why_no_candidate(model, exclude)),
                    false => Attempt::AllBusy,
                }
            };
            let park = match attempt {
                Attempt::Got(g) => return Ok(g),
                Attempt::Failed(e) => return Err(e),
                Attempt::AllBusy => None,
                Attempt::WaitWarm(estimate) => Some(estimate),
            };
            if queue.len() >= self.config.queue_size {
                self.metrics
                    .queue_rejections
                    .with_label_values(&["full"])
                    .inc();
                return Err(SelectError::QueueFull);
            }
            let (tx, rx) = oneshot::channel();
            let want = Want {
                org: who.org,
                weight: who.weight,
                model: model.map(str::to_string),
                exclude: exclude.to_vec(),
                warm_only: park.is_some(),
                owner: wish.owner.map(|o| o.instance),
            };
            let id = queue.enqueue(want, tx);
            (id, rx, park)
        };
        // A slot may have freed between the check and the enqueue.
        self.dispatch();
        let Some(estimate) = park else {
            return self.wait(id, rx, self.config.queue_timeout).await;
        };
        let waited = Instant::now();
        let got = self
            .wait_warm(id, rx, estimate, (model, exclude, wish))
            .await;
        let result = match (&got, model) {
            (Ok(g), Some(m)) if g.instance.has_loaded(m) => "warm",
            (Ok(_), _) => "cold",
            (Err(_), _) => "failed",
        };
        self.metrics.warm_waits.with_label_values(&[result]).inc();
        tracing::debug!(
            model = model.unwrap_or("-"),
            result,
            waited_ms = waited.elapsed().as_millis() as u64,
            "waited for a slot where the model is loaded"
        );
        got
    }

    /// Parked for a warm slot, at most `estimate` (and the queue timeout); then the request
    /// takes a free instance that must load the model, or waits on like any other.
    async fn wait_warm(
        self: &Arc<Self>,
        id: u64,
        mut rx: oneshot::Receiver<SlotGuard>,
        estimate: Duration,
        (model, exclude, wish): (Option<&str>, &[usize], Wish),
    ) -> Result<SlotGuard, SelectError> {
        let started = Instant::now();
        let limit = self.config.queue_timeout;
        match tokio::time::timeout(estimate.min(limit), &mut rx).await {
            Ok(Ok(guard)) => return Ok(guard),
            Ok(Err(_)) => return Err(SelectError::NoHealthyInstance),
            Err(_) => {}
        }
        {
            let mut queue = self.lock_queue();
            if !queue.contains(id) {
                // Handed a slot in the same instant the wait ran out (sent under this lock).
                return rx.try_recv().map_err(|_| SelectError::NoHealthyInstance);
            }
            match self.try_acquire(model, exclude, wish, None) {
                Attempt::Got(guard) => {
                    queue.remove(id);
                    return Ok(guard);
                }
                Attempt::Failed(e) => {
                    queue.remove(id);
                    return Err(e);
                }
                // Everything is full now: the request keeps its place and takes what frees.
                Attempt::AllBusy | Attempt::WaitWarm(_) => queue.unpark(id),
            }
        }
        self.wait(id, rx, limit.saturating_sub(started.elapsed()))
            .await
    }

    /// Waits in the queue for a slot, up to `limit`.
    async fn wait(
        self: &Arc<Self>,
        id: u64,
        mut rx: oneshot::Receiver<SlotGuard>,
        limit: Duration,
    ) -> Result<SlotGuard, SelectError> {
        match tokio::time::timeout(limit, &mut rx).await {
            Ok(Ok(guard)) => Ok(guard),
            Ok(Err(_)) => Err(SelectError::NoHealthyInstance),
            Err(_) => {
                let removed = self.lock_queue().remove(id);
                if !removed {
                    // Handed a slot in the same instant the wait ran out: take it.
                    if let Ok(guard) = rx.try_recv() {
                        return Ok(guard);
                    }
                }
                self.metrics
                    .queue_rejections
                    .with_label_values(&["timeout"])
                    .inc();
                Err(SelectError::QueueTimeout)
            }
        }
    }

    fn lock_queue(&self) -> std::sync::MutexGuard<'_, FairQueue> {
        self.queue
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn candidates(&self, model: Option<&str>, exclude: &[usize]) -> Vec<&Arc<Instance>> {
        self.instances
            .iter()
            .filter(|i| i.is_healthy() && !exclude.contains(&i.index))
            .filter(|i| model.is_none_or(|m| i.has_model(m)))
            .collect()
    }

    /// The best free instance, if any. With `park` (cache-aware routing, room in the queue),
    /// a request whose only free instances must load its model may be told to wait for a
    /// warm slot instead (see [`Self::worth_waiting`]).
    fn try_acquire(
        self: &Arc<Self>,
        model: Option<&str>,
        exclude: &[usize],
        wish: Wish,
        park: Option<&FairQueue>,
    ) -> Attempt {
        let candidates = self.candidates(model, exclude);
        if candidates.is_empty() {
            return Attempt::Failed(self.why_no_candidate(model, exclude));
        }
        let cap = self.config.max_inflight_per_instance;
        // An owner that has since unloaded the model lost its cache with it (Ollama drops a
        // model's slots on unload): sending the turn there would only cause another load.
        let warm = |i: &&Arc<Instance>| model.is_none_or(|m| i.has_loaded(m));
        if let Some(owner) = wish.owner_among(&candidates).filter(warm) {
            if !self.overloaded(owner, &candidates) && owner.try_take_slot(cap) {
                return Attempt::Got(self.guard(owner));
            }
        }
        let rotate = self.next_tiebreak();
        let (order, mut park) = match self.config.balance {
            Balance::RoundRobin => (round_robin(candidates, rotate), None),
            Balance::LeastBusy => (rank(candidates, model, rotate, false), None),
            Balance::CacheAware => (rank(candidates, model, rotate, true), park),
        };
        // Slots taken on full instances that have the model loaded (ranked first).
        let mut warm_busy = 0;
        for instance in order {
            if let (Some(m), Some(queue)) = (model, park) {
                if warm_busy > 0 && !instance.has_loaded(m) {
                    // The first free instance from here on must load the model.
                    if let Some(wait) = self.worth_waiting(m, warm_busy, queue) {
                        return Attempt::WaitWarm(wait);
                    }
                    park = None;
                }
            }
            if instance.try_take_slot(cap) {
                return Attempt::Got(self.guard(instance));
            }
            if park.is_some() && warm(&instance) {
                warm_busy += instance.in_flight();
            }
        }
        Attempt::AllBusy
    }

    /// How long to wait for a warm slot of `model` rather than load it elsewhere: the load
    /// estimate, when a slot should free sooner than that (see `estimates::warm_wait`);
    /// `None` when nothing is known of its requests' length or waiting would take longer.
    fn worth_waiting(&self, model: &str, busy: usize, queue: &FairQueue) -> Option<Duration> {
        if self.config.queue_timeout.is_zero() {
            return None;
        }
        let t = self.estimates.get(model);
        let wait = super::estimates::warm_wait(t.hold, busy, queue.parked_for(model))?;
        (wait < t.load).then_some(t.load)
    }

    /// Consistent hashing with bounded loads: the owner takes the request unless its load
    /// would pass `ceil(c × mean + 1)` over the instances that could serve it.
    fn overloaded(&self, owner: &Instance, candidates: &[&Arc<Instance>]) -> bool {
        let total: usize = candidates.iter().map(|i| i.in_flight()).sum();
        let mean = total as f64 / candidates.len() as f64;
        let bound = (self.config.affinity_load_factor * mean + 1.0).ceil() as usize;
        owner.in_flight() + 1 > bound
    }

    fn guard(self: &Arc<Self>, instance: &Arc<Instance>) -> SlotGuard {
        SlotGuard {
            instance: Arc::clone(instance),
            pool: Arc::clone(self),
            armed: true,
            affinity: Affinity::None,
            decided: None,
            cold: false,
            taken: Instant::now(),
        }
    }

    /// A slot on `instance` was freed: hand it to the fairest waiter it can serve, or free it.
    pub(super) fn release(self: &Arc<Self>, instance: &Arc<Instance>) {
        let mut queue = self.lock_queue();
        while instance.is_healthy() {
            let Some(waiter) = queue.pick_for(instance, &self.instances) else {
                break;
            };
            match waiter.tx.send(self.guard(instance)) {
                Ok(()) => return,
                // The waiter gave up; its guard must not release again.
                Err(mut unused) => unused.armed = false,
            }
        }
        instance.in_flight.fetch_sub(1, Ordering::AcqRel);
    }

    /// Gives free capacity to waiters (after an instance is admitted, or a race at enqueue).
    pub fn dispatch(self: &Arc<Self>) {
        let cap = self.config.max_inflight_per_instance;
        let mut queue = self.lock_queue();
        for instance in self.instances.iter().filter(|i| i.is_healthy()) {
            while !queue.is_empty() && instance.try_take_slot(cap) {
                let Some(waiter) = queue.pick_for(instance, &self.instances) else {
                    instance.in_flight.fetch_sub(1, Ordering::AcqRel);
                    break;
                };
                if let Err(mut unused) = waiter.tx.send(self.guard(instance)) {
                    unused.armed = false;
                    instance.in_flight.fetch_sub(1, Ordering::AcqRel);
                }
            }
        }
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
/// spreads instead of piling onto the first instance. With `placement`, among instances that
/// would have to load the model, those with fewer models loaded come first (loading there
/// evicts least).
fn rank<'a>(
    mut c: Vec<&'a Arc<Instance>>,
    model: Option<&str>,
    rotate: usize,
    placement: bool,
) -> Vec<&'a Arc<Instance>> {
    let n = c.len();
    c.rotate_left(rotate % n);
    c.sort_by_key(|i| {
        let not_loaded = model.is_some_and(|m| !i.has_loaded(m));
        let crowded = if placement && not_loaded {
            i.models.load().loaded.len()
        } else {
            0
        };
        (not_loaded, crowded, i.in_flight())
    });
    c
}

/// Each candidate in turn, whatever it holds.
fn round_robin(mut c: Vec<&Arc<Instance>>, rotate: usize) -> Vec<&Arc<Instance>> {
    let n = c.len();
    c.rotate_left(rotate % n);
    c
}

/// The instance cache-aware routing would like, if any.
#[derive(Debug, Clone, Copy, Default)]
struct Wish {
    owner: Option<Owner>,
}

impl Wish {
    fn owner_among<'a>(&self, c: &[&'a Arc<Instance>]) -> Option<&'a Arc<Instance>> {
        let want = self.owner?.instance;
        c.iter().find(|i| i.index == want).copied()
    }
}
