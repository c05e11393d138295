//! SIGHUP means "reload" (certificates now, policies later). One listener turns the signal
//! into a broadcast that every reloader subscribes to; without it, SIGHUP would kill the
//! process (its default action), which no operator expects of a gateway.

use async_trait::async_trait;
use pingora_core::server::ShutdownWatch;
use pingora_core::services::background::BackgroundService;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::broadcast;

pub struct HangupListener {
    pub tx: broadcast::Sender<()>,
}

impl HangupListener {
    pub fn new() -> Self {
        Self {
            tx: broadcast::channel(4).0,
        }
    }
}

#[async_trait]
impl BackgroundService for HangupListener {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let mut hup = match signal(SignalKind::hangup()) {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGHUP");
                return;
            }
        };
        loop {
            tokio::select! {
                Some(()) = hup.recv() => {
                    tracing::info!("SIGHUP received: reloading");
                    let _ = self.tx.send(());
                }
                _ = shutdown.changed() => return,
            }
        }
    }
}
