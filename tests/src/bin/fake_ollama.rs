//! `fake-ollama`: the test suite's fake Ollama as a process, for benchmarks and for
//! trying the gateway by hand without GPUs.
//!
//! Prints `listening on http://127.0.0.1:PORT` once it accepts connections (scripts
//! wait for that line; `--listen 127.0.0.1:0` picks a free port) and runs until killed.

use std::io::Write;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use corral_tests::fake_ollama::FakeOllama;

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
    /// Models /api/ps reports as loaded (comma-separated).
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
    let fake = FakeOllama::builder()
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
