//! What the simulated GPU did, for tests and benchmarks to assert on.

use serde::{Deserialize, Serialize};

/// A snapshot of one instance's GPU counters since it started; `GET /sim/stats` serves it
/// as JSON to benchmarks that run the fake as a process.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GpuStats {
    /// Requests that got a slot and evaluated their prompt.
    pub prompts: u64,
    /// Prompts that found part of themselves in their slot's cache.
    pub cache_hits: u64,
    /// Prompt tokens found in the cache (not evaluated).
    pub cached_tokens: u64,
    /// Prompt tokens evaluated: the sum of the `prompt_eval_count`s reported.
    pub evaluated_tokens: u64,
    /// Model loads started.
    pub loads: u64,
    /// Models unloaded to make room for another.
    pub evictions: u64,
    /// Models unloaded because their keep-alive ran out (or was 0).
    pub expirations: u64,
    /// Slots busy right now, over every loaded model.
    pub busy_slots: usize,
    /// The most slots ever busy at once.
    pub max_busy_slots: usize,
    /// Prompts being evaluated right now (sharing the GPU's prefill rate).
    #[serde(default)]
    pub evaluating: usize,
    /// Requests waiting right now, for a slot or for their model.
    pub waiting: usize,
    /// The most requests ever waiting at once.
    pub max_waiting: usize,
    /// Requests refused with 503 because `max_queue` were already waiting.
    pub rejected: u64,
    /// Models loaded right now (loading ones excluded), as `/api/ps` lists them.
    pub loaded: Vec<String>,
}

/// Counters kept under the GPU's lock; [`GpuStats`] adds what is derived from the state.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub prompts: u64,
    pub cache_hits: u64,
    pub cached_tokens: u64,
    pub evaluated_tokens: u64,
    pub loads: u64,
    pub evictions: u64,
    pub expirations: u64,
    pub max_busy_slots: usize,
    pub max_waiting: usize,
    pub rejected: u64,
}

impl Counters {
    pub fn prompt(&mut self, cached: usize, evaluated: usize) {
        self.prompts += 1;
        self.cache_hits += u64::from(cached > 0);
        self.cached_tokens += cached as u64;
        self.evaluated_tokens += evaluated as u64;
    }
}
