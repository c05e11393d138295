//! `backend`: Corral's conversations service and the owner of the database migrations.
//!
//! ```text
//! backend [--config conf/backend.toml] [--migrations-dir DIR] migrate
//! backend [--config ...] serve
//! backend [--config ...] seed [--org default] [--admin admin]
//! backend [--config ...] check
//! backend [--config ...] keys create|list|rotate|revoke --org ORG [--name NAME]
//! ```

mod api;
mod auth;
mod chat;
mod config;
mod db;
mod health;
mod keys_cli;
mod logging;
mod metrics;
mod retention;
mod serve;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use config::Config;

#[derive(Parser)]
#[command(name = "backend", version, about = "Corral's conversations service")]
struct Cli {
    /// Config file (default: conf/backend.toml when it exists). Environment variables
    /// override it.
    #[arg(long, global = true)]
    config: Option<PathBuf>,
    /// Read migrations from this folder instead of the ones built into the binary.
    #[arg(long, global = true)]
    migrations_dir: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Apply pending database migrations and exit.
    Migrate,
    /// Migrate, then serve the conversations API.
    Serve,
    /// Create a default org and its admin user (idempotent; migrates first).
    Seed {
        /// The org id (as the JWT's org claim will name it).
        #[arg(long, default_value = "default")]
        org: String,
        /// The admin's user id (the JWT's sub).
        #[arg(long, default_value = "admin")]
        admin: String,
    },
    /// Validate the config file, the environment and the JWT keys, then exit.
    Check,
    /// Manage an org's API keys (migrates first; needs API_KEY_PEPPER).
    Keys {
        #[command(subcommand)]
        command: keys_cli::KeysCommand,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let mut config = match Config::load(cli.config.as_deref()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("backend: {e}");
            return ExitCode::FAILURE;
        }
    };
    if let Some(dir) = cli.migrations_dir {
        config.database.migrations_dir = Some(dir);
    }
    logging::init(&config.log_level, config.log_format);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("backend: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        match cli.command {
            Command::Migrate => migrate(&config).await,
            Command::Serve => serve::run(config).await,
            Command::Seed { org, admin } => seed(&config, &org, &admin).await,
            Command::Check => check(&config),
            Command::Keys { command } => keys_cli::run(&config, command).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("backend: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn migrate(config: &Config) -> Result<(), String> {
    let url = config.database_url().map_err(|e| e.to_string())?;
    let outcome = db::migrate::run(url, &config.database).await?;
    serve::report_migrations(&outcome);
    if outcome.applied.is_empty() {
        println!(
            "database schema is up to date (version {})",
            outcome.version
        );
    } else {
        println!(
            "applied {} (now at version {})",
            outcome.applied.join(", "),
            outcome.version
        );
    }
    Ok(())
}

async fn seed(config: &Config, org: &str, admin: &str) -> Result<(), String> {
    let url = config.database_url().map_err(|e| e.to_string())?;
    db::migrate::run(url, &config.database).await?;
    let mut client = db::connect_once(url, &config.database).await?;
    let s = db::seed::seed(&mut client, org, admin)
        .await
        .map_err(|e| e.to_string())?;
    let said = |created: bool| if created { "created" } else { "already there" };
    println!("org {org}: {}", said(s.org_created));
    println!("user {admin}: {}", said(s.user_created));
    println!("{admin} is admin of {org}: {}", said(s.membership_created));
    Ok(())
}

fn check(config: &Config) -> Result<(), String> {
    config.database_url().map_err(|e| e.to_string())?;
    auth::Verifier::new(&config.auth)?;
    db::migrate::migrations(config.database.migrations_dir.as_deref())?;
    println!("{}: ok", config.source);
    Ok(())
}
