//! `fake-ollama`: the test suite's fake Ollama as a process, for benchmarks and for
//! trying the gateway by hand without GPUs.
//!
//! Prints `listening on http://127.0.0.1:PORT` once it accepts connections (scripts
//! wait for that line; `--listen 127.0.0.1:0` picks a free port) and runs until killed.
//!
//! `--gpu` simulates a GPU behind the instance (prompt caches, slots, queueing,
//! batching, model loads and keep-alive; see `corral_tests::fake_ollama::gpu`), for
//! demos and benchmarks of cache-aware routing: run it once per simulated instance, e.g.
//! `fake-ollama --gpu --listen 127.0.0.1:0 --models llama3.1:8b,qwen2.5:7b --time-scale 0.5`.
//! `GET /sim/stats` (not Ollama's) reports what the instance is doing as JSON: requests in
//! flight and, with `--gpu`, the simulator's counters (`corral-chat-bench` samples it).

use std::io::Write;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args as ClapArgs, Parser};
use corral_tests::fake_ollama::gpu::parse_duration;
use corral_tests::fake_ollama::{FakeOllama, GpuModel};

#[derive(Parser, Debug)]
#[command(
    name = "fake-ollama",
    about = "A fake Ollama server speaking Ollama's wire format"
)]
struct Args {
    /// Address to listen on; only loopback addresses are supported.
    #[arg(long, default_value = "127.0.0.1:11434")]
    listen: SocketAddr,
    /// Installed models (comma-separated), as /api/tags lists them.
    #[arg(long, value_delimiter = ',', default_value = "llama3:8b")]
    models: Vec<String>,
    /// Models /api/ps reports as loaded (comma-separated); with --gpu, loaded at start.
    #[arg(long, value_delimiter = ',')]
    loaded: Vec<String>,
    /// Completion tokens per reply.
    #[arg(long, default_value_t = 8)]
    tokens: usize,
    /// Delay before each token, in milliseconds.
    #[arg(long, default_value_t = 0)]
    token_delay_ms: u64,
    /// Extra delay before the first token, in milliseconds.
    #[arg(long, default_value_t = 0)]
    first_token_delay_ms: u64,
    /// Drop the connection after this many tokens (an instance dying mid-stream).
    #[arg(long)]
    fail_after_tokens: Option<usize>,
    /// End replies with Ollama's mid-stream model error after this many tokens.
    #[arg(long)]
    error_after_tokens: Option<usize>,
    /// Answer every model request with Ollama's 503 "server busy".
    #[arg(long)]
    busy: bool,
    /// What /api/version reports.
    #[arg(long, default_value = "0.12.0")]
    version: String,
    /// Simulate a GPU; the knobs below default to one data-centre GPU serving an 8B model.
    #[arg(long)]
    gpu: bool,
    #[command(flatten)]
    knobs: GpuKnobs,
}

/// The simulated GPU's knobs; each needs `--gpu` and defaults to `GpuModel::default()`.
#[derive(ClapArgs, Debug)]
struct GpuKnobs {
    /// Slots per loaded model (OLLAMA_NUM_PARALLEL) [default: 4].
    #[arg(long, requires = "gpu")]
    num_parallel: Option<usize>,
    /// Prompt evaluation per uncached token, in ms, shared by the prompts evaluated at
    /// once [default: 0.4].
    #[arg(long, requires = "gpu")]
    prompt_ms_per_token: Option<f64>,
    /// Tokens per forward pass: prompts are evaluated in chunks of this many, each holding
    /// up the other slots' decode steps (Ollama's num_batch) [default: 512].
    #[arg(long, requires = "gpu")]
    num_batch: Option<usize>,
    /// Generation per token of a lone sequence, in ms [default: 10].
    #[arg(long, requires = "gpu")]
    gen_ms_per_token: Option<f64>,
    /// Per-token slowdown for each other busy slot [default: 0.1].
    #[arg(long, requires = "gpu")]
    batch_slowdown: Option<f64>,
    /// Models loaded at once (OLLAMA_MAX_LOADED_MODELS) [default: 1].
    #[arg(long, requires = "gpu")]
    max_loaded_models: Option<usize>,
    /// Time to load a model, in ms [default: 3000].
    #[arg(long, requires = "gpu")]
    load_ms: Option<f64>,
    /// Idle time before a model unloads (OLLAMA_KEEP_ALIVE: "5m", "30s", seconds, -1 for
    /// never) [default: 5m].
    #[arg(long, requires = "gpu", value_parser = keep_alive, allow_hyphen_values = true)]
    keep_alive: Option<Duration>,
    /// Requests waiting before 503 (OLLAMA_MAX_QUEUE) [default: 512].
    #[arg(long, requires = "gpu")]
    max_queue: Option<usize>,
    /// Bytes of rendered prompt per simulated token [default: 4].
    #[arg(long, requires = "gpu")]
    bytes_per_token: Option<usize>,
    /// Not Ollama: prompts kept per loaded model beyond its slots, each serving its prefix to
    /// any later request, like a paged prefix cache (vLLM, SGLang); for measuring what
    /// Ollama's one prompt per slot costs [default: 0, Ollama's runner].
    #[arg(long, requires = "gpu")]
    prompt_cache_entries: Option<usize>,
    /// Multiplies every simulated duration: 0.1 runs ten times faster [default: 1].
    #[arg(long, requires = "gpu")]
    time_scale: Option<f64>,
}

