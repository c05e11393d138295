//! Who runs next: the queue in front of the models and the queue in front of the slots.
//!
//! Ollama has two waits. A request for a model that is loaded attaches to it at once and
//! waits on its runner for a free slot, first come first served. A request for a model
//! that is not loaded joins the scheduler's pending queue, handled one at a time: its
//! head loads its model when there is room (or an idle model to evict) and no other load
//! is under way, then attaches. Loads are serial here as a GPU loads from one disk.
//! As in Ollama, a model another request waits to evict keeps taking its own new
//! requests, so a model that never goes idle holds off a switch.
//! Everything is decided under one lock in these synchronous steps; the waiting itself
//! is done by [`super::job::Job`].

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use super::config::GpuModel;
use super::models::{eviction_candidate, expire, find, Runner};
use super::prefill::Prefill;
use super::slots::Taken;
use super::stats::{Counters, GpuStats};
use super::timing::scaled;

/// Where a request stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Place {
    /// Waiting for its model to be loaded.
    Pending,
    /// Attached to its model's runner, waiting for it to load or for a slot.
    Attached,
    /// Holding a slot.
    Running { slot: usize },
    /// Load-only request whose model is ready, or a request that left.
    Done,
}

/// One request as the scheduler tracks it.
#[derive(Debug)]
pub(crate) struct Ticket {
    pub id: u64,
    /// Canonical model name.
    pub model: String,
    /// Keep-alive this request sets on its model, already scaled.
    pub keep_alive: Duration,
    /// False for Ollama's load-only requests (no messages, empty prompt).
    pub needs_slot: bool,
    pub place: Place,
    pub arrived: Instant,
    /// When it attached to its model's runner.
    pub attached_at: Option<Instant>,
}

/// What a step of scheduling decided for a request.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Progress {
    /// Not yet: wait for a change, or until this instant (a load finishing).
    Wait(Option<Instant>),
    /// The model is ready (since `ready_at`); with a slot unless load-only.
    Ready {
        ready_at: Instant,
        slot: Option<Taken>,
    },
}

/// The GPU's whole state, behind the simulator's one lock.
#[derive(Debug, Default)]
pub(crate) struct State {
    runners: Vec<Runner>,
    pending: VecDeque<u64>,
    next_id: u64,
    /// The prompts being evaluated, sharing the GPU whatever their model.
    pub prefill: Prefill,
    pub counters: Counters,
}

impl State {
    /// Models loaded at start: ready at once, no load counted.
    pub fn preload(&mut self, config: &GpuModel, names: &[String], now: Instant) {
        let keep_alive = super::timing::scaled_duration(config.keep_alive, config.time_scale);
        for name in names.iter().take(config.max_loaded_models) {
            let runner = Runner::new(name, now, Duration::ZERO, config.slots(), keep_alive);
            self.runners.push(runner);
        }
    }

    /// Admits a request, or refuses it (`None`) when `max_queue` requests already wait.
    pub fn enqueue(
        &mut self,
        config: &GpuModel,
        mut ticket: Ticket,
        now: Instant,
    ) -> Option<Ticket> {
        self.expire(now);
        if self.waiting() >= config.max_queue {
            self.counters.rejected += 1;
            return None;
        }
        self.next_id += 1;
        ticket.id = self.next_id;
        match find(&mut self.runners, &ticket.model) {
            Some(runner) => attach(runner, &mut ticket, now),
            None => self.pending.push_back(ticket.id),
        }
        self.counters.max_waiting = self.counters.max_waiting.max(self.waiting());
        Some(ticket)
    }

    /// Moves a request on as far as it can go now.
    pub fn advance(
        &mut self,
        config: &GpuModel,
        ticket: &mut Ticket,
        prompt: &[u64],
        now: Instant,
    ) -> Progress {
        self.expire(now);
        if ticket.place == Place::Pending {
            if let Some(wait) = self.schedule_pending(config, ticket, now) {
                return wait;
            }
        }
        let Some(runner) = find(&mut self.runners, &ticket.model) else {
            return Progress::Wait(None);
        };
        if !runner.is_ready(now) {
            return Progress::Wait(Some(runner.ready_at));
        }
        let ready_at = runner.ready_at;
        if !ticket.needs_slot {
            self.leave(ticket, Vec::new(), now);
            return Progress::Ready {
                ready_at,
                slot: None,
            };
        }
        if runner.queue.front() != Some(&ticket.id) {
            return Progress::Wait(None);
        }
        let Some(taken) = runner.slots.take(prompt, now) else {
            return Progress::Wait(None);
        };
        runner.queue.pop_front();
        ticket.place = Place::Running { slot: taken.index };
        let busy = self.busy();
        self.counters.max_busy_slots = self.counters.max_busy_slots.max(busy);
        Progress::Ready {
            ready_at,
            slot: Some(taken),
        }
    }

