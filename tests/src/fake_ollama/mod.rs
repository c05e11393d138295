//! A fake Ollama server that speaks Ollama's real wire format.
//!
//! Ollama cannot run in CI, yet the gateway parses Ollama's NDJSON and SSE streams,
//! routes on `/api/tags` and `/api/ps`, and must survive instances that are busy, slow
//! or die mid-stream. This fake reproduces those shapes and behaviours on a loopback
//! port, counts what it served, and records what it received.
//!
//! ```no_run
//! # async fn demo() {
//! use corral_tests::fake_ollama::FakeOllama;
//! let fake = FakeOllama::builder().models(&["llama3:8b"]).tokens(4).start().await;
//! // point the gateway at fake.url(), send a chat, then:
//! assert_eq!(fake.requests(), 0);
//! fake.stop().await;
//! # }
//! ```
//!
//! Replies are deterministic: completion token `i` is `"tok{i} "`, and the prompt token
//! count follows [`prompt_tokens_for`]. `/api/ps` changes only through the builder and
//! [`FakeOllama::set_loaded`], never by serving a request, so tests control it.
//!
//! Benchmarks of cache-aware routing need instances whose timing and counters depend on
//! what they served: [`FakeOllamaBuilder::gpu`] turns on a simulated GPU ([`gpu`]) with
//! per-slot prompt caches, queueing, batching and model loads; then the prompt count is
//! the tokens evaluated and `/api/ps` reports what the GPU has loaded.

mod generation;
pub mod gpu;
mod native;
mod openai;
mod request;
mod server;
mod shapes;
mod sim;
mod state;
#[cfg(test)]
mod tests;

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub use gpu::{GpuModel, GpuStats};
pub use request::{BUSY_MESSAGE, MODEL_ERROR};
pub use shapes::{completion_text, prompt_tokens_for, token_text};
pub use sim::SimStats;
pub use state::RecordedRequest;

use state::{Settings, Shared};

/// How a [`FakeOllama`] behaves; every setting has the default documented on it.
#[derive(Debug, Clone)]
pub struct FakeOllamaBuilder {
    models: Vec<String>,
    loaded: Vec<String>,
    port: u16,
    busy: bool,
    settings: Settings,
    gpu: Option<GpuModel>,
}

impl Default for FakeOllamaBuilder {
    fn default() -> Self {
        Self {
            models: vec!["llama3:8b".to_string()],
            loaded: Vec::new(),
            port: 0,
            busy: false,
            settings: Settings {
                tokens: 8,
                token_delay: Duration::ZERO,
                first_token_delay: Duration::ZERO,
                fail_after_tokens: None,
                error_after_tokens: None,
                version: "0.12.0".to_string(),
            },
            gpu: None,
        }
    }
}

fn owned(names: &[&str]) -> Vec<String> {
    names.iter().map(|n| n.to_string()).collect()
}

impl FakeOllamaBuilder {
    /// Installed models, as `/api/tags` and `/v1/models` list them (default `["llama3:8b"]`).
    /// Requests for any other model get Ollama's 404.
    pub fn models(mut self, names: &[&str]) -> Self {
        self.models = owned(names);
        self
    }

    /// Models `/api/ps` reports as loaded in memory (default none).
    pub fn loaded(mut self, names: &[&str]) -> Self {
        self.loaded = owned(names);
        self
    }

    /// Completion tokens in every reply (default 8), before `num_predict`/`max_tokens` caps.
    pub fn tokens(mut self, n: usize) -> Self {
        self.settings.tokens = n;
        self
    }

    /// Time spent generating each token (default 0).
    pub fn token_delay(mut self, d: Duration) -> Self {
        self.settings.token_delay = d;
        self
    }

    /// Extra time before the first token, standing for prompt evaluation (default 0).
    /// Streaming answers send their headers with the first token, as Ollama does.
    pub fn first_token_delay(mut self, d: Duration) -> Self {
        self.settings.first_token_delay = d;
        self
    }

    /// Port on 127.0.0.1 (default 0: any free port); set it to restart a stopped
    /// instance where the gateway expects it.
    pub fn port(mut self, port: u16) -> Self {
        self.port = port;
        self
    }

    /// After `n` tokens, drop the connection without a final chunk: an instance dying
    /// mid-stream. With `Some(0)` (or a non-streaming request) the client gets no
    /// response at all. `n` at or above the reply length kills it before the final chunk.
    pub fn fail_after_tokens(mut self, n: Option<usize>) -> Self {
        self.settings.fail_after_tokens = n;
        self
    }

    /// After `n` tokens, end the reply with Ollama's mid-stream error instead of the
    /// final chunk: an `{"error": MODEL_ERROR}` line on NDJSON streams (status 200 already
    /// sent), a `data: {"error": {...}}` event without `[DONE]` on SSE streams, and a 500
    /// with the error for non-streaming requests. [`fail_after_tokens`](Self::fail_after_tokens)
    /// wins when both apply.
    pub fn error_after_tokens(mut self, n: Option<usize>) -> Self {
        self.settings.error_after_tokens = n;
        self
    }

    /// Answer every model request with Ollama's 503 [`BUSY_MESSAGE`] (a full queue).
    pub fn busy(mut self, yes: bool) -> Self {
        self.busy = yes;
        self
    }

    /// What `/api/version` reports (default `"0.12.0"`).
    pub fn version(mut self, v: &str) -> Self {
        self.settings.version = v.to_string();
        self
    }

