//! The knobs of the simulated GPU and their defaults, each with where its value comes from.
//!
//! The defaults describe one 7-8B model (Llama 3.1 8B, Q4_K_M, 4.9 GB) served by Ollama
//! on one data-centre GPU of the A100/H100 class. Benchmarks of cache-aware routing
//! depend on the *ratio* of prompt evaluation to generation and load times more than on
//! absolute values; `time_scale` shrinks every duration alike so tests run fast.

use std::time::Duration;

/// Prompt evaluation (prefill), in ms per uncached prompt token: 0.4 ms, i.e. 2,500 tokens/s
/// for the whole GPU, shared by every prompt it evaluates at once.
///
/// Sources: llama.cpp's `llama-bench` puts 7B models on data-centre-class CUDA GPUs at
/// 6,000-8,000 prompt tokens/s for a 512-token prompt (ggml-org/llama.cpp PR #3776:
/// 6,693 t/s for Q4_0; PR #6017: 8,381 t/s for F16 on an A100 80GB), i.e. 0.12-0.17
/// ms/token at best. A chat history is evaluated at depth, where attention costs more
/// (a table in PR #3776 drops by a fifth from a 512- to a 3,200-token prompt), and Ollama
/// evaluates in batches of `num_batch` = 512; the measurement cited in issue 12 (3.55 s
/// uncached for a ~2.6k-token history, ~1.3 ms/token) is the slow end. 0.4 ms/token
/// sits between: a 2k-token history costs 0.8 s uncached and a cached follow-up a few
/// milliseconds.
///
/// Prefill is compute bound, so this is the GPU's rate, not a slot's: two prompts
/// evaluated at once take turns in chunks of [`NUM_BATCH`] tokens and each takes about
/// twice as long, and while a chunk runs the other slots' decode steps wait for it (see
/// the `prefill` module). A cache miss therefore costs the whole GPU its tokens' time,
/// which is what cache-aware routing saves.
pub const PROMPT_MS_PER_TOKEN: f64 = 0.4;

/// Tokens in one forward pass: 512, Ollama's `num_batch` default (api/types.go
/// `DefaultOptions`: `NumBatch: 512`).
///
/// Ollama's runner (runner/ollamarunner/runner.go, `processBatch`) builds each pass from
/// one token per generating sequence plus pending prompt tokens up to `num_batch`, in slot
/// order from the sequence the previous pass left out; llama.cpp's server does the same
/// (tools/server `update_slots`: sampled tokens of generating slots first, then "batch any
/// pending prompts without exceeding n_batch"). So a prompt is evaluated in chunks of up to
/// 512 tokens (205 ms each at [`PROMPT_MS_PER_TOKEN`]), concurrent prompts alternate
/// chunks, and a sequence generating meanwhile gets one token per chunk instead of one per
/// [`GEN_MS_PER_TOKEN`].
pub const NUM_BATCH: usize = 512;

/// Generation (decode) of one token by one sequence alone, in ms: 10 ms, i.e. 100 tokens/s.
///
/// Sources: decoding is memory-bandwidth bound; llama.cpp's `tg128` for a 7B Q4_0 (3.6 GB)
/// on CUDA is ~150 tokens/s (PR #3776), and an 8B Q4_K_M weighs 4.9 GB, a third more bytes
/// per token, giving ~110 tokens/s before Ollama's sampling and streaming overhead. The
/// issue asks for 10-20 ms/token single-stream; 10 ms is its fast end, right for an A100.
/// A step that shares its forward pass with a prompt chunk takes the chunk's time instead
/// (see [`NUM_BATCH`]).
pub const GEN_MS_PER_TOKEN: f64 = 10.0;

/// How much slower each sequence decodes per *other* busy slot: per-token time is
/// `gen_ms_per_token × (1 + 0.1 × (busy − 1))`, so 1.3× with 4 busy slots (while the GPU's
/// total output grows 3.1×).
///
/// Rationale: a decode step reads all weights once whatever the batch size, so batching is
/// nearly free for weights; what grows is attention over each sequence's own KV cache
/// and the larger matrix kernels. llama.cpp's `batched-bench` shows per-step time growing
/// about 4% per extra sequence on CUDA from 2 to 8 sequences (PR #3776: 1.853 s → 2.274 s
/// for 128 steps) and 14% per extra sequence on Apple Metal from 1 to 4 (PR #16894:
/// 0.405 s → 0.570 s for 32 steps); 10% sits between, on the cautious side for a GPU.
pub const BATCH_SLOWDOWN: f64 = 0.1;

/// Parallel sequences (prompt-cache slots) per loaded model: 4.
///
/// Ollama's `OLLAMA_NUM_PARALLEL`. From May 2024 ("Enable concurrency by default",
/// ollama/ollama 17b7186) the scheduler chose 4 when the model fit in VRAM with 4× its
/// context, else 1; v0.9.7 (#11330, July 2025) made the default a fixed 1. The simulator
/// keeps 4: what an 80 GB GPU gets under the automatic rule and what a pool serving many
/// users sets explicitly. Each slot keeps its own prompt cache.
pub const NUM_PARALLEL: usize = 4;

