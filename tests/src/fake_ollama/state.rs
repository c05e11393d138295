//! What a fake instance knows and counts: its catalog, its counters and the requests it saw.
//!
//! Handlers share one [`Shared`] behind an `Arc`; counters are atomics so a thousand
//! streams never queue on a lock, and the request log is bounded so a long benchmark
//! cannot grow it without limit.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::Duration;

use super::gpu::{Gpu, GpuModel};
use crate::in_flight::InFlightCounter;

use bytes::Bytes;

/// How many recent requests [`Shared::requests_log`] keeps.
const LOG_LIMIT: usize = 4096;

/// Behaviour fixed when the instance is built.
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    pub tokens: usize,
    pub token_delay: Duration,
    pub first_token_delay: Duration,
    pub fail_after_tokens: Option<usize>,
    pub error_after_tokens: Option<usize>,
    pub version: String,
}

/// One request as the fake received it, for tests to assert on what the gateway sent.
#[derive(Debug, Clone)]
pub struct RecordedRequest {
    pub method: String,
    /// Path without the query string, e.g. `/api/chat`.
    pub path: String,
    pub query: Option<String>,
    /// Lowercase header names; repeated headers are joined with `", "`.
    pub headers: BTreeMap<String, String>,
    /// The body parsed as JSON; `Value::Null` when empty or not JSON (see `raw_body`).
    pub body: serde_json::Value,
    pub raw_body: Bytes,
}

impl RecordedRequest {
    /// A header's value by case-insensitive name.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .get(&name.to_ascii_lowercase())
            .map(String::as_str)
    }

    /// Pool probes (GET of `/`, `/api/version`, `/api/tags`, `/api/ps`) arrive at any
    /// moment from a gateway's health checker, so `last_request` skips them, and so it
    /// does a benchmark's `/sim/stats` sampling.
    fn is_probe(&self) -> bool {
        matches!(self.method.as_str(), "GET" | "HEAD")
            && matches!(
                self.path.as_str(),
                "/" | "/api/version" | "/api/tags" | "/api/ps" | "/sim/stats"
            )
    }
}

#[derive(Default)]
struct Log {
    recent: VecDeque<RecordedRequest>,
    last_non_probe: Option<RecordedRequest>,
    seen_paths: BTreeSet<String>,
}

/// State shared by the accept loop, every handler and every [`super::FakeOllama`] handle.
pub(crate) struct Shared {
    pub settings: Settings,
    busy: AtomicBool,
    models: RwLock<Vec<String>>,
    loaded: RwLock<Vec<String>>,
    requests: AtomicUsize,
    pub(crate) in_flight: Arc<InFlightCounter>,
    /// The simulated GPU, when the builder asked for one.
    pub(crate) gpu: Option<Arc<Gpu>>,
    prompt_tokens: AtomicU64,
    completion_tokens: AtomicU64,
    next_id: AtomicU64,
    log: Mutex<Log>,
}

impl Shared {
    pub fn new(
        settings: Settings,
        models: Vec<String>,
        loaded: Vec<String>,
        busy: bool,
        gpu: Option<GpuModel>,
    ) -> Self {
        let gpu = gpu.map(|config| Arc::new(Gpu::new(config, &loaded)));
        Self {
            settings,
            busy: AtomicBool::new(busy),
            models: RwLock::new(models),
            loaded: RwLock::new(loaded),
            requests: AtomicUsize::new(0),
            in_flight: Arc::default(),
            gpu,
            prompt_tokens: AtomicU64::new(0),
            completion_tokens: AtomicU64::new(0),
            next_id: AtomicU64::new(1),
            log: Mutex::new(Log::default()),
        }
    }

    pub fn models(&self) -> Vec<String> {
        self.models
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    pub fn loaded(&self) -> Vec<String> {
        self.loaded
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    pub fn set_models(&self, names: Vec<String>) {
        *self.models.write().unwrap_or_else(PoisonError::into_inner) = names;
    }

    pub fn set_loaded(&self, names: Vec<String>) {
        *self.loaded.write().unwrap_or_else(PoisonError::into_inner) = names;
    }

    /// Whether `name` is installed, matching like Ollama: a missing tag means `:latest`,
    /// and names compare case-insensitively.
    pub fn has_model(&self, name: &str) -> bool {
        let wanted = canonical_name(name);
        self.models
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .any(|m| canonical_name(m).eq_ignore_ascii_case(&wanted))
    }

    pub fn is_busy(&self) -> bool {
        self.busy.load(Ordering::Relaxed)
    }

    pub fn set_busy(&self, yes: bool) {
        self.busy.store(yes, Ordering::Relaxed);
    }

    pub fn count_request(&self) {
        self.requests.fetch_add(1, Ordering::Relaxed);
    }

    pub fn requests(&self) -> usize {
        self.requests.load(Ordering::Relaxed)
    }

    pub fn in_flight(&self) -> usize {
        self.in_flight.current()
    }

    pub fn max_in_flight(&self) -> usize {
        self.in_flight.max()
    }

    pub fn add_prompt_tokens(&self, n: u64) {
        self.prompt_tokens.fetch_add(n, Ordering::Relaxed);
    }

    pub fn add_completion_tokens(&self, n: u64) {
        self.completion_tokens.fetch_add(n, Ordering::Relaxed);
    }

    pub fn prompt_tokens(&self) -> u64 {
        self.prompt_tokens.load(Ordering::Relaxed)
    }

    pub fn completion_tokens(&self) -> u64 {
        self.completion_tokens.load(Ordering::Relaxed)
    }

    /// A number unique within this instance, for `chatcmpl-N` style ids.
    pub fn next_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    pub fn record(&self, request: RecordedRequest) {
        let mut log = self.log.lock().unwrap_or_else(PoisonError::into_inner);
        log.seen_paths.insert(request.path.clone());
        if !request.is_probe() {
            log.last_non_probe = Some(request.clone());
        }
        if log.recent.len() == LOG_LIMIT {
            log.recent.pop_front();
        }
        log.recent.push_back(request);
    }

    pub fn last_request(&self) -> Option<RecordedRequest> {
        self.log
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .last_non_probe
            .clone()
    }

    pub fn requests_log(&self) -> Vec<RecordedRequest> {
        let log = self.log.lock().unwrap_or_else(PoisonError::into_inner);
        log.recent.iter().cloned().collect()
    }

    pub fn saw_path(&self, path: &str) -> bool {
        self.log
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .seen_paths
            .contains(path)
    }
}

/// Ollama's default tag: `llama3` and `llama3:latest` are the same model, while
/// `registry.example/ns/model` only gains a tag on its last segment.
pub(crate) fn canonical_name(name: &str) -> String {
    let name = name.trim();
    let last = name.rsplit('/').next().unwrap_or(name);
    if last.contains(':') {
        name.to_string()
    } else {
        format!("{name}:latest")
    }
}