    /// Simulates a GPU behind the instance (default off): prompt caches per slot,
    /// `num_parallel` slots with a FIFO queue, batching, model loads, LRU eviction and
    /// keep-alive, with Ollama's real counters; see [`gpu`]. It replaces
    /// [`token_delay`](Self::token_delay) and [`first_token_delay`](Self::first_token_delay)
    /// for chat and generate requests (embeddings keep them), and [`loaded`](Self::loaded)
    /// then names models loaded at start (`/api/ps` shows the GPU's real state).
    pub fn gpu(mut self, model: GpuModel) -> Self {
        self.gpu = Some(model);
        self
    }

    /// Binds and starts serving; ready to answer when this returns.
    ///
    /// # Panics
    /// When the port cannot be bound: a test cannot go on without its instance.
    pub async fn start(self) -> FakeOllama {
        self.try_start()
            .await
            .unwrap_or_else(|e| panic!("fake ollama cannot bind 127.0.0.1: {e}"))
    }

    /// Like [`start`](Self::start), returning the bind error instead of panicking.
    pub async fn try_start(self) -> std::io::Result<FakeOllama> {
        let listener = server::bind(self.port)?;
        let port = listener.local_addr()?.port();
        let shared = Arc::new(Shared::new(
            self.settings,
            self.models,
            self.loaded,
            self.busy,
            self.gpu,
        ));
        let (stop_tx, stop_rx) = oneshot::channel();
        let app = server::router(Arc::clone(&shared));
        let task = tokio::spawn(server::accept_loop(
            listener,
            app,
            Arc::clone(&shared),
            stop_rx,
        ));
        Ok(FakeOllama {
            inner: Arc::new(Inner {
                shared,
                port,
                control: Mutex::new(Some(Control {
                    stop: stop_tx,
                    task,
                })),
            }),
        })
    }
}

struct Control {
    stop: oneshot::Sender<()>,
    task: JoinHandle<()>,
}

struct Inner {
    shared: Arc<Shared>,
    port: u16,
    control: Mutex<Option<Control>>,
}

impl Drop for Inner {
    /// A forgotten instance must not keep serving: abort it like `stop` would.
    fn drop(&mut self) {
        let control = self
            .control
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(control) = control {
            control.task.abort();
        }
    }
}

/// A running fake instance. Clones are handles to the same instance.
#[derive(Clone)]
pub struct FakeOllama {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for FakeOllama {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FakeOllama")
            .field("url", &self.url())
            .finish()
    }
}

impl FakeOllama {
    pub fn builder() -> FakeOllamaBuilder {
        FakeOllamaBuilder::default()
    }

    /// `http://127.0.0.1:PORT`, to put in `OLLAMA_BASE_URL`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.inner.port)
    }

    pub fn port(&self) -> u16 {
        self.inner.port
    }

    /// Model requests received so far (chat, generate, embed, embeddings, and their
    /// `/v1` forms), including the ones answered 4xx or 503.
    pub fn requests(&self) -> usize {
        self.inner.shared.requests()
    }

    /// Generations and embeddings being answered right now; a stream counts until its
    /// last line is written or its client goes away.
    pub fn in_flight(&self) -> usize {
        self.inner.shared.in_flight()
    }

    /// The highest [`in_flight`](Self::in_flight) seen.
    pub fn max_in_flight(&self) -> usize {
        self.inner.shared.max_in_flight()
    }

    /// Sum of the prompt token counts reported in completed replies (final chunks,
    /// non-streaming answers, embeddings); died streams report none.
    pub fn total_prompt_tokens(&self) -> u64 {
        self.inner.shared.prompt_tokens()
    }

    /// Sum of completion tokens generated, including those of streams that died.
    pub fn total_completion_tokens(&self) -> u64 {
        self.inner.shared.completion_tokens()
    }

    /// The latest request other than a pool probe (GET or HEAD of `/`, `/api/version`,
    /// `/api/tags`, `/api/ps`), which a gateway's health checker sends at any time.
    pub fn last_request(&self) -> Option<RecordedRequest> {
        self.inner.shared.last_request()
    }

    /// The most recent requests of any kind, oldest first (the last 4096).
    pub fn requests_log(&self) -> Vec<RecordedRequest> {
        self.inner.shared.requests_log()
    }

    /// Whether any request ever reached `path` (query excluded): to check that the
    /// gateway never let `/api/pull` or `/api/delete` through.
    pub fn saw_path(&self, path: &str) -> bool {
        self.inner.shared.saw_path(path)
    }

    /// What the simulated GPU did so far; `None` unless built with
    /// [`gpu`](FakeOllamaBuilder::gpu).
    pub fn gpu_stats(&self) -> Option<GpuStats> {
        self.inner.shared.gpu.as_ref().map(|gpu| gpu.stats())
    }

    /// Replaces what `/api/ps` lists (without a simulated GPU; with one, `/api/ps`
    /// reports what the GPU has loaded and this has no effect).
    pub fn set_loaded(&self, names: &[&str]) {
        self.inner.shared.set_loaded(owned(names));
    }

    /// Replaces the installed models (`/api/tags`, and which models get a 404).
    pub fn set_models(&self, names: &[&str]) {
        self.inner.shared.set_models(owned(names));
    }

    /// Turns Ollama's "server busy" 503 on or off.
    pub fn set_busy(&self, yes: bool) {
        self.inner.shared.set_busy(yes);
    }

    /// Stops listening and drops every open connection now, as a killed process would:
    /// streams end without their final chunk and clients see connection errors. When
    /// this returns the port is free to bind again.
    pub async fn stop(self) {
        let control = self
            .inner
            .control
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(control) = control {
            let _ = control.stop.send(());
            let _ = control.task.await;
        }
    }
}