/// Models loaded at once on the GPU: 1 in the simulator unless set.
///
/// Ollama's `OLLAMA_MAX_LOADED_MODELS`; left at 0, Ollama allows 3 per GPU when VRAM
/// fits them (`defaultModelsPerGPU` in server/sched.go). The simulator defaults to 1 so
/// that a model switch costs a load, the case cache-aware routing must not make worse;
/// set 3 to mirror Ollama's automatic value on a large GPU.
pub const MAX_LOADED_MODELS: usize = 1;

/// Loading a model onto the GPU, in ms: 3 s.
///
/// Source: llama.cpp's log in ggml-org/llama.cpp issue #3479 shows `load time =
/// 3420.25 ms` for a 7B F16 model (13 GB) offloaded to a CUDA GPU; an 8B Q4 is a third of
/// those bytes, but Ollama also starts a runner process and waits for it to report
/// healthy, so a few seconds from a warm page cache is typical.
pub const LOAD_MS: f64 = 3_000.0;

/// How long an idle model stays loaded: 5 minutes, Ollama's `OLLAMA_KEEP_ALIVE` default
/// (envconfig/config.go `KeepAlive`).
pub const KEEP_ALIVE: Duration = Duration::from_secs(5 * 60);

/// Requests waiting at once before 503: 512, Ollama's `OLLAMA_MAX_QUEUE` default.
/// Ollama bounds its scheduler's queue with it; the simulator counts every request
/// waiting, for a model or for a slot.
pub const MAX_QUEUE: usize = 512;

/// Bytes of rendered prompt per token: 4, the usual rule of thumb for English text with
/// BPE tokenizers of 32k-128k entries.
pub const BYTES_PER_TOKEN: usize = 4;

/// The simulated GPU behind one fake instance. Build it with struct update syntax:
/// `GpuModel { num_parallel: 2, time_scale: 0.1, ..GpuModel::default() }`.
#[derive(Debug, Clone, PartialEq)]
pub struct GpuModel {
    /// Slots per loaded model: requests running at once; more wait in a FIFO queue.
    pub num_parallel: usize,
    /// Prompt evaluation time per uncached token, in ms, for the whole GPU: concurrent
    /// prompts share it.
    pub prompt_ms_per_token: f64,
    /// Tokens per forward pass: the largest prompt chunk evaluated between two decode
    /// steps of the other sequences (see [`NUM_BATCH`]).
    pub num_batch: usize,
    /// Generation time per token of a sequence decoding alone, in ms.
    pub gen_ms_per_token: f64,
    /// Per-token slowdown for each other busy slot (see [`BATCH_SLOWDOWN`]).
    pub batch_slowdown: f64,
    /// Models loaded at once (at least 1).
    pub max_loaded_models: usize,
    /// Time to load a model that is not loaded, in ms.
    pub load_ms: f64,
    /// Idle time after which a model unloads, unless a request sets `keep_alive`.
    /// `Duration::MAX` keeps models loaded forever.
    pub keep_alive: Duration,
    /// Requests allowed to wait (for a slot or a model) before answering 503.
    pub max_queue: usize,
    /// Bytes of rendered prompt per token (at least 1).
    pub bytes_per_token: usize,
    /// Not Ollama: prompts kept per loaded model beyond its slots, each serving its prefix to
    /// any later request (a paged prefix cache, as vLLM's or SGLang's); 0, the default, is
    /// Ollama's runner (one prompt per slot). For measuring what Ollama's cache leaves.
    pub prompt_cache_entries: usize,
    /// Multiplies every simulated duration, keep-alive included: 0.1 runs 10× faster.
    /// Reported durations are the wall-clock times this produces, as Ollama measures them.
    /// 0 makes every wait vanish, keep-alive too: models then unload as soon as idle.
    pub time_scale: f64,
}

impl Default for GpuModel {
    fn default() -> Self {
        Self {
            num_parallel: NUM_PARALLEL,
            prompt_ms_per_token: PROMPT_MS_PER_TOKEN,
            num_batch: NUM_BATCH,
            gen_ms_per_token: GEN_MS_PER_TOKEN,
            batch_slowdown: BATCH_SLOWDOWN,
            max_loaded_models: MAX_LOADED_MODELS,
            load_ms: LOAD_MS,
            keep_alive: KEEP_ALIVE,
            max_queue: MAX_QUEUE,
            bytes_per_token: BYTES_PER_TOKEN,
            prompt_cache_entries: 0,
            time_scale: 1.0,
        }
    }
}

impl GpuModel {
    /// A loaded model's slots, as this GPU caches prompts.
    pub(crate) fn slots(&self) -> super::slots::Slots {
        super::slots::Slots::new(self.num_parallel).keeping(self.prompt_cache_entries)
    }

    /// Counts of zero would deadlock the simulator, and negative times make no sense:
    /// bring such values to the nearest working ones once, at build time.
    pub(crate) fn sanitized(mut self) -> Self {
        self.num_parallel = self.num_parallel.max(1);
        self.num_batch = self.num_batch.max(1);
        self.max_loaded_models = self.max_loaded_models.max(1);
        self.bytes_per_token = self.bytes_per_token.max(1);
        for ms in [
            &mut self.prompt_ms_per_token,
            &mut self.gen_ms_per_token,
            &mut self.batch_slowdown,
            &mut self.load_ms,
            &mut self.time_scale,
        ] {
            if !ms.is_finite() || *ms < 0.0 {
                *ms = 0.0;
            }
        }
        self
    }
}
