//! `corral-chat-bench`: a multi-turn chat workload against a gateway, for comparing its
//! routing modes over simulated GPUs (see `corral_tests::chat_bench`).
//!
//! ```text
//! corral-chat-bench run --url http://127.0.0.1:8080 --instance http://127.0.0.1:11434 ... \
//!     --rate 2 --json out.json --label cache_aware --mode cache_aware --load 70%
//! corral-chat-bench compare a.json b.json ...
//! ```
//!
//! `run` prints a summary table and a `result key=value` line, writes the report as JSON
//! with `--json`, and exits 1 when more than `--max-error-pct` of attempts failed.
//! `compare` prints one table of several reports with ratios against `least_busy`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use corral_tests::chat_bench::drive::DriveOptions;
use corral_tests::chat_bench::report::{Labels, Report};
use corral_tests::chat_bench::workload::WorkloadSpec;
use corral_tests::chat_bench::{compare, run, BenchRun};

#[derive(Parser, Debug)]
#[command(
    name = "corral-chat-bench",
    about = "Multi-turn chat benchmark for Corral's routing"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Send the workload and report.
    Run(Box<RunArgs>),
    /// Print one comparison table of reports written by `run --json`.
    Compare {
        /// Report files, in the order of the table's rows.
        files: Vec<PathBuf>,
    },
}

#[derive(Args, Debug)]
struct RunArgs {
    /// Gateway base URL; give it twice to alternate each conversation's turns between
    /// two replicas.
    #[arg(long = "url", required = true)]
    urls: Vec<String>,
    /// A fake instance's base URL (repeatable), sampled through its /sim/stats.
    #[arg(long = "instance")]
    instances: Vec<String>,
    #[arg(long, default_value_t = 300)]
    conversations: usize,
    /// Conversations started per second (Poisson); 0 starts all at once.
    #[arg(long, default_value_t = 1.0)]
    rate: f64,
    /// At most this many conversations at once (with --rate 0: a closed loop).
    #[arg(long)]
    concurrency: Option<usize>,
    #[arg(long, default_value_t = 4)]
    turns_min: usize,
    #[arg(long, default_value_t = 12)]
    turns_max: usize,
    #[arg(long, default_value_t = 300)]
    system_tokens: usize,
    #[arg(long, default_value_t = 50)]
    user_tokens_min: usize,
    #[arg(long, default_value_t = 400)]
    user_tokens_max: usize,
    /// Completion tokens asked of each turn (options.num_predict), uniform in min..=max.
    #[arg(long, default_value_t = 50)]
    reply_tokens_min: usize,
    #[arg(long, default_value_t = 250)]
    reply_tokens_max: usize,
    /// Mean pause between a reply and the next turn, in ms (exponential).
    #[arg(long, default_value_t = 500)]
    think_ms: u64,
    /// Models, comma-separated; conversations take them in turn.
    #[arg(long, value_delimiter = ',', default_value = "llama3.2:3b,qwen2.5:7b")]
    models: Vec<String>,
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Bytes per simulator token, when no instance reports it.
    #[arg(long, default_value_t = 4)]
    bytes_per_token: usize,
    /// Send `X-Corral-Session: <conversation id>` with each turn.
    #[arg(long)]
    session_header: bool,
    /// Longest a turn may take, in seconds.
    #[arg(long, default_value_t = 120)]
    timeout_s: u64,
    /// Further attempts at a failed turn before its conversation is abandoned.
    #[arg(long, default_value_t = 2)]
    retries: usize,
    /// Row name in reports.
    #[arg(long, default_value = "run")]
    label: String,
    /// The gateway's balance mode, as the comparison should know it.
    #[arg(long, default_value = "")]
    mode: String,
    /// Load level, e.g. 70%: rows are compared with least_busy at the same load.
    #[arg(long, default_value = "")]
    load: String,
    /// Write the report here as JSON.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Exit 1 when more than this percentage of attempts failed.
    #[arg(long, default_value_t = 5.0)]
    max_error_pct: f64,
}

impl RunArgs {
    fn bench(&self) -> BenchRun {
        BenchRun {
            spec: WorkloadSpec {
                conversations: self.conversations,
                turns: (self.turns_min, self.turns_max),
                system_tokens: self.system_tokens,
                user_tokens: (self.user_tokens_min, self.user_tokens_max),
                reply_tokens: (self.reply_tokens_min, self.reply_tokens_max),
                bytes_per_token: self.bytes_per_token,
                models: self.models.clone(),
                rate: self.rate.max(0.0),
                think: Duration::from_millis(self.think_ms),
                seed: self.seed,
            },
            drive: DriveOptions {
                urls: self
                    .urls
                    .iter()
                    .map(|u| u.trim_end_matches('/').to_string())
                    .collect(),
                session_header: self.session_header,
                concurrency: self.concurrency,
                timeout: Duration::from_secs(self.timeout_s),
                retries: self.retries,
                bytes_per_token: self.bytes_per_token,
            },
            instances: self
                .instances
                .iter()
                .map(|u| u.trim_end_matches('/').to_string())
                .collect(),
            labels: Labels {
                label: self.label.clone(),
                mode: self.mode.clone(),
                load: self.load.clone(),
            },
        }
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    match Cli::parse().command {
        Command::Run(args) => run_command(args).await,
        Command::Compare { files } => compare_command(&files),
    }
}

async fn run_command(args: Box<RunArgs>) -> ExitCode {
    if args.models.is_empty() || args.turns_min == 0 || args.turns_max < args.turns_min {
        eprintln!(
            "corral-chat-bench: --models must name a model and 1 <= --turns-min <= --turns-max"
        );
        return ExitCode::from(2);
    }
    let report = run(args.bench()).await;
    print!("{}", report.table());
    println!("{}", report.line());
    if let Some(path) = &args.json {
        let text = serde_json::to_string_pretty(&report).unwrap_or_default();
        if let Err(e) = std::fs::write(path, text) {
            eprintln!("corral-chat-bench: cannot write {}: {e}", path.display());
            return ExitCode::FAILURE;
        }
    }
    let failed: u64 = report.errors.values().sum();
    let pct = failed as f64 * 100.0 / report.attempts.max(1) as f64;
    if report.turns_ok == 0 || pct > args.max_error_pct {
        eprintln!(
            "corral-chat-bench: {failed} of {} attempts failed ({pct:.1}% > {}%)",
            report.attempts, args.max_error_pct
        );
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}

fn compare_command(files: &[PathBuf]) -> ExitCode {
    let mut reports = Vec::new();
    for path in files {
        let parsed = std::fs::read_to_string(path)
            .map_err(|e| e.to_string())
            .and_then(|text| serde_json::from_str::<Report>(&text).map_err(|e| e.to_string()));
        match parsed {
            Ok(report) => reports.push(report),
            Err(e) => {
                eprintln!("corral-chat-bench: {}: {e}", path.display());
                return ExitCode::FAILURE;
            }
        }
    }
    print!("{}", compare::table(&reports));
    ExitCode::SUCCESS
}
