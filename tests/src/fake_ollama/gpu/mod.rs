//! An opt-in GPU model for the fake Ollama: prompt caches, parallel slots, queueing,
//! batching, model loads and keep-alive, timed like one data-centre GPU.
//!
//! Cache-aware routing (sending a conversation back to the instance that holds its
//! prompt cache) can only be measured against instances where a cache hit is cheaper
//! than a miss. With [`GpuModel`] set on the builder, each instance renders and
//! tokenises every prompt, gives it a slot the way Ollama's runner does, evaluates the
//! uncached tokens before the first token and spends `gen_ms_per_token` (slower as more
//! slots are busy) per token after, and reports Ollama's real counters:
//! `prompt_eval_count` counts only the tokens evaluated.
//!
//! Prompt evaluation uses the whole GPU, as on a real one: `prompt_ms_per_token` is the
//! GPU's rate, concurrent prompts take turns in chunks of `num_batch` tokens (so two
//! prompts each take about twice as long as one alone), and a chunk holds up the decode
//! steps of the other slots until it ends, since Ollama's runner puts both in one forward
//! pass. A cache miss thus costs every request on the instance, not only its own. The
//! `prefill` module has the schedule and its sources.
//!
//! ```no_run
//! # async fn demo() {
//! use corral_tests::fake_ollama::{FakeOllama, GpuModel};
//! let gpu = GpuModel { num_parallel: 2, time_scale: 0.1, ..GpuModel::default() };
//! let fake = FakeOllama::builder().gpu(gpu).start().await;
//! // ... two turns of one conversation, then:
//! let stats = fake.gpu_stats().expect("GPU mode");
//! assert_eq!(stats.cache_hits, 1);
//! # }
//! ```
//!
//! Without it the fake keeps its fixed delays, has no queue, and `/api/ps` lists what
//! the test set. Embeddings are never simulated on the GPU.

mod config;
mod job;
mod models;
mod prefill;
mod render;
mod schedule;
mod slots;
mod stats;
mod timing;
mod tokens;

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Instant;

use serde_json::Value;
use tokio::sync::Notify;

pub use config::{
    GpuModel, BATCH_SLOWDOWN, BYTES_PER_TOKEN, GEN_MS_PER_TOKEN, KEEP_ALIVE, LOAD_MS,
    MAX_LOADED_MODELS, MAX_QUEUE, NUM_BATCH, NUM_PARALLEL, PROMPT_MS_PER_TOKEN,
};
pub(crate) use job::{Job, PromptCost};
pub(crate) use render::PromptKind;
pub use stats::GpuStats;
pub use timing::parse_duration;

use super::request::ApiError;
use super::state::{canonical_name, Shared};
use schedule::{Place, Progress, State, Ticket};
use timing::{keep_alive_of, scaled_duration};

/// The simulated GPU of one instance: its configuration and its state under one lock,
/// never held across an await, with a notification for requests waiting on a change.
pub(crate) struct Gpu {
    config: GpuModel,
    state: Mutex<State>,
    changed: Notify,
}

impl std::fmt::Debug for Gpu {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gpu").field("config", &self.config).finish()
    }
}

impl Gpu {
    /// A GPU with `preloaded` models already loaded (the builder's `loaded`).
    pub fn new(config: GpuModel, preloaded: &[String]) -> Self {
        let config = config.sanitized();
        let mut state = State::default();
        let names: Vec<String> = preloaded.iter().map(|n| canonical_name(n)).collect();
        state.preload(&config, &names, Instant::now());
        Self {
            config,
            state: Mutex::new(state),
            changed: Notify::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Admits a request for `model`; Ollama's 503 when `max_queue` requests wait.
    /// `None` as `kind` makes a load-only request (no messages, empty prompt).
    pub fn job(
        self: &Arc<Self>,
        model: &str,
        request: &Value,
        kind: Option<PromptKind>,
    ) -> Result<Job, ApiError> {
        let now = Instant::now();
        let keep_alive = keep_alive_of(request).unwrap_or(self.config.keep_alive);
        let ticket = Ticket {
            id: 0,
            model: canonical_name(model),
            keep_alive: scaled_duration(keep_alive, self.config.time_scale),
            needs_slot: kind.is_some(),
            place: Place::Pending,
            arrived: now,
            attached_at: None,
        };
        let ticket = self
            .lock()
            .enqueue(&self.config, ticket, now)
            .ok_or_else(ApiError::busy)?;
        let prompt = kind.map(|k| render::render(request, k)).unwrap_or_default();
        Ok(Job::new(Arc::clone(self), ticket, prompt))
    }

    /// Unloads `model` now if idle, else as soon as its requests end (`keep_alive: 0`).
    pub fn unload(&self, model: &str) {
        self.lock().unload(&canonical_name(model), Instant::now());
        self.changed.notify_waiters();
    }

    fn advance(&self, ticket: &mut Ticket, prompt: &[u64]) -> Progress {
        let progress = self
            .lock()
            .advance(&self.config, ticket, prompt, Instant::now());
        if matches!(progress, Progress::Ready { .. }) {
            // The queue moved: the next request may take another free slot.
            self.changed.notify_waiters();
        }
        progress
    }

    fn leave(&self, ticket: &mut Ticket, held: Vec<u64>) {
        self.lock().leave(ticket, held, Instant::now());
        self.changed.notify_waiters();
    }

    /// `/api/ps`: the models loaded right now, in Ollama's shape.
    pub fn ps(&self) -> Vec<Value> {
        self.lock().ps(Instant::now())
    }

    pub fn stats(&self) -> GpuStats {
        self.lock().stats(Instant::now())
    }

    pub fn bytes_per_token(&self) -> usize {
        self.config.bytes_per_token
    }
}

/// The prompt tokens of a chat request (`messages`, as `/api/chat` and
/// `/v1/chat/completions` carry them), rendered and tokenised exactly as the simulator
/// does: what `prompt_eval_count` would be with nothing cached. Benchmarks divide the
/// reported count by it to get the prefix-cache hit ratio.
pub fn chat_prompt_tokens(request: &Value, bytes_per_token: usize) -> usize {
    render::render(request, PromptKind::Messages)
        .tokens(bytes_per_token.max(1))
        .len()
}

/// The GPU job for a generating request, or `None` when the GPU model is off.
pub(crate) fn job_for(
    shared: &Shared,
    model: &str,
    request: &Value,
    kind: PromptKind,
) -> Result<Option<Job>, ApiError> {
    shared
        .gpu
        .as_ref()
        .map(|gpu| gpu.job(model, request, Some(kind)))
        .transpose()
}