    /// A pending request: attach if its model is there, else load it if this request
    /// heads the queue and the GPU has room; `Some(wait)` when it must wait.
    fn schedule_pending(
        &mut self,
        config: &GpuModel,
        ticket: &mut Ticket,
        now: Instant,
    ) -> Option<Progress> {
        if let Some(runner) = find(&mut self.runners, &ticket.model) {
            attach(runner, ticket, now);
            self.pending.retain(|id| *id != ticket.id);
            return None;
        }
        if self.pending.front() != Some(&ticket.id) {
            return Some(Progress::Wait(None));
        }
        if let Some(loading) = self.runners.iter().find(|r| !r.is_ready(now)) {
            return Some(Progress::Wait(Some(loading.ready_at)));
        }
        if self.runners.len() >= config.max_loaded_models {
            let victim = eviction_candidate(&self.runners, now)?;
            self.runners.remove(victim);
            self.counters.evictions += 1;
        }
        let load = scaled(config.load_ms, config.time_scale);
        let mut runner = Runner::new(&ticket.model, now, load, config.slots(), ticket.keep_alive);
        self.counters.loads += 1;
        attach(&mut runner, ticket, now);
        self.runners.push(runner);
        self.pending.pop_front();
        None
    }

    /// Takes a request out wherever it stands; a slot it held keeps `slot_tokens`.
    pub fn leave(&mut self, ticket: &mut Ticket, slot_tokens: Vec<u64>, now: Instant) {
        let place = std::mem::replace(&mut ticket.place, Place::Done);
        self.prefill.remove(ticket.id);
        if place == Place::Pending {
            self.pending.retain(|id| *id != ticket.id);
        }
        if let (Place::Attached | Place::Running { .. }, Some(runner)) =
            (place, find(&mut self.runners, &ticket.model))
        {
            runner.queue.retain(|id| *id != ticket.id);
            if let Place::Running { slot } = place {
                runner.slots.release(slot, slot_tokens);
            }
            runner.active = runner.active.saturating_sub(1);
            runner.last_used = now;
        }
        self.expire(now);
    }

    /// `OLLAMA_KEEP_ALIVE=0` style unload of a model: at once if idle, else when idle.
    pub fn unload(&mut self, model: &str, now: Instant) {
        if let Some(runner) = find(&mut self.runners, model) {
            runner.keep_alive = Duration::ZERO;
        }
        self.expire(now);
    }

    fn expire(&mut self, now: Instant) {
        self.counters.expirations += expire(&mut self.runners, now) as u64;
    }

    pub fn busy(&self) -> usize {
        self.runners.iter().map(|r| r.slots.busy()).sum()
    }

    fn waiting(&self) -> usize {
        self.pending.len() + self.runners.iter().map(|r| r.queue.len()).sum::<usize>()
    }

    /// `/api/ps` entries: loaded models only, not those still loading.
    pub fn ps(&mut self, now: Instant) -> Vec<serde_json::Value> {
        self.expire(now);
        let ready = self.runners.iter().filter(|r| r.is_ready(now));
        ready.map(|r| r.ps_entry(now)).collect()
    }

    pub fn stats(&mut self, now: Instant) -> GpuStats {
        self.expire(now);
        let c = &self.counters;
        GpuStats {
            prompts: c.prompts,
            cache_hits: c.cache_hits,
            cached_tokens: c.cached_tokens,
            evaluated_tokens: c.evaluated_tokens,
            loads: c.loads,
            evictions: c.evictions,
            expirations: c.expirations,
            busy_slots: self.busy(),
            max_busy_slots: c.max_busy_slots,
            evaluating: self.prefill.evaluating(),
            waiting: self.waiting(),
            max_waiting: c.max_waiting,
            rejected: c.rejected,
            loaded: self
                .runners
                .iter()
                .filter(|r| r.is_ready(now))
                .map(|r| r.name.clone())
                .collect(),
        }
    }
}

/// Ollama's `useLoadedRunner`: count the request on the model and, if it generates,
/// queue it for a slot. The latest request's keep-alive becomes the model's.
fn attach(runner: &mut Runner, ticket: &mut Ticket, now: Instant) {
    runner.active += 1;
    runner.last_used = now;
    runner.keep_alive = ticket.keep_alive;
    if ticket.needs_slot {
        runner.queue.push_back(ticket.id);
    }
    ticket.place = Place::Attached;
    ticket.attached_at = Some(now);
}