impl GpuKnobs {
    /// Times and factors must be non-negative numbers (the time scale positive, or models
    /// would unload between requests); counts of 0 would never serve.
    fn check(&self) -> Result<(), String> {
        if let Some(v) = self.time_scale.filter(|v| !v.is_finite() || *v <= 0.0) {
            return Err(format!(
                "--time-scale={v} is not valid: must be more than 0"
            ));
        }
        let times = [
            ("prompt-ms-per-token", self.prompt_ms_per_token),
            ("gen-ms-per-token", self.gen_ms_per_token),
            ("batch-slowdown", self.batch_slowdown),
            ("load-ms", self.load_ms),
        ];
        for (name, value) in times {
            if let Some(v) = value.filter(|v| !v.is_finite() || *v < 0.0) {
                return Err(format!("--{name}={v} is not valid: must be 0 or more"));
            }
        }
        let counts = [
            ("num-parallel", self.num_parallel),
            ("num-batch", self.num_batch),
            ("max-loaded-models", self.max_loaded_models),
            ("bytes-per-token", self.bytes_per_token),
        ];
        for (name, value) in counts {
            if value == Some(0) {
                return Err(format!("--{name}=0 is not valid: must be 1 or more"));
            }
        }
        Ok(())
    }

    fn model(&self) -> GpuModel {
        let d = GpuModel::default();
        GpuModel {
            num_parallel: self.num_parallel.unwrap_or(d.num_parallel),
            prompt_ms_per_token: self.prompt_ms_per_token.unwrap_or(d.prompt_ms_per_token),
            num_batch: self.num_batch.unwrap_or(d.num_batch),
            gen_ms_per_token: self.gen_ms_per_token.unwrap_or(d.gen_ms_per_token),
            batch_slowdown: self.batch_slowdown.unwrap_or(d.batch_slowdown),
            max_loaded_models: self.max_loaded_models.unwrap_or(d.max_loaded_models),
            load_ms: self.load_ms.unwrap_or(d.load_ms),
            keep_alive: self.keep_alive.unwrap_or(d.keep_alive),
            max_queue: self.max_queue.unwrap_or(d.max_queue),
            bytes_per_token: self.bytes_per_token.unwrap_or(d.bytes_per_token),
            prompt_cache_entries: self.prompt_cache_entries.unwrap_or(d.prompt_cache_entries),
            time_scale: self.time_scale.unwrap_or(d.time_scale),
        }
    }
}

fn keep_alive(text: &str) -> Result<Duration, String> {
    parse_duration(text).ok_or_else(|| format!("{text:?} is not a duration like 5m, 30s or -1"))
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    if !args.listen.ip().is_loopback() || !args.listen.is_ipv4() {
        eprintln!(
            "fake-ollama: --listen {} is not valid: only 127.0.0.1 is supported",
            args.listen
        );
        return ExitCode::from(2);
    }
    let models = names(&args.models);
    let loaded = names(&args.loaded);
    if let Err(reason) = args.knobs.check() {
        eprintln!("fake-ollama: {reason}");
        return ExitCode::from(2);
    }
    let mut builder = FakeOllama::builder();
    if args.gpu {
        builder = builder.gpu(args.knobs.model());
    }
    let fake = builder
        .port(args.listen.port())
        .models(&models)
        .loaded(&loaded)
        .tokens(args.tokens)
        .token_delay(Duration::from_millis(args.token_delay_ms))
        .first_token_delay(Duration::from_millis(args.first_token_delay_ms))
        .fail_after_tokens(args.fail_after_tokens)
        .error_after_tokens(args.error_after_tokens)
        .busy(args.busy)
        .version(&args.version)
        .try_start()
        .await;
    let fake = match fake {
        Ok(fake) => fake,
        Err(e) => {
            eprintln!("fake-ollama: cannot listen on {}: {e}", args.listen);
            return ExitCode::FAILURE;
        }
    };
    let mut stdout = std::io::stdout();
    let _ = writeln!(stdout, "listening on {}", fake.url());
    let _ = stdout.flush();
    let _ = tokio::signal::ctrl_c().await;
    fake.stop().await;
    ExitCode::SUCCESS
}

/// The non-empty names of a comma-separated list.
fn names(list: &[String]) -> Vec<&str> {
    list.iter()
        .map(String::as_str)
        .filter(|n| !n.is_empty())
        .collect()
}
