//! `backend serve`: migrate, then serve the API until SIGTERM/SIGINT, then let in-flight
//! chat streams finish (up to `server.grace_period_s`) so their replies are stored.

use std::sync::Arc;
use std::time::Instant;

use tokio::net::TcpListener;
use tokio_util::task::TaskTracker;

use crate::api::{self, AppState};
use crate::auth::Verifier;
use crate::config::Config;
use crate::db::{self, migrate, Pool};

pub async fn run(config: Config) -> Result<(), String> {
    let url = config.database_url().map_err(|e| e.to_string())?.to_owned();
    // Refuse a bad key setup before touching the database.
    let verifier = Arc::new(Verifier::new(&config.auth)?);
    let outcome = migrate::run(&url, &config.database).await?;
    report_migrations(&outcome);
    let latest = migrate::latest_version(&migrate::migrations(
        config.database.migrations_dir.as_deref(),
    )?);
    let pool = Pool::new(&url, &config.database)?;
    let http = reqwest::Client::builder()
        .connect_timeout(config.gateway.connect_timeout)
        .read_timeout(config.gateway.read_timeout)
        .build()
        .map_err(|e| format!("HTTP client: {e}"))?;
    verifier.start_background_refresh();
    let listener = TcpListener::bind(config.listen)
        .await
        .map_err(|e| format!("BACKEND_LISTEN={}: cannot listen: {e}", config.listen))?;
    let relays = TaskTracker::new();
    let state = AppState {
        config: Arc::new(config.clone()),
        pool: pool.clone(),
        verifier,
        http,
        relays: relays.clone(),
        migrations_latest: latest,
        started: Instant::now(),
    };
    crate::retention::spawn(pool, config.retention_days, config.retention_interval);
    tracing::info!(
        listen = %config.listen,
        database = %db::redact_url(&url),
        gateway = %config.gateway.url,
        "backend serving"
    );

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let server = axum::serve(listener, api::router(state)).with_graceful_shutdown({
        let mut rx = stop_rx.clone();
        async move {
            let _ = rx.wait_for(|stop| *stop).await;
        }
    });
    let signals = tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("shutting down: no new connections; letting streams finish");
        let _ = stop_tx.send(true);
    });
    let grace = config.grace_period;
    let mut stopping = stop_rx;
    tokio::select! {
        result = server => result.map_err(|e| format!("server: {e}"))?,
        () = async {
            let _ = stopping.wait_for(|stop| *stop).await;
            tokio::time::sleep(grace).await;
        } => tracing::warn!("grace period over with streams still open"),
    }
    signals.abort();
    relays.close();
    if tokio::time::timeout(grace, relays.wait()).await.is_err() {
        tracing::warn!("replies still being stored at exit");
    }
    tracing::info!("backend stopped");
    Ok(())
}

pub fn report_migrations(outcome: &migrate::Outcome) {
    if outcome.applied.is_empty() {
        tracing::info!(version = outcome.version, "database schema is up to date");
    } else {
        tracing::info!(
            version = outcome.version,
            applied = %outcome.applied.join(", "),
            "migrations applied"
        );
    }
}

async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::error!("cannot install signal handlers; stop with SIGKILL");
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => {},
        _ = int.recv() => {},
    }
}
