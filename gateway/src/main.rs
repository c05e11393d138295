//! `gateway`: Corral's edge proxy for a pool of Ollama servers.
//!
//! `gateway [--config PATH]` runs it; `gateway check [--config PATH]` validates the config
//! and exits non-zero with `file:line: message` on the first error, like `nginx -t`.

mod activity;
mod admin;
mod admission;
mod client_text;
mod config;
mod console;
mod context;
mod drain;
mod errors;
mod json_depth;
mod keys;
mod limits;
mod listener;
mod logging;
mod metrics;
mod plugins;
mod policy;
mod pool;
mod proxy;
mod quota;
mod redis_conn;
mod routes;
mod server;
mod signals;
mod state;
mod tls;
mod usage;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[cfg(not(target_env = "msvc"))]
#[global_allocator]
static ALLOC: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// jemalloc returns freed memory to the OS only while something allocates, unless its
/// background threads purge on a timer: without them, the memory of a large policy that was
/// replaced stays in the process for as long as the gateway is idle.
fn return_freed_memory() {
    #[cfg(not(target_env = "msvc"))]
    if let Err(e) = tikv_jemalloc_ctl::background_thread::write(true) {
        eprintln!("jemalloc background purging is off: {e}");
    }
}

#[derive(Parser)]
#[command(
    name = "gateway",
    version,
    about = "Corral: an edge gateway for pools of Ollama servers"
)]
struct Cli {
    /// The config file.
    #[arg(long, short, global = true, default_value = "conf/gateway.toml")]
    config: PathBuf,
    /// Take over the listening sockets of a running gateway (graceful upgrade: start the new
    /// binary with this flag, then send SIGQUIT to the old one).
    #[arg(long)]
    upgrade: bool,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Validate the configuration and exit (0 when valid).
    Check,
}

fn main() -> ExitCode {
    return_freed_memory();
    let cli = Cli::parse();
    let config = match config::Config::load(&cli.config, plugins::KNOWN) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(1);
        }
    };
    if let Some(Command::Check) = cli.command {
        let quota = policy::QuotaEnv {
            soft: config.policies.soft_tokens,
            hard: config.policies.hard_tokens,
        };
        return match policy::load_dir(&config.policies.dir, quota, config.policies.max_file_bytes) {
            Ok(set) => {
                println!("{}: configuration is valid", config.source);
                println!(
                    "{}: {} policy file(s), {} org(s): valid",
                    config.policies.dir.display(),
                    set.files.len(),
                    set.orgs.len()
                );
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("{e}");
                ExitCode::from(1)
            }
        };
    }
    logging::init(&config.log_level, config.log_format);
    match server::run(config, cli.upgrade) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e}");
            eprintln!("gateway: {e}");
            ExitCode::from(1)
        }
    }
}
